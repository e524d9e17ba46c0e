package store

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/slotkv/slotkv/pkg/slot"
)

// dropKeyOf is user key i of slot s: "{tag}i", with the first decimal
// hash tag found in s.
func dropKeyOf(t *testing.T, s uint16, i int) []byte {
	t.Helper()
	for n := 0; ; n++ {
		if tag := fmt.Sprint(n); slot.OfString(tag) == s {
			return fmt.Appendf(nil, "{%s}%d", tag, i)
		}
	}
}

// putSlots writes n keys (value "old") into each slot of r and returns them.
func putSlots(t *testing.T, st *Store, r slot.Range, n int) [][]byte {
	t.Helper()
	var keys [][]byte
	for s := r.Start; s <= r.End; s++ {
		tagged := dropKeyOf(t, s, 0)
		tag := tagged[:bytes.IndexByte(tagged, '}')+1]
		for i := range n {
			k := fmt.Appendf(bytes.Clone(tag), "%d", i)
			if _, err := st.Put(k, []byte("old")); err != nil {
				t.Fatal(err)
			}
			keys = append(keys, k)
		}
	}
	return keys
}

// purgeDone waits until no drop record is left, up to within.
func purgeDone(st *Store, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		p, err := st.PurgeState()
		if err != nil || p.PendingSlots == 0 {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("purge not done after %v: %+v", within, p)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitPurged is purgeDone within 30 s, or the test fails.
func waitPurged(t *testing.T, st *Store) {
	t.Helper()
	if err := purgeDone(st, 30*time.Second); err != nil {
		t.Fatal(err)
	}
}

// rawLatest returns, for each key of r on disk, whether its latest version
// is a tombstone (or expired), reading Badger directly with no filter.
func rawLatest(t *testing.T, st *Store, r slot.Range) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	lo, hi := r.KeyBounds()
	err := st.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.AllVersions = true
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Seek(lo[:]); it.Valid() && bytes.Compare(it.Item().Key(), hi[:]) < 0; it.Next() {
			k := string(it.Item().Key()[slot.PrefixLen:])
			if _, seen := out[k]; !seen { // versions come newest first
				out[k] = it.Item().IsDeletedOrExpired()
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestDrop: after DeleteSlots drops slots, every read path finds nothing of
// what they held, read-modify-writes start from absent keys, writes after
// the drop read as usual, other slots keep their keys, and a snapshot
// opened before the drop still reads everything. The purge then writes a
// tombstone over every dropped entry, leaves the writes after the drop,
// and deletes the record.
func TestDrop(t *testing.T) {
	t.Parallel()
	st := openInternal(t)
	ctx := t.Context()
	dropped := slot.Range{Start: 100, End: 109}
	kept := slot.Range{Start: 110, End: 111}
	old := putSlots(t, st, dropped, 20)
	keptKeys := putSlots(t, st, kept, 20)
	sn := snapshotOf(t, st, "before")

	st.drops.held.Store(true)
	n, err := st.DeleteSlots(ctx, []slot.Range{dropped}, DeleteOptions{})
	if err != nil || n != uint64(len(old)) {
		t.Fatalf("DeleteSlots = %d, %v; want %d", n, err, len(old))
	}
	if p, err := st.PurgeState(); err != nil || p.PendingSlots != int64(dropped.Len()) {
		t.Fatalf("PurgeState() = %+v, %v; want %d slots pending", p, err, dropped.Len())
	}

	for _, tc := range []struct {
		name string
		read func() (bool, error) // whether it found old[0] (or anything of the slots)
	}{
		{"Get", func() (bool, error) {
			_, _, err := st.Get(old[0])
			if err == nil {
				return true, nil
			}
			return false, ignoreNotFound(err)
		}},
		{"BatchGet", func() (bool, error) {
			items, err := st.BatchGet(old[:3])
			return err == nil && (items[0].Found || items[1].Found || items[2].Found), err
		}},
		{"Scan", func() (bool, error) {
			res, err := st.Scan(ScanOptions{Ranges: []slot.Range{dropped}})
			return len(res.Items) > 0, err
		}},
		{"Count", func() (bool, error) {
			c, err := st.Count(ctx, []slot.Range{dropped})
			return c > 0, err
		}},
		{"Digest", func() (bool, error) {
			d, err := st.Digest(ctx, []slot.Range{dropped}, true)
			return d.Count > 0 || len(d.Slots) > 0, err
		}},
		{"Delete (existed)", func() (bool, error) {
			_, existed, err := st.Delete(old[1])
			return existed, err
		}},
		{"INCRBY", func() (bool, error) {
			res, err := st.Update(old[2], Update{Op: OpIncrBy, Delta: 5})
			return res.OldFound || res.NewInt != 5, err
		}},
		{"BatchWrite if absent", func() (bool, error) {
			res, err := st.WriteBatch([]Mutation{{Key: old[3], Value: []byte("nx")}}, true)
			return !res.Applied, err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if found, err := tc.read(); err != nil || found {
				t.Errorf("found %v, %v; want nothing of the dropped slots", found, err)
			}
		})
	}
	if v, _, err := st.Get(old[2]); err != nil || string(v) != "5" {
		t.Errorf("INCRBY after the drop reads %q, %v; want 5", v, err)
	}
	if v, _, err := st.Get(old[3]); err != nil || string(v) != "nx" {
		t.Errorf("the write after the drop reads %q, %v; want nx", v, err)
	}
	if c, err := st.Count(ctx, []slot.Range{kept}); err != nil || c != uint64(len(keptKeys)) {
		t.Errorf("the kept slots hold %d keys, %v; want %d", c, err, len(keptKeys))
	}
	if d, err := sn.Digest(ctx, []slot.Range{dropped}); err != nil || d.Count != uint64(len(old)) {
		t.Errorf("the snapshot opened before the drop counts %d, %v; want %d", d.Count, err, len(old))
	}

	st.drops.held.Store(false)
	st.drops.kick <- struct{}{}
	waitPurged(t, st)
	latest := rawLatest(t, st, dropped)
	for _, k := range old {
		tomb, ok := latest[string(k)]
		switch {
		case !ok:
			t.Fatalf("key %q is not on disk at all", k) // compactions have not run
		case bytes.Equal(k, old[2]) || bytes.Equal(k, old[3]):
			if tomb {
				t.Errorf("the purge deleted %q, written after the drop", k)
			}
		case !tomb:
			t.Errorf("key %q has no tombstone after the purge", k)
		}
	}
	if c, err := st.Count(ctx, []slot.Range{dropped}); err != nil || c != 2 {
		t.Errorf("after the purge the dropped slots hold %d keys, %v; want the 2 written after", c, err)
	}
	// Not old[1]: its delete after the drop is newer than the drop.
	if p, _ := st.PurgeState(); p.PurgedKeys != uint64(len(old)-3) {
		t.Errorf("purged %d keys; want %d", p.PurgedKeys, len(old)-3)
	}
}

// TestDropSurvivesReopen: a drop whose purge has not run holds across a
// restart (the records are on disk), and the purge finishes after it.
func TestDropSurvivesReopen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	opts := DefaultOptions(dir).WithMemTableSize(4 << 20).WithBlockCacheSize(4 << 20)
	st, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	r := slot.Range{Start: 7, End: 9}
	old := putSlots(t, st, r, 300)
	st.drops.held.Store(true)
	if _, err := st.DeleteSlots(t.Context(), []slot.Range{r}, DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st, err = Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	if p, err := st.PurgeState(); err != nil || p.PendingSlots == 0 && p.PurgedKeys == 0 {
		t.Fatalf("after reopening: %+v, %v; want the drop's records", p, err)
	}
	if c, err := st.Count(t.Context(), []slot.Range{r}); err != nil || c != 0 {
		t.Fatalf("after reopening the dropped slots hold %d keys, %v", c, err)
	}
	if _, _, err := st.Get(old[len(old)-1]); ignoreNotFound(err) != nil || err == nil {
		t.Fatalf("Get of a dropped key after reopening: %v", err)
	}
	waitPurged(t, st)
	for k, tomb := range rawLatest(t, st, r) {
		if !tomb {
			t.Errorf("key %q has no tombstone after the purge", k)
		}
	}
}

// TestPurgeKeepsNewWrites: writes into dropped slots while their purge
// runs (the slots came back to the node) all stay: a purge batch that read
// a key a write then committed fails on Badger's conflict check and reads
// again, and skips what is newer than the drop. Again with the same slots
// dropped a second time while the first purge runs.
func TestPurgeKeepsNewWrites(t *testing.T) {
	t.Parallel()
	for _, redrop := range []bool{false, true} {
		t.Run(fmt.Sprintf("dropped again %v", redrop), func(t *testing.T) {
			t.Parallel()
			st := openInternal(t)
			r := slot.Range{Start: 200, End: 203}
			old := putSlots(t, st, r, 1000)
			if _, err := st.DeleteSlots(t.Context(), []slot.Range{r}, DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			for w := range 2 {
				wg.Go(func() {
					for i := w; i < len(old); i += 2 {
						if _, err := st.Put(old[i], []byte("new")); err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			want := "new"
			if redrop {
				if _, err := st.DeleteSlots(t.Context(), []slot.Range{r}, DeleteOptions{}); err != nil {
					t.Fatal(err)
				}
				if _, err := st.Put(old[0], []byte("newer")); err != nil {
					t.Fatal(err)
				}
				want = ""
			}
			waitPurged(t, st)
			for i, k := range old {
				v, _, err := st.Get(k)
				switch {
				case want == "" && i == 0:
					if err != nil || string(v) != "newer" {
						t.Fatalf("key %q after the second drop: %q, %v; want newer", k, v, err)
					}
				case want == "":
					if ignoreNotFound(err) != nil || err == nil {
						t.Fatalf("key %q after the second drop: %q, %v; want none", k, v, err)
					}
				case err != nil || string(v) != want:
					t.Fatalf("key %q written after the drop: %q, %v; want %q", k, v, err, want)
				}
			}
		})
	}
}

// ignoreNotFound is nil for ErrNotFound, err otherwise.
func ignoreNotFound(err error) error {
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}
