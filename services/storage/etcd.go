package storage

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	"github.com/slotkv/slotkv/pkg/topology"
	"github.com/slotkv/slotkv/pkg/topostore"
	"github.com/slotkv/slotkv/services/storage/internal/node"
)

// controlPlane is a node's side of the etcd control plane (--etcd-endpoints):
// it installs every topology version etcd holds, releases an import only
// when the job's hand-off record is there (the migrator commits it with
// the topology, once the source froze the slots), and keeps the node
// registered under a lease. Nothing here blocks serving: while etcd is
// unreachable the node serves from the topology and slot states on its disk.
type controlPlane struct {
	cli *clientv3.Client
	st  *topostore.Store
	n   *node.Node
	log *slog.Logger
	ttl time.Duration

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu sync.Mutex
	// released: jobs whose hand-off record this node has seen; an
	// IMPORTING slot of another job never turns OWNED (node.SetImportRelease).
	released map[string]bool
	// self is the registration, once the listeners are bound.
	self atomic.Pointer[clusterv1.Node]
}

// Backoff of the retries against etcd.
const (
	etcdRetryMin = 100 * time.Millisecond
	etcdRetryMax = 2 * time.Second
	etcdCallTime = 5 * time.Second
)

func startControlPlane(ctx context.Context, o Options, n *node.Node, log *slog.Logger) (*controlPlane, error) {
	// Dial does not wait for etcd: the node starts on what it holds.
	cli, st, err := o.Etcd.Dial(ctx, log)
	if err != nil {
		return nil, err
	}
	c := &controlPlane{cli: cli, st: st, n: n, log: log.With("etcd", o.Etcd.Endpoints), ttl: o.EtcdLeaseTTL,
		released: map[string]bool{}}
	c.ctx, c.cancel = context.WithCancel(context.WithoutCancel(ctx))
	n.SetImportRelease(c.isReleased)
	c.wg.Add(2)
	go c.watchTopology()
	go c.watchHandoffs()
	return c, nil
}

// stop ends the watches, revokes the registration (the node is listed dead
// at once) and closes the client; the node must not be used by it after.
func (c *controlPlane) stop() {
	c.cancel()
	c.wg.Wait()
	c.cli.Close()
}

func (c *controlPlane) isReleased(job string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.released[job]
}

func (c *controlPlane) watchTopology() {
	defer c.wg.Done()
	for t := range c.st.Watch(c.ctx) {
		c.install(t)
	}
}

func (c *controlPlane) install(t *topology.Topology) {
	prev := c.n.Topology()
	in, err := c.n.Install(t.Proto())
	if err != nil {
		// A stale or conflicting version (a data directory from another
		// cluster): keep serving what is held and say so.
		c.log.Error("topology from etcd refused", "version", t.Version(), "err", err)
		return
	}
	if !in.Changed {
		return
	}
	var from uint64
	if prev != nil {
		from = prev.Version()
	}
	c.log.Info("topology installed from etcd", "from_version", from, "version", in.Version,
		"owned", fmt.Sprint(t.RangesOf(c.n.ID())), "handed_off", in.HandedOff, "held_imports", in.Held)
	// A topology that lists this node at other addresses sends clients
	// elsewhere; say so loudly instead of letting routing fail quietly.
	if self := c.self.Load(); self != nil {
		if me, ok := t.Node(c.n.ID()); ok && me.GRPCAddress != self.GetGrpcAddress() {
			c.log.Warn("topology lists this node at another gRPC address", "version", t.Version(),
				"topology_address", me.GRPCAddress, "advertised_address", self.GetGrpcAddress())
		}
	}
}

func (c *controlPlane) watchHandoffs() {
	defer c.wg.Done()
	for job := range c.st.Handoffs(c.ctx) {
		c.mu.Lock()
		c.released[job] = true
		c.mu.Unlock()
		// After the set: an Install racing with this either sees the job
		// released or runs before this call, which then turns the slots.
		turned, err := c.n.ReleaseImports(job)
		switch {
		case err != nil:
			// Only a failing disk gets here; the next topology install
			// releases the slots again (the job stays in the set).
			c.log.Error("releasing imported slots", "job_id", job, "err", err)
		case len(turned) > 0:
			c.log.Info("imported slots served: the hand-off is recorded", "job_id", job, "slots", fmt.Sprint(turned))
		}
	}
}

// register keeps self registered under a lease until the node stops; the
// first registration waits for etcd in the background.
func (c *controlPlane) register(self *clusterv1.Node) {
	c.self.Store(self)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		// Register's context is the registration's life: wait until etcd
		// answers, so that a node started while etcd is down does not
		// block in the client's own retries without a word in the log.
		var leases <-chan clientv3.LeaseID
		retry(c.ctx, func(ctx context.Context) error {
			if _, err := c.cli.Get(ctx, c.st.NodeKey(self.GetId()), clientv3.WithCountOnly()); err != nil {
				return fmt.Errorf("etcd unreachable: %w", err)
			}
			var err error
			leases, err = c.st.Register(c.ctx, self, c.ttl)
			return err
		}, func(err error, next time.Duration) {
			c.log.Warn("registering the node in etcd, retrying", "err", err, "retry_in", next)
		})
		if leases == nil {
			return
		}
		c.log.Info("node registered in etcd", "key", c.st.NodeKey(self.GetId()), "lease_ttl", c.ttl)
		// Closed once the lease is revoked, after c.ctx ends.
		for range leases {
		}
	}()
}

// retry calls fn (each call bounded by etcdCallTime) until it returns nil
// or ctx is done, backing off between calls.
func retry(ctx context.Context, fn func(context.Context) error, onErr func(error, time.Duration)) {
	delay := etcdRetryMin
	for ctx.Err() == nil {
		cctx, cancel := context.WithTimeout(ctx, etcdCallTime)
		err := fn(cctx)
		cancel()
		if err == nil || ctx.Err() != nil {
			return
		}
		onErr(err, delay)
		select {
		case <-time.After(delay):
			delay = min(2*delay, etcdRetryMax)
		case <-ctx.Done():
		}
	}
}
