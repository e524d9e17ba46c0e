package downloader_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	downloaderv1 "github.com/slotkv/slotkv/gen/slotkv/downloader/v1"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/testcluster"
)

// waitReady polls /readyz until the service has loaded a topology.
func (s *service) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + s.http + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
	t.Fatal("downloader not ready within 30s")
}

// TestSlotMovedReroutes: the downloader holds topology v1, the cluster
// has moved slots since (v2); ingest into the old owner gets SLOT_MOVED,
// refreshes and re-routes the refused records to the new owner.
func TestSlotMovedReroutes(t *testing.T) {
	t.Parallel()
	c := testcluster.Start(t, 2, testcluster.Options{Token: testToken})
	v1 := c.Bootstrap(t)
	o := testOptions(t, c, t.TempDir())
	s := startService(t, o)
	s.waitReady(t)

	// Move half of n1's slots to n2.
	n1 := v1.RangesOf("n1")[0]
	moved := slot.Range{Start: n1.Start, End: n1.Start + uint16(n1.Len()/2)}
	set, err := slot.NewRangeSet(moved)
	if err != nil {
		t.Fatal(err)
	}
	v2, err := v1.Reassign(set, "n2")
	if err != nil {
		t.Fatal(err)
	}
	c.SetTopology(t, v2)

	ds := buildDataset(t, "moved", 4000, 2)
	srv := serveDataset(t, ds)
	s.start(t, srv.manifestURL(), "moved")
	j := s.waitState(t, "moved", succeeded)
	checkKeys(t, c, v2, ds.records)
	var sum uint64
	for _, n := range j.GetNodes() {
		sum += n.GetRecords()
	}
	if sum != 4000 {
		t.Errorf("per-node records %v sum to %d, want 4000", j.GetNodes(), sum)
	}
}

// TestNodeDownFailsThenResume: a storage node down longer than
// NodeRetryTimeout fails the file naming node and file; once the node is
// back, ResumeJob retries the failed job to success without downloading
// again.
func TestNodeDownFailsThenResume(t *testing.T) {
	t.Parallel()
	c := testcluster.Start(t, 2, testcluster.Options{Token: testToken})
	topo := c.Bootstrap(t)
	o := testOptions(t, c, t.TempDir())
	o.NodeRetryTimeout = 2 * time.Second
	s := startService(t, o)
	s.waitReady(t)

	down := c.Node(t, "n2")
	if err := down.Proc.Stop(); err != nil {
		t.Fatal(err)
	}
	ds := buildDataset(t, "down", 2000, 2)
	srv := serveDataset(t, ds)
	s.start(t, srv.manifestURL(), "down")
	j := s.waitState(t, "down", failed)
	if !strings.Contains(j.GetError(), "n2") || !strings.Contains(j.GetError(), ".skv") || !strings.Contains(j.GetError(), "unavailable") {
		t.Errorf("job error %q does not name the node and the file", j.GetError())
	}

	c.Restart(t, down)
	if _, err := s.client.ResumeJob(ctxT(t), &downloaderv1.ResumeJobRequest{JobId: "down"}); err != nil {
		t.Fatalf("ResumeJob of a failed job: %v", err)
	}
	s.waitState(t, "down", succeeded)
	for _, f := range ds.manifest.Files {
		if n := srv.count(f.Name); n != 1 {
			t.Errorf("%s requested %d times, want 1 (verified files are kept for the resume)", f.Name, n)
		}
	}
	checkKeys(t, c, topo, ds.records)
}
