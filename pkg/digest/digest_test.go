package digest_test

import (
	"encoding/binary"
	"testing"

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
	// Known answer: the digest of one entry is the sha256 of its framing
	// (uvarint 1, "k", uvarint 1, "v"), computed independently.
	var one digest.Digest
	h.Add(&one, []byte("k"), []byte("v"))
	if got, want := one.String(), "3a0511d85eacbbdd36deb83b3e4a9e8abe6bae92f89157155b49ae03a628c1ad"; got != want {
		t.Errorf("digest of (k,v) = %s, want %s", got, want)
	}
	// Two entries sum lane-wise with carry-free wraparound.
	two := one.Combine(one)
	ob, tb := one.Bytes(), two.Bytes()
	for lane := range 4 {
		o := binary.LittleEndian.Uint64(ob[8*lane:])
		if got := binary.LittleEndian.Uint64(tb[8*lane:]); got != o+o {
			t.Errorf("lane %d of a doubled digest = %d, want %d", lane, got, o+o)
		}
	}
}
