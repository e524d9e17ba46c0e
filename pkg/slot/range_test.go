package slot

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

func TestParseRange(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in     string
		want   Range
		format string
	}{
		{"0", Range{0, 0}, "0"},
		{"42", Range{42, 42}, "42"},
		{"42-42", Range{42, 42}, "42"},
		{"0-5460", Range{0, 5460}, "0-5460"},
		{"0-16383", Range{0, 16383}, "0-16383"},
		{"16383", Range{16383, 16383}, "16383"},
		{" 1-2\t", Range{1, 2}, "1-2"},
		{"007-0010", Range{7, 10}, "7-10"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParseRange(tt.in)
			if err != nil {
				t.Fatalf("ParseRange(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("ParseRange(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			if s := got.String(); s != tt.format {
				t.Errorf("String() = %q, want %q", s, tt.format)
			}
			again, err := ParseRange(got.String())
			if err != nil || again != got {
				t.Errorf("ParseRange(%q) = %+v, %v; want %+v", got.String(), again, err, got)
			}
			if err := got.Validate(); err != nil {
				t.Errorf("Validate() = %v", err)
			}
		})
	}
}

type errCase struct {
	in     string
	target error
	detail string // must appear in the message too
}

var rangeErrCases = []errCase{
	{"", ErrSyntax, "empty range"},
	{"   ", ErrSyntax, "empty range"},
	{"300-200", ErrReversed, "start 300 is after end 200"},
	{"1-0", ErrReversed, "start 1 is after end 0"},
	{"0-16384", ErrOutOfRange, "slot 16384 out of range 0-16383"},
	{"16384", ErrOutOfRange, "slot 16384 out of range 0-16383"},
	{"65536", ErrOutOfRange, "slot 65536 out of range"},
	{"99999999999999999999999", ErrOutOfRange, "slot 99999999999999999999999 out of range"},
	{"20000-10", ErrOutOfRange, "slot 20000 out of range"},
	{"abc", ErrSyntax, "invalid character 'a'"},
	{"12a", ErrSyntax, "invalid character 'a'"},
	{"-1", ErrSyntax, "signs are not allowed"},
	{"+1", ErrSyntax, "signs are not allowed"},
	{"1-+2", ErrSyntax, "signs are not allowed"},
	{"1--2", ErrSyntax, "signs are not allowed"},
	{"-", ErrSyntax, "missing start slot"},
	{"1-", ErrSyntax, "missing end slot"},
	{"1-2-3", ErrSyntax, "invalid character '-'"},
	{"1 2", ErrSyntax, "whitespace"},
	{"1 -2", ErrSyntax, "whitespace"},
	{"1- 2", ErrSyntax, "whitespace"},
	{"1\t0", ErrSyntax, "whitespace"},
	{"0x10", ErrSyntax, "invalid character 'x'"},
	{"1.5", ErrSyntax, "invalid character '.'"},
	{"１", ErrSyntax, "invalid character '１'"}, // fullwidth digit one
	{"\xff", ErrSyntax, "invalid character"},
	{"1,2", ErrSyntax, "invalid character ','"},
}

func checkErr(t *testing.T, fn string, tt errCase, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s(%q) succeeded, want error wrapping %v", fn, tt.in, tt.target)
	}
	if !errors.Is(err, tt.target) {
		t.Errorf("%s(%q) = %v, want error wrapping %v", fn, tt.in, err, tt.target)
	}
	for _, other := range []error{ErrSyntax, ErrOutOfRange, ErrReversed, ErrOverlap, ErrShortKey} {
		if other != tt.target && errors.Is(err, other) {
			t.Errorf("%s(%q) = %v, also wraps %v", fn, tt.in, err, other)
		}
	}
	msg := err.Error()
	if q := strconv.Quote(tt.in); !strings.Contains(msg, q) {
		t.Errorf("%s(%q) error %q does not quote the input as %s", fn, tt.in, msg, q)
	}
	if !strings.Contains(msg, tt.detail) {
		t.Errorf("%s(%q) error %q does not say %q", fn, tt.in, msg, tt.detail)
	}
}

func TestParseRangeErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range rangeErrCases {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			r, err := ParseRange(tt.in)
			checkErr(t, "ParseRange", tt, err)
			if r != (Range{}) {
				t.Errorf("ParseRange(%q) returned %+v with the error, want zero Range", tt.in, r)
			}
		})
	}
}

func TestRangeMethods(t *testing.T) {
	t.Parallel()
	tests := []struct {
		r       Range
		len     int
		in, out []uint16
	}{
		{Range{0, 0}, 1, []uint16{0}, []uint16{1, 16383}},
		{Range{10, 20}, 11, []uint16{10, 15, 20}, []uint16{0, 9, 21}},
		{Range{0, 16383}, 16384, []uint16{0, 8000, 16383}, []uint16{16384, 65535}},
		{Range{5, 4}, 0, nil, []uint16{4, 5}},
	}
	for _, tt := range tests {
		t.Run(tt.r.String(), func(t *testing.T) {
			t.Parallel()
			if got := tt.r.Len(); got != tt.len {
				t.Errorf("Len() = %d, want %d", got, tt.len)
			}
			for _, s := range tt.in {
				if !tt.r.Contains(s) {
					t.Errorf("Contains(%d) = false, want true", s)
				}
			}
			for _, s := range tt.out {
				if tt.r.Contains(s) {
					t.Errorf("Contains(%d) = true, want false", s)
				}
			}
		})
	}
}

func TestRangeValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		r      Range
		target error
		detail string
	}{
		{Range{0, 16383}, nil, ""},
		{Range{7, 7}, nil, ""},
		{Range{300, 200}, ErrReversed, `"300-200": start 300 is after end 200`},
		{Range{0, 16384}, ErrOutOfRange, `"0-16384": slot 16384 out of range 0-16383`},
		{Range{16384, 16384}, ErrOutOfRange, `"16384": slot 16384 out of range`},
		{Range{20000, 5}, ErrOutOfRange, `"20000-5": slot 20000 out of range`},
	}
	for _, tt := range tests {
		t.Run(tt.r.String(), func(t *testing.T) {
			t.Parallel()
			err := tt.r.Validate()
			if tt.target == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tt.target) {
				t.Fatalf("Validate() = %v, want error wrapping %v", err, tt.target)
			}
			if !strings.Contains(err.Error(), tt.detail) {
				t.Errorf("Validate() = %q, want it to contain %q", err, tt.detail)
			}
		})
	}
}
