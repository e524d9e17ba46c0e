package store

import (
	"testing"

	"github.com/slotkv/slotkv/pkg/slot"
)

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

// snapshotOf opens the change log of job and a snapshot at its head,
// closed in t.Cleanup (Close is idempotent: a test may close it sooner).
func snapshotOf(t *testing.T, st *Store, job string) *Snapshot {
	t.Helper()
	l, err := st.ChangeLog(job)
	if err != nil {
		t.Fatal(err)
	}
	sn, err := st.OpenSnapshot(l)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sn.Close)
	return sn
}

// captureAll opens the change log of job and captures every slot's writes
// into it, as if the job migrated every slot.
func captureAll(t *testing.T, st *Store, job string) *ChangeLog {
	t.Helper()
	l, err := st.ChangeLog(job)
	if err != nil {
		t.Fatal(err)
	}
	var tbl CaptureTable
	for s := range slot.Count {
		tbl[s] = l
	}
	st.SetCapture(&tbl)
	return l
}
