package digest_test

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/cespare/xxhash/v2"

	"github.com/slotkv/slotkv/pkg/digest"
)

func TestDigestBoundaries(t *testing.T) {
	t.Parallel()
	// Length prefixes keep entries that concatenate the same apart.
	h := digest.NewHasher()
	var a, b digest.Digest
	h.Add(&a, []byte("ab"), []byte("c"))
	h.Add(&b, []byte("a"), []byte("bc"))
	if a == b {
		t.Error("(ab,c) and (a,bc) have the same digest")
	}
	p, err := digest.ParseDigest(a.Bytes())
	if err != nil || p != a {
		t.Errorf("ParseDigest(Bytes()) = %v, %v; want %v", p, err, a)
	}
	if _, err := digest.ParseDigest([]byte{1, 2}); err == nil {
		t.Error("ParseDigest of 2 bytes: no error")
	}
	// Known answer: lane i of the digest of one entry is the xxhash64 of
	// its framing (uvarint 1, "k", uvarint 1, "v") with the lane's seed,
	// computed here in one shot.
	var one digest.Digest
	h.Add(&one, []byte("k"), []byte("v"))
	framing := []byte{1, 'k', 1, 'v'}
	seeded := xxhash.NewWithSeed(0x9e3779b97f4a7c15)
	_, _ = seeded.Write(framing)
	want := binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, xxhash.Sum64(framing)), seeded.Sum64())
	if got := one.Bytes(); !bytes.Equal(got, want) {
		t.Errorf("digest of (k,v) = %x, want %x", got, want)
	}
	// Two entries sum lane-wise with carry-free wraparound.
	two := one.Combine(one)
	ob, tb := one.Bytes(), two.Bytes()
	for lane := range digest.DigestSize / 8 {
		o := binary.LittleEndian.Uint64(ob[8*lane:])
		if got := binary.LittleEndian.Uint64(tb[8*lane:]); got != o+o {
			t.Errorf("lane %d of a doubled digest = %d, want %d", lane, got, o+o)
		}
	}
}

// TestExpiringEntries: an entry without an expiry digests as Add does; an
// expiry changes the digest, and two different expiries differ.
func TestExpiringEntries(t *testing.T) {
	t.Parallel()
	h := digest.NewHasher()
	var plain, zero, e1, e2, again digest.Digest
	h.Add(&plain, []byte("k"), []byte("v"))
	h.AddExpiring(&zero, []byte("k"), []byte("v"), 0)
	h.AddExpiring(&e1, []byte("k"), []byte("v"), 1_733_400_000_123)
	h.AddExpiring(&e2, []byte("k"), []byte("v"), 1_733_400_000_124)
	h.AddExpiring(&again, []byte("k"), []byte("v"), 1_733_400_000_123)
	switch {
	case zero != plain:
		t.Error("AddExpiring with no expiry differs from Add")
	case e1 == plain:
		t.Error("an expiry does not change the digest")
	case e1 == e2:
		t.Error("two expiries digest the same")
	case e1 != again:
		t.Error("the same entry digests differently twice")
	}
}
