package fanout

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// MergeResult is a Merger's verdict on one sub-answer.
type MergeResult int

const (
	MergeOK      MergeResult = iota // the sub-answer was folded in
	MergeFail                       // this sub-call counts as failed (toward FailLimit)
	MergeFailAll                    // end the whole call now: it fails with ErrFailAll
)

// Mapper builds the request of sub-call i of n. Return ErrSkip to leave
// sub-channel i out; any other error rejects the whole call before anything
// is sent (Call returns it wrapped).
//
// The mapper runs on the caller's goroutine, once per sub-channel in order,
// before any sub-call starts.
type Mapper[Req any] func(i, n int, req Req) (Req, error)

// Merger folds sub-answer i into acc and returns the new accumulator. acc
// starts as the zero Resp. Mergers never run concurrently (one mutex per
// call), in order of arrival. With MergeFail or MergeFailAll the returned
// accumulator is ignored. A panicking merger counts as MergeFail for that
// sub-answer.
type Merger[Resp any] func(acc Resp, i int, sub Resp) (Resp, MergeResult)

// ParallelOptions configures a Parallel channel.
type ParallelOptions[Req, Resp any] struct {
	Mapper Mapper[Req]  // nil: every sub-call gets req
	Merger Merger[Resp] // nil: the answer is the first successful sub-answer (by arrival)
	// FailLimit ends the call as failed as soon as this many sub-calls have
	// failed, cancelling the rest. 0 means the number of sub-calls sent
	// (the call fails only if all fail); a larger value counts as that too.
	// Fewer failures than the limit is a success with a partial result:
	// Report.Failed lists them.
	FailLimit int
	// SuccessLimit (quorum) ends the call as soon as this many sub-calls
	// succeeded, cancelling the rest (they are reported as Canceled, not
	// failed). 0: wait for all. SuccessLimit only ends the call early; the
	// call fails only through FailLimit, so for a strict K-of-N quorum also
	// set FailLimit to N-K+1.
	SuccessLimit int
	// Timeout bounds the whole call (on top of ctx's deadline). Sub-channel
	// timeouts cannot extend it.
	Timeout time.Duration
}

// Parallel is bRPC's ParallelChannel: every call is sent to all its
// sub-channels at once (each request built by the Mapper), and the answers
// are folded by the Merger as they arrive. The call ends when every
// sub-call has answered, or earlier when FailLimit failures or SuccessLimit
// successes are reached, when the merger fails the whole call, or when the
// context or Timeout ends; sub-calls still running are then cancelled
// through their context.
//
// Call returns only once every sub-call has returned, so a sub-channel must
// honour its context's cancellation. A panicking sub-channel is recovered
// and counts as that sub-call's error.
//
// A Parallel is safe for concurrent use, Add included. Its capacity (see
// Capacitor) is the minimum of its sub-channels'.
type Parallel[Req, Resp any] struct {
	opts ParallelOptions[Req, Resp]
	mu   sync.Mutex // serializes Add
	subs atomic.Pointer[[]parallelSub[Req, Resp]]
}

type parallelSub[Req, Resp any] struct {
	name string
	ch   Channel[Req, Resp]
}

// NewParallel returns a Parallel channel without sub-channels.
func NewParallel[Req, Resp any](o ParallelOptions[Req, Resp]) *Parallel[Req, Resp] {
	return &Parallel[Req, Resp]{opts: o}
}

// Add appends a sub-channel. It is safe while calls run: a call uses the
// list as it was when the call started.
func (p *Parallel[Req, Resp]) Add(name string, ch Channel[Req, Resp]) {
	if ch == nil {
		panic("fanout: Parallel.Add(" + strconv.Quote(name) + "): nil channel")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.list()
	subs := make([]parallelSub[Req, Resp], len(old), len(old)+1)
	copy(subs, old)
	subs = append(subs, parallelSub[Req, Resp]{name: name, ch: ch})
	p.subs.Store(&subs)
}

func (p *Parallel[Req, Resp]) list() []parallelSub[Req, Resp] {
	if s := p.subs.Load(); s != nil {
		return *s
	}
	return nil
}

// Len returns the number of sub-channels.
func (p *Parallel[Req, Resp]) Len() int { return len(p.list()) }

// Capacity returns the minimum capacity of the sub-channels (CapacityOf
// with weight 1), 0 without sub-channels.
func (p *Parallel[Req, Resp]) Capacity() int {
	subs := p.list()
	if len(subs) == 0 {
		return 0
	}
	c := CapacityOf(subs[0].ch, 1)
	for _, s := range subs[1:] {
		c = min(c, CapacityOf(s.ch, 1))
	}
	return c
}

// Call sends req to every sub-channel and returns the merged answer. On
// failure the error is a *CallError (ErrNoChannel without sub-channels, an
// error wrapping ErrAllSkipped when the mapper skipped every sub-channel,
// or the mapper's error wrapped).
func (p *Parallel[Req, Resp]) Call(ctx context.Context, req Req) (Resp, error) {
	var rep Report
	return p.call(ctx, req, &rep)
}

// CallReport is Call that also returns what happened to each sub-call. The
// Report is non-nil also on error.
func (p *Parallel[Req, Resp]) CallReport(ctx context.Context, req Req) (Resp, *Report, error) {
	rep := new(Report)
	resp, err := p.call(ctx, req, rep)
	return resp, rep, err
}

// Go calls asynchronously: Go(ctx, p, req).
func (p *Parallel[Req, Resp]) Go(ctx context.Context, req Req) *Future[Resp] {
	return Go[Req, Resp](ctx, p, req)
}

// Errors of a single sub-call that are not the sub-channel's own.
var (
	errMergeFail = errors.New("fanout: merger rejected the sub-answer")
	errSubGoexit = errors.New("fanout: sub-channel called runtime.Goexit")
)

// subPanicError is a panic recovered from a sub-channel or a merger.
type subPanicError struct {
	what  string
	value any
}

func (e *subPanicError) Error() string {
	return fmt.Sprintf("fanout: %s panicked: %v", e.what, e.value)
}

// Unwrap returns the panic value when it is an error.
func (e *subPanicError) Unwrap() error {
	err, _ := e.value.(error)
	return err
}

// parallelEnd is why a call ended before every sub-call answered.
type parallelEnd uint8

const (
	parRunning parallelEnd = iota
	parFailLimit
	parSuccessLimit
	parFailAll
)

// parallelCall is the state of one call, shared by its sub-call goroutines.
type parallelCall[Req, Resp any] struct {
	merger  Merger[Resp]
	subs    []parallelSub[Req, Resp]
	req     Req
	reqs    []Req       // one per sub-channel with a mapper, else nil
	res     []SubResult // Report.Subs
	sent    int
	callCtx context.Context // the call's own context: ctx with Timeout
	subCtx  context.Context // callCtx, cancelled when the call ends early
	cancel  context.CancelFunc
	next    atomic.Int64 // next sub-channel index a worker claims
	wg      sync.WaitGroup

	mu           sync.Mutex // guards the fields below and res
	acc          Resp
	got          bool // acc holds an answer (nil merger)
	nOK, nFail   int
	failLimit    int
	successLimit int
	end          parallelEnd
	ctxCut       bool // a sub-call was cut off by callCtx ending
}

func (p *Parallel[Req, Resp]) call(ctx context.Context, req Req, rep *Report) (Resp, error) {
	var zero Resp
	start := time.Now()
	subs := p.list()
	n := len(subs)
	if n == 0 {
		rep.Elapsed = time.Since(start)
		return zero, ErrNoChannel
	}
	c := &parallelCall[Req, Resp]{merger: p.opts.Merger, subs: subs, req: req, res: make([]SubResult, n)}
	rep.Subs = c.res
	for i := range subs {
		c.res[i].Index, c.res[i].Name = i, subs[i].name
	}
	last := n - 1 // the last sub-call sent
	if m := p.opts.Mapper; m == nil {
		c.sent = n
	} else {
		c.reqs = make([]Req, n)
		for i := range subs {
			r, err := m(i, n, req)
			switch {
			case err == nil:
				c.reqs[i] = r
				c.sent++
				last = i
			case errors.Is(err, ErrSkip):
				c.res[i].Skipped = true
			default:
				rep.Elapsed = time.Since(start)
				return zero, fmt.Errorf("fanout: mapper rejected the call at %s: %w", c.res[i].label(), err)
			}
		}
		if c.sent == 0 {
			rep.Elapsed = time.Since(start)
			return zero, fmt.Errorf("%w: the mapper left out all %d sub-channels", ErrAllSkipped, n)
		}
	}
	c.failLimit = p.opts.FailLimit
	if c.failLimit <= 0 || c.failLimit > c.sent {
		c.failLimit = c.sent
	}
	if s := p.opts.SuccessLimit; s > 0 && s < c.sent {
		c.successLimit = s
	}

	c.callCtx = ctx
	if p.opts.Timeout > 0 {
		var cancel context.CancelFunc
		c.callCtx, cancel = context.WithTimeout(ctx, p.opts.Timeout)
		defer cancel()
	}
	switch {
	case c.callCtx.Err() != nil: // over before it started: send nothing
		for i := range c.res {
			if !c.res[i].Skipped {
				c.res[i].Canceled, c.res[i].Err = true, c.callCtx.Err()
			}
		}
		c.ctxCut = true
	case c.sent == 1: // nothing to run concurrently nor to cut off
		c.subCtx = c.callCtx
		c.run(last)
	default:
		c.subCtx, c.cancel = context.WithCancel(c.callCtx)
		c.wg.Add(c.sent)
		work := c.worker // one closure for all: go c.worker() allocates one each
		for range c.sent {
			go work()
		}
		c.wg.Wait()
		c.cancel()
	}
	return c.result(rep, start)
}

// worker claims the next sub-channel not skipped and calls it. As many
// workers start as sub-calls are sent, so each claims exactly one.
func (c *parallelCall[Req, Resp]) worker() {
	i, done := -1, false
	defer func() {
		if !done && i >= 0 { // runtime.Goexit in the sub-channel
			if c.finish(i, *new(Resp), errSubGoexit, 0) {
				c.cancel()
			}
		}
		c.wg.Done()
	}()
	for {
		i = int(c.next.Add(1)) - 1
		if i >= len(c.subs) {
			done = true
			return
		}
		if c.res[i].Skipped {
			continue
		}
		if c.run(i) {
			c.cancel()
		}
		done = true
		return
	}
}

// run calls sub-channel i and records its answer; it reports whether the
// call has ended now, so the rest must be cancelled.
func (c *parallelCall[Req, Resp]) run(i int) bool {
	req := c.req
	if c.reqs != nil {
		req = c.reqs[i]
	}
	t0 := time.Now()
	resp, err := recoverCall(c.subCtx, c.subs[i].ch, req)
	return c.finish(i, resp, err, time.Since(t0))
}

// recoverCall calls ch, turning a panic into an error.
func recoverCall[Req, Resp any](ctx context.Context, ch Channel[Req, Resp], req Req) (resp Resp, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &subPanicError{what: "sub-channel", value: v}
		}
	}()
	return ch.Call(ctx, req)
}

// finish records the answer of sub-call i and merges it; it reports whether
// the call has ended now (fail limit, success limit, fail-all).
func (c *parallelCall[Req, Resp]) finish(i int, resp Resp, err error, lat time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := &c.res[i]
	s.Latency, s.Err = lat, err
	if c.end != parRunning {
		s.Canceled = true
		return false
	}
	if c.callCtx.Err() != nil {
		s.Canceled = true
		c.ctxCut = true
		return false
	}
	if err != nil {
		return c.failed()
	}
	if c.merger == nil {
		if !c.got {
			c.acc, c.got = resp, true
		}
	} else {
		acc, r, perr := recoverMerge(c.merger, c.acc, i, resp)
		switch r {
		case MergeOK:
			c.acc = acc
		case MergeFailAll:
			s.Err = ErrFailAll
			c.end = parFailAll
			return true
		case MergeFail:
			s.Err = cmp.Or(perr, errMergeFail)
			return c.failed()
		default:
			s.Err = fmt.Errorf("fanout: merger returned unknown MergeResult %d", int(r))
			return c.failed()
		}
	}
	c.nOK++
	if c.successLimit > 0 && c.nOK >= c.successLimit {
		c.end = parSuccessLimit
		return true
	}
	return false
}

// failed counts a failed sub-call; c.mu is held.
func (c *parallelCall[Req, Resp]) failed() bool {
	c.nFail++
	if c.nFail >= c.failLimit {
		c.end = parFailLimit
		return true
	}
	return false
}

// recoverMerge calls m, turning a panic into MergeFail with an error.
func recoverMerge[Resp any](m Merger[Resp], acc Resp, i int, sub Resp) (out Resp, r MergeResult, err error) {
	defer func() {
		if v := recover(); v != nil {
			out, r, err = acc, MergeFail, &subPanicError{what: "merger", value: v}
		}
	}()
	out, r = m(acc, i, sub)
	return out, r, nil
}

// result decides the call once every sub-call has returned.
func (c *parallelCall[Req, Resp]) result(rep *Report, start time.Time) (Resp, error) {
	for i := range c.res {
		if s := &c.res[i]; s.Err != nil && !s.Canceled {
			rep.Failed = append(rep.Failed, i)
		}
	}
	rep.Elapsed = time.Since(start)
	var cause error
	switch c.end {
	case parFailAll:
		cause = ErrFailAll
	case parFailLimit:
	case parSuccessLimit:
		return c.acc, nil
	default:
		if !c.ctxCut {
			return c.acc, nil
		}
		cause = c.callCtx.Err()
	}
	e := &CallError{Sent: c.sent, Cause: cause}
	for i := range c.res {
		s := &c.res[i]
		if s.Err != nil && !s.Canceled || c.ctxCut && c.end == parRunning && s.Canceled {
			e.Failed = append(e.Failed, *s)
		}
	}
	var zero Resp
	return zero, e
}
