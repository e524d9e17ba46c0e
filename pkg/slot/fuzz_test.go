package slot

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

func FuzzParseRangeSet(f *testing.F) {
	for _, s := range []string{
		// good
		"0", "42", "16383", "0-16383", "0-100,200-300", " 0-100 , 200-300 ",
		"200-300,0-100", "0-100,101-200", "1,2,3,5", "007-010", "0-5460,5461-10922,10923-16383",
		// bad
		"", " ", ",", "1,,2", "1,", "abc", "-1", "+1", "1 2", "1-", "-", "1-2-3",
		"300-200", "0-16384", "99999999999999999999", "0-100,50-60", "5,5", "0x10", "１", "\xff",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		rs, err := ParseRangeSet(in)
		if err != nil {
			if !errors.Is(err, ErrSyntax) && !errors.Is(err, ErrOutOfRange) &&
				!errors.Is(err, ErrReversed) && !errors.Is(err, ErrOverlap) {
				t.Fatalf("ParseRangeSet(%q) = %v, wraps no sentinel", in, err)
			}
			if !strings.Contains(err.Error(), strconv.Quote(in)) {
				t.Fatalf("ParseRangeSet(%q) error %q does not quote the input", in, err)
			}
			if !rs.IsEmpty() {
				t.Fatalf("ParseRangeSet(%q) returned %v with an error", in, rs)
			}
			return
		}
		if rs.IsEmpty() {
			t.Fatalf("ParseRangeSet(%q) returned an empty set without error", in)
		}
		checkNormalised(t, rs)
		out := rs.String()
		again, err := ParseRangeSet(out)
		if err != nil {
			t.Fatalf("ParseRangeSet(%q) = %v; its String() %q does not re-parse: %v", in, rs.r, out, err)
		}
		if !again.Equal(rs) {
			t.Fatalf("ParseRangeSet(%q) = %v, but re-parsing %q gives %v", in, rs.r, out, again.r)
		}
		if again.String() != out {
			t.Fatalf("formatting is not idempotent: %q -> %q -> %q", in, out, again.String())
		}
		// Every slot named by the input is in the set.
		for item := range strings.SplitSeq(in, ",") {
			r, err := ParseRange(item)
			if err != nil {
				t.Fatalf("ParseRangeSet(%q) succeeded but item %q fails: %v", in, item, err)
			}
			if !rs.Contains(r.Start) || !rs.Contains(r.End) {
				t.Fatalf("ParseRangeSet(%q) = %v does not contain item %v", in, rs, r)
			}
		}
	})
}
