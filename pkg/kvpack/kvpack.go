// Package kvpack is the packed form of a batch of key/value entries that
// migration streams carry: each entry as uvarint len(key), key, uvarint
// len(value), value, one after the other in one byte slice. A batch is one
// protobuf bytes field instead of a message per entry, so the source
// writes it as it scans, the migrator forwards it untouched, and the
// destination reads keys and values in place: nothing is allocated or
// copied per entry on the way.
package kvpack

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrCorrupt: a packed batch that does not parse.
var ErrCorrupt = errors.New("corrupt packed entries")

// Append appends one entry to b.
func Append(b, key, value []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(key)))
	b = append(b, key...)
	b = binary.AppendUvarint(b, uint64(len(value)))
	return append(b, value...)
}

// ForEach calls fn with each entry of b in order; key and value alias b.
// It stops at fn's first error, and returns an error wrapping ErrCorrupt,
// naming the entry, when b does not parse.
func ForEach(b []byte, fn func(i int, key, value []byte) error) error {
	for i := 0; len(b) > 0; i++ {
		key, rest, err := field(b)
		if err != nil {
			return fmt.Errorf("%w: entry %d: key: %v", ErrCorrupt, i, err)
		}
		value, rest, err := field(rest)
		if err != nil {
			return fmt.Errorf("%w: entry %d: value: %v", ErrCorrupt, i, err)
		}
		if err := fn(i, key, value); err != nil {
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
