// Package limits holds the key and value size limits every slotkv service
// agrees on: the storage node enforces them on what it stores, and the
// router checks them before forwarding, so an oversized key or value is
// refused where it arrives instead of after it has crossed the cluster.
package limits

import (
	"fmt"

	"github.com/slotkv/slotkv/pkg/rpcerr"
)

const (
	// DefaultMaxKeyBytes caps a key. Badger's own hard limit is 65000 bytes;
	// 16 KiB leaves room for the slot prefix and is far above any sane key,
	// while keeping scan pages and index blocks compact.
	DefaultMaxKeyBytes = 16 << 10
	// DefaultMaxValueBytes caps a value at 4 MiB: large values go to
	// Badger's value log and stream fine through gRPC (messages may be up to
	// 64 MiB, see pkg/dial), but bigger blobs belong in an object store.
	DefaultMaxValueBytes = 4 << 20
	// MaxKeyBytesLimit is the largest key limit allowed: Badger refuses keys
	// over 65000 bytes, and the storage key adds the 2-byte slot prefix.
	MaxKeyBytesLimit = 65000 - 2
)

// KV bounds key and value sizes; zero fields take the defaults above. The
// error messages name the storage flags that set them (--max-key-bytes,
// --max-value-bytes), so an operator who hits one knows the knob.
type KV struct {
	MaxKeyBytes   int
	MaxValueBytes int
}

// WithDefaults returns l with zero (or negative) fields set to the
// defaults.
func (l KV) WithDefaults() KV {
	if l.MaxKeyBytes <= 0 {
		l.MaxKeyBytes = DefaultMaxKeyBytes
	}
	if l.MaxValueBytes <= 0 {
		l.MaxValueBytes = DefaultMaxValueBytes
	}
	return l
}

// CheckKeySize returns an rpcerr.FieldError naming field when a key of n
// bytes is over the limit, else nil. Emptiness is the caller's check.
func (l KV) CheckKeySize(field string, n int) error {
	if n > l.MaxKeyBytes {
		return rpcerr.InvalidField(field, "key is %d bytes, above the limit --max-key-bytes=%d", n, l.MaxKeyBytes)
	}
	return nil
}

// CheckValueSize returns an rpcerr.FieldError naming field when a value of
// n bytes is over the limit, else nil.
func (l KV) CheckValueSize(field string, n int) error {
	if n > l.MaxValueBytes {
		return rpcerr.InvalidField(field, "value is %d bytes, above the limit --max-value-bytes=%d", n, l.MaxValueBytes)
	}
	return nil
}

// Validate refuses limits no node can honour: negative ones, and a key
// limit above Badger's (MaxKeyBytesLimit). The error names the flags.
func (l KV) Validate() error {
	switch {
	case l.MaxKeyBytes < 0 || l.MaxValueBytes < 0:
		return fmt.Errorf("negative limit (--max-key-bytes=%d, --max-value-bytes=%d)", l.MaxKeyBytes, l.MaxValueBytes)
	case l.MaxKeyBytes > MaxKeyBytesLimit:
		return fmt.Errorf("--max-key-bytes=%d is above Badger's key limit of %d", l.MaxKeyBytes, MaxKeyBytesLimit)
	}
	return nil
}
