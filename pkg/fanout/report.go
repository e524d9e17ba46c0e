package fanout

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Report tells what happened to each sub-call of one call. CallReport
// returns it also when the call fails.
type Report struct {
	// Subs holds one entry per sub-channel, in sub-channel order.
	Subs []SubResult
	// Failed lists the indexes (into Subs, ascending) of the sub-calls that
	// failed. Non-empty together with a nil error means a partial result.
	Failed []int
	// Elapsed is the duration of the whole call.
	Elapsed time.Duration
}

// Partial reports whether some sub-calls failed (len(Failed) > 0). On a
// successful call it means the answer lacks their part.
func (r *Report) Partial() bool { return len(r.Failed) > 0 }

// SubResult is what happened to one sub-call.
type SubResult struct {
	Index int    // position of the sub-channel
	Name  string // name given to Add
	// Skipped: the mapper left this sub-channel out (ErrSkip); nothing was
	// sent to it.
	Skipped bool
	// Canceled: the sub-call was cut off because the call ended before it
	// answered (fail limit, success limit, fail-all, or the call's own
	// context or Timeout ending). Its answer, if any, was not used and it
	// does not count as failed. Err holds what it returned, if anything.
	Canceled bool
	// Err is the sub-call's error: what the sub-channel returned, a
	// recovered panic, or the merger's verdict (MergeFail, MergeFailAll:
	// then Err is ErrFailAll).
	Err error
	// Latency is how long the sub-channel took to answer.
	Latency time.Duration
}

// label names the sub-call in messages: its name, or #index without one.
func (s *SubResult) label() string {
	if s.Name != "" {
		return s.Name
	}
	return "#" + strconv.Itoa(s.Index)
}

// CallError is the error of a failed call. Its message names each failed
// sub-call:
//
//	fanout: 2 of 3 sub-calls failed: n1: <err>; n3: <err>
//	fanout: merger failed the whole call at n2
//	fanout: context deadline exceeded before 2 of 3 sub-calls answered: n2, n3
//
// errors.Is and errors.As see through it to Cause and to every sub-call's
// error (see Unwrap).
type CallError struct {
	// Failed holds the sub-calls the message names: those that failed and,
	// when the call's context ended (Cause is a context error), also those
	// it cut off (Canceled set).
	Failed []SubResult
	// Sent is the number of sub-calls sent (those not skipped).
	Sent int
	// Cause is why the call ended when it is not simply the sub-calls'
	// failures: ErrFailAll, or the context's error (context.Canceled,
	// context.DeadlineExceeded). Nil when the fail limit was reached.
	Cause error
}

// Error names each failed sub-call with its error.
func (e *CallError) Error() string {
	var b strings.Builder
	b.WriteString("fanout: ")
	nFailed, nCut := 0, 0
	for i := range e.Failed {
		if e.Failed[i].Canceled {
			nCut++
		} else {
			nFailed++
		}
	}
	// failures writes "n1: <err>; n3: <err>", leaving out skip (the one
	// already named).
	failures := func(skip int) {
		sep := ""
		for i := range e.Failed {
			s := &e.Failed[i]
			if s.Canceled || i == skip {
				continue
			}
			b.WriteString(sep)
			b.WriteString(s.label())
			b.WriteString(": ")
			if s.Err != nil {
				b.WriteString(s.Err.Error())
			} else {
				b.WriteString("failed")
			}
			sep = "; "
		}
	}
	switch {
	case errors.Is(e.Cause, ErrFailAll):
		b.WriteString("merger failed the whole call")
		at := -1
		for i := range e.Failed {
			if e.Failed[i].Err == ErrFailAll {
				at = i
				break
			}
		}
		if at >= 0 {
			b.WriteString(" at ")
			b.WriteString(e.Failed[at].label())
			nFailed--
		}
		if nFailed > 0 {
			b.WriteString(" (also failed: ")
			failures(at)
			b.WriteString(")")
		}
	case e.Cause != nil:
		b.WriteString(e.Cause.Error())
		if nCut > 0 {
			fmt.Fprintf(&b, " before %d of %d sub-calls answered: ", nCut, e.Sent)
			sep := ""
			for i := range e.Failed {
				if e.Failed[i].Canceled {
					b.WriteString(sep)
					b.WriteString(e.Failed[i].label())
					sep = ", "
				}
			}
		}
		if nFailed > 0 {
			fmt.Fprintf(&b, "; %d failed: ", nFailed)
			failures(-1)
		}
	default:
		fmt.Fprintf(&b, "%d of %d sub-calls failed", nFailed, e.Sent)
		if nFailed > 0 {
			b.WriteString(": ")
			failures(-1)
		}
	}
	return b.String()
}

// Unwrap returns Cause and every sub-call's error, so that
// errors.Is(err, ErrFailAll), errors.Is(err, context.DeadlineExceeded) and
// errors.As to a sub-channel's own error type all work.
func (e *CallError) Unwrap() []error {
	errs := make([]error, 0, len(e.Failed)+1)
	if e.Cause != nil {
		errs = append(errs, e.Cause)
	}
	for i := range e.Failed {
		if e.Failed[i].Err != nil {
			errs = append(errs, e.Failed[i].Err)
		}
	}
	return errs
}
