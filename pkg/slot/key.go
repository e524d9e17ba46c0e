package slot

import (
	"encoding/binary"
	"fmt"
)

// PrefixLen is the length of the slot prefix of a storage key.
const PrefixLen = 2

// Prefix returns the storage key prefix for slot: the slot number as two
// big-endian bytes. Keys of slot s sort after those of every slot below s.
// Prefix does not validate slot; Prefix(Count) is the exclusive upper bound
// of all storage keys (see [Range.KeyBounds]).
func Prefix(slot uint16) [2]byte {
	var p [2]byte
	binary.BigEndian.PutUint16(p[:], slot)
	return p
}

// AppendKey appends the storage key for key in slot, [Prefix](slot)
// followed by key, to dst and returns the extended slice. Pass nil as dst to
// allocate a new key. slot is not validated; it should come from [Of] or
// [OfString] (use AppendKey(dst, Of(key), key)).
func AppendKey(dst []byte, slot uint16, key []byte) []byte {
	dst = binary.BigEndian.AppendUint16(dst, slot)
	return append(dst, key...)
}

// SplitKey splits a storage key built by [AppendKey] into its slot and user
// key. The returned key aliases k. It returns an error wrapping
// [ErrShortKey] if k is shorter than [PrefixLen], or [ErrOutOfRange] if the
// prefix is not a valid slot. It does not check that the slot equals
// Of(key).
func SplitKey(k []byte) (uint16, []byte, error) {
	if len(k) < PrefixLen {
		return 0, nil, fmt.Errorf("%w: %q: need at least %d bytes, got %d", ErrShortKey, k, PrefixLen, len(k))
	}
	s := binary.BigEndian.Uint16(k)
	if s > MaxSlot {
		return 0, nil, fmt.Errorf("%w: storage key prefix %q: slot %d out of range 0-%d", ErrOutOfRange, k[:PrefixLen], s, MaxSlot)
	}
	return s, k[PrefixLen:], nil
}

// KeyBounds returns the half-open interval [lower, upper) of storage keys
// that belong to the slots of r: every key k with slot in r satisfies
// lower <= k < upper in byte-wise order, and no other storage key does. It
// suits iterator bounds and range deletes. r must be valid (see
// [Range.Validate]); for r.End == MaxSlot, upper is [Prefix](Count), which
// sorts after every valid storage key.
func (r Range) KeyBounds() (lower, upper [2]byte) {
	return Prefix(r.Start), Prefix(r.End + 1)
}
