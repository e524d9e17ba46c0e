package slot

import "errors"

// Sentinel errors. Every error returned by this package wraps exactly one of
// them (test with [errors.Is]); the full message also quotes the offending
// input and explains what is wrong with it.
var (
	// ErrSyntax reports text that is not a slot, range or range set:
	// garbage, signs, embedded whitespace, empty items, empty input.
	ErrSyntax = errors.New("slot: invalid syntax")
	// ErrOutOfRange reports a slot number outside 0-16383.
	ErrOutOfRange = errors.New("slot: out of range")
	// ErrReversed reports a range whose start is after its end.
	ErrReversed = errors.New("slot: reversed range")
	// ErrOverlap reports two ranges of a range set that share slots.
	ErrOverlap = errors.New("slot: overlapping ranges")
	// ErrShortKey reports a storage key shorter than the 2-byte slot prefix.
	ErrShortKey = errors.New("slot: storage key too short")
)
