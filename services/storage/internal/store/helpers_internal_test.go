package store

import "testing"

// openInternal opens a small store in t.TempDir() for this package's own
// tests (storetest cannot serve them: it imports this package) and closes
// it in t.Cleanup.
func openInternal(t *testing.T) *Store {
	t.Helper()
	st, err := Open(DefaultOptions(t.TempDir()).WithMemTableSize(4 << 20).WithBlockCacheSize(4 << 20))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}
