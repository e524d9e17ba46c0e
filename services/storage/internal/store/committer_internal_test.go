package store

import (
	"errors"
	"fmt"
	"testing"

	badger "github.com/dgraph-io/badger/v4"
)

// TestCommitter checks what the transactions of a Committer rely on: the
// next one is opened before a commit is queued and only while work goes
// on (Idle discards it); they commit in the order queued; and one opened
// ahead commits over a read-modify-write committed after it opened, since
// it read nothing.
func TestCommitter(t *testing.T) {
	commit := func(t *testing.T, c *Committer, db *badger.DB, set map[string]string) {
		t.Helper()
		txn := c.begin(db)
		for k, v := range set {
			if err := txn.Set([]byte(k), []byte(v)); err != nil {
				t.Fatal(err)
			}
		}
		done := make(chan error, 1)
		c.commit(txn, func(err error) { done <- err })
		if err := <-done; err != nil {
			t.Fatalf("commit: %v", err)
		}
	}
	read := func(t *testing.T, st *Store, k string) string {
		t.Helper()
		var v []byte
		err := st.db.View(func(txn *badger.Txn) error {
			it, err := txn.Get([]byte(k))
			if err != nil {
				return err
			}
			v, err = it.ValueCopy(nil)
			return err
		})
		if err != nil {
			t.Fatalf("read %s: %v", k, err)
		}
		return string(v)
	}
	tests := []struct {
		name string
		run  func(t *testing.T, st *Store)
	}{
		{"opens the next transaction ahead while work goes on", func(t *testing.T, st *Store) {
			c := st.NewCommitter()
			commit(t, c, st.db, map[string]string{"a": "1"})
			if c.next == nil {
				t.Fatal("no transaction opened ahead after a commit")
			}
			ahead := c.next
			if txn := c.begin(st.db); txn != ahead {
				t.Fatal("begin did not return the transaction opened ahead")
			} else {
				txn.Discard()
			}
			commit(t, c, st.db, map[string]string{"a": "2"})
			c.Idle()
			if c.next != nil {
				t.Fatal("Idle left a transaction open")
			}
			c.Idle() // twice is harmless
		}},
		{"commits in the order queued", func(t *testing.T, st *Store) {
			c := st.NewCommitter()
			defer c.Idle()
			const n = 50
			dones := make([]chan error, n)
			for i := range n {
				txn := c.begin(st.db)
				for _, k := range []string{"last", fmt.Sprintf("k%02d", i)} {
					if err := txn.Set([]byte(k), fmt.Appendf(nil, "%d", i)); err != nil {
						t.Fatal(err)
					}
				}
				dones[i] = make(chan error, 1)
				c.commit(txn, func(err error) { dones[i] <- err })
			}
			for i, d := range dones {
				if err := <-d; err != nil {
					t.Fatalf("commit %d: %v", i, err)
				}
			}
			if got := read(t, st, "last"); got != fmt.Sprint(n-1) {
				t.Fatalf("last = %s, want %d: commits applied out of order", got, n-1)
			}
			for i := range n {
				if got := read(t, st, fmt.Sprintf("k%02d", i)); got != fmt.Sprint(i) {
					t.Fatalf("k%02d = %s, want %d", i, got, i)
				}
			}
		}},
		{"a transaction opened ahead never conflicts", func(t *testing.T, st *Store) {
			c := st.NewCommitter()
			defer c.Idle()
			commit(t, c, st.db, map[string]string{"k": "import-1"})
			// A read-modify-write of k commits after the transaction
			// ahead opened, so after its read timestamp.
			err := st.db.Update(func(txn *badger.Txn) error {
				if _, err := txn.Get([]byte("k")); err != nil {
					return err
				}
				return txn.Set([]byte("k"), []byte("client"))
			})
			if err != nil {
				t.Fatal(err)
			}
			commit(t, c, st.db, map[string]string{"k": "import-2"})
			if got := read(t, st, "k"); got != "import-2" {
				t.Fatalf("k = %s, want the last commit's import-2", got)
			}
		}},
		{"a nil Committer opens each transaction when used", func(t *testing.T, st *Store) {
			var c *Committer
			commit(t, c, st.db, map[string]string{"n": "1"})
			c.Idle()
			if got := read(t, st, "n"); got != "1" {
				t.Fatalf("n = %s, want 1", got)
			}
		}},
		{"a discarded transaction opened ahead leaves nothing", func(t *testing.T, st *Store) {
			c := st.NewCommitter()
			commit(t, c, st.db, map[string]string{"x": "1"})
			if err := c.next.Set([]byte("y"), []byte("never")); err != nil {
				t.Fatal(err)
			}
			c.Idle()
			err := st.db.View(func(txn *badger.Txn) error {
				_, err := txn.Get([]byte("y"))
				return err
			})
			if !errors.Is(err, badger.ErrKeyNotFound) {
				t.Fatalf("y after Idle: %v, want not found", err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, openInternal(t))
		})
	}
}
