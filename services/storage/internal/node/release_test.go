package node_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	"github.com/slotkv/slotkv/pkg/topology"
	"github.com/slotkv/slotkv/services/storage/internal/node"
	"github.com/slotkv/slotkv/services/storage/internal/store"
	"github.com/slotkv/slotkv/services/storage/internal/store/storetest"
)

// Slots 0-99 are OWNED by "a" throughout, so a turned import merges
// with them.

// moved is topo(version) with slots 100-149 given from "b" to "a".
func moved(version uint64) *clusterv1.Topology {
	p := topo(version)
	p.Assignments = []*clusterv1.Assignment{
		{NodeId: "b", Ranges: []*clusterv1.SlotRange{{Start: 150, End: 199}}},
		{NodeId: "a", Ranges: []*clusterv1.SlotRange{{Start: 0, End: 149}}},
	}
	return p
}

// releaseSet is a set of released jobs, safe for concurrent use.
type releaseSet struct {
	mu   sync.Mutex
	jobs map[string]bool
}

func (r *releaseSet) add(job string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.jobs == nil {
		r.jobs = map[string]bool{}
	}
	r.jobs[job] = true
}

func (r *releaseSet) has(job string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.jobs[job]
}

// mark sets the state of slots 100-149 on n.
func mark(t *testing.T, n *node.Node, k node.Kind, job string) {
	t.Helper()
	err := n.Transition(func(_ *topology.Topology, sl *node.Slots, _ *store.SystemTxn) error {
		for s := uint16(100); s <= 149; s++ {
			sl.Set(s, k, job, "b")
		}
		return nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
}

func states(n *node.Node, from, to uint16) string {
	var out []string
	for _, r := range n.States() {
		if r.Range.End < from || r.Range.Start > to {
			continue
		}
		out = append(out, fmt.Sprintf("%s:%s%s", r.Range, r.Kind, map[bool]string{true: "(" + r.JobID + ")", false: ""}[r.JobID != ""]))
	}
	return fmt.Sprint(out)
}

// TestImportRelease: with an import release predicate, a topology that
// assigns IMPORTING slots here turns them OWNED only for a released job;
// ReleaseImports turns them later, and only where the topology assigns them.
func TestImportRelease(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		gate        bool // SetImportRelease installed
		releaseAt   string
		wantHeld    []string
		wantInstall string // states of 100-149 after Install
		wantRelease string // after ReleaseImports("j1")
		wantTurned  string
	}{
		{"no gate: the topology decides", false, "", nil, "[0-149:OWNED]", "[0-149:OWNED]", "[]"},
		{"released before the topology", true, "before", nil, "[0-149:OWNED]", "[0-149:OWNED]", "[]"},
		{"released after the topology", true, "after", []string{"j1"}, "[100-149:IMPORTING(j1)]", "[0-149:OWNED]", "[100-149]"},
		{"never released", true, "", []string{"j1"}, "[100-149:IMPORTING(j1)]", "[100-149:IMPORTING(j1)]", "[]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			n := open(t, storetest.Open(t), "a")
			var rel releaseSet
			if tt.gate {
				n.SetImportRelease(rel.has)
			}
			if _, err := n.Install(topo(1)); err != nil {
				t.Fatal(err)
			}
			mark(t, n, node.Importing, "j1")
			if _, ok := n.ServedSince("j1"); ok {
				t.Fatal("ServedSince(j1) set while its slots are IMPORTING")
			}
			// Released while the topology does not assign the slots yet:
			// nothing to turn.
			if tt.releaseAt == "before" {
				rel.add("j1")
				if got, err := n.ReleaseImports("j1"); err != nil || len(got) != 0 {
					t.Fatalf("ReleaseImports before the topology = %v, %v; want nothing", got, err)
				}
				if err := n.CheckRead(120); err == nil {
					t.Fatal("slot 120 served before the topology assigns it")
				}
			}
			in, err := n.Install(moved(2))
			if err != nil || !in.Changed || in.Version != 2 {
				t.Fatalf("Install = %+v, %v", in, err)
			}
			if !slices.Equal(in.Held, tt.wantHeld) {
				t.Errorf("Held = %v, want %v", in.Held, tt.wantHeld)
			}
			if got := states(n, 100, 149); got != tt.wantInstall {
				t.Errorf("after Install: %s, want %s", got, tt.wantInstall)
			}
			installed, servedAtInstall := n.ServedSince("j1")
			if want := tt.wantInstall == "[0-149:OWNED]"; servedAtInstall != want {
				t.Errorf("after Install: ServedSince(j1) set = %v, want %v", servedAtInstall, want)
			}
			if tt.releaseAt == "after" {
				rel.add("j1")
			}
			turned, err := n.ReleaseImports("j1")
			if err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprint(turned); got != tt.wantTurned {
				t.Errorf("ReleaseImports turned %s, want %s", got, tt.wantTurned)
			}
			if got := states(n, 100, 149); got != tt.wantRelease {
				t.Errorf("after ReleaseImports: %s, want %s", got, tt.wantRelease)
			}
			served := n.CheckRead(120) == nil
			if want := tt.wantRelease == "[0-149:OWNED]"; served != want {
				t.Errorf("slot 120 served = %v, want %v", served, want)
			}
			// The pause ends at the first install that serves the slots;
			// a later one does not move it.
			since, ok := n.ServedSince("j1")
			if ok != served || (servedAtInstall && !since.Equal(installed)) {
				t.Errorf("ServedSince(j1) = %v, %v; want set = %v, at the Install (%v) when it served", since, ok, served, installed)
			}
			n.ForgetServed("j1")
			if _, ok := n.ServedSince("j1"); ok {
				t.Error("ServedSince(j1) still set after ForgetServed")
			}
		})
	}
}

// TestInstallHandedOff: a topology that takes MIGRATING or FROZEN slots away
// names their job; one that keeps them, or takes slots of no job, does not.
func TestInstallHandedOff(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		kind  node.Kind
		next  *clusterv1.Topology
		want  []string
		after string // states of 100-149 on "b"
	}{
		{"frozen given away", node.Frozen, moved(2), []string{"j1"}, "[]"},
		{"migrating given away", node.Migrating, moved(2), []string{"j1"}, "[]"},
		{"kept", node.Frozen, topo(2), nil, "[100-149:FROZEN(j1)]"},
		{"owned given away", node.Owned, moved(2), nil, "[]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			n := open(t, storetest.Open(t), "b")
			if _, err := n.Install(topo(1)); err != nil {
				t.Fatal(err)
			}
			job := "j1"
			if tt.kind == node.Owned {
				job = ""
			}
			mark(t, n, tt.kind, job)
			in, err := n.Install(tt.next)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(in.HandedOff, tt.want) {
				t.Errorf("HandedOff = %v, want %v", in.HandedOff, tt.want)
			}
			if got := states(n, 100, 149); got != tt.after {
				t.Errorf("states = %s, want %s", got, tt.after)
			}
		})
	}
}
