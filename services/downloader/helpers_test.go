package downloader_test

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	downloaderv1 "github.com/slotkv/slotkv/gen/slotkv/downloader/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/auth"
	"github.com/slotkv/slotkv/pkg/dataset"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/testcluster"
	"github.com/slotkv/slotkv/pkg/topology"
	"github.com/slotkv/slotkv/pkg/topostore"
	"github.com/slotkv/slotkv/services/downloader"
)

const testToken = "bulk-secret"

// kv is one record of a test dataset.
type kv struct{ key, value string }

// testDataset is a dataset built in memory: files by name plus manifest.
type testDataset struct {
	files    map[string][]byte
	manifest *dataset.Manifest
	perFile  map[string][]kv
	records  []kv
}

// buildDataset writes n records with keys "<prefix>:NNNNNN" into nfiles
// files (contiguous in (slot, key) order).
func buildDataset(t *testing.T, prefix string, n, nfiles int) *testDataset {
	t.Helper()
	recs := make([]kv, n)
	for i := range recs {
		recs[i] = kv{fmt.Sprintf("%s:%06d", prefix, i), fmt.Sprintf("value-%s-%d-%s", prefix, i, strings.Repeat("x", i%50))}
	}
	slices.SortFunc(recs, func(a, b kv) int {
		if c := cmp.Compare(slot.OfString(a.key), slot.OfString(b.key)); c != 0 {
			return c
		}
		return strings.Compare(a.key, b.key)
	})
	ds := &testDataset{files: map[string][]byte{}, perFile: map[string][]kv{}, records: recs,
		manifest: &dataset.Manifest{FormatVersion: dataset.FormatVersion, SlotCount: slot.Count, Records: uint64(n)}}
	per := (n + nfiles - 1) / nfiles
	for f := 0; f < nfiles; f++ {
		lo, hi := f*per, min((f+1)*per, n)
		if lo >= hi {
			break
		}
		name := fmt.Sprintf("part-%05d.skv", f)
		var buf bytes.Buffer
		w := dataset.NewWriter(&buf, dataset.WriterOptions{BlockSize: 4 << 10})
		for _, r := range recs[lo:hi] {
			if err := w.Write(dataset.Record{Slot: slot.OfString(r.key), Key: []byte(r.key), Value: []byte(r.value)}); err != nil {
				t.Fatal(err)
			}
		}
		info, err := w.Close()
		if err != nil {
			t.Fatal(err)
		}
		ds.files[name] = buf.Bytes()
		ds.perFile[name] = recs[lo:hi]
		ds.manifest.Files = append(ds.manifest.Files, info.File(name))
	}
	if err := ds.manifest.Validate(dataset.Limits{}); err != nil {
		t.Fatalf("test dataset invalid: %v", err)
	}
	ds.setManifest(t)
	return ds
}

func (ds *testDataset) setManifest(t *testing.T) {
	t.Helper()
	b, err := ds.manifest.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	ds.files[dataset.ManifestName] = b
}

// dsServer serves a dataset under /ds/ and records what it was asked.
type dsServer struct {
	*httptest.Server
	ds *testDataset

	mu        sync.Mutex
	requests  map[string]int
	ranges    map[string][]string
	served    map[string]int64
	active    int
	maxActive int
	// hook may answer a data file request itself (returns true); n is the
	// request's number for that file, from 1.
	hook func(w http.ResponseWriter, r *http.Request, name string, n int) bool
}

func serveDataset(t *testing.T, ds *testDataset) *dsServer {
	s := &dsServer{ds: ds, requests: map[string]int{}, ranges: map[string][]string{}, served: map[string]int64{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.handle))
	t.Cleanup(s.Close)
	return s
}

func (s *dsServer) manifestURL() string { return s.URL + "/ds/" + dataset.ManifestName }

type countingWriter struct {
	http.ResponseWriter
	n *int64
}

func (c countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	*c.n += int64(n)
	return n, err
}

func (c countingWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *dsServer) handle(w http.ResponseWriter, r *http.Request) {
	name, ok := strings.CutPrefix(r.URL.Path, "/ds/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	s.mu.Lock()
	s.requests[name]++
	n := s.requests[name]
	if rg := r.Header.Get("Range"); rg != "" {
		s.ranges[name] = append(s.ranges[name], rg)
	}
	data, found := s.ds.files[name]
	hook := s.hook
	isData := name != dataset.ManifestName
	if isData {
		s.active++
		s.maxActive = max(s.maxActive, s.active)
	}
	s.mu.Unlock()
	var served int64
	defer func() {
		s.mu.Lock()
		s.served[name] += served
		if isData {
			s.active--
		}
		s.mu.Unlock()
	}()
	cw := countingWriter{w, &served}
	if isData && hook != nil && hook(cw, r, name, n) {
		return
	}
	if !found {
		http.NotFound(w, r)
		return
	}
	http.ServeContent(cw, r, name, time.Time{}, bytes.NewReader(data))
}

func (s *dsServer) count(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[name]
}

// cutHalf writes the headers of the whole file and half of it, then closes
// the connection.
func cutHalf(w http.ResponseWriter, data []byte) {
	w.Header().Set("Content-Length", fmt.Sprint(len(data)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(data[:len(data)/2])
	w.(http.Flusher).Flush()
	rw := w.(countingWriter).ResponseWriter
	conn, _, err := http.NewResponseController(rw).Hijack()
	if err == nil {
		conn.Close()
	}
}

// halfThenWait writes the headers and half of the file, then waits for
// the client to go away.
func halfThenWait(w http.ResponseWriter, r *http.Request, data []byte) {
	w.Header().Set("Content-Length", fmt.Sprint(len(data)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(data[:len(data)/2])
	w.(http.Flusher).Flush()
	<-r.Context().Done()
}

// service is a downloader running in this process.
type service struct {
	t       *testing.T
	opts    downloader.Options
	cancel  context.CancelFunc
	done    chan error
	grpc    string
	http    string
	conn    *grpc.ClientConn
	client  downloaderv1.BulkLoadServiceClient
	stopped bool
}

// sharedClusters are the clusters many tests run a downloader on at once
// (TestBulkLoad's): each of those downloaders gets an etcd prefix of its
// own, so their leader elections, job records and settings stay apart.
var sharedClusters sync.Map // *testcluster.Cluster -> bool

func shareCluster(c *testcluster.Cluster) { sharedClusters.Store(c, true) }

// isolatedPrefix returns the etcd prefix of the downloader whose data
// directory is dataDir on the shared cluster c (the same for a restart on
// the same directory), holding a copy of c's topology.
func isolatedPrefix(t *testing.T, c *testcluster.Cluster, dataDir string) string {
	t.Helper()
	h := fnv.New64a()
	_, _ = h.Write([]byte(dataDir))
	prefix := fmt.Sprintf("/dl-%x/", h.Sum64())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topo, err := c.Store().Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st, err := topostore.New(c.Etcd().Client(t), topostore.Options{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Bootstrap(ctx, topo); err != nil {
		t.Fatal(err)
	}
	return prefix
}

func testOptions(t *testing.T, c *testcluster.Cluster, dataDir string) downloader.Options {
	o := downloader.DefaultOptions()
	o.GRPCAddr, o.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	o.DataDir = dataDir
	o.Etcd.Endpoints = c.Etcd().Endpoints()
	if _, ok := sharedClusters.Load(c); ok {
		o.Etcd.Prefix = isolatedPrefix(t, c, dataDir)
	}
	o.Tokens = auth.OneToken(testToken)
	o.AllowedPrefixes = []string{"http://127.0.0.1"}
	o.HTTPRetryWaitMin, o.HTTPRetryWaitMax = 5*time.Millisecond, 50*time.Millisecond
	o.HTTPStallTimeout = 20 * time.Second
	o.NodeRetryTimeout = 10 * time.Second
	o.ProgressInterval = time.Second
	o.ShutdownTimeout = 5 * time.Second
	o.IngestBatchRecords = 200
	return o
}

func startService(t *testing.T, o downloader.Options) *service {
	t.Helper()
	s := &service{t: t, opts: o, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	addrs := make(chan [2]string, 1)
	o.OnListen = func(g, h net.Addr) { addrs <- [2]string{g.String(), h.String()} }
	go func() { s.done <- downloader.Run(ctx, o) }()
	select {
	case a := <-addrs:
		s.grpc, s.http = a[0], a[1]
	case err := <-s.done:
		t.Fatalf("downloader did not start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("downloader did not start within 30s")
	}
	cc, err := dial.New(s.grpc, dial.Options{Token: o.Tokens.Admin})
	if err != nil {
		t.Fatal(err)
	}
	s.conn = cc
	s.client = downloaderv1.NewBulkLoadServiceClient(cc)
	t.Cleanup(s.stop)
	return s
}

// stop shuts the service down (as SIGTERM does) and waits.
func (s *service) stop() {
	if s.stopped {
		return
	}
	s.stopped = true
	s.cancel()
	_ = s.conn.Close()
	select {
	case err := <-s.done:
		if err != nil {
			s.t.Errorf("downloader.Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		s.t.Error("downloader did not stop within 30s")
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func (s *service) start(t *testing.T, url, id string) *downloaderv1.Job {
	t.Helper()
	resp, err := s.client.StartJob(ctxT(t), &downloaderv1.StartJobRequest{ManifestUrl: url, JobId: id})
	if err != nil {
		t.Fatalf("StartJob(%s): %v", url, err)
	}
	return resp.GetJob()
}

func (s *service) get(t *testing.T, id string) *downloaderv1.Job {
	t.Helper()
	resp, err := s.client.GetJob(ctxT(t), &downloaderv1.GetJobRequest{JobId: id})
	if err != nil {
		t.Fatalf("GetJob(%s): %v", id, err)
	}
	return resp.GetJob()
}

// waitJob polls the job until cond holds, failing after a deadline.
func (s *service) waitJob(t *testing.T, id string, what string, cond func(*downloaderv1.Job) bool) *downloaderv1.Job {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	var j *downloaderv1.Job
	for time.Now().Before(deadline) {
		j = s.get(t, id)
		if cond(j) {
			return j
		}
		time.Sleep(20 * time.Millisecond) // poll interval, not a condition
	}
	t.Fatalf("job %s: timed out waiting for %s; last: state %s error %q files %v", id, what, j.GetState(), j.GetError(), fileStates(j))
	return nil
}

func (s *service) waitState(t *testing.T, id string, st downloaderv1.State) *downloaderv1.Job {
	t.Helper()
	return s.waitJob(t, id, st.String(), func(j *downloaderv1.Job) bool {
		if j.GetState() == st {
			return true
		}
		if isEnd(j.GetState()) && j.GetState() != st {
			t.Fatalf("job %s ended %s (error %q) while waiting for %s; files %v", id, j.GetState(), j.GetError(), st, fileStates(j))
		}
		return false
	})
}

func isEnd(st downloaderv1.State) bool {
	switch st {
	case downloaderv1.State_STATE_SUCCEEDED, downloaderv1.State_STATE_FAILED, downloaderv1.State_STATE_CANCELED:
		return true
	}
	return false
}

func fileStates(j *downloaderv1.Job) []string {
	var out []string
	for _, f := range j.GetFiles() {
		s := f.GetName() + "=" + strings.TrimPrefix(f.GetState().String(), "STATE_")
		if f.GetError() != "" {
			s += "(" + f.GetError() + ")"
		}
		out = append(out, s)
	}
	return out
}

// checkKeys reads every record of recs from the node owning its slot.
func checkKeys(t *testing.T, c *testcluster.Cluster, topo *topology.Topology, recs []kv) {
	t.Helper()
	byNode := map[string][]kv{}
	for _, r := range recs {
		n, ok := topo.Owner(slot.OfString(r.key))
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
				if !it.GetFound() || string(it.GetValue()) != chunk[i].value {
					t.Fatalf("node %s: key %q: found %v value %q, want %q", id, chunk[i].key, it.GetFound(), it.GetValue(), chunk[i].value)
				}
			}
		}
	}
}

// lines reads a response body for error messages.
func body(r io.Reader) string {
	b, _ := io.ReadAll(bufio.NewReader(r))
	return string(b)
}

func slotOf(key string) uint16 { return slot.OfString(key) }
