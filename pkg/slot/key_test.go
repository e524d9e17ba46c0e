package slot

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestPrefix(t *testing.T) {
	t.Parallel()
	tests := []struct {
		slot uint16
		want [2]byte
	}{
		{0, [2]byte{0, 0}},
		{1, [2]byte{0, 1}},
		{0x1234, [2]byte{0x12, 0x34}},
		{MaxSlot, [2]byte{0x3f, 0xff}},
		{Count, [2]byte{0x40, 0x00}},
	}
	for _, tt := range tests {
		if got := Prefix(tt.slot); got != tt.want {
			t.Errorf("Prefix(%d) = %x, want %x", tt.slot, got, tt.want)
		}
	}
}

func TestAppendSplitKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		slot uint16
		key  string
	}{
		{"empty key", 0, ""},
		{"foo", 12182, "foo"},
		{"max slot", MaxSlot, "k"},
		{"binary", 258, "\x00\xff{}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := Prefix(tt.slot)
			k := AppendKey(nil, tt.slot, []byte(tt.key))
			if want := string(p[:]) + tt.key; string(k) != want {
				t.Fatalf("AppendKey = %q, want %q", k, want)
			}
			withDst := AppendKey([]byte("xx"), tt.slot, []byte(tt.key))
			if string(withDst) != "xx"+string(k) {
				t.Fatalf("AppendKey with dst = %q, want %q", withDst, "xx"+string(k))
			}
			s, uk, err := SplitKey(k)
			if err != nil || s != tt.slot || string(uk) != tt.key {
				t.Fatalf("SplitKey(%q) = %d, %q, %v; want %d, %q", k, s, uk, err, tt.slot, tt.key)
			}
		})
	}
}

func TestSplitKeyErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		k      string
		target error
		detail string
	}{
		{"", ErrShortKey, `"": need at least 2 bytes, got 0`},
		{"\x01", ErrShortKey, `"\x01": need at least 2 bytes, got 1`},
		{"\x40\x00foo", ErrOutOfRange, `"@\x00": slot 16384 out of range 0-16383`},
		{"\xff\xff", ErrOutOfRange, `"\xff\xff": slot 65535 out of range`},
	}
	for _, tt := range tests {
		t.Run(tt.detail, func(t *testing.T) {
			t.Parallel()
			_, _, err := SplitKey([]byte(tt.k))
			if !errors.Is(err, tt.target) {
				t.Fatalf("SplitKey(%q) = %v, want error wrapping %v", tt.k, err, tt.target)
			}
			if !strings.Contains(err.Error(), tt.detail) {
				t.Errorf("SplitKey(%q) = %q, want it to contain %q", tt.k, err, tt.detail)
			}
		})
	}
}

func TestKeyBounds(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(9, 10))
	ranges := []Range{{0, 0}, {0, MaxSlot}, {MaxSlot, MaxSlot}, {255, 256}, {100, 5000}}
	for range 20 {
		a, b := uint16(rng.IntN(Count)), uint16(rng.IntN(Count))
		ranges = append(ranges, Range{min(a, b), max(a, b)})
	}
	for _, r := range ranges {
		lo, hi := r.KeyBounds()
		for range 500 {
			var s uint16
			switch rng.IntN(4) {
			case 0:
				s = r.Start
			case 1:
				s = r.End
			case 2:
				s = uint16(max(int(r.Start)-1, 0))
			default:
				s = uint16(rng.IntN(Count))
			}
			key := make([]byte, rng.IntN(4))
			for i := range key {
				key[i] = []byte{0x00, 0xff, 'a'}[rng.IntN(3)]
			}
			k := AppendKey(nil, s, key)
			in := bytes.Compare(lo[:], k) <= 0 && bytes.Compare(k, hi[:]) < 0
			if in != r.Contains(s) {
				t.Fatalf("%v.KeyBounds() = [%x, %x): key %x of slot %d inside = %v", r, lo, hi, k, s, in)
			}
		}
	}
}
