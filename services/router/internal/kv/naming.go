package kv

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/fanout"
	"github.com/slotkv/slotkv/pkg/route"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/topology"
)

// Balancer names accepted by NamingOptions.Balancer (--balancer).
const (
	BalancerRoundRobin = "rr"
	BalancerRandom     = "random"
	BalancerHash       = "hash"
	BalancerLatency    = "latency"
)

// NewBalancer returns the balancer called name ("" is latency).
func NewBalancer(name string) (fanout.Balancer, error) {
	switch name {
	case BalancerRoundRobin:
		return fanout.RoundRobin(), nil
	case BalancerRandom:
		return fanout.WeightedRandom(), nil
	case BalancerHash:
		return fanout.ConsistentHash(0), nil
	case BalancerLatency, "":
		return fanout.LatencyAware(), nil
	}
	return nil, fmt.Errorf("unknown balancer %q (want rr, random, hash or latency)", name)
}

// NamingOptions configures naming-file mode.
type NamingOptions struct {
	// Path of the naming file: `address N/M [weight]` per line.
	Path string
	// Poll is how often the file is checked for changes (fanout default
	// when 0).
	Poll time.Duration
	// Dial opens a connection to a storage instance.
	Dial route.DialFunc
	// Balancer picks an instance of a partition for reads.
	Balancer fanout.Balancer
	// HedgeDelay > 0 sends a backup read to another instance of the
	// partition when the first has not answered within it; HedgeMaxRatio
	// caps backups as a fraction of reads.
	HedgeDelay    time.Duration
	HedgeMaxRatio float64
	// MaxRetries: further attempts of a read on other instances of the
	// partition after an Unavailable answer.
	MaxRetries int
	// CallTimeout is the deadline of a call whose caller set none.
	CallTimeout time.Duration
	Logger      *slog.Logger
	// Observer records the calls to the instances (required).
	Observer *Observer
}

// Naming routes by the layouts of a naming file through two
// fanout.DynamicPartition channels fed by one fanout.FileSource: a strict
// one (FailLimit 1) for writes and whole reads, and a lenient one
// (FailLimit 0) for reads with allow_partial. Both share the connections
// to the instances.
type Naming struct {
	o       NamingOptions
	src     *fanout.FileSource
	strict  *fanout.DynamicPartition[*subReq, *subResp]
	lenient *fanout.DynamicPartition[*subReq, *subResp]
	stops   []func()
	pool    *connPool
}

// OpenNaming reads the naming file and starts watching it. Bad lines are
// logged and skipped; a file that cannot be read is an error.
func OpenNaming(o NamingOptions) (*Naming, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Balancer == nil {
		o.Balancer = fanout.LatencyAware()
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = route.DefaultCallTimeout
	}
	if o.Dial == nil {
		return nil, errors.New("kv: NamingOptions.Dial is required")
	}
	if o.Observer == nil {
		return nil, errors.New("kv: NamingOptions.Observer is required")
	}
	n := &Naming{o: o, pool: &connPool{dial: o.Dial, conns: map[string]*pooled{}}}
	onError := func(err error) { o.Logger.Warn("naming: skipped", "path", o.Path, "err", err) }
	src, err := fanout.NewFileSource(o.Path, fanout.FileOptions{Interval: o.Poll, OnError: onError})
	if err != nil {
		return nil, err
	}
	n.src = src
	sel := fanout.SelectiveOptions[*subReq]{
		Balancer:       o.Balancer,
		Key:            requestKey,
		MaxRetry:       o.MaxRetries,
		Retryable:      namingRetryable,
		BackupDelay:    o.HedgeDelay,
		BackupMaxRatio: o.HedgeMaxRatio,
	}
	mk := func(failLimit int) *fanout.DynamicPartition[*subReq, *subResp] {
		return fanout.NewDynamicPartition(fanout.DynamicOptions[*subReq, *subResp]{
			Dial:      n.dialInstance,
			Selective: sel,
			Parallel: func(int) fanout.ParallelOptions[*subReq, *subResp] {
				return fanout.ParallelOptions[*subReq, *subResp]{Mapper: namingMapper, Merger: mergeParts, FailLimit: failLimit}
			},
			OnError: onError,
		})
	}
	n.strict, n.lenient = mk(1), mk(0)
	// One subscription feeds both channels, so they change together.
	n.stops = append(n.stops, src.Subscribe(func(list []fanout.Instance) {
		n.strict.Update(list)
		n.lenient.Update(list)
		n.logLayouts()
	}))
	return n, nil
}

func (n *Naming) logLayouts() {
	for _, l := range n.strict.Layouts() {
		n.o.Logger.Info("naming layout", "path", n.o.Path, "partitions", l.Partitions, "instances", l.Instances,
			"complete", l.Complete, "capacity", l.Capacity)
	}
}

// Close stops watching the file and closes every connection.
func (n *Naming) Close() {
	for _, stop := range n.stops {
		stop()
	}
	n.src.Close()
	n.strict.Close()
	n.lenient.Close()
}

// Layouts describes the layouts writes go to.
func (n *Naming) Layouts() []fanout.LayoutInfo { return n.strict.Layouts() }

// Ready reports whether at least one layout is complete.
func (n *Naming) Ready() error {
	var why []string
	for _, l := range n.strict.Layouts() {
		if l.Complete {
			return nil
		}
		why = append(why, fmt.Sprintf("layout of %d partitions has %d instances, not every partition", l.Partitions, l.Instances))
	}
	if len(why) == 0 {
		return fmt.Errorf("naming file %s lists no usable instance", n.o.Path)
	}
	return fmt.Errorf("no complete layout in %s: %s", n.o.Path, strings.Join(why, "; "))
}

// requestKey is the consistent-hash key of a sub-request: its first key.
func requestKey(q *subReq) uint64 {
	if len(q.keys) == 0 {
		return 0
	}
	h := fnv.New64a()
	h.Write(q.keys[0])
	return h.Sum64()
}

// namingMapper makes the sub-request of partition i of m: the keys whose
// slot is in the partition (skipped when none), or the partition's slot
// range for scans and counts.
func namingMapper(i, m int, q *subReq) (*subReq, error) {
	lo, hi := fanout.PartitionRange(i, m, slot.Count)
	if hi <= lo {
		return nil, fanout.ErrSkip
	}
	name := strconv.Itoa(i) + "/" + strconv.Itoa(m)
	switch q.kind {
	case opGet, opWrite:
		var idx []int
		for p, s := range q.slots {
			if int(s) >= lo && int(s) < hi {
				idx = append(idx, p)
			}
		}
		if len(idx) == 0 {
			return nil, fanout.ErrSkip
		}
		return q.sub(name, idx, nil), nil
	default:
		return q.sub(name, nil, []*clusterv1.SlotRange{{Start: uint32(lo), End: uint32(hi - 1)}}), nil
	}
}

// namingRetryable: a read that met an unavailable instance is retried on
// another instance of its partition.
func namingRetryable(err error) bool { return status.Code(statusOf(err)) == codes.Unavailable }

// dialInstance is the fanout.Dialer: one instance's channel over a shared
// connection.
func (n *Naming) dialInstance(in fanout.Instance) (fanout.Channel[*subReq, *subResp], func(), error) {
	cc, err := n.pool.get(in.Addr)
	if err != nil {
		return nil, nil, err
	}
	c := storagev1.NewStorageServiceClient(cc)
	node := topology.Node{ID: cmpOr(in.Tag, "0/1"), GRPCAddress: in.Addr}
	ch := fanout.Func[*subReq, *subResp](func(ctx context.Context, q *subReq) (*subResp, error) {
		attempt, hedge := attemptOf(ctx)
		ctx, oc := n.o.Observer.start(ctx, q.name, in.Addr, q.kind.String(), len(q.idx), attempt, hedge)
		defer oc.abandon(ctx)
		resp, err := callStorage(ctx, c, q)
		if err != nil {
			err = route.Annotate(err, node)
			oc.end(ctx, err, namingRetryable(err))
			return nil, &subError{err: err, idx: q.idx}
		}
		oc.end(ctx, nil, false)
		return resp, nil
	})
	return ch, func() { n.pool.put(in.Addr) }, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func (n *Naming) dyn(partial bool) *fanout.DynamicPartition[*subReq, *subResp] {
	if partial {
		return n.lenient
	}
	return n.strict
}

// read sends a read to one complete layout.
func (n *Naming) read(ctx context.Context, q *subReq, partial bool) (round, int, error) {
	ctx, cancel := withDeadline(ctx, n.o.CallTimeout)
	defer cancel()
	resp, drep, err := n.dyn(partial).CallReport(ctx, q)
	if drep == nil || drep.Report == nil {
		return round{}, 0, statusOf(err)
	}
	if errors.Is(err, fanout.ErrAllSkipped) {
		return round{}, drep.Layout, nil
	}
	r := collect(ctx, resp, drep.Report, nil)
	if (!partial || len(r.ok) == 0) && len(r.failed) > 0 {
		// A partial answer needs at least one partition.
		return round{}, 0, partitionsError(q.kind, r.failed, q.rename)
	}
	if err != nil && len(r.failed) == 0 && len(r.ok) == 0 {
		return round{}, 0, statusOf(err)
	}
	return r, drep.Layout, nil
}

func (n *Naming) get(ctx context.Context, q *subReq, partial bool) ([]*storagev1.Item, []string, []failure, error) {
	r, m, err := n.read(ctx, q, partial)
	if err != nil {
		return nil, nil, nil, err
	}
	items := make([]*storagev1.Item, len(q.keys))
	where := make([]string, len(q.keys))
	for _, p := range r.ok {
		for j, pos := range p.idx {
			items[pos], where[pos] = p.items[j], p.name
		}
	}
	for p, s := range q.slots {
		if where[p] == "" && m > 0 {
			where[p] = strconv.Itoa(fanout.PartitionOf(int(s), m, slot.Count)) + "/" + strconv.Itoa(m)
		}
	}
	return items, where, r.failed, nil
}

// write goes to every instance of every partition of every complete
// layout (DynamicPartition.Broadcast), so replicas and layouts stay equal.
func (n *Naming) write(ctx context.Context, q *subReq) ([]string, error) {
	ctx, cancel := withDeadline(ctx, n.o.CallTimeout)
	defer cancel()
	res, err := n.strict.Broadcast(ctx, q)
	if err != nil {
		st := status.Convert(statusOf(err))
		return nil, status.Errorf(st.Code(), "%s: %v", q.kind, err)
	}
	ms := make([]int, 0, len(res))
	for m := range res {
		ms = append(ms, m)
	}
	slices.Sort(ms)
	where := make([]string, len(q.keys))
	for p, s := range q.slots {
		names := make([]string, len(ms))
		for k, m := range ms {
			names[k] = strconv.Itoa(fanout.PartitionOf(int(s), m, slot.Count)) + "/" + strconv.Itoa(m)
		}
		where[p] = strings.Join(names, ",")
	}
	return where, nil
}

func (n *Naming) scan(ctx context.Context, q *subReq, partial bool) ([]*subResp, []failure, error) {
	r, _, err := n.read(ctx, q, partial)
	if err != nil {
		return nil, nil, err
	}
	return r.ok, r.failed, nil
}

func (n *Naming) count(ctx context.Context, partial bool) (uint64, []failure, error) {
	r, _, err := n.read(ctx, &subReq{kind: opCount}, partial)
	if err != nil {
		return 0, nil, err
	}
	var total uint64
	for _, p := range r.ok {
		total += p.count
	}
	return total, r.failed, nil
}

// connPool shares one connection per address between the layouts and
// channels that use it, closing it when the last one lets go.
type connPool struct {
	dial  route.DialFunc
	mu    sync.Mutex
	conns map[string]*pooled
}

type pooled struct {
	cc   *grpc.ClientConn
	refs int
}

func (p *connPool) get(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c := p.conns[addr]; c != nil {
		c.refs++
		return c.cc, nil
	}
	cc, err := p.dial(addr)
	if err != nil {
		return nil, err
	}
	p.conns[addr] = &pooled{cc: cc, refs: 1}
	return cc, nil
}

func (p *connPool) put(addr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.conns[addr]
	if c == nil {
		return
	}
	if c.refs--; c.refs == 0 {
		delete(p.conns, addr)
		_ = c.cc.Close()
	}
}
