package kvpack_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/slotkv/slotkv/pkg/kvpack"
)

// FuzzRoundTrip packs entries cut from fuzz bytes and reads them back: the
// same keys and values in the same order, Count agrees, and the slices
// handed out are capacity-limited, so a destination that appends to a key
// cannot overwrite the value after it in the batch.
func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte("k\x00v\x00key2\x00"), uint8(1))
	f.Add([]byte("\x00\x00\x00"), uint8(0))
	f.Add(bytes.Repeat([]byte{0xab}, 300), uint8(200))
	f.Fuzz(func(t *testing.T, data []byte, cut uint8) {
		// Entries: NUL-separated fields in pairs; empty keys and values
		// are legal in the format, so they are kept.
		fields := bytes.Split(data, []byte{0})
		if len(fields)%2 == 1 {
			fields = append(fields, data[:int(cut)%(len(data)+1)])
		}
		// With an odd cut, every other entry carries an expiry (a marker
		// before it); the rest are packed exactly as Append packs them.
		exps := make([]int64, len(fields)/2)
		var b []byte
		for i := 0; i < len(fields); i += 2 {
			if cut%2 == 1 && i%4 == 0 {
				exps[i/2] = int64(cut)<<32 | int64(i) + 1
			}
			b = kvpack.AppendExpiring(b, fields[i], fields[i+1], exps[i/2])
		}
		m := 0
		if err := kvpack.ForEachExpiring(b, func(i int, _, _ []byte, exp int64) error {
			if exp != exps[i] {
				t.Fatalf("entry %d expires at %d, packed %d", i, exp, exps[i])
			}
			m++
			return nil
		}); err != nil || m != len(exps) {
			t.Fatalf("ForEachExpiring over %d packed entries: %d entries, %v", len(exps), m, err)
		}
		n := 0
		err := kvpack.ForEach(b, func(i int, k, v []byte) error {
			if i != n {
				t.Fatalf("entry %d passed as index %d", n, i)
			}
			if !bytes.Equal(k, fields[2*i]) || !bytes.Equal(v, fields[2*i+1]) {
				t.Fatalf("entry %d = %q, %q; packed %q, %q", i, k, v, fields[2*i], fields[2*i+1])
			}
			if cap(k) != len(k) || cap(v) != len(v) {
				t.Fatalf("entry %d: key or value has spare capacity (len %d cap %d, len %d cap %d)", i, len(k), cap(k), len(v), cap(v))
			}
			n++
			return nil
		})
		if err != nil || n != len(fields)/2 {
			t.Fatalf("ForEach over %d packed entries: %d entries, %v", len(fields)/2, n, err)
		}
		if c, err := kvpack.Count(b); err != nil || c != n {
			t.Fatalf("Count = %d, %v; want %d", c, err, n)
		}
		// fn's error stops the walk at once and comes back unchanged.
		if n > 0 {
			stop := errors.New("stop")
			stopAt := int(cut) % n
			calls := 0
			err := kvpack.ForEach(b, func(i int, _, _ []byte) error {
				calls++
				if i == stopAt {
					return stop
				}
				return nil
			})
			if err != stop || calls != stopAt+1 {
				t.Fatalf("ForEach stopping at entry %d: %d calls, %v", stopAt, calls, err)
			}
		}
		// Every proper prefix that cuts an entry short is corrupt and the
		// error names the entry it cut; the entries before it are passed.
		if len(b) > 0 {
			p := int(cut) % len(b)
			good := 0
			err := kvpack.ForEach(b[:p], func(int, []byte, []byte) error { good++; return nil })
			if err == nil {
				// The cut fell on an entry boundary.
				return
			}
			if !errors.Is(err, kvpack.ErrCorrupt) || !strings.Contains(err.Error(), fmt.Sprintf("entry %d:", good)) {
				t.Fatalf("ForEach of a %d-byte prefix: %v after %d entries; want ErrCorrupt naming entry %d", p, err, good, good)
			}
		}
	})
}

// FuzzDecode feeds arbitrary bytes to ForEach: it never panics, never hands
// out more key and value bytes than the input holds, fails only with ErrCorrupt naming the
// entry it stopped at, and the entries it does return, repacked, form a
// valid batch of the same entries.
func FuzzDecode(f *testing.F) {
	f.Add(kvpack.Append(kvpack.Append(nil, []byte("k"), []byte("v")), []byte("k2"), nil))
	f.Add([]byte{0x80})
	f.Add([]byte{0x01, 'k', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add([]byte{0x81, 0x00, 'k', 0x00})
	f.Add(kvpack.AppendExpiring(kvpack.Append(nil, []byte("k"), []byte("v")), []byte("k2"), []byte("v2"), 1_733_400_000_123))
	f.Add([]byte{0x80, 0x00, 0, 0, 0, 0, 0, 0, 0, 1, 0x80, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		var keys, values [][]byte
		total := 0
		err := kvpack.ForEach(b, func(i int, k, v []byte) error {
			keys, values = append(keys, k), append(values, v)
			if total += len(k) + len(v); total > len(b) {
				t.Fatalf("ForEach(%x) handed out %d bytes of keys and values", b, total)
			}
			return nil
		})
		if err != nil {
			if !errors.Is(err, kvpack.ErrCorrupt) {
				t.Fatalf("ForEach(%x) = %v, not ErrCorrupt", b, err)
			}
			if want := fmt.Sprintf("entry %d:", len(keys)); !strings.Contains(err.Error(), want) {
				t.Fatalf("ForEach(%x) = %v after %d entries, does not name %q", b, err, len(keys), want)
			}
			if _, cerr := kvpack.Count(b); cerr == nil {
				t.Fatalf("Count(%x) succeeds where ForEach fails: %v", b, err)
			}
		} else if c, cerr := kvpack.Count(b); cerr != nil || c != len(keys) {
			t.Fatalf("Count(%x) = %d, %v; ForEach saw %d", b, c, cerr, len(keys))
		}
		var again []byte
		for i := range keys {
			again = kvpack.Append(again, keys[i], values[i])
		}
		i := 0
		if err := kvpack.ForEach(again, func(_ int, k, v []byte) error {
			if !bytes.Equal(k, keys[i]) || !bytes.Equal(v, values[i]) {
				t.Fatalf("repacked entry %d differs", i)
			}
			i++
			return nil
		}); err != nil || i != len(keys) {
			t.Fatalf("repacked batch: %d of %d entries, %v", i, len(keys), err)
		}
	})
}
