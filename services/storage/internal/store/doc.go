// Package store is the storage node's Badger domain layer: user data laid
// out by slot, system records beside it, and the range operations (scan,
// count, digest) that slot ownership, routing and migration are built on.
//
// # Key layout
//
// Every user key is stored as
//
//	[slot: 2 bytes big-endian][user key]
//
// where slot = CRC16(key) mod 16384 (pkg/slot). Badger keeps keys sorted, so
// the keys of one slot are one contiguous key range and a slot range a-b is
// the single key range [a, b+1) of two-byte prefixes. That makes a scan of a
// slot range one seek and one forward walk, a count of a slot range a
// key-only walk, and a whole slot one contiguous range to delete.
// Storage order is therefore "slot, then key": a scan over several slots
// returns slot 0's keys (sorted) before slot 1's.
//
// # Reserved prefix
//
// Slots are below 16384 = 0x4000, so the first byte of a user storage key is
// at most 0x3F. System records (node identity, topology, slot states,
// migration jobs) live under the first byte 0xFF, which no slot can produce:
// system records never show up in a scan of any slot range and user data can
// never overwrite them. See SystemTxn. Migrations add three key spaces
// there (changelog.go, import.go): change records 0xFF 'c' <job> 0x00 <seq>,
// import progress 0xFF 'i' <job> 0x00 <stream> and job records 0xFF 'm' <job>;
// drops add 0xFF "drop/" <first slot> <last slot> (drop.go).
//
// # Change capture and snapshots
//
// Every write of user data goes through one function (write.go), which
// appends a change record per key of a migrating slot to the job's
// ChangeLog in the same transaction, numbered in commit order. OpenSnapshot
// pins a read-only transaction at a change sequence.
//
// # Drops
//
// DeleteSlots removes the slots a node no longer serves by dropping them
// (drop.go): one record per slot range, under 0xFF "drop/", whose Badger
// version D is the drop's commit timestamp. Every read skips an entry of
// a dropped slot whose version is below D, so the slots read as empty at
// once, whatever they held, and writes after the drop read as usual. A
// background purge then writes the tombstones in small batches, in
// transactions whose reads Badger's conflict detection checks, so a key
// written meanwhile (the slots came back) is never deleted, and deletes
// the record. Badger's DropPrefix would remove a slot in one call, but it
// blocks every write to the database while it runs (about 150 ms for
// 200k keys on a small machine, BenchmarkCleanupWriteStall), so the live
// node never uses it.
//
// Badger reserves keys starting with "!badger!" for itself. The two bytes
// "!b" are the slot prefix of slot 0x2162 (8546), so a user key of that slot
// starting with "adger!" cannot be stored; Put refuses it with
// ErrReservedKey instead of failing obscurely inside Badger.
//
// # Expiry
//
// Any key may expire at an absolute time in Unix milliseconds (Redis's
// PX/PXAT precision). Badger's own per-entry TTL (ExpiresAt) counts whole
// seconds, so an expiring value is stored as
//
//	[expiry: 8 bytes big-endian Unix ms][user value]
//
// with Badger's UserMeta bit 0 set, and Badger's ExpiresAt set to the
// ceiling second of the expiry: Badger hides the entry and its compactions
// reclaim it, never before the millisecond. A value without expiry is the
// bare value with UserMeta 0, as before expiries existed, so older data
// directories read unchanged. Every read (Get, BatchGet, Scan, Count,
// Digest, snapshot scans and digests, ReadChanges, the reads of Update,
// Delete and BatchWrite) compares the millisecond expiry with the clock
// and treats a key at or past it as absent; walks decide that from the
// item's metadata and read the header only for keys in their last second
// (expiry.go). A write whose expiry is at or before now is a delete
// (Redis's rule), decided in the one write function, so its change record
// is a delete too. Change records and migration entries carry the expiry
// (a put whose expiry passed before it is read is sent as a delete, so an
// older value of the key cannot survive on the destination); an import
// writes it as is, or deletes a key whose expiry passed on the way: a key
// expiring mid-migration is neither resurrected nor lost.
//
// # Read-modify-write
//
// Update (update.go), Delete (existed) and BatchWrite with if_all_absent
// or deletes read the keys they depend on inside their write transaction;
// Badger's conflict detection fails the commit when another write of
// those keys committed in between, and write starts over. Updates of one
// key also queue on a striped lock first, so a hot INCRBY key does not
// turn into a storm of retries.
//
// # Digest
//
// Digest (pkg/digest) hashes each entry as xxhash64(uvarint len(key) || key
// || uvarint len(value) || value [|| expiry: 8 bytes big-endian, for keys
// that expire]) over the user key (without the slot prefix), once per lane with the lane's seed, and sums the hashes per
// 64-bit lane modulo 2^64 (two lanes, 16 bytes). The sum
// is order-independent (two nodes that hold the same entries agree whatever
// order they were written or are scanned in) and additive (the digest of a
// range set is the Combine of its slots' digests), which is what migration
// verification needs: compare per-slot digests on both sides without moving
// the data again. Length prefixes keep ("ab","c") and ("a","bc") apart.
// The source digests a snapshot's entries as it sends them and the
// destination the entries as it receives them (expiry included, also for
// an entry whose expiry passed on the way), so the stream digests agree
// whatever expires meanwhile. Digests that read stored data at two
// different times (VERIFY_FULL) can differ by the keys that expired in
// between.
package store
