package migrator_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	migratorv1 "github.com/slotkv/slotkv/gen/slotkv/migrator/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/testcluster"
)

const (
	benchKeys      = 100_000
	benchValueSize = 1024
)

// BenchmarkMigration moves ~100k keys of 1 KB between two real storage
// nodes with 1 and 4 snapshot streams, next to a raw baseline that copies
// the same keys with plain Scan + BatchWrite calls in one stream. Each
// iteration moves the whole range set (back and forth between the nodes).
//
//	SLOTKV_BIN=$PWD/bin go test -run '^$' -bench Migration -benchtime 2x ./services/migrator/
func BenchmarkMigration(b *testing.B) {
	moved := slot.MustParseRangeSet("0-5460")
	keys := keysIn(moved, benchKeys, "bench")
	var total int64
	for _, k := range keys {
		total += int64(len(k) + benchValueSize)
	}
	setup := func(b *testing.B) *testcluster.Cluster {
		c := startCluster(b, 2, "")
		load(b, c.Node(b, "n1"), keys, benchValueSize)
		return c
	}
	for _, p := range []uint32{1, 4} {
		b.Run(fmt.Sprintf("p%d", p), func(b *testing.B) {
			c := setup(b)
			m := startMigrator(b, c, b.TempDir(), nil)
			from, to := "n1", "n2"
			b.SetBytes(total)
			t0, n := time.Now(), 0
			for b.Loop() {
				n++
				mg := start(b, m, &migratorv1.StartMigrationRequest{Ranges: moved.String(), SourceNodeId: from, DestinationNodeId: to, Parallelism: p})
				f := waitEnd(b, m, mg.GetId())
				if f.GetPhase() != migratorv1.Phase_PHASE_SUCCEEDED {
					b.Fatalf("migration ended %s: %s", f.GetPhase(), f.GetError())
				}
				from, to = to, from
			}
			reportRates(b, t0, n, total)
		})
	}
	b.Run("raw-copy", func(b *testing.B) {
		c := setup(b)
		src, dst := c.Node(b, "n1").StorageClient(), c.Node(b, "n2").StorageClient()
		// The copy goes to n2's own slots: each key gets a hash tag
		// ("{t}") that lands it there, so n2 accepts the writes.
		tag := ""
		for i := 0; tag == ""; i++ {
			if s := slot.OfString(fmt.Sprint(i)); s > 5460 && s <= 10922 {
				tag = "{" + fmt.Sprint(i) + "}"
			}
		}
		ctx := context.Background()
		b.SetBytes(total)
		t0, n := time.Now(), 0
		for b.Loop() {
			n++
			var pos *storagev1.ScanPosition
			copied := 0
			for {
				resp, err := src.Scan(ctx, &storagev1.ScanRequest{Ranges: []*clusterv1.SlotRange{{Start: 0, End: 5460}}, Start: pos, Limit: 1000})
				if err != nil {
					b.Fatal(err)
				}
				if len(resp.GetItems()) > 0 {
					req := &storagev1.BatchWriteRequest{}
					for _, it := range resp.GetItems() {
						req.Mutations = append(req.Mutations, &storagev1.Mutation{Key: append(it.GetKey(), tag...), Value: it.GetValue()})
					}
					if _, err := dst.BatchWrite(ctx, req); err != nil {
						b.Fatal(err)
					}
					copied += len(resp.GetItems())
				}
				if pos = resp.GetNext(); pos == nil {
					break
				}
			}
			if copied != len(keys) {
				b.Fatalf("copied %d keys, want %d", copied, len(keys))
			}
		}
		reportRates(b, t0, n, total)
	})
}

func reportRates(b *testing.B, t0 time.Time, n int, total int64) {
	sec := time.Since(t0).Seconds() / float64(max(n, 1))
	b.ReportMetric(float64(benchKeys)/sec, "keys/s")
	b.ReportMetric(float64(total)/1e6/sec, "MB/s-moved")
}
