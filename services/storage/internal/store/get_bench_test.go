package store

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// BenchmarkGetByValueThreshold reads random keys of 200,000 values of
// 1 KiB, with the values in the value log (the default threshold) and in
// the LSM tree (threshold 1 MiB): Store.Get, and as the baseline of the
// same run a raw Badger read (txn.Get and Item.ValueCopy) of the same
// storage keys in the same database. ratio-to-raw is raw ns / Get ns:
//
//	go test -run '^$' -bench GetByValueThreshold -benchtime 300000x ./services/storage/internal/store/
func BenchmarkGetByValueThreshold(b *testing.B) {
	const n = 200_000
	key := func(i int) []byte { return fmt.Appendf(nil, "key-%08d", i) }
	rawKeys := make([][]byte, n)
	for i := range n {
		var err error
		if rawKeys[i], _, err = storageKey(nil, key(i)); err != nil {
			b.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name      string
		threshold int64
	}{{"value-log", DefaultValueThreshold}, {"lsm-tree", 1 << 20}} {
		// Loaded once per layout (b.Run calls its function more than
		// once), and closed before the next layout loads.
		s, err := Open(DefaultOptions(b.TempDir()).WithValueThreshold(tc.threshold).WithValueLogGCInterval(-1))
		if err != nil {
			b.Fatal(err)
		}
		val := make([]byte, 1024)
		var batch IngestBatch
		for i := 0; i < n; {
			batch.Reset(5000, 5000*16)
			for ; batch.Len() < 5000 && i < n; i++ {
				if _, err := batch.Add(key(i), val); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := s.Ingest(&batch); err != nil {
				b.Fatal(err)
			}
		}
		// Read from the tables, as a node does once its memtables have
		// been flushed.
		if err := s.db.Flatten(1); err != nil {
			b.Fatal(err)
		}
		b.Run(tc.name, func(b *testing.B) {
			r := rand.New(rand.NewPCG(1, 2))
			b.ResetTimer()
			for range b.N {
				if _, _, err := s.Get(key(r.IntN(n))); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			got := b.Elapsed()
			r = rand.New(rand.NewPCG(1, 2))
			start := time.Now()
			for range b.N {
				k := rawKeys[r.IntN(n)]
				if err := s.db.View(func(txn *badger.Txn) error {
					item, err := txn.Get(k)
					if err != nil {
						return err
					}
					_, err = item.ValueCopy(nil)
					return err
				}); err != nil {
					b.Fatal(err)
				}
			}
			raw := time.Since(start)
			b.ReportMetric(raw.Seconds()/got.Seconds(), "ratio-to-raw")
			b.ReportMetric(float64(raw.Nanoseconds())/float64(b.N), "raw-ns/op")
		})
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
