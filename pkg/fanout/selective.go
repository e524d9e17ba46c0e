package fanout

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// SelectiveOptions configures a Selective channel.
type SelectiveOptions[Req any] struct {
	// Balancer picks the sub-channel of each attempt (nil: RoundRobin()).
	Balancer Balancer
	// Key gives the request's key to the Balancer, for ConsistentHash
	// (nil: 0).
	Key func(Req) uint64
	// MaxRetry is how many further attempts, each on a sub-channel not
	// tried yet by the call, follow a failed one (0: none).
	MaxRetry int
	// Retryable tells whether a failed attempt may be retried (nil: every
	// error is). An attempt is never retried once the call's own context
	// has ended, whatever Retryable says.
	Retryable func(error) bool
	// BackupDelay, when > 0, sends a backup request to another
	// sub-channel when no answer came within this delay of the call's
	// start (bRPC's backup_request_ms). At most one backup is sent per
	// call; the first successful answer wins and the other attempt is
	// cancelled.
	BackupDelay time.Duration
	// BackupMaxRatio caps backup requests as a fraction of calls (0 with
	// BackupDelay > 0: 0.1). A token bucket earns BackupMaxRatio tokens per
	// call and spends 1 per backup; it holds at most
	// max(10, BackupMaxRatio+1) tokens and starts with 1, so over n calls
	// at most BackupMaxRatio*n+1 backups are sent, and never more than 10
	// in a burst.
	BackupMaxRatio float64
	// Timeout, when > 0, bounds the whole call, retries and backups
	// included.
	Timeout time.Duration
}

// Selective sends each call to one of its sub-channels, picked by a
// Balancer, retries on another one after a failure, and can send a backup
// (hedged) request to another one when the first is slow: bRPC's
// SelectiveChannel with backup requests.
//
// Sub-channels are added and removed at any time, also while calls run:
// the list is copied on write and each pick reads the current one, so a
// removed sub-channel finishes its running attempts but gets no new one.
//
// Every attempt runs with a context derived from the call's, and Call
// waits for every attempt it started before returning (a cancelled
// attempt is waited for too), so sub-channels must honour their context.
// A panic in a sub-channel is recovered and becomes that attempt's error.
// Create Selective channels with NewSelective.
type Selective[Req, Resp any] struct {
	o   SelectiveOptions[Req]
	bal Balancer

	mu   sync.Mutex // serialises Add and Remove
	subs atomic.Pointer[subSet[Req, Resp]]

	bucket backupBucket

	calls, retries, backups, backupsWon, backupsDenied atomic.Uint64
}

type subChan[Req, Resp any] struct {
	name   string
	ch     Channel[Req, Resp]
	weight int
}

// subSet is one immutable list of sub-channels; infos[i] describes subs[i].
type subSet[Req, Resp any] struct {
	subs  []*subChan[Req, Resp]
	infos []SubInfo
}

// SelectiveStats counts what a Selective channel did since it was made.
// Calls counts Call, CallReport and Go (not Broadcast); Retries the
// attempts sent after a failed one; Backups the backup requests sent,
// BackupsWon those that answered first, BackupsDenied those the load cap
// held back.
type SelectiveStats struct {
	Calls, Retries, Backups, BackupsWon, BackupsDenied uint64
}

// Attempt is one request sent to one sub-channel during a call.
type Attempt struct {
	// Name is the sub-channel's name; empty for a backup request that the
	// load cap held back (then Backup is true and Err is ErrBackupLimited).
	Name string
	// Backup is true for a backup request.
	Backup bool
	// Won is true for the attempt whose answer the call returned.
	Won bool
	// Canceled is true when the call cancelled the attempt because it was
	// already decided (another attempt won, or failed for good).
	Canceled bool
	// Err is the attempt's error (nil for a success).
	Err error
	// Latency is how long the sub-channel took to return.
	Latency time.Duration
}

// SelectiveReport tells what happened during one call, in the order the
// attempts were sent.
type SelectiveReport struct {
	Attempts []Attempt
	Elapsed  time.Duration
}

// NewSelective returns an empty Selective channel.
func NewSelective[Req, Resp any](o SelectiveOptions[Req]) *Selective[Req, Resp] {
	s := &Selective[Req, Resp]{o: o, bal: o.Balancer}
	if s.bal == nil {
		s.bal = RoundRobin()
	}
	if s.o.MaxRetry < 0 {
		s.o.MaxRetry = 0
	}
	if s.o.BackupDelay > 0 {
		if s.o.BackupMaxRatio <= 0 {
			s.o.BackupMaxRatio = 0.1
		}
		s.bucket.init(s.o.BackupMaxRatio)
	}
	s.subs.Store(&subSet[Req, Resp]{})
	return s
}

// Add adds a sub-channel. A weight below 1 counts as 1. The name must be
// non-empty and unique within the channel, and ch non-nil.
func (s *Selective[Req, Resp]) Add(name string, ch Channel[Req, Resp], weight int) error {
	if name == "" {
		return errors.New("fanout: selective: empty sub-channel name")
	}
	if ch == nil {
		return fmt.Errorf("fanout: selective: nil sub-channel %q", name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.subs.Load()
	for _, sc := range old.subs {
		if sc.name == name {
			return fmt.Errorf("fanout: selective: duplicate sub-channel %q", name)
		}
	}
	weight = balWeight(weight)
	set := &subSet[Req, Resp]{
		subs:  append(slices.Clip(old.subs), &subChan[Req, Resp]{name: name, ch: ch, weight: weight}),
		infos: append(slices.Clip(old.infos), SubInfo{Name: name, Weight: weight}),
	}
	s.subs.Store(set)
	return nil
}

// Remove removes the sub-channel called name and reports whether it was
// there. Attempts running on it finish; no new attempt goes to it.
func (s *Selective[Req, Resp]) Remove(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.subs.Load()
	i := slices.IndexFunc(old.subs, func(sc *subChan[Req, Resp]) bool { return sc.name == name })
	if i < 0 {
		return false
	}
	set := &subSet[Req, Resp]{
		subs:  slices.Delete(slices.Clone(old.subs), i, i+1),
		infos: slices.Delete(slices.Clone(old.infos), i, i+1),
	}
	s.subs.Store(set)
	return true
}

// Names returns the sub-channels' names in the order they were added.
func (s *Selective[Req, Resp]) Names() []string {
	set := s.subs.Load()
	names := make([]string, len(set.subs))
	for i, sc := range set.subs {
		names[i] = sc.name
	}
	return names
}

// Len returns the number of sub-channels.
func (s *Selective[Req, Resp]) Len() int { return len(s.subs.Load().subs) }

// Capacity is the sum of the sub-channels' capacities (CapacityOf each
// with its weight); 0 when there is none.
func (s *Selective[Req, Resp]) Capacity() int {
	c := 0
	for _, sc := range s.subs.Load().subs {
		c += CapacityOf(sc.ch, sc.weight)
	}
	return c
}

// Stats returns the channel's counters.
func (s *Selective[Req, Resp]) Stats() SelectiveStats {
	return SelectiveStats{
		Calls:         s.calls.Load(),
		Retries:       s.retries.Load(),
		Backups:       s.backups.Load(),
		BackupsWon:    s.backupsWon.Load(),
		BackupsDenied: s.backupsDenied.Load(),
	}
}

// Go starts Call in a goroutine; see Future.
func (s *Selective[Req, Resp]) Go(ctx context.Context, req Req) *Future[Resp] {
	return Go[Req, Resp](ctx, s, req)
}

// Call sends req to one sub-channel and returns its answer, retrying on
// other sub-channels and sending a backup request as configured. An empty
// channel fails with an error wrapping ErrNoChannel. When every attempt
// failed, the error names each sub-channel tried with its error, and
// errors.Is and errors.As see every attempt's error (the last one first)
// and the call context's error when it ended.
func (s *Selective[Req, Resp]) Call(ctx context.Context, req Req) (Resp, error) {
	var c selectiveCall[Req, Resp]
	return c.run(s, ctx, req)
}

// CallReport is Call that also tells what each attempt did. The report is
// never nil, also when the call fails.
func (s *Selective[Req, Resp]) CallReport(ctx context.Context, req Req) (Resp, *SelectiveReport, error) {
	c := &selectiveCall[Req, Resp]{}
	resp, err := c.run(s, ctx, req)
	rep := &SelectiveReport{Attempts: c.attempts, Elapsed: c.elapsed}
	return resp, rep, err
}

// selectiveCall is the state of one call.
type selectiveCall[Req, Resp any] struct {
	s        *Selective[Req, Resp]
	ctx      context.Context
	req      Req
	key      uint64
	set      *subSet[Req, Resp] // the list of the last pick
	attempts []Attempt
	buf      [2]Attempt // backing array of attempts for the usual case
	exclude  func(int) bool
	retries  int // retries spent out of MaxRetry
	elapsed  time.Duration
}

func (c *selectiveCall[Req, Resp]) run(s *Selective[Req, Resp], ctx context.Context, req Req) (resp Resp, err error) {
	start := time.Now()
	defer func() { c.elapsed = time.Since(start) }()
	s.calls.Add(1)
	if s.o.BackupDelay > 0 {
		s.bucket.earn()
	}
	if s.Len() == 0 {
		return resp, fmt.Errorf("fanout: selective: %w", ErrNoChannel)
	}
	if err := ctx.Err(); err != nil {
		return resp, fmt.Errorf("fanout: selective: %w", err)
	}
	if s.o.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.o.Timeout)
		defer cancel()
	}
	c.s, c.ctx, c.req = s, ctx, req
	c.attempts = c.buf[:0]
	if s.o.Key != nil {
		c.key = s.o.Key(req)
	}
	c.exclude = c.tried
	if s.o.BackupDelay > 0 {
		return c.hedged()
	}
	return c.serial()
}

// tried reports whether sub i of the current list was tried by this call.
func (c *selectiveCall[Req, Resp]) tried(i int) bool {
	name := c.set.infos[i].Name
	for k := range c.attempts {
		if c.attempts[k].Name == name {
			return true
		}
	}
	return false
}

// pick returns a sub-channel of the current list not tried yet, nil when
// there is none.
func (c *selectiveCall[Req, Resp]) pick() *subChan[Req, Resp] {
	c.set = c.s.subs.Load()
	i := c.s.bal.Pick(c.key, c.set.infos, c.exclude)
	if i < 0 || i >= len(c.set.subs) || c.tried(i) {
		return nil // also guards against a Balancer that ignores exclude
	}
	return c.set.subs[i]
}

// retryable tells whether the call may go on after an attempt failed
// with err.
func (c *selectiveCall[Req, Resp]) retryable(err error) bool {
	if c.ctx.Err() != nil {
		return false
	}
	return c.s.o.Retryable == nil || c.s.o.Retryable(err)
}

// serial runs the attempts one after the other in the caller's goroutine:
// the path without backup requests.
func (c *selectiveCall[Req, Resp]) serial() (Resp, error) {
	var zero Resp
	sub := c.pick()
	for sub != nil {
		k := len(c.attempts)
		c.attempts = append(c.attempts, Attempt{Name: sub.name})
		t0 := time.Now()
		actx := withAttempt(c.ctx, AttemptInfo{Number: k + 1, Retry: k > 0})
		resp, err := callSub(actx, sub, c.req)
		lat := time.Since(t0)
		c.s.bal.Observe(sub.name, lat, err)
		a := &c.attempts[k]
		a.Err, a.Latency = err, lat
		if err == nil {
			a.Won = true
			return resp, nil
		}
		if c.retries >= c.s.o.MaxRetry || !c.retryable(err) {
			break
		}
		if sub = c.pick(); sub != nil {
			c.retries++
			c.s.retries.Add(1)
		}
	}
	return zero, c.failure("selective")
}

// callSub calls one sub-channel, turning a panic into an error.
func callSub[Req, Resp any](ctx context.Context, sub *subChan[Req, Resp], req Req) (resp Resp, err error) {
	defer func() {
		if r := recover(); r != nil {
			var zero Resp
			resp, err = zero, &selPanicError{name: sub.name, value: r}
		}
	}()
	return sub.ch.Call(ctx, req)
}

// selPanicError is the error of a sub-channel that panicked.
type selPanicError struct {
	name  string
	value any
}

func (e *selPanicError) Error() string {
	return fmt.Sprintf("fanout: sub-channel %q panicked: %v", e.name, e.value)
}

// Unwrap returns the panic value when it is an error.
func (e *selPanicError) Unwrap() error {
	err, _ := e.value.(error)
	return err
}

// failure builds the error of a call whose attempts all failed.
func (c *selectiveCall[Req, Resp]) failure(op string) error {
	e := &selError{op: op}
	for _, a := range c.attempts {
		// Attempts cancelled because the call was decided are left out:
		// their context.Canceled says nothing about the sub-channel.
		if a.Name != "" && a.Err != nil && !a.Canceled {
			e.names = append(e.names, a.Name)
			e.errs = append(e.errs, a.Err)
		}
	}
	if len(e.errs) == 0 {
		// Nothing was sent: the list emptied or the balancer found nothing.
		return fmt.Errorf("fanout: %s: %w", op, ErrNoChannel)
	}
	e.ctxErr = c.ctx.Err()
	return e
}

// selError is the error of a call whose sub-calls failed.
type selError struct {
	op     string
	total  int // sub-channels called, when it is worth saying (Broadcast)
	names  []string
	errs   []error // errs[i] is the error of names[i]
	ctxErr error   // the call context's error, if it ended
}

func (e *selError) Error() string {
	var b strings.Builder
	b.WriteString("fanout: ")
	b.WriteString(e.op)
	b.WriteString(": ")
	switch {
	case e.total > 0:
		fmt.Fprintf(&b, "%d of %d sub-channels failed: ", len(e.errs), e.total)
	case len(e.errs) > 1:
		fmt.Fprintf(&b, "%d attempts failed: ", len(e.errs))
	}
	for i, err := range e.errs {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(e.names[i])
		b.WriteString(": ")
		b.WriteString(err.Error())
	}
	return b.String()
}

// Unwrap returns the sub-calls' errors, the last one first, and the call
// context's error when it ended and no sub-call error is already it.
func (e *selError) Unwrap() []error {
	errs := make([]error, 0, len(e.errs)+1)
	for i := len(e.errs) - 1; i >= 0; i-- {
		errs = append(errs, e.errs[i])
	}
	if e.ctxErr != nil && !errors.Is(errors.Join(e.errs...), e.ctxErr) {
		errs = append(errs, e.ctxErr)
	}
	return errs
}

// Broadcast sends req to every sub-channel at once (used for writes to all
// replicas of a partition) and succeeds only when they all succeed; it
// then returns the first answer to arrive. It waits for every sub-channel
// and cancels none of them early; the error names each failed sub-channel
// with its error, and errors.Is and errors.As see each of those errors.
// Every sub-call is reported to the Balancer's Observe. Broadcast does not
// retry, send backups, or count in Stats; Timeout applies.
func (s *Selective[Req, Resp]) Broadcast(ctx context.Context, req Req) (Resp, error) {
	var zero Resp
	set := s.subs.Load()
	if len(set.subs) == 0 {
		return zero, fmt.Errorf("fanout: broadcast: %w", ErrNoChannel)
	}
	if s.o.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.o.Timeout)
		defer cancel()
	}
	type result struct {
		i    int
		resp Resp
		err  error
	}
	n := len(set.subs)
	results := make(chan result, n)
	send := func(i int) {
		sub := set.subs[i]
		t0 := time.Now()
		resp, err := callSub(ctx, sub, req)
		s.bal.Observe(sub.name, time.Since(t0), err)
		results <- result{i, resp, err}
	}
	for i := 1; i < n; i++ {
		go send(i)
	}
	send(0)
	errs := make([]error, n)
	var first Resp
	ok := false
	for range n {
		r := <-results
		errs[r.i] = r.err
		if r.err == nil && !ok {
			first, ok = r.resp, true
		}
	}
	e := &selError{op: "broadcast", total: n}
	for i, err := range errs {
		if err != nil {
			e.names = append(e.names, set.subs[i].name)
			e.errs = append(e.errs, err)
		}
	}
	if len(e.errs) > 0 {
		e.ctxErr = ctx.Err()
		return zero, e
	}
	return first, nil
}
