package downloader_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	downloaderv1 "github.com/slotkv/slotkv/gen/slotkv/downloader/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/dataset"
	"github.com/slotkv/slotkv/pkg/testcluster"
	"github.com/slotkv/slotkv/pkg/topology"
)

const (
	succeeded = downloaderv1.State_STATE_SUCCEEDED
	failed    = downloaderv1.State_STATE_FAILED
	paused    = downloaderv1.State_STATE_PAUSED
	canceled  = downloaderv1.State_STATE_CANCELED
)

// TestBulkLoad runs every scenario against one 3-node storage cluster;
// each subtest loads its own key prefix with its own downloader.
func TestBulkLoad(t *testing.T) {
	c := testcluster.Start(t, 3, testcluster.Options{Token: testToken})
	topo := c.Bootstrap(t)
	shareCluster(c)

	t.Run("HappyPath", func(t *testing.T) { t.Parallel(); testHappyPath(t, c, topo) })
	t.Run("Retry500", func(t *testing.T) { t.Parallel(); testRetry500(t, c, topo) })
	t.Run("CutConnectionResumesWithRange", func(t *testing.T) { t.Parallel(); testCutConnection(t, c, topo) })
	t.Run("SHA256Mismatch", func(t *testing.T) { t.Parallel(); testSHAMismatch(t, c, topo) })
	t.Run("Truncated", func(t *testing.T) { t.Parallel(); testTruncated(t, c) })
	t.Run("NotFound", func(t *testing.T) { t.Parallel(); testNotFound(t, c) })
	t.Run("BadManifests", func(t *testing.T) { t.Parallel(); testBadManifests(t, c) })
	t.Run("URLChecks", func(t *testing.T) { t.Parallel(); testURLChecks(t, c, topo) })
	t.Run("NotEnoughDisk", func(t *testing.T) { t.Parallel(); testNotEnoughDisk(t, c) })
	t.Run("PauseResume", func(t *testing.T) { t.Parallel(); testPauseResume(t, c, topo) })
	t.Run("Cancel", func(t *testing.T) { t.Parallel(); testCancel(t, c) })
	t.Run("Restart", func(t *testing.T) { t.Parallel(); testRestart(t, c, topo) })
	t.Run("ConcurrencyCap", func(t *testing.T) { t.Parallel(); testConcurrencyCap(t, c, topo) })
	t.Run("REST", func(t *testing.T) { t.Parallel(); testREST(t, c, topo) })
	t.Run("StateRules", func(t *testing.T) { t.Parallel(); testStateRules(t, c) })
	t.Run("Metrics", func(t *testing.T) { t.Parallel(); testMetrics(t, c) })
	t.Run("CountsAfterChecksumFailure", func(t *testing.T) { t.Parallel(); testCountsAfterChecksumFailure(t, c, topo) })
	t.Run("CountsAtPauseAndCancel", func(t *testing.T) { t.Parallel(); testCountsAtPauseAndCancel(t, c, topo) })
	t.Run("CountsAfterBlockCRCFailure", func(t *testing.T) { t.Parallel(); testCountsAfterBlockCRCFailure(t, c, topo) })
	t.Run("SettingsSurviveRestart", func(t *testing.T) { t.Parallel(); testSettingsSurviveRestart(t, c) })
	t.Run("RunningJobsCap", func(t *testing.T) { t.Parallel(); testRunningJobsCap(t, c) })
}

func testHappyPath(t *testing.T, c *testcluster.Cluster, topo *topology.Topology) {
	ds := buildDataset(t, "happy", 10000, 5)
	srv := serveDataset(t, ds)
	dir := t.TempDir()
	s := startService(t, testOptions(t, c, dir))

	job := s.start(t, srv.manifestURL(), "happy-1")
	if job.GetId() != "happy-1" || job.GetManifestUrl() != srv.manifestURL() {
		t.Fatalf("StartJob returned %v", job)
	}
	// Watch until the end: the last message is the final state, then EOF.
	stream, err := s.client.WatchJob(ctxT(t), &downloaderv1.WatchJobRequest{JobId: "happy-1", Interval: durationpb.New(50e6)})
	if err != nil {
		t.Fatal(err)
	}
	var last *downloaderv1.Job
	msgs := 0
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("WatchJob: %v", err)
		}
		last = resp.GetJob()
		msgs++
	}
	if last.GetState() != succeeded {
		t.Fatalf("last watch message: state %s error %q files %v", last.GetState(), last.GetError(), fileStates(last))
	}

	j := s.get(t, "happy-1")
	if j.GetState() != succeeded || j.GetFileCount() != 5 {
		t.Fatalf("job: state %s files %d", j.GetState(), j.GetFileCount())
	}
	if j.GetIngest().GetDone() != 10000 || j.GetIngest().GetTotal() != 10000 {
		t.Fatalf("job ingest progress %v", j.GetIngest())
	}
	for i, f := range j.GetFiles() {
		mf := ds.manifest.Files[i]
		if f.GetName() != mf.Name || f.GetState() != succeeded || f.GetIngest().GetDone() != mf.Keys || f.GetIngest().GetTotal() != mf.Keys ||
			f.GetDownload().GetDone() != uint64(mf.Size) || f.GetSlots() != mf.Slots || f.GetAttempts() != 1 || len(f.GetNodes()) == 0 {
			t.Errorf("file %d: %v, manifest %+v", i, f, mf)
		}
	}
	var sum uint64
	for _, n := range j.GetNodes() {
		sum += n.GetRecords()
	}
	if len(j.GetNodes()) != 3 || sum != 10000 {
		t.Errorf("per-node records %v sum to %d, want 3 nodes and 10000", j.GetNodes(), sum)
	}
	checkKeys(t, c, topo, ds.records)
	// The job directory is gone after success.
	if _, err := os.Stat(filepath.Join(dir, "jobs", "happy-1")); !os.IsNotExist(err) {
		t.Errorf("job directory still there after success: %v", err)
	}
	// Listed.
	lr, err := s.client.ListJobs(ctxT(t), &downloaderv1.ListJobsRequest{})
	if err != nil || len(lr.GetJobs()) != 1 || lr.GetJobs()[0].GetId() != "happy-1" || len(lr.GetJobs()[0].GetFiles()) != 0 {
		t.Errorf("ListJobs: %v %v", lr, err)
	}
	t.Logf("watch messages: %d", msgs)
}

func testRetry500(t *testing.T, c *testcluster.Cluster, topo *topology.Topology) {
	ds := buildDataset(t, "r500", 600, 2)
	srv := serveDataset(t, ds)
	first := ds.manifest.Files[0].Name
	srv.hook = func(w http.ResponseWriter, r *http.Request, name string, n int) bool {
		if name == first && n <= 3 {
			http.Error(w, "try later", http.StatusInternalServerError)
			return true
		}
		return false
	}
	s := startService(t, testOptions(t, c, t.TempDir()))
	s.start(t, srv.manifestURL(), "r500")
	j := s.waitState(t, "r500", succeeded)
	if got := srv.count(first); got != 4 {
		t.Errorf("%s requested %d times, want 4 (3 x 500 then OK)", first, got)
	}
	if a := j.GetFiles()[0].GetAttempts(); a != 4 {
		t.Errorf("file attempts %d, want 4", a)
	}
	checkKeys(t, c, topo, ds.records)
}

func testCutConnection(t *testing.T, c *testcluster.Cluster, topo *topology.Topology) {
	ds := buildDataset(t, "cut", 3000, 1)
	srv := serveDataset(t, ds)
	name := ds.manifest.Files[0].Name
	srv.hook = func(w http.ResponseWriter, r *http.Request, n string, k int) bool {
		if k == 1 {
			cutHalf(w, ds.files[n])
			return true
		}
		return false
	}
	s := startService(t, testOptions(t, c, t.TempDir()))
	s.start(t, srv.manifestURL(), "cut")
	s.waitState(t, "cut", succeeded)
	srv.mu.Lock()
	ranges, served := srv.ranges[name], srv.served[name]
	srv.mu.Unlock()
	size := int64(len(ds.files[name]))
	if len(ranges) == 0 || !strings.HasPrefix(ranges[0], "bytes=") || ranges[0] == "bytes=0-" {
		t.Errorf("no resuming Range request: %q", ranges)
	}
	if served >= size*3/2 {
		t.Errorf("served %d bytes for a %d-byte file; a resume should send about the rest only", served, size)
	}
	checkKeys(t, c, topo, ds.records)
}

func testSHAMismatch(t *testing.T, c *testcluster.Cluster, topo *topology.Topology) {
	// Data already in the cluster must survive a failed load.
	existing := []kv{{"sha-existing:1", "keep-1"}, {"sha-existing:2", "keep-2"}}
	for _, r := range existing {
		n, _ := topo.Owner(slotOf(r.key))
		if _, err := c.Node(t, n.ID).StorageClient().Put(ctxT(t), &storagev1.PutRequest{Key: []byte(r.key), Value: []byte(r.value)}); err != nil {
			t.Fatal(err)
		}
	}
	ds := buildDataset(t, "sha", 1000, 2)
	bad := ds.manifest.Files[1].Name
	data := append([]byte(nil), ds.files[bad]...)
	data[len(data)/2] ^= 0xff
	ds.files[bad] = data
	srv := serveDataset(t, ds)
	dir := t.TempDir()
	s := startService(t, testOptions(t, c, dir))
	s.start(t, srv.manifestURL(), "sha")
	j := s.waitState(t, "sha", failed)
	if !strings.Contains(j.GetError(), bad) || !strings.Contains(j.GetError(), "sha256 mismatch") {
		t.Errorf("job error %q does not name %s and the sha256 mismatch", j.GetError(), bad)
	}
	f := j.GetFiles()[1]
	if f.GetState() != failed || !strings.Contains(f.GetError(), "sha256 mismatch") {
		t.Errorf("file: %v", f)
	}
	if _, err := os.Stat(filepath.Join(dir, "jobs", "sha", "."+bad+".part")); !os.IsNotExist(err) {
		t.Errorf("part file of the bad download kept: %v", err)
	}
	// No temp file of the failed job is left behind.
	if parts, _ := filepath.Glob(filepath.Join(dir, "jobs", "sha", ".*.part")); len(parts) != 0 {
		t.Errorf("partial downloads of a failed job kept: %v", parts)
	}
	checkKeys(t, c, topo, existing)
}

func testTruncated(t *testing.T, c *testcluster.Cluster) {
	ds := buildDataset(t, "trunc", 1000, 1)
	name := ds.manifest.Files[0].Name
	ds.files[name] = ds.files[name][:len(ds.files[name])-100]
	srv := serveDataset(t, ds)
	s := startService(t, testOptions(t, c, t.TempDir()))
	s.start(t, srv.manifestURL(), "trunc")
	j := s.waitState(t, "trunc", failed)
	if !strings.Contains(j.GetError(), name) || !strings.Contains(j.GetError(), "size mismatch") {
		t.Errorf("job error %q does not name %s and the size mismatch", j.GetError(), name)
	}
}

func testNotFound(t *testing.T, c *testcluster.Cluster) {
	ds := buildDataset(t, "nf", 500, 2)
	missing := ds.manifest.Files[1].Name
	delete(ds.files, missing)
	srv := serveDataset(t, ds)
	s := startService(t, testOptions(t, c, t.TempDir()))
	s.start(t, srv.manifestURL(), "nf")
	j := s.waitState(t, "nf", failed)
	if !strings.Contains(j.GetError(), missing) || !strings.Contains(j.GetError(), "404") || !strings.Contains(j.GetError(), srv.URL+"/ds/"+missing) {
		t.Errorf("job error %q does not name %s, its URL and 404", j.GetError(), missing)
	}
}

func testBadManifests(t *testing.T, c *testcluster.Cluster) {
	ds := buildDataset(t, "badm", 100, 1)
	srv := serveDataset(t, ds)
	s := startService(t, testOptions(t, c, t.TempDir()))

	bad := map[string]struct {
		body []byte
		want []string
	}{
		"malformed": {[]byte(`{"format_version": 1, "files": [`), []string{"malformed"}},
		"version":   {versioned(t, ds, dataset.FormatVersion+1), []string{"format_version", "not supported"}},
		"unsafe":    {renamed(t, ds, "../evil.skv"), []string{`"../evil.skv"`}},
	}
	for name, b := range bad {
		ds.files[name+".json"] = b.body
	}
	for name, b := range bad {
		url := srv.URL + "/ds/" + name + ".json"
		s.start(t, url, "badm-"+name)
		j := s.waitState(t, "badm-"+name, failed)
		if !strings.Contains(j.GetError(), url) {
			t.Errorf("%s: error %q does not name the manifest URL", name, j.GetError())
		}
		for _, w := range b.want {
			if !strings.Contains(j.GetError(), w) {
				t.Errorf("%s: error %q does not say %q", name, j.GetError(), w)
			}
		}
	}
}

func versioned(t *testing.T, ds *testDataset, v int) []byte {
	m := *ds.manifest
	m.FormatVersion = v
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func renamed(t *testing.T, ds *testDataset, name string) []byte {
	m := *ds.manifest
	m.Files = append([]dataset.File(nil), m.Files...)
	m.Files[0].Name = name
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func testURLChecks(t *testing.T, c *testcluster.Cluster, topo *topology.Topology) {
	s := startService(t, testOptions(t, c, t.TempDir()))
	for _, url := range []string{
		"http://10.1.2.3/ds/manifest.json",            // not an allowed prefix
		"http://127.0.0.1.evil.example/manifest.json", // prefix at no boundary
		"file:///tmp/ds/manifest.json",                // file:// disabled
		"ftp://127.0.0.1/manifest.json",
		"http://127.0.0.1/a/../../etc/manifest.json",
		"",
	} {
		_, err := s.client.StartJob(ctxT(t), &downloaderv1.StartJobRequest{ManifestUrl: url})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "manifest_url") {
			t.Errorf("StartJob(%q): %v, want InvalidArgument naming manifest_url", url, err)
		}
	}
	_, err := s.client.StartJob(ctxT(t), &downloaderv1.StartJobRequest{ManifestUrl: "http://127.0.0.1/m.json", JobId: "../x"})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "job_id") {
		t.Errorf("StartJob with a bad id: %v", err)
	}

	// file:// works when enabled and under an allowed prefix.
	ds := buildDataset(t, "fileurl", 400, 2)
	dsDir := t.TempDir()
	for name, b := range ds.files {
		if err := os.WriteFile(filepath.Join(dsDir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	o := testOptions(t, c, t.TempDir())
	o.AllowFileURLs = true
	o.AllowedPrefixes = []string{"file://" + dsDir + "/"}
	fs := startService(t, o)
	fs.start(t, "file://"+dsDir+"/"+dataset.ManifestName, "fileurl")
	fs.waitState(t, "fileurl", succeeded)
	checkKeys(t, c, topo, ds.records)
}

func testNotEnoughDisk(t *testing.T, c *testcluster.Cluster) {
	ds := buildDataset(t, "disk", 500, 2)
	srv := serveDataset(t, ds)
	o := testOptions(t, c, t.TempDir())
	o.Statfs = func(string) (uint64, error) { return 100, nil }
	s := startService(t, o)
	s.start(t, srv.manifestURL(), "disk")
	j := s.waitState(t, "disk", failed)
	if !strings.Contains(j.GetError(), "needs") || !strings.Contains(j.GetError(), "100 free") {
		t.Errorf("job error %q", j.GetError())
	}
	if srv.count(ds.manifest.Files[0].Name)+srv.count(ds.manifest.Files[1].Name) != 0 {
		t.Error("data files were requested although the disk check failed")
	}
}

func testPauseResume(t *testing.T, c *testcluster.Cluster, topo *topology.Topology) {
	ds := buildDataset(t, "pause", 2000, 2)
	srv := serveDataset(t, ds)
	second := ds.manifest.Files[1].Name
	srv.hook = func(w http.ResponseWriter, r *http.Request, name string, n int) bool {
		if name == second && n == 1 {
			halfThenWait(w, r, ds.files[name])
			return true
		}
		return false
	}
	s := startService(t, testOptions(t, c, t.TempDir()))
	s.start(t, srv.manifestURL(), "pause")
	s.waitJob(t, "pause", "half of the second file downloaded", func(j *downloaderv1.Job) bool {
		return len(j.GetFiles()) == 2 && j.GetFiles()[1].GetDownload().GetDone() >= uint64(len(ds.files[second])/2)
	})
	pr, err := s.client.PauseJob(ctxT(t), &downloaderv1.PauseJobRequest{JobId: "pause"})
	if err != nil {
		t.Fatalf("PauseJob: %v", err)
	}
	if pr.GetJob().GetState() != paused {
		t.Fatalf("after PauseJob: %s", pr.GetJob().GetState())
	}
	// Pausing again is refused, naming the state.
	_, err = s.client.PauseJob(ctxT(t), &downloaderv1.PauseJobRequest{JobId: "pause"})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "PAUSED") {
		t.Errorf("second PauseJob: %v", err)
	}
	if _, err := s.client.ResumeJob(ctxT(t), &downloaderv1.ResumeJobRequest{JobId: "pause"}); err != nil {
		t.Fatalf("ResumeJob: %v", err)
	}
	s.waitState(t, "pause", succeeded)
	srv.mu.Lock()
	ranges := srv.ranges[second]
	srv.mu.Unlock()
	if len(ranges) == 0 {
		t.Errorf("the resumed download of %s sent no Range header", second)
	}
	checkKeys(t, c, topo, ds.records)
}

func testCancel(t *testing.T, c *testcluster.Cluster) {
	ds := buildDataset(t, "cancel", 1000, 1)
	srv := serveDataset(t, ds)
	srv.hook = func(w http.ResponseWriter, r *http.Request, name string, n int) bool {
		halfThenWait(w, r, ds.files[name])
		return true
	}
	dir := t.TempDir()
	s := startService(t, testOptions(t, c, dir))
	s.start(t, srv.manifestURL(), "cancel")
	s.waitJob(t, "cancel", "part of the file downloaded", func(j *downloaderv1.Job) bool {
		return len(j.GetFiles()) == 1 && j.GetFiles()[0].GetDownload().GetDone() > 0
	})
	jobDir := filepath.Join(dir, "jobs", "cancel")
	if _, err := os.Stat(filepath.Join(jobDir, "."+ds.manifest.Files[0].Name+".part")); err != nil {
		t.Fatalf("no part file while downloading: %v", err)
	}
	cr, err := s.client.CancelJob(ctxT(t), &downloaderv1.CancelJobRequest{JobId: "cancel"})
	if err != nil || cr.GetJob().GetState() != canceled {
		t.Fatalf("CancelJob: %v %v", cr, err)
	}
	if _, err := os.Stat(jobDir); !os.IsNotExist(err) {
		t.Errorf("job directory still there after cancel: %v", err)
	}
	_, err = s.client.CancelJob(ctxT(t), &downloaderv1.CancelJobRequest{JobId: "cancel"})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "CANCELED") {
		t.Errorf("second CancelJob: %v", err)
	}
	_, err = s.client.ResumeJob(ctxT(t), &downloaderv1.ResumeJobRequest{JobId: "cancel"})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("ResumeJob of a canceled job: %v", err)
	}
}

func testRestart(t *testing.T, c *testcluster.Cluster, topo *topology.Topology) {
	ds := buildDataset(t, "restart", 3000, 3)
	srv := serveDataset(t, ds)
	last := ds.manifest.Files[2].Name
	block := make(chan struct{})
	srv.hook = func(w http.ResponseWriter, r *http.Request, name string, n int) bool {
		if name == last {
			select {
			case <-block:
				return false
			default:
			}
			halfThenWait(w, r, ds.files[name])
			return true
		}
		return false
	}
	dir := t.TempDir()
	o := testOptions(t, c, dir)
	s := startService(t, o)
	s.start(t, srv.manifestURL(), "restart")
	s.waitJob(t, "restart", "two files done and the third half downloaded", func(j *downloaderv1.Job) bool {
		fs := j.GetFiles()
		return len(fs) == 3 && fs[0].GetState() == succeeded && fs[1].GetState() == succeeded &&
			fs[2].GetDownload().GetDone() >= uint64(len(ds.files[last])/2)
	})
	s.stop()
	close(block)

	s2 := startService(t, o)
	j := s2.waitState(t, "restart", succeeded)
	for _, f := range ds.manifest.Files[:2] {
		if n := srv.count(f.Name); n != 1 {
			t.Errorf("%s requested %d times, want 1 (finished before the restart)", f.Name, n)
		}
	}
	srv.mu.Lock()
	ranges := srv.ranges[last]
	srv.mu.Unlock()
	if len(ranges) == 0 {
		t.Errorf("%s was not resumed with a Range request after the restart", last)
	}
	if j.GetIngest().GetDone() != 3000 {
		t.Errorf("ingest progress %v", j.GetIngest())
	}
	checkKeys(t, c, topo, ds.records)
}

func testConcurrencyCap(t *testing.T, c *testcluster.Cluster, topo *topology.Topology) {
	ds := buildDataset(t, "cap", 3000, 8)
	srv := serveDataset(t, ds)
	o := testOptions(t, c, t.TempDir())
	o.MaxDownloads, o.MaxDownloadsPerNode = 8, 8
	s := startService(t, o)
	one, two := uint32(1), uint32(2)
	ur, err := s.client.UpdateSettings(ctxT(t), &downloaderv1.UpdateSettingsRequest{MaxDownloads: &one, MaxDownloadsPerNode: &two})
	if err != nil {
		t.Fatal(err)
	}
	want := &downloaderv1.Settings{MaxDownloads: 1, MaxDownloadsPerNode: 2}
	if !proto.Equal(ur.GetSettings(), want) {
		t.Errorf("UpdateSettings returned %v", ur.GetSettings())
	}
	gr, err := s.client.GetSettings(ctxT(t), &downloaderv1.GetSettingsRequest{})
	if err != nil || !proto.Equal(gr.GetSettings(), want) {
		t.Errorf("GetSettings: %v %v", gr.GetSettings(), err)
	}
	zero := uint32(0)
	if _, err := s.client.UpdateSettings(ctxT(t), &downloaderv1.UpdateSettingsRequest{MaxDownloads: &zero}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("UpdateSettings(max_downloads=0): %v", err)
	}
	s.start(t, srv.manifestURL(), "cap")
	s.waitState(t, "cap", succeeded)
	srv.mu.Lock()
	peak := srv.maxActive
	srv.mu.Unlock()
	if peak > 1 {
		t.Errorf("%d downloads at once with max_downloads=1", peak)
	}
	checkKeys(t, c, topo, ds.records)
}

func testREST(t *testing.T, c *testcluster.Cluster, topo *topology.Topology) {
	ds := buildDataset(t, "rest", 500, 1)
	srv := serveDataset(t, ds)
	rec := tracetest.NewSpanRecorder()
	o := testOptions(t, c, t.TempDir())
	o.TracerProvider = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	s := startService(t, o)
	do := func(method, path, payload string) (int, map[string]any) {
		req, err := http.NewRequestWithContext(ctxT(t), method, "http://"+s.http+path, strings.NewReader(payload))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+testToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		b := body(resp.Body)
		if err := json.Unmarshal([]byte(b), &out); err != nil {
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
		return resp.StatusCode, out
	}
	code, out := do("POST", "/v1/bulkloads", fmt.Sprintf(`{"manifest_url": %q, "job_id": "rest-1"}`, srv.manifestURL()))
	if code != http.StatusOK {
		t.Fatalf("POST /v1/bulkloads: %d %v", code, out)
	}
	s.waitState(t, "rest-1", succeeded)
	code, out = do("GET", "/v1/bulkloads/rest-1", "")
	job, _ := out["job"].(map[string]any)
	if code != http.StatusOK || job["state"] != "STATE_SUCCEEDED" || job["id"] != "rest-1" {
		t.Fatalf("GET /v1/bulkloads/rest-1: %d %v", code, out)
	}
	if code, _ := do("GET", "/v1/bulkloads/nope", ""); code != http.StatusNotFound {
		t.Errorf("GET of an unknown job: %d", code)
	}
	if code, _ := do("POST", "/v1/bulkloads", `{"manifest_url": "http://10.0.0.1/m.json"}`); code != http.StatusBadRequest {
		t.Errorf("POST with a disallowed URL: %d", code)
	}
	checkKeys(t, c, topo, ds.records)

	// One trace for the job: the job span, the manifest, a span per file
	// and under it the file's download, verify and ingest spans.
	spans := map[string]sdktrace.ReadOnlySpan{}
	// The job's span ends just after the job is marked SUCCEEDED.
	for deadline := time.Now().Add(30 * time.Second); spans["bulkload job"] == nil && time.Now().Before(deadline); {
		for _, sp := range rec.Ended() {
			spans[sp.Name()] = sp
		}
		if spans["bulkload job"] == nil {
			time.Sleep(10 * time.Millisecond) // poll interval
		}
	}
	fileSpan := "file " + ds.manifest.Files[0].Name
	for name, parent := range map[string]string{"bulkload job": "", "manifest": "bulkload job", fileSpan: "bulkload job",
		"download": fileSpan, "verify": fileSpan, "ingest": fileSpan} {
		sp := spans[name]
		if sp == nil {
			t.Errorf("no span %q (spans %v)", name, slices.Collect(maps.Keys(spans)))
			continue
		}
		if parent == "" {
			if sp.Parent().IsValid() {
				t.Errorf("span %q has a parent: a job is a trace of its own", name)
			}
			continue
		}
		if p := spans[parent]; p == nil || sp.Parent().SpanID() != p.SpanContext().SpanID() || sp.SpanContext().TraceID() != p.SpanContext().TraceID() {
			t.Errorf("span %q is not a child of %q", name, parent)
		}
	}
	if v, d := spans["verify"], spans["download"]; v != nil && d != nil && v.StartTime().Before(d.EndTime()) {
		t.Errorf("verify starts before the download ends")
	}
}

func testStateRules(t *testing.T, c *testcluster.Cluster) {
	ds := buildDataset(t, "rules", 200, 1)
	srv := serveDataset(t, ds)
	s := startService(t, testOptions(t, c, t.TempDir()))
	ctx := ctxT(t)
	if _, err := s.client.GetJob(ctx, &downloaderv1.GetJobRequest{JobId: "nope"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetJob(unknown): %v", err)
	}
	if _, err := s.client.PauseJob(ctx, &downloaderv1.PauseJobRequest{JobId: "nope"}); status.Code(err) != codes.NotFound {
		t.Errorf("PauseJob(unknown): %v", err)
	}
	s.start(t, srv.manifestURL(), "rules")
	if _, err := s.client.StartJob(ctx, &downloaderv1.StartJobRequest{ManifestUrl: srv.manifestURL(), JobId: "rules"}); status.Code(err) != codes.AlreadyExists {
		t.Errorf("StartJob(existing id): %v", err)
	}
	s.waitState(t, "rules", succeeded)
	for name, call := range map[string]func() error{
		"pause": func() error {
			_, err := s.client.PauseJob(ctx, &downloaderv1.PauseJobRequest{JobId: "rules"})
			return err
		},
		"resume": func() error {
			_, err := s.client.ResumeJob(ctx, &downloaderv1.ResumeJobRequest{JobId: "rules"})
			return err
		},
		"cancel": func() error {
			_, err := s.client.CancelJob(ctx, &downloaderv1.CancelJobRequest{JobId: "rules"})
			return err
		},
	} {
		if err := call(); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "SUCCEEDED") {
			t.Errorf("%s of a succeeded job: %v", name, err)
		}
	}
	// A generated id.
	j := s.start(t, srv.manifestURL(), "")
	if j.GetId() == "" {
		t.Error("no generated job id")
	}
	s.waitState(t, j.GetId(), succeeded)
}
