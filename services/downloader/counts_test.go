package downloader_test

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	downloaderv1 "github.com/slotkv/slotkv/gen/slotkv/downloader/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/testcluster"
	"github.com/slotkv/slotkv/pkg/topology"
)

// readable counts the records of each file of ds that the storage nodes
// serve with the dataset's value, by file and by node.
func readable(t *testing.T, c *testcluster.Cluster, topo *topology.Topology, ds *testDataset) (perFile, perNode map[string]uint64) {
	t.Helper()
	perFile, perNode = map[string]uint64{}, map[string]uint64{}
	for _, mf := range ds.manifest.Files {
		byNode := map[string][]kv{}
		for _, r := range ds.perFile[mf.Name] {
			n, ok := topo.Owner(slotOf(r.key))
			if !ok {
				t.Fatalf("slot of %q has no owner", r.key)
			}
			byNode[n.ID] = append(byNode[n.ID], r)
		}
		for id, rs := range byNode {
			cl := c.Node(t, id).StorageClient()
			for chunk := range slices.Chunk(rs, 500) {
				req := &storagev1.BatchGetRequest{}
				for _, r := range chunk {
					req.Keys = append(req.Keys, []byte(r.key))
				}
				resp, err := cl.BatchGet(ctxT(t), req)
				if err != nil {
					t.Fatalf("BatchGet on %s: %v", id, err)
				}
				for i, it := range resp.GetItems() {
					if it.GetFound() && string(it.GetValue()) == chunk[i].value {
						perFile[mf.Name]++
						perNode[id]++
					}
				}
			}
		}
	}
	return perFile, perNode
}

// checkCounts asserts that the job's ingest counts (per file, per node and
// in all) are the records readable from the storage nodes.
func checkCounts(t *testing.T, c *testcluster.Cluster, topo *topology.Topology, ds *testDataset, j *downloaderv1.Job, when string) uint64 {
	t.Helper()
	perFile, perNode := readable(t, c, topo, ds)
	var total uint64
	for _, f := range j.GetFiles() {
		total += perFile[f.GetName()]
		if got, want := f.GetIngest().GetDone(), perFile[f.GetName()]; got != want {
			t.Errorf("%s: file %s (%s) says ingest %d / %d, %d of its records are readable", when, f.GetName(), f.GetState(), got, f.GetIngest().GetTotal(), want)
		}
	}
	if got := j.GetIngest().GetDone(); got != total {
		t.Errorf("%s: job (%s) says ingest %d / %d, %d records are readable", when, j.GetState(), got, j.GetIngest().GetTotal(), total)
	}
	got := map[string]uint64{}
	for _, n := range j.GetNodes() {
		if n.GetRecords() > 0 {
			got[n.GetNodeId()] = n.GetRecords()
		}
	}
	for id, n := range perNode {
		if got[id] != n {
			t.Errorf("%s: node %s: job says %d records, %d are readable there", when, id, got[id], n)
		}
	}
	for id, n := range got {
		if perNode[id] == 0 {
			t.Errorf("%s: node %s: job says %d records, none is readable there", when, id, n)
		}
	}
	t.Logf("%s: %d records readable and counted", when, total)
	return total
}

// testCountsAfterChecksumFailure (issue 12): a file fails its sha256 check
// while another file is being ingested in small batches and one more is
// verified and waiting for its turn to ingest. The failed job's
// counts are what the storage nodes serve. The resume (the bad file fixed
// on the server, one verified copy altered on disk) re-checks the kept
// copies by sha256: the intact one is not downloaded again, the altered
// one is; the job ends with every record readable and counted once.
func testCountsAfterChecksumFailure(t *testing.T, c *testcluster.Cluster, topo *topology.Topology) {
	ds := buildDataset(t, "cnt", 30000, 5)
	names := make([]string, len(ds.manifest.Files))
	for i, f := range ds.manifest.Files {
		names[i] = f.Name
	}
	bad := names[4]
	good := ds.files[bad]
	corrupt := slices.Clone(good)
	corrupt[len(corrupt)/3] ^= 0xff
	ds.files[bad] = corrupt
	srv := serveDataset(t, ds)

	dir := t.TempDir()
	o := testOptions(t, c, dir)
	o.IngestBatchRecords = 50
	o.IngestConcurrency = 1 // files ingest one after the other: the others wait verified
	o.MaxDownloads, o.MaxDownloadsPerNode = 4, 4
	o.HTTPTimeout = 2 * time.Minute // the hook below holds the bad file's response
	s := startService(t, o)

	// The bad file is served once the job is ingesting a file and has
	// another one verified and waiting.
	srv.hook = func(w http.ResponseWriter, r *http.Request, name string, n int) bool {
		if name != bad || n != 1 {
			return false
		}
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) && r.Context().Err() == nil {
			resp, err := s.client.GetJob(r.Context(), &downloaderv1.GetJobRequest{JobId: "cnt"})
			if err != nil {
				break // the service is going away; the test fails on its own
			}
			j := resp.GetJob()
			ingesting, waiting := false, 0
			for _, f := range j.GetFiles() {
				ingesting = ingesting || (f.GetState() == downloaderv1.State_STATE_INGESTING && f.GetIngest().GetDone() > 0)
				if f.GetState() == downloaderv1.State_STATE_DOWNLOADED {
					waiting++
				}
			}
			// The file being ingested is kept verified too when the job
			// fails: with one more waiting, two verified files are kept.
			if ingesting && waiting >= 1 {
				break
			}
			time.Sleep(2 * time.Millisecond) // poll interval
		}
		return false // serve the (corrupted) file
	}
	s.start(t, srv.manifestURL(), "cnt")
	j := s.waitState(t, "cnt", failed)
	if !strings.Contains(j.GetError(), bad) || !strings.Contains(j.GetError(), "sha256 mismatch") {
		t.Fatalf("job error %q does not name %s and the sha256 mismatch", j.GetError(), bad)
	}
	var verified []string
	for _, f := range j.GetFiles() {
		if f.GetName() != bad && f.GetState() == downloaderv1.State_STATE_DOWNLOADED {
			verified = append(verified, f.GetName())
		}
	}
	if len(verified) < 2 {
		t.Fatalf("%d files left verified (DOWNLOADED) by the failure, want 2 (the one ingesting and one waiting): %v", len(verified), fileStates(j))
	}
	counted := checkCounts(t, c, topo, ds, j, "after the checksum failure")
	if counted == 0 || counted == 30000 {
		t.Errorf("%d records ingested when the job failed: the failure did not cut an ingest", counted)
	}
	// The job as persisted says the same after a restart.
	s.stop()
	s = startService(t, o)
	j = s.get(t, "cnt")
	checkCounts(t, c, topo, ds, j, "after a restart of the failed job")

	srv.mu.Lock()
	ds.files[bad] = good
	srv.mu.Unlock()
	// One kept copy is altered on disk (same size): the resume must not
	// ingest it.
	altered := verified[0]
	path := filepath.Join(dir, "jobs", "cnt", altered)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the verified copy of %s is not kept: %v", altered, err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.ResumeJob(ctxT(t), &downloaderv1.ResumeJobRequest{JobId: "cnt"}); err != nil {
		t.Fatalf("ResumeJob: %v", err)
	}
	j = s.waitState(t, "cnt", succeeded)
	if got := checkCounts(t, c, topo, ds, j, "after the resume"); got != 30000 {
		t.Errorf("%d records readable after the resumed job succeeded, want 30000", got)
	}
	for _, name := range names {
		want := 1
		if name == bad || name == altered {
			want = 2
		}
		if n := srv.count(name); n != want {
			t.Errorf("%s requested %d times over the failure and the resume, want %d (verified files: %v)", name, n, want, verified)
		}
	}
}

// testCountsAtPauseAndCancel (issue 12): pausing and canceling a job in
// the middle of its ingest leaves counts that are what the nodes serve;
// the resumed job ends with every record counted once.
func testCountsAtPauseAndCancel(t *testing.T, c *testcluster.Cluster, topo *topology.Topology) {
	for _, tc := range []struct {
		id   string
		stop func(s *service) (*downloaderv1.Job, error)
	}{
		{"cnt-pause", func(s *service) (*downloaderv1.Job, error) {
			r, err := s.client.PauseJob(ctxT(t), &downloaderv1.PauseJobRequest{JobId: "cnt-pause"})
			return r.GetJob(), err
		}},
		{"cnt-cancel", func(s *service) (*downloaderv1.Job, error) {
			r, err := s.client.CancelJob(ctxT(t), &downloaderv1.CancelJobRequest{JobId: "cnt-cancel"})
			return r.GetJob(), err
		}},
	} {
		ds := buildDataset(t, tc.id, 12000, 3)
		srv := serveDataset(t, ds)
		last := ds.manifest.Files[2].Name
		hold := make(chan struct{})
		srv.hook = func(w http.ResponseWriter, r *http.Request, name string, n int) bool {
			if name != last {
				return false
			}
			select {
			case <-hold:
				return false
			default:
			}
			halfThenWait(w, r, ds.files[name]) // the job cannot finish meanwhile
			return true
		}
		o := testOptions(t, c, t.TempDir())
		o.IngestBatchRecords = 50
		s := startService(t, o)
		s.start(t, srv.manifestURL(), tc.id)
		s.waitJob(t, tc.id, "ingest under way", func(j *downloaderv1.Job) bool { return j.GetIngest().GetDone() > 0 })
		j, err := tc.stop(s)
		if err != nil {
			t.Fatalf("%s: %v", tc.id, err)
		}
		checkCounts(t, c, topo, ds, j, tc.id+": as the request returned")
		checkCounts(t, c, topo, ds, s.get(t, tc.id), tc.id+": then")
		if tc.id != "cnt-pause" {
			continue
		}
		close(hold)
		if _, err := s.client.ResumeJob(ctxT(t), &downloaderv1.ResumeJobRequest{JobId: tc.id}); err != nil {
			t.Fatalf("ResumeJob: %v", err)
		}
		j = s.waitState(t, tc.id, succeeded)
		if got := checkCounts(t, c, topo, ds, j, tc.id+": after the resume"); got != 12000 {
			t.Errorf("%d records readable after the resumed job succeeded, want 12000", got)
		}
	}
}

// testCountsAfterBlockCRCFailure (issue 12): a data file whose sha256
// matches the manifest (built that way) but with a block that fails its
// CRC-32C in the middle: the ingest fails at that block with records of
// the file in flight to the nodes. The failed job's counts are what the
// nodes serve.
func testCountsAfterBlockCRCFailure(t *testing.T, c *testcluster.Cluster, topo *topology.Topology) {
	ds := buildDataset(t, "crc", 8000, 1)
	f := &ds.manifest.Files[0]
	data := slices.Clone(ds.files[f.Name])
	data[len(data)*3/4] ^= 0xff
	sum := sha256.Sum256(data)
	f.SHA256 = hex.EncodeToString(sum[:])
	ds.files[f.Name] = data
	ds.setManifest(t)
	srv := serveDataset(t, ds)
	o := testOptions(t, c, t.TempDir())
	o.IngestBatchRecords = 50
	s := startService(t, o)
	s.start(t, srv.manifestURL(), "crc")
	j := s.waitState(t, "crc", failed)
	if !strings.Contains(j.GetError(), f.Name) || !strings.Contains(j.GetError(), "CRC") {
		t.Fatalf("job error %q does not name %s and the block checksum", j.GetError(), f.Name)
	}
	if got := checkCounts(t, c, topo, ds, j, "after the block CRC failure"); got == 0 || got == 8000 {
		t.Errorf("%d records readable after a failure three quarters into the file", got)
	}
}
