package fanout

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"
)

func balSubs(names ...string) []SubInfo {
	subs := make([]SubInfo, len(names))
	for i, n := range names {
		subs[i] = SubInfo{Name: n, Weight: 1}
	}
	return subs
}

func balExclude(idx ...int) func(int) bool {
	return func(i int) bool { return slices.Contains(idx, i) }
}

func TestBalancerNothingToPick(t *testing.T) {
	t.Parallel()
	balancers := map[string]func() Balancer{
		"RoundRobin":     RoundRobin,
		"WeightedRandom": WeightedRandom,
		"ConsistentHash": func() Balancer { return ConsistentHash(0) },
		"LatencyAware":   LatencyAware,
	}
	for name, mk := range balancers {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := mk()
			subs := balSubs("a", "b", "c")
			tests := []struct {
				name    string
				subs    []SubInfo
				exclude func(int) bool
				want    []int // acceptable answers
			}{
				{"empty list", nil, nil, []int{-1}},
				{"all excluded", subs, balExclude(0, 1, 2), []int{-1}},
				{"one left", subs, balExclude(0, 2), []int{1}},
				{"nil exclude", subs[:1], nil, []int{0}},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					for key := range uint64(50) {
						if got := b.Pick(key, tt.subs, tt.exclude); !slices.Contains(tt.want, got) {
							t.Fatalf("Pick(%d) = %d, want one of %v", key, got, tt.want)
						}
					}
				})
			}
		})
	}
}

func TestRoundRobinBalancer(t *testing.T) {
	t.Parallel()
	t.Run("cycles", func(t *testing.T) {
		t.Parallel()
		b := RoundRobin()
		subs := balSubs("a", "b", "c")
		var got []int
		for range 9 {
			got = append(got, b.Pick(0, subs, nil))
		}
		if want := []int{0, 1, 2, 0, 1, 2, 0, 1, 2}; !slices.Equal(got, want) {
			t.Fatalf("picks = %v, want %v", got, want)
		}
	})
	t.Run("skips excluded", func(t *testing.T) {
		t.Parallel()
		b := RoundRobin()
		subs := balSubs("a", "b", "c", "d")
		count := make([]int, len(subs))
		for range 400 {
			count[b.Pick(0, subs, balExclude(1))]++
		}
		if count[1] != 0 || count[0] == 0 || count[2] == 0 || count[3] == 0 {
			t.Fatalf("counts = %v, want 0 for sub 1 and some for every other", count)
		}
	})
	t.Run("concurrent picks stay even", func(t *testing.T) {
		t.Parallel()
		b := RoundRobin()
		subs := balSubs("a", "b", "c")
		const workers, picks = 8, 3000
		counts := make([][]int, workers)
		var wg sync.WaitGroup
		for w := range workers {
			counts[w] = make([]int, len(subs))
			wg.Go(func() {
				for range picks {
					counts[w][b.Pick(0, subs, nil)]++
				}
			})
		}
		wg.Wait()
		total := make([]int, len(subs))
		for _, c := range counts {
			for i, n := range c {
				total[i] += n
			}
		}
		for i, n := range total {
			if n != workers*picks/len(subs) {
				t.Fatalf("sub %d picked %d times of %d, want exactly a third: %v", i, n, workers*picks, total)
			}
		}
	})
}

func TestWeightedRandomBalancer(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		weights []int
		exclude []int
		want    []float64 // expected shares
	}{
		{"equal", []int{1, 1}, nil, []float64{0.5, 0.5}},
		{"one to three", []int{1, 3}, nil, []float64{0.25, 0.75}},
		{"three subs", []int{1, 2, 7}, nil, []float64{0.1, 0.2, 0.7}},
		{"weight below 1 counts as 1", []int{0, -5, 2}, nil, []float64{0.25, 0.25, 0.5}},
		{"excluded heavy sub", []int{1, 8, 3}, []int{1}, []float64{0.25, 0, 0.75}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := WeightedRandom()
			subs := make([]SubInfo, len(tt.weights))
			for i, w := range tt.weights {
				subs[i] = SubInfo{Name: fmt.Sprint("s", i), Weight: w}
			}
			const picks = 20000
			count := make([]int, len(subs))
			for range picks {
				count[b.Pick(0, subs, balExclude(tt.exclude...))]++
			}
			// The standard deviation of a share is at most
			// sqrt(0.25/20000) = 0.0035: 0.03 is over 8 of them.
			for i, n := range count {
				share := float64(n) / picks
				if math.Abs(share-tt.want[i]) > 0.03 {
					t.Errorf("sub %d: share %.3f, want %.3f ± 0.03 (counts %v)", i, share, tt.want[i], count)
				}
				if tt.want[i] == 0 && n != 0 {
					t.Errorf("excluded sub %d picked %d times", i, n)
				}
			}
		})
	}
}

// balOwners maps each key to the name of the sub it goes to.
func balOwners(b Balancer, subs []SubInfo, keys int) map[uint64]string {
	m := make(map[uint64]string, keys)
	for k := range uint64(keys) {
		m[k] = subs[b.Pick(k, subs, nil)].Name
	}
	return m
}

func TestConsistentHashBalancer(t *testing.T) {
	t.Parallel()
	const keys = 10000
	all := balSubs("node-a", "node-b", "node-c", "node-d", "node-e")

	t.Run("deterministic across instances", func(t *testing.T) {
		t.Parallel()
		a, b := balOwners(ConsistentHash(0), all, keys), balOwners(ConsistentHash(0), all, keys)
		for k, name := range a {
			if b[k] != name {
				t.Fatalf("key %d: %s then %s", k, name, b[k])
			}
		}
	})

	t.Run("order of the list does not matter", func(t *testing.T) {
		t.Parallel()
		reversed := slices.Clone(all)
		slices.Reverse(reversed)
		b := ConsistentHash(0) // one instance, both lists cached
		a, r := balOwners(b, all, keys), balOwners(b, reversed, keys)
		for k, name := range a {
			if r[k] != name {
				t.Fatalf("key %d: %s, then %s once the list is reversed", k, name, r[k])
			}
		}
	})

	for removed := range all {
		t.Run(fmt.Sprint("remove ", all[removed].Name), func(t *testing.T) {
			t.Parallel()
			b := ConsistentHash(0)
			before := balOwners(b, all, keys)
			rest := slices.Delete(slices.Clone(all), removed, removed+1)
			after := balOwners(b, rest, keys)
			gone := all[removed].Name
			held, moved := 0, 0
			for k, was := range before {
				now := after[k]
				if was == gone {
					held++
					if now == gone {
						t.Fatalf("key %d still on the removed sub", k)
					}
					continue
				}
				if now != was {
					moved++
					t.Errorf("key %d moved from %s to %s though %s was not removed", k, was, now, was)
				}
			}
			if moved != 0 || held == 0 {
				t.Fatalf("removed sub held %d keys, %d other keys moved", held, moved)
			}
		})
	}

	t.Run("adding a sub moves keys only to it", func(t *testing.T) {
		t.Parallel()
		b := ConsistentHash(0)
		before := balOwners(b, all, keys)
		more := append(slices.Clone(all), SubInfo{Name: "node-f", Weight: 1})
		after := balOwners(b, more, keys)
		taken := 0
		for k, was := range before {
			if now := after[k]; now != was {
				if now != "node-f" {
					t.Fatalf("key %d moved from %s to %s, not to the new sub", k, was, now)
				}
				taken++
			}
		}
		if taken == 0 {
			t.Fatal("the new sub took no key")
		}
	})

	t.Run("spread and weight", func(t *testing.T) {
		t.Parallel()
		tests := []struct {
			weights []int
			want    []float64
		}{
			{[]int{1, 1, 1, 1}, []float64{0.25, 0.25, 0.25, 0.25}},
			{[]int{1, 3}, []float64{0.25, 0.75}},
		}
		for _, tt := range tests {
			subs := make([]SubInfo, len(tt.weights))
			for i, w := range tt.weights {
				subs[i] = SubInfo{Name: fmt.Sprint("host-", i), Weight: w}
			}
			count := map[string]int{}
			for _, name := range balOwners(ConsistentHash(0), subs, keys) {
				count[name]++
			}
			for i, s := range subs {
				// 100 vnodes per unit of weight: shares within 10 points.
				if share := float64(count[s.Name]) / keys; math.Abs(share-tt.want[i]) > 0.1 {
					t.Errorf("weights %v: %s has share %.3f, want %.2f ± 0.1", tt.weights, s.Name, share, tt.want[i])
				}
			}
		}
	})

	t.Run("excluded owner goes to the same next sub", func(t *testing.T) {
		t.Parallel()
		b := ConsistentHash(16)
		for k := range uint64(500) {
			first := b.Pick(k, all, nil)
			second := b.Pick(k, all, balExclude(first))
			if second == first || second < 0 {
				t.Fatalf("key %d: first %d, with it excluded %d", k, first, second)
			}
			if again := b.Pick(k, all, balExclude(first)); again != second {
				t.Fatalf("key %d: with %d excluded, %d then %d", k, first, second, again)
			}
		}
	})

	t.Run("shared by many lists", func(t *testing.T) {
		t.Parallel()
		b := ConsistentHash(8)
		lists := make([][]SubInfo, 40) // more than a handful, as partitions do
		for i := range lists {
			lists[i] = balSubs(fmt.Sprintf("p%d-a", i), fmt.Sprintf("p%d-b", i))
		}
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for k := range uint64(200) {
					for _, l := range lists {
						if i := b.Pick(k, l, nil); i < 0 || i >= len(l) {
							t.Errorf("Pick = %d", i)
							return
						}
					}
				}
			})
		}
		wg.Wait()
		for _, l := range lists {
			if got, want := balOwners(b, l, 100), balOwners(ConsistentHash(8), l, 100); !balMapsEqual(got, want) {
				t.Fatalf("list %v: shared instance disagrees with a fresh one", l)
			}
		}
	})
}

func balMapsEqual(a, b map[uint64]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestLatencyAwareBalancer(t *testing.T) {
	t.Parallel()
	const picks = 10000
	share := func(b Balancer, subs []SubInfo) []int {
		count := make([]int, len(subs))
		for range picks {
			count[b.Pick(0, subs, nil)]++
		}
		return count
	}
	observe := func(b Balancer, name string, n int, lat time.Duration, err error) {
		for range n {
			b.Observe(name, lat, err)
		}
	}

	t.Run("unknown subs are explored first", func(t *testing.T) {
		t.Parallel()
		b := LatencyAware()
		subs := balSubs("a", "b", "c")
		observe(b, "a", 5, time.Millisecond, nil)
		observe(b, "b", 5, time.Millisecond, nil)
		for range 100 {
			if got := b.Pick(0, subs, nil); got != 2 {
				t.Fatalf("Pick = %d, want 2, the only sub never observed", got)
			}
		}
		b.Observe("c", time.Millisecond, nil)
		count := share(b, subs)
		for i, n := range count {
			if n == 0 {
				t.Fatalf("sub %d never picked once every sub is known: %v", i, count)
			}
		}
	})

	t.Run("prefers the fast sub and still explores", func(t *testing.T) {
		t.Parallel()
		b := LatencyAware()
		subs := balSubs("fast", "slow")
		observe(b, "fast", 10, time.Millisecond, nil)
		observe(b, "slow", 10, 50*time.Millisecond, nil)
		count := share(b, subs)
		if count[0] < picks*9/10 {
			t.Errorf("fast sub picked %d of %d times, want at least 90%%", count[0], picks)
		}
		if count[1] == 0 {
			t.Errorf("slow sub never explored in %d picks", picks)
		}
	})

	t.Run("follows feedback", func(t *testing.T) {
		t.Parallel()
		b := LatencyAware()
		subs := balSubs("a", "b")
		observe(b, "a", 10, time.Millisecond, nil)
		observe(b, "b", 10, 20*time.Millisecond, nil)
		if c := share(b, subs); c[0] < c[1] {
			t.Fatalf("a faster, counts %v", c)
		}
		observe(b, "a", 30, 100*time.Millisecond, nil) // a got slow
		if c := share(b, subs); c[1] < picks*9/10 {
			t.Fatalf("a slower now, counts %v", c)
		}
	})

	t.Run("fast failures are penalised", func(t *testing.T) {
		t.Parallel()
		b := LatencyAware()
		subs := balSubs("failing", "healthy")
		observe(b, "failing", 5, time.Microsecond, errors.New("unavailable"))
		observe(b, "healthy", 5, 500*time.Microsecond, nil)
		if c := share(b, subs); c[1] < picks*9/10 {
			t.Fatalf("failing sub not avoided: counts %v", c)
		}
	})

	t.Run("cancelled attempt is a lower bound", func(t *testing.T) {
		t.Parallel()
		b := LatencyAware().(*latencyAware)
		b.Observe("a", 10*time.Millisecond, nil)
		b.Observe("a", time.Millisecond, context.Canceled) // lost a race early: no news
		if got, _ := b.score("a"); got != float64(10*time.Millisecond) {
			t.Fatalf("score after a short cancelled attempt = %v, want 10ms", time.Duration(got))
		}
		b.Observe("a", 30*time.Millisecond, fmt.Errorf("lost: %w", context.Canceled))
		if got, _ := b.score("a"); got <= float64(10*time.Millisecond) {
			t.Fatalf("score after a long cancelled attempt = %v, want above 10ms", time.Duration(got))
		}
	})

	t.Run("concurrent use", func(t *testing.T) {
		t.Parallel()
		b := LatencyAware()
		subs := balSubs("a", "b", "c", "d")
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				for i := range 2000 {
					j := b.Pick(uint64(i), subs, balExclude(w%4))
					if j < 0 || j == w%4 {
						t.Errorf("Pick = %d with %d excluded", j, w%4)
						return
					}
					b.Observe(subs[j].Name, time.Duration(j+1)*time.Millisecond, nil)
				}
			})
		}
		wg.Wait()
	})
}
