package store

import (
	"fmt"
	"testing"
)

// TestReadChangesSyncsOnce: ReadChanges syncs the disk before it hands out
// changes that no sync has covered yet, and not for changes an earlier
// sync of the store covered (the freeze's, in a hand-off), whichever path
// synced.
func TestReadChangesSyncsOnce(t *testing.T) {
	t.Parallel()
	st := openInternal(t)
	l := captureAll(t, st, "j")
	put := func(i int) {
		t.Helper()
		if _, err := st.Put(fmt.Appendf(nil, "k%d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	read := func(after, wantHead uint64, wantSync bool) {
		t.Helper()
		before := st.syncs.Load()
		cs, head, err := st.ReadChanges(l, after, 100, 1<<20)
		if err != nil || head != wantHead || len(cs) != int(head-after) {
			t.Fatalf("ReadChanges(after %d) = %d changes, head %d, %v; want head %d", after, len(cs), head, err, wantHead)
		}
		if synced := st.syncs.Load() > before; synced != wantSync {
			t.Fatalf("ReadChanges(after %d, head %d): synced %v, want %v", after, head, synced, wantSync)
		}
	}
	tests := []struct {
		name     string
		step     func()
		after    uint64
		head     uint64
		wantSync bool
	}{
		{"nothing to return", func() {}, 0, 0, false},
		{"new changes", func() { put(1); put(2) }, 0, 2, true},
		{"the same changes again", func() {}, 0, 2, false},
		{"one more change", func() { put(3) }, 2, 3, true},
		{"covered by a system sync", func() {
			put(4)
			if err := st.SyncSystem(); err != nil {
				t.Fatal(err)
			}
		}, 3, 4, false},
		{"covered by a snapshot's sync", func() {
			put(5)
			sn, err := st.OpenSnapshot(l)
			if err != nil {
				t.Fatal(err)
			}
			sn.Close()
		}, 4, 5, false},
	}
	for _, tc := range tests { // sequential: each step builds on the last
		t.Run(tc.name, func(t *testing.T) {
			tc.step()
			read(tc.after, tc.head, tc.wantSync)
		})
	}
}
