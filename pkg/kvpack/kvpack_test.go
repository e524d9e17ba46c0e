package kvpack_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/slotkv/slotkv/pkg/kvpack"
)

func TestRoundTrip(t *testing.T) {
	entries := [][2][]byte{{[]byte("a"), []byte("1")}, {[]byte(""), []byte("")}, {bytes.Repeat([]byte("k"), 300), bytes.Repeat([]byte("v"), 70000)}, {{0, 0xff}, nil}}
	var b []byte
	for _, e := range entries {
		b = kvpack.Append(b, e[0], e[1])
	}
	var got [][2][]byte
	err := kvpack.ForEach(b, func(i int, k, v []byte) error {
		if i != len(got) {
			t.Errorf("index %d, want %d", i, len(got))
		}
		got = append(got, [2][]byte{k, v})
		return nil
	})
	if err != nil || len(got) != len(entries) {
		t.Fatalf("ForEach: %d entries, %v", len(got), err)
	}
	if n, err := kvpack.Count(b); n != len(entries) || err != nil {
		t.Errorf("Count = %d, %v; want %d", n, err, len(entries))
	}
	for i := range entries {
		if !bytes.Equal(got[i][0], entries[i][0]) || !bytes.Equal(got[i][1], entries[i][1]) {
			t.Errorf("entry %d = %q, want %q", i, got[i], entries[i])
		}
	}
	stop := errors.New("stop")
	if err := kvpack.ForEach(b, func(int, []byte, []byte) error { return stop }); err != stop {
		t.Errorf("fn's error not returned: %v", err)
	}
}

func TestCorrupt(t *testing.T) {
	good := kvpack.Append(kvpack.Append(nil, []byte("key"), []byte("value")), []byte("k2"), []byte("v2"))
	cases := map[string][]byte{
		"cut in a value":   good[:len(good)-1],
		"cut after a key":  good[:len(good)-3],
		"length overflows": append(bytes.Clone(good), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01),
		"length too long":  append(bytes.Clone(good), 0x05, 'a'),
		"truncated length": append(bytes.Clone(good), 0x80),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := kvpack.Count(b)
			if !errors.Is(err, kvpack.ErrCorrupt) || !bytes.Contains([]byte(err.Error()), []byte("entry")) {
				t.Errorf("ForEach = %v, want ErrCorrupt naming the entry", err)
			}
		})
	}
}

// FuzzForEach: any input parses or fails cleanly, and what parses packs
// again into bytes that parse to as many entries and are no longer (a
// non-minimal varint parses but packs back shorter).
func FuzzForEach(f *testing.F) {
	f.Add(kvpack.Append(nil, []byte("k"), []byte("v")))
	f.Add([]byte{0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		var again []byte
		n := 0
		if err := kvpack.ForEach(b, func(_ int, k, v []byte) error {
			again = kvpack.Append(again, k, v)
			n++
			return nil
		}); err != nil {
			return
		}
		m := 0
		err := kvpack.ForEach(again, func(int, []byte, []byte) error { m++; return nil })
		if err != nil || m != n || len(again) > len(b) {
			t.Fatalf("repacked %d entries into %d bytes (from %d): %d entries, %v", n, len(again), len(b), m, err)
		}
	})
}

// TestExpiring: entries with and without an expiry mix in one batch; the
// ones without are written exactly as Append writes them, ForEach skips
// the markers and ForEachExpiring returns them; a marker cut short, at the
// end of a batch or doubled is corrupt and names its entry.
func TestExpiring(t *testing.T) {
	const exp = int64(1_733_400_000_123)
	b := kvpack.AppendExpiring(nil, []byte("a"), []byte("1"), 0)
	if !bytes.Equal(b, kvpack.Append(nil, []byte("a"), []byte("1"))) {
		t.Fatalf("AppendExpiring without an expiry = %x, not Append's form", b)
	}
	b = kvpack.AppendExpiring(b, []byte("b"), []byte("2"), exp)
	b = kvpack.AppendExpiring(b, []byte(""), []byte(""), -5)
	b = kvpack.AppendExpiring(b, []byte("c"), nil, 0)
	type entry struct {
		k, v string
		exp  int64
	}
	want := []entry{{"a", "1", 0}, {"b", "2", exp}, {"", "", -5}, {"c", "", 0}}
	var got []entry
	if err := kvpack.ForEachExpiring(b, func(i int, k, v []byte, e int64) error {
		if i != len(got) {
			t.Errorf("index %d, want %d", i, len(got))
		}
		got = append(got, entry{string(k), string(v), e})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("ForEachExpiring = %v, want %v", got, want)
	}
	var keys []string
	if err := kvpack.ForEach(b, func(_ int, k, _ []byte) error { keys = append(keys, string(k)); return nil }); err != nil || fmt.Sprint(keys) != "[a b  c]" {
		t.Fatalf("ForEach keys = %q, %v", keys, err)
	}
	if n, err := kvpack.Count(b); n != 4 || err != nil {
		t.Fatalf("Count = %d, %v; want 4", n, err)
	}
	one := kvpack.Append(nil, []byte("k"), []byte("v"))
	marker := kvpack.AppendMarker(nil, exp)
	for name, tc := range map[string]struct {
		b     []byte
		entry int
	}{
		"marker cut short":  {append(bytes.Clone(one), marker[:5]...), 1},
		"marker at the end": {append(bytes.Clone(one), marker...), 1},
		"two markers":       {append(append(bytes.Clone(marker), marker...), one...), 0},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := kvpack.Count(tc.b)
			if !errors.Is(err, kvpack.ErrCorrupt) || !strings.Contains(err.Error(), fmt.Sprintf("entry %d:", tc.entry)) {
				t.Fatalf("Count = %v, want ErrCorrupt naming entry %d", err, tc.entry)
			}
		})
	}
}
