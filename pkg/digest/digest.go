// Package digest is the order-independent digest of a set of key/value
// entries that migrations verify with: the storage node computes it as it
// scans or applies entries, the migrator adds up the parts of a job.
package digest

import (
	"encoding/binary"
	"fmt"

	"github.com/cespare/xxhash/v2"
)

// DigestSize is the length of a digest in bytes: two 64-bit lanes.
const DigestSize = 16

// laneSeeds seed the xxhash64 of each lane.
var laneSeeds = [2]uint64{0, 0x9e3779b97f4a7c15}

// Digest is an order-independent, additive digest of a set of entries: per
// lane, the sum mod 2^64 of xxhash64(uvarint len(key) key uvarint
// len(value) value [expiry]) with the lane's seed (see AddExpiring). It guards against lost,
// duplicated or altered entries (bugs, bit rot), not against an adversary,
// so a fast hash does: 128 bits of it cost a migration far less CPU than a
// cryptographic one. The zero value is the digest of no entries.
type Digest struct {
	lanes [2]uint64
}

// Combine returns the digest of the union of two disjoint entry sets.
func (d Digest) Combine(o Digest) Digest {
	for i := range d.lanes {
		d.lanes[i] += o.lanes[i]
	}
	return d
}

// Bytes returns the 16-byte wire form: the lanes, little-endian, in order.
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

// Hasher adds entries to digests, reusing its hash states so a long
// digest walk allocates nothing per entry. Not safe for concurrent use.
type Hasher struct {
	h [2]*xxhash.Digest
	n [binary.MaxVarintLen64]byte
	e [8]byte
}

// NewHasher returns a Hasher.
func NewHasher() *Hasher {
	return &Hasher{h: [2]*xxhash.Digest{xxhash.NewWithSeed(laneSeeds[0]), xxhash.NewWithSeed(laneSeeds[1])}}
}

// Add adds the entry key=value, which never expires, to d.
func (h *Hasher) Add(d *Digest, key, value []byte) { h.AddExpiring(d, key, value, 0) }

// AddExpiring adds the entry key=value that expires at expiresAtMs (Unix
// milliseconds; 0 = never) to d. The expiry is part of what is hashed, so
// a copy that lost or changed an expiry does not verify: an entry that
// expires hashes its framing followed by the 8-byte big-endian expiry,
// one that does not hashes the framing alone (as before expiries existed).
// The length prefixes keep the two forms apart.
func (h *Hasher) AddExpiring(d *Digest, key, value []byte, expiresAtMs int64) {
	kl := h.n[:binary.PutUvarint(h.n[:], uint64(len(key)))]
	for i, x := range h.h {
		x.ResetWithSeed(laneSeeds[i])
		_, _ = x.Write(kl)
		_, _ = x.Write(key)
	}
	vl := h.n[:binary.PutUvarint(h.n[:], uint64(len(value)))]
	var exp []byte
	if expiresAtMs != 0 {
		exp = binary.BigEndian.AppendUint64(h.e[:0], uint64(expiresAtMs))
	}
	for i, x := range h.h {
		_, _ = x.Write(vl)
		_, _ = x.Write(value)
		_, _ = x.Write(exp)
		d.lanes[i] += x.Sum64()
	}
}
