package store

import "github.com/slotkv/slotkv/pkg/digest"

// Digest is pkg/digest's order-independent entry digest; the store computes
// it in scans, digests and imports.
type Digest = digest.Digest

// Hasher adds entries to Digests (see digest.Hasher).
type Hasher = digest.Hasher

// NewHasher returns a Hasher.
func NewHasher() *Hasher { return digest.NewHasher() }
