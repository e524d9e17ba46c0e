package e2e

import (
	"context"
	"errors"
	"testing"
	"time"

	downloaderv1 "github.com/slotkv/slotkv/gen/slotkv/downloader/v1"
	"github.com/slotkv/slotkv/pkg/dataset"
	"github.com/slotkv/slotkv/pkg/leader"
	"github.com/slotkv/slotkv/pkg/topostore"
)

// downloaderLeader waits until one of the downloader processes leads the
// downloaders' election in the cluster's etcd (role "downloader", value
// its gRPC address) and returns it and the other.
func downloaderLeader(t *testing.T, c *cluster, a, b *loader) (lead, follow *loader) {
	t.Helper()
	obs, err := leader.New(c.Etcd().Client(t), leader.Options{Prefix: topostore.DefaultPrefix, Role: "downloader", Value: "e2e-observer"})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		addr, err := obs.Leader(ctx)
		cancel()
		switch {
		case err == nil && addr == a.proc.GRPC:
			return a, b
		case err == nil && addr == b.proc.GRPC:
			return b, a
		case err != nil && !errors.Is(err, leader.ErrNoLeader):
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
	t.Fatalf("neither downloader (%s, %s) leads within 60s", a.proc.GRPC, b.proc.GRPC)
	return nil, nil
}

// TestHADownloader runs two downloaders on the cluster's etcd. A bulk load
// started at the follower runs at the leader; the leader is killed
// (SIGKILL) in the middle of the ingest. The other replica takes the job
// over from its etcd record with no operator action and finishes it: every
// record is readable through the router, the cluster holds exactly the
// manifest's count, and no file ingested before the kill is downloaded
// again.
func TestHADownloader(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3, "ha-downloader-secret")
	dir, input := buildDataset(t, 40_000, 64, "512KiB")
	m := readManifest(t, dir)
	if len(m.Files) < 3 {
		t.Fatalf("want at least 3 files, got %d", len(m.Files))
	}
	fs := serveDataset(t, dir)
	// Small ingest batches, one in flight on one stream: an ingest long
	// enough for the kill to land in it.
	slow := []string{"--ingest-batch-records", "5", "--ingest-window", "1", "--ingest-concurrency", "1"}
	a := startLoader(t, c, slow...)
	b := startLoader(t, c, slow...)
	lead, follow := downloaderLeader(t, c, a, b)
	t.Logf("leader %s, follower %s", lead.proc.GRPC, follow.proc.GRPC)

	// Started at the follower, which forwards it to the leader.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := follow.api.StartJob(ctx, &downloaderv1.StartJobRequest{JobId: "ha", ManifestUrl: fs.url + "/" + dataset.ManifestName}); err != nil {
		t.Fatalf("StartJob at the follower: %v", err)
	}
	// Wait until the record in etcd (read at the follower) has a file
	// ingested and the job still runs.
	succeeded := func(j *downloaderv1.Job) []string {
		var out []string
		for _, f := range j.GetFiles() {
			if f.GetState() == downloaderv1.State_STATE_SUCCEEDED {
				out = append(out, f.GetName())
			}
		}
		return out
	}
	rec := follow.wait(t, "ha", func(j *downloaderv1.Job) bool { return len(succeeded(j)) > 0 || ended(j) })
	ingested := succeeded(rec)
	mid, err := lead.api.GetJob(ctx, &downloaderv1.GetJobRequest{JobId: "ha"})
	if err != nil {
		t.Fatalf("GetJob at the leader: %v", err)
	}
	if ended(rec) || ended(mid.GetJob()) || mid.GetJob().GetIngest().GetDone() >= m.Records {
		t.Fatalf("job %v with %d records ingested before the kill: slow it down more", mid.GetJob().GetState(), mid.GetJob().GetIngest().GetDone())
	}
	lead.proc.Kill()
	t.Logf("killed the leader (pid %d) with %d of %d records ingested; the record had %d of %d files done",
		lead.proc.Pid(), mid.GetJob().GetIngest().GetDone(), m.Records, len(ingested), len(m.Files))

	job := follow.wait(t, "ha", ended)
	if job.GetState() != downloaderv1.State_STATE_SUCCEEDED {
		t.Fatalf("after the takeover: %v %s", job.GetState(), job.GetError())
	}
	if now, _ := downloaderLeader(t, c, a, b); now != follow {
		t.Errorf("the leader after the kill is %s, want %s", now.proc.GRPC, follow.proc.GRPC)
	}
	if got := job.GetIngest().GetDone(); got != m.Records {
		t.Errorf("job ingested %d records, manifest says %d", got, m.Records)
	}
	for _, f := range job.GetFiles() {
		var want uint64
		for _, mf := range m.Files {
			if mf.Name == f.GetName() {
				want = mf.Keys
			}
		}
		if f.GetState() != downloaderv1.State_STATE_SUCCEEDED || f.GetIngest().GetDone() != want {
			t.Errorf("file %s: %v, %d records, manifest %d", f.GetName(), f.GetState(), f.GetIngest().GetDone(), want)
		}
	}
	st := fs.stats(t)
	for _, name := range ingested {
		if st[name].Requests != 1 {
			t.Errorf("%s was ingested before the kill but requested %d times", name, st[name].Requests)
		}
	}
	if got := c.count(t); got != m.Records {
		t.Fatalf("cluster holds %d keys, manifest %d", got, m.Records)
	}
	c.checkAll(t, expected(t, input))
}
