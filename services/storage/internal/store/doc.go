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
// import progress 0xFF 'i' <job> 0x00 <stream> and job records 0xFF 'm' <job>.
//
// # Change capture and snapshots
//
// Every write of user data goes through one function (write.go), which
// appends a change record per key of a migrating slot to the job's
// ChangeLog in the same transaction, numbered in commit order. OpenSnapshot
// pins a read-only transaction at a change sequence; DeleteSlots removes
// moved slots in small batches. Badger's DropPrefix would remove a slot in
// one call, but it blocks every write to the database while it runs (about
// 150 ms for 200k keys on a small machine, BenchmarkCleanupWriteStall), so
// the live node never uses it.
//
// Badger reserves keys starting with "!badger!" for itself. The two bytes
// "!b" are the slot prefix of slot 0x2162 (8546), so a user key of that slot
// starting with "adger!" cannot be stored; Put refuses it with
// ErrReservedKey instead of failing obscurely inside Badger.
//
// # Digest
//
// Digest (pkg/digest) hashes each entry as xxhash64(uvarint len(key) || key
// || uvarint len(value) || value) over the user key (without the slot
// prefix), once per lane with the lane's seed, and sums the hashes per
// 64-bit lane modulo 2^64 (two lanes, 16 bytes). The sum
// is order-independent (two nodes that hold the same entries agree whatever
// order they were written or are scanned in) and additive (the digest of a
// range set is the Combine of its slots' digests), which is what migration
// verification needs: compare per-slot digests on both sides without moving
// the data again. Length prefixes keep ("ab","c") and ("a","bc") apart.
package store
