package e2e

import (
	"context"
	"errors"

	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	downloaderv1 "github.com/slotkv/slotkv/gen/slotkv/downloader/v1"
	"github.com/slotkv/slotkv/pkg/dataset"
	"github.com/slotkv/slotkv/pkg/slot"
)

// BenchmarkBulkLoad loads a dataset of about 1 GiB (SLOTKV_BENCH_BULK_MB
// changes the size) end to end: served over HTTP by a real server process,
// downloaded and verified by the downloader, ingested into 3 storage nodes.
// It reports the download+verify and ingest rates and, as the baseline, a
// raw Badger write of the same records in this process. Run it once:
// -bench BulkLoad -benchtime 1x.
func BenchmarkBulkLoad(b *testing.B) {
	mb := 1024
	if v := os.Getenv("SLOTKV_BENCH_BULK_MB"); v != "" {
		var err error
		if mb, err = strconv.Atoi(v); err != nil {
			b.Fatalf("SLOTKV_BENCH_BULK_MB=%q: %v", v, err)
		}
	}
	const valueSize = 1000
	records := mb << 20 / (valueSize + 20)
	t0 := time.Now()
	dir, _ := buildDataset(b, records, valueSize, "64MiB")
	m := readManifest(b, dir)
	var fileBytes int64
	for _, f := range m.Files {
		fileBytes += f.Size
	}
	b.Logf("built %d records in %d files (%.0f MiB) in %v", m.Records, len(m.Files), float64(fileBytes)/(1<<20), time.Since(t0).Round(time.Millisecond))

	for b.Loop() {
		c := startCluster(b, 3, "")
		fs := serveDataset(b, dir)
		l := startLoader(b, c)
		ctx := context.Background()
		start := time.Now()
		if _, err := l.api.StartJob(ctx, &downloaderv1.StartJobRequest{JobId: "bench", ManifestUrl: fs.url + "/" + dataset.ManifestName}); err != nil {
			b.Fatal(err)
		}
		var downloaded, firstIngest time.Time
		job := l.wait(b, "bench", func(j *downloaderv1.Job) bool {
			now := time.Now()
			if downloaded.IsZero() && j.GetDownload().GetDone() >= j.GetDownload().GetTotal() && j.GetDownload().GetTotal() > 0 {
				downloaded = now
			}
			if firstIngest.IsZero() && j.GetIngest().GetDone() > 0 {
				firstIngest = now
			}
			return ended(j)
		})
		end := time.Now()
		if job.GetState() != downloaderv1.State_STATE_SUCCEEDED {
			b.Fatalf("job %v: %s", job.GetState(), job.GetError())
		}
		mib := float64(fileBytes) / (1 << 20)
		if downloaded.IsZero() {
			downloaded = end
		}
		if firstIngest.IsZero() || firstIngest.After(downloaded) {
			firstIngest = downloaded
		}
		b.ReportMetric(mib/end.Sub(start).Seconds(), "MB/s-end-to-end")
		b.ReportMetric(mib/downloaded.Sub(start).Seconds(), "MB/s-download+verify")
		b.ReportMetric(mib/end.Sub(firstIngest).Seconds(), "MB/s-ingest")
		b.ReportMetric(mib/rawBadgerWrite(b, dir, m).Seconds(), "MB/s-raw-badger")
	}
}

// rawBadgerWrite writes every record of the dataset into one Badger
// database in this process, as the storage nodes do, with the same key
// layout: the fastest the records can reach disk.
func rawBadgerWrite(b *testing.B, dir string, m *dataset.Manifest) time.Duration {
	// Values from 256 bytes in the value log, as on the storage nodes.
	db, err := badger.Open(badger.DefaultOptions(filepath.Join(b.TempDir(), "raw")).WithLogger(nil).WithValueThreshold(256))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	start := time.Now()
	wb := db.NewWriteBatch()
	for _, f := range m.Files {
		fh, err := os.Open(filepath.Join(dir, f.Name))
		if err != nil {
			b.Fatal(err)
		}
		r, err := dataset.NewReader(fh)
		if err != nil {
			b.Fatal(err)
		}
		for {
			rec, err := r.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				b.Fatalf("%s: %v", f.Name, err)
			}
			if err := wb.Set(slot.AppendKey(nil, rec.Slot, rec.Key), append([]byte(nil), rec.Value...)); err != nil {
				b.Fatal(err)
			}
		}
		fh.Close()
	}
	if err := wb.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := db.Sync(); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}
