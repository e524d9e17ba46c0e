package fanout

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// SubInfo describes one sub-channel to a Balancer.
type SubInfo struct {
	Name   string
	Weight int
}

// Balancer picks one sub-channel. Implementations must be safe for
// concurrent use. Pick returns an index into subs, or -1 when every sub is
// excluded. exclude(i) is true for subs already tried by this call (retries
// and backups go to a different sub-channel when one is left); a nil
// exclude excludes nothing.
type Balancer interface {
	Pick(key uint64, subs []SubInfo, exclude func(i int) bool) int
	// Observe feeds back the outcome of one attempt (latency-aware
	// balancers use it).
	Observe(name string, latency time.Duration, err error)
}

// excluded reports whether exclude rules out sub i.
func balExcluded(exclude func(int) bool, i int) bool { return exclude != nil && exclude(i) }

// balNthFree returns the index of the n-th (0-based) sub that is not excluded.
func balNthFree(subs []SubInfo, exclude func(int) bool, n int) int {
	for i := range subs {
		if balExcluded(exclude, i) {
			continue
		}
		if n == 0 {
			return i
		}
		n--
	}
	return -1
}

// balCountFree returns how many subs are not excluded.
func balCountFree(subs []SubInfo, exclude func(int) bool) int {
	if exclude == nil {
		return len(subs)
	}
	n := 0
	for i := range subs {
		if !exclude(i) {
			n++
		}
	}
	return n
}

// balWeight is w, at least 1.
func balWeight(w int) int {
	if w < 1 {
		return 1
	}
	return w
}

// RoundRobin returns a Balancer that cycles through the sub-channels in
// order, skipping excluded ones. Weights and keys are ignored.
func RoundRobin() Balancer { return &roundRobin{} }

type roundRobin struct{ next atomic.Uint64 }

func (rr *roundRobin) Pick(_ uint64, subs []SubInfo, exclude func(int) bool) int {
	n := uint64(len(subs))
	if n == 0 {
		return -1
	}
	start := (rr.next.Add(1) - 1) % n
	for k := uint64(0); k < n; k++ {
		i := int((start + k) % n)
		if !balExcluded(exclude, i) {
			return i
		}
	}
	return -1
}

func (*roundRobin) Observe(string, time.Duration, error) {}

// WeightedRandom returns a Balancer that picks a sub-channel at random with
// a probability proportional to its Weight (weights below 1 count as 1)
// among the ones not excluded. Keys are ignored.
func WeightedRandom() Balancer { return weightedRandom{} }

type weightedRandom struct{}

func (weightedRandom) Pick(_ uint64, subs []SubInfo, exclude func(int) bool) int {
	total := 0
	for i, s := range subs {
		if !balExcluded(exclude, i) {
			total += balWeight(s.Weight)
		}
	}
	if total == 0 {
		return -1
	}
	r := rand.IntN(total)
	for i, s := range subs {
		if balExcluded(exclude, i) {
			continue
		}
		if r -= balWeight(s.Weight); r < 0 {
			return i
		}
	}
	return -1 // unreachable unless exclude changed its mind
}

func (weightedRandom) Observe(string, time.Duration, error) {}

// LatencyAware returns a Balancer that keeps an EWMA of each
// sub-channel's latency and picks the better of two random sub-channels
// (power of two choices).
//
//   - A sub-channel without any observation yet is picked first (explored).
//   - One pick in 16 goes to a uniformly random sub-channel, so a
//     sub-channel that was slow gets the chance to show it recovered.
//   - A failed attempt is penalised: its sample is at least twice the
//     current average (and at least 1ms), so a sub-channel that fails fast
//     does not attract traffic; consecutive failures grow the penalty.
//   - An attempt this package cancelled because another one won (its error
//     is context.Canceled) only raises the average when it was slower than
//     the average: its latency is a lower bound.
//
// The balancer remembers every name it has observed; one instance may be
// shared by several channels.
func LatencyAware() Balancer {
	la := &latencyAware{}
	m := map[string]*latencyStat{}
	la.stats.Store(&m)
	return la
}

const (
	latencyAlpha       = 0.3 // weight of a new sample in the EWMA
	latencyExploreOne  = 16  // one pick in latencyExploreOne is random
	latencyErrFloor    = float64(time.Millisecond)
	latencyPenaltyCeil = float64(time.Minute)
)

type latencyAware struct {
	mu    sync.Mutex // serialises writers of stats
	stats atomic.Pointer[map[string]*latencyStat]
}

type latencyStat struct {
	ewma atomic.Uint64 // math.Float64bits of nanoseconds
	seen atomic.Bool   // at least one observation
}

func (la *latencyAware) lookup(name string) *latencyStat { return (*la.stats.Load())[name] }

func (la *latencyAware) stat(name string) *latencyStat {
	if st := la.lookup(name); st != nil {
		return st
	}
	la.mu.Lock()
	defer la.mu.Unlock()
	old := *la.stats.Load()
	if st := old[name]; st != nil {
		return st
	}
	m := make(map[string]*latencyStat, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	st := &latencyStat{}
	m[name] = st
	la.stats.Store(&m)
	return st
}

// score returns the EWMA latency of a sub and whether it is known.
func (la *latencyAware) score(name string) (float64, bool) {
	st := la.lookup(name)
	if st == nil || !st.seen.Load() {
		return 0, false
	}
	return math.Float64frombits(st.ewma.Load()), true
}

func (la *latencyAware) Pick(_ uint64, subs []SubInfo, exclude func(int) bool) int {
	free := balCountFree(subs, exclude)
	switch free {
	case 0:
		return -1
	case 1:
		return balNthFree(subs, exclude, 0)
	}
	// Explore the sub-channels never observed, at random among them.
	unknown := 0
	for i, s := range subs {
		if !balExcluded(exclude, i) {
			if _, ok := la.score(s.Name); !ok {
				unknown++
			}
		}
	}
	if unknown > 0 {
		n := rand.IntN(unknown)
		for i, s := range subs {
			if balExcluded(exclude, i) {
				continue
			}
			if _, ok := la.score(s.Name); !ok {
				if n == 0 {
					return i
				}
				n--
			}
		}
	}
	if rand.IntN(latencyExploreOne) == 0 {
		return balNthFree(subs, exclude, rand.IntN(free))
	}
	a := rand.IntN(free)
	b := rand.IntN(free - 1)
	if b >= a {
		b++
	}
	ia, ib := balNthFree(subs, exclude, a), balNthFree(subs, exclude, b)
	sa, _ := la.score(subs[ia].Name)
	sb, _ := la.score(subs[ib].Name)
	if sb < sa {
		return ib
	}
	return ia
}

func (la *latencyAware) Observe(name string, latency time.Duration, err error) {
	st := la.stat(name)
	sample := float64(max(latency, 0))
	cancelled := err != nil && errors.Is(err, context.Canceled)
	for {
		oldBits := st.ewma.Load()
		old := math.Float64frombits(oldBits)
		seen := st.seen.Load()
		var v float64
		switch {
		case cancelled && seen && sample <= old:
			return // a lower bound below the average says nothing
		case err != nil && !cancelled:
			v = max(sample, 2*old, latencyErrFloor)
		default:
			v = sample
		}
		if seen {
			v = old + latencyAlpha*(v-old)
		}
		v = min(v, latencyPenaltyCeil)
		if st.ewma.CompareAndSwap(oldBits, math.Float64bits(v)) {
			st.seen.Store(true)
			return
		}
	}
}
