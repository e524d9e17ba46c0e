package slot

import (
	"cmp"
	"fmt"
	"iter"
	"slices"
	"sort"
	"strings"
)

// RangeSet is an immutable set of slots, stored as a normalised list of
// ranges: sorted by Start, non-overlapping, and with adjacent ranges merged
// (so "0-100,101-200" is held, and formatted, as "0-200"). Because the form
// is canonical, two sets with the same slots are [RangeSet.Equal] and have
// the same [RangeSet.String].
//
// The zero value is the empty set. Every method leaves its receiver and
// arguments unchanged and returns a new set, so RangeSet values may be
// copied and shared between goroutines freely. Build sets with
// [ParseRangeSet], [NewRangeSet], [FromSlots], [Full] or [Even].
type RangeSet struct {
	r []Range // normalised; never mutated after construction
}

// Full returns the set of all slots, 0-16383.
func Full() RangeSet {
	return RangeSet{r: []Range{{0, MaxSlot}}}
}

// NewRangeSet returns the union of the given ranges. Unlike
// [ParseRangeSet], overlapping ranges are allowed and simply merged. It
// returns an error wrapping [ErrReversed] or [ErrOutOfRange] if a range is
// invalid (see [Range.Validate]).
func NewRangeSet(ranges ...Range) (RangeSet, error) {
	for _, r := range ranges {
		if err := r.Validate(); err != nil {
			return RangeSet{}, err
		}
	}
	sorted := slices.Clone(ranges)
	slices.SortFunc(sorted, func(a, b Range) int { return cmp.Compare(a.Start, b.Start) })
	out := make([]Range, 0, len(sorted))
	for _, r := range sorted {
		out = appendMerge(out, r)
	}
	return RangeSet{r: slices.Clip(out)}, nil
}

// FromSlots returns the set holding exactly the given slots, in any order,
// duplicates allowed. It panics if a slot is >= [Count]; slots computed by
// [Of] are always valid.
func FromSlots(slots []uint16) RangeSet {
	sorted := slices.Clone(slots)
	slices.Sort(sorted)
	var out []Range
	for _, s := range sorted {
		if s > MaxSlot {
			panic(fmt.Sprintf("slot.FromSlots: slot %d out of range 0-%d", s, MaxSlot))
		}
		out = appendMerge(out, Range{s, s})
	}
	return RangeSet{r: slices.Clip(out)}
}

// appendMerge appends r to the normalised list out, whose ranges all start
// at or before r.Start, merging r into the last range if they overlap or
// touch.
func appendMerge(out []Range, r Range) []Range {
	if n := len(out); n > 0 && int(r.Start) <= int(out[n-1].End)+1 {
		out[n-1].End = max(out[n-1].End, r.End)
		return out
	}
	return append(out, r)
}

// ParseRangeSet parses a comma-separated list of ranges as accepted by
// [ParseRange], for example "0-100,200-300" or "0-5460, 10923-16383, 42".
// Whitespace around items is ignored. Items may come in any order and
// adjacent items are merged ("0-100,101-200" is the set 0-200), but items
// that share a slot are an error wrapping [ErrOverlap]. The empty string
// (or only whitespace), and empty items as in "1,,2" or "1,", are errors
// wrapping [ErrSyntax]; there is no text form of the empty set. All errors
// quote s.
func ParseRangeSet(s string) (RangeSet, error) {
	if strings.TrimSpace(s) == "" {
		return RangeSet{}, fmt.Errorf("%w: %q: empty range set", ErrSyntax, s)
	}
	type item struct {
		r   Range
		idx int // position in the input, for error messages
	}
	n := strings.Count(s, ",") + 1
	items := make([]item, 0, n)
	i := 0
	for raw := range strings.SplitSeq(s, ",") {
		i++
		t := strings.TrimSpace(raw)
		if t == "" {
			return RangeSet{}, fmt.Errorf("%w: %q: item %d is empty", ErrSyntax, s, i)
		}
		r, perr := parseRange(t)
		if perr != nil {
			if n == 1 {
				return RangeSet{}, fmt.Errorf("%w: %q: %s", perr.kind, s, perr.msg)
			}
			return RangeSet{}, fmt.Errorf("%w: %q: item %d %q: %s", perr.kind, s, i, t, perr.msg)
		}
		items = append(items, item{r, i})
	}
	slices.SortFunc(items, func(a, b item) int {
		return cmp.Or(cmp.Compare(a.r.Start, b.r.Start), cmp.Compare(a.idx, b.idx))
	})
	out := make([]Range, 0, len(items))
	for k, it := range items {
		// Items before k are pairwise disjoint and sorted, so the one with
		// the greatest End is items[k-1].
		if k > 0 && it.r.Start <= items[k-1].r.End {
			later, earlier := it, items[k-1]
			if later.idx < earlier.idx {
				later, earlier = earlier, later
			}
			return RangeSet{}, fmt.Errorf("%w: %q: range %s overlaps %s", ErrOverlap, s, later.r, earlier.r)
		}
		out = appendMerge(out, it.r)
	}
	return RangeSet{r: slices.Clip(out)}, nil
}

// MustParseRangeSet is like [ParseRangeSet] but panics on error. It is meant
// for constants in tests and examples.
func MustParseRangeSet(s string) RangeSet {
	rs, err := ParseRangeSet(s)
	if err != nil {
		panic(err)
	}
	return rs
}

// String returns the canonical text form: the normalised ranges joined by
// commas without spaces, e.g. "0-100,200,300-400". The empty set formats as
// "" (which [ParseRangeSet] rejects).
func (s RangeSet) String() string {
	var b strings.Builder
	for i, r := range s.r {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(r.String())
	}
	return b.String()
}

// Ranges returns the normalised ranges of s (sorted, disjoint, non-adjacent)
// as a new slice that the caller may modify.
func (s RangeSet) Ranges() []Range {
	return slices.Clone(s.r)
}

// Len returns the number of slots in s.
func (s RangeSet) Len() int {
	n := 0
	for _, r := range s.r {
		n += r.Len()
	}
	return n
}

// IsEmpty reports whether s holds no slots.
func (s RangeSet) IsEmpty() bool {
	return len(s.r) == 0
}

// Equal reports whether s and o hold the same slots.
func (s RangeSet) Equal(o RangeSet) bool {
	return slices.Equal(s.r, o.r)
}

// Contains reports whether slot is in s. It runs in O(log n) for n ranges.
func (s RangeSet) Contains(slot uint16) bool {
	i := sort.Search(len(s.r), func(i int) bool { return s.r[i].End >= slot })
	return i < len(s.r) && s.r[i].Start <= slot
}

// All returns an iterator over the slots of s in increasing order.
func (s RangeSet) All() iter.Seq[uint16] {
	return func(yield func(uint16) bool) {
		for _, r := range s.r {
			for v := int(r.Start); v <= int(r.End); v++ {
				if !yield(uint16(v)) {
					return
				}
			}
		}
	}
}

// Union returns the slots that are in s or o (or both).
func (s RangeSet) Union(o RangeSet) RangeSet {
	out := make([]Range, 0, len(s.r)+len(o.r))
	i, j := 0, 0
	for i < len(s.r) || j < len(o.r) {
		var r Range
		if j >= len(o.r) || (i < len(s.r) && s.r[i].Start <= o.r[j].Start) {
			r = s.r[i]
			i++
		} else {
			r = o.r[j]
			j++
		}
		out = appendMerge(out, r)
	}
	return RangeSet{r: slices.Clip(out)}
}

// Intersect returns the slots that are in both s and o, for example to name
// the slots two migration jobs would both touch.
func (s RangeSet) Intersect(o RangeSet) RangeSet {
	var out []Range
	i, j := 0, 0
	for i < len(s.r) && j < len(o.r) {
		a, b := s.r[i], o.r[j]
		if lo, hi := max(a.Start, b.Start), min(a.End, b.End); lo <= hi {
			out = appendMerge(out, Range{lo, hi})
		}
		if a.End < b.End {
			i++
		} else {
			j++
		}
	}
	return RangeSet{r: out}
}

// Subtract returns the slots that are in s but not in o.
func (s RangeSet) Subtract(o RangeSet) RangeSet {
	var out []Range
	j := 0
	for _, a := range s.r {
		// Skip the ranges of o that end before a starts.
		for j < len(o.r) && o.r[j].End < a.Start {
			j++
		}
		start := int(a.Start)
		// Cut out every range of o that overlaps a. Don't advance j past a
		// range that extends beyond a: it may overlap the next range of s.
		for k := j; k < len(o.r) && o.r[k].Start <= a.End; k++ {
			b := o.r[k]
			if int(b.Start) > start {
				out = append(out, Range{uint16(start), b.Start - 1})
			}
			start = int(b.End) + 1
		}
		if start <= int(a.End) {
			out = append(out, Range{uint16(start), a.End})
		}
	}
	return RangeSet{r: out}
}

// Overlaps reports whether s and o share at least one slot.
func (s RangeSet) Overlaps(o RangeSet) bool {
	i, j := 0, 0
	for i < len(s.r) && j < len(o.r) {
		a, b := s.r[i], o.r[j]
		if max(a.Start, b.Start) <= min(a.End, b.End) {
			return true
		}
		if a.End < b.End {
			i++
		} else {
			j++
		}
	}
	return false
}

// Split divides s, in slot order, into min(n, s.Len()) non-empty pieces
// whose sizes differ by at most one; n <= 0 is treated as 1. The pieces are
// disjoint, ascending, and their union is s. Splitting the empty set
// returns no pieces.
//
// Piece boundaries use the rule redis-cli applies when it creates a cluster
// (piece i ends at ordinal round((i+1)*len/n) - 1, rounding halves up), but
// computed exactly in integers, so Full().Split(n) is identical to
// [Even](n).
func (s RangeSet) Split(n int) []RangeSet {
	total := s.Len()
	if total == 0 {
		return nil
	}
	n = max(n, 1)
	n = min(n, total)
	pieces := make([]RangeSet, 0, n)
	ri := 0                   // current range of s
	next := int(s.r[0].Start) // first slot not yet assigned
	taken := 0                // slots assigned so far
	for i := range n {
		// Last ordinal (0-based) of piece i: floor(((i+1)*total - n/2) / n),
		// i.e. round((i+1)*total/n - 1) with halves rounded up.
		last := (2*(i+1)*total - n) / (2 * n)
		want := last + 1 - taken
		taken += want
		var piece []Range
		for want > 0 {
			r := s.r[ri]
			avail := int(r.End) - next + 1
			take := min(want, avail)
			piece = append(piece, Range{uint16(next), uint16(next + take - 1)})
			want -= take
			next += take
			if take == avail && ri+1 < len(s.r) {
				ri++
				next = int(s.r[ri].Start)
			}
		}
		pieces = append(pieces, RangeSet{r: piece})
	}
	return pieces
}

// Even splits all Count slots into min(max(n, 1), Count) contiguous ranges
// the way redis-cli --cluster create assigns slots to n masters: sizes
// differ by at most one and, for example, Even(3) is 0-5460, 5461-10922,
// 10923-16383 (sizes 5461, 5462, 5461). Each returned set holds a single
// range.
//
// The result is identical to redis-cli for n <= 77. redis-cli accumulates
// the per-node share in a float32, which for some larger n moves a boundary
// by one slot (and for some n >= 2688 makes sizes differ by two); Even uses
// the exact rational form of the same rounding rule instead.
func Even(n int) []RangeSet {
	return Full().Split(n)
}

// Stripe divides s, in slot order, into chunks of chunk slots (the last
// may be shorter) dealt round-robin to min(n, chunks) pieces: piece i gets
// chunks i, i+n, i+2n, ... The pieces are disjoint and their union is s;
// n or chunk <= 0 is treated as 1. Parallel workers that each walk one
// piece in order all stay within a window of about n*chunk slots of each
// other, where Split's pieces spread them over the whole set.
func (s RangeSet) Stripe(n, chunk int) []RangeSet {
	total := s.Len()
	if total == 0 {
		return nil
	}
	n, chunk = max(n, 1), max(chunk, 1)
	n = min(n, (total+chunk-1)/chunk)
	parts := make([][]Range, n)
	i, left := 0, chunk // piece taking slots, slots left in its chunk
	for _, r := range s.r {
		next := int(r.Start)
		for next <= int(r.End) {
			take := min(left, int(r.End)-next+1)
			p := parts[i]
			if k := len(p) - 1; k >= 0 && int(p[k].End)+1 == next {
				p[k].End = uint16(next + take - 1)
			} else {
				parts[i] = append(p, Range{uint16(next), uint16(next + take - 1)})
			}
			next += take
			if left -= take; left == 0 {
				i, left = (i+1)%n, chunk
			}
		}
	}
	out := make([]RangeSet, n)
	for i, p := range parts {
		out[i] = RangeSet{r: p}
	}
	return out
}
