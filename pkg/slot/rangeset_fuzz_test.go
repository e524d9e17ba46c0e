package slot

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// modelItem is what the reference parser below makes of one item of a
// range-set string: a range, or the sentinel its error must wrap.
type modelItem struct {
	r   Range
	err error
}

// modelSlot parses one slot number the slow, obvious way: digits only, any
// count of leading zeros, at most MaxSlot.
func modelSlot(s string) (uint16, error) {
	if s == "" || strings.Trim(s, "0123456789") != "" {
		return 0, ErrSyntax
	}
	s = strings.TrimLeft(s, "0")
	if len(s) > 5 {
		return 0, ErrOutOfRange
	}
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	if n > MaxSlot {
		return 0, ErrOutOfRange
	}
	return uint16(n), nil
}

// modelRange is the documented grammar of one item, written independently
// of parseRange: "N" or "START-END" with a single '-', the start checked
// before the end.
func modelRange(t string) modelItem {
	start, end, dash := strings.Cut(t, "-")
	if !dash {
		n, err := modelSlot(t)
		return modelItem{Range{n, n}, err}
	}
	if start == "" || end == "" {
		return modelItem{err: ErrSyntax}
	}
	a, err := modelSlot(start)
	if err != nil {
		return modelItem{err: err}
	}
	b, err := modelSlot(end)
	if err != nil {
		return modelItem{err: err}
	}
	if a > b {
		return modelItem{err: ErrReversed}
	}
	return modelItem{r: Range{a, b}}
}

var overlapMsg = regexp.MustCompile(`range (\S+) overlaps (\S+)$`)

// FuzzRangeSetModel checks ParseRangeSet against a reference parser and a
// bitmap of the slots: an accepted string holds exactly the slots its items
// name; a rejected one fails with the sentinel of its first bad item, and
// the error names that item by position and text, or names two items that
// really do overlap. FuzzParseRangeSet (fuzz_test.go) covers the formatting
// round trip; this target covers what the set means.
func FuzzRangeSetModel(f *testing.F) {
	for _, s := range []string{
		"0-100,200-300", " 1 ,\t2-3 ", "16383,0", "00000000016383", "1-2,x", "1-2,99999",
		"1-2,5-3", "1-2,,3", "0-10,5", "5,0-10", "3-4,1-2,2", "1,2,3,4-8,9-9", "0-16383,16384",
		"1 - 2", "1--2", "-5", "7-", "1-2-3", "\u00a01\u00a0", "1,\u0085", "٣",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		rs, err := ParseRangeSet(in)

		// The reference: items in input order, the first bad one decides.
		var items []modelItem
		var bad, badIdx = error(nil), 0
		raw := strings.Split(in, ",")
		for i, it := range raw {
			item := strings.TrimSpace(it)
			m := modelRange(item)
			if item == "" {
				m = modelItem{err: ErrSyntax}
			}
			if m.err != nil && bad == nil {
				bad, badIdx = m.err, i+1
			}
			items = append(items, m)
		}
		if strings.TrimSpace(in) == "" {
			bad, badIdx = ErrSyntax, 0
		}

		if bad != nil {
			if err == nil {
				t.Fatalf("ParseRangeSet(%q) = %v, want an error wrapping %v (item %d)", in, rs, bad, badIdx)
			}
			if !errors.Is(err, bad) {
				t.Fatalf("ParseRangeSet(%q) = %v, want it to wrap %v (item %d)", in, err, bad, badIdx)
			}
			// With more than one item, the error must say which one is bad,
			// by position and by its text.
			if len(raw) > 1 && badIdx > 0 {
				want := fmt.Sprintf("item %d ", badIdx)
				if !strings.Contains(err.Error(), want) {
					t.Fatalf("ParseRangeSet(%q) = %v, does not name %q", in, err, want)
				}
			}
			return
		}

		// Every item is a valid range: the set is their union, unless two
		// of them share a slot.
		var count [Count]int
		overlap := false
		for _, m := range items {
			for s := int(m.r.Start); s <= int(m.r.End); s++ {
				count[s]++
				overlap = overlap || count[s] > 1
			}
		}
		if overlap {
			if !errors.Is(err, ErrOverlap) {
				t.Fatalf("ParseRangeSet(%q) = %v, %v; want an error wrapping ErrOverlap", in, rs, err)
			}
			m := overlapMsg.FindStringSubmatch(err.Error())
			if m == nil {
				t.Fatalf("ParseRangeSet(%q) error %q does not name the overlapping ranges", in, err)
			}
			a, aerr := ParseRange(m[1])
			b, berr := ParseRange(m[2])
			if aerr != nil || berr != nil || max(a.Start, b.Start) > min(a.End, b.End) {
				t.Fatalf("ParseRangeSet(%q) error %q names ranges that do not overlap", in, err)
			}
			for _, r := range []Range{a, b} {
				found := false
				for _, it := range items {
					found = found || it.r == r
				}
				if !found {
					t.Fatalf("ParseRangeSet(%q) error %q names %v, which is not an item of the input", in, err, r)
				}
			}
			return
		}
		if err != nil {
			t.Fatalf("ParseRangeSet(%q) = %v, but every item is valid and disjoint", in, err)
		}
		checkNormalised(t, rs)
		bits := toBits(rs)
		n := 0
		for s := range Count {
			if bits[s] != (count[s] == 1) {
				t.Fatalf("ParseRangeSet(%q): slot %d in set = %v, named by the input = %v", in, s, bits[s], count[s] == 1)
			}
			if bits[s] {
				n++
			}
		}
		if rs.Len() != n {
			t.Fatalf("ParseRangeSet(%q).Len() = %d, the set has %d slots", in, rs.Len(), n)
		}
	})
}

// fuzzSet turns fuzz bytes into a set: each 4 bytes are two slots (mod
// Count) that bound a range. Overlapping and reversed pairs are allowed,
// so sets that nest, touch and overlap come up often.
func fuzzSet(b []byte) RangeSet {
	var rs []Range
	for ; len(b) >= 4; b = b[4:] {
		x := (uint16(b[0])<<8 | uint16(b[1])) % Count
		y := (uint16(b[2])<<8 | uint16(b[3])) % Count
		rs = append(rs, Range{min(x, y), max(x, y)})
	}
	s, err := NewRangeSet(rs...)
	if err != nil {
		panic(err) // every range is valid by construction
	}
	return s
}

// FuzzRangeSetOps checks the set algebra, Split and Stripe against a
// bitmap model on sets built from fuzz bytes, and that every result is
// normalised and formats to a string that parses back to itself.
func FuzzRangeSetOps(f *testing.F) {
	f.Add([]byte{0, 0, 0, 100}, []byte{0, 50, 0, 200}, uint8(3), uint8(2))
	f.Add([]byte{0, 0, 0x3f, 0xff}, []byte{0, 1, 0, 1, 0, 3, 0, 3}, uint8(7), uint8(0))
	f.Add([]byte{0, 10, 0, 20, 0, 21, 0, 30}, []byte{}, uint8(0), uint8(255))
	f.Add([]byte{}, []byte{0xff, 0xff, 0xff, 0xff}, uint8(1), uint8(1))
	f.Fuzz(func(t *testing.T, x, y []byte, n, chunk uint8) {
		a, b := fuzzSet(x), fuzzSet(y)
		ab, bb := toBits(a), toBits(b)
		var union, inter, sub bitset
		overlaps := false
		for s := range Count {
			union[s] = ab[s] || bb[s]
			inter[s] = ab[s] && bb[s]
			sub[s] = ab[s] && !bb[s]
			overlaps = overlaps || inter[s]
		}
		for _, c := range []struct {
			name string
			got  RangeSet
			want *bitset
		}{
			{"a", a, ab},
			{"Union", a.Union(b), &union},
			{"Intersect", a.Intersect(b), &inter},
			{"Subtract", a.Subtract(b), &sub},
		} {
			checkNormalised(t, c.got)
			if *toBits(c.got) != *c.want {
				t.Fatalf("%v %s %v = %v, the model disagrees", a, c.name, b, c.got)
			}
			if c.got.IsEmpty() {
				continue
			}
			again, err := ParseRangeSet(c.got.String())
			if err != nil || !again.Equal(c.got) {
				t.Fatalf("%s result %q re-parses to %v, %v", c.name, c.got.String(), again, err)
			}
		}
		if a.Overlaps(b) != overlaps {
			t.Fatalf("%v.Overlaps(%v) = %v, want %v", a, b, a.Overlaps(b), overlaps)
		}

		// Split: sizes differ by at most one; Stripe: whole chunks except
		// the last. Both: disjoint, ascending within a piece, union is a.
		for _, op := range []struct {
			name   string
			pieces []RangeSet
		}{
			{"Split", a.Split(int(n))},
			{"Stripe", a.Stripe(int(n%16), int(chunk))},
		} {
			if a.IsEmpty() {
				if len(op.pieces) != 0 {
					t.Fatalf("%s of the empty set gave %d pieces", op.name, len(op.pieces))
				}
				continue
			}
			var seen bitset
			lo, hi := Count, 0
			for i, p := range op.pieces {
				checkNormalised(t, p)
				if p.IsEmpty() {
					t.Fatalf("%s(%v): piece %d is empty", op.name, a, i)
				}
				for s := range p.All() {
					if seen[s] || !ab[s] {
						t.Fatalf("%s(%v): piece %d holds slot %d twice or from outside the set", op.name, a, i, s)
					}
					seen[s] = true
				}
				lo, hi = min(lo, p.Len()), max(hi, p.Len())
			}
			if seen != *ab {
				t.Fatalf("%s(%v): the pieces do not cover the set", op.name, a)
			}
			if op.name == "Split" {
				if want := min(max(int(n), 1), a.Len()); len(op.pieces) != want || hi-lo > 1 {
					t.Fatalf("Split(%v, %d): %d pieces of %d-%d slots, want %d differing by at most 1", a, n, len(op.pieces), lo, hi, want)
				}
			}
		}
	})
}
