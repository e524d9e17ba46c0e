package bulkload

import "slices"

// span is a run of record indices of a file, [lo, hi).
type span struct{ Lo, Hi uint64 }

// spans is a sorted set of disjoint, non-adjacent spans: the records of a
// file that storage nodes have acknowledged (committed).
type spans []span

// count is the number of indices in the set.
func (s spans) count() uint64 {
	var n uint64
	for _, sp := range s {
		n += sp.Hi - sp.Lo
	}
	return n
}

// prefix is the number of indices from 0 that are all in the set.
func (s spans) prefix() uint64 {
	if len(s) > 0 && s[0].Lo == 0 {
		return s[0].Hi
	}
	return 0
}

// add returns the set with [lo, hi) added.
func (s spans) add(lo, hi uint64) spans {
	if lo >= hi {
		return s
	}
	// First span that ends at or after lo (may touch [lo, hi)).
	i, _ := slices.BinarySearchFunc(s, lo, func(sp span, v uint64) int {
		switch {
		case sp.Hi < v:
			return -1
		case sp.Hi > v:
			return 1
		}
		return 0
	})
	j := i
	for j < len(s) && s[j].Lo <= hi {
		lo, hi = min(lo, s[j].Lo), max(hi, s[j].Hi)
		j++
	}
	return slices.Replace(s, i, j, span{lo, hi})
}

// addIndices returns the set with every index of idx added.
func (s spans) addIndices(idx []uint64) spans {
	idx = slices.Clone(idx)
	slices.Sort(idx)
	for k := 0; k < len(idx); {
		lo, hi := idx[k], idx[k]+1
		k++
		for k < len(idx) && idx[k] <= hi {
			hi = max(hi, idx[k]+1)
			k++
		}
		s = s.add(lo, hi)
	}
	return s
}

// cursor answers "is index i in the set" for increasing i in amortized
// constant time.
type cursor struct {
	s spans
	k int
}

func (c *cursor) has(i uint64) bool {
	for c.k < len(c.s) && c.s[c.k].Hi <= i {
		c.k++
	}
	return c.k < len(c.s) && c.s[c.k].Lo <= i
}
