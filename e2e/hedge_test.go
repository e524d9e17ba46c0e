package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	routerv1 "github.com/slotkv/slotkv/gen/slotkv/router/v1"
	"github.com/slotkv/slotkv/pkg/faultproxy"
	"github.com/slotkv/slotkv/pkg/proctest"
)

// slowReplicas starts three storage nodes holding the same data (three
// instances of one partition), the third behind a proxy that delays every
// answer by delay, and two routers reading through them with round robin:
// one sends a backup request after hedgeDelay (capped at half the calls
// extra), the other never does.
func slowReplicas(tb testing.TB, delay, hedgeDelay time.Duration) (hedged, plain routerv1.KVServiceClient, keys []string) {
	tb.Helper()
	c := startSelfServed(tb, 3)
	keys = testKeys(200)
	for _, n := range c.Nodes {
		c.serve(tb, n, 0, 1)
		seed(tb, n, keys, 0, 1)
	}
	proxy, err := faultproxy.New(c.Nodes[2].Proc.GRPC)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { proxy.Close() })
	proxy.SetDelay(delay)
	naming := filepath.Join(tb.TempDir(), "naming.txt")
	writeNaming(tb, naming, []string{
		c.Nodes[0].Proc.GRPC + " 0/1",
		c.Nodes[1].Proc.GRPC + " 0/1",
		proxy.Addr() + " 0/1 # the slow one",
	})
	start := func(extra ...string) routerv1.KVServiceClient {
		args := append([]string{"--naming-file", naming, "--balancer", "rr",
			"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--log-level", "warn"}, extra...)
		rt := proctest.Start(tb, proctest.Bin(tb, "slotkv-router"), args...)
		kv := routerv1.NewKVServiceClient(benchConn(tb, rt.GRPC))
		// Ready: the layout is complete and the slow node answers.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for {
			if _, err := kv.Get(ctx, &routerv1.GetRequest{Key: keys[0]}); err == nil {
				return kv
			} else if ctx.Err() != nil {
				tb.Fatalf("router not serving: %v", err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return start("--hedge-delay", hedgeDelay.String(), "--hedge-max-ratio", "0.5"), start(), keys
}

// readLatencies reads n keys one after another and returns the latencies,
// sorted.
func readLatencies(tb testing.TB, kv routerv1.KVServiceClient, keys []string, n int) []time.Duration {
	tb.Helper()
	lat := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		k := keys[i%len(keys)]
		t0 := time.Now()
		resp, err := kv.Get(context.Background(), &routerv1.GetRequest{Key: k})
		if err != nil || resp.GetText() != "v:"+k {
			tb.Fatalf("get %s: %v %v", k, resp, err)
		}
		lat = append(lat, time.Since(t0))
	}
	slices.Sort(lat)
	return lat
}

func p99(lat []time.Duration) time.Duration { return lat[len(lat)*99/100] }

// TestHedgingCutsTailLatency: one replica of three answers 200ms late. With
// round robin a third of the reads land on it, so without hedging the p99 is
// at least the delay (the proxy guarantees that); with a backup request after
// 20ms the p99 falls below it (about 20ms plus a read on an idle machine;
// compared with the unhedged p99, not with a fixed time, so a loaded
// machine does not fail it).
func TestHedgingCutsTailLatency(t *testing.T) {
	t.Parallel()
	const delay = 200 * time.Millisecond
	hedged, plain, keys := slowReplicas(t, delay, 20*time.Millisecond)
	withHedge := readLatencies(t, hedged, keys, 150)
	without := readLatencies(t, plain, keys, 120)
	t.Logf("p99 with hedging %v, without %v (slow replica delay %v)", p99(withHedge), p99(without), delay)
	if p99(without) < delay {
		t.Fatalf("without hedging p99 %v is below the slow replica's delay %v: the slow replica took no reads", p99(without), delay)
	}
	// Relative, not absolute: on a loaded machine every read is slower,
	// but the hedged tail stays below the unhedged one, whose p99 is at
	// least the delay by construction.
	if p99(withHedge) >= p99(without) {
		t.Fatalf("with hedging p99 %v, not below the p99 without hedging %v (slow replica delay %v)", p99(withHedge), p99(without), delay)
	}
}

// BenchmarkSlowReplicaReads: p99 of reads with one slow replica of three,
// with and without hedging.
func BenchmarkSlowReplicaReads(b *testing.B) {
	const delay = 100 * time.Millisecond
	hedged, plain, keys := slowReplicas(b, delay, 10*time.Millisecond)
	for _, tc := range []struct {
		name string
		kv   routerv1.KVServiceClient
	}{{"unhedged", plain}, {"hedged", hedged}} {
		b.Run(tc.name, func(b *testing.B) {
			measure(b, func(i int) error {
				k := keys[i%len(keys)]
				_, err := tc.kv.Get(context.Background(), &routerv1.GetRequest{Key: k})
				if err != nil {
					return fmt.Errorf("get %s: %w", k, err)
				}
				return nil
			})
		})
	}
}
