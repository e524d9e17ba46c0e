package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"text/tabwriter"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/topology"
	"github.com/slotkv/slotkv/pkg/topostore"
)

// With --etcd-endpoints the control plane's records in etcd are the
// cluster: bootstrap writes the first topology there (the storage nodes
// install it from their watch), topology reads it, and nodes lists the
// registrations next to it.

// BootstrapEtcd writes the first topology (version 1) to etcd, once: when
// etcd holds a topology already, nothing is written and the result says at
// which version (AlreadyAt). The nodes are those at opts.Storage (asked
// who they are, in that order), or, when none is given, the nodes
// registered in etcd (ordered by id).
func BootstrapEtcd(ctx context.Context, st *topostore.Store, opts BootstrapOptions) (*BootstrapResult, error) {
	if opts.Ranges != "" {
		// Checked before anything is asked.
		if _, err := ParseNodeRanges(opts.Ranges); err != nil {
			return nil, err
		}
	}
	cur, err := st.Load(ctx)
	switch {
	case err == nil:
		return &BootstrapResult{AlreadyAt: cur.Version(), Etcd: st.TopologyKey()}, nil
	case !errors.Is(err, topostore.ErrNotBootstrapped):
		return nil, err
	}

	var nodes []topology.Node
	where := "the nodes at --storage"
	if addrs := cleanAddrs(opts.Storage); len(addrs) > 0 {
		pool := newPool(opts.Conn)
		defer pool.Close()
		probed, err := identify(ctx, pool, addrs)
		if err != nil {
			return nil, err
		}
		for _, p := range probed {
			nodes = append(nodes, p.node)
		}
	} else {
		where = "the nodes registered in etcd"
		regs, err := st.Nodes(ctx)
		if err != nil {
			return nil, err
		}
		if len(regs) == 0 {
			return nil, fmt.Errorf("no storage node is registered in etcd under %s and no --storage is given: start the nodes with --etcd-endpoints, or name them with --storage", st.NodeKey(""))
		}
		for _, r := range regs {
			nodes = append(nodes, registered(r))
		}
	}
	t, unassigned, err := buildVersion1(nodes, opts.Ranges, where)
	if err != nil {
		return nil, err
	}
	stored, created, err := st.Bootstrap(ctx, t)
	if err != nil {
		return nil, err
	}
	if !created {
		// Another bootstrap came first, between the read and the write.
		return &BootstrapResult{AlreadyAt: stored.Version(), Etcd: st.TopologyKey()}, nil
	}
	res := &BootstrapResult{Topology: t, Unassigned: unassigned, Etcd: st.TopologyKey()}
	for _, n := range t.Nodes() {
		rs, _ := slot.NewRangeSet(t.RangesOf(n.ID)...)
		res.Nodes = append(res.Nodes, NodeOutcome{Node: n, Ranges: rs, Changed: true})
	}
	return res, nil
}

// registered is a node registration as a topology node.
func registered(n *clusterv1.Node) topology.Node {
	return topology.Node{ID: n.GetId(), GRPCAddress: n.GetGrpcAddress(), HTTPAddress: n.GetHttpAddress(), RESPAddress: n.GetRespAddress()}
}

// LoadTopology reads the topology from etcd.
func LoadTopology(ctx context.Context, st *topostore.Store) (*topology.Topology, error) {
	t, err := st.Load(ctx)
	if errors.Is(err, topostore.ErrNotBootstrapped) {
		return nil, fmt.Errorf("no topology in etcd at %s yet: run slotkvctl bootstrap --etcd-endpoints ...", st.TopologyKey())
	}
	return t, err
}

// EtcdNode is a node as `slotkvctl nodes --etcd-endpoints` shows it: one of
// the topology or of the registrations.
type EtcdNode struct {
	NodeStatus
	// Live: the node is registered (its lease is alive). A node of the
	// topology that is not registered is dead.
	Live bool
	// InTopology: the topology names the node (a live node outside it is
	// registered but serves no slot yet).
	InTopology bool
	// Topology is the node as the topology names it, when it does; Node
	// (of NodeStatus) is its registration when live, else this.
	Topology topology.Node
}

// Healthy reports whether the node is live, in the topology, answers and
// serves. A registered node outside the topology is not unwell.
func (n EtcdNode) Healthy() bool {
	return n.Live && (!n.InTopology || n.NodeStatus.Healthy())
}

// FetchNodesEtcd lists the nodes of the topology in etcd and the nodes
// registered there: live (registered) or dead (in the topology, not
// registered), ordered as the topology lists them, then the registered
// nodes outside it by id. Live nodes are asked for their health and node
// info at their registered address, all at once; dead ones are not called.
// The topology is nil before a bootstrap.
func FetchNodesEtcd(ctx context.Context, st *topostore.Store, o ConnOptions) (*topology.Topology, []EtcdNode, error) {
	t, err := st.Load(ctx)
	if err != nil && !errors.Is(err, topostore.ErrNotBootstrapped) {
		return nil, nil, err
	}
	regs, err := st.Nodes(ctx)
	if err != nil {
		return nil, nil, err
	}
	live := map[string]topology.Node{}
	for _, r := range regs {
		live[r.GetId()] = registered(r)
	}
	var out []EtcdNode
	if t != nil {
		for _, n := range t.Nodes() {
			owned, _ := slot.NewRangeSet(t.RangesOf(n.ID)...)
			e := EtcdNode{NodeStatus: NodeStatus{Node: n, Owned: owned, Health: "DEAD"}, InTopology: true, Topology: n}
			if r, ok := live[n.ID]; ok {
				e.Live, e.Node, e.Health = true, r, "UNREACHABLE"
				delete(live, n.ID)
			}
			out = append(out, e)
		}
	}
	for _, r := range regs {
		if n, ok := live[r.GetId()]; ok {
			out = append(out, EtcdNode{NodeStatus: NodeStatus{Node: n, Health: "UNREACHABLE"}, Live: true})
		}
	}
	p := newPool(o)
	defer p.Close()
	var wg sync.WaitGroup
	for i := range out {
		if out[i].Live {
			wg.Go(func() { out[i].fetch(ctx, p) })
		}
	}
	wg.Wait()
	return t, out, nil
}

// PrintNodesEtcd writes the nodes of FetchNodesEtcd as a table (or JSON).
func PrintNodesEtcd(w io.Writer, t *topology.Topology, nodes []EtcdNode, asJSON bool) error {
	var version uint64
	if t != nil {
		version = t.Version()
	}
	if asJSON {
		type nodeJSON struct {
			ID              string `json:"id"`
			State           string `json:"state"` // live or dead
			InTopology      bool   `json:"in_topology"`
			GRPCAddress     string `json:"grpc_address"`
			HTTPAddress     string `json:"http_address,omitempty"`
			RESPAddress     string `json:"resp_address,omitempty"`
			TopologyAddress string `json:"topology_grpc_address,omitempty"`
			Health          string `json:"health"`
			Error           string `json:"error,omitempty"`
			TopologyVersion uint64 `json:"topology_version,omitempty"`
			Keys            uint64 `json:"keys"`
			Slots           int    `json:"slots"`
			Ranges          string `json:"ranges"`
		}
		out := struct {
			TopologyVersion uint64     `json:"topology_version"`
			Live            int        `json:"live"`
			Dead            int        `json:"dead"`
			Nodes           []nodeJSON `json:"nodes"`
		}{TopologyVersion: version, Nodes: []nodeJSON{}}
		for _, n := range nodes {
			j := nodeJSON{ID: n.Node.ID, State: state(n), InTopology: n.InTopology, GRPCAddress: n.Node.GRPCAddress,
				HTTPAddress: n.Node.HTTPAddress, RESPAddress: n.Node.RESPAddress, Health: n.Health,
				TopologyVersion: n.Info.GetTopologyVersion(), Keys: n.Info.GetKeyCount(), Slots: n.Owned.Len(), Ranges: n.Owned.String()}
			if n.InTopology && n.Topology.GRPCAddress != n.Node.GRPCAddress {
				j.TopologyAddress = n.Topology.GRPCAddress
			}
			if n.Err != nil {
				j.Error = n.Err.Error()
			}
			if n.Live {
				out.Live++
			} else {
				out.Dead++
			}
			out.Nodes = append(out.Nodes, j)
		}
		return writeJSON(w, out)
	}
	live := 0
	for _, n := range nodes {
		if n.Live {
			live++
		}
	}
	if t == nil {
		fmt.Fprintf(w, "no topology in etcd yet (slotkvctl bootstrap writes the first); %d nodes registered\n", live)
	} else {
		fmt.Fprintf(w, "topology version %d, %d nodes: %d live, %d dead\n", version, len(nodes), live, len(nodes)-live)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATE\tGRPC\tHEALTH\tTOPOLOGY\tKEYS\tSLOTS\tRANGES")
	var notes []string
	for _, n := range nodes {
		topo, keys := "-", "-"
		if n.Info != nil {
			topo = fmt.Sprint(n.Info.GetTopologyVersion())
			if t != nil && n.Info.GetTopologyVersion() < t.Version() {
				topo += " (behind)"
			}
			keys = fmt.Sprint(n.Info.GetKeyCount())
		}
		switch {
		case n.Err != nil:
			notes = append(notes, fmt.Sprintf("error: %s at %s: %v", n.Node.ID, n.Node.GRPCAddress, n.Err))
		case !n.Live:
			notes = append(notes, fmt.Sprintf("dead: %s is in the topology (%d slots) but not registered in etcd", n.Node.ID, n.Owned.Len()))
		case !n.InTopology:
			notes = append(notes, fmt.Sprintf("note: %s is registered but not in the topology (serves no slot)", n.Node.ID))
		case n.Topology.GRPCAddress != n.Node.GRPCAddress:
			notes = append(notes, fmt.Sprintf("note: %s registered at %s, the topology names %s", n.Node.ID, n.Node.GRPCAddress, n.Topology.GRPCAddress))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", n.Node.ID, state(n), n.Node.GRPCAddress, n.Health, topo, keys,
			n.Owned.Len(), orDash(n.Owned.String()))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range notes {
		fmt.Fprintln(w, s)
	}
	return nil
}

func state(n EtcdNode) string {
	if n.Live {
		return "live"
	}
	return "dead"
}
