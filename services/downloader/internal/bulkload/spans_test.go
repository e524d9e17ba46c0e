package bulkload

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestSpans checks the acknowledged-records set against a plain set of
// indices under random batches (unsorted, overlapping, adjacent).
func TestSpans(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 500
	for round := range 200 {
		var s spans
		want := map[uint64]bool{}
		for range rng.IntN(20) {
			var idx []uint64
			start := rng.Uint64N(n)
			for range rng.IntN(30) {
				i := start + rng.Uint64N(40)
				if i < n {
					idx = append(idx, i)
					want[i] = true
				}
			}
			s = s.addIndices(idx)
		}
		if got := s.count(); got != uint64(len(want)) {
			t.Fatalf("round %d: count %d, want %d (%v)", round, got, len(want), s)
		}
		var p uint64
		for want[p] {
			p++
		}
		if got := s.prefix(); got != p {
			t.Fatalf("round %d: prefix %d, want %d (%v)", round, got, p, s)
		}
		for k := 1; k < len(s); k++ {
			if s[k-1].Hi >= s[k].Lo || s[k].Lo >= s[k].Hi {
				t.Fatalf("round %d: spans not sorted, disjoint and apart: %v", round, s)
			}
		}
		c := cursor{s: slices.Clone(s)}
		for i := uint64(0); i < n; i++ {
			if c.has(i) != want[i] {
				t.Fatalf("round %d: has(%d) = %v, want %v (%v)", round, i, !want[i], want[i], s)
			}
		}
	}
}
