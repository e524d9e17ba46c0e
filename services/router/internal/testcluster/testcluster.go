// Package testcluster starts real slotkv storage nodes (as processes, via
// pkg/proctest) for the router's tests and gives them topologies directly
// through NodeService.SetTopology.
package testcluster

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/proctest"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/topology"
)

// Options tunes Start.
type Options struct {
	// Token is the cluster token of every node ("" = open).
	Token string
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
	return topology.Node{ID: n.ID, GRPCAddress: n.Proc.GRPC, HTTPAddress: n.Proc.HTTP}
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
}

// Start runs n storage nodes with ids n1..nN, each with its own data
// directory under t.TempDir(), listening on 127.0.0.1:0. They are stopped by
// pid when the test ends. They hold no topology yet.
func Start(t testing.TB, n int, o Options) *Cluster {
	t.Helper()
	bin := proctest.Bin(t, "slotkv-storage")
	c := &Cluster{Nodes: make([]*Node, n), Token: o.Token}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		id := fmt.Sprintf("n%d", i+1)
		dir := filepath.Join(t.TempDir(), id)
		wg.Go(func() {
			args := []string{"--node-id", id, "--data-dir", dir, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"}
			if o.Token != "" {
				args = append(args, "--token", o.Token)
			}
			// On failure proctest.Start marks the test failed and ends
			// this goroutine; the nil node is reported below.
			p := proctest.Start(t, bin, args...)
			cc, err := dial.New(p.GRPC, dial.Options{Token: o.Token})
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

// SetTopology pushes topo to every node.
func (c *Cluster) SetTopology(t testing.TB, topo *topology.Topology) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, n := range c.Nodes {
		if _, err := n.NodeClient().SetTopology(ctx, &storagev1.SetTopologyRequest{Topology: topo.Proto()}); err != nil {
			t.Fatalf("SetTopology v%d on %s: %v", topo.Version(), n.ID, err)
		}
	}
}

// Move returns a copy of topo with version+1 in which slot s belongs to
// node to.
func Move(t testing.TB, topo *topology.Topology, s uint16, to string) *topology.Topology {
	t.Helper()
	ranges := map[string][]slot.Range{}
	for _, n := range topo.Nodes() {
		set, err := slot.NewRangeSet(topo.RangesOf(n.ID)...)
		if err != nil {
			t.Fatal(err)
		}
		one := slot.FromSlots([]uint16{s})
		set = set.Subtract(one)
		if n.ID == to {
			set = set.Union(one)
		}
		ranges[n.ID] = set.Ranges()
	}
	next, err := topology.New(topo.Version()+1, topo.Nodes(), ranges)
	if err != nil {
		t.Fatal(err)
	}
	return next
}
