package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	routerv1 "github.com/slotkv/slotkv/gen/slotkv/router/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/etcdtest"
	"github.com/slotkv/slotkv/pkg/proctest"
	"google.golang.org/grpc"
)

// BenchmarkSingleKey measures single-key operations against real processes:
// a storage node over gRPC (the baseline) and the router in front of it. One
// node owns every slot, so router/storage-get is the cost of the extra hop.
// `make bench` prints the ratios (see cmd/benchratio).
func BenchmarkSingleKey(b *testing.B) {
	dir := b.TempDir()
	// The control plane: the node follows etcd, the router reads the
	// topology there.
	e := etcdtest.Start(b)
	st := proctest.Start(b, proctest.Bin(b, "slotkv-storage"), "--node-id", "b1", "--data-dir", dir,
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--log-level", "warn", "--etcd-endpoints", e.Endpoint)
	out, err := runTool(b, "slotkvctl", "bootstrap", "--storage", st.GRPC, "--etcd-endpoints", e.Endpoint)
	if err != nil {
		b.Fatalf("bootstrap: %v\n%s", err, out)
	}
	rt := proctest.Start(b, proctest.Bin(b, "slotkv-router"), "--etcd-endpoints", e.Endpoint,
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--log-level", "warn")

	stConn := benchConn(b, st.GRPC)
	rtConn := benchConn(b, rt.GRPC)
	storage := storagev1.NewStorageServiceClient(stConn)
	router := routerv1.NewKVServiceClient(rtConn)
	ctx := context.Background()

	const keys = 10000
	value := make([]byte, 100)
	waitRouter(b, router)
	for i := 0; i < keys; i++ {
		if _, err := storage.Put(ctx, &storagev1.PutRequest{Key: benchKey(i), Value: value}); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("storage-put", func(b *testing.B) {
		measure(b, func(i int) error {
			_, err := storage.Put(ctx, &storagev1.PutRequest{Key: benchKey(i % keys), Value: value})
			return err
		})
	})
	b.Run("storage-get", func(b *testing.B) {
		measure(b, func(i int) error {
			_, err := storage.Get(ctx, &storagev1.GetRequest{Key: benchKey(i % keys)})
			return err
		})
	})
	b.Run("router-get", func(b *testing.B) {
		measure(b, func(i int) error {
			_, err := router.Get(ctx, &routerv1.GetRequest{Key: string(benchKey(i % keys))})
			return err
		})
	})
	b.Run("router-put", func(b *testing.B) {
		// With SLOTKV_BENCH_PROFILE_DIR, the router and the node are
		// profiled for the first 5 s of the run (use -benchtime >= 5s).
		if dir := os.Getenv("SLOTKV_BENCH_PROFILE_DIR"); dir != "" && b.N > 1 {
			prof := startProfiles(dir, "router-put", "", 5, map[string]string{"router": rt.HTTP, "storage": st.HTTP})
			defer prof.wait(b)
		}
		measure(b, func(i int) error {
			_, err := router.Put(ctx, &routerv1.PutRequest{Key: string(benchKey(i % keys)), Data: &routerv1.PutRequest_Value{Value: value}})
			return err
		})
	})
}

func benchKey(i int) []byte { return fmt.Appendf(nil, "bench:%08d", i) }

// measure runs op from 16 concurrent callers and reports throughput and
// latency percentiles next to ns/op.
func measure(b *testing.B, op func(i int) error) {
	var (
		next int64
		mu   sync.Mutex
		lat  []time.Duration
	)
	b.SetParallelism(8) // 8 x GOMAXPROCS callers: enough to keep the server busy
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		local := make([]time.Duration, 0, 1024)
		for pb.Next() {
			i := int(atomic.AddInt64(&next, 1))
			t0 := time.Now()
			if err := op(i); err != nil {
				b.Error(err)
				return
			}
			local = append(local, time.Since(t0))
		}
		mu.Lock()
		lat = append(lat, local...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	b.StopTimer()
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "ops/s")
	b.ReportMetric(float64(lat[len(lat)*50/100].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

func benchConn(tb testing.TB, addr string) *grpc.ClientConn { return benchConnToken(tb, addr, "") }

func waitRouter(b *testing.B, r routerv1.KVServiceClient) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := r.Put(context.Background(), &routerv1.PutRequest{Key: "warmup", Data: &routerv1.PutRequest_Text{Text: "x"}})
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("router not serving: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// benchConnToken is benchConn with the cluster token.
func benchConnToken(tb testing.TB, addr, token string) *grpc.ClientConn {
	cc, err := dial.New(addr, dial.Options{Token: token})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cc.Close() })
	return cc
}
