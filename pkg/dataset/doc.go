// Package dataset defines the bulk-load dataset format of slotkv and reads,
// writes and verifies it.
//
// A dataset is a directory (served over HTTP(S) or read from disk) holding a
// manifest, [ManifestName], and data files. The downloader service fetches the
// manifest, validates it with [ParseManifest], downloads every file while
// checking its size and SHA-256, then checks its contents with [VerifyFile]
// and ingests its records, routing each one to the node that owns its slot.
// The slotkv-dataset tool builds datasets from JSONL or CSV input.
//
// The design follows Apache Pegasus bulk load: per-partition (here per slot
// range) files described by a metadata file listing each file's size and
// checksum, so a downloader can verify a file before it touches the cluster.
//
// # Manifest
//
// The manifest is a JSON object (see [Manifest] and [File]):
//
//	{
//	  "format_version": 2,
//	  "slot_count": 16384,
//	  "records": 200000,
//	  "files": [
//	    {
//	      "name": "part-00000.skv",
//	      "size": 67174912,
//	      "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
//	      "slots": "0-8191",
//	      "keys": 100000,
//	      "first_key": "p:00012345",
//	      "last_key": "p:00087654"
//	    },
//	    ...
//	  ]
//	}
//
// [ParseManifest] rejects unknown fields, missing fields and anything that
// does not validate (see [Manifest.Validate]): file names must be plain
// names that cannot leave the download directory, sizes and the manifest
// itself are capped ([Limits]), "records" must be the sum of the files'
// "keys", and files must be listed in (slot, key) order without overlapping,
// so a key lives in at most one file. A slot may be shared by two adjacent
// files when it holds many keys. Keys are bytes: a first or last key that
// is not valid UTF-8 is given in base64 as "first_key_b64" ("last_key_b64")
// instead of "first_key" ("last_key"), from format version 2 on.
//
// # Versions
//
// [FormatVersion] (2) is written; versions [MinFormatVersion] (1) to 2 are
// read, so datasets built before version 2 still load. Version 2 added the
// expiry to every record and the base64 key fields to the manifest; a
// version 1 record has no expiry and its manifest only UTF-8 keys.
//
// Every error of this package wraps exactly one of the sentinel errors
// ([ErrInvalidManifest], [ErrUnsupportedVersion], [ErrUnsafeName],
// [ErrTooLarge], [ErrChecksum], [ErrCorrupt]), test with [errors.Is], or is
// an I/O error of the underlying reader or writer; messages name the field,
// file, block and byte offset concerned.
//
// # Data files
//
// A data file holds records sorted by (slot, key), strictly increasing (no
// duplicate keys), where slot is [slot.Of] of the key. All integers are
// big-endian. The file is:
//
//	file header  (12 bytes)
//	  [8]  magic "SKVDATA1"
//	  u32  format version (1 or 2)
//	data block   (one or more; a file without records has none)
//	  u32  block magic 0x534B5642 ("SKVB")
//	  u32  payload length in bytes (1 .. MaxBlockPayload = 64 MiB)
//	  u32  record count (> 0)
//	  u32  CRC-32C (Castagnoli) of the payload
//	  payload: record count records, each
//	    u16     slot
//	    uvarint key length (> 0)
//	    key
//	    uvarint value length
//	    value
//	    uvarint expires_at_ms (version 2 only): when the key expires,
//	            Unix milliseconds, at most 253402300799999; 0 = never
//	footer block (exactly one, last, 32 bytes)
//	  u32  footer magic 0x534B5645 ("SKVE")
//	  u32  payload length (16)
//	  u32  record count (0)
//	  u32  CRC-32C of the payload
//	  payload:
//	    u64  total records in the file
//	    u64  number of data blocks
//
// Nothing may follow the footer. The writer cuts a block once its payload
// reaches the block size ([WriterOptions.BlockSize], 64 KiB by default), so
// a block holds at least one record and a record never spans blocks.
//
// Corruption is caught at every level: a flipped bit by the block's CRC
// ([ErrChecksum], naming the block and its byte offset); a file cut anywhere,
// including exactly at a block boundary, by the missing or short footer or
// block ([ErrCorrupt]); a lost or duplicated block by the footer's totals;
// records out of order or in the wrong slot by the reader's checks
// ([ErrCorrupt]). The whole file is also covered by the SHA-256 in the
// manifest.
package dataset
