package store_test

import (
	"fmt"
	"strconv"
	"sync"
	"testing"

	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/services/storage/internal/store"
	"github.com/slotkv/slotkv/services/storage/internal/store/storetest"
)

// TestUpdateCaptured: Updates of a migrating slot are captured like Puts,
// one change per applied update in commit order, also under concurrency;
// an update that writes nothing (a refused condition, an absent key)
// captures nothing; an expiry survives into the change record.
func TestUpdateCaptured(t *testing.T) {
	t.Parallel()
	st := storetest.Open(t)
	k := storetest.KeyInSlot(9, "n")
	l := captureSlots(t, st, "job", slot.Range{Start: 9, End: 9})
	const workers, each = 8, 40
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				if _, err := st.Update(k, store.Update{Op: store.OpIncrBy, Delta: 1}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if _, err := st.Update(k, store.Update{Op: store.OpSet, Value: []byte("x"), Cond: store.IfAbsent}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Update(storetest.KeyInSlot(9, "absent"), store.Update{Op: store.OpPersist}); err != nil {
		t.Fatal(err)
	}
	exp := store.NowMs() + 3_600_000
	res, err := st.Update(k, store.Update{Op: store.OpExpire, ExpiresAt: exp})
	if err != nil || !res.Applied || res.ExpiresAt != exp {
		t.Fatalf("EXPIRE = %+v, %v", res, err)
	}
	cs, head, err := st.ReadChanges(l, 0, 10000, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if head != workers*each+1 || len(cs) != int(head) {
		t.Fatalf("%d changes up to head %d, want %d", len(cs), head, workers*each+1)
	}
	for i, c := range cs[:workers*each] {
		if string(c.Value) != strconv.Itoa(i+1) || c.Seq != uint64(i+1) || c.ExpiresAt != 0 {
			t.Fatalf("change %d = %q (seq %d, exp %d), want %d in commit order", i, c.Value, c.Seq, c.ExpiresAt, i+1)
		}
	}
	if last := cs[len(cs)-1]; string(last.Value) != fmt.Sprint(workers*each) || last.ExpiresAt != exp || last.Delete {
		t.Errorf("EXPIRE's change = %+v, want the value with expiry %d", last, exp)
	}
}
