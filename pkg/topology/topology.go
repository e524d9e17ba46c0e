// Package topology holds the versioned map of slots to storage nodes that
// every slotkv service routes by, with its validation and canonical form.
//
// A Topology is immutable once built: a slot lookup is one array index, so the
// router and storage nodes can share one value across goroutines and swap it
// atomically when a newer version arrives.
package topology

import (
	"cmp"
	"fmt"
	"slices"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/pkg/slot"
)

// Node is one storage node of a topology.
type Node struct {
	ID          string
	GRPCAddress string
	HTTPAddress string
	// RESPAddress is the node's Redis-protocol listener, "" when none.
	RESPAddress string
}

// Topology maps each slot to at most one node. Slots no node serves are
// allowed (an operator may assign part of the space); a request for one gets
// rpcerr.ErrSlotUnassigned.
type Topology struct {
	version uint64
	nodes   []Node // sorted by ID
	owner   [slot.Count]int16
}

const unassigned = -1

// New builds a topology from nodes and the slot ranges of each node id.
func New(version uint64, nodes []Node, ranges map[string][]slot.Range) (*Topology, error) {
	p := &clusterv1.Topology{Version: version}
	for _, n := range nodes {
		p.Nodes = append(p.Nodes, &clusterv1.Node{Id: n.ID, GrpcAddress: n.GRPCAddress, HttpAddress: n.HTTPAddress, RespAddress: n.RESPAddress})
	}
	ids := make([]string, 0, len(ranges))
	for id := range ranges {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		a := &clusterv1.Assignment{NodeId: id}
		for _, r := range ranges[id] {
			a.Ranges = append(a.Ranges, &clusterv1.SlotRange{Start: uint32(r.Start), End: uint32(r.End)})
		}
		p.Assignments = append(p.Assignments, a)
	}
	return FromProto(p)
}

// Even splits all slots into len(nodes) contiguous ranges, in the order the
// nodes are given, the way Redis Cluster does (sizes differ by at most one).
func Even(version uint64, nodes []Node) (*Topology, error) {
	if len(nodes) == 0 {
		return nil, rpcerr.InvalidField("nodes", "at least one node is needed")
	}
	ranges := make(map[string][]slot.Range, len(nodes))
	for i, set := range slot.Even(len(nodes)) {
		ranges[nodes[i].ID] = append(ranges[nodes[i].ID], set.Ranges()...)
	}
	return New(version, nodes, ranges)
}

// FromProto validates p and builds a Topology. Errors are *rpcerr.FieldError
// naming the offending field.
func FromProto(p *clusterv1.Topology) (*Topology, error) {
	if p == nil {
		return nil, rpcerr.InvalidField("topology", "missing")
	}
	if p.GetVersion() == 0 {
		return nil, rpcerr.InvalidField("topology.version", "must be at least 1")
	}
	t := &Topology{version: p.GetVersion()}
	seen := make(map[string]int, len(p.GetNodes()))
	for i, n := range p.GetNodes() {
		f := fmt.Sprintf("topology.nodes[%d]", i)
		switch {
		case n.GetId() == "":
			return nil, rpcerr.InvalidField(f+".id", "empty node id")
		case n.GetGrpcAddress() == "":
			return nil, rpcerr.InvalidField(f+".grpc_address", "node %q has no gRPC address", n.GetId())
		}
		if j, dup := seen[n.GetId()]; dup {
			return nil, rpcerr.InvalidField(f+".id", "node id %q repeats topology.nodes[%d]", n.GetId(), j)
		}
		seen[n.GetId()] = i
		t.nodes = append(t.nodes, Node{ID: n.GetId(), GRPCAddress: n.GetGrpcAddress(), HTTPAddress: n.GetHttpAddress(), RESPAddress: n.GetRespAddress()})
	}
	slices.SortFunc(t.nodes, func(a, b Node) int { return cmp.Compare(a.ID, b.ID) })
	index := make(map[string]int16, len(t.nodes))
	for i, n := range t.nodes {
		index[n.ID] = int16(i)
	}
	for i := range t.owner {
		t.owner[i] = unassigned
	}
	for i, a := range p.GetAssignments() {
		f := fmt.Sprintf("topology.assignments[%d]", i)
		ni, ok := index[a.GetNodeId()]
		if !ok {
			return nil, rpcerr.InvalidField(f+".node_id", "node %q is not in topology.nodes", a.GetNodeId())
		}
		for j, r := range a.GetRanges() {
			rf := fmt.Sprintf("%s.ranges[%d]", f, j)
			if r.GetStart() >= slot.Count || r.GetEnd() >= slot.Count {
				return nil, rpcerr.InvalidField(rf, "range %d-%d is out of 0-%d", r.GetStart(), r.GetEnd(), slot.Count-1)
			}
			if r.GetStart() > r.GetEnd() {
				return nil, rpcerr.InvalidField(rf, "range %d-%d starts after it ends", r.GetStart(), r.GetEnd())
			}
			for s := r.GetStart(); s <= r.GetEnd(); s++ {
				if prev := t.owner[s]; prev != unassigned {
					return nil, rpcerr.InvalidField(rf, "slot %d is assigned to both %q and %q", s, t.nodes[prev].ID, a.GetNodeId())
				}
				t.owner[s] = ni
			}
		}
	}
	return t, nil
}

// Version is the topology version; higher wins.
func (t *Topology) Version() uint64 { return t.version }

// Nodes returns the nodes sorted by id.
func (t *Topology) Nodes() []Node { return slices.Clone(t.nodes) }

// Node returns the node with id.
func (t *Topology) Node(id string) (Node, bool) {
	i, ok := slices.BinarySearchFunc(t.nodes, id, func(n Node, id string) int { return cmp.Compare(n.ID, id) })
	if !ok {
		return Node{}, false
	}
	return t.nodes[i], true
}

// Owner returns the node serving slot s, false when none does.
func (t *Topology) Owner(s uint16) (Node, bool) {
	if int(s) >= slot.Count || t.owner[s] == unassigned {
		return Node{}, false
	}
	return t.nodes[t.owner[s]], true
}

// RangesOf returns the slot ranges of node id, merged and sorted.
func (t *Topology) RangesOf(id string) []slot.Range {
	var out []slot.Range
	want, ok := t.indexOf(id)
	if !ok {
		return nil
	}
	for s := 0; s < slot.Count; s++ {
		if t.owner[s] != want {
			continue
		}
		if n := len(out); n > 0 && int(out[n-1].End)+1 == s {
			out[n-1].End = uint16(s)
			continue
		}
		out = append(out, slot.Range{Start: uint16(s), End: uint16(s)})
	}
	return out
}

func (t *Topology) indexOf(id string) (int16, bool) {
	i, ok := slices.BinarySearchFunc(t.nodes, id, func(n Node, id string) int { return cmp.Compare(n.ID, id) })
	return int16(i), ok
}

// Proto returns the canonical wire form: nodes and assignments sorted by node
// id, each node's ranges merged. Two topologies with the same content have the
// same canonical form whatever order they were given in.
func (t *Topology) Proto() *clusterv1.Topology {
	p := &clusterv1.Topology{Version: t.version}
	for _, n := range t.nodes {
		p.Nodes = append(p.Nodes, &clusterv1.Node{Id: n.ID, GrpcAddress: n.GRPCAddress, HttpAddress: n.HTTPAddress, RespAddress: n.RESPAddress})
		rs := t.RangesOf(n.ID)
		if len(rs) == 0 {
			continue
		}
		a := &clusterv1.Assignment{NodeId: n.ID}
		for _, r := range rs {
			a.Ranges = append(a.Ranges, &clusterv1.SlotRange{Start: uint32(r.Start), End: uint32(r.End)})
		}
		p.Assignments = append(p.Assignments, a)
	}
	return p
}

// Equal reports whether t and o have the same version, nodes and assignments.
func (t *Topology) Equal(o *Topology) bool {
	if t == nil || o == nil {
		return t == o
	}
	return t.version == o.version && slices.Equal(t.nodes, o.nodes) && t.owner == o.owner
}

// SameLayout reports whether t and o have the same nodes and assignments,
// whatever their versions.
func (t *Topology) SameLayout(o *Topology) bool {
	return slices.Equal(t.nodes, o.nodes) && t.owner == o.owner
}

// Reassign returns a topology of version+1 in which every slot of ranges
// belongs to node to (which must be a node of t). It is how a migration's
// commit hands slots to their destination.
func (t *Topology) Reassign(ranges slot.RangeSet, to string) (*Topology, error) {
	ni, ok := t.indexOf(to)
	if !ok {
		return nil, rpcerr.InvalidField("node_id", "node %q is not in topology version %d", to, t.version)
	}
	next := &Topology{version: t.version + 1, nodes: slices.Clone(t.nodes), owner: t.owner}
	for s := range ranges.All() {
		next.owner[s] = ni
	}
	return next, nil
}
