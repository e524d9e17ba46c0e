package storage_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/services/storage/internal/store"
	"github.com/slotkv/slotkv/services/storage/internal/store/storetest"
)

// Benchmarks compare the same operation on the store directly (in process)
// and through gRPC on loopback (validation, ownership check, protobuf,
// HTTP/2, tracing hooks), so `make bench` can print the ratio grpc/direct.
// Each reports latency percentiles next to ns/op.

const (
	benchKeys  = 10000
	benchValue = 100
)

func benchKey(i int) []byte { return fmt.Appendf(nil, "bench:%06d", i%benchKeys) }

// latencies records one duration per operation and reports p50 and p99.
type latencies []time.Duration

func (l latencies) report(b *testing.B) {
	if len(l) == 0 {
		return
	}
	slices.Sort(l)
	pct := func(p float64) float64 { return float64(l[int(p*float64(len(l)-1))].Nanoseconds()) }
	b.ReportMetric(pct(0.50), "p50-ns")
	b.ReportMetric(pct(0.99), "p99-ns")
}

// measure runs op once per benchmark iteration, timing each call.
func measure(b *testing.B, op func(i int) error) {
	lat := make(latencies, 0, 1<<16)
	i := 0
	for b.Loop() {
		start := time.Now()
		if err := op(i); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
		i++
	}
	lat.report(b)
}

func benchStore(b *testing.B) *store.Store {
	st := storetest.OpenOptions(b, store.DefaultOptions(b.TempDir()).WithMemTableSize(16<<20).WithBlockCacheSize(16<<20))
	val := make([]byte, benchValue)
	muts := make([]store.Mutation, benchKeys)
	for i := range muts {
		muts[i] = store.Mutation{Key: benchKey(i), Value: val}
	}
	if err := st.BatchWrite(muts); err != nil {
		b.Fatal(err)
	}
	return st
}

// startBenchNode runs a node owning every slot, preloaded like benchStore.
func startBenchNode(b *testing.B) storagev1.StorageServiceClient {
	o := testOptions(b, "bench")
	o.MemTableBytes, o.BlockCacheBytes = 16<<20, 16<<20
	n := startNode(b, o)
	n.ownAll(b)
	val := make([]byte, benchValue)
	req := &storagev1.BatchWriteRequest{}
	for i := range benchKeys {
		req.Mutations = append(req.Mutations, &storagev1.Mutation{Key: benchKey(i), Value: val})
	}
	if _, err := n.data.BatchWrite(ctxT(b), req); err != nil {
		b.Fatal(err)
	}
	return n.data
}

func BenchmarkGet(b *testing.B) {
	b.Run("direct", func(b *testing.B) {
		st := benchStore(b)
		measure(b, func(i int) error { _, _, err := st.Get(benchKey(i)); return err })
	})
	b.Run("grpc", func(b *testing.B) {
		c := startBenchNode(b)
		ctx := b.Context()
		measure(b, func(i int) error {
			_, err := c.Get(ctx, &storagev1.GetRequest{Key: benchKey(i)})
			return err
		})
	})
}

func BenchmarkPut(b *testing.B) {
	val := make([]byte, benchValue)
	b.Run("direct", func(b *testing.B) {
		st := benchStore(b)
		measure(b, func(i int) error { _, err := st.Put(benchKey(i), val); return err })
	})
	b.Run("grpc", func(b *testing.B) {
		c := startBenchNode(b)
		ctx := b.Context()
		measure(b, func(i int) error {
			_, err := c.Put(ctx, &storagev1.PutRequest{Key: benchKey(i), Value: val})
			return err
		})
	})
}
