package ctl

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/topology"
)

// nodeTimeout bounds the calls to one node, so a node that hangs shows as
// unreachable instead of holding the whole command to its deadline.
const nodeTimeout = 5 * time.Second

// NodeStatus is one node of the topology as `slotkvctl nodes` shows it.
type NodeStatus struct {
	Node topology.Node
	// Slots the topology gives the node.
	Owned slot.RangeSet
	// Health is the node's gRPC health: SERVING, NOT_SERVING, or
	// UNREACHABLE when it did not answer (Err says why).
	Health string
	// Info is the node's own report; nil when it did not answer.
	Info *storagev1.GetNodeInfoResponse
	Err  error
}

// Healthy reports whether the node answered and serves.
func (n NodeStatus) Healthy() bool { return n.Health == "SERVING" && n.Err == nil }

// FetchNodes reads the newest topology from addrs and asks every node it
// lists (not only addrs) for its health and node info, all at once.
func FetchNodes(ctx context.Context, addrs []string, o ConnOptions) (*topology.Topology, []NodeStatus, error) {
	t, err := FetchTopology(ctx, addrs, o)
	if err != nil {
		return nil, nil, err
	}
	p := newPool(o)
	defer p.Close()
	nodes := t.Nodes()
	out := make([]NodeStatus, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		owned, _ := slot.NewRangeSet(t.RangesOf(n.ID)...)
		out[i] = NodeStatus{Node: n, Owned: owned, Health: "UNREACHABLE"}
		wg.Go(func() { out[i].fetch(ctx, p) })
	}
	wg.Wait()
	return t, out, nil
}

func (s *NodeStatus) fetch(ctx context.Context, p *pool) {
	ctx, cancel := context.WithTimeout(ctx, nodeTimeout)
	defer cancel()
	cc, err := p.conn(s.Node.GRPCAddress)
	if err != nil {
		s.Err = err
		return
	}
	h, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		s.Err = fmt.Errorf("health check: %w", describe(err))
		return
	}
	s.Health = h.GetStatus().String()
	info, err := storagev1.NewNodeServiceClient(cc).GetNodeInfo(ctx, &storagev1.GetNodeInfoRequest{})
	if err != nil {
		s.Err = fmt.Errorf("node info: %w", describe(err))
		return
	}
	s.Info = info
}

// slotStates lists a node's slots that are not plainly owned:
// "0-100 MIGRATING to n2 (job j1)".
func slotStates(info *storagev1.GetNodeInfoResponse) []string {
	var out []string
	for _, s := range info.GetSlotStates() {
		if s.GetState() == clusterv1.SlotState_SLOT_STATE_OWNED {
			continue
		}
		r := s.GetRange()
		line := fmt.Sprintf("%s %s", slot.Range{Start: uint16(r.GetStart()), End: uint16(r.GetEnd())},
			strings.TrimPrefix(s.GetState().String(), "SLOT_STATE_"))
		if peer := s.GetPeerNodeId(); peer != "" {
			line += " peer " + peer
		}
		if job := s.GetJobId(); job != "" {
			line += " (job " + job + ")"
		}
		out = append(out, line)
	}
	return out
}

// PrintNodes writes the nodes as a table (or JSON): health, keys, disk,
// the slots the topology gives each and the slots in another state.
func PrintNodes(w io.Writer, t *topology.Topology, nodes []NodeStatus, asJSON bool) error {
	if asJSON {
		type nodeJSON struct {
			ID              string   `json:"id"`
			GRPCAddress     string   `json:"grpc_address"`
			HTTPAddress     string   `json:"http_address,omitempty"`
			Health          string   `json:"health"`
			Error           string   `json:"error,omitempty"`
			TopologyVersion uint64   `json:"topology_version,omitempty"`
			Keys            uint64   `json:"keys"`
			LSMBytes        int64    `json:"lsm_bytes"`
			VlogBytes       int64    `json:"vlog_bytes"`
			Slots           int      `json:"slots"`
			Ranges          string   `json:"ranges"`
			SlotStates      []string `json:"slot_states,omitempty"`
		}
		out := struct {
			TopologyVersion uint64     `json:"topology_version"`
			Nodes           []nodeJSON `json:"nodes"`
		}{TopologyVersion: t.Version()}
		for _, n := range nodes {
			j := nodeJSON{ID: n.Node.ID, GRPCAddress: n.Node.GRPCAddress, HTTPAddress: n.Node.HTTPAddress, Health: n.Health,
				TopologyVersion: n.Info.GetTopologyVersion(), Keys: n.Info.GetKeyCount(), LSMBytes: n.Info.GetLsmBytes(),
				VlogBytes: n.Info.GetVlogBytes(), Slots: n.Owned.Len(), Ranges: n.Owned.String(), SlotStates: slotStates(n.Info)}
			if n.Err != nil {
				j.Error = n.Err.Error()
			}
			out.Nodes = append(out.Nodes, j)
		}
		return writeJSON(w, out)
	}
	fmt.Fprintf(w, "topology version %d, %d nodes\n", t.Version(), len(nodes))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tGRPC\tHEALTH\tTOPOLOGY\tKEYS\tDISK\tSLOTS\tRANGES\tSLOT STATES")
	var errs []string
	for _, n := range nodes {
		topo, keys, disk, states := "-", "-", "-", "-"
		if n.Info != nil {
			topo = fmt.Sprint(n.Info.GetTopologyVersion())
			if n.Info.GetTopologyVersion() < t.Version() {
				topo += " (behind)"
			}
			keys = fmt.Sprint(n.Info.GetKeyCount())
			disk = bytesString(n.Info.GetLsmBytes() + n.Info.GetVlogBytes())
			if s := slotStates(n.Info); len(s) > 0 {
				states = strings.Join(s, "; ")
			}
		}
		if n.Err != nil {
			errs = append(errs, fmt.Sprintf("%s at %s: %v", n.Node.ID, n.Node.GRPCAddress, n.Err))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", n.Node.ID, n.Node.GRPCAddress, n.Health, topo, keys, disk,
			n.Owned.Len(), orDash(n.Owned.String()), states)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, e := range errs {
		fmt.Fprintf(w, "error: %s\n", e)
	}
	return nil
}
