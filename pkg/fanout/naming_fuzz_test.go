package fanout

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

var namingErrLine = regexp.MustCompile(`^line ([0-9]+): `)

// FuzzParseNaming parses arbitrary naming files. Checked line by line
// against ParseNamingLine: each bad line gives exactly one error, and it
// starts with "line N: " for that line; each good line gives its instance
// in file order, unless it repeats an earlier address and tag, which is an
// error naming the earlier line. Every instance is well formed, and the
// list written back out with Instance.String parses to the same list.
func FuzzParseNaming(f *testing.F) {
	for _, s := range []string{
		"10.0.0.1:9000\n10.0.0.2:9000 0/2\n10.0.0.3:9000 1/2 3\n",
		"# comment\n\n  a:1 0/1 # trailing\r\nb:2\t1/3\t2\n",
		"a:1 0/2\na:1 0/2\na:1 1/2\n",
		"a:1 2/2\nb:1 x\nc:1 0/1 0\nd:1 0/1 1 extra\ne:1 01/2\nf:1 0/+1\n",
		"a:1 0/1 -1\nb:1 -0/1\nc#d 0/1\n\xff 0/1\n",
		"no-newline-at-end 0/1 99999999999999999999",
		"\r\n\r\n\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, errs := ParseNaming(bytes.NewReader(data))

		// The reference: bufio.ScanLines' idea of a line, then
		// ParseNamingLine on each.
		lines := strings.Split(string(data), "\n")
		if len(data) == 0 || data[len(data)-1] == '\n' {
			lines = lines[:len(lines)-1]
		}
		var want []Instance
		wantErrLines := map[int]string{} // line -> what the error must say
		seen := map[instanceKey]int{}
		for i, line := range lines {
			n := i + 1
			in, ok, err := ParseNamingLine(strings.TrimSuffix(line, "\r"))
			switch {
			case err != nil:
				wantErrLines[n] = err.Error()
			case !ok:
			default:
				if prev, dup := seen[keyOf(in)]; dup {
					wantErrLines[n] = fmt.Sprintf("duplicate of line %d", prev)
					continue
				}
				seen[keyOf(in)] = n
				want = append(want, in)
			}
		}

		if len(errs) != len(wantErrLines) {
			t.Fatalf("ParseNaming(%q): %d errors %q, want %d (lines %v)", data, len(errs), errs, len(wantErrLines), wantErrLines)
		}
		prevLine := 0
		for _, err := range errs {
			m := namingErrLine.FindStringSubmatch(err.Error())
			if m == nil {
				t.Fatalf("ParseNaming(%q): error %q does not start with its line number", data, err)
			}
			n, _ := strconv.Atoi(m[1])
			if n <= prevLine {
				t.Fatalf("ParseNaming(%q): errors out of line order: %q", data, errs)
			}
			prevLine = n
			what, ok := wantErrLines[n]
			if !ok || !strings.Contains(err.Error(), what) {
				t.Fatalf("ParseNaming(%q): error %q, want one for line %d saying %q", data, err, n, what)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("ParseNaming(%q) = %v, want %v", data, got, want)
		}
		var out strings.Builder
		for i, in := range got {
			if in != want[i] {
				t.Fatalf("ParseNaming(%q)[%d] = %+v, want %+v", data, i, in, want[i])
			}
			if in.Addr == "" || strings.ContainsFunc(in.Addr, unicode.IsSpace) || strings.Contains(in.Addr, "#") || in.Weight < 1 {
				t.Fatalf("ParseNaming(%q)[%d] = %+v is malformed", data, i, in)
			}
			if _, _, err := in.Partition(); err != nil {
				t.Fatalf("ParseNaming(%q)[%d] = %+v: %v", data, i, in, err)
			}
			out.WriteString(in.String() + "\n")
		}
		again, errs := ParseNaming(strings.NewReader(out.String()))
		if len(errs) != 0 || len(again) != len(got) {
			t.Fatalf("re-parsing %q: %v, %v; want %v", out.String(), again, errs, got)
		}
		for i := range again {
			if again[i] != got[i] {
				t.Fatalf("re-parsing %q: [%d] = %+v, want %+v", out.String(), i, again[i], got[i])
			}
		}
	})
}
