package node_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/services/storage/internal/node"
	"github.com/slotkv/slotkv/services/storage/internal/store"
	"github.com/slotkv/slotkv/services/storage/internal/store/storetest"
)

// topo builds a topology where "a" owns 0-99, "b" owns 100-199 and 200+ is
// unassigned.
func topo(version uint64) *clusterv1.Topology {
	return &clusterv1.Topology{
		Version: version,
		Nodes: []*clusterv1.Node{
			{Id: "a", GrpcAddress: "10.0.0.1:7000", HttpAddress: "10.0.0.1:8000"},
			{Id: "b", GrpcAddress: "10.0.0.2:7000"},
		},
		Assignments: []*clusterv1.Assignment{
			{NodeId: "b", Ranges: []*clusterv1.SlotRange{{Start: 100, End: 199}}},
			{NodeId: "a", Ranges: []*clusterv1.SlotRange{{Start: 0, End: 49}, {Start: 50, End: 99}}},
		},
	}
}

func open(t *testing.T, st *store.Store, id string) *node.Node {
	t.Helper()
	n, err := node.Open(st, id)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestNoTopology(t *testing.T) {
	t.Parallel()
	n := open(t, storetest.Open(t), "a")
	if n.Topology() != nil || len(n.States()) != 0 {
		t.Fatal("fresh node has a topology or slot states")
	}
	for _, err := range []error{n.CheckRead(0), n.CheckWrite(5), n.CheckRanges([]slot.Range{{Start: 0, End: 10}})} {
		if !errors.Is(err, rpcerr.ErrNoTopology) {
			t.Errorf("err = %v, want ErrNoTopology", err)
		}
	}
}

func TestChecks(t *testing.T) {
	t.Parallel()
	n := open(t, storetest.Open(t), "a")
	v, changed, err := n.SetTopology(topo(3))
	if err != nil || v != 3 || !changed {
		t.Fatalf("SetTopology = %d, %v, %v", v, changed, err)
	}
	tests := []struct {
		slot      uint16
		moved     bool
		wantError error
	}{
		{0, false, nil},
		{99, false, nil},
		{100, true, rpcerr.ErrSlotMoved},
		{199, true, rpcerr.ErrSlotMoved},
		{200, false, rpcerr.ErrSlotUnassigned},
		{slot.MaxSlot, false, rpcerr.ErrSlotUnassigned},
	}
	for _, tt := range tests {
		for _, err := range []error{n.CheckRead(tt.slot), n.CheckWrite(tt.slot)} {
			if !errors.Is(err, tt.wantError) && !(tt.wantError == nil && err == nil) {
				t.Errorf("slot %d: err = %v, want %v", tt.slot, err, tt.wantError)
			}
			if tt.moved {
				var sm *rpcerr.SlotMovedError
				if !errors.As(err, &sm) {
					t.Fatalf("slot %d: %T is not a SlotMovedError", tt.slot, err)
				}
				want := rpcerr.SlotMovedError{Slot: tt.slot, OwnerID: "b", OwnerAddress: "10.0.0.2:7000", Version: 3}
				if *sm != want {
					t.Errorf("slot %d: %+v, want %+v", tt.slot, *sm, want)
				}
			}
		}
	}
	err = n.CheckRanges([]slot.Range{{Start: 0, End: 99}, {Start: 10, End: 150}})
	var sm *rpcerr.SlotMovedError
	if !errors.As(err, &sm) || sm.Slot != 100 {
		t.Errorf("CheckRanges: err = %v, want slot 100 moved", err)
	}
	if err := n.CheckRanges([]slot.Range{{Start: 0, End: 99}}); err != nil {
		t.Errorf("CheckRanges of owned slots: %v", err)
	}
	if got := n.Served(); len(got) != 1 || got[0] != (slot.Range{Start: 0, End: 99}) {
		t.Errorf("Served = %v, want [0-99]", got)
	}
	st := n.States()
	if len(st) != 1 || st[0].Kind != node.Owned || st[0].Range != (slot.Range{Start: 0, End: 99}) {
		t.Errorf("States = %+v", st)
	}
	if n.State(5) != node.Owned || n.State(150) != node.None {
		t.Errorf("State(5) = %v, State(150) = %v", n.State(5), n.State(150))
	}
}

func TestSetTopologyVersions(t *testing.T) {
	t.Parallel()
	n := open(t, storetest.Open(t), "a")
	if _, _, err := n.SetTopology(topo(5)); err != nil {
		t.Fatal(err)
	}
	reordered := topo(5)
	reordered.Nodes[0], reordered.Nodes[1] = reordered.Nodes[1], reordered.Nodes[0]
	changedLayout := topo(5)
	changedLayout.Assignments[0].Ranges[0].End = 150
	older := topo(4)
	newer := topo(6)
	newer.Assignments[1].Ranges = []*clusterv1.SlotRange{{Start: 0, End: 9}}
	invalid := topo(7)
	invalid.Assignments[0].NodeId = "ghost"

	tests := []struct {
		name        string
		p           *clusterv1.Topology
		wantVersion uint64
		wantChanged bool
		wantErr     error
		wantMsg     []string
	}{
		{"same version identical", topo(5), 5, false, nil, nil},
		{"same version identical in another order", reordered, 5, false, nil, nil},
		{"older", older, 5, false, rpcerr.ErrStaleTopology, []string{"4", "5"}},
		{"same version different", changedLayout, 5, false, rpcerr.ErrStaleTopology, []string{"differs"}},
		{"invalid", invalid, 0, false, rpcerr.ErrInvalidArgument, []string{"ghost"}},
		{"missing", nil, 0, false, rpcerr.ErrInvalidArgument, []string{"topology"}},
		{"newer", newer, 6, true, nil, nil},
	}
	for _, tt := range tests { // sequential: each case builds on the last
		v, changed, err := n.SetTopology(tt.p)
		if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.wantErr)
			continue
		}
		for _, m := range tt.wantMsg {
			if !strings.Contains(err.Error(), m) {
				t.Errorf("%s: error %q does not mention %q", tt.name, err, m)
			}
		}
		if err == nil && (v != tt.wantVersion || changed != tt.wantChanged) {
			t.Errorf("%s: version %d changed %v, want %d %v", tt.name, v, changed, tt.wantVersion, tt.wantChanged)
		}
	}
	if got := n.Topology().Version(); got != 6 {
		t.Fatalf("held version %d, want 6", got)
	}
	if err := n.CheckRead(50); !errors.Is(err, rpcerr.ErrSlotUnassigned) {
		t.Errorf("slot 50 after shrinking to 0-9: err = %v, want unassigned", err)
	}
	if err := n.CheckRead(9); err != nil {
		t.Errorf("slot 9: %v", err)
	}
}

func TestNodeNotInTopology(t *testing.T) {
	t.Parallel()
	n := open(t, storetest.Open(t), "c")
	if _, changed, err := n.SetTopology(topo(1)); err != nil || !changed {
		t.Fatalf("SetTopology without this node: %v", err)
	}
	if len(n.Served()) != 0 {
		t.Errorf("Served = %v, want none", n.Served())
	}
	var sm *rpcerr.SlotMovedError
	if err := n.CheckRead(0); !errors.As(err, &sm) || sm.OwnerID != "a" {
		t.Errorf("err = %v, want moved to a", err)
	}
}

func TestPersistence(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	st, err := store.Open(storetest.Options(dir))
	if err != nil {
		t.Fatal(err)
	}
	n := open(t, st, "a")
	if _, _, err := n.SetTopology(topo(9)); err != nil {
		t.Fatal(err)
	}
	want := n.Topology()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st, err = store.Open(storetest.Options(dir))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := node.Open(st, "b"); !errors.Is(err, node.ErrIdentity) || !strings.Contains(err.Error(), `"a"`) || !strings.Contains(err.Error(), `"b"`) {
		t.Errorf("reopen as b: err = %v, want ErrIdentity naming a and b", err)
	}
	n = open(t, st, "a")
	if !n.Topology().Equal(want) {
		t.Errorf("topology after reopen = %v, want %v", n.Topology().Proto(), want.Proto())
	}
	if got := n.States(); len(got) != 1 || got[0].Kind != node.Owned || got[0].Range != (slot.Range{Start: 0, End: 99}) {
		t.Errorf("states after reopen = %+v", got)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestEmptyID(t *testing.T) {
	t.Parallel()
	if _, err := node.Open(storetest.Open(t), ""); !errors.Is(err, rpcerr.ErrInvalidArgument) {
		t.Errorf("err = %v, want invalid argument", err)
	}
}

func TestKindProto(t *testing.T) {
	t.Parallel()
	for k := node.None; k <= node.Frozen; k++ {
		r := node.StateRange{Range: slot.Range{Start: 1, End: 2}, Kind: k, JobID: "j", PeerNodeID: "p"}
		p := r.Proto()
		if int32(p.GetState()) != int32(k) || p.GetJobId() != "j" || p.GetPeerNodeId() != "p" || p.GetRange().GetEnd() != 2 {
			t.Errorf("%v: proto %v", k, p)
		}
	}
}

func TestCheckWrites(t *testing.T) {
	t.Parallel()
	n := open(t, storetest.Open(t), "a")
	if _, err := n.CheckWrites([]uint16{1}); !errors.Is(err, rpcerr.ErrNoTopology) {
		t.Errorf("no topology: err = %v, want ErrNoTopology", err)
	}
	if _, _, err := n.SetTopology(topo(3)); err != nil {
		t.Fatal(err)
	}
	if i, err := n.CheckWrites([]uint16{0, 0, 5, 99, 99}); err != nil || i != -1 {
		t.Errorf("owned slots: %d, %v", i, err)
	}
	if i, err := n.CheckWrites(nil); err != nil || i != -1 {
		t.Errorf("no slots: %d, %v", i, err)
	}
	i, err := n.CheckWrites([]uint16{3, 3, 150, 150, 250})
	var sm *rpcerr.SlotMovedError
	if i != 2 || !errors.As(err, &sm) || sm.Slot != 150 || sm.OwnerID != "b" {
		t.Errorf("CheckWrites = %d, %v; want index 2, slot 150 moved to b", i, err)
	}
}

// TestWrite: Write runs the write only for slots the node accepts, and
// releases the write gate however the write ends — a panic included (the
// server's recovery interceptor would otherwise leave it held, and the next
// state change would wait forever).
func TestWrite(t *testing.T) {
	t.Parallel()
	n := open(t, storetest.Open(t), "a")
	if _, _, err := n.SetTopology(topo(3)); err != nil {
		t.Fatal(err)
	}
	ran := false
	if i, err := n.Write([]uint16{5, 150}, func() error { ran = true; return nil }); i != 1 || err == nil || ran {
		t.Errorf("Write to a slot of another node: %d, %v, ran %v; want index 1 refused and no write", i, err, ran)
	}
	boom := errors.New("boom")
	if i, err := n.Write([]uint16{5}, func() error { return boom }); i != -1 || !errors.Is(err, boom) {
		t.Errorf("Write returning an error: %d, %v", i, err)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("the write's panic did not reach the caller")
			}
		}()
		_, _ = n.Write([]uint16{5}, func() error { panic("store panic") })
	}()
	// A state change takes the gate exclusively: it must not wait for the
	// panicked write. (The bound only catches a hang; it is not a timing.)
	done := make(chan error, 1)
	go func() {
		_, _, err := n.SetTopology(topo(4))
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("SetTopology after a panicked write: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("SetTopology still waits for the write gate a panicked write held")
	}
	if ran, err := n.Write([]uint16{5}, func() error { return nil }); ran != -1 || err != nil {
		t.Errorf("Write after the state change: %d, %v", ran, err)
	}
}

// TestChanged: the channel Changed returns closes at the next install, and
// not before; an install refused leaves it open.
func TestChanged(t *testing.T) {
	t.Parallel()
	n := open(t, storetest.Open(t), "a")
	closed := func(c <-chan struct{}) bool {
		select {
		case <-c:
			return true
		default:
			return false
		}
	}
	c := n.Changed()
	if closed(c) || n.Changed() != c {
		t.Fatal("Changed closed, or a second channel, before any install")
	}
	if _, _, err := n.SetTopology(topo(3)); err != nil {
		t.Fatal(err)
	}
	if !closed(c) {
		t.Fatal("Changed not closed by the install of topology 3")
	}
	c = n.Changed()
	if closed(c) {
		t.Fatal("the channel taken after the install is closed")
	}
	if _, _, err := n.SetTopology(topo(2)); !errors.Is(err, rpcerr.ErrStaleTopology) {
		t.Fatalf("older topology: err = %v", err)
	}
	if closed(c) {
		t.Fatal("Changed closed by a refused install")
	}
}
