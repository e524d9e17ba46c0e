// Package testcluster starts real slotkv storage nodes (as processes, via
// pkg/proctest) for tests of the services that drive them, with their
// control plane: an etcd (Options.Etcd, or one Start starts) whose topology
// the nodes watch. Topologies are given to them by committing in that etcd,
// the only way a node takes one.
package testcluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/etcdtest"
	"github.com/slotkv/slotkv/pkg/proctest"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/topology"
	"github.com/slotkv/slotkv/pkg/topostore"
)

// Options tunes Start.
type Options struct {
	// Token is the cluster token of every node ("" = open).
	Token string
	// Env adds environment variables (KEY=VALUE) to every node's process,
	// e.g. an OTLP endpoint.
	Env []string
	// Args are added to every node's command line, e.g. TLS flags or
	// --data-token.
	Args []string
	// TLS, when set, is the client configuration of Node.Conn (for nodes
	// that serve TLS through Args).
	TLS *tls.Config
	// RESP starts every node with a RESP listener (--resp-addr on
	// 127.0.0.1:0); its address is Proc.RESP and goes into the topology.
	RESP bool
	// Etcd is the cluster's control plane: every node gets
	// --etcd-endpoints, and SetTopology commits in it. When nil, Start
	// starts one (pkg/etcdtest) for the cluster.
	Etcd *etcdtest.Etcd
}

// Node is one running storage node.
type Node struct {
	ID      string
	Proc    *proctest.Proc
	DataDir string
	Conn    *grpc.ClientConn // with the cluster token
}

// Topology node of n.
func (n *Node) Topology() topology.Node {
	return topology.Node{ID: n.ID, GRPCAddress: n.Proc.GRPC, HTTPAddress: n.Proc.HTTP, RESPAddress: n.Proc.RESP}
}

// NodeClient is the node's admin client.
func (n *Node) NodeClient() storagev1.NodeServiceClient {
	return storagev1.NewNodeServiceClient(n.Conn)
}

// StorageClient is the node's data client.
func (n *Node) StorageClient() storagev1.StorageServiceClient {
	return storagev1.NewStorageServiceClient(n.Conn)
}

// Cluster is a set of storage nodes.
type Cluster struct {
	Nodes []*Node
	Token string
	env   []string
	extra []string
	resp  bool
	etcd  *etcdtest.Etcd
	store *topostore.Store
}

// Start runs n storage nodes with ids n1..nN, each with its own data
// directory under t.TempDir(), listening on 127.0.0.1:0. They are stopped by
// pid when the test ends. They hold no topology yet.
func Start(t testing.TB, n int, o Options) *Cluster {
	t.Helper()
	bin := proctest.Bin(t, "slotkv-storage")
	if o.Etcd == nil {
		o.Etcd = etcdtest.Start(t)
	}
	c := &Cluster{Nodes: make([]*Node, n), Token: o.Token, env: o.Env, extra: o.Args, resp: o.RESP, etcd: o.Etcd}
	st, err := topostore.New(o.Etcd.Client(t), topostore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c.store = st
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		id := fmt.Sprintf("n%d", i+1)
		dir := filepath.Join(t.TempDir(), id)
		wg.Go(func() {
			args := c.args(id, dir, "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0")
			// On failure proctest.Start marks the test failed and ends
			// this goroutine; the nil node is reported below.
			p := proctest.StartWith(t, proctest.Options{Env: c.env}, bin, args...)
			cc, err := dial.New(p.GRPC, dial.Options{Token: o.Token, TLS: o.TLS})
			if err != nil {
				errs <- err
				return
			}
			t.Cleanup(func() { _ = cc.Close() })
			c.Nodes[i] = &Node{ID: id, Proc: p, DataDir: dir, Conn: cc}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i, nd := range c.Nodes {
		if nd == nil {
			t.Fatalf("storage node n%d did not start", i+1)
		}
	}
	return c
}

// Addrs are the nodes' gRPC addresses.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Proc.GRPC
	}
	return out
}

// Node returns the node with id.
func (c *Cluster) Node(t testing.TB, id string) *Node {
	t.Helper()
	for _, n := range c.Nodes {
		if n.ID == id {
			return n
		}
	}
	t.Fatalf("no storage node %q", id)
	return nil
}

// TopologyNodes are the nodes as topology nodes, in order.
func (c *Cluster) TopologyNodes() []topology.Node {
	out := make([]topology.Node, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Topology()
	}
	return out
}

// Bootstrap installs topology version 1 with the slots split evenly.
func (c *Cluster) Bootstrap(t testing.TB) *topology.Topology {
	t.Helper()
	topo, err := topology.Even(1, c.TopologyNodes())
	if err != nil {
		t.Fatal(err)
	}
	c.SetTopology(t, topo)
	return topo
}

// Etcd is the cluster's control plane.
func (c *Cluster) Etcd() *etcdtest.Etcd { return c.etcd }

// Store is the topology store in the cluster's etcd.
func (c *Cluster) Store() *topostore.Store { return c.store }

// EtcdArgs are the flags that point another slotkv process at the
// cluster's control plane.
func (c *Cluster) EtcdArgs() []string {
	return []string{"--etcd-endpoints", c.etcd.Endpoint}
}

// EtcdEnv is EtcdArgs as environment variables (for slotkvctl).
func (c *Cluster) EtcdEnv() []string {
	return []string{"SLOTKV_ETCD_ENDPOINTS=" + c.etcd.Endpoint}
}

// SetTopology gives topo to every node: it is bootstrapped or committed in
// etcd (over the version stored, which must be older) and the call returns
// once every node holds it.
func (c *Cluster) SetTopology(t testing.TB, topo *topology.Topology) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c.commit(ctx, t, topo)
}

func (c *Cluster) commit(ctx context.Context, t testing.TB, topo *topology.Topology) {
	t.Helper()
	cur, err := c.store.Load(ctx)
	switch {
	case errors.Is(err, topostore.ErrNotBootstrapped):
		if _, created, err := c.store.Bootstrap(ctx, topo); err != nil || !created {
			t.Fatalf("bootstrap v%d in etcd: created %v, err %v", topo.Version(), created, err)
		}
	case err != nil:
		t.Fatalf("load the topology from etcd: %v", err)
	default:
		if err := c.store.Commit(ctx, cur.Version(), topo); err != nil {
			t.Fatalf("commit v%d over v%d in etcd: %v", topo.Version(), cur.Version(), err)
		}
	}
	for _, n := range c.Nodes {
		for {
			resp, err := n.NodeClient().GetTopology(ctx, &storagev1.GetTopologyRequest{})
			if err == nil && resp.GetTopology().GetVersion() >= topo.Version() {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("%s does not hold topology v%d from etcd: last answer %v, err %v", n.ID, topo.Version(), resp.GetTopology().GetVersion(), err)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
}

// Move returns a copy of topo with version+1 in which slot s belongs to
// node to.
func Move(t testing.TB, topo *topology.Topology, s uint16, to string) *topology.Topology {
	t.Helper()
	next, err := topo.Reassign(slot.FromSlots([]uint16{s}), to)
	if err != nil {
		t.Fatal(err)
	}
	return next
}

// Restart stops the node by pid (SIGTERM, a clean shutdown) and starts it
// again on the same data directory and the same ports, as an operator's
// restart does: the topology names its addresses.
//
// A node a test killed (Proc.Kill) is simply started again: its exit status
// is the kill's, not a failed shutdown.
func (c *Cluster) Restart(t testing.TB, n *Node) {
	t.Helper()
	select {
	case <-n.Proc.Done():
	default:
		if err := n.Proc.Stop(); err != nil {
			t.Fatalf("stop %s (pid %d): %v", n.ID, n.Proc.Pid(), err)
		}
	}
	n.Proc = proctest.StartWith(t, proctest.Options{Env: c.env}, proctest.Bin(t, "slotkv-storage"), c.args(n.ID, n.DataDir, n.Proc.GRPC, n.Proc.HTTP, n.Proc.RESP)...)
}

func (c *Cluster) args(id, dir, grpcAddr, httpAddr, respAddr string) []string {
	args := []string{"--node-id", id, "--data-dir", dir, "--grpc-addr", grpcAddr, "--http-addr", httpAddr}
	if c.resp && respAddr != "" {
		args = append(args, "--resp-addr", respAddr)
	}
	if c.Token != "" {
		args = append(args, "--token", c.Token)
	}
	args = append(args, c.EtcdArgs()...)
	return append(args, c.extra...)
}
