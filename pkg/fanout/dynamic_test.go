package fanout

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// seeded returns a deterministic Rand safe for concurrent calls.
func seeded(seed uint64) func() float64 {
	r := rand.New(rand.NewPCG(seed, 1))
	var mu sync.Mutex
	return func() float64 {
		mu.Lock()
		defer mu.Unlock()
		return r.Float64()
	}
}

func newLayDynamic(t *testing.T, net *layNet, seed uint64) *DynamicPartition[layReq, layResp] {
	t.Helper()
	d := NewDynamicPartition(DynamicOptions[layReq, layResp]{
		Dial:      net.dial,
		Selective: SelectiveOptions[layReq]{Balancer: WeightedRandom()},
		Parallel:  layParallel,
		Rand:      seeded(seed),
		OnError:   func(err error) { t.Logf("OnError: %v", err) },
	})
	t.Cleanup(d.Close)
	return d
}

// layoutOf tells the layout of an instance made by insts: "t" (three)
// instances are of the 3-layout, "f" (four) of the 4-layout.
func layoutOf(addr string) int {
	switch addr[0] {
	case 't':
		return 3
	case 'f':
		return 4
	}
	return 0
}

// share runs n calls and returns the fraction that went to the 3-layout,
// checking that each call was served by instances of the layout it
// reports, one per partition.
func share(t *testing.T, d *DynamicPartition[layReq, layResp], n int) float64 {
	t.Helper()
	to3 := 0
	for range n {
		resp, rep, err := d.CallReport(t.Context(), layReq{})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Served) != rep.Layout || len(rep.Report.Subs) != rep.Layout {
			t.Fatalf("layout %d call served by %v", rep.Layout, resp.Served)
		}
		for _, addr := range resp.Served {
			if layoutOf(addr) != rep.Layout {
				t.Fatalf("layout %d call served by %s", rep.Layout, addr)
			}
		}
		if rep.Layout == 3 {
			to3++
		}
	}
	return float64(to3) / float64(n)
}

func capacities(d *DynamicPartition[layReq, layResp]) map[int]int {
	out := map[int]int{}
	for _, l := range d.Layouts() {
		out[l.Partitions] = l.Capacity
	}
	return out
}

func withWeight(in []Instance, w int) []Instance {
	out := slices.Clone(in)
	for i := range out {
		out[i].Weight = w
	}
	return out
}

func TestDynamicSplit(t *testing.T) {
	t.Parallel()
	const calls = 4000
	for _, tc := range []struct {
		name  string
		in    []Instance
		caps  map[int]int
		share float64 // of the 3-layout
	}{
		{"equal capacity", append(insts("t", 3, 1), insts("f", 4, 1)...), map[int]int{3: 1, 4: 1}, 0.5},
		{"4-layout doubled", append(insts("t", 3, 1), insts("f", 4, 2)...), map[int]int{3: 1, 4: 2}, 1.0 / 3},
		{"weights", append(withWeight(insts("t", 3, 1), 3), insts("f", 4, 1)...), map[int]int{3: 3, 4: 1}, 0.75},
		{"4-layout incomplete", append(insts("t", 3, 1), insts("f", 4, 1)[:3]...), map[int]int{3: 1, 4: 0}, 1},
		{"only the 4-layout", insts("f", 4, 3), map[int]int{4: 3}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			net := newLayNet()
			d := newLayDynamic(t, net, 42)
			d.Update(tc.in)
			if got := capacities(d); !mapsEqualInt(got, tc.caps) {
				t.Fatalf("capacities %v, want %v", got, tc.caps)
			}
			got := share(t, d, calls)
			if math.Abs(got-tc.share) > 0.05 {
				t.Fatalf("3-layout got %.3f of the calls, want %.3f", got, tc.share)
			}
			var total uint64
			for _, l := range d.Layouts() {
				total += l.Calls
				if l.Capacity == 0 && l.Calls != 0 {
					t.Errorf("layout %d has no capacity and got %d calls", l.Partitions, l.Calls)
				}
			}
			if total != calls {
				t.Errorf("Layouts count %d calls, want %d", total, calls)
			}
			net.check(t)
		})
	}
}

func mapsEqualInt(a, b map[int]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestDynamicGrowAndShrink(t *testing.T) {
	t.Parallel()
	net := newLayNet()
	d := newLayDynamic(t, net, 7)
	three, four := insts("t", 3, 1), insts("f", 4, 1)
	base := append(slices.Clone(three), four...)
	d.Update(base)
	if got := share(t, d, 3000); math.Abs(got-0.5) > 0.05 {
		t.Fatalf("equal capacities: 3-layout got %.3f", got)
	}
	if got := d.Capacity(); got != 2 {
		t.Fatalf("Capacity %d, want 1+1", got)
	}

	// A second instance in every partition of the 4-layout doubles it.
	grown := slices.Clone(base)
	for _, in := range insts("f", 4, 2) {
		if strings.HasSuffix(in.Addr, "-1") {
			grown = append(grown, in)
		}
	}
	d.Update(grown)
	if got := capacities(d); !mapsEqualInt(got, map[int]int{3: 1, 4: 2}) {
		t.Fatalf("capacities %v after growing, want 3:1 4:2", got)
	}
	if got := share(t, d, 3000); math.Abs(got-1.0/3) > 0.05 {
		t.Fatalf("4-layout doubled: 3-layout got %.3f, want 1/3", got)
	}

	// Remove one instance of the 3-layout while calls run: no call fails,
	// and once Update returns the 3-layout gets nothing.
	var stop atomic.Bool
	var failed, total atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for !stop.Load() {
				total.Add(1)
				if _, err := d.Call(context.Background(), layReq{}); err != nil {
					failed.Add(1)
					t.Errorf("call during the change: %v", err)
				}
			}
		})
	}
	for total.Load() < 500 { // let calls run on both layouts first
		runtime.Gosched()
	}
	shrunk := slices.DeleteFunc(slices.Clone(grown), func(in Instance) bool { return in.Addr == "t1-0" })
	d.Update(shrunk)
	for total.Load() < 3000 {
		runtime.Gosched()
	}
	stop.Store(true)
	wg.Wait()
	before := d.Layouts()[0].Calls
	if got := share(t, d, 1000); got != 0 {
		t.Fatalf("3-layout still got %.3f of the calls", got)
	}
	l := d.Layouts()
	if l[0].Partitions != 3 || l[0].Complete || l[0].Capacity != 0 || l[0].Instances != 2 || l[0].Calls != before {
		t.Fatalf("3-layout after removing t1-0: %+v (calls before %d)", l[0], before)
	}
	if _, _, closes := net.snapshot(); !maps1(closes, "t1-0") {
		t.Fatalf("closes %v, want t1-0 once", closes)
	}

	// A layout whose instances all left is removed and closed.
	d.Update(insts("f", 4, 2))
	if l := d.Layouts(); len(l) != 1 || l[0].Partitions != 4 {
		t.Fatalf("Layouts %+v, want only the 4-layout", l)
	}
	_, dials, closes := net.snapshot()
	for addr, n := range dials {
		if want := map[int]int{3: n, 4: 0}[layoutOf(addr)]; closes[addr] != want {
			t.Errorf("%s dialed %d, closed %d times, want %d", addr, n, closes[addr], want)
		}
	}
	net.check(t)
}

func TestDynamicBroadcast(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		in      []Instance
		failing string
		called  []int  // layouts whose every instance is called
		keys    []int  // layouts answering
		err     string // "" for success
	}{
		{"both complete", append(insts("t", 3, 2), insts("f", 4, 2)...), "", []int{3, 4}, []int{3, 4}, ""},
		{"4-layout incomplete", append(insts("t", 3, 2), insts("f", 4, 1)[1:]...), "", []int{3}, []int{3}, ""},
		{"a failing instance", append(insts("t", 3, 2), insts("f", 4, 2)...), "f2-1", []int{3, 4}, []int{3},
			"broadcast failed on 1 of 2 layouts (4): layout 4: fanout: 1 of 4 sub-calls failed: 2/4: fanout: broadcast: 1 of 2 sub-channels failed: f2-1: f2-1: disk full"},
		{"no complete layout", append(insts("t", 3, 2)[2:], insts("f", 4, 1)[1:]...), "", nil, nil, "no complete layout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			net := newLayNet()
			if tc.failing != "" {
				net.setFailing(tc.failing)
			}
			d := newLayDynamic(t, net, 1)
			d.Update(tc.in)
			resps, err := d.Broadcast(t.Context(), layReq{})
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("Broadcast error %v, want %q", err, tc.err)
			}
			var keys []int
			for m, r := range resps {
				keys = append(keys, m)
				if len(r.Served) != m {
					t.Errorf("layout %d answered %v, want one answer per partition", m, r.Served)
				}
			}
			slices.Sort(keys)
			if !slices.Equal(keys, tc.keys) {
				t.Fatalf("answers from layouts %v, want %v", keys, tc.keys)
			}
			hits, _, _ := net.snapshot()
			for _, in := range tc.in {
				want := 0
				if slices.Contains(tc.called, layoutOf(in.Addr)) {
					want = 1
				}
				if hits[in.Addr] != want {
					t.Errorf("%s got %d calls, want %d", in.Addr, hits[in.Addr], want)
				}
			}
			for _, l := range d.Layouts() {
				want := uint64(0)
				if slices.Contains(tc.called, l.Partitions) {
					want = 1
				}
				if l.Calls != want {
					t.Errorf("layout %d counts %d calls, want %d", l.Partitions, l.Calls, want)
				}
			}
			net.check(t)
		})
	}
	t.Run("errors.As", func(t *testing.T) {
		t.Parallel()
		net := newLayNet()
		net.setFailing("t0-0")
		d := newLayDynamic(t, net, 1)
		d.Update(insts("t", 3, 1))
		_, err := d.Broadcast(t.Context(), layReq{})
		var le *LayoutError
		if !errors.As(err, &le) || le.Partitions != 3 || !strings.Contains(le.Error(), "t0-0: disk full") {
			t.Fatalf("error %v, want a *LayoutError for layout 3", err)
		}
	})
}

func TestDynamicNoLayout(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   []Instance
		want []string
	}{
		{"empty", nil, []string{"has no layout"}},
		{"incomplete layouts", append(insts("t", 3, 1)[:2], insts("f", 4, 1)[1:]...),
			[]string{"layout of 3 partitions is incomplete, no instance in 2/3", "layout of 4 partitions is incomplete, no instance in 0/4"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			net := newLayNet()
			d := newLayDynamic(t, net, 1)
			d.Update(tc.in)
			for name, call := range map[string]func() error{
				"Call": func() error { _, err := d.Call(t.Context(), layReq{}); return err },
				"CallReport": func() error {
					_, rep, err := d.CallReport(t.Context(), layReq{})
					if rep == nil || rep.Layout != 0 || rep.Report != nil {
						t.Errorf("report %+v, want no layout", rep)
					}
					return err
				},
				"Go":        func() error { _, err := d.Go(t.Context(), layReq{}).Wait(); return err },
				"Broadcast": func() error { _, err := d.Broadcast(t.Context(), layReq{}); return err },
			} {
				err := call()
				if !errors.Is(err, ErrNoChannel) {
					t.Errorf("%s: error %v, want ErrNoChannel", name, err)
					continue
				}
				for _, w := range tc.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("%s: error %q does not say %q", name, err, w)
					}
				}
			}
			if d.Capacity() != 0 {
				t.Errorf("Capacity %d, want 0", d.Capacity())
			}
			if hits, _, _ := net.snapshot(); len(hits) != 0 {
				t.Errorf("calls were sent: %v", hits)
			}
		})
	}
}

func TestDynamicWatchAndClose(t *testing.T) {
	t.Parallel()
	net := newLayNet()
	d := newLayDynamic(t, net, 3)
	src := NewSettable(insts("t", 3, 1))
	stop := d.Watch(src)
	defer stop()
	if l := d.Layouts(); len(l) != 1 || !l[0].Complete || l[0].Instances != 3 {
		t.Fatalf("Layouts %+v after Watch", l)
	}
	src.Set(append(insts("t", 3, 1), insts("f", 4, 1)...))
	if got := capacities(d); !mapsEqualInt(got, map[int]int{3: 1, 4: 1}) {
		t.Fatalf("capacities %v after Set", got)
	}
	if _, err := d.Go(t.Context(), layReq{Slots: []int{1, 16000}}).Wait(); err != nil {
		t.Fatal(err)
	}
	// Bad tags are skipped; the rest applies.
	src.Set(append(insts("t", 3, 1), Instance{Addr: "x", Tag: "5/4"}))
	if got := capacities(d); !mapsEqualInt(got, map[int]int{3: 1}) {
		t.Fatalf("capacities %v after Set", got)
	}
	d.Close()
	d.Close()
	src.Set(insts("f", 4, 1)) // ignored after Close
	if _, err := d.Call(t.Context(), layReq{}); !errors.Is(err, ErrNoChannel) {
		t.Fatalf("call after Close: %v", err)
	}
	if len(d.Layouts()) != 0 {
		t.Fatalf("Layouts %+v after Close", d.Layouts())
	}
	_, dials, closes := net.snapshot()
	for addr, n := range dials {
		if closes[addr] != n {
			t.Errorf("%s dialed %d, closed %d times", addr, n, closes[addr])
		}
	}
	net.check(t)
}

func TestDynamicNests(t *testing.T) {
	t.Parallel()
	// A DynamicPartition is a Channel and a Capacitor: a Parallel over two
	// of them takes the smaller capacity.
	a, b := newLayDynamic(t, newLayNet(), 1), newLayDynamic(t, newLayNet(), 2)
	a.Update(append(insts("t", 3, 2), insts("f", 4, 1)...))
	b.Update(insts("t", 3, 1))
	p := NewParallel(ParallelOptions[layReq, layResp]{Merger: layMerger})
	p.Add("a", a)
	p.Add("b", b)
	if got := p.Capacity(); got != 1 {
		t.Fatalf("Capacity %d, want min(2+1, 1)", got)
	}
	resp, err := p.Call(t.Context(), layReq{})
	if err != nil || len(resp.Served) < 6 {
		t.Fatalf("Call: %v %v", resp, err)
	}
}
