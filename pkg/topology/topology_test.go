package topology

import (
	"errors"
	"strings"
	"testing"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/pkg/slot"
	"google.golang.org/protobuf/proto"
)

func nodes(ids ...string) []Node {
	var out []Node
	for _, id := range ids {
		out = append(out, Node{ID: id, GRPCAddress: id + ":1", HTTPAddress: id + ":2"})
	}
	return out
}

func TestEvenMatchesRedis(t *testing.T) {
	t.Parallel()
	top, err := Even(1, nodes("c", "a", "b"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]slot.Range{"c": {Start: 0, End: 5460}, "a": {Start: 5461, End: 10922}, "b": {Start: 10923, End: 16383}}
	for id, r := range want {
		got := top.RangesOf(id)
		if len(got) != 1 || got[0] != r {
			t.Errorf("RangesOf(%s) = %v, want %v", id, got, r)
		}
		for _, s := range []uint16{r.Start, r.End} {
			if n, ok := top.Owner(s); !ok || n.ID != id {
				t.Errorf("Owner(%d) = %v %v, want %s", s, n, ok, id)
			}
		}
	}
}

func TestCanonicalFormIgnoresOrder(t *testing.T) {
	t.Parallel()
	a, err := New(3, nodes("a", "b"), map[string][]slot.Range{"a": {{Start: 0, End: 9}, {Start: 10, End: 20}}, "b": {{Start: 100, End: 200}}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(3, nodes("b", "a"), map[string][]slot.Range{"b": {{Start: 100, End: 200}}, "a": {{Start: 10, End: 20}, {Start: 0, End: 9}}})
	if err != nil {
		t.Fatal(err)
	}
	if !a.Equal(b) || !proto.Equal(a.Proto(), b.Proto()) {
		t.Fatalf("same content, different form:\n%v\n%v", a.Proto(), b.Proto())
	}
	if got := a.Proto().GetAssignments()[0].GetRanges(); len(got) != 1 || got[0].GetEnd() != 20 {
		t.Fatalf("adjacent ranges not merged: %v", got)
	}
	rt, err := FromProto(a.Proto())
	if err != nil || !rt.Equal(a) {
		t.Fatalf("round trip: %v %v", rt, err)
	}
	if _, ok := a.Owner(50); ok {
		t.Fatal("slot 50 is unassigned")
	}
	c, _ := New(4, nodes("a", "b"), map[string][]slot.Range{"a": {{Start: 0, End: 20}}, "b": {{Start: 100, End: 200}}})
	if a.Equal(c) || !a.SameLayout(c) {
		t.Fatal("versions differ, layout same")
	}
}

func TestFromProtoErrors(t *testing.T) {
	t.Parallel()
	n := func(id, addr string) *clusterv1.Node { return &clusterv1.Node{Id: id, GrpcAddress: addr} }
	r := func(s, e uint32) *clusterv1.SlotRange { return &clusterv1.SlotRange{Start: s, End: e} }
	tests := []struct {
		name, field, text string
		p                 *clusterv1.Topology
	}{
		{"nil", "topology", "missing", nil},
		{"version zero", "topology.version", "at least 1", &clusterv1.Topology{}},
		{"empty id", "topology.nodes[0].id", "empty", &clusterv1.Topology{Version: 1, Nodes: []*clusterv1.Node{n("", "x:1")}}},
		{"no address", "topology.nodes[0].grpc_address", `"a"`, &clusterv1.Topology{Version: 1, Nodes: []*clusterv1.Node{n("a", "")}}},
		{"duplicate id", "topology.nodes[1].id", `"a"`, &clusterv1.Topology{Version: 1, Nodes: []*clusterv1.Node{n("a", "x:1"), n("a", "x:2")}}},
		{"unknown node", "topology.assignments[0].node_id", `"zz"`, &clusterv1.Topology{Version: 1, Nodes: []*clusterv1.Node{n("a", "x:1")},
			Assignments: []*clusterv1.Assignment{{NodeId: "zz", Ranges: []*clusterv1.SlotRange{r(0, 1)}}}}},
		{"out of range", "topology.assignments[0].ranges[0]", "16384", &clusterv1.Topology{Version: 1, Nodes: []*clusterv1.Node{n("a", "x:1")},
			Assignments: []*clusterv1.Assignment{{NodeId: "a", Ranges: []*clusterv1.SlotRange{r(0, 16384)}}}}},
		{"reversed", "topology.assignments[0].ranges[0]", "starts after", &clusterv1.Topology{Version: 1, Nodes: []*clusterv1.Node{n("a", "x:1")},
			Assignments: []*clusterv1.Assignment{{NodeId: "a", Ranges: []*clusterv1.SlotRange{r(9, 3)}}}}},
		{"double assignment", "topology.assignments[1].ranges[0]", "slot 5 is assigned to both", &clusterv1.Topology{Version: 1,
			Nodes:       []*clusterv1.Node{n("a", "x:1"), n("b", "x:2")},
			Assignments: []*clusterv1.Assignment{{NodeId: "a", Ranges: []*clusterv1.SlotRange{r(0, 5)}}, {NodeId: "b", Ranges: []*clusterv1.SlotRange{r(5, 9)}}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := FromProto(tc.p)
			var fe *rpcerr.FieldError
			if !errors.As(err, &fe) || !errors.Is(err, rpcerr.ErrInvalidArgument) {
				t.Fatalf("err = %v, want a FieldError", err)
			}
			if fe.Field != tc.field || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("err = %v (field %s), want field %s containing %q", err, fe.Field, tc.field, tc.text)
			}
		})
	}
}

func TestReassign(t *testing.T) {
	t.Parallel()
	v1, err := Even(1, nodes("a", "b", "c"))
	if err != nil {
		t.Fatal(err)
	}
	moved := slot.MustParseRangeSet("0-9,5461")
	v2, err := v1.Reassign(moved, "c")
	if err != nil {
		t.Fatal(err)
	}
	if v2.Version() != 2 || v1.Version() != 1 {
		t.Fatalf("versions %d %d", v1.Version(), v2.Version())
	}
	for s := range moved.All() {
		if n, _ := v2.Owner(s); n.ID != "c" {
			t.Errorf("slot %d owned by %s, want c", s, n.ID)
		}
		if n, _ := v1.Owner(s); n.ID == "c" {
			t.Errorf("v1 changed: slot %d owned by c", s)
		}
	}
	if got := slot.MustParseRangeSet("10-5460"); !mustSet(t, v2.RangesOf("a")).Equal(got) {
		t.Errorf("a keeps %v, want %v", v2.RangesOf("a"), got)
	}
	if _, err := FromProto(v2.Proto()); err != nil {
		t.Fatalf("reassigned topology invalid: %v", err)
	}
	if _, err := v1.Reassign(moved, "zz"); !errors.Is(err, rpcerr.ErrInvalidArgument) {
		t.Fatalf("unknown node: %v", err)
	}
}

func mustSet(t *testing.T, rs []slot.Range) slot.RangeSet {
	t.Helper()
	s, err := slot.NewRangeSet(rs...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
