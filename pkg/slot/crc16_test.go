package slot

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// crc16Bitwise is a straightforward bit-at-a-time CRC-16/XMODEM used to
// cross-check the table-driven implementation.
func crc16Bitwise(b []byte) uint16 {
	var crc uint16
	for _, c := range b {
		crc ^= uint16(c) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

func TestCRC16(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want uint16
	}{
		{"", 0},
		{"123456789", 0x31C3}, // check value from the Redis Cluster spec
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			if got := CRC16([]byte(tt.in)); got != tt.want {
				t.Errorf("CRC16(%q) = %#04x, want %#04x", tt.in, got, tt.want)
			}
			if got := crc16String(tt.in); got != tt.want {
				t.Errorf("crc16String(%q) = %#04x, want %#04x", tt.in, got, tt.want)
			}
		})
	}
}

func TestCRC16MatchesBitwise(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		b := make([]byte, rng.IntN(64))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if got, want := CRC16(b), crc16Bitwise(b); got != want {
			t.Fatalf("CRC16(%x) = %#04x, bitwise reference gives %#04x", b, got, want)
		}
		if got, want := crc16String(string(b)), crc16Bitwise(b); got != want {
			t.Fatalf("crc16String(%x) = %#04x, bitwise reference gives %#04x", b, got, want)
		}
	}
}

func TestHashTag(t *testing.T) {
	t.Parallel()
	tests := []struct {
		key, want string
	}{
		{"", ""},
		{"foo", "foo"},
		{"{user1000}.following", "user1000"},
		{"{user1000}.followers", "user1000"},
		{"foo{}{bar}", "foo{}{bar}"}, // first tag empty: whole key
		{"foo{{bar}}zap", "{bar"},    // first '{' to first '}' after it
		{"foo{bar}{zap}", "bar"},     // only the first tag counts
		{"{}", "{}"},
		{"{", "{"},
		{"}", "}"},
		{"{{}}", "{"},
		{"a{b", "a{b"},           // no closing brace
		{"foo}bar{", "foo}bar{"}, // '}' before '{' does not count
		{"}{a}", "a"},
		{"{a}", "a"},
		{"x{a}y", "a"},
		{"{}a}", "{}a}"}, // the first '}' after '{' closes an empty tag
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			t.Parallel()
			if got := HashTag([]byte(tt.key)); string(got) != tt.want {
				t.Errorf("HashTag(%q) = %q, want %q", tt.key, got, tt.want)
			}
			if got := hashTagString(tt.key); got != tt.want {
				t.Errorf("hashTagString(%q) = %q, want %q", tt.key, got, tt.want)
			}
			want := crc16Bitwise([]byte(tt.want)) % Count
			if got := Of([]byte(tt.key)); got != want {
				t.Errorf("Of(%q) = %d, want %d", tt.key, got, want)
			}
			if got := OfString(tt.key); got != want {
				t.Errorf("OfString(%q) = %d, want %d", tt.key, got, want)
			}
		})
	}
}

func TestOf(t *testing.T) {
	t.Parallel()
	// Well-known CLUSTER KEYSLOT results.
	tests := []struct {
		key  string
		want uint16
	}{
		{"foo", 12182},
		{"bar", 5061},
		{"hello", 866},
		{"", 0},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			t.Parallel()
			if got := Of([]byte(tt.key)); got != tt.want {
				t.Errorf("Of(%q) = %d, want %d", tt.key, got, tt.want)
			}
			if got := OfString(tt.key); got != tt.want {
				t.Errorf("OfString(%q) = %d, want %d", tt.key, got, tt.want)
			}
		})
	}
}

func TestOfHashTagGroupsKeys(t *testing.T) {
	t.Parallel()
	want := OfString("user1000")
	for _, k := range []string{"{user1000}.following", "{user1000}.followers", "x{user1000}", "{user1000}{other}"} {
		if got := OfString(k); got != want {
			t.Errorf("OfString(%q) = %d, want %d (slot of %q)", k, got, want, "user1000")
		}
	}
}

func TestOfRandom(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(3, 4))
	alphabet := []byte("ab{}")
	for range 5000 {
		k := make([]byte, rng.IntN(10))
		for i := range k {
			k[i] = alphabet[rng.IntN(len(alphabet))]
		}
		s, ss := Of(k), OfString(string(k))
		if s != ss {
			t.Fatalf("Of(%q) = %d but OfString = %d", k, s, ss)
		}
		if s >= Count {
			t.Fatalf("Of(%q) = %d, not below %d", k, s, Count)
		}
		if tag := HashTag(k); !bytes.Contains(k, tag) {
			t.Fatalf("HashTag(%q) = %q is not part of the key", k, tag)
		}
	}
}

// Not parallel: AllocsPerRun counts allocations of the whole process.
func TestOfStringDoesNotAllocate(t *testing.T) {
	key := "{user1000}.following"
	if n := testing.AllocsPerRun(100, func() { _ = OfString(key) }); n != 0 {
		t.Errorf("OfString allocates %v times per call", n)
	}
}

func BenchmarkOf(b *testing.B) {
	key := []byte("{user1000}.following")
	for b.Loop() {
		_ = Of(key)
	}
}
