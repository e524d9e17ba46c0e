package route

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/topology"
	"github.com/slotkv/slotkv/pkg/topostore"
)

// Defaults of Options.
const (
	DefaultCallTimeout  = 10 * time.Second
	DefaultMaxRetries   = 5
	DefaultFetchTimeout = 3 * time.Second
	DefaultMinBackoff   = 20 * time.Millisecond
	DefaultMaxBackoff   = time.Second
)

// DialFunc opens a client connection to a storage node's gRPC address.
type DialFunc func(addr string) (*grpc.ClientConn, error)

// Options configures a Router.
type Options struct {
	// Store is where the topology comes from, and the only place: the
	// control plane's record in etcd. Run follows its watch and Refresh
	// reads it (linearizably, within FetchTimeout); the storage nodes are
	// never asked for it. Required.
	Store *topostore.Store
	// Dial opens connections (token, TLS and tracing are its business).
	Dial DialFunc
	// CallTimeout is the deadline given to a call whose context has none
	// (DefaultCallTimeout when 0).
	CallTimeout time.Duration
	// MaxRetries bounds the backoff rounds a call that may answer without
	// a partition (a read with allow_partial) spends on an unavailable
	// node before leaving it out (DefaultMaxRetries when 0). It no longer
	// bounds anything else: SLOT_MOVED, frozen slots and the unavailable
	// nodes of calls that need every answer are retried until the call's
	// deadline (see the package doc).
	MaxRetries int
	// FetchTimeout bounds each read of the Store (DefaultFetchTimeout
	// when 0).
	FetchTimeout time.Duration
	// MinBackoff and MaxBackoff bound the delay between retries (of a
	// frozen slot when the node gives no RetryInfo, of an unavailable
	// node, of a SLOT_MOVED whose owner has not learned the topology yet):
	// the Backoffers of NewBackoffer.
	MinBackoff, MaxBackoff time.Duration
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if o.CallTimeout <= 0 {
		o.CallTimeout = DefaultCallTimeout
	}
	if o.MaxRetries <= 0 {
		o.MaxRetries = DefaultMaxRetries
	}
	if o.FetchTimeout <= 0 {
		o.FetchTimeout = DefaultFetchTimeout
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = DefaultMinBackoff
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(DefaultMaxBackoff, o.MinBackoff)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Router routes keys to storage nodes.
type Router struct {
	opts Options

	topo      atomic.Pointer[topology.Topology]
	refreshes atomic.Uint64 // refresh rounds started

	ctx    context.Context // ends with Close; bounds refreshes
	cancel context.CancelFunc

	mu      sync.Mutex
	conns   map[string]*grpc.ClientConn // by gRPC address
	flight  *flight                     // refresh in progress, nil when none
	lastErr error                       // error of the last refresh
	closed  bool
}

type flight struct {
	done chan struct{}
	topo *topology.Topology
	err  error
}

// New returns a Router. It does not contact any node: call Run (or Refresh)
// to load the topology.
func New(opts Options) (*Router, error) {
	opts.setDefaults()
	if opts.Dial == nil {
		return nil, errors.New("route: Options.Dial is required")
	}
	if opts.Store == nil {
		// The topology lives in etcd only (pkg/topostore): there is no
		// other source to fall back to.
		return nil, rpcerr.InvalidField("etcd-endpoints", "the etcd holding the topology is required (route: Options.Store is nil)")
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Router{opts: opts, ctx: ctx, cancel: cancel, conns: map[string]*grpc.ClientConn{}}, nil
}

// Topology returns the topology in use, nil before the first load.
func (r *Router) Topology() *topology.Topology { return r.topo.Load() }

// Ready reports whether a topology has been loaded.
func (r *Router) Ready() bool { return r.topo.Load() != nil }

// Source says where the topology comes from, for messages: "etcd key K".
func (r *Router) Source() string { return "etcd key " + r.opts.Store.TopologyKey() }

// Close stops refreshes and closes every connection.
func (r *Router) Close() error {
	r.cancel()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	var errs []error
	for addr, c := range r.conns {
		errs = append(errs, c.Close())
		delete(r.conns, addr)
	}
	return errors.Join(errs...)
}

// Run keeps the topology current until ctx ends: it follows the etcd
// watch, installing every version as it is committed, in order, the first
// one as soon as etcd holds one.
func (r *Router) Run(ctx context.Context) error { return r.follow(ctx) }

// Refresh reads the topology from etcd and installs it if it is newer than
// the one held. A refresh already running is joined rather than repeated.
// It returns the topology in use afterwards.
func (r *Router) Refresh(ctx context.Context) (*topology.Topology, error) {
	return r.refresh(ctx, 0)
}

// refresh makes sure the topology is at least minVersion if the cluster
// knows one: it joins the refresh in flight and starts a new one (once) when
// the joined one did not reach minVersion. minVersion 0 just joins or starts
// one refresh.
func (r *Router) refresh(ctx context.Context, minVersion uint64) (*topology.Topology, error) {
	for round := 0; ; round++ {
		if t := r.topo.Load(); minVersion > 0 && t != nil && t.Version() >= minVersion {
			return t, nil
		}
		f, started := r.startFlight()
		select {
		case <-f.done:
		case <-ctx.Done():
			return r.topo.Load(), ctx.Err()
		}
		t := r.topo.Load()
		if started || round > 0 || minVersion == 0 || (t != nil && t.Version() >= minVersion) {
			if t == nil {
				return nil, f.err
			}
			return t, f.err
		}
		// We joined a refresh started before our answer arrived, and it
		// did not see the version we know exists: go once more.
	}
}

func (r *Router) startFlight() (*flight, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.flight != nil {
		return r.flight, false
	}
	f := &flight{done: make(chan struct{})}
	r.flight = f
	r.refreshes.Add(1)
	go func() {
		f.topo, f.err = r.fetch()
		r.mu.Lock()
		r.flight = nil
		r.lastErr = f.err
		r.mu.Unlock()
		close(f.done)
	}()
	return f, true
}

// triggerRefresh starts a refresh unless one runs, without waiting.
func (r *Router) triggerRefresh() { r.startFlight() }

// Refreshes is the number of refresh rounds started so far (each reads
// etcd once).
func (r *Router) Refreshes() uint64 { return r.refreshes.Load() }

// LastRefreshError is the error of the most recent refresh, nil if it
// succeeded.
func (r *Router) LastRefreshError() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastErr
}

// follow installs every topology the store's watch delivers until ctx
// ends. The watch resumes by itself after an etcd outage (see
// pkg/topostore), keeping the last topology meanwhile.
func (r *Router) follow(ctx context.Context) error {
	for t := range r.opts.Store.Watch(ctx) {
		r.install(t)
	}
	return nil
}

// fetch reads the newest topology from the store (a linearizable read:
// never older than a version already seen) and installs it if it is newer
// than the one held.
func (r *Router) fetch() (*topology.Topology, error) {
	ctx, cancel := context.WithTimeout(r.ctx, r.opts.FetchTimeout)
	defer cancel()
	t, err := r.opts.Store.Load(ctx)
	if err != nil {
		if errors.Is(err, topostore.ErrNotBootstrapped) {
			return nil, fmt.Errorf("%w (run slotkvctl bootstrap --etcd-endpoints ...)", err)
		}
		return nil, fmt.Errorf("%w: reading the topology from etcd: %w", rpcerr.ErrUnavailable, err)
	}
	return r.install(t), nil
}

// install makes best the topology in use if it is newer than the one held,
// closing the connections of nodes that left, and returns the topology in
// use afterwards. The watch and the refreshes both install: the pointer
// only moves forward.
func (r *Router) install(best *topology.Topology) *topology.Topology {
	for {
		cur := r.topo.Load()
		if cur != nil && cur.Version() >= best.Version() {
			return cur
		}
		if r.topo.CompareAndSwap(cur, best) {
			var from uint64
			if cur != nil {
				from = cur.Version()
			}
			r.opts.Logger.Info("topology updated", "from_version", from, "version", best.Version(), "nodes", len(best.Nodes()))
			r.prune(best)
			return best
		}
	}
}

// conn returns the connection to addr, dialing it the first time.
func (r *Router) conn(addr string) (*grpc.ClientConn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, status.Error(codes.Unavailable, "router is shutting down")
	}
	if c, ok := r.conns[addr]; ok {
		return c, nil
	}
	c, err := r.opts.Dial(addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	r.conns[addr] = c
	return c, nil
}

// prune closes the connections to addresses that are not nodes of t.
func (r *Router) prune(t *topology.Topology) {
	r.mu.Lock()
	defer r.mu.Unlock()
	// The watch and a refresh may install one after the other: prune by
	// the newest, so a late prune of an older version never closes the
	// connection to a node that only the newer one has.
	if cur := r.topo.Load(); cur != nil && cur.Version() > t.Version() {
		t = cur
	}
	keep := map[string]bool{}
	for _, n := range t.Nodes() {
		keep[n.GRPCAddress] = true
	}
	for addr, c := range r.conns {
		if !keep[addr] {
			delete(r.conns, addr)
			r.opts.Logger.Info("closing connection to a node that left the topology", "address", addr)
			_ = c.Close()
		}
	}
}

// ConnAddrs lists the addresses with an open connection, sorted (for tests
// and diagnostics).
func (r *Router) ConnAddrs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.conns))
	for a := range r.conns {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

// Call is one attempt of a keyed call on the node owning the key. a says
// which node and which attempt it is, so the caller can label its spans
// and metrics by partition and tell retries apart.
type Call func(ctx context.Context, a Attempt, c storagev1.StorageServiceClient) error

// Attempt is one call Do makes.
type Attempt struct {
	Slot   uint16
	Node   topology.Node
	Number int // 1 for the first attempt of a Do
}

// Result says where a call was served.
type Result struct {
	Slot uint16
	Node topology.Node
	// Attempts is the number of calls made (1 when the first succeeded).
	Attempts int
}

// Do runs call on the node owning key's slot and retries it by the rules
// of the package doc until it succeeds, a storage node gives an answer
// that is not retryable, or the context's deadline (CallTimeout when it has
// none) leaves no time for another try. There is no fixed number of
// retries: SLOT_MOVED is followed (a topology refresh to the version it
// names, asking the owner it names, and a backoff first when the owner did
// not change), a frozen slot is retried after its RetryInfo, an
// unavailable node after a backoff (with a topology refresh in the
// background).
// The error it returns is a gRPC status error: the storage node's own status
// when it is not retryable (NotFound stays NotFound), with the node named in
// the message for errors that are about the node rather than the request;
// when the deadline ends the retries, the last retryable answer.
func (r *Router) Do(ctx context.Context, key string, call Call) (Result, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.opts.CallTimeout)
		defer cancel()
	}
	res := Result{Slot: slot.OfString(key)}
	b := r.NewBackoffer(ctx)
	refreshedUnassigned := false
	var last error // last retryable answer, annotated
	for {
		t := r.topo.Load()
		if t == nil {
			var err error
			if t, err = r.refresh(ctx, 1); t == nil {
				if err == nil {
					err = rpcerr.ErrNoTopology
				}
				return res, status.Errorf(codes.Unavailable, "router has no topology yet: %v", err)
			}
		}
		node, ok := t.Owner(res.Slot)
		if !ok {
			if !refreshedUnassigned {
				refreshedUnassigned = true
				_, _ = r.refresh(ctx, t.Version()+1)
				continue
			}
			return res, rpcerr.ToStatus(fmt.Errorf("%w: slot %d of key has no owner in topology version %d",
				rpcerr.ErrSlotUnassigned, res.Slot, t.Version()))
		}
		res.Node = node
		res.Attempts++
		cc, err := r.conn(node.GRPCAddress)
		if err == nil {
			err = call(ctx, Attempt{Slot: res.Slot, Node: node, Number: res.Attempts}, storagev1.NewStorageServiceClient(cc))
		}
		if err == nil {
			return res, nil
		}
		if ctx.Err() != nil {
			// The deadline ran out during this attempt: the previous
			// answer (a node down, a frozen slot) says more than
			// DeadlineExceeded.
			if last != nil {
				return res, last
			}
			return res, annotate(err, node)
		}
		last = annotate(err, node)
		c := Classify(err)
		switch c.Kind {
		case Moved:
			r.opts.Logger.DebugContext(ctx, "slot moved; refreshing the topology", "slot", res.Slot, "node", node.ID,
				"owner", c.OwnerID, "owner_address", c.OwnerAddress, "owner_version", c.Version, "version", t.Version(),
				"attempt", res.Attempts)
			nt := r.FollowMoved(ctx, t, c)
			if ctx.Err() != nil {
				return res, last
			}
			if o, ok := nt.Owner(res.Slot); !ok || o.ID != node.ID || o.GRPCAddress != node.GRPCAddress {
				continue // a new owner (or none): ask at once
			}
			// The owner did not change: it has not been given the
			// topology that assigns it the slot yet (the migrator tells
			// the source first), or the answering node lags behind the
			// router. Give it a moment rather than spinning.
		case Frozen, NodeUnavailable, NoTopology:
			if c.Kind == NodeUnavailable {
				r.triggerRefresh() // the node may have been replaced
			}
		default:
			return res, last
		}
		delay := b.Next(c)
		if !b.Fits(delay) {
			r.opts.Logger.WarnContext(ctx, "giving up on a storage node before the deadline", "slot", res.Slot,
				"node", node.ID, "address", node.GRPCAddress, "attempts", res.Attempts, "error", err)
			if c.Kind == Moved {
				return res, annotatef(err, node, "slot %d still moved after %d attempts, at the deadline", res.Slot, res.Attempts)
			}
			return res, last
		}
		r.opts.Logger.DebugContext(ctx, "retrying", "slot", res.Slot, "node", node.ID, "address", node.GRPCAddress,
			"class", c.Kind.String(), "delay", delay, "attempt", res.Attempts, "error", err)
		if sleep(ctx, delay) != nil {
			return res, last
		}
	}
}

// annotate returns err as a status error. Answers about the request itself
// (not found, invalid argument, ...) are relayed as they are; others get the
// node named in the message, keeping code and details.
func annotate(err error, node topology.Node) error {
	st, ok := status.FromError(err)
	if !ok {
		return status.Errorf(codes.Unavailable, "storage node %s (%s): %v", node.ID, node.GRPCAddress, err)
	}
	switch st.Code() {
	case codes.OK, codes.NotFound, codes.InvalidArgument, codes.AlreadyExists, codes.OutOfRange:
		return st.Err()
	}
	return annotatef(err, node, "")
}

func annotatef(err error, node topology.Node, format string, args ...any) error {
	st, _ := status.FromError(err)
	p := st.Proto()
	msg := fmt.Sprintf("storage node %s (%s): %s", node.ID, node.GRPCAddress, p.GetMessage())
	if format != "" {
		msg = fmt.Sprintf("storage node %s (%s): %s: %s", node.ID, node.GRPCAddress, fmt.Sprintf(format, args...), p.GetMessage())
	}
	p.Message = msg
	return status.FromProto(p).Err()
}

// Conn returns the connection to a storage node's gRPC address, dialing it
// the first time (the multi-key paths call nodes directly).
func (r *Router) Conn(addr string) (*grpc.ClientConn, error) { return r.conn(addr) }

// RefreshTo makes sure the topology is at least minVersion when the cluster
// knows one (see Refresh).
func (r *Router) RefreshTo(ctx context.Context, minVersion uint64) (*topology.Topology, error) {
	return r.refresh(ctx, minVersion)
}

// TriggerRefresh starts a refresh unless one runs, without waiting.
func (r *Router) TriggerRefresh() { r.triggerRefresh() }

// CallTimeout is the deadline given to calls whose context has none.
func (r *Router) CallTimeout() time.Duration { return r.opts.CallTimeout }

// MaxRetries is Options.MaxRetries: the backoff rounds a partial read
// gives an unavailable node before leaving it out.
func (r *Router) MaxRetries() int { return r.opts.MaxRetries }

// Backoff returns the bounds of the delay between retries (those of the
// Backoffers NewBackoffer makes).
func (r *Router) Backoff() (minDelay, maxDelay time.Duration) {
	return r.opts.MinBackoff, r.opts.MaxBackoff
}

// Logger is the router's logger.
func (r *Router) Logger() *slog.Logger { return r.opts.Logger }

// Jitter spreads d by up to ±20%.
func Jitter(d time.Duration) time.Duration { return jitter(d) }

// Annotate turns err from node into a status error naming the node, as Do
// does: answers about the request (NotFound, InvalidArgument, ...) are
// relayed as they are.
func Annotate(err error, node topology.Node) error { return annotate(err, node) }

// CheckReady is a readiness check for a service that needs the topology:
// nil once one is loaded, otherwise an error saying why not yet.
func (r *Router) CheckReady(context.Context) error {
	if r.Ready() {
		return nil
	}
	if err := r.LastRefreshError(); err != nil {
		return fmt.Errorf("no topology loaded yet: %w", err)
	}
	return fmt.Errorf("no topology loaded yet from %s (waiting for etcd, or for slotkvctl bootstrap to write the first)", r.Source())
}
