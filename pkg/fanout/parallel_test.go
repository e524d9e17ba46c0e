package fanout

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The tests use Req string and Resp []string; parPlace(n) merges sub-answer i
// at position i so results do not depend on arrival order.

type (
	preq  = string
	presp = []string
	pch   = Channel[preq, presp]
)

// parGuard bounds waits that should end at once; hitting it is a test failure
// (a hang), never an expected outcome.
const parGuard = 20 * time.Second

func parPlace(n int) Merger[presp] {
	return func(acc presp, i int, sub presp) (presp, MergeResult) {
		if acc == nil {
			acc = make(presp, n)
		}
		acc[i] = strings.Join(sub, ",")
		return acc, MergeOK
	}
}

// parProbe records what its sub-channels went through.
type parProbe struct {
	started chan string // one send per blocking sub-call that started
	calls   atomic.Int32
	active  atomic.Int32 // sub-calls inside a sub-channel right now
	mu      sync.Mutex
	seen    map[string]error // name -> ctx.Err() a blocking sub-call saw
}

func newParProbe() *parProbe {
	return &parProbe{started: make(chan string, 64), seen: map[string]error{}}
}

// enter counts a sub-call; the returned func marks its return.
func (p *parProbe) enter() func() {
	p.calls.Add(1)
	p.active.Add(1)
	return func() { p.active.Add(-1) }
}

// answer returns a sub-channel answering v (an echo of the request when v
// is empty).
func (p *parProbe) answer(v string) pch {
	return Func[preq, presp](func(ctx context.Context, req preq) (presp, error) {
		defer p.enter()()
		if v == "" {
			return presp{req}, nil
		}
		return presp{v}, nil
	})
}

// fail returns a sub-channel failing with err.
func (p *parProbe) fail(err error) pch {
	return Func[preq, presp](func(ctx context.Context, req preq) (presp, error) {
		defer p.enter()()
		return nil, err
	})
}

// after returns a sub-channel that waits until k blocking sub-calls have
// started, then acts as ch. It makes "the others are blocked by now" a
// fact rather than a timing guess.
func (p *parProbe) after(k int, ch pch) pch {
	return Func[preq, presp](func(ctx context.Context, req preq) (presp, error) {
		for range k {
			select {
			case <-p.started:
			case <-time.After(parGuard):
				return nil, errors.New("probe: blocking sub-calls never started")
			}
		}
		return ch.Call(ctx, req)
	})
}

// block returns a sub-channel that blocks until its context ends, records
// ctx.Err() under name and returns it.
func (p *parProbe) block(name string) pch {
	return Func[preq, presp](func(ctx context.Context, req preq) (presp, error) {
		defer p.enter()()
		p.started <- name
		<-ctx.Done()
		p.mu.Lock()
		p.seen[name] = ctx.Err()
		p.mu.Unlock()
		return nil, ctx.Err()
	})
}

// saw returns what the blocking sub-call name saw (nil: it did not end
// through its context).
func (p *parProbe) saw(name string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seen[name]
}

// settled fails t unless no sub-call is still inside a sub-channel: Call
// must return only after every sub-call did.
func (p *parProbe) settled(t *testing.T) {
	t.Helper()
	if n := p.active.Load(); n != 0 {
		t.Errorf("%d sub-calls still running after Call returned", n)
	}
}

type parSub struct {
	name string
	ch   func(p *parProbe) pch
}

func newPar(o ParallelOptions[preq, presp], p *parProbe, subs ...parSub) *Parallel[preq, presp] {
	par := NewParallel(o)
	for _, s := range subs {
		par.Add(s.name, s.ch(p))
	}
	return par
}

func parAns(name, v string) parSub { return parSub{name, func(p *parProbe) pch { return p.answer(v) }} }
func parBad(name string, err error) parSub {
	return parSub{name, func(p *parProbe) pch { return p.fail(err) }}
}
func parBlk(name string) parSub { return parSub{name, func(p *parProbe) pch { return p.block(name) }} }

// parAfter delays s until k blockers have started.
func parAfter(k int, s parSub) parSub {
	return parSub{s.name, func(p *parProbe) pch { return p.after(k, s.ch(p)) }}
}

func parFlags(r *Report) (skipped, canceled []int) {
	for _, s := range r.Subs {
		if s.Skipped {
			skipped = append(skipped, s.Index)
		}
		if s.Canceled {
			canceled = append(canceled, s.Index)
		}
	}
	return skipped, canceled
}

func TestParallelMapper(t *testing.T) {
	t.Parallel()
	errBadKey := errors.New("bad key")
	tests := []struct {
		name       string
		mapper     Mapper[preq]
		want       presp
		wantErr    error // errors.Is
		wantMsg    string
		wantCalls  int32
		wantSkip   []int
		wantMapped int // mapper calls
	}{
		{
			name:   "rewrite",
			mapper: func(i, n int, req preq) (preq, error) { return fmt.Sprintf("%s/%d-of-%d", req, i, n), nil },
			want:   presp{"k/0-of-3", "k/1-of-3", "k/2-of-3"}, wantCalls: 3, wantMapped: 3,
		},
		{
			name: "nil mapper sends req to all",
			want: presp{"k", "k", "k"}, wantCalls: 3,
		},
		{
			name: "skip",
			mapper: func(i, n int, req preq) (preq, error) {
				if i == 1 {
					return "", ErrSkip
				}
				return req, nil
			},
			want: presp{"k", "", "k"}, wantCalls: 2, wantSkip: []int{1}, wantMapped: 3,
		},
		{
			name: "skip wrapped",
			mapper: func(i, n int, req preq) (preq, error) {
				if i != 2 {
					return "", fmt.Errorf("no keys here: %w", ErrSkip)
				}
				return req, nil
			},
			want: presp{"", "", "k"}, wantCalls: 1, wantSkip: []int{0, 1}, wantMapped: 3,
		},
		{
			name: "reject before sending",
			mapper: func(i, n int, req preq) (preq, error) {
				if i == 1 {
					return "", errBadKey
				}
				return req, nil
			},
			wantErr: errBadKey, wantMsg: "fanout: mapper rejected the call at s1: bad key", wantCalls: 0, wantMapped: 2,
		},
		{
			name:    "skip all",
			mapper:  func(i, n int, req preq) (preq, error) { return "", ErrSkip },
			wantErr: ErrAllSkipped, wantMsg: "fanout: every sub-call was skipped: the mapper left out all 3 sub-channels",
			wantCalls: 0, wantSkip: []int{0, 1, 2}, wantMapped: 3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var mapped atomic.Int32
			o := ParallelOptions[preq, presp]{Merger: parPlace(3)}
			if tt.mapper != nil {
				o.Mapper = func(i, n int, req preq) (preq, error) {
					mapped.Add(1)
					return tt.mapper(i, n, req)
				}
			}
			p := newParProbe()
			par := newPar(o, p, parAns("s0", ""), parAns("s1", ""), parAns("s2", ""))
			got, rep, err := par.CallReport(t.Context(), "k")
			p.settled(t)
			if rep == nil {
				t.Fatal("nil report")
			}
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || err.Error() != tt.wantMsg {
					t.Fatalf("err = %v, want %q (wrapping %v)", err, tt.wantMsg, tt.wantErr)
				}
			} else if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
			if n := p.calls.Load(); n != tt.wantCalls {
				t.Errorf("sub-channels called %d times, want %d", n, tt.wantCalls)
			}
			if n := mapped.Load(); int(n) != tt.wantMapped {
				t.Errorf("mapper called %d times, want %d", n, tt.wantMapped)
			}
			if skipped, _ := parFlags(rep); !slices.Equal(skipped, tt.wantSkip) {
				t.Errorf("skipped %v, want %v", skipped, tt.wantSkip)
			}
		})
	}
}

func TestParallelNoChannel(t *testing.T) {
	t.Parallel()
	par := NewParallel(ParallelOptions[preq, presp]{})
	_, rep, err := par.CallReport(t.Context(), "k")
	if !errors.Is(err, ErrNoChannel) || rep == nil {
		t.Fatalf("err = %v, report %v; want ErrNoChannel and a report", err, rep)
	}
	if par.Len() != 0 || par.Capacity() != 0 {
		t.Errorf("Len %d Capacity %d, want 0 0", par.Len(), par.Capacity())
	}
}

func TestParallelMerger(t *testing.T) {
	t.Parallel()
	// failOn fails the sub-answers equal to "bad" with r.
	failOn := func(r MergeResult) Merger[presp] {
		return func(acc presp, i int, sub presp) (presp, MergeResult) {
			if sub[0] == "bad" {
				return acc, r
			}
			return parPlace(4)(acc, i, sub)
		}
	}
	tests := []struct {
		name         string
		merger       Merger[presp]
		subs         []parSub
		want         presp
		wantErr      error
		wantMsg      string
		wantFailed   []int
		wantCanceled []int
		blocked      []string // blocking sub-calls that must have seen ctx cancellation
	}{
		{
			name:   "merged",
			merger: parPlace(4),
			subs:   []parSub{parAns("a", "1"), parAns("b", "2"), parAns("c", "3"), parAns("d", "4")},
			want:   presp{"1", "2", "3", "4"},
		},
		{
			name:   "fail one: partial result",
			merger: failOn(MergeFail),
			subs:   []parSub{parAns("a", "1"), parAns("b", "bad"), parAns("c", "3"), parAns("d", "4")},
			want:   presp{"1", "", "3", "4"}, wantFailed: []int{1},
		},
		{
			name:       "fail all answers",
			merger:     failOn(MergeFail),
			subs:       []parSub{parAns("a", "bad"), parAns("b", "bad")},
			wantMsg:    "fanout: 2 of 2 sub-calls failed: a: fanout: merger rejected the sub-answer; b: fanout: merger rejected the sub-answer",
			wantFailed: []int{0, 1},
		},
		{
			name:   "fail-all ends the call and cancels the others",
			merger: failOn(MergeFailAll),
			subs:   []parSub{parBlk("a"), parAfter(2, parAns("b", "bad")), parBlk("c"), parAns("d", "4")},
			// d may or may not have been merged before b: it is either a
			// success or cut off, never failed.
			wantErr: ErrFailAll, wantMsg: "fanout: merger failed the whole call at b",
			wantFailed: []int{1}, wantCanceled: []int{0, 2}, blocked: []string{"a", "c"},
		},
		{
			name: "unknown verdict counts as failed",
			merger: func(acc presp, i int, sub presp) (presp, MergeResult) {
				return acc, MergeResult(42)
			},
			subs:       []parSub{parAns("a", "1")},
			wantMsg:    "fanout: 1 of 1 sub-calls failed: a: fanout: merger returned unknown MergeResult 42",
			wantFailed: []int{0},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := newParProbe()
			par := newPar(ParallelOptions[preq, presp]{Merger: tt.merger}, p, tt.subs...)
			got, rep, err := par.CallReport(t.Context(), "k")
			p.settled(t)
			if tt.wantMsg != "" {
				if err == nil || err.Error() != tt.wantMsg {
					t.Fatalf("err = %v, want %q", err, tt.wantMsg)
				}
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Errorf("err %v does not wrap %v", err, tt.wantErr)
				}
				if got != nil {
					t.Errorf("failed call answered %q", got)
				}
			} else if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
			if !slices.Equal(rep.Failed, tt.wantFailed) || rep.Partial() != (len(tt.wantFailed) > 0) {
				t.Errorf("Failed %v Partial %v, want %v", rep.Failed, rep.Partial(), tt.wantFailed)
			}
			if _, canceled := parFlags(rep); tt.wantCanceled != nil {
				for _, i := range tt.wantCanceled {
					if !slices.Contains(canceled, i) {
						t.Errorf("sub-call %d not reported Canceled (canceled: %v)", i, canceled)
					}
				}
			}
			for _, name := range tt.blocked {
				if e := p.saw(name); !errors.Is(e, context.Canceled) {
					t.Errorf("blocked sub-call %s saw %v, want context.Canceled", name, e)
				}
			}
		})
	}
}

func TestParallelFailLimit(t *testing.T) {
	t.Parallel()
	boom := func(s string) error { return errors.New("boom " + s) }
	tests := []struct {
		name         string
		failLimit    int
		subs         []parSub
		want         presp
		wantMsg      string
		wantFailed   []int
		wantCanceled []int
		blocked      []string
	}{
		{
			name:      "limit reached early cancels the rest",
			failLimit: 2,
			subs: []parSub{
				parBlk("b1"), parAfter(2, parBad("f1", boom("1"))), parBlk("b2"), parAfter(0, parBad("f2", boom("2"))),
			},
			// f2 does not wait: whichever failure comes second ends the
			// call, and the blockers only return when cancelled.
			wantMsg:    "fanout: 2 of 4 sub-calls failed: f1: boom 1; f2: boom 2",
			wantFailed: []int{1, 3}, wantCanceled: []int{0, 2}, blocked: []string{"b1", "b2"},
		},
		{
			name:      "fewer failures than the limit: partial result",
			failLimit: 2,
			subs:      []parSub{parAns("a", "1"), parBad("f", boom("f")), parAns("c", "3")},
			want:      presp{"1", "", "3"}, wantFailed: []int{1},
		},
		{
			name: "default limit: some fail, partial result",
			subs: []parSub{parBad("f0", boom("0")), parAns("a", "1"), parBad("f2", boom("2"))},
			want: presp{"", "1", ""}, wantFailed: []int{0, 2},
		},
		{
			name:       "default limit: all fail",
			subs:       []parSub{parBad("f0", boom("0")), parBad("f1", boom("1")), parBad("f2", boom("2"))},
			wantMsg:    "fanout: 3 of 3 sub-calls failed: f0: boom 0; f1: boom 1; f2: boom 2",
			wantFailed: []int{0, 1, 2},
		},
		{
			name:       "limit above the sub-calls sent counts as all",
			failLimit:  10,
			subs:       []parSub{parBad("f0", boom("0")), parBad("f1", boom("1"))},
			wantMsg:    "fanout: 2 of 2 sub-calls failed: f0: boom 0; f1: boom 1",
			wantFailed: []int{0, 1},
		},
		{
			name:       "single sub-call, limit 1",
			failLimit:  1,
			subs:       []parSub{parBad("only", boom("x"))},
			wantMsg:    "fanout: 1 of 1 sub-calls failed: only: boom x",
			wantFailed: []int{0},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := newParProbe()
			o := ParallelOptions[preq, presp]{Merger: parPlace(len(tt.subs)), FailLimit: tt.failLimit}
			par := newPar(o, p, tt.subs...)
			got, rep, err := par.CallReport(t.Context(), "k")
			p.settled(t)
			if tt.wantMsg != "" {
				var ce *CallError
				if !errors.As(err, &ce) || err.Error() != tt.wantMsg {
					t.Fatalf("err = %v, want CallError %q", err, tt.wantMsg)
				}
				if ce.Cause != nil || ce.Sent != len(tt.subs) {
					t.Errorf("Cause %v Sent %d, want nil %d", ce.Cause, ce.Sent, len(tt.subs))
				}
			} else if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
			if !slices.Equal(rep.Failed, tt.wantFailed) || rep.Partial() != (len(tt.wantFailed) > 0) {
				t.Errorf("Failed %v Partial %v, want %v", rep.Failed, rep.Partial(), tt.wantFailed)
			}
			if _, canceled := parFlags(rep); !slices.Equal(canceled, tt.wantCanceled) {
				t.Errorf("canceled %v, want %v", canceled, tt.wantCanceled)
			}
			for _, name := range tt.blocked {
				if e := p.saw(name); !errors.Is(e, context.Canceled) {
					t.Errorf("blocked sub-call %s saw %v, want context.Canceled", name, e)
				}
			}
		})
	}
}

func TestParallelSuccessLimit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		o            ParallelOptions[preq, presp]
		subs         []parSub
		want         presp
		wantFailed   []int
		wantCanceled []int
		wantMsg      string
	}{
		{
			name: "quorum of 2 cancels the rest",
			o:    ParallelOptions[preq, presp]{Merger: parPlace(4), SuccessLimit: 2},
			subs: []parSub{parBlk("b0"), parAfter(2, parAns("a", "1")), parBlk("b2"), parAns("c", "3")},
			want: presp{"", "1", "", "3"}, wantCanceled: []int{0, 2},
		},
		{
			name: "quorum despite a failure: partial",
			o:    ParallelOptions[preq, presp]{Merger: parPlace(4), SuccessLimit: 2},
			subs: []parSub{parBad("f", errors.New("down")), parAfter(1, parAns("a", "1")), parBlk("b2"), parAns("c", "3")},
			want: presp{"", "1", "", "3"}, wantFailed: []int{0}, wantCanceled: []int{2},
		},
		{
			name: "nil merger with quorum 1: first answer wins",
			o:    ParallelOptions[preq, presp]{SuccessLimit: 1},
			subs: []parSub{parBlk("b0"), parAfter(2, parAns("a", "first")), parBlk("b2")},
			want: presp{"first"}, wantCanceled: []int{0, 2},
		},
		{
			name:       "strict quorum: fail limit N-K+1",
			o:          ParallelOptions[preq, presp]{Merger: parPlace(3), SuccessLimit: 2, FailLimit: 2},
			subs:       []parSub{parBad("f0", errors.New("down")), parAfter(1, parBad("f1", errors.New("down"))), parBlk("b2")},
			wantMsg:    "fanout: 2 of 3 sub-calls failed: f0: down; f1: down",
			wantFailed: []int{0, 1}, wantCanceled: []int{2},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := newParProbe()
			par := newPar(tt.o, p, tt.subs...)
			got, rep, err := par.CallReport(t.Context(), "k")
			p.settled(t)
			if tt.wantMsg != "" {
				if err == nil || err.Error() != tt.wantMsg {
					t.Fatalf("err = %v, want %q", err, tt.wantMsg)
				}
			} else if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
			if !slices.Equal(rep.Failed, tt.wantFailed) {
				t.Errorf("Failed %v, want %v", rep.Failed, tt.wantFailed)
			}
			if _, canceled := parFlags(rep); !slices.Equal(canceled, tt.wantCanceled) {
				t.Errorf("canceled %v, want %v", canceled, tt.wantCanceled)
			}
			for _, i := range tt.wantCanceled {
				s := rep.Subs[i]
				if e := p.saw(s.Name); !errors.Is(e, context.Canceled) || !errors.Is(s.Err, context.Canceled) {
					t.Errorf("cut-off sub-call %s saw %v and returned %v, want context.Canceled", s.Name, e, s.Err)
				}
			}
		})
	}
}

// TestParallelDeadline: one deadline bounds the whole call; a slow
// sub-channel's own longer timeout cannot extend it.
func TestParallelDeadline(t *testing.T) {
	t.Parallel()
	// slow tries to give itself an hour, then blocks until its ctx ends.
	slow := parSub{"slow", func(p *parProbe) pch {
		inner := p.block("slow")
		return Func[preq, presp](func(ctx context.Context, req preq) (presp, error) {
			ctx, cancel := context.WithTimeout(ctx, time.Hour)
			defer cancel()
			return inner.Call(ctx, req)
		})
	}}
	tests := []struct {
		name    string
		timeout time.Duration                                            // ParallelOptions.Timeout
		ctx     func(t *testing.T) (context.Context, context.CancelFunc) // the caller's
		want    error
		subs    []parSub
		wantMsg string
	}{
		// The deadlines leave the sub-calls that answer at once ample time
		// to do so, so that only "slow" is cut off; nothing measures them.
		{
			name: "Timeout", timeout: 300 * time.Millisecond, want: context.DeadlineExceeded,
			subs:    []parSub{parAns("fast", "1"), slow},
			wantMsg: "fanout: context deadline exceeded before 1 of 2 sub-calls answered: slow",
		},
		{
			name: "caller deadline", want: context.DeadlineExceeded,
			ctx: func(t *testing.T) (context.Context, context.CancelFunc) {
				return context.WithTimeout(t.Context(), 300*time.Millisecond)
			},
			subs:    []parSub{parAns("fast", "1"), slow},
			wantMsg: "fanout: context deadline exceeded before 1 of 2 sub-calls answered: slow",
		},
		{
			name: "Timeout, single sub-call inline", timeout: 20 * time.Millisecond, want: context.DeadlineExceeded,
			subs:    []parSub{slow},
			wantMsg: "fanout: context deadline exceeded before 1 of 1 sub-calls answered: slow",
		},
		{
			name: "Timeout with a failure named too", timeout: 300 * time.Millisecond, want: context.DeadlineExceeded,
			subs:    []parSub{parBad("f", errors.New("down")), parAns("fast", "1"), slow},
			wantMsg: "fanout: context deadline exceeded before 1 of 3 sub-calls answered: slow; 1 failed: f: down",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := t.Context(), context.CancelFunc(func() {})
			if tt.ctx != nil {
				ctx, cancel = tt.ctx(t)
			}
			defer cancel()
			p := newParProbe()
			par := newPar(ParallelOptions[preq, presp]{Merger: parPlace(len(tt.subs)), Timeout: tt.timeout}, p, tt.subs...)
			_, rep, err := par.CallReport(ctx, "k")
			p.settled(t)
			if !errors.Is(err, tt.want) || err.Error() != tt.wantMsg {
				t.Fatalf("err = %v, want %q wrapping %v", err, tt.wantMsg, tt.want)
			}
			if e := p.saw("slow"); !errors.Is(e, context.DeadlineExceeded) {
				t.Errorf("slow sub-call saw %v, want its ctx ended by the call's deadline", e)
			}
			i := slices.IndexFunc(rep.Subs, func(s SubResult) bool { return s.Name == "slow" })
			if s := rep.Subs[i]; !s.Canceled || slices.Contains(rep.Failed, i) {
				t.Errorf("slow: Canceled %v, in Failed %v; want cut off, not failed", s.Canceled, rep.Failed)
			}
		})
	}
}

func TestParallelCallerCancel(t *testing.T) {
	t.Parallel()
	t.Run("while running", func(t *testing.T) {
		t.Parallel()
		p := newParProbe()
		par := newPar(ParallelOptions[preq, presp]{}, p, parBlk("b0"), parBlk("b1"), parAns("a", "1"))
		ctx, cancel := context.WithCancel(t.Context())
		go func() {
			<-p.started
			<-p.started
			cancel()
		}()
		_, rep, err := par.CallReport(ctx, "k")
		p.settled(t)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		// "a" answered at once but may be cut off too if its answer came
		// after the cancellation.
		if _, canceled := parFlags(rep); !slices.Contains(canceled, 0) || !slices.Contains(canceled, 1) || len(rep.Failed) != 0 {
			t.Errorf("canceled %v failed %v, want b0 and b1 cut off, none failed", canceled, rep.Failed)
		}
		for _, n := range []string{"b0", "b1"} {
			if e := p.saw(n); !errors.Is(e, context.Canceled) {
				t.Errorf("%s saw %v", n, e)
			}
		}
	})
	t.Run("before the call: nothing sent", func(t *testing.T) {
		t.Parallel()
		p := newParProbe()
		par := newPar(ParallelOptions[preq, presp]{}, p, parAns("a", "1"), parAns("b", "2"))
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, rep, err := par.CallReport(ctx, "k")
		want := "fanout: context canceled before 2 of 2 sub-calls answered: a, b"
		if !errors.Is(err, context.Canceled) || err.Error() != want {
			t.Fatalf("err = %v, want %q", err, want)
		}
		if n := p.calls.Load(); n != 0 {
			t.Errorf("%d sub-calls sent on a cancelled context", n)
		}
		if _, canceled := parFlags(rep); !slices.Equal(canceled, []int{0, 1}) {
			t.Errorf("canceled %v", canceled)
		}
	})
}

func TestParallelFuture(t *testing.T) {
	t.Parallel()
	t.Run("Cancel", func(t *testing.T) {
		t.Parallel()
		p := newParProbe()
		par := newPar(ParallelOptions[preq, presp]{}, p, parBlk("b0"), parBlk("b1"), parBlk("b2"))
		f := par.Go(t.Context(), "k")
		for range 3 {
			<-p.started
		}
		select {
		case <-f.Done():
			t.Fatal("answered before Cancel")
		default:
		}
		f.Cancel()
		f.Cancel() // idempotent
		_, err := f.Wait()
		p.settled(t)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		for _, n := range []string{"b0", "b1", "b2"} {
			if e := p.saw(n); !errors.Is(e, context.Canceled) {
				t.Errorf("%s saw %v", n, e)
			}
		}
	})
	t.Run("Wait", func(t *testing.T) {
		t.Parallel()
		p := newParProbe()
		par := newPar(ParallelOptions[preq, presp]{Merger: parPlace(2)}, p, parAns("a", "1"), parAns("b", "2"))
		got, err := par.Go(t.Context(), "k").Wait()
		if err != nil || !slices.Equal(got, presp{"1", "2"}) {
			t.Fatalf("got %q, %v", got, err)
		}
	})
	t.Run("WaitContext leaves the call running", func(t *testing.T) {
		t.Parallel()
		p := newParProbe()
		par := newPar(ParallelOptions[preq, presp]{}, p, parBlk("b0"), parBlk("b1"))
		f := par.Go(t.Context(), "k")
		<-p.started
		<-p.started
		wctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := f.WaitContext(wctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("WaitContext = %v", err)
		}
		if p.saw("b0") != nil || p.saw("b1") != nil {
			t.Fatal("WaitContext cancelled the call")
		}
		f.Cancel()
		if _, err := f.Wait(); !errors.Is(err, context.Canceled) {
			t.Fatalf("Wait = %v", err)
		}
		p.settled(t)
	})
}

func TestParallelReport(t *testing.T) {
	t.Parallel()
	work := func(v string) pch { // simulates a millisecond of work
		return Func[preq, presp](func(ctx context.Context, req preq) (presp, error) {
			time.Sleep(time.Millisecond)
			return presp{v}, nil
		})
	}
	errDown := errors.New("down")
	par := NewParallel(ParallelOptions[preq, presp]{
		Merger: parPlace(4),
		Mapper: func(i, n int, req preq) (preq, error) {
			if i == 2 {
				return "", ErrSkip
			}
			return req, nil
		},
	})
	par.Add("alpha", work("a"))
	par.Add("beta", Func[preq, presp](func(ctx context.Context, req preq) (presp, error) {
		time.Sleep(time.Millisecond)
		return nil, errDown
	}))
	par.Add("gamma", work("g"))
	par.Add("", work("d"))
	got, rep, err := par.CallReport(t.Context(), "k")
	if err != nil || !slices.Equal(got, presp{"a", "", "", "d"}) {
		t.Fatalf("got %q, %v", got, err)
	}
	if len(rep.Subs) != 4 || rep.Elapsed <= 0 || !rep.Partial() || !slices.Equal(rep.Failed, []int{1}) {
		t.Fatalf("report %+v", rep)
	}
	names := []string{"alpha", "beta", "gamma", ""}
	for i, s := range rep.Subs {
		if s.Index != i || s.Name != names[i] || s.Canceled {
			t.Errorf("sub %d: %+v", i, s)
		}
		if s.Skipped != (i == 2) {
			t.Errorf("sub %d: Skipped %v", i, s.Skipped)
		}
		if !s.Skipped && s.Latency <= 0 {
			t.Errorf("sub %d: Latency %v, want > 0", i, s.Latency)
		}
		if s.Skipped && s.Latency != 0 {
			t.Errorf("skipped sub %d: Latency %v", i, s.Latency)
		}
		if (s.Err != nil) != (i == 1) || i == 1 && !errors.Is(s.Err, errDown) {
			t.Errorf("sub %d: Err %v", i, s.Err)
		}
	}
}

// parCodeError is a sub-channel's own error type, found through CallError
// with errors.As.
type parCodeError struct{ code int }

func (e *parCodeError) Error() string { return fmt.Sprintf("code %d", e.code) }

func TestReportCallError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		e    *CallError
		want string
		is   []error
	}{
		{
			name: "fail limit",
			e: &CallError{Sent: 3, Failed: []SubResult{
				{Index: 0, Name: "n1", Err: errors.New("refused")},
				{Index: 2, Name: "n3", Err: &parCodeError{14}},
			}},
			want: "fanout: 2 of 3 sub-calls failed: n1: refused; n3: code 14",
		},
		{
			name: "unnamed sub-call",
			e:    &CallError{Sent: 2, Failed: []SubResult{{Index: 1, Err: errors.New("x")}}},
			want: "fanout: 1 of 2 sub-calls failed: #1: x",
		},
		{
			name: "fail-all",
			e:    &CallError{Sent: 3, Cause: ErrFailAll, Failed: []SubResult{{Index: 1, Name: "n2", Err: ErrFailAll}}},
			want: "fanout: merger failed the whole call at n2",
			is:   []error{ErrFailAll},
		},
		{
			name: "fail-all after other failures",
			e: &CallError{Sent: 3, Cause: ErrFailAll, Failed: []SubResult{
				{Index: 0, Name: "n1", Err: errors.New("refused")},
				{Index: 1, Name: "n2", Err: ErrFailAll},
			}},
			want: "fanout: merger failed the whole call at n2 (also failed: n1: refused)",
			is:   []error{ErrFailAll},
		},
		{
			name: "deadline",
			e: &CallError{Sent: 3, Cause: context.DeadlineExceeded, Failed: []SubResult{
				{Index: 1, Name: "n2", Canceled: true, Err: context.DeadlineExceeded},
				{Index: 2, Name: "n3", Canceled: true},
			}},
			want: "fanout: context deadline exceeded before 2 of 3 sub-calls answered: n2, n3",
			is:   []error{context.DeadlineExceeded},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var err error = tt.e
			if got := err.Error(); got != tt.want {
				t.Errorf("Error() = %q\nwant      %q", got, tt.want)
			}
			for _, target := range tt.is {
				if !errors.Is(err, target) {
					t.Errorf("not errors.Is %v", target)
				}
			}
		})
	}

	t.Run("errors.As to a sub-channel's error type", func(t *testing.T) {
		t.Parallel()
		par := NewParallel(ParallelOptions[preq, presp]{FailLimit: 1})
		par.Add("n1", Func[preq, presp](func(ctx context.Context, req preq) (presp, error) {
			return nil, fmt.Errorf("rpc: %w", &parCodeError{14})
		}))
		_, err := par.Call(t.Context(), "k")
		var ce *parCodeError
		if !errors.As(err, &ce) || ce.code != 14 {
			t.Fatalf("errors.As(%v) = %v", err, ce)
		}
		if want := "fanout: 1 of 1 sub-calls failed: n1: rpc: code 14"; err.Error() != want {
			t.Errorf("err = %q, want %q", err, want)
		}
	})
}

func TestParallelPanic(t *testing.T) {
	t.Parallel()
	errBoom := errors.New("boom error")
	panics := func(v any) parSub {
		return parSub{"p", func(*parProbe) pch {
			return Func[preq, presp](func(ctx context.Context, req preq) (presp, error) { panic(v) })
		}}
	}
	tests := []struct {
		name    string
		o       ParallelOptions[preq, presp]
		subs    []parSub
		want    presp
		wantMsg string
		is      error
	}{
		{
			name: "one of three panics: partial",
			o:    ParallelOptions[preq, presp]{Merger: parPlace(3)},
			subs: []parSub{parAns("a", "1"), panics("boom"), parAns("c", "3")},
			want: presp{"1", "", "3"},
		},
		{
			name:    "panic with an error value",
			o:       ParallelOptions[preq, presp]{FailLimit: 1},
			subs:    []parSub{panics(errBoom), parAns("a", "1")},
			wantMsg: "fanout: 1 of 2 sub-calls failed: p: fanout: sub-channel panicked: boom error",
			is:      errBoom,
		},
		{
			name:    "single sub-call (inline)",
			subs:    []parSub{panics("boom")},
			wantMsg: "fanout: 1 of 1 sub-calls failed: p: fanout: sub-channel panicked: boom",
		},
		{
			name: "merger panics: that answer fails",
			o: ParallelOptions[preq, presp]{Merger: func(acc presp, i int, sub presp) (presp, MergeResult) {
				if sub[0] == "2" {
					panic("merge boom")
				}
				return parPlace(2)(acc, i, sub)
			}},
			subs: []parSub{parAns("a", "1"), parAns("b", "2")},
			want: presp{"1", ""},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := newParProbe()
			par := newPar(tt.o, p, tt.subs...)
			got, rep, err := par.CallReport(t.Context(), "k")
			if tt.wantMsg != "" {
				if err == nil || err.Error() != tt.wantMsg {
					t.Fatalf("err = %v, want %q", err, tt.wantMsg)
				}
				if tt.is != nil && !errors.Is(err, tt.is) {
					t.Errorf("err does not wrap %v", tt.is)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
			if len(rep.Failed) != 1 || !strings.Contains(rep.Subs[rep.Failed[0]].Err.Error(), "panicked") {
				t.Errorf("Failed %v, want the panicking one with its panic", rep.Failed)
			}
		})
	}
}

func TestParallelGoexit(t *testing.T) {
	t.Parallel()
	par := NewParallel(ParallelOptions[preq, presp]{})
	par.Add("exits", Func[preq, presp](func(ctx context.Context, req preq) (presp, error) {
		runtime.Goexit()
		return nil, nil
	}))
	par.Add("ok", Func[preq, presp](func(ctx context.Context, req preq) (presp, error) { return presp{"ok"}, nil }))
	got, rep, err := par.CallReport(t.Context(), "k")
	if err != nil || !slices.Equal(got, presp{"ok"}) || !slices.Equal(rep.Failed, []int{0}) {
		t.Fatalf("got %q, %v, failed %v", got, err, rep.Failed)
	}
}

// TestParallelAddConcurrent adds sub-channels while calls run: each call
// sees one consistent list (run under -race).
func TestParallelAddConcurrent(t *testing.T) {
	t.Parallel()
	count := Merger[int](func(acc int, i int, sub int) (int, MergeResult) { return acc + sub, MergeOK })
	par := NewParallel(ParallelOptions[string, int]{Merger: count})
	one := Func[string, int](func(ctx context.Context, req string) (int, error) { return 1, nil })
	par.Add("s0", one)
	const adds, callers, calls = 50, 8, 40
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range adds {
			par.Add(fmt.Sprint("s", i+1), one)
		}
	})
	for range callers {
		wg.Go(func() {
			prev := 0
			for range calls {
				got, rep, err := par.CallReport(t.Context(), "k")
				if err != nil || got != len(rep.Subs) || len(rep.Subs) < prev {
					t.Errorf("got %d, %v with %d sub-channels (previous call %d)", got, err, len(rep.Subs), prev)
					return
				}
				for i, s := range rep.Subs {
					if s.Name != fmt.Sprint("s", i) {
						t.Errorf("sub %d named %q", i, s.Name)
					}
				}
				prev = len(rep.Subs)
			}
		})
	}
	wg.Wait()
	if par.Len() != adds+1 {
		t.Fatalf("Len = %d", par.Len())
	}
}

type parCapChan struct {
	pch
	c int
}

func (c parCapChan) Capacity() int { return c.c }

func TestParallelNested(t *testing.T) {
	t.Parallel()
	join := func(acc presp, i int, sub presp) (presp, MergeResult) { return append(acc, sub...), MergeOK }
	sorted := func(r presp) presp { r = slices.Clone(r); slices.Sort(r); return r }

	t.Run("answers", func(t *testing.T) {
		t.Parallel()
		p := newParProbe()
		inner1 := newPar(ParallelOptions[preq, presp]{Merger: join}, p, parAns("a", "1"), parAns("b", "2"))
		inner2 := newPar(ParallelOptions[preq, presp]{Merger: join}, p, parAns("c", "3"))
		outer := NewParallel(ParallelOptions[preq, presp]{Merger: join})
		outer.Add("i1", inner1)
		outer.Add("i2", inner2)
		got, err := outer.Call(t.Context(), "k")
		if err != nil || !slices.Equal(sorted(got), presp{"1", "2", "3"}) {
			t.Fatalf("got %q, %v", got, err)
		}
	})
	t.Run("inner failure and outer cancellation", func(t *testing.T) {
		t.Parallel()
		p := newParProbe()
		inner1 := newPar(ParallelOptions[preq, presp]{FailLimit: 1}, p,
			parAfter(2, parBad("x", &parCodeError{5})), parAns("y", "1"))
		inner2 := newPar(ParallelOptions[preq, presp]{}, p, parBlk("deep1"), parBlk("deep2"))
		outer := NewParallel(ParallelOptions[preq, presp]{FailLimit: 1})
		outer.Add("i1", inner1)
		outer.Add("i2", inner2)
		_, err := outer.Call(t.Context(), "k")
		p.settled(t)
		var ce *parCodeError
		var inner *CallError
		if !errors.As(err, &ce) || ce.code != 5 || !errors.As(err, &inner) {
			t.Fatalf("err = %v, want the inner sub-channel's error through both levels", err)
		}
		want := "fanout: 1 of 2 sub-calls failed: i1: fanout: 1 of 2 sub-calls failed: x: code 5"
		if err.Error() != want {
			t.Errorf("err = %q, want %q", err, want)
		}
		for _, n := range []string{"deep1", "deep2"} {
			if e := p.saw(n); !errors.Is(e, context.Canceled) {
				t.Errorf("%s in the other inner channel saw %v, want cancellation", n, e)
			}
		}
	})
	t.Run("capacity", func(t *testing.T) {
		t.Parallel()
		p := newParProbe()
		inner := NewParallel(ParallelOptions[preq, presp]{})
		inner.Add("a", parCapChan{p.answer("a"), 7})
		inner.Add("b", parCapChan{p.answer("b"), 3})
		outer := NewParallel(ParallelOptions[preq, presp]{})
		outer.Add("inner", inner)
		if got := outer.Capacity(); got != 3 {
			t.Errorf("Capacity = %d, want 3", got)
		}
		outer.Add("plain", p.answer("c")) // counts as 1
		if got := outer.Capacity(); got != 1 {
			t.Errorf("Capacity = %d, want 1", got)
		}
		outer.Add("empty", NewParallel(ParallelOptions[preq, presp]{}))
		if got := outer.Capacity(); got != 0 {
			t.Errorf("Capacity = %d, want 0", got)
		}
	})
}

func TestParallelAddNilPanics(t *testing.T) {
	t.Parallel()
	defer func() {
		if recover() == nil {
			t.Error("Add(nil) did not panic")
		}
	}()
	NewParallel(ParallelOptions[preq, presp]{}).Add("x", nil)
}

// TestParallelNoGoroutineLeak runs every way a call can end and checks
// that no goroutine outlives it. Not parallel: it counts goroutines.
func TestParallelNoGoroutineLeak(t *testing.T) {
	ctx := context.Background()
	scenarios := []struct {
		name string
		run  func(p *parProbe)
	}{
		{"all answer", func(p *parProbe) {
			newPar(ParallelOptions[preq, presp]{}, p, parAns("a", "1"), parAns("b", "2"), parAns("c", "3")).Call(ctx, "k")
		}},
		{"fail limit", func(p *parProbe) {
			newPar(ParallelOptions[preq, presp]{FailLimit: 1}, p,
				parBlk("b0"), parBlk("b1"), parAfter(2, parBad("f", errors.New("x")))).Call(ctx, "k")
		}},
		{"success limit", func(p *parProbe) {
			newPar(ParallelOptions[preq, presp]{SuccessLimit: 1}, p, parBlk("b0"), parAfter(1, parAns("a", "1"))).Call(ctx, "k")
		}},
		{"fail-all", func(p *parProbe) {
			all := func(acc presp, i int, sub presp) (presp, MergeResult) { return acc, MergeFailAll }
			newPar(ParallelOptions[preq, presp]{Merger: all}, p, parBlk("b0"), parAfter(1, parAns("a", "1"))).Call(ctx, "k")
		}},
		{"timeout", func(p *parProbe) {
			newPar(ParallelOptions[preq, presp]{Timeout: time.Millisecond}, p, parBlk("b0"), parBlk("b1")).Call(ctx, "k")
		}},
		{"panic", func(p *parProbe) {
			newPar(ParallelOptions[preq, presp]{}, p, parAns("a", "1"), parSub{"p", func(*parProbe) pch {
				return Func[preq, presp](func(context.Context, preq) (presp, error) { panic("x") })
			}}).Call(ctx, "k")
		}},
		{"future cancel", func(p *parProbe) {
			f := newPar(ParallelOptions[preq, presp]{}, p, parBlk("b0"), parBlk("b1")).Go(ctx, "k")
			<-p.started
			<-p.started
			f.Cancel()
			f.Wait()
		}},
		{"nested cancel", func(p *parProbe) {
			inner := newPar(ParallelOptions[preq, presp]{}, p, parBlk("d0"), parBlk("d1"))
			outer := NewParallel(ParallelOptions[preq, presp]{FailLimit: 1})
			outer.Add("inner", inner)
			outer.Add("f", p.after(2, p.fail(errors.New("x"))))
			outer.Call(ctx, "k")
		}},
	}
	waitGoroutines := func(limit int) int {
		deadline := time.Now().Add(parGuard)
		n := runtime.NumGoroutine()
		for n > limit && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond) // polling wait for exiting goroutines
			n = runtime.NumGoroutine()
		}
		return n
	}
	for _, sc := range scenarios {
		before := waitGoroutines(runtime.NumGoroutine())
		for range 20 {
			p := newParProbe()
			sc.run(p)
			p.settled(t)
		}
		if after := waitGoroutines(before); after > before {
			t.Errorf("%s: %d goroutines before, %d after", sc.name, before, after)
		}
	}
}
