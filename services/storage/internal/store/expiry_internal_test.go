package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/slotkv/slotkv/pkg/slot"
)

// TestExpiryEncoding: an expiring value is stored behind its 8-byte
// millisecond expiry with the UserMeta bit, and Badger's own ExpiresAt is
// the ceiling second (so Badger reclaims it, never before the
// millisecond); a value without expiry is stored bare, as before expiries
// existed.
func TestExpiryEncoding(t *testing.T) {
	t.Parallel()
	st := openInternal(t)
	far := NowMs() + 3_600_000
	tests := []struct {
		name     string
		exp      int64
		meta     byte
		badgerTS uint64
	}{
		{"none", 0, 0, 0},
		{"mid-second", far/1000*1000 + 1, metaExpiry, uint64(far/1000) + 1},
		{"whole second", far / 1000 * 1000, metaExpiry, uint64(far / 1000)},
		{"last ms", far/1000*1000 + 999, metaExpiry, uint64(far/1000) + 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			key := []byte("enc-" + tc.name)
			if _, err := st.PutExpiring(key, []byte("value"), tc.exp); err != nil {
				t.Fatal(err)
			}
			err := st.db.View(func(txn *badger.Txn) error {
				item, err := txn.Get(slot.AppendKey(nil, slot.Of(key), key))
				if err != nil {
					return err
				}
				raw, err := item.ValueCopy(nil)
				if err != nil {
					return err
				}
				want := []byte("value")
				if tc.exp != 0 {
					want = append(binary.BigEndian.AppendUint64(nil, uint64(tc.exp)), want...)
				}
				if item.UserMeta() != tc.meta || item.ExpiresAt() != tc.badgerTS || !bytes.Equal(raw, want) {
					t.Errorf("stored meta %d, ExpiresAt %d, value %x; want %d, %d, %x", item.UserMeta(), item.ExpiresAt(), raw, tc.meta, tc.badgerTS, want)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
	// A header cut short is an error, not a value.
	if _, _, err := splitValue(metaExpiry, []byte{1, 2}); !errors.Is(err, errCorruptValue) {
		t.Errorf("splitValue of a short header: %v", err)
	}
}

func TestParseRedisInt(t *testing.T) {
	t.Parallel()
	good := map[string]int64{"0": 0, "-1": -1, "42": 42, "9223372036854775807": 1<<63 - 1, "-9223372036854775808": -1 << 63}
	for in, want := range good {
		if got, err := parseRedisInt([]byte(in)); err != nil || got != want {
			t.Errorf("parseRedisInt(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-", "-0", "00", "01", "+1", " 1", "1 ", "1.0", "0x1", "9223372036854775808", "-9223372036854775809", "123456789012345678901"} {
		if _, err := parseRedisInt([]byte(in)); !errors.Is(err, ErrNotInteger) {
			t.Errorf("parseRedisInt(%q): %v, want ErrNotInteger", in, err)
		}
	}
}
