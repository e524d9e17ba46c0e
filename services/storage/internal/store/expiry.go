package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/slotkv/slotkv/pkg/rpcerr"
)

// Expiry (see doc.go, "Expiry"): a value that expires is stored as
//
//	[expiry: 8 bytes big-endian, Unix milliseconds][user value]
//
// with Badger's UserMeta bit metaExpiry set and Badger's ExpiresAt set to
// the ceiling second of the expiry. A value without expiry is stored as the
// bare user value with UserMeta 0, exactly as before expiries existed, so
// old data directories read unchanged (the format version stays).
const (
	metaExpiry      byte = 1 << 0
	expiryHeaderLen      = 8
)

// ErrBadExpiry: a negative expiry where an absolute time or 0 is expected.
var ErrBadExpiry = fmt.Errorf("%w: bad expiry", rpcerr.ErrInvalidArgument)

// errCorruptValue: a value marked as expiring without its expiry header.
var errCorruptValue = errors.New("stored value marked as expiring is shorter than its expiry header")

// NowMs is the clock every expiry is compared with: Unix milliseconds.
func NowMs() int64 { return time.Now().UnixMilli() }

// Expired reports whether an entry expiring at exp (0: never) is gone at
// now. A key is gone from the millisecond of its expiry on, and a write
// whose expiry is at or before now deletes the key (Redis's rules).
func Expired(exp, now int64) bool { return exp != 0 && exp <= now }

// badgerExpiresAt is Badger's ExpiresAt for a millisecond expiry: the
// ceiling second, so Badger never drops an entry before its millisecond
// (it hides an entry once its second is <= now in seconds).
func badgerExpiresAt(exp int64) uint64 {
	if exp <= 0 {
		return 1 // already past; callers delete instead
	}
	return uint64(exp/1000) + boolInt(exp%1000 != 0)
}

func boolInt(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// newValueEntry returns the Badger entry of k = value expiring at exp (0:
// never). The stored value is freshly allocated when it carries a header.
func newValueEntry(k, value []byte, exp int64) *badger.Entry {
	if exp == 0 {
		return badger.NewEntry(k, value)
	}
	v := make([]byte, expiryHeaderLen, expiryHeaderLen+len(value))
	binary.BigEndian.PutUint64(v, uint64(exp))
	e := badger.NewEntry(k, append(v, value...)).WithMeta(metaExpiry)
	e.ExpiresAt = badgerExpiresAt(exp)
	return e
}

// splitValue returns the user value (aliasing raw) and expiry of a stored
// value whose UserMeta is meta.
func splitValue(meta byte, raw []byte) ([]byte, int64, error) {
	if meta&metaExpiry == 0 {
		return raw, 0, nil
	}
	if len(raw) < expiryHeaderLen {
		return nil, 0, errCorruptValue
	}
	return raw[expiryHeaderLen:], int64(binary.BigEndian.Uint64(raw)), nil
}

// mayBeExpired reports, from the item's metadata alone, whether it may be
// past its expiry at now: false when it has none, or when Badger's ceiling
// second ends more than a second after now (the expiry is above
// (second-1)*1000). Only items in their last second need their header read.
func mayBeExpired(item *badger.Item, now int64) bool {
	if item.UserMeta()&metaExpiry == 0 {
		return false
	}
	s := item.ExpiresAt()
	return s == 0 || int64(s-1)*1000 < now
}

// itemExpiry returns the expiry of item (0: never), reading its value's
// header only when it has one.
func itemExpiry(item *badger.Item) (int64, error) {
	if item.UserMeta()&metaExpiry == 0 {
		return 0, nil
	}
	var exp int64
	err := item.Value(func(raw []byte) error {
		var err error
		_, exp, err = splitValue(item.UserMeta(), raw)
		return err
	})
	return exp, err
}

// itemExpired reports whether item is past its expiry at now.
func itemExpired(item *badger.Item, now int64) (bool, error) {
	if !mayBeExpired(item, now) {
		return false, nil
	}
	exp, err := itemExpiry(item)
	return Expired(exp, now), err
}

// userValue calls fn with the user value (aliasing Badger's buffer, valid
// during fn) and expiry of item.
func userValue(item *badger.Item, fn func(v []byte, exp int64) error) error {
	return item.Value(func(raw []byte) error {
		v, exp, err := splitValue(item.UserMeta(), raw)
		if err != nil {
			return err
		}
		return fn(v, exp)
	})
}

// getLive reads the storage key k in txn: its user value (a copy, never
// nil), expiry and whether it is present (not dropped) and not expired at
// now.
func (s *Store) getLive(txn *badger.Txn, k []byte, now int64) (val []byte, exp int64, found bool, err error) {
	item, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, 0, false, nil
	}
	if err != nil {
		return nil, 0, false, err
	}
	if s.dropFilter(txn).hides(item) {
		return nil, 0, false, nil
	}
	err = userValue(item, func(v []byte, e int64) error {
		if Expired(e, now) {
			return nil
		}
		val, exp, found = append(make([]byte, 0, len(v)), v...), e, true
		return nil
	})
	return val, exp, found, err
}

// CheckExpiry refuses a negative expiry (0 means none).
func CheckExpiry(exp int64) error {
	if exp < 0 {
		return fmt.Errorf("%w: %d is negative (an absolute time in Unix milliseconds, or 0 for none)", ErrBadExpiry, exp)
	}
	return nil
}
