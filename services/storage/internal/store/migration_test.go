package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/services/storage/internal/store"
	"github.com/slotkv/slotkv/services/storage/internal/store/storetest"
)

func captureSlots(t *testing.T, st *store.Store, job string, r slot.Range) *store.ChangeLog {
	t.Helper()
	l, err := st.ChangeLog(job)
	if err != nil {
		t.Fatal(err)
	}
	var tbl store.CaptureTable
	for s := int(r.Start); s <= int(r.End); s++ {
		tbl[s] = l
	}
	st.SetCapture(&tbl)
	return l
}

// TestCaptureSplitIngest: an Ingest batch into a migrating slot that is too
// big for one transaction is captured whole, in order, without gaps, across
// the transactions it is split into; the head survives a reopen.
func TestCaptureSplitIngest(t *testing.T) {
	t.Parallel()
	// Values in the LSM tree (the threshold is capped below a batch), so
	// that 1,000 of 1 KiB fill more than one transaction.
	opts := storetest.Options(t.TempDir()).WithMemTableSize(1 << 20).WithValueThreshold(1 << 20)
	st, err := store.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	l := captureSlots(t, st, "j", slot.Range{Start: 0, End: 8191})
	val := bytes.Repeat([]byte("v"), 1024)
	var b store.IngestBatch
	b.Reset(1000, 0)
	want := map[uint64]string{}
	n := 0
	for i := range 1000 {
		k := fmt.Appendf(nil, "k%04d", i)
		sl, err := b.Add(k, val)
		if err != nil {
			t.Fatal(err)
		}
		if sl <= 8191 {
			n++
			want[uint64(n)] = string(k)
		}
	}
	txns, err := st.Ingest(&b)
	if err != nil || txns < 2 {
		t.Fatalf("Ingest = %d txns, %v; want a split", txns, err)
	}
	if l.Head() != uint64(n) {
		t.Fatalf("head %d, want %d", l.Head(), n)
	}
	var got []store.Change
	for after := uint64(0); ; {
		cs, head, err := st.ReadChanges(l, after, 100, 1<<20)
		if err != nil || head != uint64(n) {
			t.Fatalf("ReadChanges = head %d, %v", head, err)
		}
		if len(cs) == 0 {
			break
		}
		got = append(got, cs...)
		after = cs[len(cs)-1].Seq
	}
	if len(got) != n {
		t.Fatalf("%d changes, want %d", len(got), n)
	}
	for i, c := range got {
		if c.Seq != uint64(i+1) || string(c.Key) != want[c.Seq] || !bytes.Equal(c.Value, val) || c.Delete || c.Slot != slot.Of(c.Key) {
			t.Fatalf("change %d = seq %d key %q slot %d, want key %q", i, c.Seq, c.Key, c.Slot, want[c.Seq])
		}
	}
	// A batch write too big for one transaction with its change records
	// fails whole and takes no sequence.
	big := make([]store.Mutation, 700)
	for i := range big {
		big[i] = store.Mutation{Key: fmt.Appendf(nil, "b%04d", i), Value: val}
	}
	if err := st.BatchWrite(big); !errors.Is(err, store.ErrBatchTooLarge) {
		t.Fatalf("big batch: %v", err)
	}
	if l.Head() != uint64(n) {
		t.Fatalf("head moved to %d by a failed write", l.Head())
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st = storetest.OpenOptions(t, opts)
	l2, err := st.ChangeLog("j")
	if err != nil || l2.Head() != uint64(n) {
		t.Fatalf("head after reopen = %d, %v; want %d", l2.Head(), err, n)
	}
	if err := st.DropChangeLog("j"); err != nil {
		t.Fatal(err)
	}
	if jobs, err := st.JobsWithRecords(); err != nil || len(jobs) != 0 {
		t.Errorf("records left: %v, %v", jobs, err)
	}
}

// TestSnapshotSharedIterators: many concurrent scans and digests share one
// snapshot (one Badger read-only transaction); Close waits for them.
func TestSnapshotSharedIterators(t *testing.T) {
	t.Parallel()
	st := storetest.Open(t)
	l := captureSlots(t, st, "s", slot.Range{Start: 0, End: 99})
	for i := range 1000 {
		if _, err := st.Put(storetest.KeyInSlot(uint16(i%100), fmt.Sprint(i)), []byte("old")); err != nil {
			t.Fatal(err)
		}
	}
	sn, err := st.OpenSnapshot(l)
	if err != nil || sn.Seq() != 1000 {
		t.Fatalf("OpenSnapshot = %d, %v", sn.Seq(), err)
	}
	var wg sync.WaitGroup
	counts := make([]int, 10)
	for g := range 10 {
		wg.Go(func() {
			r := slot.Range{Start: uint16(g * 10), End: uint16(g*10 + 9)}
			err := sn.Scan([]slot.Range{r}, nil, 7, 1<<20, func(b store.SnapshotBatch) error {
				for _, kv := range b.Items {
					if string(kv.Value) != "old" || !r.Contains(kv.Slot) {
						t.Errorf("scan %d: %q = %q in slot %d", g, kv.Key, kv.Value, kv.Slot)
					}
				}
				counts[g] += len(b.Items)
				return nil
			})
			if err != nil {
				t.Error(err)
			}
			if d, err := sn.Digest(t.Context(), []slot.Range{r}); err != nil || d.Count != 100 {
				t.Errorf("digest %d: %d, %v", g, d.Count, err)
			}
		})
	}
	for i := range 1000 { // concurrent writes are not seen
		if _, err := st.Put(storetest.KeyInSlot(uint16(i%100), fmt.Sprint(i)), []byte("new")); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	for g, c := range counts {
		if c != 100 {
			t.Errorf("scan %d saw %d entries, want 100", g, c)
		}
	}
	// Close during a scan stops it at its next batch.
	err = sn.Scan([]slot.Range{{Start: 0, End: 99}}, nil, 10, 1<<20, func(store.SnapshotBatch) error {
		sn.Close()
		return nil
	})
	if !errors.Is(err, store.ErrSnapshotClosed) {
		t.Errorf("scan across Close: %v", err)
	}
	if err := sn.Scan([]slot.Range{{Start: 0, End: 99}}, nil, 10, 1<<20, func(store.SnapshotBatch) error { return nil }); !errors.Is(err, store.ErrSnapshotClosed) {
		t.Errorf("scan after Close: %v", err)
	}
}

func TestApplyImport(t *testing.T) {
	t.Parallel()
	st := storetest.Open(t)
	muts := []store.Mutation{{Key: []byte("a"), Value: []byte("1")}, {Key: []byte("b"), Value: []byte("2")}}
	tests := []struct {
		stream  string
		seq     uint64
		muts    []store.Mutation
		applied bool
		last    uint64
		entries uint64
	}{
		{"s1", 1, muts, true, 1, 2},
		{"s1", 1, muts, false, 1, 2},
		{"s1", 5, muts[:1], true, 5, 3},
		{"s1", 4, muts, false, 5, 3},
		{"s2", 1, []store.Mutation{{Key: []byte("a"), Delete: true}}, true, 1, 1},
	}
	for i, tc := range tests {
		applied, p, err := st.ApplyImport("job", tc.stream, tc.seq, tc.muts)
		if err != nil || applied != tc.applied || p.LastSeq != tc.last || p.Entries != tc.entries {
			t.Errorf("step %d: applied %v, %+v, %v; want %v last %d entries %d", i, applied, p, err, tc.applied, tc.last, tc.entries)
		}
	}
	ps, err := st.ImportProgressOf("job")
	if err != nil || len(ps) != 2 || ps[0].Stream != "s1" || ps[1].Stream != "s2" {
		t.Fatalf("progress = %+v, %v", ps, err)
	}
	if _, _, err := st.Get([]byte("a")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a after the delete: %v", err)
	}
	if err := st.DropImport("job"); err != nil {
		t.Fatal(err)
	}
	if ps, _ := st.ImportProgressOf("job"); len(ps) != 0 {
		t.Errorf("progress after DropImport: %v", ps)
	}
}

// TestDeleteSlots: a Captured deletion deletes batch by batch, each under
// the guard, and a guard that fails stops it after the batches before; a
// drop runs the guard once, and a guard that fails drops nothing.
func TestDeleteSlots(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		captured    bool
		wantBatches int // guard calls for 1500 keys, 100 a batch
		wantStopped uint64
	}{
		{"captured", true, 15, 200},
		{"dropped", false, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := storetest.Open(t)
			for i := range 3000 {
				if _, err := st.Put(storetest.KeyInSlot(uint16(i%30), fmt.Sprint(i)), []byte("v")); err != nil {
					t.Fatal(err)
				}
			}
			batches := 0
			n, err := st.DeleteSlots(context.Background(), []slot.Range{{Start: 0, End: 9}, {Start: 20, End: 24}}, store.DeleteOptions{
				BatchKeys: 100,
				Captured:  tc.captured,
				Guard:     func() (func(), error) { batches++; return func() {}, nil },
			})
			if err != nil || n != 1500 || batches != tc.wantBatches {
				t.Fatalf("DeleteSlots = %d keys in %d batches, %v; want 1500 in %d", n, batches, err, tc.wantBatches)
			}
			if c, _ := st.KeyCount(t.Context()); c != 1500 {
				t.Errorf("%d keys left, want 1500", c)
			}
			stop := errors.New("stop")
			batches = 0
			n, err = st.DeleteSlots(context.Background(), []slot.Range{{Start: 10, End: 19}}, store.DeleteOptions{
				BatchKeys: 100,
				Captured:  tc.captured,
				Guard: func() (func(), error) {
					if batches++; batches > 2 {
						return nil, stop
					}
					return func() {}, nil
				},
			})
			if tc.captured {
				if !errors.Is(err, stop) || n != tc.wantStopped {
					t.Errorf("guarded DeleteSlots = %d, %v; want %d, stop", n, err, tc.wantStopped)
				}
			} else if err != nil || n != 1000 {
				t.Errorf("guarded drop = %d, %v; want 1000 (one guard call)", n, err)
			}
			n, err = st.DeleteSlots(context.Background(), []slot.Range{{Start: 25, End: 29}}, store.DeleteOptions{
				Captured: tc.captured,
				Guard:    func() (func(), error) { return nil, stop },
			})
			if !errors.Is(err, stop) || n != 0 {
				t.Errorf("DeleteSlots under a failing guard = %d, %v; want 0, stop", n, err)
			}
			if c, _ := st.Count(t.Context(), []slot.Range{{Start: 25, End: 29}}); c != 500 {
				t.Errorf("slots 25-29 hold %d keys after a refused deletion; want 500", c)
			}
		})
	}
}

// TestReadChangesStopsAtHead: while writers keep capturing changes, every
// answer holds only changes up to the head it returns (the ones synced to
// disk before they were handed out), and consecutive reads see every
// sequence number exactly once.
func TestReadChangesStopsAtHead(t *testing.T) {
	t.Parallel()
	st := storetest.Open(t)
	l := captureSlots(t, st, "h", slot.Range{Start: 0, End: 16383})
	done := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				if err := st.BatchWrite([]store.Mutation{{Key: fmt.Appendf(nil, "w%d-%d", w, i), Value: []byte("v")}}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	var after uint64
	for reads := 0; reads < 200 || after == 0; reads++ {
		cs, head, err := st.ReadChanges(l, after, 50, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			if c.Seq != after+1 || c.Seq > head {
				t.Fatalf("change seq %d after %d with head %d: out of order or past the head", c.Seq, after, head)
			}
			after = c.Seq
		}
	}
	close(done)
	wg.Wait()
}
