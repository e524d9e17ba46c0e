// Package digest is the order-independent digest of a set of key/value
// entries that migrations verify with: the storage node computes it as it
// scans or applies entries, the migrator adds up the parts of a job.
package digest

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
)

// DigestSize is the length of a digest in bytes: four 64-bit lanes.
const DigestSize = 32

// Digest is an order-independent, additive digest of a set of entries: the
// lane-wise sum mod 2^64 of sha256(uvarint len(key) key uvarint len(value)
// value) read as four little-endian uint64 lanes. The zero value is the
// digest of no entries.
type Digest struct {
	lanes [4]uint64
}

// Combine returns the digest of the union of two disjoint entry sets.
func (d Digest) Combine(o Digest) Digest {
	for i := range d.lanes {
		d.lanes[i] += o.lanes[i]
	}
	return d
}

// Bytes returns the 32-byte wire form: the lanes, little-endian, in order.
func (d Digest) Bytes() []byte {
	b := make([]byte, 0, DigestSize)
	for _, l := range d.lanes {
		b = binary.LittleEndian.AppendUint64(b, l)
	}
	return b
}

// String is the hex of Bytes.
func (d Digest) String() string { return fmt.Sprintf("%x", d.Bytes()) }

// ParseDigest reads the wire form written by Bytes.
func ParseDigest(b []byte) (Digest, error) {
	var d Digest
	if len(b) != DigestSize {
		return d, fmt.Errorf("digest is %d bytes, want %d", len(b), DigestSize)
	}
	for i := range d.lanes {
		d.lanes[i] = binary.LittleEndian.Uint64(b[8*i:])
	}
	return d, nil
}

// Hasher adds entries to digests, reusing its hash state and buffers so a
// long digest walk allocates nothing per entry. Not safe for concurrent use.
type Hasher struct {
	h   hash.Hash
	buf [sha256.Size]byte
	n   [binary.MaxVarintLen64]byte
}

// NewHasher returns a Hasher.
func NewHasher() *Hasher { return &Hasher{h: sha256.New()} }

// Add adds the entry key=value to d.
func (h *Hasher) Add(d *Digest, key, value []byte) {
	h.h.Reset()
	h.h.Write(h.n[:binary.PutUvarint(h.n[:], uint64(len(key)))])
	h.h.Write(key)
	h.h.Write(h.n[:binary.PutUvarint(h.n[:], uint64(len(value)))])
	h.h.Write(value)
	sum := h.h.Sum(h.buf[:0])
	for i := range d.lanes {
		d.lanes[i] += binary.LittleEndian.Uint64(sum[8*i:])
	}
}
