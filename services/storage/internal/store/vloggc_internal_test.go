package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Values of DefaultValueThreshold bytes and more live in the value log;
// once they are overwritten or deleted, and compactions have seen it, a
// collection rewrites the files that are mostly garbage: the value log
// shrinks, and every live value still reads back.
func TestGCValueLog(t *testing.T) {
	t.Parallel()
	const keys = 1500 // of 4 KiB: 6 MiB per generation, in 1 MiB files
	cases := []struct {
		name string
		// garbage makes the first generation garbage; live tells whether
		// key i is expected afterwards.
		garbage func(t *testing.T, s *Store)
		live    func(i int) bool
		// liveGen is the generation of the values that stay.
		liveGen int
		// shrink is the most the value log may keep of its size: the
		// live share of it, and a file's worth of slack.
		shrink float64
	}{
		{"overwritten", func(t *testing.T, s *Store) {
			for i := range keys {
				if _, err := s.Put(gcKey(i), value(t, i, 2)); err != nil {
					t.Fatal(err)
				}
			}
		}, func(int) bool { return true }, 2, 0.6},
		{"deleted", func(t *testing.T, s *Store) {
			for i := range keys {
				if i%4 == 0 {
					continue
				}
				if _, _, err := s.Delete(gcKey(i)); err != nil {
					t.Fatal(err)
				}
			}
		}, func(i int) bool { return i%4 == 0 }, 1, 0.4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// The interval is negative: this test runs the collection.
			opts := gcTestOptions(t.TempDir()).WithValueLogGCInterval(-1)
			s, err := Open(opts)
			if err != nil {
				t.Fatal(err)
			}
			for i := range keys {
				if _, err := s.Put(gcKey(i), value(t, i, 1)); err != nil {
					t.Fatal(err)
				}
			}
			tc.garbage(t, s)
			// Compactions tell the value log which values they dropped:
			// reopen (the memtables go to level 0) and flatten the tree.
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if s, err = Open(opts); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			if err := s.db.Flatten(1); err != nil {
				t.Fatal(err)
			}
			g, err := s.GCValueLog(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if g.Rewritten == 0 || float64(g.After) > tc.shrink*float64(g.Before) || s.ValueLogFilesRewritten() != uint64(g.Rewritten) {
				t.Fatalf("collection rewrote %d files (counted %d), value log %d -> %d bytes: want files rewritten and at most %.0f%% left",
					g.Rewritten, s.ValueLogFilesRewritten(), g.Before, g.After, 100*tc.shrink)
			}
			for i := range keys {
				v, _, err := s.Get(gcKey(i))
				switch {
				case !tc.live(i):
					if !errors.Is(err, ErrNotFound) {
						t.Fatalf("deleted key %d: Get = %d bytes, %v; want ErrNotFound", i, len(v), err)
					}
				case err != nil:
					t.Fatalf("key %d: %v", i, err)
				case !bytes.Equal(v, value(t, i, tc.liveGen)):
					t.Fatalf("key %d reads another value after the collection", i)
				}
			}
		})
	}
}

// gcTestOptions are the options of a store whose value log a test
// collects: 1 MiB value-log files, and memtables so small that level 0
// fills with enough tables for Flatten to compact them (it leaves a level
// 0 of a table or two alone), which is how Badger learns what is garbage.
func gcTestOptions(dir string) Options {
	return DefaultOptions(dir).WithValueLogFileSize(1 << 20).WithMemTableSize(32 << 10)
}

// gcKey is the i-th key of the value-log tests.
func gcKey(i int) []byte { return fmt.Appendf(nil, "key-%05d", i) }

// value is key i's 4 KiB value of generation gen: pseudo-random bytes
// (compression cannot shrink the log), the same at every call.
func value(t *testing.T, i, gen int) []byte {
	t.Helper()
	r := rand.New(rand.NewPCG(uint64(i), uint64(gen)))
	v := make([]byte, 4<<10)
	for j := 0; j < len(v); j += 8 {
		binary.LittleEndian.PutUint64(v[j:], r.Uint64())
	}
	return v
}

// A snapshot reads on across a collection: two thirds of the keys are
// overwritten before it opens (their first values are garbage to everyone,
// so the files of the first values are mostly garbage), a third after (the
// snapshot still reads their first values). The collection rewrites those
// files with the snapshot open, and the snapshot reads every key as it was
// when it opened.
func TestGCValueLogKeepsSnapshots(t *testing.T) {
	t.Parallel()
	const keys = 1500
	s, err := Open(gcTestOptions(t.TempDir()).WithValueLogGCInterval(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	before := func(i int) bool { return i%3 != 0 } // overwritten before the snapshot
	put := func(i, gen int) {
		t.Helper()
		if _, err := s.Put(gcKey(i), value(t, i, gen)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range keys {
		put(i, 1)
	}
	for i := range keys {
		if before(i) {
			put(i, 2)
		}
	}
	sn := snapshotOf(t, s, "j")
	for i := range keys {
		if !before(i) {
			put(i, 2)
		}
	}
	if err := s.db.Flatten(1); err != nil {
		t.Fatal(err)
	}
	if g, err := s.GCValueLog(context.Background()); err != nil || g.Rewritten == 0 {
		t.Fatalf("collection with a snapshot open = %+v, %v; want files rewritten", g, err)
	}
	// The snapshot reads every key as it was when it opened.
	for i := range keys {
		k, _, err := storageKey(nil, gcKey(i))
		if err != nil {
			t.Fatal(err)
		}
		v, _, found, err := s.getLive(sn.txn, k, NowMs())
		want := 1
		if before(i) {
			want = 2
		}
		if err != nil || !found || !bytes.Equal(v, value(t, i, want)) {
			t.Fatalf("snapshot read of key %d: found %v, %v; want its value of generation %d", i, found, err, want)
		}
	}
	sn.Close()
	for i := range keys {
		if v, _, err := s.Get(gcKey(i)); err != nil || !bytes.Equal(v, value(t, i, 2)) {
			t.Fatalf("key %d after the collection: %v", i, err)
		}
	}
}

// A point read that fails while a collection runs, or after one ran since
// it began, is read again; any other failure is not.
func TestViewRetriesReadsLostToCollection(t *testing.T) {
	t.Parallel()
	s, err := Open(DefaultOptions(t.TempDir()).WithValueLogGCInterval(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	gone := errors.New("file with ID: 1 not found")
	cases := []struct {
		name      string
		collect   func() // what happens during the first read
		err       error
		wantCalls int
	}{
		{"collection ran during the read", func() { s.gcEpoch.Add(2) }, gone, 2},
		{"collection running", func() { s.gcEpoch.Add(1) }, gone, 2},
		{"no collection", func() {}, gone, 1},
		{"not found is an answer", func() { s.gcEpoch.Add(2) }, badger.ErrKeyNotFound, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if s.gcEpoch.Load()%2 == 1 {
				s.gcEpoch.Add(1) // the last case left a collection running
			}
			calls := 0
			err := s.view(func(*badger.Txn) error {
				calls++
				if calls == 1 {
					tc.collect()
					return tc.err
				}
				return nil
			})
			if calls != tc.wantCalls {
				t.Fatalf("view ran fn %d times (err %v), want %d", calls, err, tc.wantCalls)
			}
			if calls == 1 && !errors.Is(err, tc.err) {
				t.Fatalf("view = %v, want %v", err, tc.err)
			}
		})
	}
}

// The store collects the value log by itself every ValueLogGCInterval, and
// Close stops the collection before it closes the database.
//
// The garbage is written before the store that collects opens: Badger
// v4.9.6's rewrite reads the memtable's newest version (DB.MaxVersion)
// without the write goroutine's lock, a data race the race detector
// reports when a collection runs during writes (see vloggc.go).
func TestValueLogCollectedInBackground(t *testing.T) {
	t.Parallel()
	const keys = 1500
	dir := t.TempDir()
	w, err := Open(gcTestOptions(dir).WithValueLogGCInterval(-1))
	if err != nil {
		t.Fatal(err)
	}
	for gen := 1; gen <= 2; gen++ {
		for i := range keys {
			if _, err := w.Put(gcKey(i), value(t, i, gen)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(gcTestOptions(dir).WithValueLogGCInterval(20 * time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if err := s.db.Flatten(1); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for s.ValueLogFilesRewritten() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no value-log file collected in a minute of 20 ms intervals")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.bgDone:
	default:
		t.Fatal("the collection still runs after Close")
	}
}
