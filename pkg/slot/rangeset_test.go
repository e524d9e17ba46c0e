package slot

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
)

func TestParseRangeSet(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in     string
		want   []Range
		format string
	}{
		{"0", []Range{{0, 0}}, "0"},
		{"42", []Range{{42, 42}}, "42"},
		{"0-16383", []Range{{0, 16383}}, "0-16383"},
		{"0-100,200-300", []Range{{0, 100}, {200, 300}}, "0-100,200-300"},
		{" 0-100 , 200-300 ", []Range{{0, 100}, {200, 300}}, "0-100,200-300"},
		{"\t0-100,\n200-300\n", []Range{{0, 100}, {200, 300}}, "0-100,200-300"},
		{"200-300,0-100", []Range{{0, 100}, {200, 300}}, "0-100,200-300"},
		{"0-100,101-200", []Range{{0, 200}}, "0-200"},
		{"101-200,0-100", []Range{{0, 200}}, "0-200"},
		{"1,2,3,5", []Range{{1, 3}, {5, 5}}, "1-3,5"},
		{"5-5", []Range{{5, 5}}, "5"},
		{"007-010,11", []Range{{7, 11}}, "7-11"},
		{"0-5460,5461-10922,10923-16383", []Range{{0, 16383}}, "0-16383"},
		{"16383,0", []Range{{0, 0}, {16383, 16383}}, "0,16383"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParseRangeSet(tt.in)
			if err != nil {
				t.Fatalf("ParseRangeSet(%q): %v", tt.in, err)
			}
			if !slices.Equal(got.Ranges(), tt.want) {
				t.Fatalf("ParseRangeSet(%q) = %v, want %v", tt.in, got.Ranges(), tt.want)
			}
			if s := got.String(); s != tt.format {
				t.Errorf("String() = %q, want %q", s, tt.format)
			}
			again, err := ParseRangeSet(got.String())
			if err != nil || !again.Equal(got) {
				t.Errorf("ParseRangeSet(%q) = %v, %v; want %v", got.String(), again, err, got)
			}
			checkNormalised(t, got)
		})
	}
}

func TestParseRangeSetErrors(t *testing.T) {
	t.Parallel()
	cases := []errCase{
		{"", ErrSyntax, "empty range set"},
		{"  \t", ErrSyntax, "empty range set"},
		{"1,,2", ErrSyntax, "item 2 is empty"},
		{"1,", ErrSyntax, "item 2 is empty"},
		{",1", ErrSyntax, "item 1 is empty"},
		{"1, ,2", ErrSyntax, "item 2 is empty"},
		{",", ErrSyntax, "item 1 is empty"},
		{"0-100,50-60", ErrOverlap, "range 50-60 overlaps 0-100"},
		{"50-60,0-100", ErrOverlap, "range 0-100 overlaps 50-60"},
		{"0-100,100-200", ErrOverlap, "range 100-200 overlaps 0-100"},
		{"5,5", ErrOverlap, "range 5 overlaps 5"},
		{"0-10,20-30,25", ErrOverlap, "range 25 overlaps 20-30"},
		{"0-16383,42", ErrOverlap, "range 42 overlaps 0-16383"},
		{"0-10,300-200", ErrReversed, `item 2 "300-200": start 300 is after end 200`},
		{"300-200", ErrReversed, "start 300 is after end 200"},
		{"0-16384", ErrOutOfRange, "slot 16384 out of range 0-16383"},
		{"1,16384", ErrOutOfRange, `item 2 "16384": slot 16384 out of range 0-16383`},
		{"abc", ErrSyntax, "invalid character 'a'"},
		{"1,abc", ErrSyntax, `item 2 "abc"`},
		{"-1", ErrSyntax, "signs are not allowed"},
		{"+1", ErrSyntax, "signs are not allowed"},
		{"1,-1", ErrSyntax, "signs are not allowed"},
		{"1, 2 3", ErrSyntax, "whitespace"},
		{"1 0-20", ErrSyntax, "whitespace"},
		{"0-100;200-300", ErrSyntax, "invalid character ';'"},
		{"0-100 200-300", ErrSyntax, "whitespace"},
	}
	for _, tt := range cases {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			rs, err := ParseRangeSet(tt.in)
			checkErr(t, "ParseRangeSet", tt, err)
			if !rs.IsEmpty() {
				t.Errorf("ParseRangeSet(%q) returned %v with the error, want empty set", tt.in, rs)
			}
		})
	}
	// Every single-range error is also an error for a set.
	for _, tt := range rangeErrCases {
		if tt.in == "1,2" || tt.detail == "empty range" {
			continue // valid set / different message for sets
		}
		t.Run("range/"+tt.in, func(t *testing.T) {
			t.Parallel()
			_, err := ParseRangeSet(tt.in)
			checkErr(t, "ParseRangeSet", tt, err)
		})
	}
}

func TestMustParseRangeSetPanics(t *testing.T) {
	t.Parallel()
	defer func() {
		r := recover()
		err, ok := r.(error)
		if !ok || !errors.Is(err, ErrReversed) {
			t.Errorf("recovered %v, want error wrapping ErrReversed", r)
		}
	}()
	MustParseRangeSet("2-1")
}

// checkNormalised fails the test unless rs is in canonical form.
func checkNormalised(t *testing.T, rs RangeSet) {
	t.Helper()
	for i, r := range rs.r {
		if err := r.Validate(); err != nil {
			t.Fatalf("%v: range %d invalid: %v", rs.r, i, err)
		}
		if i > 0 && int(r.Start) <= int(rs.r[i-1].End)+1 {
			t.Fatalf("%v: range %v overlaps or touches %v", rs.r, r, rs.r[i-1])
		}
	}
}

// bitset is a brute-force model of a RangeSet.
type bitset [Count]bool

func toBits(rs RangeSet) *bitset {
	var b bitset
	for _, r := range rs.r {
		for s := int(r.Start); s <= int(r.End); s++ {
			b[s] = true
		}
	}
	return &b
}

func fromBits(b *bitset) RangeSet {
	var slots []uint16
	for s, in := range b {
		if in {
			slots = append(slots, uint16(s))
		}
	}
	return FromSlots(slots)
}

// randomSet returns a random set; the ranges are clustered in a narrow
// window half the time so that sets overlap, touch and nest often.
func randomSet(rng *rand.Rand) RangeSet {
	hi := Count
	if rng.IntN(2) == 0 {
		hi = 64
	}
	var rs []Range
	for range rng.IntN(6) {
		a, b := uint16(rng.IntN(hi)), uint16(rng.IntN(hi))
		rs = append(rs, Range{min(a, b), max(a, b)})
	}
	set, err := NewRangeSet(rs...)
	if err != nil {
		panic(err)
	}
	return set
}

func TestSetAlgebraMatchesModel(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(5, 6))
	for range 500 {
		a, b := randomSet(rng), randomSet(rng)
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
			{"Union", a.Union(b), &union},
			{"Intersect", a.Intersect(b), &inter},
			{"Subtract", a.Subtract(b), &sub},
		} {
			checkNormalised(t, c.got)
			if want := fromBits(c.want); !c.got.Equal(want) {
				t.Fatalf("%v.%s(%v) = %v, want %v", a, c.name, b, c.got, want)
			}
		}
		if got := a.Overlaps(b); got != overlaps {
			t.Fatalf("%v.Overlaps(%v) = %v, want %v", a, b, got, overlaps)
		}
		n := 0
		for s := range Count {
			if a.Contains(uint16(s)) != ab[s] {
				t.Fatalf("%v.Contains(%d) = %v", a, s, !ab[s])
			}
			if ab[s] {
				n++
			}
		}
		if a.Len() != n {
			t.Fatalf("%v.Len() = %d, want %d", a, a.Len(), n)
		}
		if a.IsEmpty() != (n == 0) {
			t.Fatalf("%v.IsEmpty() = %v with %d slots", a, a.IsEmpty(), n)
		}
		all := slices.Collect(a.All())
		if len(all) != n || !slices.IsSorted(all) || !FromSlots(all).Equal(a) {
			t.Fatalf("%v.All() = %v", a, all)
		}
		if !a.IsEmpty() {
			again, err := ParseRangeSet(a.String())
			if err != nil || !again.Equal(a) {
				t.Fatalf("ParseRangeSet(%q) = %v, %v", a.String(), again, err)
			}
		}
	}
}

func TestSetAlgebra(t *testing.T) {
	t.Parallel()
	tests := []struct {
		a, b                       string
		union, intersect, subtract string
		overlaps                   bool
	}{
		{"0-100", "50-60", "0-100", "50-60", "0-49,61-100", true},
		{"0-100", "101-200", "0-200", "", "0-100", false},
		{"0-100", "200-300", "0-100,200-300", "", "0-100", false},
		{"0-10,20-30", "5-25", "0-30", "5-10,20-25", "0-4,26-30", true},
		{"5-25", "0-10,20-30", "0-30", "5-10,20-25", "11-19", true},
		{"0-16383", "42", "0-16383", "42", "0-41,43-16383", true},
		{"0,16383", "0-16383", "0-16383", "0,16383", "", true},
		{"1-3,7-9", "3-7", "1-9", "3,7", "1-2,8-9", true},
		{"0-10", "0-10", "0-10", "0-10", "", true},
	}
	parse := func(s string) RangeSet {
		if s == "" {
			return RangeSet{}
		}
		return MustParseRangeSet(s)
	}
	for _, tt := range tests {
		t.Run(tt.a+"_"+tt.b, func(t *testing.T) {
			t.Parallel()
			a, b := parse(tt.a), parse(tt.b)
			if got := a.Union(b).String(); got != tt.union {
				t.Errorf("Union = %q, want %q", got, tt.union)
			}
			if got := a.Intersect(b).String(); got != tt.intersect {
				t.Errorf("Intersect = %q, want %q", got, tt.intersect)
			}
			if got := a.Subtract(b).String(); got != tt.subtract {
				t.Errorf("Subtract = %q, want %q", got, tt.subtract)
			}
			if got := a.Overlaps(b); got != tt.overlaps {
				t.Errorf("Overlaps = %v, want %v", got, tt.overlaps)
			}
			if a.String() != tt.a || b.String() != tt.b {
				t.Errorf("operands changed to %v and %v", a, b)
			}
		})
	}
}

func TestEmptySet(t *testing.T) {
	t.Parallel()
	var e RangeSet
	full := Full()
	if !e.IsEmpty() || e.Len() != 0 || e.String() != "" || len(e.Ranges()) != 0 || e.Contains(0) {
		t.Errorf("zero RangeSet is not empty: %#v", e)
	}
	if !e.Union(full).Equal(full) || !full.Union(e).Equal(full) {
		t.Error("empty ∪ full != full")
	}
	if !e.Intersect(full).IsEmpty() || !full.Subtract(full).IsEmpty() || e.Overlaps(full) {
		t.Error("algebra with the empty set is wrong")
	}
	if got := e.Split(4); len(got) != 0 {
		t.Errorf("empty.Split(4) = %v, want no pieces", got)
	}
	if !FromSlots(nil).Equal(e) {
		t.Error("FromSlots(nil) is not empty")
	}
	if s, err := NewRangeSet(); err != nil || !s.Equal(e) {
		t.Errorf("NewRangeSet() = %v, %v", s, err)
	}
}

func TestFull(t *testing.T) {
	t.Parallel()
	f := Full()
	if f.Len() != Count || f.String() != "0-16383" || !f.Contains(0) || !f.Contains(16383) || f.Contains(16384) {
		t.Errorf("Full() = %v (len %d)", f, f.Len())
	}
}

func TestRangesReturnsCopy(t *testing.T) {
	t.Parallel()
	s := MustParseRangeSet("0-10,20-30")
	rs := s.Ranges()
	rs[0].End = 25
	if s.String() != "0-10,20-30" {
		t.Errorf("modifying Ranges() changed the set to %v", s)
	}
}

func TestFromSlots(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   []uint16
		want string
	}{
		{[]uint16{5}, "5"},
		{[]uint16{3, 1, 2, 2, 9, 16383, 8}, "1-3,8-9,16383"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			t.Parallel()
			in := slices.Clone(tt.in)
			if got := FromSlots(in).String(); got != tt.want {
				t.Errorf("FromSlots(%v) = %q, want %q", tt.in, got, tt.want)
			}
			if !slices.Equal(in, tt.in) {
				t.Errorf("FromSlots reordered its argument to %v", in)
			}
		})
	}
	t.Run("panics", func(t *testing.T) {
		t.Parallel()
		defer func() {
			if recover() == nil {
				t.Error("FromSlots([16384]) did not panic")
			}
		}()
		FromSlots([]uint16{1, 16384})
	})
}

func TestNewRangeSet(t *testing.T) {
	t.Parallel()
	got, err := NewRangeSet(Range{50, 60}, Range{0, 100}, Range{101, 101}, Range{200, 200})
	if err != nil || got.String() != "0-101,200" {
		t.Errorf("NewRangeSet = %v, %v; want 0-101,200", got, err)
	}
	if _, err := NewRangeSet(Range{0, 1}, Range{3, 2}); !errors.Is(err, ErrReversed) {
		t.Errorf("NewRangeSet with reversed range: %v", err)
	}
	if _, err := NewRangeSet(Range{0, 16384}); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("NewRangeSet with out-of-range slot: %v", err)
	}
}

func TestAllStopsEarly(t *testing.T) {
	t.Parallel()
	var got []uint16
	for s := range MustParseRangeSet("1-3,10-20").All() {
		got = append(got, s)
		if len(got) == 5 {
			break
		}
	}
	if want := []uint16{1, 2, 3, 10, 11}; !slices.Equal(got, want) {
		t.Errorf("All() = %v, want %v", got, want)
	}
}

// checkSplit checks the documented properties of s.Split(n).
func checkSplit(t *testing.T, s RangeSet, n int, pieces []RangeSet) {
	t.Helper()
	wantCount := min(max(n, 1), s.Len())
	if len(pieces) != wantCount {
		t.Fatalf("%v.Split(%d) gave %d pieces, want %d", s, n, len(pieces), wantCount)
	}
	union := RangeSet{}
	minLen, maxLen := math.MaxInt, 0
	total := 0
	for i, p := range pieces {
		checkNormalised(t, p)
		if p.IsEmpty() {
			t.Fatalf("%v.Split(%d): piece %d is empty", s, n, i)
		}
		if i > 0 {
			prev := pieces[i-1].r
			if prev[len(prev)-1].End >= p.r[0].Start {
				t.Fatalf("%v.Split(%d): piece %d (%v) does not follow piece %d (%v)", s, n, i, p, i-1, pieces[i-1])
			}
		}
		minLen, maxLen = min(minLen, p.Len()), max(maxLen, p.Len())
		total += p.Len()
		union = union.Union(p)
	}
	if len(pieces) > 0 && maxLen-minLen > 1 {
		t.Fatalf("%v.Split(%d): piece sizes range from %d to %d", s, n, minLen, maxLen)
	}
	if total != s.Len() || !union.Equal(s) {
		t.Fatalf("%v.Split(%d) pieces cover %v (%d slots), want the input", s, n, union, total)
	}
}

func TestSplit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		n    int
		want []string
	}{
		{"0-9", 0, []string{"0-9"}},
		{"0-9", -3, []string{"0-9"}},
		{"0-9", 1, []string{"0-9"}},
		{"0-9", 2, []string{"0-4", "5-9"}},
		{"0-9", 3, []string{"0-2", "3-6", "7-9"}},
		{"0-9", 10, []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}},
		{"5,7", 5, []string{"5", "7"}},
		{"0-2,10-12", 2, []string{"0-2", "10-12"}},
		{"0-2,10-12", 3, []string{"0-1", "2,10", "11-12"}},
		{"0-1,5,9-10", 2, []string{"0-1,5", "9-10"}}, // 5 slots: round(2.5)=3 first
		{"0-16383", 3, []string{"0-5460", "5461-10922", "10923-16383"}},
	}
	for _, tt := range tests {
		t.Run(tt.in+"/"+strconv.Itoa(tt.n), func(t *testing.T) {
			t.Parallel()
			s := MustParseRangeSet(tt.in)
			pieces := s.Split(tt.n)
			var got []string
			for _, p := range pieces {
				got = append(got, p.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("%v.Split(%d) = %q, want %q", s, tt.n, got, tt.want)
			}
			checkSplit(t, s, tt.n, pieces)
		})
	}
}

func TestSplitProperties(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(7, 8))
	for range 300 {
		s := randomSet(rng)
		for _, n := range []int{-1, 0, 1, 2, 3, 5, 16, rng.IntN(100) + 1, s.Len(), s.Len() + 1} {
			checkSplit(t, s, n, s.Split(n))
		}
	}
}

func TestEven(t *testing.T) {
	t.Parallel()
	tests := []struct {
		n    int
		want []string
	}{
		{-5, []string{"0-16383"}},
		{0, []string{"0-16383"}},
		{1, []string{"0-16383"}},
		{2, []string{"0-8191", "8192-16383"}},
		{3, []string{"0-5460", "5461-10922", "10923-16383"}}, // as redis-cli --cluster create
		{4, []string{"0-4095", "4096-8191", "8192-12287", "12288-16383"}},
		{6, []string{"0-2730", "2731-5460", "5461-8191", "8192-10922", "10923-13652", "13653-16383"}},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.n), func(t *testing.T) {
			t.Parallel()
			var got []string
			for _, p := range Even(tt.n) {
				got = append(got, p.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Even(%d) = %q, want %q", tt.n, got, tt.want)
			}
		})
	}
}

// redisCLIEven reproduces the slot assignment of redis-cli --cluster create
// (clusterManagerCommandCreate), float32 arithmetic included.
func redisCLIEven(n int) []Range {
	perNode := float32(Count) / float32(n)
	first := 0
	var cursor float32
	var out []Range
	for i := range n {
		last := int(math.Round(float64(cursor + perNode - 1)))
		if last > Count || i == n-1 {
			last = Count - 1
		}
		last = max(last, first)
		out = append(out, Range{uint16(first), uint16(last)})
		first = last + 1
		cursor += perNode
	}
	return out
}

func TestEvenMatchesRedisCLI(t *testing.T) {
	t.Parallel()
	for n := 1; n <= 77; n++ {
		var got []Range
		for _, p := range Even(n) {
			if len(p.r) != 1 {
				t.Fatalf("Even(%d) piece %v is not a single range", n, p)
			}
			got = append(got, p.r[0])
		}
		if want := redisCLIEven(n); !slices.Equal(got, want) {
			t.Errorf("Even(%d) = %v, redis-cli assigns %v", n, got, want)
		}
	}
}

func TestEvenProperties(t *testing.T) {
	t.Parallel()
	for _, n := range []int{5, 7, 78, 100, 1000, 2688, 5000, 16383, 16384, 16385, 100000} {
		pieces := Even(n)
		checkSplit(t, Full(), n, pieces)
		for i, p := range pieces {
			if len(p.r) != 1 {
				t.Fatalf("Even(%d) piece %d = %v is not a single range", n, i, p)
			}
		}
	}
}

func TestStripe(t *testing.T) {
	tests := []struct {
		set      string
		n, chunk int
		want     []string
	}{
		{"0-9", 2, 2, []string{"0-1,4-5,8-9", "2-3,6-7"}},
		{"0-9", 3, 4, []string{"0-3", "4-7", "8-9"}},
		{"0-9", 5, 4, []string{"0-3", "4-7", "8-9"}}, // never more pieces than chunks
		{"0-2,5-9", 2, 2, []string{"0-1,6-7", "2,5,8-9"}},
		{"0-9", 1, 3, []string{"0-9"}},
		{"0-4", 0, 0, []string{"0-4"}},
		{"7", 4, 16, []string{"7"}},
	}
	for _, tc := range tests {
		t.Run(tc.set+"/"+strconv.Itoa(tc.n)+"/"+strconv.Itoa(tc.chunk), func(t *testing.T) {
			s := MustParseRangeSet(tc.set)
			var got []string
			union := RangeSet{}
			for _, p := range s.Stripe(tc.n, tc.chunk) {
				got = append(got, p.String())
				if union.Overlaps(p) {
					t.Errorf("piece %s overlaps another", p)
				}
				union = union.Union(p)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("Stripe = %q, want %q", got, tc.want)
			}
			if !union.Equal(s) {
				t.Errorf("pieces cover %s, want %s", union, s)
			}
		})
	}
	if got := (RangeSet{}).Stripe(3, 2); got != nil {
		t.Errorf("Stripe of the empty set = %v", got)
	}
}
