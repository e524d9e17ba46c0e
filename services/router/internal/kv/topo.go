package kv

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/fanout"
	"github.com/slotkv/slotkv/pkg/route"
	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/pkg/topology"
)

// topoBackend routes by the live topology: one partition per storage node,
// named by its node id. Its fan-out channels are rebuilt once per topology
// version (layout) and cached.
type topoBackend struct {
	r   *route.Router
	obs *Observer
	cur atomicLayout
}

// layout is the fan-out view of one topology version: one sub-channel per
// node (a fanout.Func calling the node over its route connection) in a
// strict Parallel channel (FailLimit 1: any failure fails the call at once
// and cancels the rest) and a lenient one (FailLimit 0: partial results).
type layout struct {
	topo    *topology.Topology
	nodes   []topology.Node
	index   map[string]int
	ranges  [][]*clusterv1.SlotRange
	strict  *fanout.Parallel[*subReq, *subResp]
	lenient *fanout.Parallel[*subReq, *subResp]
}

func (l *layout) par(partial bool) *fanout.Parallel[*subReq, *subResp] {
	if partial {
		return l.lenient
	}
	return l.strict
}

func newLayout(r *route.Router, obs *Observer, t *topology.Topology) *layout {
	l := &layout{topo: t, nodes: t.Nodes(), index: map[string]int{}}
	l.ranges = make([][]*clusterv1.SlotRange, len(l.nodes))
	for i, n := range l.nodes {
		l.index[n.ID] = i
		for _, rg := range t.RangesOf(n.ID) {
			l.ranges[i] = append(l.ranges[i], &clusterv1.SlotRange{Start: uint32(rg.Start), End: uint32(rg.End)})
		}
	}
	// The Mapper groups the call by node: keys through the grouping the
	// call computed with this layout, scans and counts through the node's
	// ranges. Nodes with nothing to do are skipped.
	mapper := func(i, _ int, q *subReq) (*subReq, error) {
		if i >= len(l.nodes) {
			return nil, fanout.ErrSkip
		}
		switch q.kind {
		case opGet, opWrite:
			if i >= len(q.groups) || len(q.groups[i]) == 0 {
				return nil, fanout.ErrSkip
			}
			return q.sub(l.nodes[i].ID, q.groups[i], nil), nil
		default:
			if len(l.ranges[i]) == 0 {
				return nil, fanout.ErrSkip
			}
			return q.sub(l.nodes[i].ID, nil, l.ranges[i]), nil
		}
	}
	l.strict = fanout.NewParallel(fanout.ParallelOptions[*subReq, *subResp]{Mapper: mapper, Merger: mergeParts, FailLimit: 1})
	l.lenient = fanout.NewParallel(fanout.ParallelOptions[*subReq, *subResp]{Mapper: mapper, Merger: mergeParts})
	for _, n := range l.nodes {
		ch := nodeChannel(r, obs, n)
		l.strict.Add(n.ID, ch)
		l.lenient.Add(n.ID, ch)
	}
	return l
}

// nodeChannel calls one storage node. Retryable answers (SLOT_MOVED,
// frozen, unavailable, a connection closed under the call) come back as
// answers with retry set, so they do not count toward the fail limit: the
// caller redoes their keys with the newest topology.
func nodeChannel(r *route.Router, obs *Observer, node topology.Node) fanout.Func[*subReq, *subResp] {
	return func(ctx context.Context, q *subReq) (*subResp, error) {
		attempt, _ := attemptOf(ctx)
		ctx, oc := obs.start(ctx, node.ID, node.GRPCAddress, q.kind.String(), len(q.idx), attempt, false)
		defer oc.abandon(ctx)
		cc, err := r.Conn(node.GRPCAddress)
		var resp *subResp
		if err == nil {
			resp, err = callStorage(ctx, storagev1.NewStorageServiceClient(cc), q)
		}
		if err == nil {
			oc.end(ctx, nil, false)
			return resp, nil
		}
		aerr := route.Annotate(err, node)
		retry := ctx.Err() == nil && retryable(aerr)
		oc.end(ctx, aerr, retry)
		if retry {
			return &subResp{name: q.name, idx: q.idx, retry: aerr}, nil
		}
		return nil, &subError{err: aerr, idx: q.idx}
	}
}

// retryable: answers the router retries, as route.Do does (the one
// classification of pkg/route).
func retryable(err error) bool { return route.Classify(err).Retryable() }

// atomicLayout caches the layout of the newest topology seen.
type atomicLayout struct {
	mu sync.Mutex // serialises builds
	p  atomic.Pointer[layout]
}

// get returns the cached layout when it is of t's version or newer, else
// builds and caches t's.
func (a *atomicLayout) get(t *topology.Topology, build func() *layout) *layout {
	if l := a.p.Load(); l != nil && l.topo.Version() >= t.Version() {
		return l
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if l := a.p.Load(); l != nil && l.topo.Version() >= t.Version() {
		return l
	}
	l := build()
	a.p.Store(l)
	return l
}

// layout returns the layout of the current topology, loading the topology
// first if needed.
func (b *topoBackend) layout(ctx context.Context) (*layout, error) {
	t := b.r.Topology()
	if t == nil {
		var err error
		if t, err = b.r.RefreshTo(ctx, 1); t == nil {
			if err == nil {
				err = rpcerr.ErrNoTopology
			}
			return nil, status.Errorf(codes.Unavailable, "router has no topology yet: %v", err)
		}
	}
	return b.cur.get(t, func() *layout { return newLayout(b.r, b.obs, t) }), nil
}

// retrier applies route.Do's retry rules to rounds of a fan-out call, with
// one route.Backoffer for the whole call (its budget is the call's
// deadline): SLOT_MOVED answers refresh the topology (route.FollowMoved)
// and the round is redone at once on a newer one, or after a backoff when
// there is none yet (a destination not told yet, a node behind the
// router); frozen slots wait their RetryInfo, unavailable nodes a backoff
// (and start a refresh in the background), until the deadline. With
// partial results allowed, a round with an unavailable partition gets at
// most MaxRetries backoffs rather than the whole deadline, so a down node
// costs a partial answer a short wait, not the call timeout.
type retrier struct {
	r                   *route.Router
	b                   *route.Backoffer
	partial             bool
	refreshedUnassigned bool
}

func newRetrier(ctx context.Context, r *route.Router, partial bool) *retrier {
	return &retrier{r: r, b: r.NewBackoffer(ctx), partial: partial}
}

// again waits as the retryable answers errs of a round on topology t ask,
// and reports whether to redo them; false means give up (they stand as
// failures).
func (rt *retrier) again(ctx context.Context, t *topology.Topology, errs []error) bool {
	var (
		moved       []route.Class
		unavailable bool
		retryAfter  time.Duration
	)
	for _, e := range errs {
		switch c := route.Classify(e); c.Kind {
		case route.Moved:
			moved = append(moved, c)
		case route.Frozen, route.NoTopology:
			// A frozen slot, or a node still to install its first
			// topology: wait, nothing to refresh.
			retryAfter = max(retryAfter, c.RetryAfter)
		default:
			unavailable = true
		}
	}
	if len(moved) > 0 {
		nt := rt.r.FollowMoved(ctx, t, moved...)
		if ctx.Err() != nil {
			return false
		}
		if nt != nil && nt.Version() > t.Version() {
			return true // regroup the keys on the newer topology at once
		}
		// No newer topology: back off below before asking again.
	}
	var c route.Class
	switch {
	case unavailable:
		c = route.Class{Kind: route.NodeUnavailable}
		if rt.partial && rt.b.Waits(route.NodeUnavailable) >= rt.r.MaxRetries() {
			return false
		}
		rt.r.TriggerRefresh() // the node may have been replaced
	case len(moved) > 0:
		c = route.Class{Kind: route.Moved}
	default:
		c = route.Class{Kind: route.Frozen, RetryAfter: retryAfter}
	}
	return rt.b.Wait(ctx, c) == nil
}

func (b *topoBackend) get(ctx context.Context, q *subReq, partial bool) ([]*storagev1.Item, []string, []failure, error) {
	items := make([]*storagev1.Item, len(q.keys))
	where, failed, err := b.keyed(ctx, q, partial, func(p *subResp) {
		for j, pos := range p.idx {
			items[pos] = p.items[j]
		}
	})
	if err != nil {
		return nil, nil, nil, err
	}
	return items, where, failed, nil
}

func (b *topoBackend) write(ctx context.Context, q *subReq) ([]string, error) {
	where, _, err := b.keyed(ctx, q, false, nil)
	return where, err
}

// keyed runs a keyed call (BatchGet or BatchWrite): its keys grouped by
// owner node through the Mapper, in rounds: the keys of a node that
// answered SLOT_MOVED, frozen or unavailable are grouped again on the
// newest topology and redone, until none is left or the deadline nears
// (for a partial read, until an unavailable node's backoff rounds run
// out).
func (b *topoBackend) keyed(ctx context.Context, q *subReq, partial bool, take func(*subResp)) ([]string, []failure, error) {
	ctx, cancel := withDeadline(ctx, b.r.CallTimeout())
	defer cancel()
	where := make([]string, len(q.keys))
	pending := make([]int, len(q.keys))
	for i := range pending {
		pending[i] = i
	}
	var failed []failure
	answered := 0 // partitions that answered, over all rounds
	rt := newRetrier(ctx, b.r, partial)
	lastRetry := map[string]error{}
	round := 0 // fan-out calls made, for the partition spans' attempt
	fail := func(fs ...failure) error {
		failed = append(failed, fs...)
		if !partial && len(failed) > 0 {
			return partitionsError(q.kind, failed, q.rename)
		}
		return nil
	}
	for len(pending) > 0 {
		l, err := b.layout(ctx)
		if err != nil {
			return nil, nil, err
		}
		groups := make([][]int, len(l.nodes))
		var unowned []int
		for _, p := range pending {
			n, ok := l.topo.Owner(q.slots[p])
			if !ok {
				unowned = append(unowned, p)
				continue
			}
			i := l.index[n.ID]
			groups[i] = append(groups[i], p)
		}
		if len(unowned) > 0 {
			if !rt.refreshedUnassigned {
				rt.refreshedUnassigned = true
				_, _ = b.r.RefreshTo(ctx, l.topo.Version()+1)
				continue
			}
			p := unowned[0]
			e := rpcerr.ToStatus(fmt.Errorf("%w: slot %d of key %q has no owner in topology version %d",
				rpcerr.ErrSlotUnassigned, q.slots[p], q.keys[p], l.topo.Version()))
			for _, p := range unowned {
				where[p] = "unassigned"
			}
			if err := fail(failure{partition: "unassigned", err: &subError{err: e, idx: unowned}}); err != nil {
				return nil, nil, err
			}
		}
		pending = nil
		if allEmpty(groups) {
			break
		}
		call := &subReq{kind: q.kind, keys: q.keys, muts: q.muts, slots: q.slots, groups: groups}
		round++
		resp, rep, cerr := l.par(partial).CallReport(withRound(ctx, round), call)
		r := collect(ctx, resp, rep, lastRetry)
		if resp == nil && rep != nil && len(rep.Subs) == 0 && cerr != nil {
			return nil, nil, statusOf(cerr)
		}
		answered += len(r.ok)
		for _, p := range r.ok {
			for _, pos := range p.idx {
				where[pos] = p.name
			}
			if take != nil {
				take(p)
			}
		}
		for k, f := range r.failed {
			for _, pos := range groups[r.failedIdx[k]] {
				where[pos] = f.partition
			}
		}
		if err := fail(r.failed...); err != nil {
			return nil, nil, err
		}
		if len(r.retry) == 0 {
			break
		}
		errs := make([]error, len(r.retry))
		for k, p := range r.retry {
			errs[k] = p.retry
			lastRetry[p.name] = p.retry
			pending = append(pending, p.idx...)
		}
		if !rt.again(ctx, l.topo, errs) {
			var fs []failure
			for _, p := range r.retry {
				for _, pos := range p.idx {
					where[pos] = p.name
				}
				fs = append(fs, failure{partition: p.name, err: &subError{err: p.retry, idx: p.idx}})
			}
			if err := fail(fs...); err != nil {
				return nil, nil, err
			}
			break
		}
	}
	if answered == 0 && len(failed) > 0 {
		// A partial answer needs at least one partition: with none, the
		// call failed (allow_partial or not).
		return nil, nil, partitionsError(q.kind, failed, q.rename)
	}
	return where, failed, nil
}

func allEmpty(groups [][]int) bool {
	for _, g := range groups {
		if len(g) > 0 {
			return false
		}
	}
	return true
}

// whole runs a call every node answers for its own ranges (scan, count).
// A retryable answer from any node redoes the whole call on the newest
// topology, since the ranges may have moved.
func (b *topoBackend) whole(ctx context.Context, q *subReq, partial bool) ([]*subResp, []failure, error) {
	ctx, cancel := withDeadline(ctx, b.r.CallTimeout())
	defer cancel()
	rt := newRetrier(ctx, b.r, partial)
	lastRetry := map[string]error{}
	round := 0 // fan-out calls made, for the partition spans' attempt
	for {
		l, err := b.layout(ctx)
		if err != nil {
			return nil, nil, err
		}
		round++
		resp, rep, cerr := l.par(partial).CallReport(withRound(ctx, round), q)
		if errors.Is(cerr, fanout.ErrAllSkipped) || errors.Is(cerr, fanout.ErrNoChannel) {
			return nil, nil, nil // no node serves any slot
		}
		r := collect(ctx, resp, rep, lastRetry)
		if (!partial || len(r.ok) == 0 && len(r.retry) == 0) && len(r.failed) > 0 {
			return nil, nil, partitionsError(q.kind, r.failed, nil)
		}
		if len(r.retry) == 0 {
			return r.ok, r.failed, nil
		}
		errs := make([]error, len(r.retry))
		for k, p := range r.retry {
			errs[k] = p.retry
			lastRetry[p.name] = p.retry
		}
		if !rt.again(ctx, l.topo, errs) {
			failed := r.failed
			for _, p := range r.retry {
				failed = append(failed, failure{partition: p.name, err: p.retry})
			}
			if !partial || len(r.ok) == 0 {
				return nil, nil, partitionsError(q.kind, failed, nil)
			}
			return r.ok, failed, nil
		}
	}
}

func (b *topoBackend) scan(ctx context.Context, q *subReq, partial bool) ([]*subResp, []failure, error) {
	return b.whole(ctx, q, partial)
}

func (b *topoBackend) count(ctx context.Context, partial bool) (uint64, []failure, error) {
	parts, failed, err := b.whole(ctx, &subReq{kind: opCount}, partial)
	if err != nil {
		return 0, nil, err
	}
	var n uint64
	for _, p := range parts {
		n += p.count
	}
	return n, failed, nil
}
