package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/pkg/slot"
)

// BenchmarkCleanupWriteStall measures what deleting the data of moved slots
// costs the writes to the slots a node keeps: ~200k keys of slots 0-99 are
// deleted while another goroutine writes to slots 1000-1999 as fast as it
// can, retrying a write refused with ErrBlockedWrites the way a router
// retries Unavailable. It reports the worst and 99th-percentile write
// latency during the deletion (max-write-µs, p99-write-µs), the writes
// refused (blocked-writes) and the deletion time (delete-ms), for Badger's
// DropPrefix and for DeleteSlots, which drops the slots and purges them
// in the background in small batches (delete-ms until the drop returned,
// purge-ms until the purge is done; the writes are measured through
// both). DESIGN.md asks for this number before DropPrefix is used on a
// live node:
//
//	go test -run '^$' -bench CleanupWriteStall -benchtime 3x ./services/storage/internal/store/
func BenchmarkCleanupWriteStall(b *testing.B) {
	const (
		keys     = 200_000
		dropFrom = 0
		dropTo   = 99
	)
	val := make([]byte, 100)
	modes := []struct {
		name   string
		purges bool // a background purge follows: purge-ms is reported
		del    func(s *Store) error
	}{
		{"drop-prefix", false, func(s *Store) error {
			var ps [][]byte
			for sl := dropFrom; sl <= dropTo; sl++ {
				p := slot.Prefix(uint16(sl))
				ps = append(ps, p[:])
			}
			return s.db.DropPrefix(ps...)
		}},
		{"drop-and-purge", true, func(s *Store) error {
			n, err := s.DeleteSlots(context.Background(), []slot.Range{{Start: dropFrom, End: dropTo}}, DeleteOptions{})
			if err == nil && n != keys {
				err = fmt.Errorf("deleted %d keys, want %d", n, keys)
			}
			return err
		}},
	}
	for _, mode := range modes {
		b.Run(mode.name, func(b *testing.B) {
			var (
				worst, p99sum         time.Duration
				blocked               int
				deleteTime, purgeTime time.Duration
			)
			for range b.N {
				b.StopTimer()
				s, err := Open(DefaultOptions(b.TempDir()).WithBlockCacheSize(16 << 20))
				if err != nil {
					b.Fatal(err)
				}
				var batch IngestBatch
				for i := 0; i < keys; {
					batch.Reset(5000, 5000*16)
					for ; batch.Len() < 5000 && i < keys; i++ {
						sl := uint16(dropFrom + i%(dropTo-dropFrom+1))
						k := fmt.Appendf(nil, "{%d}key-%07d", i, i)
						// Lay the key out in the slot directly: the key's own
						// slot does not matter for the measurement.
						batch.keys = append(batch.keys, slot.AppendKey(nil, sl, k))
						batch.vals = append(batch.vals, val)
					}
					if _, err := s.Ingest(&batch); err != nil {
						b.Fatal(err)
					}
				}
				var (
					wg    sync.WaitGroup
					stop  = make(chan struct{})
					lats  []time.Duration
					nblk  int
					werr  error
					start = make(chan struct{})
				)
				wg.Go(func() {
					close(start)
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						k := slot.AppendKey(nil, uint16(1000+i%1000), fmt.Appendf(nil, "w%d", i))
						t0 := time.Now()
						for {
							_, err := s.write(writeOp{op: "put", n: 1, entry: func(int) entry { return entry{key: k, value: val} }})
							if err == nil {
								break
							}
							if !errors.Is(err, badger.ErrBlockedWrites) && !errors.Is(err, rpcerr.ErrUnavailable) {
								werr = err
								return
							}
							nblk++
							time.Sleep(100 * time.Microsecond)
						}
						lats = append(lats, time.Since(t0))
					}
				})
				<-start
				b.StartTimer()
				t0 := time.Now()
				err = mode.del(s)
				d := time.Since(t0)
				if err == nil && mode.purges {
					err = purgeDone(s, 10*time.Minute)
				}
				purgeTime += time.Since(t0)
				b.StopTimer()
				close(stop)
				wg.Wait()
				if err != nil || werr != nil {
					b.Fatalf("delete: %v; writer: %v", err, werr)
				}
				if n, _ := s.Count(context.Background(), []slot.Range{{Start: dropFrom, End: dropTo}}); n != 0 {
					b.Fatalf("%d keys left", n)
				}
				slices.Sort(lats)
				if len(lats) > 0 {
					worst = max(worst, lats[len(lats)-1])
					p99sum += lats[len(lats)*99/100]
				}
				blocked += nblk
				deleteTime += d
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(worst.Microseconds()), "max-write-µs")
			b.ReportMetric(float64(p99sum.Microseconds())/float64(b.N), "p99-write-µs")
			b.ReportMetric(float64(blocked)/float64(b.N), "blocked-writes")
			b.ReportMetric(float64(deleteTime.Milliseconds())/float64(b.N), "delete-ms")
			if mode.purges {
				b.ReportMetric(float64(purgeTime.Milliseconds())/float64(b.N), "purge-ms")
			}
		})
	}
}

// BenchmarkDeleteSlots measures a cleanup on an idle store: keys of 1 KiB
// in 100 slots are deleted by DeleteSlots, counted from the held-key list
// ("keys-known") and by reading the slots ("keys-read"), and by the
// ceiling of deleting them key by key: one raw Badger WriteBatch deleting
// the same keys, with no guard, batches or pacing ("raw-writebatch").
// DeleteSlots drops the slots and purges them after it: keys/s is until
// the keys are gone for every read (the drop returned), purged-keys/s
// until the purge deleted them too. Each reports its ratio to the raw
// WriteBatch of the same run (ratio-to-raw, purged-ratio-to-raw; higher
// is faster):
//
//	SLOTKV_BENCH_KEYS=333000 go test -run '^$' -bench 'DeleteSlots' -benchtime 3x -cpuprofile /tmp/del.pprof ./services/storage/internal/store/
func BenchmarkDeleteSlots(b *testing.B) {
	keys := 200_000
	if v := os.Getenv("SLOTKV_BENCH_KEYS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			b.Fatalf("SLOTKV_BENCH_KEYS=%q: want a positive integer", v)
		}
		keys = n
	}
	rs := []slot.Range{{Start: 0, End: 99}}
	val := make([]byte, 1024)
	load := func(b *testing.B) (*Store, *KeyList) {
		b.Helper()
		s, err := Open(DefaultOptions(b.TempDir()))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = s.Close() })
		list := &KeyList{}
		var batch IngestBatch
		for i := 0; i < keys; {
			batch.Reset(5000, 5000*16)
			for ; batch.Len() < 5000 && i < keys; i++ {
				k := slot.AppendKey(nil, uint16(i%100), fmt.Appendf(nil, "key-%08d", i))
				batch.keys = append(batch.keys, k)
				batch.vals = append(batch.vals, val)
				list.keys = append(list.keys, k)
			}
			if _, err := s.Ingest(&batch); err != nil {
				b.Fatal(err)
			}
		}
		list.dedupe()
		// The cleanup runs after the keys reached the tables, as it does
		// after a migration's snapshot: flush the memtables first.
		if err := s.db.Flatten(1); err != nil {
			b.Fatal(err)
		}
		return s, list
	}
	modes := []struct {
		name string
		del  func(s *Store, l *KeyList) (uint64, error)
	}{
		{"raw-writebatch", func(s *Store, l *KeyList) (uint64, error) {
			wb := s.db.NewWriteBatch()
			defer wb.Cancel()
			for _, k := range l.keys {
				if err := wb.Delete(k); err != nil {
					return 0, err
				}
			}
			return uint64(len(l.keys)), wb.Flush()
		}},
		{"keys-known", func(s *Store, l *KeyList) (uint64, error) {
			return s.DeleteSlots(context.Background(), rs, DeleteOptions{Keys: l})
		}},
		{"keys-read", func(s *Store, _ *KeyList) (uint64, error) {
			return s.DeleteSlots(context.Background(), rs, DeleteOptions{})
		}},
	}
	var rawRate float64
	for _, mode := range modes {
		b.Run(mode.name, func(b *testing.B) {
			var took, purged time.Duration
			for range b.N {
				b.StopTimer()
				s, l := load(b)
				b.StartTimer()
				t0 := time.Now()
				n, err := mode.del(s, l)
				took += time.Since(t0)
				if err == nil {
					err = purgeDone(s, 10*time.Minute)
				}
				purged += time.Since(t0)
				b.StopTimer()
				if err != nil || n != uint64(keys) {
					b.Fatalf("deleted %d of %d keys: %v", n, keys, err)
				}
				if left, _ := s.Count(context.Background(), rs); left != 0 {
					b.Fatalf("%d keys left", left)
				}
				_ = s.Close()
			}
			rate := float64(keys) * float64(b.N) / took.Seconds()
			b.ReportMetric(rate, "keys/s")
			if mode.name == "raw-writebatch" {
				rawRate = rate
			} else if rawRate > 0 {
				purgedRate := float64(keys) * float64(b.N) / purged.Seconds()
				b.ReportMetric(rate/rawRate, "ratio-to-raw")
				b.ReportMetric(purgedRate, "purged-keys/s")
				b.ReportMetric(purgedRate/rawRate, "purged-ratio-to-raw")
			}
		})
	}
}
