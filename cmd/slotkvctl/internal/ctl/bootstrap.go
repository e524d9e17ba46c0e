package ctl

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"

	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/topology"
)

// NodeRanges is a parsed --ranges value: slot ranges per node id, in the
// order the ids were written.
type NodeRanges struct {
	IDs    []string
	Ranges map[string]slot.RangeSet
}

// ParseNodeRanges parses "n1=0-5460,n2=5461-10922,n3=10923-16383". A node
// may have several ranges: "n1=0-100,200-300,n2=101-199" (an item without
// "=" belongs to the node before it); ";" separates items too.
func ParseNodeRanges(s string) (NodeRanges, error) {
	out := NodeRanges{Ranges: map[string]slot.RangeSet{}}
	if strings.TrimSpace(s) == "" {
		return out, fmt.Errorf("--ranges: empty")
	}
	parts := map[string][]string{}
	cur := ""
	for item := range strings.FieldsFuncSeq(s, func(r rune) bool { return r == ',' || r == ';' }) {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if id, rs, ok := strings.Cut(item, "="); ok {
			id = strings.TrimSpace(id)
			if id == "" {
				return out, fmt.Errorf("--ranges: %q: empty node id before '='", item)
			}
			if _, dup := parts[id]; dup {
				return out, fmt.Errorf("--ranges: node %q is given twice (write its ranges together: %s=0-10,20-30)", id, id)
			}
			cur = id
			out.IDs = append(out.IDs, id)
			item = rs
		} else if cur == "" {
			return out, fmt.Errorf("--ranges: %q: expected node=ranges, e.g. n1=0-5460", item)
		}
		parts[cur] = append(parts[cur], strings.TrimSpace(item))
	}
	if len(out.IDs) == 0 {
		return out, fmt.Errorf("--ranges: no node=ranges item in %q", s)
	}
	for _, id := range out.IDs {
		rs, err := slot.ParseRangeSet(strings.Join(parts[id], ","))
		if err != nil {
			return out, fmt.Errorf("--ranges: node %s: %w", id, err)
		}
		out.Ranges[id] = rs
	}
	return out, nil
}

// BootstrapOptions configures BootstrapEtcd.
type BootstrapOptions struct {
	// Storage lists the gRPC addresses of the nodes, in the order slots are
	// split when Ranges is empty.
	Storage []string
	// Ranges, when set, gives each node id its slots ("n1=0-5460,...").
	Ranges string
	Conn   ConnOptions
}

// NodeOutcome is what bootstrap did on one node.
type NodeOutcome struct {
	Node    topology.Node
	Ranges  slot.RangeSet
	Changed bool // false when the node already held this topology
}

// BootstrapResult describes a bootstrap run.
type BootstrapResult struct {
	// AlreadyAt is set when every node already holds a topology of a
	// version above 1: nothing was changed.
	AlreadyAt uint64
	// Topology is the version 1 topology installed (nil with AlreadyAt).
	Topology *topology.Topology
	Nodes    []NodeOutcome
	// Unassigned are the slots no node serves (explicit ranges only).
	Unassigned slot.RangeSet
	// Etcd is the etcd key the topology was written to, or is already at
	// (BootstrapEtcd); empty when the nodes were given it directly.
	Etcd string
	// StaleAddresses, with AlreadyAt, lists the nodes whose addresses in
	// the topology differ from what they report now (e.g. a RESP address
	// added after bootstrap), as "n1 resp \"\" -> storage1:6379".
	StaleAddresses []string
}

type probed struct {
	addr string
	node topology.Node
	nc   storagev1.NodeServiceClient
}

// identify asks every node at addrs who it is (GetNodeInfo): its id and
// the addresses it advertises. Two nodes with one id are an error.
func identify(ctx context.Context, pool *pool, addrs []string) ([]probed, error) {
	nodes := make([]probed, 0, len(addrs))
	byID := map[string]string{}
	for _, addr := range addrs {
		nc, err := pool.node(addr)
		if err != nil {
			return nil, err
		}
		info, err := nc.GetNodeInfo(ctx, &storagev1.GetNodeInfoRequest{})
		if err != nil {
			return nil, fmt.Errorf("storage node at %s: GetNodeInfo: %w", addr, describe(err))
		}
		n := info.GetNode()
		if n.GetId() == "" {
			return nil, fmt.Errorf("storage node at %s did not report its node id", addr)
		}
		if prev, dup := byID[n.GetId()]; dup {
			return nil, fmt.Errorf("storage nodes at %s and %s both report node id %q: every node needs its own --node-id", prev, addr, n.GetId())
		}
		byID[n.GetId()] = addr
		nodes = append(nodes, probed{addr: addr, nc: nc, node: topology.Node{
			ID:          n.GetId(),
			GRPCAddress: advertised(n.GetGrpcAddress(), addr),
			HTTPAddress: n.GetHttpAddress(),
			RESPAddress: n.GetRespAddress(),
		}})
	}
	return nodes, nil
}

// advertised is the address a node reports, unless it is missing or has
// no usable host (":7001", "0.0.0.0:7001"), in which case the address the
// operator reached it at is used.
func advertised(reported, dialed string) string {
	host, _, err := net.SplitHostPort(reported)
	if reported == "" || err != nil {
		return dialed
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		return dialed
	}
	return reported
}

// buildVersion1 builds the first topology of nodes: slots split evenly in
// their order, or as ranges ("n1=0-5460,...") says; it returns the slots
// no node serves (explicit ranges only). where names the nodes in errors.
func buildVersion1(nodes []topology.Node, ranges, where string) (*topology.Topology, slot.RangeSet, error) {
	var unassigned slot.RangeSet
	if ranges == "" {
		t, err := topology.Even(1, nodes)
		if err != nil {
			return nil, unassigned, fmt.Errorf("building topology version 1: %w", err)
		}
		return t, unassigned, nil
	}
	explicit, err := ParseNodeRanges(ranges)
	if err != nil {
		return nil, unassigned, err
	}
	var ids []string
	for _, n := range nodes {
		ids = append(ids, n.ID)
	}
	byRange := map[string][]slot.Range{}
	var assigned slot.RangeSet
	for _, id := range explicit.IDs {
		if !slices.Contains(ids, id) {
			return nil, unassigned, fmt.Errorf("--ranges names node %q, which is not among %s (%s)", id, where, strings.Join(ids, ", "))
		}
		rs := explicit.Ranges[id]
		if assigned.Overlaps(rs) {
			return nil, unassigned, fmt.Errorf("--ranges: slots %s of node %s are given to another node too", assigned.Intersect(rs), id)
		}
		assigned = assigned.Union(rs)
		byRange[id] = rs.Ranges()
	}
	t, err := topology.New(1, nodes, byRange)
	if err != nil {
		return nil, unassigned, fmt.Errorf("building topology version 1: %w", err)
	}
	return t, slot.Full().Subtract(assigned), nil
}
