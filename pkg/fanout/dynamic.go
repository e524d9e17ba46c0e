package fanout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// DynamicOptions configures a DynamicPartition.
type DynamicOptions[Req, Resp any] struct {
	// Dial makes the channel of each instance. Required.
	Dial Dialer[Req, Resp]
	// Selective configures the Selective channel of each partition of
	// every layout.
	Selective SelectiveOptions[Req]
	// Parallel returns the options of the layout of m partitions (its
	// Mapper depends on m). Nil: zero options.
	Parallel func(m int) ParallelOptions[Req, Resp]
	// Rand returns a number in [0, 1) to choose a layout; it is called
	// from concurrent calls. Nil: math/rand/v2's Float64.
	Rand func() float64
	// OnError receives what Update skips (see PartitionOptions.OnError).
	// Nil logs with slog.Default().Warn.
	OnError func(error)
}

// DynamicPartition holds several layouts at once, one Partition per
// number of partitions M found in the instances' tags (bRPC's
// DynamicPartitionChannel), e.g. while data moves from 3 partitions to 4.
// Each call goes to ONE complete layout, chosen with probability
// proportional to its capacity; Broadcast (writes) goes to every complete
// layout.
//
// Capacity: an instance is its weight, a partition the sum of its
// instances', a layout the minimum of its partitions' (0 when one is
// empty, and then it gets no calls).
type DynamicPartition[Req, Resp any] struct {
	o       DynamicOptions[Req, Resp]
	rand    func() float64
	onError func(error)

	layouts atomic.Pointer[[]*dynLayout[Req, Resp]] // sorted by M

	mu     sync.Mutex // serialises Update and Close
	closed bool
}

type dynLayout[Req, Resp any] struct {
	m     int
	p     *Partition[Req, Resp]
	calls atomic.Uint64
}

// DynamicReport is the report of one DynamicPartition call.
type DynamicReport struct {
	// Layout is the M of the layout the call went to, 0 when none was
	// chosen.
	Layout int
	// Report is that layout's report; nil when no layout was chosen.
	Report *Report
}

// LayoutInfo describes one layout of a DynamicPartition.
type LayoutInfo struct {
	Partitions int    // M
	Capacity   int    // 0 unless Complete
	Complete   bool   // every partition has an instance
	Instances  int    // number of instances
	Calls      uint64 // calls sent to the layout so far (Broadcast included)
}

// NewDynamicPartition returns a DynamicPartition without layouts; add
// instances with Update or Watch.
func NewDynamicPartition[Req, Resp any](o DynamicOptions[Req, Resp]) *DynamicPartition[Req, Resp] {
	d := &DynamicPartition[Req, Resp]{o: o, rand: o.Rand, onError: o.OnError}
	if d.rand == nil {
		d.rand = rand.Float64
	}
	if d.onError == nil {
		d.onError = func(err error) { slog.Default().Warn("fanout: dynamic partition channel", "err", err) }
	}
	d.layouts.Store(&[]*dynLayout[Req, Resp]{})
	return d
}

func (d *DynamicPartition[Req, Resp]) list() []*dynLayout[Req, Resp] { return *d.layouts.Load() }

// Update makes instances the instances of all layouts: it creates a layout
// for each M seen in the tags, updates the existing ones (see
// Partition.Update), and removes (closes) a layout whose instances all
// left. Instances with a bad tag are reported to OnError and skipped. Safe
// while calls run; after Close it does nothing.
func (d *DynamicPartition[Req, Resp]) Update(instances []Instance) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	if d.o.Dial == nil {
		d.onError(errors.New("fanout: dynamic partition channel: no Dial"))
		return
	}
	byM := map[int][]Instance{}
	for _, in := range instances {
		_, m, err := ParseTag(in.Tag)
		if err != nil {
			d.onError(fmt.Errorf("fanout: instance %s: %w", in.Addr, err))
			continue
		}
		byM[m] = append(byM[m], in)
	}
	old := d.list()
	var next []*dynLayout[Req, Resp]
	for _, l := range old {
		if ins, ok := byM[l.m]; ok {
			l.p.Update(ins)
			delete(byM, l.m)
			next = append(next, l)
		} else {
			// Calls already running on it finish; its channels close after.
			l.p.Close()
		}
	}
	for m, ins := range byM {
		var po ParallelOptions[Req, Resp]
		if d.o.Parallel != nil {
			po = d.o.Parallel(m)
		}
		p, err := NewPartition(PartitionOptions[Req, Resp]{
			Partitions: m, Dial: d.o.Dial, Selective: d.o.Selective, Parallel: po, OnError: d.onError,
		})
		if err != nil { // m >= 1 and Dial set: cannot happen
			d.onError(err)
			continue
		}
		p.Update(ins)
		next = append(next, &dynLayout[Req, Resp]{m: m, p: p})
	}
	slices.SortFunc(next, func(a, b *dynLayout[Req, Resp]) int { return a.m - b.m })
	d.layouts.Store(&next)
}

// Watch feeds the layouts from src (see Update) until stop is called.
func (d *DynamicPartition[Req, Resp]) Watch(src Source) (stop func()) {
	return src.Subscribe(d.Update)
}

// pinned is one layout's generation as a call saw it.
type pinned[Req, Resp any] struct {
	l   *dynLayout[Req, Resp]
	g   *layoutGen[Req, Resp]
	cap int
}

// pin takes the current generation of every layout; the caller releases
// them (release).
func (d *DynamicPartition[Req, Resp]) pin() []pinned[Req, Resp] {
	ls := d.list()
	out := make([]pinned[Req, Resp], len(ls))
	for i, l := range ls {
		g := l.p.acquire()
		out[i] = pinned[Req, Resp]{l: l, g: g, cap: g.capacity()}
	}
	return out
}

func release[Req, Resp any](ps []pinned[Req, Resp]) {
	for _, p := range ps {
		p.g.release()
	}
}

// noLayout is the error of a call without a complete layout.
func noLayout[Req, Resp any](ps []pinned[Req, Resp]) error {
	if len(ps) == 0 {
		return fmt.Errorf("fanout: dynamic partition channel has no layout: %w", ErrNoChannel)
	}
	why := make([]string, len(ps))
	for i, p := range ps {
		if err := p.g.usable(); err != nil {
			why[i] = strings.TrimSuffix(strings.TrimPrefix(err.Error(), "fanout: "), ": "+ErrNoChannel.Error())
		} else {
			why[i] = fmt.Sprintf("layout of %d partitions has capacity 0", p.l.m)
		}
	}
	return fmt.Errorf("fanout: no complete layout (%s): %w", strings.Join(why, "; "), ErrNoChannel)
}

// choose picks a complete layout with probability proportional to its
// capacity, or -1.
func (d *DynamicPartition[Req, Resp]) choose(ps []pinned[Req, Resp]) int {
	total := 0
	for _, p := range ps {
		total += p.cap
	}
	if total == 0 {
		return -1
	}
	x := int(d.rand() * float64(total))
	x = min(max(x, 0), total-1)
	for i, p := range ps {
		if x < p.cap {
			return i
		}
		x -= p.cap
	}
	return len(ps) - 1 // not reached
}

// Call sends req to one complete layout (see Partition.Call), chosen with
// probability proportional to its capacity. Without a complete layout it
// fails with an error wrapping ErrNoChannel that says what each layout
// lacks.
func (d *DynamicPartition[Req, Resp]) Call(ctx context.Context, req Req) (Resp, error) {
	resp, _, err := d.CallReport(ctx, req)
	return resp, err
}

// CallReport is Call, and tells which layout the call went to and what
// happened there.
func (d *DynamicPartition[Req, Resp]) CallReport(ctx context.Context, req Req) (Resp, *DynamicReport, error) {
	ps := d.pin()
	defer release(ps)
	i := d.choose(ps)
	if i < 0 {
		var zero Resp
		return zero, &DynamicReport{}, noLayout(ps)
	}
	ps[i].l.calls.Add(1)
	resp, rep, err := ps[i].g.callReport(ctx, req)
	return resp, &DynamicReport{Layout: ps[i].l.m, Report: rep}, err
}

// Go is Call in a goroutine.
func (d *DynamicPartition[Req, Resp]) Go(ctx context.Context, req Req) *Future[Resp] {
	return Go[Req, Resp](ctx, d, req)
}

// Broadcast sends req to every complete layout at once (Partition.Broadcast:
// every instance of every partition) and returns their answers by M. It
// succeeds only when every complete layout does; otherwise the error names
// the failed layouts and the map holds the answers of the others. Without a
// complete layout it fails with an error wrapping ErrNoChannel.
func (d *DynamicPartition[Req, Resp]) Broadcast(ctx context.Context, req Req) (map[int]Resp, error) {
	ps := d.pin()
	defer release(ps)
	var use []pinned[Req, Resp]
	for _, p := range ps {
		if p.g.complete() {
			use = append(use, p)
		}
	}
	if len(use) == 0 {
		return map[int]Resp{}, noLayout(ps)
	}
	resps := make([]Resp, len(use))
	errs := make([]error, len(use))
	var wg sync.WaitGroup
	for i, p := range use {
		p.l.calls.Add(1)
		wg.Go(func() { resps[i], errs[i] = p.g.broadcast(ctx, req) })
	}
	wg.Wait()
	out := make(map[int]Resp, len(use))
	var failed []string
	var ferrs []error
	for i, p := range use {
		if errs[i] != nil {
			failed = append(failed, strconv.Itoa(p.l.m))
			ferrs = append(ferrs, &LayoutError{Partitions: p.l.m, Err: errs[i]})
			continue
		}
		out[p.l.m] = resps[i]
	}
	if len(ferrs) > 0 {
		return out, fmt.Errorf("fanout: broadcast failed on %d of %d layouts (%s): %w",
			len(ferrs), len(use), strings.Join(failed, ", "), errors.Join(ferrs...))
	}
	return out, nil
}

// LayoutError is the failure of one layout in DynamicPartition.Broadcast.
type LayoutError struct {
	Partitions int // M
	Err        error
}

func (e *LayoutError) Error() string {
	return "layout " + strconv.Itoa(e.Partitions) + ": " + e.Err.Error()
}

func (e *LayoutError) Unwrap() error { return e.Err }

// Layouts describes the layouts, by number of partitions.
func (d *DynamicPartition[Req, Resp]) Layouts() []LayoutInfo {
	ps := d.pin()
	defer release(ps)
	out := make([]LayoutInfo, len(ps))
	for i, p := range ps {
		out[i] = LayoutInfo{
			Partitions: p.l.m,
			Capacity:   p.cap,
			Complete:   p.g.complete(),
			Instances:  p.g.instances(),
			Calls:      p.l.calls.Load(),
		}
	}
	return out
}

// Capacity implements Capacitor: the sum of the layouts' capacities (an
// incomplete layout counts 0).
func (d *DynamicPartition[Req, Resp]) Capacity() int {
	ps := d.pin()
	defer release(ps)
	c := 0
	for _, p := range ps {
		c += p.cap
	}
	return c
}

// Close removes every layout (see Partition.Close); calls fail from now
// on and Update does nothing.
func (d *DynamicPartition[Req, Resp]) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	d.closed = true
	for _, l := range d.list() {
		l.p.Close()
	}
	d.layouts.Store(&[]*dynLayout[Req, Resp]{})
}
