package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/services/storage/internal/store"
	"github.com/slotkv/slotkv/services/storage/internal/store/storetest"
)

// TestIngestSplits: a batch too big for one transaction (the BatchWrite of
// TestBatchTooLarge) is written whole, in several transactions.
func TestIngestSplits(t *testing.T) {
	t.Parallel()
	st := storetest.OpenOptions(t, storetest.Options(t.TempDir()).WithMemTableSize(1<<20))
	val := bytes.Repeat([]byte("v"), 1024)
	var b store.IngestBatch
	b.Reset(2000, 0) // a key-bytes hint too small: the arena grows in chunks
	for i := range 2000 {
		k := fmt.Appendf(nil, "k%05d", i)
		sl, err := b.Add(k, val)
		if err != nil || sl != slot.Of(k) {
			t.Fatalf("Add(%s) = %d, %v", k, sl, err)
		}
	}
	if b.Len() != 2000 || b.Bytes() != 2000*(6+1024) {
		t.Fatalf("Len = %d, Bytes = %d", b.Len(), b.Bytes())
	}
	txns, err := st.Ingest(&b)
	if err != nil || txns < 2 {
		t.Fatalf("Ingest = %d txns, %v; want several", txns, err)
	}
	if n, _ := st.KeyCount(context.Background()); n != 2000 {
		t.Errorf("%d keys after ingest, want 2000", n)
	}
	for _, i := range []int{0, 999, 1999} {
		k := fmt.Appendf(nil, "k%05d", i)
		if v, _, err := st.Get(k); err != nil || !bytes.Equal(v, val) {
			t.Errorf("Get(%s) = %d bytes, %v", k, len(v), err)
		}
	}
	// Reuse: the batch starts empty, the earlier keys are untouched.
	b.Reset(1, 3)
	if _, err := b.Add([]byte("again"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	if txns, err := st.Ingest(&b); err != nil || txns != 1 {
		t.Fatalf("Ingest = %d txns, %v; want 1", txns, err)
	}
	if n, _ := st.KeyCount(context.Background()); n != 2001 {
		t.Errorf("%d keys, want 2001", n)
	}
}

func TestIngestBatchAddRefuses(t *testing.T) {
	t.Parallel()
	var b store.IngestBatch
	b.Reset(2, 10)
	if _, err := b.Add(nil, []byte("v")); !errors.Is(err, store.ErrEmptyKey) {
		t.Errorf("empty key: %v", err)
	}
	if b.Len() != 0 || b.Bytes() != 0 {
		t.Errorf("refused records were added: Len %d, Bytes %d", b.Len(), b.Bytes())
	}
}
