package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/slotkv/slotkv/pkg/slot"
)

// TestHeldKeys: the keys a snapshot's scans recorded, with the changes
// after the snapshot applied, are exactly the keys the slots hold when
// every key interval was scanned (by one scan, by halves, by a scan that
// stopped and was resumed, or twice); otherwise, or over the memory cap,
// there is no list. DeleteSlots with the list deletes every key and counts
// what a read of the slots would have counted.
func TestHeldKeys(t *testing.T) {
	t.Parallel()
	all := []slot.Range{{Start: 0, End: slot.Count - 1}}
	lower := []slot.Range{{Start: 0, End: 8191}}
	upper := []slot.Range{{Start: 8192, End: slot.Count - 1}}
	errStop := errors.New("stop")
	// scan runs one scan of ranges after startAfter; with stopAfter > 0 its
	// emit fails at that batch. It returns the last key of the last batch
	// taken, and of the batch refused.
	scan := func(t *testing.T, sn *Snapshot, ranges []slot.Range, startAfter []byte, stopAfter int) (taken, refused []byte) {
		t.Helper()
		batches := 0
		err := sn.Scan(ranges, startAfter, 100, 1<<20, func(b SnapshotBatch) error {
			if batches++; batches == stopAfter {
				refused = slices.Clone(b.Last)
				return errStop
			}
			taken = slices.Clone(b.Last)
			return nil
		})
		if err != nil && (stopAfter == 0 || !errors.Is(err, errStop)) {
			t.Fatalf("Scan: %v", err)
		}
		return taken, refused
	}
	tests := []struct {
		name   string
		limit  int // Options.HeldKeysBytes
		scans  func(t *testing.T, sn *Snapshot)
		wantOK bool
	}{
		{"one scan", 0, func(t *testing.T, sn *Snapshot) { scan(t, sn, all, nil, 0) }, true},
		{"two halves", 0, func(t *testing.T, sn *Snapshot) { scan(t, sn, upper, nil, 0); scan(t, sn, lower, nil, 0) }, true},
		{"one half", 0, func(t *testing.T, sn *Snapshot) { scan(t, sn, lower, nil, 0) }, false},
		{"a stopped scan resumed after the batch it stopped at", 0, func(t *testing.T, sn *Snapshot) {
			_, refused := scan(t, sn, all, nil, 3)
			scan(t, sn, all, refused, 0)
		}, true},
		{"a stopped scan resumed after its last batch taken", 0, func(t *testing.T, sn *Snapshot) {
			// The refused batch was recorded too: its keys are scanned
			// twice.
			taken, _ := scan(t, sn, all, nil, 3)
			scan(t, sn, all, taken, 0)
		}, true},
		{"a scan stopped past the batch it stopped at", 0, func(t *testing.T, sn *Snapshot) {
			_, refused := scan(t, sn, all, nil, 3)
			scan(t, sn, all, append(refused, 0xFF), 0) // skips keys
		}, false},
		{"a stopped scan not resumed", 0, func(t *testing.T, sn *Snapshot) { scan(t, sn, all, nil, 3) }, false},
		{"every key scanned twice", 0, func(t *testing.T, sn *Snapshot) { scan(t, sn, all, nil, 0); scan(t, sn, all, nil, 0) }, true},
		{"over the memory cap", 4 << 10, func(t *testing.T, sn *Snapshot) { scan(t, sn, all, nil, 0) }, false},
		{"recording off", -1, func(t *testing.T, sn *Snapshot) { scan(t, sn, all, nil, 0) }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st, err := Open(DefaultOptions(t.TempDir()).WithMemTableSize(4 << 20).WithBlockCacheSize(4 << 20).WithHeldKeysBytes(tc.limit))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = st.Close() })
			put := func(k string, exp int64) {
				t.Helper()
				if _, err := st.PutExpiring([]byte(k), []byte("v-"+k), exp); err != nil {
					t.Fatal(err)
				}
			}
			for i := range 1000 {
				put(fmt.Sprint("k", i), 0)
			}
			put("expires-later", NowMs()+time.Hour.Milliseconds())

			// The job: every slot captured into its log, then the snapshot.
			l := captureAll(t, st, "job")
			sn, err := st.OpenSnapshot(l)
			if err != nil {
				t.Fatal(err)
			}
			defer sn.Close()
			tc.scans(t, sn)
			// Writes after the snapshot: new keys, deletes (of keys that
			// exist and of one that does not), overwrites, a put that
			// expires at once.
			for i := range 50 {
				put(fmt.Sprint("new", i), 0)
				if _, _, err := st.Delete(fmt.Appendf(nil, "k%d", i)); err != nil {
					t.Fatal(err)
				}
				put(fmt.Sprint("k", 100+i), 0)
			}
			if _, _, err := st.Delete([]byte("never-written")); err != nil {
				t.Fatal(err)
			}
			put("new0", NowMs()-1)
			st.SetCapture(nil) // frozen

			list, ok, err := st.HeldKeys(sn, l, all, l.Head())
			if err != nil || ok != tc.wantOK {
				t.Fatalf("HeldKeys: ok %v, %v; want ok %v", ok, err, tc.wantOK)
			}
			if !ok {
				return
			}
			var live []string
			out := make(chan [][]byte, 1)
			go func() { _ = st.collectRanges(context.Background(), all, 100, out) }()
			for keys := range out {
				for _, k := range keys {
					live = append(live, string(k))
				}
			}
			var listed []string
			for _, k := range list.keys {
				listed = append(listed, string(k))
			}
			slices.Sort(listed)
			if !slices.Equal(listed, live) {
				t.Fatalf("the list holds %d live keys, the slots %d; first difference in %v",
					len(listed), len(live), firstDiff(listed, live))
			}
			n, err := st.DeleteSlots(t.Context(), all, DeleteOptions{Keys: list})
			if err != nil || n != uint64(len(live)) {
				t.Fatalf("DeleteSlots(keys) = %d, %v; want %d", n, err, len(live))
			}
			if left, err := st.Count(t.Context(), all); err != nil || left != 0 {
				t.Fatalf("after DeleteSlots: %d keys left, %v", left, err)
			}
		})
	}
}

// firstDiff returns the first element where two sorted lists differ.
func firstDiff(a, b []string) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf("%q / %q", a[i], b[i])
		}
	}
	return "the tail"
}

// TestScanRecordsExpiredEntries: an entry whose expiry has passed is on
// disk until Badger hides it (from the ceiling second of the expiry on) and
// a read of the slots finds it; the scans do not hand it out, but record
// its key, so the cleanup deletes it as a read would.
func TestScanRecordsExpiredEntries(t *testing.T) {
	t.Parallel()
	st := openInternal(t)
	all := []slot.Range{{Start: 0, End: slot.Count - 1}}
	l, err := st.ChangeLog("job")
	if err != nil {
		t.Fatal(err)
	}
	// The entry is in the window only for up to a second: try again when
	// a busy machine let the window pass before the scan ended.
	for attempt := range 5 {
		key := fmt.Appendf(nil, "expired-%d", attempt)
		exp := (NowMs()/1000+1)*1000 + 1 // Badger hides it from exp's ceiling second: 999 ms later
		if _, err := st.PutExpiring(key, []byte("v"), exp); err != nil {
			t.Fatal(err)
		}
		for NowMs() <= exp {
			time.Sleep(5 * time.Millisecond)
		}
		sn, err := st.OpenSnapshot(l)
		if err != nil {
			t.Fatal(err)
		}
		handed := false
		err = sn.Scan(all, nil, 100, 1<<20, func(b SnapshotBatch) error {
			for _, kv := range b.Items {
				handed = handed || string(kv.Key) == string(key)
			}
			return nil
		})
		inWindow := NowMs() < (exp/1000+1)*1000
		list, ok, herr := st.HeldKeys(sn, l, all, l.Head())
		sn.Close()
		if err != nil || herr != nil || !ok {
			t.Fatalf("Scan: %v; HeldKeys: ok %v, %v", err, ok, herr)
		}
		if !inWindow {
			continue
		}
		if handed {
			t.Fatal("the scan handed out an expired entry")
		}
		if !slices.ContainsFunc(list.keys, func(k []byte) bool { return string(k[slot.PrefixLen:]) == string(key) }) {
			t.Fatalf("the expired entry's key is not in the list (%d keys)", list.Len())
		}
		return
	}
	t.Fatal("no scan ended within the second an expired entry stays on disk, in 5 tries")
}
