package storage_test

import (
	"errors"
	"fmt"
	"io"
	"testing"

	badger "github.com/dgraph-io/badger/v4"

	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/slot"
)

// The bulk-load path against its ceiling: BenchmarkIngest streams
// 1000-record batches of 100-byte values to a node over loopback gRPC (one
// stream, acks read concurrently, each batch acknowledged once written);
// BenchmarkRawBadgerWrite writes the same records, already in storage-key
// form, with a Badger WriteBatch flushed per batch, in process, on the same
// Badger options. Both report MB/s of keys + values.

const (
	ingestBatchRecords = 1000
	ingestValueBytes   = 100
	ingestBatchPool    = 64 // distinct batches, cycled: 64000 distinct keys
)

// ingestBatches returns the benchmark's record batches and the key + value
// bytes of one batch.
func ingestBatches() ([][]*storagev1.IngestRecord, int64) {
	val := make([]byte, ingestValueBytes)
	for i := range val {
		val[i] = byte('a' + i%26)
	}
	out := make([][]*storagev1.IngestRecord, ingestBatchPool)
	var size int64
	for b := range out {
		recs := make([]*storagev1.IngestRecord, ingestBatchRecords)
		for i := range recs {
			recs[i] = &storagev1.IngestRecord{Key: fmt.Appendf(nil, "ingest:%09d", b*ingestBatchRecords+i), Value: val}
			if b == 0 {
				size += int64(len(recs[i].Key) + len(recs[i].Value))
			}
		}
		out[b] = recs
	}
	return out, size
}

func BenchmarkIngest(b *testing.B) {
	o := testOptions(b, "bench")
	o.MemTableBytes, o.BlockCacheBytes = 16<<20, 16<<20
	n := startNode(b, o)
	n.ownAll(b)
	batches, size := ingestBatches()
	reqs := make([]*storagev1.IngestRequest, len(batches))
	for i, recs := range batches {
		reqs[i] = &storagev1.IngestRequest{JobId: "bench", File: "bench.dat", Records: recs}
	}
	s, err := n.admin.Ingest(b.Context())
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()

	acked := make(chan error, 1)
	go func() {
		for i := uint64(1); ; i++ {
			a, err := s.Recv()
			switch {
			case errors.Is(err, io.EOF) && i == uint64(b.N)+1:
				acked <- nil
				return
			case err != nil:
				acked <- err
				return
			case a.GetBatch() != i || a.GetRecords() != ingestBatchRecords:
				acked <- fmt.Errorf("ack %v, want batch %d of %d records", a, i, ingestBatchRecords)
				return
			}
		}
	}()
	for i := range b.N {
		r := reqs[i%len(reqs)]
		r.Batch = uint64(i + 1) // Send has marshalled the previous use
		if err := s.Send(r); err != nil {
			break // the receiver reports the stream's error
		}
	}
	if err := s.CloseSend(); err != nil {
		b.Fatal(err)
	}
	if err := <-acked; err != nil {
		b.Fatal(err)
	}
}

func BenchmarkRawBadgerWrite(b *testing.B) {
	// The options store.Open derives from the node's (16 MiB memtables and
	// block cache, 256 MiB value-log files, values from 256 bytes in the
	// value log, no metrics, no sync).
	db, err := badger.Open(badger.DefaultOptions(b.TempDir()).
		WithMemTableSize(16 << 20).WithBlockCacheSize(16 << 20).WithValueLogFileSize(256 << 20).
		WithValueThreshold(256).
		WithMetricsEnabled(false).WithLogger(nil))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = db.Close() })
	batches, size := ingestBatches()
	keys := make([][][]byte, len(batches))
	for i, recs := range batches {
		keys[i] = make([][]byte, len(recs))
		for j, r := range recs {
			keys[i][j] = slot.AppendKey(nil, slot.Of(r.Key), r.Key)
		}
	}
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		recs, ks := batches[i%len(batches)], keys[i%len(batches)]
		wb := db.NewWriteBatch()
		for j, r := range recs {
			if err := wb.Set(ks[j], r.Value); err != nil {
				b.Fatal(err)
			}
		}
		if err := wb.Flush(); err != nil {
			b.Fatal(err)
		}
	}
}
