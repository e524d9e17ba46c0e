package bulkload

import (
	"context"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// scheduler grants download slots under two caps that can change at any
// time: downloads running at once over all jobs, and downloads running at
// once whose records go to one storage node (a file counts against every
// node owning part of its slot range). Waiters are served in arrival order,
// skipping those whose nodes are at their cap, so one busy node does not
// hold up files bound elsewhere.
type scheduler struct {
	mu         sync.Mutex
	maxGlobal  int
	maxPerNode int
	active     int
	perNode    map[string]int
	waiters    []*waiter
	peak       int // most downloads ever active at once (diagnostics)
}

type waiter struct {
	nodes   []string
	ready   chan struct{}
	granted bool
}

func newScheduler(maxGlobal, maxPerNode int) *scheduler {
	return &scheduler{maxGlobal: maxGlobal, maxPerNode: maxPerNode, perNode: map[string]int{}}
}

// acquire waits for a slot for a download bound for nodes. release must be
// called once the download stops.
func (s *scheduler) acquire(ctx context.Context, nodes []string) (release func(), err error) {
	w := &waiter{nodes: nodes, ready: make(chan struct{})}
	s.mu.Lock()
	s.waiters = append(s.waiters, w)
	s.grantLocked()
	s.mu.Unlock()
	select {
	case <-w.ready:
	case <-ctx.Done():
		s.mu.Lock()
		if !w.granted {
			for i, x := range s.waiters {
				if x == w {
					s.waiters = append(s.waiters[:i], s.waiters[i+1:]...)
					break
				}
			}
			s.mu.Unlock()
			return nil, context.Cause(ctx)
		}
		s.mu.Unlock()
		s.release(nodes)
		return nil, context.Cause(ctx)
	}
	var once sync.Once
	return func() { once.Do(func() { s.release(nodes) }) }, nil
}

func (s *scheduler) release(nodes []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.active--
	for _, n := range nodes {
		if s.perNode[n]--; s.perNode[n] <= 0 {
			delete(s.perNode, n)
		}
	}
	s.grantLocked()
}

func (s *scheduler) fits(nodes []string) bool {
	if s.active >= s.maxGlobal {
		return false
	}
	for _, n := range nodes {
		if s.perNode[n] >= s.maxPerNode {
			return false
		}
	}
	return true
}

func (s *scheduler) grantLocked() {
	kept := s.waiters[:0]
	for _, w := range s.waiters {
		if s.fits(w.nodes) {
			s.active++
			for _, n := range w.nodes {
				s.perNode[n]++
			}
			s.peak = max(s.peak, s.active)
			w.granted = true
			close(w.ready)
			continue
		}
		kept = append(kept, w)
	}
	clear(s.waiters[len(kept):])
	s.waiters = kept
}

// setCaps changes the caps; downloads running over a lowered cap finish,
// new ones wait until they fit.
func (s *scheduler) setCaps(maxGlobal, maxPerNode int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.maxGlobal, s.maxPerNode = maxGlobal, maxPerNode
	s.grantLocked()
}

func (s *scheduler) caps() (maxGlobal, maxPerNode int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxGlobal, s.maxPerNode
}

// bandwidth is the download byte-rate limit shared by every download.
type bandwidth struct {
	mu  sync.Mutex
	bps uint64
	lim *rate.Limiter
}

// limiterChunk is the most bytes taken from the limiter at once.
const limiterChunk = 32 << 10

func newBandwidth(bps uint64) *bandwidth {
	b := &bandwidth{lim: rate.NewLimiter(rate.Inf, limiterChunk)}
	b.set(bps)
	return b
}

func (b *bandwidth) set(bps uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.bps = bps
	if bps == 0 {
		b.lim.SetLimit(rate.Inf)
		return
	}
	b.lim.SetBurst(int(min(max(bps, limiterChunk), math.MaxInt32)))
	b.lim.SetLimit(rate.Limit(bps))
}

func (b *bandwidth) get() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.bps
}

// wait blocks until n bytes (n <= limiterChunk) may be read.
func (b *bandwidth) wait(ctx context.Context, n int) error {
	if b.lim.Limit() == rate.Inf {
		return nil
	}
	return b.lim.WaitN(ctx, n)
}

// meter tracks a count and its recent rate: an exponentially weighted
// moving average with a time constant of rateWindow, sampled by tick.
type meter struct {
	done  uint64
	total uint64
	rate  float64
	last  uint64
	at    time.Time
}

const rateWindow = 5 * time.Second

func (m *meter) tick(now time.Time) {
	if m.at.IsZero() {
		m.at, m.last = now, m.done
		return
	}
	dt := now.Sub(m.at).Seconds()
	if dt <= 0 {
		return
	}
	delta := float64(0)
	if m.done > m.last {
		delta = float64(m.done - m.last)
	}
	inst := delta / dt
	alpha := 1 - math.Exp(-dt/rateWindow.Seconds())
	m.rate += alpha * (inst - m.rate)
	if m.rate < 1e-9 {
		m.rate = 0
	}
	m.at, m.last = now, m.done
}

// reset restarts the rate measurement (after a pause or restart).
func (m *meter) reset() { m.at, m.rate = time.Time{}, 0 }

// eta is the time left at the recent rate, 0 and false when unknown.
func (m *meter) eta() (time.Duration, bool) {
	if m.done >= m.total {
		return 0, m.total > 0
	}
	if m.rate <= 0 {
		return 0, false
	}
	secs := float64(m.total-m.done) / m.rate
	if secs > float64(365*24*3600) {
		return 0, false
	}
	return time.Duration(secs * float64(time.Second)), true
}
