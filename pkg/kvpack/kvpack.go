// Package kvpack is the packed form of a batch of key/value entries that
// migration streams carry: each entry as uvarint len(key), key, uvarint
// len(value), value, one after the other in one byte slice. A batch is one
// protobuf bytes field instead of a message per entry, so the source
// writes it as it scans, the migrator forwards it untouched, and the
// destination reads keys and values in place: nothing is allocated or
// copied per entry on the way.
//
// # Expiry
//
// An entry whose key expires is preceded by an expiry marker:
//
//	0x80 0x00 [expiry: 8 bytes big-endian, Unix milliseconds]
//
// 0x80 0x00 is a non-minimal uvarint (zero in two bytes), which Append never
// writes, so a batch without expiries is byte for byte what it was before
// the marker existed and every batch written then reads the same now. A
// reader that predates the marker sees an empty key there, which every
// slotkv destination refuses, so a mixed-version migration fails loudly
// instead of dropping expiries. ForEach skips markers (it hands out keys
// and values only); ForEachExpiring hands out each entry's expiry too.
package kvpack

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrCorrupt: a packed batch that does not parse.
var ErrCorrupt = errors.New("corrupt packed entries")

// markerLen is the length of an expiry marker.
const markerLen = 2 + 8

// marker0 and marker1 open an expiry marker.
const marker0, marker1 = 0x80, 0x00

// AppendExpiring appends one entry to b that expires at expiresAtMs (Unix
// milliseconds); 0 means never, written exactly as Append writes it.
func AppendExpiring(b, key, value []byte, expiresAtMs int64) []byte {
	if expiresAtMs != 0 {
		b = AppendMarker(b, expiresAtMs)
	}
	return Append(b, key, value)
}

// AppendMarker appends the expiry marker of the entry that follows; a
// caller that lays out entries itself writes it before the entry's key
// length. expiresAtMs must not be 0.
func AppendMarker(b []byte, expiresAtMs int64) []byte {
	b = append(b, marker0, marker1)
	return binary.BigEndian.AppendUint64(b, uint64(expiresAtMs))
}

// Append appends one entry to b.
func Append(b, key, value []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(key)))
	b = append(b, key...)
	b = binary.AppendUvarint(b, uint64(len(value)))
	return append(b, value...)
}

// ForEach calls fn with each entry of b in order; key and value alias b.
// It stops at fn's first error, and returns an error wrapping ErrCorrupt,
// naming the entry, when b does not parse. Expiries are skipped: a reader
// that writes the entries must use ForEachExpiring.
func ForEach(b []byte, fn func(i int, key, value []byte) error) error {
	return ForEachExpiring(b, func(i int, key, value []byte, _ int64) error { return fn(i, key, value) })
}

// ForEachExpiring is ForEach that also hands out each entry's expiry (Unix
// milliseconds, 0 = none).
func ForEachExpiring(b []byte, fn func(i int, key, value []byte, expiresAtMs int64) error) error {
	for i := 0; len(b) > 0; i++ {
		var exp int64
		if len(b) >= 2 && b[0] == marker0 && b[1] == marker1 {
			if len(b) < markerLen {
				return fmt.Errorf("%w: entry %d: expiry: %d bytes, want 8", ErrCorrupt, i, len(b)-2)
			}
			exp = int64(binary.BigEndian.Uint64(b[2:markerLen]))
			b = b[markerLen:]
			if len(b) == 0 {
				return fmt.Errorf("%w: entry %d: an expiry without its entry", ErrCorrupt, i)
			}
			if len(b) >= 2 && b[0] == marker0 && b[1] == marker1 {
				return fmt.Errorf("%w: entry %d: two expiries", ErrCorrupt, i)
			}
		}
		key, rest, err := field(b)
		if err != nil {
			return fmt.Errorf("%w: entry %d: key: %v", ErrCorrupt, i, err)
		}
		value, rest, err := field(rest)
		if err != nil {
			return fmt.Errorf("%w: entry %d: value: %v", ErrCorrupt, i, err)
		}
		if err := fn(i, key, value, exp); err != nil {
			return err
		}
		b = rest
	}
	return nil
}

// Count returns the number of entries of b without looking at their bytes,
// or an error wrapping ErrCorrupt when b does not parse.
func Count(b []byte) (int, error) {
	n := 0
	err := ForEach(b, func(int, []byte, []byte) error { n++; return nil })
	return n, err
}

// field reads one length-prefixed field; the result is capacity-limited so
// an append to it cannot overwrite what follows.
func field(b []byte) (f, rest []byte, err error) {
	n, k := binary.Uvarint(b)
	switch {
	case k == 0:
		return nil, nil, errors.New("truncated length")
	case k < 0:
		return nil, nil, errors.New("length overflows 64 bits")
	case n > uint64(len(b)-k):
		return nil, nil, fmt.Errorf("length %d, only %d bytes left", n, len(b)-k)
	}
	end := k + int(n)
	return b[k:end:end], b[end:], nil
}
