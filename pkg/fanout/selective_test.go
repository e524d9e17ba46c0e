package fanout

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var errSelBoom = errors.New("boom")

// selSub is a test sub-channel: it counts its calls and the attempts
// running at once, then runs fn (nil: answer its name).
type selSub struct {
	name   string
	calls  atomic.Int64
	active *atomic.Int64 // shared by the subs of one test, may be nil
	fn     func(ctx context.Context, req string) (string, error)
}

func (s *selSub) Call(ctx context.Context, req string) (string, error) {
	s.calls.Add(1)
	if s.active != nil {
		s.active.Add(1)
		defer s.active.Add(-1)
	}
	if s.fn == nil {
		return s.name, nil
	}
	return s.fn(ctx, req)
}

func selFail(err error) func(context.Context, string) (string, error) {
	return func(context.Context, string) (string, error) { return "", err }
}

// selBlock blocks until ctx ends, closing started first.
func selBlock(started chan<- struct{}) func(context.Context, string) (string, error) {
	return func(ctx context.Context, _ string) (string, error) {
		if started != nil {
			close(started)
		}
		<-ctx.Done()
		return "", ctx.Err()
	}
}

// selFirstFree picks the first sub not excluded: a known order.
type selFirstFree struct{}

func (selFirstFree) Pick(_ uint64, subs []SubInfo, exclude func(int) bool) int {
	return balNthFree(subs, exclude, 0)
}
func (selFirstFree) Observe(string, time.Duration, error) {}

// selRecorder wraps a Balancer and records every Observe; each one is also
// sent to observed when it is not nil.
type selRecorder struct {
	Balancer
	mu       sync.Mutex
	seen     []Attempt
	observed chan string
}

func (r *selRecorder) Observe(name string, lat time.Duration, err error) {
	r.mu.Lock()
	r.seen = append(r.seen, Attempt{Name: name, Err: err, Latency: lat})
	r.mu.Unlock()
	r.Balancer.Observe(name, lat, err)
	if r.observed != nil {
		r.observed <- name
	}
}

func (r *selRecorder) names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var names []string
	for _, a := range r.seen {
		names = append(names, a.Name)
	}
	return names
}

// newSelTest makes a Selective over subs named s0, s1, ... whose behaviour
// is fns[i] (nil: answer the name).
func newSelTest(t *testing.T, o SelectiveOptions[string], fns ...func(context.Context, string) (string, error)) (*Selective[string, string], []*selSub, *atomic.Int64) {
	t.Helper()
	s := NewSelective[string, string](o)
	active := &atomic.Int64{}
	subs := make([]*selSub, len(fns))
	for i, fn := range fns {
		subs[i] = &selSub{name: fmt.Sprint("s", i), active: active, fn: fn}
		if err := s.Add(subs[i].name, subs[i], 1); err != nil {
			t.Fatal(err)
		}
	}
	return s, subs, active
}

func attemptNames(rep *SelectiveReport) []string {
	var names []string
	for _, a := range rep.Attempts {
		names = append(names, a.Name)
	}
	return names
}

func TestSelectiveEmpty(t *testing.T) {
	t.Parallel()
	s := NewSelective[string, string](SelectiveOptions[string]{BackupDelay: time.Millisecond})
	ctx := context.Background()
	_, err1 := s.Call(ctx, "x")
	_, rep, err2 := s.CallReport(ctx, "x")
	_, err3 := s.Broadcast(ctx, "x")
	_, err4 := s.Go(ctx, "x").Wait()
	for i, err := range []error{err1, err2, err3, err4} {
		if !errors.Is(err, ErrNoChannel) {
			t.Errorf("error %d = %v, want ErrNoChannel", i, err)
		}
	}
	if rep == nil || len(rep.Attempts) != 0 {
		t.Errorf("report = %+v, want non-nil without attempts", rep)
	}
	if s.Capacity() != 0 || s.Len() != 0 || len(s.Names()) != 0 {
		t.Errorf("empty channel: Capacity %d Len %d Names %v", s.Capacity(), s.Len(), s.Names())
	}
}

func TestSelectiveAddRemove(t *testing.T) {
	t.Parallel()
	s := NewSelective[string, string](SelectiveOptions[string]{})
	ok := Func[string, string](func(context.Context, string) (string, error) { return "ok", nil })
	tests := []struct {
		name    string
		sub     string
		ch      Channel[string, string]
		weight  int
		wantErr bool
	}{
		{"first", "a", ok, 2, false},
		{"weight 0 counts as 1", "b", ok, 0, false},
		{"negative weight counts as 1", "c", ok, -3, false},
		{"duplicate name", "a", ok, 1, true},
		{"empty name", "", ok, 1, true},
		{"nil channel", "d", nil, 1, true},
	}
	for _, tt := range tests {
		if err := s.Add(tt.sub, tt.ch, tt.weight); (err != nil) != tt.wantErr {
			t.Errorf("%s: Add(%q) = %v, want error %v", tt.name, tt.sub, err, tt.wantErr)
		}
	}
	if got, want := s.Names(), []string{"a", "b", "c"}; !slices.Equal(got, want) {
		t.Fatalf("Names = %v, want %v", got, want)
	}
	if s.Len() != 3 || s.Capacity() != 4 {
		t.Fatalf("Len %d Capacity %d, want 3 and 4", s.Len(), s.Capacity())
	}
	if s.Remove("zz") {
		t.Error("Remove of an unknown name = true")
	}
	if !s.Remove("b") || s.Remove("b") {
		t.Error("Remove(b) twice, want true then false")
	}
	if got, want := s.Names(), []string{"a", "c"}; !slices.Equal(got, want) {
		t.Fatalf("Names = %v, want %v", got, want)
	}
	if err := s.Add("b", ok, 1); err != nil {
		t.Fatalf("re-Add after Remove: %v", err)
	}
}

// selCapacitor is a channel that knows its capacity.
type selCapacitor struct {
	Func[string, string]
	c int
}

func (c selCapacitor) Capacity() int { return c.c }

func TestSelectiveCapacity(t *testing.T) {
	t.Parallel()
	ok := Func[string, string](func(context.Context, string) (string, error) { return "", nil })
	inner := NewSelective[string, string](SelectiveOptions[string]{})
	_ = inner.Add("x", ok, 3)
	_ = inner.Add("y", ok, 4)
	type sub struct {
		ch     Channel[string, string]
		weight int
	}
	tests := []struct {
		name string
		subs []sub
		want int
	}{
		{"none", nil, 0},
		{"weights", []sub{{ok, 1}, {ok, 2}, {ok, 3}}, 6},
		{"weight below 1", []sub{{ok, 0}, {ok, -1}}, 2},
		{"capacitor ignores its weight", []sub{{selCapacitor{ok, 5}, 100}, {ok, 1}}, 6},
		{"nested selective", []sub{{inner, 1}, {ok, 2}}, 9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := NewSelective[string, string](SelectiveOptions[string]{})
			for i, sb := range tt.subs {
				if err := s.Add(fmt.Sprint(i), sb.ch, sb.weight); err != nil {
					t.Fatal(err)
				}
			}
			if got := s.Capacity(); got != tt.want {
				t.Fatalf("Capacity = %d, want %d", got, tt.want)
			}
			if got := CapacityOf[string, string](s, 1); got != tt.want {
				t.Fatalf("CapacityOf = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestSelectiveRetry(t *testing.T) {
	t.Parallel()
	errFatal := errors.New("fatal")
	boom := selFail(errSelBoom)
	tests := []struct {
		name      string
		maxRetry  int
		retryable func(error) bool
		fns       []func(context.Context, string) (string, error)
		backup    bool // arm a backup that never fires, for the hedged path
		want      string
		wantErr   error
		attempts  int
	}{
		{"first answers", 2, nil, []func(context.Context, string) (string, error){nil, nil}, false, "s0", nil, 1},
		{"no retry", 0, nil, []func(context.Context, string) (string, error){boom, nil}, false, "", errSelBoom, 1},
		{"success on retry", 2, nil, []func(context.Context, string) (string, error){boom, nil, nil}, false, "s1", nil, 2},
		{"success on last retry", 2, nil, []func(context.Context, string) (string, error){boom, boom, nil, nil}, false, "s2", nil, 3},
		{"stops at MaxRetry", 2, nil, []func(context.Context, string) (string, error){boom, boom, boom, nil, nil}, false, "", errSelBoom, 3},
		{"stops when every sub was tried", 10, nil, []func(context.Context, string) (string, error){boom, boom, boom}, false, "", errSelBoom, 3},
		{"not retryable", 3, func(err error) bool { return !errors.Is(err, errFatal) }, []func(context.Context, string) (string, error){selFail(errFatal), nil}, false, "", errFatal, 1},
		{"retryable by Retryable", 3, func(err error) bool { return !errors.Is(err, errFatal) }, []func(context.Context, string) (string, error){boom, nil}, false, "s1", nil, 2},
		{"panic is an error, retried", 1, nil, []func(context.Context, string) (string, error){func(context.Context, string) (string, error) { panic("bad sub") }, nil}, false, "s1", nil, 2},
		{"hedged path: success on retry", 2, nil, []func(context.Context, string) (string, error){boom, nil, nil}, true, "s1", nil, 2},
		{"hedged path: stops at MaxRetry", 1, nil, []func(context.Context, string) (string, error){boom, boom, nil}, true, "", errSelBoom, 2},
		{"hedged path: not retryable", 3, func(err error) bool { return !errors.Is(err, errFatal) }, []func(context.Context, string) (string, error){selFail(errFatal), nil}, true, "", errFatal, 1},
	}
	for _, tt := range tests {
		for _, bal := range []string{"first-free", "round-robin"} {
			t.Run(tt.name+"/"+bal, func(t *testing.T) {
				t.Parallel()
				rec := &selRecorder{Balancer: selFirstFree{}}
				if bal == "round-robin" {
					rec.Balancer = RoundRobin()
				}
				o := SelectiveOptions[string]{Balancer: rec, MaxRetry: tt.maxRetry, Retryable: tt.retryable}
				if tt.backup {
					o.BackupDelay = time.Hour
				}
				s, subs, active := newSelTest(t, o, tt.fns...)
				resp, rep, err := s.CallReport(context.Background(), "req")
				if active.Load() != 0 {
					t.Fatalf("%d attempts still running after the call", active.Load())
				}
				if len(rep.Attempts) != tt.attempts {
					t.Fatalf("attempts %v, want %d", attemptNames(rep), tt.attempts)
				}
				// Each attempt on a different sub, each sub called once at most.
				names := attemptNames(rep)
				if len(slices.Compact(slices.Sorted(slices.Values(names)))) != len(names) {
					t.Fatalf("a sub was tried twice: %v", names)
				}
				for _, sub := range subs {
					if n := sub.calls.Load(); n > 1 {
						t.Fatalf("%s called %d times", sub.name, n)
					}
				}
				if got := rec.names(); !slices.Equal(got, names) {
					t.Fatalf("observed %v, attempts %v", got, names)
				}
				if st := s.Stats(); st.Calls != 1 || st.Retries != uint64(tt.attempts-1) {
					t.Fatalf("stats %+v, want 1 call and %d retries", st, tt.attempts-1)
				}
				if tt.wantErr == nil {
					if err != nil || (bal == "first-free" && resp != tt.want) {
						t.Fatalf("got %q, %v; want %q", resp, err, tt.want)
					}
					last := rep.Attempts[len(rep.Attempts)-1]
					if !last.Won || last.Name != resp || last.Err != nil {
						t.Fatalf("last attempt %+v, want the winner %s", last, resp)
					}
					return
				}
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				for _, a := range rep.Attempts {
					if a.Won || a.Err == nil {
						t.Fatalf("attempt %+v of a failed call", a)
					}
					if !strings.Contains(err.Error(), a.Name+": "+a.Err.Error()) {
						t.Fatalf("error %q does not name %s and its error", err, a.Name)
					}
				}
			})
		}
	}
}

func TestSelectivePanicError(t *testing.T) {
	t.Parallel()
	errPanic := errors.New("panic value")
	s, _, _ := newSelTest(t, SelectiveOptions[string]{},
		func(context.Context, string) (string, error) { panic(errPanic) })
	_, err := s.Call(context.Background(), "x")
	if !errors.Is(err, errPanic) || !strings.Contains(err.Error(), `"s0" panicked`) {
		t.Fatalf("err = %v, want the recovered panic of s0", err)
	}
}

func TestSelectiveContextEnds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		timeout time.Duration
		backup  time.Duration
		cancel  bool // cancel the caller's context once the first attempt runs
		want    error
	}{
		{"caller cancels", 0, 0, true, context.Canceled},
		{"caller cancels, hedged", 0, time.Hour, true, context.Canceled},
		{"timeout", 5 * time.Millisecond, 0, false, context.DeadlineExceeded},
		{"timeout, hedged", 5 * time.Millisecond, time.Hour, false, context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			started := make(chan struct{})
			s, subs, active := newSelTest(t, SelectiveOptions[string]{MaxRetry: 3, Timeout: tt.timeout, BackupDelay: tt.backup},
				selBlock(started), nil, nil)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.cancel {
				go func() { <-started; cancel() }()
			}
			_, rep, err := s.CallReport(ctx, "x")
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if len(rep.Attempts) != 1 || subs[1].calls.Load()+subs[2].calls.Load() != 0 {
				t.Fatalf("attempts %v: the call's own end must not be retried", attemptNames(rep))
			}
			if active.Load() != 0 {
				t.Fatal("attempt still running after the call")
			}
		})
	}
	t.Run("already ended", func(t *testing.T) {
		t.Parallel()
		s, subs, _ := newSelTest(t, SelectiveOptions[string]{}, nil)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := s.Call(ctx, "x"); !errors.Is(err, context.Canceled) || subs[0].calls.Load() != 0 {
			t.Fatalf("err = %v, calls %d: want context.Canceled without a call", err, subs[0].calls.Load())
		}
	})
}

func TestSelectiveGoCancel(t *testing.T) {
	t.Parallel()
	for _, backup := range []time.Duration{0, time.Hour, time.Nanosecond} {
		t.Run(fmt.Sprint("backup ", backup), func(t *testing.T) {
			t.Parallel()
			started := make(chan struct{})
			var once sync.Once
			block := func(ctx context.Context, _ string) (string, error) {
				once.Do(func() { close(started) })
				<-ctx.Done()
				return "", ctx.Err()
			}
			s, _, active := newSelTest(t, SelectiveOptions[string]{BackupDelay: backup, BackupMaxRatio: 1, MaxRetry: 2}, block, block)
			f := s.Go(context.Background(), "x")
			<-started
			select {
			case <-f.Done():
				t.Fatal("future done before Cancel")
			default:
			}
			f.Cancel()
			if _, err := f.Wait(); !errors.Is(err, context.Canceled) {
				t.Fatalf("Wait = %v, want context.Canceled", err)
			}
			if active.Load() != 0 {
				t.Fatal("attempt still running after the future's answer")
			}
		})
	}
	t.Run("answer", func(t *testing.T) {
		t.Parallel()
		s, _, _ := newSelTest(t, SelectiveOptions[string]{}, nil)
		if resp, err := s.Go(context.Background(), "x").Wait(); resp != "s0" || err != nil {
			t.Fatalf("Wait = %q, %v", resp, err)
		}
	})
}

func TestSelectiveRemoveWhileRunning(t *testing.T) {
	t.Parallel()
	started, release := make(chan struct{}), make(chan struct{})
	s, _, _ := newSelTest(t, SelectiveOptions[string]{Balancer: selFirstFree{}},
		func(ctx context.Context, _ string) (string, error) {
			close(started)
			<-release
			return "from s0", nil
		}, nil)
	f := s.Go(context.Background(), "x")
	<-started
	if !s.Remove("s0") {
		t.Fatal("Remove(s0) = false")
	}
	if resp, err := s.Call(context.Background(), "y"); resp != "s1" || err != nil {
		t.Fatalf("call after Remove = %q, %v; want s1", resp, err)
	}
	close(release)
	if resp, err := f.Wait(); resp != "from s0" || err != nil {
		t.Fatalf("running call = %q, %v; want it to finish on s0", resp, err)
	}
}

func TestSelectiveAddRemoveWhileCalling(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		bal  func() Balancer
	}{
		{"RoundRobin", RoundRobin},
		{"WeightedRandom", WeightedRandom},
		{"ConsistentHash", func() Balancer { return ConsistentHash(4) }},
		{"LatencyAware", LatencyAware},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := NewSelective[string, string](SelectiveOptions[string]{
				Balancer: tt.bal(), MaxRetry: 1, BackupDelay: time.Microsecond, BackupMaxRatio: 0.5,
				Key: func(r string) uint64 { return hashFNV1a(r) },
			})
			ok := func(name string) Channel[string, string] {
				return Func[string, string](func(context.Context, string) (string, error) { return name, nil })
			}
			if err := s.Add("base", ok("base"), 1); err != nil {
				t.Fatal(err)
			}
			stop := make(chan struct{})
			var churn sync.WaitGroup
			churn.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					name := fmt.Sprint("x", i%5)
					if !s.Remove(name) {
						_ = s.Add(name, ok(name), i%3)
					}
					_, _, _ = s.Names(), s.Len(), s.Capacity()
				}
			})
			var callers sync.WaitGroup
			for w := range 8 {
				callers.Go(func() {
					for i := range 300 {
						resp, err := s.Call(context.Background(), fmt.Sprint(w, "/", i))
						if err != nil || resp == "" {
							t.Errorf("call = %q, %v", resp, err)
							return
						}
						if i%50 == 0 {
							_, _ = s.Broadcast(context.Background(), "w")
						}
					}
				})
			}
			callers.Wait()
			close(stop)
			churn.Wait()
		})
	}
}

func TestSelectiveConsistentHashKey(t *testing.T) {
	t.Parallel()
	s, subs, _ := newSelTest(t, SelectiveOptions[string]{
		Balancer: ConsistentHash(0),
		Key:      func(r string) uint64 { return hashFNV1a(r) },
	}, nil, nil, nil, nil)
	home := map[string]string{}
	for i := range 200 {
		key := fmt.Sprint("user:", i)
		resp, err := s.Call(context.Background(), key)
		if err != nil {
			t.Fatal(err)
		}
		home[key] = resp
	}
	for _, sub := range subs {
		if sub.calls.Load() == 0 {
			t.Fatalf("%s got no key of 200", sub.name)
		}
	}
	s.Remove("s2")
	for key, was := range home {
		resp, err := s.Call(context.Background(), key)
		if err != nil {
			t.Fatal(err)
		}
		if (was != "s2" && resp != was) || resp == "s2" {
			t.Fatalf("%s: on %s, then %s after removing s2", key, was, resp)
		}
	}
}

func TestSelectiveBroadcast(t *testing.T) {
	t.Parallel()
	errOther := errors.New("disk full")
	tests := []struct {
		name      string
		fail      map[int]error // sub index → its error
		panics    int           // index of a sub that panics, -1: none
		wantNames []string      // failed subs named in the error
	}{
		{"all ok", nil, -1, nil},
		{"one fails", map[int]error{1: errSelBoom}, -1, []string{"s1"}},
		{"two fail", map[int]error{0: errSelBoom, 2: errOther}, -1, []string{"s0", "s2"}},
		{"one panics", nil, 2, []string{"s2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			const n = 3
			// Every sub waits until all of them run: proof they are
			// called at once (otherwise the call times out).
			var arrived sync.WaitGroup
			arrived.Add(n)
			fns := make([]func(context.Context, string) (string, error), n)
			for i := range n {
				fns[i] = func(ctx context.Context, req string) (string, error) {
					arrived.Done()
					waited := make(chan struct{})
					go func() { arrived.Wait(); close(waited) }()
					select {
					case <-waited:
					case <-ctx.Done():
						return "", ctx.Err()
					}
					if i == tt.panics {
						panic("broken replica")
					}
					if err := tt.fail[i]; err != nil {
						return "", err
					}
					return fmt.Sprint(req, "@s", i), nil
				}
			}
			rec := &selRecorder{Balancer: RoundRobin()}
			s, subs, active := newSelTest(t, SelectiveOptions[string]{Balancer: rec, Timeout: time.Minute, MaxRetry: 2, BackupDelay: time.Nanosecond}, fns...)
			resp, err := s.Broadcast(context.Background(), "w")
			if active.Load() != 0 {
				t.Fatal("sub-call still running after Broadcast")
			}
			for _, sub := range subs {
				if sub.calls.Load() != 1 {
					t.Fatalf("%s called %d times, want once", sub.name, sub.calls.Load())
				}
			}
			if got := rec.names(); len(got) != n {
				t.Fatalf("observed %v, want every sub", got)
			}
			if len(tt.wantNames) == 0 {
				if err != nil || !strings.HasPrefix(resp, "w@s") {
					t.Fatalf("Broadcast = %q, %v", resp, err)
				}
				return
			}
			if err == nil || resp != "" {
				t.Fatalf("Broadcast = %q, %v; want an error", resp, err)
			}
			if errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("subs not called at once: %v", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, fmt.Sprintf("%d of %d", len(tt.wantNames), n)) {
				t.Errorf("error %q does not count the failures", msg)
			}
			for i := range n {
				name := fmt.Sprint("s", i)
				if slices.Contains(tt.wantNames, name) != strings.Contains(msg, name+":") {
					t.Errorf("error %q, want exactly %v named", msg, tt.wantNames)
				}
				if e := tt.fail[i]; e != nil && !errors.Is(err, e) {
					t.Errorf("errors.Is(err, %v) = false", e)
				}
			}
			if st := s.Stats(); st != (SelectiveStats{}) {
				t.Errorf("Broadcast changed stats: %+v", st)
			}
		})
	}
}
