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
)

const laySlots = 16384

// layReq asks for some slots; nil Slots means every slot (a scan).
type layReq struct{ Slots []int }

// layResp lists the instances that served a call.
type layResp struct{ Served []string }

// layMapper keeps the slots of partition i of m and skips partitions
// without any.
func layMapper(i, m int, r layReq) (layReq, error) {
	if r.Slots == nil {
		return r, nil
	}
	var out []int
	for _, s := range r.Slots {
		if PartitionOf(s, m, laySlots) == i {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return layReq{}, ErrSkip
	}
	return layReq{Slots: out}, nil
}

func layMerger(acc layResp, _ int, sub layResp) (layResp, MergeResult) {
	acc.Served = append(acc.Served, sub.Served...)
	return acc, MergeOK
}

func layParallel(int) ParallelOptions[layReq, layResp] {
	return ParallelOptions[layReq, layResp]{Mapper: layMapper, Merger: layMerger, FailLimit: 1}
}

// layNet is a fake network: it dials in-memory instances that check they
// get only the slots of their partition and are never called once closed.
type layNet struct {
	mu      sync.Mutex
	hits    map[string]int
	dials   map[string]int
	closes  map[string]int
	faults  []string // what went wrong inside the fake
	failing map[string]bool
}

func newLayNet() *layNet {
	return &layNet{hits: map[string]int{}, dials: map[string]int{}, closes: map[string]int{}, failing: map[string]bool{}}
}

func (n *layNet) fault(format string, args ...any) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.faults = append(n.faults, fmt.Sprintf(format, args...))
}

func (n *layNet) setFailing(addr string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.failing[addr] = true
}

func (n *layNet) dial(in Instance) (Channel[layReq, layResp], func(), error) {
	if strings.HasPrefix(in.Addr, "undialable") {
		return nil, nil, errors.New("connection refused")
	}
	n.mu.Lock()
	n.dials[in.Addr]++
	n.mu.Unlock()
	pn, m, err := ParseTag(in.Tag)
	if err != nil {
		return nil, nil, err
	}
	var closed atomic.Bool
	ch := Func[layReq, layResp](func(ctx context.Context, r layReq) (layResp, error) {
		if closed.Load() {
			n.fault("%s called after close", in.Addr)
			return layResp{}, fmt.Errorf("%s: closed", in.Addr)
		}
		for _, s := range r.Slots {
			if PartitionOf(s, m, laySlots) != pn {
				n.fault("%s (%s) got slot %d", in.Addr, in.Tag, s)
			}
		}
		n.mu.Lock()
		n.hits[in.Addr]++
		fail := n.failing[in.Addr]
		n.mu.Unlock()
		if fail {
			return layResp{}, fmt.Errorf("%s: disk full", in.Addr)
		}
		return layResp{Served: []string{in.Addr}}, nil
	})
	closeFn := func() {
		if closed.Swap(true) {
			n.fault("%s closed twice", in.Addr)
		}
		n.mu.Lock()
		n.closes[in.Addr]++
		n.mu.Unlock()
	}
	return ch, closeFn, nil
}

func (n *layNet) snapshot() (hits, dials, closes map[string]int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return copyMap(n.hits), copyMap(n.dials), copyMap(n.closes)
}

func (n *layNet) check(t *testing.T) {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, f := range n.faults {
		t.Error(f)
	}
}

func copyMap(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// insts makes instances "<prefix><n>-<k>" tagged n/m, k per partition.
func insts(prefix string, m, perPartition int) []Instance {
	var out []Instance
	for n := range m {
		for k := range perPartition {
			out = append(out, Instance{Addr: fmt.Sprintf("%s%d-%d", prefix, n, k), Tag: fmt.Sprintf("%d/%d", n, m), Weight: 1})
		}
	}
	return out
}

func newLayPartition(t *testing.T, net *layNet, m int, o PartitionOptions[layReq, layResp]) *Partition[layReq, layResp] {
	t.Helper()
	o.Partitions, o.Dial, o.Parallel = m, net.dial, layParallel(m)
	if o.OnError == nil {
		o.OnError = func(err error) { t.Logf("OnError: %v", err) }
	}
	p, err := NewPartition(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// slotsOf returns one slot of each listed partition of m.
func slotsOf(m int, parts ...int) []int {
	var out []int
	for _, n := range parts {
		s, e := PartitionRange(n, m, laySlots)
		out = append(out, (s+e)/2)
	}
	return out
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func TestPartitionRangeAndOf(t *testing.T) {
	t.Parallel()
	for m := 1; m <= 64; m++ {
		t.Run(fmt.Sprint("m=", m), func(t *testing.T) {
			t.Parallel()
			next := 0 // the ranges tile [0, total) in order
			for n := range m {
				s, e := PartitionRange(n, m, laySlots)
				if s != next || e < s {
					t.Fatalf("PartitionRange(%d, %d) = [%d, %d), want start %d", n, m, s, e, next)
				}
				next = e
			}
			if next != laySlots {
				t.Fatalf("ranges of %d end at %d, want %d", m, next, laySlots)
			}
			for slot := range laySlots {
				n := PartitionOf(slot, m, laySlots)
				if n < 0 || n >= m {
					t.Fatalf("PartitionOf(%d, %d) = %d, out of [0, %d)", slot, m, n, m)
				}
				if s, e := PartitionRange(n, m, laySlots); slot < s || slot >= e {
					t.Fatalf("PartitionOf(%d, %d) = %d, whose range is [%d, %d)", slot, m, n, s, e)
				}
			}
		})
	}
	t.Run("small totals", func(t *testing.T) {
		t.Parallel()
		for total := 1; total <= 40; total++ {
			for m := 1; m <= 50; m++ {
				for slot := range total {
					n := PartitionOf(slot, m, total)
					if s, e := PartitionRange(n, m, total); slot < s || slot >= e {
						t.Fatalf("PartitionOf(%d, %d, %d) = %d, whose range is [%d, %d)", slot, m, total, n, s, e)
					}
				}
			}
		}
	})
	t.Run("naming tags", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct{ n, m, start, end int }{
			{0, 1, 0, 16384}, {0, 3, 0, 5461}, {1, 3, 5461, 10922}, {2, 3, 10922, 16384}, {3, 4, 12288, 16384},
		} {
			if s, e := PartitionRange(tc.n, tc.m, laySlots); s != tc.start || e != tc.end {
				t.Errorf("PartitionRange(%d, %d) = [%d, %d), want [%d, %d)", tc.n, tc.m, s, e, tc.start, tc.end)
			}
		}
	})
	t.Run("panics", func(t *testing.T) {
		t.Parallel()
		for name, f := range map[string]func(){
			"range m=0":     func() { PartitionRange(0, 0, 10) },
			"range n=m":     func() { PartitionRange(3, 3, 10) },
			"of slot=total": func() { PartitionOf(10, 2, 10) },
			"of slot<0":     func() { PartitionOf(-1, 2, 10) },
			"of m=0":        func() { PartitionOf(1, 0, 10) },
		} {
			func() {
				defer func() {
					if recover() == nil {
						t.Errorf("%s: no panic", name)
					}
				}()
				f()
			}()
		}
	})
}

func TestNewPartitionErrors(t *testing.T) {
	t.Parallel()
	net := newLayNet()
	for _, tc := range []struct {
		name string
		o    PartitionOptions[layReq, layResp]
		want string
	}{
		{"no partitions", PartitionOptions[layReq, layResp]{Dial: net.dial}, "Partitions is 0"},
		{"no dial", PartitionOptions[layReq, layResp]{Partitions: 3}, "no Dial"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := NewPartition(tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewPartition: %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestPartitionRoutes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		slots []int
		want  []int // partitions that must be called
	}{
		{"one slot per partition", slotsOf(3, 0, 1, 2), []int{0, 1, 2}},
		{"partition 1 only", slotsOf(3, 1), []int{1}},
		{"edges", []int{0, 5460, 5461, 16383}, []int{0, 1, 2}},
		{"scan", nil, []int{0, 1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			net := newLayNet()
			p := newLayPartition(t, net, 3, PartitionOptions[layReq, layResp]{})
			in := append(insts("p", 3, 2), Instance{Addr: "other", Tag: "0/4"}, Instance{Addr: "whole"})
			p.Update(in)
			if got := len(p.Instances()); got != 6 {
				t.Fatalf("Instances: %d, want 6 (other layouts ignored): %v", got, p.Instances())
			}
			resp, rep, err := p.CallReport(t.Context(), layReq{Slots: tc.slots})
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Subs) != 3 {
				t.Fatalf("report has %d subs, want 3", len(rep.Subs))
			}
			var called []int
			for n, s := range rep.Subs {
				if want := fmt.Sprintf("%d/3", n); s.Name != want {
					t.Errorf("sub %d named %q, want %q", n, s.Name, want)
				}
				if !s.Skipped {
					called = append(called, n)
				}
			}
			if !slices.Equal(called, tc.want) {
				t.Errorf("called partitions %v, want %v", called, tc.want)
			}
			if len(resp.Served) != len(tc.want) {
				t.Errorf("served by %v, want one instance of each of %v", resp.Served, tc.want)
			}
			for _, addr := range resp.Served {
				var n, k int
				if _, err := fmt.Sscanf(addr, "p%d-%d", &n, &k); err != nil || !slices.Contains(tc.want, n) {
					t.Errorf("served by %s, not an instance of partitions %v", addr, tc.want)
				}
			}
			net.check(t)
		})
	}
}

func TestPartitionIncomplete(t *testing.T) {
	t.Parallel()
	net := newLayNet()
	p := newLayPartition(t, net, 3, PartitionOptions[layReq, layResp]{})
	var in []Instance
	for _, x := range insts("p", 3, 1) {
		if x.Tag != "1/3" {
			in = append(in, x)
		}
	}
	p.Update(in)
	if p.Complete() || p.Capacity() != 0 || p.Partitions() != 3 {
		t.Fatalf("Complete %v Capacity %d Partitions %d, want false 0 3", p.Complete(), p.Capacity(), p.Partitions())
	}
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"Call", func() error { _, err := p.Call(t.Context(), layReq{Slots: slotsOf(3, 0)}); return err }},
		{"CallReport", func() error {
			_, rep, err := p.CallReport(t.Context(), layReq{})
			if !slices.Equal(rep.Failed, []int{1}) {
				t.Errorf("report Failed %v, want [1]", rep.Failed)
			}
			return err
		}},
		{"Go", func() error { _, err := p.Go(t.Context(), layReq{}).Wait(); return err }},
		{"Broadcast", func() error { _, err := p.Broadcast(t.Context(), layReq{}); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if !errors.Is(err, ErrNoChannel) || !strings.Contains(err.Error(), "1/3") {
				t.Fatalf("error %v, want ErrNoChannel naming 1/3", err)
			}
		})
	}
	if hits, _, _ := net.snapshot(); len(hits) != 0 {
		t.Errorf("an incomplete layout sent calls: %v", hits)
	}
	p.Update(insts("p", 3, 1))
	if !p.Complete() || p.Capacity() != 1 {
		t.Fatalf("after adding 1/3: Complete %v Capacity %d", p.Complete(), p.Capacity())
	}
	if _, err := p.Call(t.Context(), layReq{}); err != nil {
		t.Fatal(err)
	}
}

func TestPartitionCapacityAndWeights(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   []Instance
		want int
	}{
		{"empty", nil, 0},
		{"default weight", insts("p", 2, 1), 1},
		{"sum within a partition, min across", []Instance{
			{Addr: "a", Tag: "0/2", Weight: 2}, {Addr: "b", Tag: "0/2", Weight: 3}, {Addr: "c", Tag: "1/2", Weight: 4},
		}, 4},
		{"weight 0 counts 1", []Instance{{Addr: "a", Tag: "0/2"}, {Addr: "c", Tag: "1/2", Weight: 4}}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := newLayPartition(t, newLayNet(), 2, PartitionOptions[layReq, layResp]{})
			p.Update(tc.in)
			if got := p.Capacity(); got != tc.want {
				t.Fatalf("Capacity %d, want %d", got, tc.want)
			}
		})
	}
	t.Run("weight change keeps the channel", func(t *testing.T) {
		t.Parallel()
		net := newLayNet()
		p := newLayPartition(t, net, 2, PartitionOptions[layReq, layResp]{})
		p.Update([]Instance{{Addr: "a", Tag: "0/2", Weight: 2}, {Addr: "b", Tag: "1/2", Weight: 5}})
		if got := p.Capacity(); got != 2 {
			t.Fatalf("Capacity %d, want 2", got)
		}
		p.Update([]Instance{{Addr: "a", Tag: "0/2", Weight: 7}, {Addr: "b", Tag: "1/2", Weight: 5}})
		if got := p.Capacity(); got != 5 {
			t.Fatalf("Capacity after reweighting %d, want 5", got)
		}
		if got := p.Instances(); !slices.Equal(got, []Instance{{"a", "0/2", 7}, {"b", "1/2", 5}}) {
			t.Fatalf("Instances %v", got)
		}
		if _, err := p.Call(t.Context(), layReq{}); err != nil {
			t.Fatal(err)
		}
		_, dials, closes := net.snapshot()
		if dials["a"] != 1 || len(closes) != 0 {
			t.Fatalf("reweighting redialed or closed: dials %v closes %v", dials, closes)
		}
		p.Close()
		if _, _, closes := net.snapshot(); closes["a"] != 1 || closes["b"] != 1 {
			t.Fatalf("closes after Close %v, want a and b once", closes)
		}
		net.check(t)
	})
}

func TestPartitionUpdate(t *testing.T) {
	t.Parallel()
	t.Run("dial errors and bad tags are skipped", func(t *testing.T) {
		t.Parallel()
		var mu sync.Mutex
		var reported []string
		p := newLayPartition(t, newLayNet(), 2, PartitionOptions[layReq, layResp]{OnError: func(err error) {
			mu.Lock()
			defer mu.Unlock()
			reported = append(reported, err.Error())
		}})
		p.Update([]Instance{{Addr: "a", Tag: "0/2"}, {Addr: "undialable", Tag: "1/2"}, {Addr: "x", Tag: "2/2"}})
		if got := p.Instances(); !slices.Equal(got, []Instance{{"a", "0/2", 1}}) {
			t.Fatalf("Instances %v", got)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(reported) != 2 || !strings.Contains(strings.Join(reported, "\n"), "undialable 1/2: dial: connection refused") ||
			!strings.Contains(strings.Join(reported, "\n"), `"2/2"`) {
			t.Fatalf("reported %q", reported)
		}
	})
	t.Run("leaving instances are closed once", func(t *testing.T) {
		t.Parallel()
		net := newLayNet()
		p := newLayPartition(t, net, 2, PartitionOptions[layReq, layResp]{})
		all := insts("p", 2, 2)
		p.Update(all)
		p.Update(all[1:]) // p0-0 leaves
		p.Update(all[1:]) // no change
		_, dials, closes := net.snapshot()
		if !maps1(closes, "p0-0") || dials["p0-1"] != 1 {
			t.Fatalf("closes %v dials %v, want p0-0 closed, nothing redialed", closes, dials)
		}
		p.Update(all) // p0-0 comes back: dialed again
		if _, dials, _ := net.snapshot(); dials["p0-0"] != 2 {
			t.Fatalf("p0-0 dialed %d times, want 2", dials["p0-0"])
		}
		for range 20 {
			if _, err := p.Call(t.Context(), layReq{}); err != nil {
				t.Fatal(err)
			}
		}
		net.check(t)
	})
	t.Run("while calls run", func(t *testing.T) {
		t.Parallel()
		net := newLayNet()
		p := newLayPartition(t, net, 3, PartitionOptions[layReq, layResp]{
			Selective: SelectiveOptions[layReq]{Balancer: WeightedRandom()},
		})
		a, b := insts("a", 3, 2), insts("b", 3, 1)
		p.Update(a)
		var stop atomic.Bool
		var calls, failed atomic.Int64
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for !stop.Load() {
					calls.Add(1)
					resp, err := p.Call(context.Background(), layReq{Slots: slotsOf(3, 0, 1, 2)})
					if err != nil || len(resp.Served) != 3 {
						failed.Add(1)
						net.fault("call: %v %v", resp, err)
					}
				}
			})
		}
		// Disjoint sets, mixed sets, reweighted sets: each keeps every
		// partition served, so no call may fail.
		heavy := slices.Clone(a)
		for i := range heavy {
			heavy[i].Weight = 1 + i
		}
		sets := [][]Instance{b, a, append(slices.Clone(a), b...), b, heavy, a}
		for i := range 60 {
			p.Update(sets[i%len(sets)])
		}
		stop.Store(true)
		wg.Wait()
		if failed.Load() > 0 {
			t.Errorf("%d of %d calls failed", failed.Load(), calls.Load())
		}
		if got, want := p.Instances(), a; !slices.Equal(got, want) {
			t.Errorf("Instances %v, want %v", got, want)
		}
		p.Close()
		_, dials, closes := net.snapshot()
		for addr, n := range dials {
			if closes[addr] != n {
				t.Errorf("%s dialed %d times, closed %d", addr, n, closes[addr])
			}
		}
		net.check(t)
	})
}

func maps1(m map[string]int, keys ...string) bool {
	if len(m) != len(keys) {
		return false
	}
	for _, k := range keys {
		if m[k] != 1 {
			return false
		}
	}
	return true
}

func TestPartitionBroadcast(t *testing.T) {
	t.Parallel()
	t.Run("reaches every instance", func(t *testing.T) {
		t.Parallel()
		net := newLayNet()
		p := newLayPartition(t, net, 3, PartitionOptions[layReq, layResp]{})
		all := insts("p", 3, 3)
		p.Update(all)
		if _, err := p.Broadcast(t.Context(), layReq{}); err != nil {
			t.Fatal(err)
		}
		hits, _, _ := net.snapshot()
		for _, in := range all {
			if hits[in.Addr] != 1 {
				t.Errorf("%s got %d calls, want 1", in.Addr, hits[in.Addr])
			}
		}
		net.check(t)
	})
	t.Run("mapper applies", func(t *testing.T) {
		t.Parallel()
		net := newLayNet()
		p := newLayPartition(t, net, 3, PartitionOptions[layReq, layResp]{})
		p.Update(insts("p", 3, 2))
		if _, err := p.Broadcast(t.Context(), layReq{Slots: slotsOf(3, 2)}); err != nil {
			t.Fatal(err)
		}
		if hits, _, _ := net.snapshot(); !maps1(hits, "p2-0", "p2-1") {
			t.Errorf("hits %v, want p2-0 and p2-1 once", hits)
		}
		net.check(t)
	})
	t.Run("one failing instance fails it", func(t *testing.T) {
		t.Parallel()
		net := newLayNet()
		p := newLayPartition(t, net, 2, PartitionOptions[layReq, layResp]{})
		p.Update(insts("p", 2, 2))
		net.setFailing("p1-1")
		_, err := p.Broadcast(t.Context(), layReq{})
		if err == nil || !strings.Contains(err.Error(), "p1-1") || !strings.Contains(err.Error(), "1/2") {
			t.Fatalf("error %v, want one naming 1/2 and p1-1", err)
		}
	})
}

func TestPartitionClose(t *testing.T) {
	t.Parallel()
	net := newLayNet()
	p := newLayPartition(t, net, 2, PartitionOptions[layReq, layResp]{})
	src := NewSettable(insts("p", 2, 1))
	stop := p.Watch(src)
	defer stop()
	if !p.Complete() {
		t.Fatal("Watch did not load the source's list")
	}
	src.Set(insts("p", 2, 2))
	if got := len(p.Instances()); got != 4 {
		t.Fatalf("%d instances after Set, want 4", got)
	}
	// A call in flight keeps its instances open until it returns.
	entered, release := make(chan struct{}), make(chan struct{})
	p2, err := NewPartition(PartitionOptions[layReq, layResp]{
		Partitions: 1,
		Dial: func(in Instance) (Channel[layReq, layResp], func(), error) {
			ch, closeFn, err := net.dial(in)
			blocking := Func[layReq, layResp](func(ctx context.Context, r layReq) (layResp, error) {
				close(entered)
				<-release
				return ch.Call(ctx, r)
			})
			return blocking, closeFn, err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	p2.Update([]Instance{{Addr: "slow"}})
	f := p2.Go(t.Context(), layReq{})
	<-entered
	p2.Close()
	if _, _, closes := net.snapshot(); closes["slow"] != 0 {
		t.Fatal("closed an instance while a call ran on it")
	}
	close(release)
	if _, err := f.Wait(); err != nil {
		t.Fatalf("the running call failed: %v", err)
	}
	if _, _, closes := net.snapshot(); closes["slow"] != 1 {
		t.Fatal("the instance was not closed after its call")
	}

	p.Close()
	p.Close()
	_, dials, closes := net.snapshot()
	for addr := range dials {
		if closes[addr] != 1 {
			t.Errorf("%s closed %d times, want 1", addr, closes[addr])
		}
	}
	src.Set(insts("q", 2, 1)) // Update after Close does nothing
	if _, err := p.Call(t.Context(), layReq{}); !errors.Is(err, ErrNoChannel) || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("call after Close: %v, want ErrNoChannel", err)
	}
	if p.Complete() || p.Capacity() != 0 || len(p.Instances()) != 0 {
		t.Fatal("a closed partition channel still has instances")
	}
	net.check(t)
}

func TestPartitionNests(t *testing.T) {
	t.Parallel()
	// A Partition is a Channel and a Capacitor: a Selective over two
	// Partitions (two replicas of a layout) adds their capacities.
	net := newLayNet()
	a := newLayPartition(t, net, 2, PartitionOptions[layReq, layResp]{})
	b := newLayPartition(t, net, 2, PartitionOptions[layReq, layResp]{})
	a.Update(insts("a", 2, 2))
	b.Update(insts("b", 2, 1))
	s := NewSelective[layReq, layResp](SelectiveOptions[layReq]{})
	for name, p := range map[string]*Partition[layReq, layResp]{"a": a, "b": b} {
		if err := s.Add(name, p, 1); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.Capacity(); got != 3 {
		t.Fatalf("Capacity %d, want 2+1", got)
	}
	resp, err := s.Call(t.Context(), layReq{})
	if err != nil || len(resp.Served) != 2 {
		t.Fatalf("Call: %v, %v", resp, err)
	}
}
