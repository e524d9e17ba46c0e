package slot

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Range is an inclusive interval of slots, Start through End. A valid range
// has Start <= End <= MaxSlot (see [Range.Validate]). Its text form is
// "START-END", or just "N" when Start == End.
type Range struct {
	Start, End uint16
}

// String formats r as "START-END", or "N" for a single-slot range.
func (r Range) String() string {
	if r.Start == r.End {
		return strconv.Itoa(int(r.Start))
	}
	return strconv.Itoa(int(r.Start)) + "-" + strconv.Itoa(int(r.End))
}

// Len returns the number of slots in r, or 0 if r is reversed.
func (r Range) Len() int {
	if r.Start > r.End {
		return 0
	}
	return int(r.End) - int(r.Start) + 1
}

// Contains reports whether slot lies within r.
func (r Range) Contains(slot uint16) bool {
	return r.Start <= slot && slot <= r.End
}

// Validate returns nil if r is a valid range of slots, or an error wrapping
// [ErrOutOfRange] or [ErrReversed].
func (r Range) Validate() error {
	if r.End > MaxSlot || r.Start > MaxSlot {
		bad := r.End
		if r.Start > MaxSlot {
			bad = r.Start
		}
		return fmt.Errorf("%w: %q: slot %d out of range 0-%d", ErrOutOfRange, r.String(), bad, MaxSlot)
	}
	if r.Start > r.End {
		return fmt.Errorf("%w: %q: start %d is after end %d", ErrReversed, r.String(), r.Start, r.End)
	}
	return nil
}

// parseError is the reason a single range item failed to parse; callers add
// the quoted input and turn it into an error.
type parseError struct {
	kind error // one of the sentinels
	msg  string
}

// ParseRange parses a slot range written "START-END" (inclusive, e.g.
// "0-5460") or a single slot "N" (meaning N-N). Surrounding whitespace is
// ignored; anything else that is not a decimal digit or the single '-'
// separator (signs, inner whitespace, extra dashes) is a syntax error.
// Leading zeros are accepted. Errors wrap [ErrSyntax], [ErrOutOfRange] or
// [ErrReversed] and quote s.
func ParseRange(s string) (Range, error) {
	r, perr := parseRange(strings.TrimSpace(s))
	if perr != nil {
		return Range{}, fmt.Errorf("%w: %q: %s", perr.kind, s, perr.msg)
	}
	return r, nil
}

func parseRange(s string) (Range, *parseError) {
	if s == "" {
		return Range{}, &parseError{ErrSyntax, "empty range"}
	}
	dash := strings.IndexByte(s, '-')
	if dash < 0 {
		n, perr := parseSlot(s, "slot")
		if perr != nil {
			return Range{}, perr
		}
		return Range{n, n}, nil
	}
	if dash == 0 {
		return Range{}, &parseError{ErrSyntax, "missing start slot before '-' (signs are not allowed)"}
	}
	if dash == len(s)-1 {
		return Range{}, &parseError{ErrSyntax, "missing end slot after '-'"}
	}
	start, perr := parseSlot(s[:dash], "start slot")
	if perr != nil {
		return Range{}, perr
	}
	end, perr := parseSlot(s[dash+1:], "end slot")
	if perr != nil {
		return Range{}, perr
	}
	if start > end {
		return Range{}, &parseError{ErrReversed, fmt.Sprintf("start %d is after end %d", start, end)}
	}
	return Range{start, end}, nil
}

// parseSlot parses a non-empty string of decimal digits into a slot number.
func parseSlot(s, what string) (uint16, *parseError) {
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			r, _ := utf8.DecodeRuneInString(s[i:])
			msg := fmt.Sprintf("invalid character %q in %s %q", r, what, s)
			switch {
			case c == '+' || (c == '-' && i == 0):
				msg += " (signs are not allowed)"
			case c == '-':
				msg += " (a range has a single '-')"
			case unicode.IsSpace(r):
				msg += " (whitespace is not allowed inside a slot number)"
			}
			return 0, &parseError{ErrSyntax, msg}
		}
		if n <= MaxSlot { // stop growing once out of range; avoids overflow
			n = n*10 + int(c-'0')
		}
	}
	if n > MaxSlot {
		return 0, &parseError{ErrOutOfRange, fmt.Sprintf("slot %s out of range 0-%d", s, MaxSlot)}
	}
	return uint16(n), nil
}
