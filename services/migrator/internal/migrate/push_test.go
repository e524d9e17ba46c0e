package migrate

import (
	"testing"

	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/topology"
)

func TestNewerAssigns(t *testing.T) {
	nodes := []topology.Node{{ID: "a", GRPCAddress: "a:1"}, {ID: "b", GRPCAddress: "b:1"}}
	job := slot.MustParseRangeSet("10-19")
	mk := func(v uint64, toB string) *topology.Topology {
		t.Helper()
		b := slot.MustParseRangeSet(toB)
		a := slot.Full().Subtract(b)
		tp, err := topology.New(v, nodes, map[string][]slot.Range{"a": a.Ranges(), "b": b.Ranges()})
		if err != nil {
			t.Fatal(err)
		}
		return tp
	}
	for _, tc := range []struct {
		name string
		held *topology.Topology
		ok   bool
	}{
		{"newer, gives the slots", mk(3, "10-19,100"), true},
		{"same version, other content", mk(2, "10-19,100"), false},
		{"older", mk(1, "10-19"), false},
		{"newer, slots elsewhere", mk(3, "10-15"), false},
	} {
		err := newerAssigns(tc.held, 2, job, "b")
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

func TestCommittingOther(t *testing.T) {
	self := &job{id: "self", rec: &record{Committing: true}}
	done := &job{id: "done", rec: &record{Committing: true, PushedSource: true, PushedDestination: true}}
	early := &job{id: "early", rec: &record{}}
	m := &Manager{jobs: map[string]*job{"self": self, "done": done, "early": early}}
	if got := m.committingOther(self); got != "" {
		t.Fatalf("committingOther = %q, want none", got)
	}
	half := &job{id: "half", rec: &record{Committing: true, PushedSource: true}}
	m.jobs["half"] = half
	if got := m.committingOther(self); got != "half" {
		t.Fatalf("committingOther = %q, want half", got)
	}
}
