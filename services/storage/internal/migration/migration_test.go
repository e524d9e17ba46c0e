package migration_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/services/storage/internal/migration"
	"github.com/slotkv/slotkv/services/storage/internal/node"
	"github.com/slotkv/slotkv/services/storage/internal/store"
	"github.com/slotkv/slotkv/services/storage/internal/store/storetest"
)

func setup(t *testing.T) (*store.Store, *node.Node, *migration.Manager) {
	t.Helper()
	return setupWith(t, migration.Options{})
}

// setupWith is setup with the manager's options.
func setupWith(t *testing.T, o migration.Options) (*store.Store, *node.Node, *migration.Manager) {
	t.Helper()
	st := storetest.Open(t)
	n, err := node.Open(st, "a")
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = n.SetTopology(&clusterv1.Topology{
		Version: 1,
		Nodes:   []*clusterv1.Node{{Id: "a", GrpcAddress: "a:1"}, {Id: "b", GrpcAddress: "b:1"}},
		Assignments: []*clusterv1.Assignment{
			{NodeId: "a", Ranges: []*clusterv1.SlotRange{{Start: 0, End: 8191}}},
			{NodeId: "b", Ranges: []*clusterv1.SlotRange{{Start: 8192, End: 16383}}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	m, err := migration.Open(st, n, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return st, n, m
}

// write is one gated write, the way the gRPC handlers do it.
func write(n *node.Node, st *store.Store, muts []store.Mutation, ingest bool) error {
	slots := make([]uint16, len(muts))
	for i, m := range muts {
		slots[i] = slot.Of(m.Key)
	}
	_, err := n.Write(slots, func() error { return writeUngated(st, muts, ingest) })
	return err
}

func writeUngated(st *store.Store, muts []store.Mutation, ingest bool) error {
	switch {
	case ingest:
		var b store.IngestBatch
		b.Reset(len(muts), 0)
		for _, m := range muts {
			if _, err := b.Add(m.Key, m.Value); err != nil {
				return err
			}
		}
		_, err := st.Ingest(&b)
		return err
	case len(muts) == 1 && muts[0].Delete:
		_, _, err := st.Delete(muts[0].Key)
		return err
	case len(muts) == 1:
		_, err := st.Put(muts[0].Key, muts[0].Value)
		return err
	}
	return st.BatchWrite(muts)
}

// TestCaptureRace: writers hammer migrating and other slots while the job
// begins, the snapshot is taken and changes are read; the snapshot plus the
// changes after its sequence reproduce exactly the final data. Run with
// -race.
func TestCaptureRace(t *testing.T) {
	t.Parallel()
	st, n, m := setup(t)
	const (
		writers = 8
		ops     = 300
		keys    = 64
	)
	job := slot.Range{Start: 0, End: 15}
	key := func(i int) []byte { return storetest.KeyInSlot(uint16(i%32), fmt.Sprint("k", i)) } // slots 0-31: half migrate

	var (
		wg   sync.WaitGroup
		done atomic.Int64
	)
	for w := range writers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for i := range ops {
				var muts []store.Mutation
				for range 1 + r.IntN(3) {
					k := key(r.IntN(keys))
					if r.IntN(4) == 0 {
						muts = append(muts, store.Mutation{Key: k, Delete: true})
					} else {
						muts = append(muts, store.Mutation{Key: k, Value: fmt.Appendf(nil, "w%d-%d", w, i)})
					}
				}
				ingest := r.IntN(5) == 0
				if ingest {
					for j := range muts {
						muts[j].Delete, muts[j].Value = false, fmt.Appendf(nil, "ing%d-%d", w, i)
					}
				}
				if err := write(n, st, muts, ingest); err != nil {
					t.Errorf("write: %v", err)
					return
				}
				done.Add(1)
			}
		})
	}
	waitOps := func(k int64) {
		deadline := time.Now().Add(30 * time.Second)
		for done.Load() < k && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	waitOps(writers * ops / 10)
	rs, _ := slot.NewRangeSet(job)
	if _, err := m.Begin(context.Background(), migration.BeginRequest{Job: "race", Role: migration.Source, Ranges: rs, Peer: "b", TopologyVersion: 1}); err != nil {
		t.Fatal(err)
	}
	waitOps(writers * ops / 3)
	seq, err := m.OpenSnapshot("race")
	if err != nil {
		t.Fatal(err)
	}
	model := map[string]string{}
	err = m.SnapshotScan(migration.ScanRequest{Job: "race", BatchRecords: 5, BatchBytes: 1 << 20}, func(b store.SnapshotBatch) error {
		for _, kv := range b.Items {
			model[string(kv.Key)] = string(kv.Value)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	after := seq
	apply := func() (bool, uint64) {
		ch, err := m.ReadChanges("race", after, 50, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range ch.Changes {
			if c.Seq != after+1 {
				t.Fatalf("change %d after %d: a gap", c.Seq, after)
			}
			if !job.Contains(c.Slot) {
				t.Fatalf("change %d of slot %d captured", c.Seq, c.Slot)
			}
			after = c.Seq
			if c.Delete {
				delete(model, string(c.Key))
			} else {
				model[string(c.Key)] = string(c.Value)
			}
		}
		return ch.Frozen, ch.Head
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	for running := true; running; {
		select {
		case <-finished:
			running = false
		default:
			apply()
		}
	}
	fr, err := m.Freeze(context.Background(), "race")
	if err != nil {
		t.Fatal(err)
	}
	final := fr.FinalSeq
	for {
		frozen, head := apply()
		if frozen && after == final && head == final {
			break
		}
	}
	res, err := st.Scan(store.ScanOptions{Ranges: []slot.Range{job}, Limit: store.MaxScanLimit})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Items) != len(model) {
		t.Errorf("store holds %d keys in the job's slots, snapshot+changes %d", len(res.Items), len(model))
	}
	for _, kv := range res.Items {
		if v, ok := model[string(kv.Key)]; !ok || v != string(kv.Value) {
			t.Errorf("%q: store %q, snapshot+changes %q (present %v)", kv.Key, kv.Value, v, ok)
		}
	}
	if final <= seq {
		t.Errorf("no change after the snapshot (seq %d, final %d): the test raced nothing", seq, final)
	}
	// Frozen: writes refused, with a retry hint.
	err = write(n, st, []store.Mutation{{Key: key(3), Value: []byte("x")}}, false)
	var fe *rpcerr.SlotFrozenError
	if !errors.As(err, &fe) || fe.RetryAfter <= 0 {
		t.Errorf("write to a frozen slot: %v", err)
	}
}

// TestSetTopologyCommits: a newer topology that moves a MIGRATING or FROZEN
// slot away clears it; one that gives an IMPORTING slot here makes it OWNED.
func TestSetTopologyCommits(t *testing.T) {
	t.Parallel()
	_, n, m := setup(t)
	ctx := context.Background()
	out, _ := slot.ParseRangeSet("10-19")
	in, _ := slot.ParseRangeSet("9000-9009")
	if _, err := m.Begin(ctx, migration.BeginRequest{Job: "out", Role: migration.Source, Ranges: out, Peer: "b", TopologyVersion: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Begin(ctx, migration.BeginRequest{Job: "in", Role: migration.Destination, Ranges: in, Peer: "b", TopologyVersion: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Freeze(ctx, "out"); err != nil {
		t.Fatal(err)
	}
	if k := n.State(9005); k != node.Importing {
		t.Fatalf("slot 9005 is %s", k)
	}
	// v2 moves 10-14 to b (commit of half of "out"), keeps 15-19 here and
	// does not give 9000-9009 here yet.
	_, _, err := n.SetTopology(&clusterv1.Topology{
		Version: 2,
		Nodes:   []*clusterv1.Node{{Id: "a", GrpcAddress: "a:1"}, {Id: "b", GrpcAddress: "b:1"}},
		Assignments: []*clusterv1.Assignment{
			{NodeId: "a", Ranges: []*clusterv1.SlotRange{{Start: 0, End: 9}, {Start: 15, End: 8191}}},
			{NodeId: "b", Ranges: []*clusterv1.SlotRange{{Start: 10, End: 14}, {Start: 8192, End: 16383}}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	for s, want := range map[uint16]node.Kind{10: node.None, 14: node.None, 15: node.Frozen, 9005: node.Importing, 0: node.Owned} {
		if k := n.State(s); k != want {
			t.Errorf("v2: slot %d is %s, want %s", s, k, want)
		}
	}
	if err := n.CheckRead(12); !errors.Is(err, rpcerr.ErrSlotMoved) {
		t.Errorf("read of a committed slot: %v", err)
	}
	_, _, err = n.SetTopology(&clusterv1.Topology{
		Version: 3,
		Nodes:   []*clusterv1.Node{{Id: "a", GrpcAddress: "a:1"}, {Id: "b", GrpcAddress: "b:1"}},
		Assignments: []*clusterv1.Assignment{
			{NodeId: "a", Ranges: []*clusterv1.SlotRange{{Start: 0, End: 9}, {Start: 15, End: 9009}}},
			{NodeId: "b", Ranges: []*clusterv1.SlotRange{{Start: 10, End: 14}, {Start: 9010, End: 16383}}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if k := n.State(9005); k != node.Owned {
		t.Errorf("v3: slot 9005 is %s, want OWNED", k)
	}
	if err := n.CheckWrite(9005); err != nil {
		t.Errorf("write to an imported slot: %v", err)
	}
}

func TestAbortSourceRefusedAfterCommit(t *testing.T) {
	t.Parallel()
	_, n, m := setup(t)
	ctx := context.Background()
	out, _ := slot.ParseRangeSet("10-19")
	if _, err := m.Begin(ctx, migration.BeginRequest{Job: "out", Role: migration.Source, Ranges: out, Peer: "b", TopologyVersion: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Freeze(ctx, "out"); err != nil {
		t.Fatal(err)
	}
	// v2 gives 10-19 to b: the commit.
	if _, _, err := n.SetTopology(&clusterv1.Topology{
		Version: 2,
		Nodes:   []*clusterv1.Node{{Id: "a", GrpcAddress: "a:1"}, {Id: "b", GrpcAddress: "b:1"}},
		Assignments: []*clusterv1.Assignment{
			{NodeId: "a", Ranges: []*clusterv1.SlotRange{{Start: 0, End: 9}, {Start: 20, End: 8191}}},
			{NodeId: "b", Ranges: []*clusterv1.SlotRange{{Start: 10, End: 19}, {Start: 8192, End: 16383}}},
		},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.End(ctx, "out", migration.Aborted); !errors.Is(err, rpcerr.ErrConflict) {
		t.Fatalf("abort of a committed source: %v, want a conflict", err)
	}
	// The job is still there and ends COMMITTED.
	if _, err := m.End(ctx, "out", migration.Committed); err != nil {
		t.Fatalf("commit after the refused abort: %v", err)
	}
}

func TestAbortSourceBeforeCommit(t *testing.T) {
	t.Parallel()
	_, n, m := setup(t)
	ctx := context.Background()
	out, _ := slot.ParseRangeSet("10-19")
	if _, err := m.Begin(ctx, migration.BeginRequest{Job: "out", Role: migration.Source, Ranges: out, Peer: "b", TopologyVersion: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Freeze(ctx, "out"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.End(ctx, "out", migration.Aborted); err != nil {
		t.Fatal(err)
	}
	if k := n.State(15); k != node.Owned {
		t.Fatalf("slot 15 is %s after the abort, want OWNED", k)
	}
}
