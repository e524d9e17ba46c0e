package route

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/pkg/topology"
)

// Kind is the class of a storage node's answer: what a caller that retries
// does about it. See Classify.
type Kind uint8

const (
	// OK: no error.
	OK Kind = iota
	// Fatal: an answer about the request itself (NotFound,
	// InvalidArgument, PermissionDenied, ...) or a failure no retry mends.
	// Relay it.
	Fatal
	// Moved: SLOT_MOVED. The answering node's topology (Class.Version)
	// gives the slot to Class.OwnerID at Class.OwnerAddress. Refresh to at
	// least that version, reading etcd (Router.FollowMoved), and
	// retry; back off first when the refresh did not change the owner (the
	// new owner has not received the new topology yet).
	Moved
	// Frozen: the slot's writes are paused for a migration's hand-off.
	// Wait Class.RetryAfter (a backoff when the node gave none) and retry.
	Frozen
	// NodeUnavailable: the node did not answer or cannot serve yet (gRPC
	// Unavailable: down, unreachable, a slot not served yet; Canceled: a
	// connection closed under the call; DeadlineExceeded while the
	// caller's own context is alive: a per-attempt timeout). Back off,
	// refresh the topology in the background (the node may have been
	// replaced) and retry.
	NodeUnavailable
	// Busy: the node refused for load (ResourceExhausted, e.g. its cap on
	// import streams) or aborted the call (Aborted). Retried by callers
	// that opt in (the downloader's ingest, Retry with RetryBusy).
	Busy
	// NoTopology: the node has not been given a topology yet
	// (FailedPrecondition NO_TOPOLOGY): a node that has just started takes
	// its first topology from its own etcd watch, a moment after the
	// router may have. Retried within the caller's deadline, as Frozen.
	NoTopology
	// StaleTopology: the request named a topology version the node does
	// not hold (FailedPrecondition STALE_TOPOLOGY). Retried by callers that
	// opt in, after re-planning (Retry with RetryStale).
	StaleTopology

	numKinds = iota
)

var kindNames = [numKinds]string{"ok", "fatal", "moved", "frozen", "unavailable", "busy", "no_topology", "stale_topology"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// Class is what Classify makes of an error.
type Class struct {
	Kind Kind
	// Slot of a Moved or Frozen answer.
	Slot uint16
	// OwnerID, OwnerAddress and Version: a Moved answer's owner of the
	// slot and the version of the topology the answering node holds (0
	// when it did not say).
	OwnerID, OwnerAddress string
	Version               uint64
	// RetryAfter: a Frozen or Busy answer's RetryInfo (0 when it gave
	// none).
	RetryAfter time.Duration
}

// Retryable reports whether the router retries the answer within the
// caller's deadline: Moved, Frozen, NodeUnavailable and NoTopology.
func (c Class) Retryable() bool {
	switch c.Kind {
	case Moved, Frozen, NodeUnavailable, NoTopology:
		return true
	}
	return false
}

// Classify sorts an error from a storage node (a gRPC status error, the
// domain error rpcerr.FromStatus makes of one, or an rpcerr sentinel
// returned in process) into the class that says how to retry it. nil is
// OK; an error that carries no status and matches no rpcerr sentinel
// (including the caller's own context.Canceled or DeadlineExceeded) is
// Fatal.
//
// Canceled and DeadlineExceeded statuses are NodeUnavailable: a caller must
// check its own context first (when it has ended, the call is over
// whatever the class).
func Classify(err error) Class {
	if err == nil {
		return Class{Kind: OK}
	}
	derr := rpcerr.FromStatus(err)
	var sm *rpcerr.SlotMovedError
	var sf *rpcerr.SlotFrozenError
	switch {
	case errors.As(derr, &sm):
		return Class{Kind: Moved, Slot: sm.Slot, OwnerID: sm.OwnerID, OwnerAddress: sm.OwnerAddress, Version: sm.Version}
	case errors.As(derr, &sf):
		return Class{Kind: Frozen, Slot: sf.Slot, RetryAfter: sf.RetryAfter}
	case errors.Is(derr, rpcerr.ErrSlotMoved):
		return Class{Kind: Moved}
	case errors.Is(derr, rpcerr.ErrSlotFrozen):
		return Class{Kind: Frozen}
	case errors.Is(derr, rpcerr.ErrNoTopology):
		return Class{Kind: NoTopology}
	case errors.Is(derr, rpcerr.ErrStaleTopology):
		return Class{Kind: StaleTopology}
	}
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.Unavailable, codes.Canceled, codes.DeadlineExceeded:
			return Class{Kind: NodeUnavailable}
		case codes.ResourceExhausted, codes.Aborted:
			// A server that says when to come back (RetryInfo) means
			// the refusal is temporary; a ResourceExhausted without it
			// may be a limit the request itself hits (a message too big).
			return Class{Kind: Busy, RetryAfter: retryDelay(st)}
		}
		return Class{Kind: Fatal}
	}
	if errors.Is(derr, rpcerr.ErrUnavailable) {
		return Class{Kind: NodeUnavailable}
	}
	return Class{Kind: Fatal}
}

// retryDelay is the RetryInfo delay of st, 0 without one.
func retryDelay(st *status.Status) time.Duration {
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration()
		}
	}
	return 0
}

// ErrNoBudget is returned by Backoffer.Wait when the next delay would end
// after the deadline: retrying is pointless, the caller gives up with the
// last answer it had.
var ErrNoBudget = errors.New("route: no time left before the deadline for another retry")

// budgetMargin is the time a retry needs before the deadline to be worth
// making.
const budgetMargin = 5 * time.Millisecond

// Backoffer paces the retries of one call, in the manner of TiKV
// client-go's Backoffer: one per call, created from the call's context,
// whose deadline is the budget (no fixed count of retries), with an
// exponential delay of its own per kind of answer, jittered by ±20% so that
// many callers do not retry together. A Backoffer is not safe for
// concurrent use: each call has its own.
type Backoffer struct {
	min, max time.Duration
	deadline time.Time // zero: no deadline
	next     [numKinds]time.Duration
	waits    [numKinds]int
}

// NewBackoffer returns a Backoffer whose delays grow from minDelay to
// maxDelay (DefaultMinBackoff and DefaultMaxBackoff when not positive) and
// whose budget is ctx's deadline (none when ctx has none: the caller then
// bounds the retries itself).
func NewBackoffer(ctx context.Context, minDelay, maxDelay time.Duration) *Backoffer {
	if minDelay <= 0 {
		minDelay = DefaultMinBackoff
	}
	if maxDelay < minDelay {
		maxDelay = max(DefaultMaxBackoff, minDelay)
	}
	b := &Backoffer{min: minDelay, max: maxDelay}
	if dl, ok := ctx.Deadline(); ok {
		b.deadline = dl
	}
	return b
}

// NewBackoffer returns a Backoffer with the router's MinBackoff and
// MaxBackoff and ctx's deadline as budget.
func (r *Router) NewBackoffer(ctx context.Context) *Backoffer {
	return NewBackoffer(ctx, r.opts.MinBackoff, r.opts.MaxBackoff)
}

// Next returns the delay to wait before retrying an answer of class c and
// counts it, without sleeping (for callers that schedule retries
// themselves): a Frozen or Busy answer's RetryAfter when it gave one, otherwise the
// next step of c.Kind's exponential backoff; jittered.
func (b *Backoffer) Next(c Class) time.Duration {
	k := c.Kind
	if int(k) >= numKinds {
		k = Fatal
	}
	b.waits[k]++
	if (k == Frozen || k == Busy) && c.RetryAfter > 0 {
		return jitter(c.RetryAfter)
	}
	d := b.next[k]
	if d == 0 {
		d = b.min
	}
	b.next[k] = min(d*2, b.max)
	return jitter(d)
}

// Fits reports whether a retry made after a delay of d still starts before
// the deadline (with a few milliseconds to spare). Always true without a
// deadline.
func (b *Backoffer) Fits(d time.Duration) bool {
	return b.deadline.IsZero() || time.Until(b.deadline) >= d+budgetMargin
}

// Wait sleeps before the retry of an answer of class c (see Next). It
// returns nil when it is time to retry, ErrNoBudget at once when the delay
// would pass the deadline, and ctx's cause when ctx ends first.
func (b *Backoffer) Wait(ctx context.Context, c Class) error {
	d := b.Next(c)
	if !b.Fits(d) {
		return ErrNoBudget
	}
	return sleep(ctx, d)
}

// Waits is the number of delays handed out for answers of kind k.
func (b *Backoffer) Waits(k Kind) int {
	if int(k) >= numKinds {
		return 0
	}
	return b.waits[k]
}

// Total is the number of delays handed out, all kinds together.
func (b *Backoffer) Total() int {
	n := 0
	for _, w := range b.waits {
		n += w
	}
	return n
}

// Reset starts every kind's backoff from the minimum again and clears the
// counts, keeping the deadline: for callers that made progress (the
// downloader's ingest after an acknowledgement).
func (b *Backoffer) Reset() {
	b.next = [numKinds]time.Duration{}
	b.waits = [numKinds]int{}
}

// Deadline is the budget: the deadline of the context the Backoffer was
// made from.
func (b *Backoffer) Deadline() (time.Time, bool) { return b.deadline, !b.deadline.IsZero() }

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}

// jitter spreads delays by up to ±20% so retries of many callers do not
// arrive together.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	return d - d/5 + time.Duration(rand.Int64N(int64(d)*2/5+1))
}

// FollowMoved acts on SLOT_MOVED answers (classes of kind Moved; others
// are ignored) received while routing by t: it refreshes the topology to
// at least the newest version they name and t's version + 1, reading etcd
// (single-flight, as Refresh; the owners the answers name are not asked:
// etcd is the only source of the topology). An answer from a node whose
// topology is older than t is left out: that node has not heard of t yet
// (typically a migration's destination, told after the source), and no
// refresh can help; the caller backs off and asks it again. It returns the
// topology in use afterwards (t when none is loaded): when it routes the
// slot as t did, the caller should back off before retrying (Do does when
// the owner did not change, the fan-out calls when the version did not).
// A refresh error is not returned: the caller retries or gives up by its
// own deadline.
func (r *Router) FollowMoved(ctx context.Context, t *topology.Topology, moved ...Class) *topology.Topology {
	var (
		minVersion uint64
		refresh    bool
	)
	for _, c := range moved {
		if c.Kind != Moved || (t != nil && c.Version != 0 && c.Version < t.Version()) {
			continue
		}
		refresh = true
		minVersion = max(minVersion, c.Version)
	}
	if !refresh {
		if cur := r.topo.Load(); cur != nil {
			return cur
		}
		return t
	}
	if t != nil {
		minVersion = max(minVersion, t.Version()+1)
	}
	nt, _ := r.refresh(ctx, max(minVersion, 1))
	if nt == nil {
		return t
	}
	return nt
}

// RetryOption adds to what Retry retries.
type RetryOption struct{ apply func(*retryPolicy) }

type retryPolicy struct {
	busy    bool
	moved   bool
	stale   bool
	onStale func(ctx context.Context, c Class, err error) error
	onRetry func(attempt int, err error, delay time.Duration)
}

// RetryBusy makes Retry retry Busy answers too (ResourceExhausted, e.g. a
// destination's cap on import streams; Aborted).
func RetryBusy() RetryOption { return RetryOption{func(p *retryPolicy) { p.busy = true }} }

// RetryMoved makes Retry retry Moved answers too, with backoff (the node
// addressed by fn is expected to learn a topology that lets it serve the
// call; fn may route again by the router's newest topology).
func RetryMoved() RetryOption { return RetryOption{func(p *retryPolicy) { p.moved = true }} }

// RetryStale makes Retry retry StaleTopology and NoTopology answers. fn,
// when not nil, runs before each such retry with the answer (to refresh
// the topology and re-plan, say); an error from it ends Retry with that
// error.
func RetryStale(fn func(ctx context.Context, c Class, err error) error) RetryOption {
	return RetryOption{func(p *retryPolicy) { p.stale, p.onStale = true, fn }}
}

// OnRetry sets a function called before each wait (to log it): the
// attempt that failed (1 for the first), its error and the delay.
func OnRetry(fn func(attempt int, err error, delay time.Duration)) RetryOption {
	return RetryOption{func(p *retryPolicy) { p.onRetry = fn }}
}

// Retry calls fn until it succeeds, fails with an answer Retry does not
// retry, or the budget runs out: it retries Frozen and NodeUnavailable
// answers (plus those the options add) with b's backoff, within ctx (give
// it a deadline: it is the budget; without one Retry goes on until ctx is
// canceled). b nil means NewBackoffer(ctx, 0, 0). fn gets ctx (wrap it in
// fn for a per-attempt timeout: its DeadlineExceeded is retried as
// NodeUnavailable while ctx lives).
//
// It returns nil, fn's error when it is not retried, or, when the budget
// ran out, the last retryable answer (rather than a bare DeadlineExceeded
// when the deadline cut the last attempt short). Errors keep their code
// and details.
func Retry(ctx context.Context, b *Backoffer, fn func(ctx context.Context) error, opts ...RetryOption) error {
	var p retryPolicy
	for _, o := range opts {
		if o.apply != nil {
			o.apply(&p)
		}
	}
	if b == nil {
		b = NewBackoffer(ctx, 0, 0)
	}
	var last error
	for attempt := 1; ; attempt++ {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			if last != nil {
				return last
			}
			return err
		}
		c := Classify(err)
		switch c.Kind {
		case Frozen, NodeUnavailable:
		case Busy:
			if !p.busy {
				return err
			}
		case Moved:
			if !p.moved {
				return err
			}
		case StaleTopology, NoTopology:
			if !p.stale {
				return err
			}
			if p.onStale != nil {
				if serr := p.onStale(ctx, c, err); serr != nil {
					return serr
				}
			}
		default:
			return err
		}
		last = err
		d := b.Next(c)
		if !b.Fits(d) {
			return err
		}
		if p.onRetry != nil {
			p.onRetry(attempt, err, d)
		}
		if sleep(ctx, d) != nil {
			return err
		}
	}
}
