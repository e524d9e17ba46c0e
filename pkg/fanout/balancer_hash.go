package fanout

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// ConsistentHash returns a Balancer that places vnodes points per unit of
// weight for each sub-channel on a hash ring (100 when vnodes <= 0); a
// sub-channel of weight w has w*vnodes points. The points are hashed from
// the sub-channel's Name only, so a key stays on the same sub-channel when
// another one is added or removed: removing a sub-channel moves only the
// keys it held, adding one moves only the keys it takes.
//
// The call's key (SelectiveOptions.Key) is mixed before it is placed on the
// ring, so small or sequential keys spread as well as hashed ones. A key
// goes to the first point at or after it clockwise; when that sub-channel
// is excluded (a retry or a backup) the walk goes on to the next
// sub-channel on the ring, which is the same one every time for that key.
//
// The ring is built on the first Pick for a list of sub-channels and kept
// for the next ones, by list: one instance may be shared by many channels
// (the Selective of every partition, say), each with its own list.
func ConsistentHash(vnodes int) Balancer {
	if vnodes <= 0 {
		vnodes = 100
	}
	ch := &consistentHash{vnodes: vnodes}
	ch.rings.Store(&map[uint64]*hashRing{})
	return ch
}

// maxHashRings bounds the rings one ConsistentHash keeps; past it the cache
// starts over (lists that are still used are rebuilt once).
const maxHashRings = 1024

type consistentHash struct {
	vnodes int
	mu     sync.Mutex                           // serialises ring cache writers
	rings  atomic.Pointer[map[uint64]*hashRing] // by listSignature
}

type hashRing struct {
	subs   []SubInfo // the list the ring was built for
	hashes []uint64  // sorted points
	owners []int32   // owners[i] is the index in subs of point hashes[i]
}

func (r *hashRing) matches(subs []SubInfo) bool {
	if r == nil || len(r.subs) != len(subs) {
		return false
	}
	for i := range subs {
		if r.subs[i] != subs[i] {
			return false
		}
	}
	return true
}

// listSignature hashes a list of sub-channels, order included.
func listSignature(subs []SubInfo) uint64 {
	h := uint64(len(subs))
	for _, s := range subs {
		h = hashMix64(h ^ hashFNV1a(s.Name))
		h = hashMix64(h ^ uint64(s.Weight))
	}
	return h
}

func (c *consistentHash) ring(subs []SubInfo) *hashRing {
	sig := listSignature(subs)
	if r := (*c.rings.Load())[sig]; r.matches(subs) {
		return r
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := *c.rings.Load()
	if r := old[sig]; r.matches(subs) {
		return r
	}
	r := buildRing(subs, c.vnodes)
	m := make(map[uint64]*hashRing, len(old)+1)
	if len(old) < maxHashRings {
		for k, v := range old {
			m[k] = v
		}
	}
	m[sig] = r
	c.rings.Store(&m)
	return r
}

func buildRing(subs []SubInfo, vnodes int) *hashRing {
	type point struct {
		hash  uint64
		owner int32
	}
	var pts []point
	for i, s := range subs {
		base := hashFNV1a(s.Name)
		for v := range vnodes * balWeight(s.Weight) {
			pts = append(pts, point{hashMix64(base + uint64(v)*0x9e3779b97f4a7c15), int32(i)})
		}
	}
	// Ties (astronomically rare) go to the smaller name, not the smaller
	// index, so that the ring does not depend on the order of subs.
	slices.SortFunc(pts, func(a, b point) int {
		switch {
		case a.hash < b.hash:
			return -1
		case a.hash > b.hash:
			return 1
		case subs[a.owner].Name < subs[b.owner].Name:
			return -1
		case subs[a.owner].Name > subs[b.owner].Name:
			return 1
		}
		return 0
	})
	r := &hashRing{subs: slices.Clone(subs), hashes: make([]uint64, len(pts)), owners: make([]int32, len(pts))}
	for i, p := range pts {
		r.hashes[i], r.owners[i] = p.hash, p.owner
	}
	return r
}

func (c *consistentHash) Pick(key uint64, subs []SubInfo, exclude func(int) bool) int {
	if balCountFree(subs, exclude) == 0 {
		return -1
	}
	r := c.ring(subs)
	h := hashMix64(key)
	start, _ := slices.BinarySearch(r.hashes, h)
	n := len(r.hashes)
	for k := range n {
		i := int(r.owners[(start+k)%n])
		if !balExcluded(exclude, i) {
			return i
		}
	}
	return -1
}

func (*consistentHash) Observe(string, time.Duration, error) {}

// hashFNV1a is the 64-bit FNV-1a hash of s.
func hashFNV1a(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// hashMix64 is the splitmix64 finaliser: a bijection that spreads every input
// bit over the whole word.
func hashMix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
