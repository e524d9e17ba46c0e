package downloader_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	downloaderv1 "github.com/slotkv/slotkv/gen/slotkv/downloader/v1"
	"github.com/slotkv/slotkv/pkg/etcdtest"
	"github.com/slotkv/slotkv/pkg/leader"
	"github.com/slotkv/slotkv/pkg/testcluster"
	"github.com/slotkv/slotkv/pkg/topostore"
	"github.com/slotkv/slotkv/services/downloader"
)

// whoLeads waits for one of the replicas to lead the downloaders' election
// and returns it and the other.
func whoLeads(t *testing.T, e *etcdtest.Etcd, a, b *service) (lead, follow *service) {
	t.Helper()
	obs, err := leader.New(e.Client(t), leader.Options{Prefix: topostore.DefaultPrefix, Role: downloader.EtcdRole, Value: "observer"})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		addr, err := obs.Leader(ctxT(t))
		switch {
		case err == nil && addr == a.grpc:
			return a, b
		case err == nil && addr == b.grpc:
			return b, a
		case err != nil && !errors.Is(err, leader.ErrNoLeader):
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
	t.Fatalf("neither %s nor %s leads within 30s", a.grpc, b.grpc)
	return nil, nil
}

// TestHAReplicas: two downloaders on etcd. One leads; the follower answers
// ListJobs, GetJob and GetSettings from the etcd records and forwards
// StartJob and UpdateSettings to the leader. The leader stops mid-ingest:
// the follower takes the job over with no call from anyone, downloads
// again what was not ingested, does not touch the files already ingested,
// and the job succeeds with every record readable; a watch opened at the
// follower follows the job to its end across the takeover.
func TestHAReplicas(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t)
	c := testcluster.Start(t, 3, testcluster.Options{Token: testToken, Etcd: e})
	topo := c.Bootstrap(t)
	replica := func() *service {
		o := testOptions(t, c, t.TempDir())
		o.Etcd.Endpoints = e.Endpoints()
		// Small batches, one at a time: an ingest long enough to stop
		// the leader in the middle of it.
		o.IngestBatchRecords, o.IngestWindow, o.IngestConcurrency = 10, 1, 1
		return startService(t, o)
	}
	r1, r2 := replica(), replica()
	lead, follow := whoLeads(t, e, r1, r2)
	lead.waitReady(t)
	follow.waitReady(t)
	ctx := ctxT(t)

	// A settings change at the follower reaches the leader; the follower
	// reads it back from etcd.
	up, err := follow.client.UpdateSettings(ctx, &downloaderv1.UpdateSettingsRequest{MaxDownloads: new(uint32(3))})
	if err != nil {
		t.Fatalf("UpdateSettings at the follower: %v", err)
	}
	if up.GetSettings().GetMaxDownloads() != 3 {
		t.Fatalf("UpdateSettings answered %v", up.GetSettings())
	}
	for _, s := range []*service{lead, follow} {
		got, err := s.client.GetSettings(ctx, &downloaderv1.GetSettingsRequest{})
		if err != nil || got.GetSettings().GetMaxDownloads() != 3 {
			t.Fatalf("GetSettings at %s: %v %v, want max_downloads 3", s.grpc, got, err)
		}
	}

	// A write that was forwarded once already is not forwarded again: the
	// follower refuses it naming the leader.
	fwd := metadata.AppendToOutgoingContext(ctx, "slotkv-forwarded-by", "127.0.0.1:1")
	_, err = follow.client.StartJob(fwd, &downloaderv1.StartJobRequest{ManifestUrl: "http://127.0.0.1:1/ds/manifest.json", JobId: "bounced"})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), lead.grpc) {
		t.Fatalf("StartJob forwarded twice: %v, want FailedPrecondition naming the leader %s", err, lead.grpc)
	}

	const n = 20000
	ds := buildDataset(t, "ha", n, 4)
	srv := serveDataset(t, ds)
	// Started at the follower: it runs at the leader.
	follow.start(t, srv.manifestURL(), "ha-1")
	lead.waitJob(t, "ha-1", "ingest under way at the leader", func(j *downloaderv1.Job) bool { return j.GetIngest().GetDone() > 0 })

	// The follower answers reads from the records the leader saves.
	fj := follow.waitJob(t, "ha-1", "the manifest's files in the record", func(j *downloaderv1.Job) bool { return j.GetFileCount() == 4 })
	if fj.GetManifestUrl() != srv.manifestURL() {
		t.Fatalf("GetJob at the follower: manifest %q", fj.GetManifestUrl())
	}
	list, err := follow.client.ListJobs(ctx, &downloaderv1.ListJobsRequest{})
	if err != nil || len(list.GetJobs()) != 1 || list.GetJobs()[0].GetId() != "ha-1" {
		t.Fatalf("ListJobs at the follower: %v %v", list, err)
	}
	// A watch at the follower, open across the takeover.
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	ws, err := follow.client.WatchJob(wctx, &downloaderv1.WatchJobRequest{JobId: "ha-1"})
	if err != nil {
		t.Fatal(err)
	}
	watched := make(chan *downloaderv1.Job, 1)
	go func() {
		var last *downloaderv1.Job
		for {
			m, err := ws.Recv()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					t.Errorf("WatchJob at the follower: %v", err)
				}
				watched <- last
				return
			}
			last = m.GetJob()
		}
	}()

	// What the next leader will find: files finished before the stop.
	before := follow.get(t, "ha-1")
	var ingestedBefore []string
	for _, f := range before.GetFiles() {
		if f.GetState() == succeeded {
			ingestedBefore = append(ingestedBefore, f.GetName())
		}
	}
	if before.GetIngest().GetDone() >= n {
		t.Logf("the record says the ingest was done before the stop: the takeover has nothing left to ingest")
	}
	lead.stop()

	j := follow.waitState(t, "ha-1", succeeded)
	if j.GetIngest().GetDone() != n {
		t.Errorf("ingest progress after the takeover: %v, want %d", j.GetIngest(), n)
	}
	for _, f := range j.GetFiles() {
		if f.GetState() != succeeded {
			t.Errorf("file %s is %s", f.GetName(), f.GetState())
		}
	}
	checkKeys(t, c, topo, ds.records)
	for _, name := range ingestedBefore {
		if k := srv.count(name); k != 1 {
			t.Errorf("%s was ingested before the stop and downloaded %d times, want 1", name, k)
		}
	}
	select {
	case last := <-watched:
		if last.GetState() != succeeded {
			t.Errorf("the watch at the follower ended with %v, want SUCCEEDED", last.GetState())
		}
	case <-time.After(30 * time.Second):
		t.Error("the watch at the follower did not end with the job")
	}
	if now, _ := whoLeads(t, e, lead, follow); now != follow {
		t.Errorf("the leader is %s after the stop of %s", now.grpc, lead.grpc)
	}
	// The settings changed through the old leader are the new one's.
	got, err := follow.client.GetSettings(ctx, &downloaderv1.GetSettingsRequest{})
	if err != nil || got.GetSettings().GetMaxDownloads() != 3 {
		t.Errorf("GetSettings at the new leader: %v %v, want max_downloads 3", got, err)
	}
}
