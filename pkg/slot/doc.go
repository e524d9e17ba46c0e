// Package slot maps keys to hash slots and manipulates sets of slots.
//
// # Slots
//
// slotkv shards its key space the same way Redis Cluster does: every key
// belongs to exactly one of [Count] (16384) hash slots, computed as
//
//	slot = CRC16(HashTag(key)) mod 16384
//
// where [CRC16] is the CRC-16/XMODEM checksum used by Redis Cluster
// (polynomial 0x1021, initial value 0, no reflection, no final XOR) and
// [HashTag] implements the Redis "{hash tag}" rule: if the key contains a
// '{' followed later by a '}' with at least one byte between them, only the
// bytes between the first '{' and the first '}' after it are hashed. Keys
// such as "{user1000}.following" and "{user1000}.followers" therefore land
// in the same slot and can be moved together. [Of] and [OfString] compute
// the slot of a key; the results agree with Redis's CLUSTER KEYSLOT.
//
// # Storage layout
//
// Storage nodes keep every user key under a storage key that is the slot
// number as two big-endian bytes followed by the user key:
//
//	[slot >> 8][slot & 0xff][key ...]
//
// Because the prefix is big-endian, byte-wise key order sorts first by slot,
// so all keys of one slot, and of any contiguous [Range] of slots, form a
// single contiguous key range that can be scanned, copied or deleted with
// one range operation. [Prefix], [AppendKey] and [SplitKey] build and take
// apart storage keys, and [Range.KeyBounds] gives the half-open key interval
// that holds a slot range.
//
// # Ranges and sets
//
// A [Range] is an inclusive interval of slots, written "START-END" (for
// example "0-5460") or, for a single slot, just "42". A [RangeSet] is an
// immutable, normalised set of slots: its ranges are sorted, disjoint and
// never adjacent (adjacent ranges are merged), so two sets holding the same
// slots are always [RangeSet.Equal] and format identically. The textual form
// is a comma-separated list such as "0-100,200-300"; see [ParseRangeSet].
// The set algebra ([RangeSet.Union], [RangeSet.Intersect],
// [RangeSet.Subtract], [RangeSet.Overlaps]) is used to assign and compare
// slot ownership, and [RangeSet.Split] and [Even] divide slots evenly, for
// instance across parallel migration streams or initial nodes.
//
// # Errors
//
// Parse and validation errors wrap one of the sentinel errors [ErrSyntax],
// [ErrOutOfRange], [ErrReversed] or [ErrOverlap] ([SplitKey] may also return
// [ErrShortKey]); test with [errors.Is]. Messages always quote the offending
// input, for example:
//
//	slot: reversed range: "300-200": start 300 is after end 200
package slot
