package node_test

import (
	"testing"

	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/services/storage/internal/node"
	"github.com/slotkv/slotkv/services/storage/internal/store"
	"github.com/slotkv/slotkv/services/storage/internal/store/storetest"
)

// TestMarkEmpty: MarkEmpty marks only slots that take no writes (None) and
// that no transition opened since the openings were counted; the marks
// survive a restart, and any state that may take data clears them,
// whichever transition sets it, a topology install included.
func TestMarkEmpty(t *testing.T) {
	t.Parallel()
	given := slot.MustParseRangeSet("100-149") // "b" owns them in topo; "a" does not
	tests := []struct {
		name string
		// between runs after the openings are counted, before MarkEmpty.
		between func(t *testing.T, n *node.Node)
		want    string
	}{
		{"untouched", func(*testing.T, *node.Node) {}, "100-149"},
		{"opened and closed again meanwhile", func(t *testing.T, n *node.Node) {
			mark(t, n, node.Importing, "j")
			mark(t, n, node.None, "")
		}, ""},
		{"importing at the mark", func(t *testing.T, n *node.Node) { mark(t, n, node.Importing, "j") }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			st, err := store.Open(storetest.Options(t.TempDir()))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = st.Close() })
			n := open(t, st, "a")
			if _, _, err := n.SetTopology(topo(1)); err != nil {
				t.Fatal(err)
			}
			openings := n.Openings(given)
			tt.between(t, n)
			marked, err := n.MarkEmpty(given, openings)
			if err != nil {
				t.Fatal(err)
			}
			if marked.String() != tt.want || n.Empty().String() != tt.want {
				t.Errorf("marked %q, Empty() %q, want %q", marked, n.Empty(), tt.want)
			}
		})
	}

	t.Run("persisted, and cleared by any state that takes data", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		st, err := store.Open(storetest.Options(dir))
		if err != nil {
			t.Fatal(err)
		}
		n := open(t, st, "a")
		if _, _, err := n.SetTopology(topo(1)); err != nil {
			t.Fatal(err)
		}
		if _, err := n.MarkEmpty(given, n.Openings(given)); err != nil {
			t.Fatal(err)
		}
		reopen := func() {
			t.Helper()
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			if st, err = store.Open(storetest.Options(dir)); err != nil {
				t.Fatal(err)
			}
			n = open(t, st, "a")
		}
		reopen()
		if got := n.Empty().String(); got != "100-149" {
			t.Fatalf("after a restart Empty() = %q, want 100-149", got)
		}
		// A topology that assigns the slots here makes them OWNED.
		if _, _, err := n.SetTopology(moved(2)); err != nil {
			t.Fatal(err)
		}
		if got := n.Empty().String(); got != "" {
			t.Errorf("OWNED slots still empty: %q", got)
		}
		// Given away again: None, but not empty, whatever they took.
		if _, _, err := n.SetTopology(topo(3)); err != nil {
			t.Fatal(err)
		}
		reopen()
		t.Cleanup(func() { _ = st.Close() })
		if got := n.Empty().String(); got != "" {
			t.Errorf("slots that were OWNED are empty after a restart: %q", got)
		}
	})
}
