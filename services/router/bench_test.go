package router_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"

	routerv1 "github.com/slotkv/slotkv/gen/slotkv/router/v1"
	"github.com/slotkv/slotkv/pkg/otlpsink"
	"github.com/slotkv/slotkv/pkg/telemetry"
	"github.com/slotkv/slotkv/services/router"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
)

const benchKeys = 1000

// benchRouter is an in-process router over 3 real storage nodes holding
// benchKeys keys.
func benchRouter(b *testing.B) (*testRouter, []string) {
	b.Helper()
	return benchRouterWith(b, router.Options{})
}

func benchRouterWith(b *testing.B, o router.Options) (*testRouter, []string) {
	b.Helper()
	o.Logger = slog.New(slog.DiscardHandler)
	_, _, r := setup(b, 3, o)
	keys := make([]string, benchKeys)
	values := map[string]string{}
	for i := range keys {
		keys[i] = fmt.Sprintf("bench/%05d", i)
		values[keys[i]] = fmt.Sprintf("value-%05d-%s", i, "0123456789abcdef0123456789abcdef")
	}
	multiPut(b, r, values)
	return r, keys
}

// BenchmarkMultiGet100: one MultiGet of 100 keys (spread over the 3 nodes)
// per op. Compare with BenchmarkSequentialGet100.
func BenchmarkMultiGet100(b *testing.B) {
	r, keys := benchRouter(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		off := (i * 100) % benchKeys
		resp, err := r.KV.MultiGet(ctx, &routerv1.MultiGetRequest{Keys: keys[off : off+100]})
		if err != nil {
			b.Fatal(err)
		}
		if len(resp.GetEntries()) != 100 || !resp.GetEntries()[99].GetFound() {
			b.Fatalf("MultiGet: %d entries", len(resp.GetEntries()))
		}
	}
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "keys/s")
}

// BenchmarkSequentialGet100: 100 single-key Gets one after the other per
// op, through the same router.
func BenchmarkSequentialGet100(b *testing.B) {
	r, keys := benchRouter(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		off := (i * 100) % benchKeys
		for _, k := range keys[off : off+100] {
			if _, err := r.KV.Get(ctx, &routerv1.GetRequest{Key: k}); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "keys/s")
}

// BenchmarkScan: a whole scan of the keys in pages of 250 per op,
// reported in keys/s.
func BenchmarkScan(b *testing.B) {
	r, _ := benchRouter(b)
	ctx := context.Background()
	total := 0
	b.ResetTimer()
	for b.Loop() {
		req := &routerv1.ScanRequest{Limit: 250}
		n := 0
		for {
			resp, err := r.KV.Scan(ctx, req)
			if err != nil {
				b.Fatal(err)
			}
			n += len(resp.GetEntries())
			if resp.GetNextCursor() == "" {
				break
			}
			req.Cursor = resp.GetNextCursor()
		}
		if n != benchKeys {
			b.Fatalf("scan saw %d keys, want %d", n, benchKeys)
		}
		total += n
	}
	b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "keys/s")
}

// BenchmarkTracing: single-key Gets through the router, untraced (no
// span sampled) and traced with every request sampled and exported over
// OTLP/gRPC to a real receiver on loopback, in reqs/s; metrics are
// recorded in both. The ratio is what tracing everything costs.
func BenchmarkTracing(b *testing.B) {
	for _, traced := range []bool{false, true} {
		name := "untraced"
		if traced {
			name = "traced"
		}
		b.Run(name, func(b *testing.B) {
			// Metrics are on in both: the ratio is tracing's alone.
			cfg := telemetry.Config{ServiceName: "router"}
			if traced {
				sink := otlpsink.Start(b)
				sink.Discard() // receive and decode, but do not pile up spans
				exp, err := otlptracegrpc.New(context.Background(), otlptracegrpc.WithEndpoint(sink.Addr()), otlptracegrpc.WithInsecure())
				if err != nil {
					b.Fatal(err)
				}
				cfg.SampleRatio, cfg.Exporter = 1, exp
			}
			tel, err := telemetry.Setup(context.Background(), cfg)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
			o := router.Options{TracerProvider: tel.TracerProvider, MeterProvider: tel.MeterProvider}
			r, keys := benchRouterWith(b, o)
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				if _, err := r.KV.Get(ctx, &routerv1.GetRequest{Key: keys[i%benchKeys]}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reqs/s")
		})
	}
}
