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
	"github.com/slotkv/slotkv/services/storage/internal/migration"
	"github.com/slotkv/slotkv/services/storage/internal/node"
)

// controlPlane is a node's side of the etcd control plane (--etcd-endpoints):
// it installs every topology version etcd holds, releases an import only
// when the source has recorded its hand-off there, records the hand-off
// when this node stops serving a job's slots as the source, and keeps the
// node registered under a lease. Nothing here blocks serving: while etcd is
// unreachable the node serves from the topology and slot states on its disk.
type controlPlane struct {
	cli *clientv3.Client
	st  *topostore.Store
	n   *node.Node
	mig *migration.Manager
	log *slog.Logger
	ttl time.Duration

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu sync.Mutex
	// released: jobs whose hand-off record this node has seen; an
	// IMPORTING slot of another job never turns OWNED (node.SetImportRelease).
	released map[string]bool
	// recording: source jobs whose hand-off this node records (or did).
	recording map[string]bool
	// self is the registration, once the listeners are bound.
	self atomic.Pointer[clusterv1.Node]
}

// Backoff of the retries against etcd.
const (
	etcdRetryMin = 100 * time.Millisecond
	etcdRetryMax = 2 * time.Second
	etcdCallTime = 5 * time.Second
)

func startControlPlane(ctx context.Context, o Options, n *node.Node, mig *migration.Manager, log *slog.Logger) (*controlPlane, error) {
	// Dial does not wait for etcd: the node starts on what it holds.
	cli, st, err := o.Etcd.Dial(ctx, log)
	if err != nil {
		return nil, err
	}
	c := &controlPlane{cli: cli, st: st, n: n, mig: mig, log: log.With("etcd", o.Etcd.Endpoints), ttl: o.EtcdLeaseTTL,
		released: map[string]bool{}, recording: map[string]bool{}}
	c.ctx, c.cancel = context.WithCancel(context.WithoutCancel(ctx))
	n.SetImportRelease(c.isReleased)
	c.wg.Add(2)
	go c.watchTopology()
	go c.watchHandoffs()
	// A restarted source whose slots were already given away: its record
	// may not have been written before it stopped.
	c.recordGivenAway(n.Topology())
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
	for _, job := range in.HandedOff {
		c.recordHandoff(job, in.Version)
	}
	c.recordGivenAway(t)
	// A topology that lists this node at other addresses sends clients
	// elsewhere; say so loudly instead of letting routing fail quietly.
	if self := c.self.Load(); self != nil {
		if me, ok := t.Node(c.n.ID()); ok && me.GRPCAddress != self.GetGrpcAddress() {
			c.log.Warn("topology lists this node at another gRPC address", "version", t.Version(),
				"topology_address", me.GRPCAddress, "advertised_address", self.GetGrpcAddress())
		}
	}
}

// recordGivenAway records the hand-off of every source job whose slots the
// held topology assigns elsewhere (this node serves none of them).
func (c *controlPlane) recordGivenAway(t *topology.Topology) {
	if t == nil {
		return
	}
	for _, j := range c.mig.List() {
		if j.Role != migration.Source {
			continue
		}
		mine := false
		for _, r := range j.Ranges {
			for s := int(r.Start); s <= int(r.End) && !mine; s++ {
				if o, ok := t.Owner(uint16(s)); ok && o.ID == c.n.ID() {
					mine = true
				}
			}
		}
		if !mine {
			c.recordHandoff(j.Job, t.Version())
		}
	}
}

// recordHandoff writes job's hand-off record in the background, retrying
// with backoff until it is written or the node stops. The node's install
// is durable by then (Install syncs before it returns).
func (c *controlPlane) recordHandoff(job string, version uint64) {
	c.mu.Lock()
	if c.recording[job] {
		c.mu.Unlock()
		return
	}
	c.recording[job] = true
	c.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		retry(c.ctx, func(ctx context.Context) error {
			return c.st.RecordHandoff(ctx, job, version)
		}, func(err error, next time.Duration) {
			c.log.Warn("recording the hand-off in etcd, retrying", "job_id", job, "version", version, "err", err, "retry_in", next)
		})
		if c.ctx.Err() == nil {
			c.log.Info("hand-off recorded in etcd", "job_id", job, "version", version)
		}
	}()
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
			c.log.Info("imported slots served: the source recorded its hand-off", "job_id", job, "slots", fmt.Sprint(turned))
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
