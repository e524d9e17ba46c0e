package migration_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	"github.com/slotkv/slotkv/pkg/logtest"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/services/storage/internal/migration"
	"github.com/slotkv/slotkv/services/storage/internal/node"
	"github.com/slotkv/slotkv/services/storage/internal/store"
	"github.com/slotkv/slotkv/services/storage/internal/store/storetest"
)

// topoAB is a topology of nodes a and b at version v in which a holds
// 0-8191 (aHas) or 0-8191 less 10-19, which b holds then.
func topoAB(v uint64, aHas bool) *clusterv1.Topology {
	a := []*clusterv1.SlotRange{{Start: 0, End: 9}, {Start: 20, End: 8191}}
	b := []*clusterv1.SlotRange{{Start: 10, End: 19}, {Start: 8192, End: 16383}}
	if aHas {
		a, b = []*clusterv1.SlotRange{{Start: 0, End: 8191}}, []*clusterv1.SlotRange{{Start: 8192, End: 16383}}
	}
	return &clusterv1.Topology{
		Version:     v,
		Nodes:       []*clusterv1.Node{{Id: "a", GrpcAddress: "a:1"}, {Id: "b", GrpcAddress: "b:1"}},
		Assignments: []*clusterv1.Assignment{{NodeId: "a", Ranges: a}, {NodeId: "b", Ranges: b}},
	}
}

// loggedSetup is setup with the manager's log in a buffer the test reads.
func loggedSetup(t *testing.T) (*store.Store, *node.Node, *migration.Manager, *logtest.Buffer) {
	t.Helper()
	logs := &logtest.Buffer{}
	st, n, m := setupWith(t, migration.Options{Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	return st, n, m, logs
}

// commitOut commits source job "out" of slots 10-19 to b: the freeze,
// topology version 2 (the commit), and its end COMMITTED.
func commitOut(t *testing.T, n *node.Node, m *migration.Manager) {
	t.Helper()
	ctx := context.Background()
	if _, err := m.Freeze(ctx, "out"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := n.SetTopology(topoAB(2, false)); err != nil {
		t.Fatal(err)
	}
	if _, err := m.End(ctx, "out", migration.Committed); err != nil {
		t.Fatal(err)
	}
}

// comeBackWith gives slots 10-19 back to a (topology version 3), writes
// key there, and gives them to b again (version 4), with no migration.
func comeBackWith(t *testing.T, n *node.Node, st *store.Store, key []byte) {
	t.Helper()
	if _, _, err := n.SetTopology(topoAB(3, true)); err != nil {
		t.Fatal(err)
	}
	mutate(t, n, st, store.Mutation{Key: key, Value: []byte("v")})
	if _, _, err := n.SetTopology(topoAB(4, false)); err != nil {
		t.Fatal(err)
	}
}

// mutate writes one mutation through the node's gate, as a client would.
func mutate(t *testing.T, n *node.Node, st *store.Store, m store.Mutation) {
	t.Helper()
	if err := write(n, st, []store.Mutation{m}, false); err != nil {
		t.Fatalf("write %q (delete %v): %v", m.Key, m.Delete, err)
	}
}

// snapshotOut begins source job "out" of rs (topology version 1), opens
// its snapshot and scans all of it, as a migration's snapshot phase does:
// the node then knows the keys the slots hold.
func snapshotOut(t *testing.T, m *migration.Manager, rs slot.RangeSet) {
	t.Helper()
	if _, err := m.Begin(context.Background(), migration.BeginRequest{Job: "out", Role: migration.Source, Ranges: rs, Peer: "b", TopologyVersion: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.OpenSnapshot("out"); err != nil {
		t.Fatal(err)
	}
	if err := m.SnapshotScan(migration.ScanRequest{Job: "out", BatchRecords: 64, BatchBytes: 1 << 20}, func(store.SnapshotBatch) error { return nil }); err != nil {
		t.Fatal(err)
	}
}

// wantKeysKnown checks that the last cleanup logged whether it knew the
// slots' keys (deleted by the list) as known.
func wantKeysKnown(t *testing.T, logs *logtest.Buffer, known bool) {
	t.Helper()
	line := logLine(logs, "slots deleted")
	if want := fmt.Sprintf(`"keys_known":%v`, known); !strings.Contains(line, want) {
		t.Fatalf("the cleanup's log line %q does not say %s", line, want)
	}
}

// logLine returns the last log line with message msg.
func logLine(logs *logtest.Buffer, msg string) string {
	var line string
	for l := range strings.SplitSeq(logs.String(), "\n") {
		if strings.Contains(l, `"msg":"`+msg+`"`) {
			line = l
		}
	}
	return line
}

// TestDeleteSlotsWithHeldKeys: after a source job ends COMMITTED, the
// cleanup of its slots deletes the keys its snapshot's scans read and the
// changes after it wrote, without reading the slots, and deletes every
// key. When the slots came back to the node in between (a topology, with
// writes), the list is not used: the cleanup reads the slots, and deletes
// what was written meanwhile too.
func TestDeleteSlotsWithHeldKeys(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		cameBack  bool // the slots come back to a, take a write, and leave again before the cleanup
		wantKnown bool
	}{
		{"keys known", false, true},
		{"slots came back in between", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st, n, m, logs := loggedSetup(t)
			ctx := context.Background()
			rs := slot.MustParseRangeSet("10-19")
			put := func(k string) { t.Helper(); mutate(t, n, st, store.Mutation{Key: []byte(k), Value: []byte("v")}) }
			del := func(k string) { t.Helper(); mutate(t, n, st, store.Mutation{Key: []byte(k), Delete: true}) }
			key := func(i int) string { return string(storetest.KeyInSlot(uint16(10+i%10), fmt.Sprint("k", i))) }
			for i := range 300 {
				put(key(i))
			}
			put(string(storetest.KeyInSlot(30, "kept"))) // another slot's

			snapshotOut(t, m, rs)
			for i := range 20 { // writes after the snapshot
				put(key(1000 + i))
				del(key(i))
			}
			commitOut(t, n, m)
			if tc.cameBack {
				comeBackWith(t, n, st, []byte(key(2000)))
			}
			held, err := st.Count(ctx, rs.Ranges())
			if err != nil || held == 0 {
				t.Fatalf("Count before the cleanup: %d, %v", held, err)
			}
			deleted, err := m.DeleteSlots(ctx, rs.Ranges(), 0)
			if err != nil || deleted != held {
				t.Fatalf("DeleteSlots = %d, %v; want the %d keys the slots held", deleted, err, held)
			}
			if left, err := st.Count(ctx, rs.Ranges()); err != nil || left != 0 {
				t.Fatalf("after the cleanup: %d keys left, %v", left, err)
			}
			if k := n.State(30); k != node.Owned {
				t.Fatalf("slot 30 is %s", k)
			}
			if v, _, err := st.Get(storetest.KeyInSlot(30, "kept")); err != nil || string(v) != "v" {
				t.Fatalf("another slot's key: %q, %v", v, err)
			}
			wantKeysKnown(t, logs, tc.wantKnown)
		})
	}
}

// TestDeleteSlotsWhenSlotsComeBack: the slots of a cleanup come back to
// the node while the purge of their drop runs (a topology that gives them
// back, and writes of keys the purge has still to delete, as an install
// of a migration back would write them). The cleanup itself has ended
// once the slots are dropped; the purge is paced so that it deletes one
// batch and waits before the next, and the slots come back in between:
// every key written after they came back stays, through the purge and
// after it. Whether the cleanup counts by the list of keys the hand-off
// kept or reads the slots (the list is dropped when the slots came back
// before the cleanup, too).
func TestDeleteSlotsWhenSlotsComeBack(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		cameBack  bool // also came back (and left) before the cleanup: the list is not used
		wantKnown bool
	}{
		{"keys known", false, true},
		{"keys read", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st, n, m, logs := loggedSetup(t)
			ctx := context.Background()
			rs := slot.MustParseRangeSet("10-19")
			const keys = store.DefaultDeleteBatch + 100 // two purge batches
			key := func(i int) []byte { return storetest.KeyInSlot(uint16(10+i%10), fmt.Sprint("k", i)) }
			for i := range keys {
				mutate(t, n, st, store.Mutation{Key: key(i), Value: []byte("old")})
			}
			snapshotOut(t, m, rs)
			commitOut(t, n, m)
			version := uint64(3)
			if tc.cameBack {
				comeBackWith(t, n, st, key(keys))
				version = 5
			}
			held, err := st.Count(ctx, rs.Ranges())
			if err != nil {
				t.Fatal(err)
			}
			purged0 := purgeState(t, st).PurgedKeys

			// The purge deletes one batch at once, the next one 4 s
			// later: the window in which the slots come back.
			kps := uint64(store.DefaultDeleteBatch / 4)
			deleted, err := m.DeleteSlots(ctx, rs.Ranges(), kps)
			if err != nil || deleted != held {
				t.Fatalf("DeleteSlots = %d, %v; want the %d keys the slots held", deleted, err, held)
			}
			if left, err := st.Count(ctx, rs.Ranges()); err != nil || left != 0 {
				t.Fatalf("after the cleanup the slots hold %d keys, %v", left, err)
			}
			waitPurge(t, st, "the purge's first batch", func(p store.PurgeStats) bool {
				return p.PurgedKeys-purged0 >= store.DefaultDeleteBatch
			})
			if p := purgeState(t, st); p.PendingSlots == 0 {
				t.Fatalf("the purge ended before the slots came back: %+v", p)
			}
			if _, _, err := n.SetTopology(topoAB(version, true)); err != nil {
				t.Fatal(err)
			}
			for i := range keys {
				mutate(t, n, st, store.Mutation{Key: key(i), Value: []byte("new")})
			}
			checkNew := func(when string) {
				t.Helper()
				for i := range keys {
					if v, _, err := st.Get(key(i)); err != nil || string(v) != "new" {
						t.Fatalf("%s: key %q written after the slots came back: %q, %v; want \"new\"", when, key(i), v, err)
					}
				}
			}
			checkNew("during the purge")
			waitPurge(t, st, "the purge's end", func(p store.PurgeStats) bool { return p.PendingSlots == 0 })
			checkNew("after the purge")
			wantKeysKnown(t, logs, tc.wantKnown)
		})
	}
}

// waitPurge polls the store's purge state until done returns true, and
// fails after 30 s.
func waitPurge(t *testing.T, st *store.Store, what string, done func(store.PurgeStats) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for p := purgeState(t, st); !done(p); p = purgeState(t, st) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 30 s: %+v", what, p)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// purgeState is the store's purge state.
func purgeState(t *testing.T, st *store.Store) store.PurgeStats {
	t.Helper()
	p, err := st.PurgeState()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestBeginKnowsEmptySlots: a destination whose cleanup emptied the slots
// of a job begins importing them without reading them for leftovers; when
// the slots came back to it in between (a topology, with a write), it
// reads them, and deletes what was written meanwhile.
func TestBeginKnowsEmptySlots(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		cameBack  bool
		wantEmpty bool
	}{
		{"emptied by the cleanup", false, true},
		{"slots came back in between", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st, n, m, logs := loggedSetup(t)
			ctx := context.Background()
			rs := slot.MustParseRangeSet("10-19")
			put := func(k []byte) { t.Helper(); mutate(t, n, st, store.Mutation{Key: k, Value: []byte("v")}) }
			for i := range 100 {
				put(storetest.KeyInSlot(uint16(10+i%10), fmt.Sprint("k", i)))
			}
			// Out to b, and the cleanup.
			if _, err := m.Begin(ctx, migration.BeginRequest{Job: "out", Role: migration.Source, Ranges: rs, Peer: "b", TopologyVersion: 1}); err != nil {
				t.Fatal(err)
			}
			commitOut(t, n, m)
			if _, err := m.DeleteSlots(ctx, rs.Ranges(), 0); err != nil {
				t.Fatal(err)
			}
			version := uint64(2)
			if tc.cameBack {
				comeBackWith(t, n, st, storetest.KeyInSlot(15, "meanwhile"))
				version = 4
			}
			// Back from b.
			if _, err := m.Begin(ctx, migration.BeginRequest{Job: "in", Role: migration.Destination, Ranges: rs, Peer: "b", TopologyVersion: version}); err != nil {
				t.Fatal(err)
			}
			if left, err := st.Count(ctx, rs.Ranges()); err != nil || left != 0 {
				t.Fatalf("the destination holds %d keys of the job's slots before the first import, %v", left, err)
			}
			line := logLine(logs, "migration begun")
			if want := fmt.Sprintf(`"known_empty":%v`, tc.wantEmpty); !strings.Contains(line, want) {
				t.Fatalf("the destination's log line %q does not say %s", line, want)
			}
		})
	}
}
