package fanout

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// PartitionRange returns the slots [start, end) of partition n of m when
// total slots are split evenly: [n*total/m, (n+1)*total/m). With total
// 16384 it is what the naming tag "n/m" means. It panics unless
// 0 <= n < m and total >= 0.
func PartitionRange(n, m, total int) (start, end int) {
	if m < 1 || n < 0 || n >= m || total < 0 {
		panic(fmt.Sprintf("fanout: PartitionRange(%d, %d, %d): want 0 <= n < m, total >= 0", n, m, total))
	}
	return n * total / m, (n + 1) * total / m
}

// PartitionOf returns the partition of m that holds slot when total slots
// are split by PartitionRange: the n with start <= slot < end. It panics
// unless m >= 1 and 0 <= slot < total.
func PartitionOf(slot, m, total int) int {
	if m < 1 || slot < 0 || slot >= total {
		panic(fmt.Sprintf("fanout: PartitionOf(%d, %d, %d): want m >= 1, 0 <= slot < total", slot, m, total))
	}
	// The largest n with n*total/m <= slot, i.e. n*total < (slot+1)*m.
	return ((slot+1)*m - 1) / total
}

// Dialer makes the sub-channel of one instance. close releases it; it is
// called once the instance has left and no call uses the channel anymore.
type Dialer[Req, Resp any] func(in Instance) (ch Channel[Req, Resp], close func(), err error)

// PartitionOptions configures a Partition.
type PartitionOptions[Req, Resp any] struct {
	// Partitions is M: only instances tagged "N/M" join (an untagged
	// instance is "0/1").
	Partitions int
	// Dial makes the channel of each instance. Required.
	Dial Dialer[Req, Resp]
	// Selective configures the Selective channel of each partition.
	Selective SelectiveOptions[Req]
	// Parallel configures the call over the partitions. Its Mapper gets
	// (partition index, M, req), e.g. to keep the keys of partition i and
	// skip the partitions with none; Merger folds the answers. With
	// FailLimit 0 a call fails only when every partition does (the others
	// are a partial result, see Report.Failed); 1 requires every partition.
	Parallel ParallelOptions[Req, Resp]
	// OnError receives what Update skips: instances that fail to dial or
	// carry a bad tag. Nil logs with slog.Default().Warn.
	OnError func(error)
}

// Partition is a Parallel channel whose sub-channels are the M partitions
// of one layout, each a Selective channel over the partition's instances
// (bRPC's PartitionChannel). Sub-channels are named "N/M" in reports, and
// the instances of a partition by their address.
//
// Update changes the instances while calls run: a call uses the instances
// there were when it started, and an instance's channel is closed only once
// it has left and the calls that could use it have ended.
type Partition[Req, Resp any] struct {
	m       int
	o       PartitionOptions[Req, Resp]
	onError func(error)
	names   []string // "N/M"

	cur atomic.Pointer[layoutGen[Req, Resp]]

	mu      sync.Mutex // serialises Update and Close
	members map[instanceKey]*member[Req, Resp]
	closed  bool
}

// member is one instance of the layout.
type member[Req, Resp any] struct {
	in Instance // weight at least 1
	n  int      // its partition
	c  *conn[Req, Resp]
}

// conn is the dialed channel of an instance, shared by the members that
// only differ in weight; it is closed when no live generation holds it.
type conn[Req, Resp any] struct {
	ch    Channel[Req, Resp]
	close func()
	refs  atomic.Int64
}

func (c *conn[Req, Resp]) release() {
	if c.refs.Add(-1) == 0 && c.close != nil {
		c.close()
	}
}

// layoutGen is an immutable view of the layout: what one call uses from
// start to end. It holds a reference on each of its members; the Partition
// holds one on its current generation and every call one on the generation
// it uses.
type layoutGen[Req, Resp any] struct {
	p       *Partition[Req, Resp]
	refs    atomic.Int64
	sels    []*Selective[Req, Resp] // per partition
	members [][]*member[Req, Resp]  // per partition, sorted by address
	par     *Parallel[Req, Resp]    // over sels
	bpar    *Parallel[Req, Resp]    // over sels' Broadcast
	closed  bool
}

// NewPartition returns an empty layout of o.Partitions partitions; add
// instances with Update or Watch.
func NewPartition[Req, Resp any](o PartitionOptions[Req, Resp]) (*Partition[Req, Resp], error) {
	if o.Partitions < 1 {
		return nil, fmt.Errorf("fanout: partition channel: Partitions is %d, want at least 1", o.Partitions)
	}
	if o.Dial == nil {
		return nil, errors.New("fanout: partition channel: no Dial")
	}
	p := &Partition[Req, Resp]{
		m:       o.Partitions,
		o:       o,
		onError: o.OnError,
		names:   make([]string, o.Partitions),
		members: map[instanceKey]*member[Req, Resp]{},
	}
	if p.onError == nil {
		p.onError = func(err error) { slog.Default().Warn("fanout: partition channel", "err", err) }
	}
	for n := range p.names {
		p.names[n] = strconv.Itoa(n) + "/" + strconv.Itoa(p.m)
	}
	p.cur.Store(p.newGen(nil, make([][]*member[Req, Resp], p.m), nil))
	return p, nil
}

// newGen builds a generation from members per partition, reusing the
// Selective of each partition whose members did not change (same[n] true).
func (p *Partition[Req, Resp]) newGen(old *layoutGen[Req, Resp], members [][]*member[Req, Resp], same []bool) *layoutGen[Req, Resp] {
	g := &layoutGen[Req, Resp]{
		p:       p,
		sels:    make([]*Selective[Req, Resp], p.m),
		members: members,
		par:     NewParallel(p.o.Parallel),
		bpar:    NewParallel(p.o.Parallel),
	}
	g.refs.Store(1)
	for n := range p.m {
		if old != nil && same[n] {
			g.sels[n] = old.sels[n]
		} else {
			sel := NewSelective[Req, Resp](p.o.Selective)
			for _, mb := range members[n] {
				if err := sel.Add(mb.in.Addr, mb.c.ch, mb.in.Weight); err != nil {
					p.onError(fmt.Errorf("fanout: partition %s: instance %s: %w", p.names[n], mb.in.Addr, err))
				}
			}
			g.sels[n] = sel
		}
		for _, mb := range members[n] {
			mb.c.refs.Add(1)
		}
		g.par.Add(p.names[n], g.sels[n])
		g.bpar.Add(p.names[n], Func[Req, Resp](g.sels[n].Broadcast))
	}
	return g
}

// acquire returns the current generation with a reference the caller
// must release.
func (p *Partition[Req, Resp]) acquire() *layoutGen[Req, Resp] {
	for {
		g := p.cur.Load()
		r := g.refs.Load()
		if r > 0 && g.refs.CompareAndSwap(r, r+1) {
			return g
		}
		// r == 0: g was replaced and retired meanwhile; load the new one.
	}
}

func (g *layoutGen[Req, Resp]) release() {
	if g.refs.Add(-1) != 0 {
		return
	}
	for _, ms := range g.members {
		for _, mb := range ms {
			mb.c.release()
		}
	}
}

// empty returns the partitions without an instance.
func (g *layoutGen[Req, Resp]) empty() []int {
	var out []int
	for n, ms := range g.members {
		if len(ms) == 0 {
			out = append(out, n)
		}
	}
	return out
}

func (g *layoutGen[Req, Resp]) complete() bool { return !g.closed && len(g.empty()) == 0 }

func (g *layoutGen[Req, Resp]) capacity() int {
	if g.closed {
		return 0
	}
	c := -1
	for n, sel := range g.sels {
		if len(g.members[n]) == 0 {
			return 0
		}
		if sc := sel.Capacity(); c < 0 || sc < c {
			c = sc
		}
	}
	return max(c, 0)
}

func (g *layoutGen[Req, Resp]) instances() int {
	n := 0
	for _, ms := range g.members {
		n += len(ms)
	}
	return n
}

// usable returns nil or why no call can go to g: an error wrapping
// ErrNoChannel naming the empty partitions.
func (g *layoutGen[Req, Resp]) usable() error {
	if g.closed {
		return fmt.Errorf("fanout: partition channel of %d partitions is closed: %w", g.p.m, ErrNoChannel)
	}
	empty := g.empty()
	if len(empty) == 0 {
		return nil
	}
	names := make([]string, len(empty))
	for i, n := range empty {
		names[i] = g.p.names[n]
	}
	return fmt.Errorf("fanout: layout of %d partitions is incomplete, no instance in %s: %w",
		g.p.m, strings.Join(names, ", "), ErrNoChannel)
}

func (g *layoutGen[Req, Resp]) callReport(ctx context.Context, req Req) (Resp, *Report, error) {
	if err := g.usable(); err != nil {
		var zero Resp
		return zero, g.unusableReport(err), err
	}
	return g.par.CallReport(ctx, req)
}

// unusableReport is the report of a call that sent nothing because of err:
// the empty partitions failed with err, the others were skipped.
func (g *layoutGen[Req, Resp]) unusableReport(err error) *Report {
	r := &Report{Subs: make([]SubResult, g.p.m)}
	for n := range r.Subs {
		r.Subs[n] = SubResult{Index: n, Name: g.p.names[n], Skipped: true}
		if g.closed || len(g.members[n]) == 0 {
			r.Subs[n].Skipped, r.Subs[n].Err = false, err
			r.Failed = append(r.Failed, n)
		}
	}
	return r
}

func (g *layoutGen[Req, Resp]) broadcast(ctx context.Context, req Req) (Resp, error) {
	if err := g.usable(); err != nil {
		var zero Resp
		return zero, err
	}
	return g.bpar.Call(ctx, req)
}

// Update makes instances the layout's instances: those tagged "N/M" with
// this layout's M join (dialed with Dial), those absent leave (their
// channel is closed once no call uses it), and weight changes apply.
// Instances are told apart by address and tag; those of another M are
// ignored, and those that fail to dial or carry a bad tag are reported to
// OnError and skipped. Safe while calls run; after Close it does nothing.
func (p *Partition[Req, Resp]) Update(instances []Instance) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	type wanted struct {
		in Instance
		n  int
	}
	want := map[instanceKey]wanted{}
	for _, in := range instances {
		n, m, err := ParseTag(in.Tag)
		if err != nil {
			p.onError(fmt.Errorf("fanout: instance %s: %w", in.Addr, err))
			continue
		}
		if m != p.m {
			continue
		}
		in.Weight = instWeight(in)
		want[keyOf(in)] = wanted{in, n}
	}

	changed := make([]bool, p.m)
	for k, mb := range p.members {
		w, ok := want[k]
		switch {
		case !ok:
			delete(p.members, k)
			changed[mb.n] = true
		case w.in.Weight != mb.in.Weight:
			p.members[k] = &member[Req, Resp]{in: w.in, n: mb.n, c: mb.c}
			changed[mb.n] = true
		}
	}
	for k, w := range want {
		if _, ok := p.members[k]; ok {
			continue
		}
		ch, closeFn, err := p.o.Dial(w.in)
		if err == nil && ch == nil {
			err = errors.New("dialer returned no channel")
		}
		if err != nil {
			p.onError(fmt.Errorf("fanout: instance %s: dial: %w", w.in, err))
			if closeFn != nil {
				closeFn()
			}
			continue
		}
		p.members[k] = &member[Req, Resp]{in: w.in, n: w.n, c: &conn[Req, Resp]{ch: ch, close: closeFn}}
		changed[w.n] = true
	}
	if !slices.Contains(changed, true) {
		return
	}

	members := make([][]*member[Req, Resp], p.m)
	for _, mb := range p.members {
		members[mb.n] = append(members[mb.n], mb)
	}
	for _, ms := range members {
		slices.SortFunc(ms, func(a, b *member[Req, Resp]) int { return cmp.Compare(a.in.Addr, b.in.Addr) })
	}
	same := make([]bool, p.m)
	for n := range same {
		same[n] = !changed[n]
	}
	old := p.cur.Load()
	p.cur.Store(p.newGen(old, members, same))
	old.release()
}

// Watch feeds the layout from src (see Update) until stop is called.
func (p *Partition[Req, Resp]) Watch(src Source) (stop func()) { return src.Subscribe(p.Update) }

// Partitions returns M.
func (p *Partition[Req, Resp]) Partitions() int { return p.m }

// Complete reports whether every partition has at least one instance.
func (p *Partition[Req, Resp]) Complete() bool {
	g := p.acquire()
	defer g.release()
	return g.complete()
}

// Capacity implements Capacitor: the smallest capacity of the partitions'
// Selective channels (the sum of their instances' weights), 0 when a
// partition has no instance.
func (p *Partition[Req, Resp]) Capacity() int {
	g := p.acquire()
	defer g.release()
	return g.capacity()
}

// Call sends req to every partition through the Parallel channel: the
// Mapper makes the sub-request of each partition, whose Selective sends it
// to one of its instances, and the Merger folds the answers. On an
// incomplete layout it fails, sending nothing, with an error wrapping
// ErrNoChannel that names the empty partitions.
func (p *Partition[Req, Resp]) Call(ctx context.Context, req Req) (Resp, error) {
	resp, _, err := p.CallReport(ctx, req)
	return resp, err
}

// CallReport is Call, and tells what happened to each partition's
// sub-call (named "N/M").
func (p *Partition[Req, Resp]) CallReport(ctx context.Context, req Req) (Resp, *Report, error) {
	g := p.acquire()
	defer g.release()
	return g.callReport(ctx, req)
}

// Go is Call in a goroutine.
func (p *Partition[Req, Resp]) Go(ctx context.Context, req Req) *Future[Resp] {
	return Go[Req, Resp](ctx, p, req)
}

// Broadcast is Call, except that each partition sends its sub-request to
// ALL its instances (Selective.Broadcast) and succeeds only when they all
// do: for writes to data every instance of a partition holds.
func (p *Partition[Req, Resp]) Broadcast(ctx context.Context, req Req) (Resp, error) {
	g := p.acquire()
	defer g.release()
	return g.broadcast(ctx, req)
}

// Instances returns the layout's instances (weights at least 1), by
// partition then address.
func (p *Partition[Req, Resp]) Instances() []Instance {
	g := p.acquire()
	defer g.release()
	var out []Instance
	for _, ms := range g.members {
		for _, mb := range ms {
			out = append(out, mb.in)
		}
	}
	return out
}

// Close empties the layout: calls fail from now on with an error wrapping
// ErrNoChannel, and every instance's channel is closed once the calls
// running on it end. Update does nothing after Close.
func (p *Partition[Req, Resp]) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	clear(p.members)
	g := p.newGen(nil, make([][]*member[Req, Resp], p.m), nil)
	g.closed = true
	old := p.cur.Load()
	p.cur.Store(g)
	old.release()
}
