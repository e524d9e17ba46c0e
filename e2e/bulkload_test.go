package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	downloaderv1 "github.com/slotkv/slotkv/gen/slotkv/downloader/v1"
	routerv1 "github.com/slotkv/slotkv/gen/slotkv/router/v1"
	"github.com/slotkv/slotkv/pkg/dataset"
	"github.com/slotkv/slotkv/pkg/proctest"
)

// buildDataset generates n JSONL records with slotkv-dataset gen and builds
// a dataset of files of about fileSize from them; it returns the dataset
// directory and the input file.
func buildDataset(tb testing.TB, n int, valueSize int, fileSize string) (dir, input string) {
	tb.Helper()
	work := tb.TempDir()
	input = filepath.Join(work, "input.jsonl")
	dir = filepath.Join(work, "dataset")
	if out, err := runTool(tb, "slotkv-dataset", "gen", "--records", fmt.Sprint(n), "--value-size", fmt.Sprint(valueSize), "--out", input); err != nil {
		tb.Fatalf("gen: %v\n%s", err, out)
	}
	if out, err := runTool(tb, "slotkv-dataset", "build", "--input", input, "--out", dir, "--target-file-size", fileSize); err != nil {
		tb.Fatalf("build: %v\n%s", err, out)
	}
	return dir, input
}

// readManifest parses a dataset's manifest.
func readManifest(tb testing.TB, dir string) *dataset.Manifest {
	tb.Helper()
	f, err := os.Open(filepath.Join(dir, dataset.ManifestName))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	m, err := dataset.ParseManifest(f, dataset.Limits{})
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

// copyDataset copies a dataset directory so a test can damage the copy.
func copyDataset(tb testing.TB, dir string) string {
	tb.Helper()
	dst := filepath.Join(tb.TempDir(), "dataset")
	if err := os.CopyFS(dst, os.DirFS(dir)); err != nil {
		tb.Fatal(err)
	}
	return dst
}

// fileServer serves dir with faulthttp.
type fileServer struct {
	proc *proctest.Proc
	url  string
}

func serveDataset(tb testing.TB, dir string) *fileServer {
	tb.Helper()
	p := proctest.Start(tb, proctest.Bin(tb, "faulthttp"), "--dir", dir, "--addr", "127.0.0.1:0")
	return &fileServer{proc: p, url: "http://" + p.HTTP}
}

func (s *fileServer) control(tb testing.TB, path string) {
	tb.Helper()
	resp, err := http.Post(s.url+path, "", nil)
	if err != nil {
		tb.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("faulthttp %s: %s", path, resp.Status)
	}
}

type servedFile struct {
	Requests      int   `json:"requests"`
	RangeRequests int   `json:"range_requests"`
	Bytes         int64 `json:"bytes"`
	Failed        int   `json:"failed"`
}

func (s *fileServer) stats(tb testing.TB) map[string]servedFile {
	tb.Helper()
	resp, err := http.Get(s.url + "/_stats")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]servedFile{}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		tb.Fatal(err)
	}
	return out
}

// loader is a downloader process and its client.
type loader struct {
	proc    *proctest.Proc
	dataDir string
	args    []string
	env     []string
	api     downloaderv1.BulkLoadServiceClient
}

func startLoader(tb testing.TB, c *cluster, extra ...string) *loader {
	tb.Helper()
	return startLoaderEnv(tb, c, nil, extra...)
}

// startLoaderEnv is startLoader with env added to the process's environment.
func startLoaderEnv(tb testing.TB, c *cluster, env []string, extra ...string) *loader {
	tb.Helper()
	l := &loader{dataDir: filepath.Join(tb.TempDir(), "downloader"), env: env}
	l.args = append(append([]string{"--data-dir", l.dataDir, "--token", c.Token,
		"--allowed-prefixes", "http://127.0.0.1:"}, c.EtcdArgs()...), extra...)
	l.start(tb, "127.0.0.1:0", "127.0.0.1:0")
	return l
}

func (l *loader) start(tb testing.TB, grpcAddr, httpAddr string) {
	tb.Helper()
	args := append([]string{"--grpc-addr", grpcAddr, "--http-addr", httpAddr}, l.args...)
	l.proc = proctest.StartWith(tb, proctest.Options{Env: l.env}, proctest.Bin(tb, "slotkv-downloader"), args...)
	l.api = downloaderv1.NewBulkLoadServiceClient(benchConnToken(tb, l.proc.GRPC, tokenOf(l.args)))
}

func tokenOf(args []string) string {
	for i, a := range args {
		if a == "--token" && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// wait polls the job until it ends (or until done says so) and returns it.
func (l *loader) wait(tb testing.TB, id string, done func(*downloaderv1.Job) bool) *downloaderv1.Job {
	tb.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := l.api.GetJob(ctx, &downloaderv1.GetJobRequest{JobId: id})
		cancel()
		if err == nil && done(resp.GetJob()) {
			return resp.GetJob()
		}
		if time.Now().After(deadline) {
			tb.Fatalf("job %s: not done after 3 minutes: %v %v", id, resp.GetJob(), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func ended(j *downloaderv1.Job) bool {
	switch j.GetState() {
	case downloaderv1.State_STATE_SUCCEEDED, downloaderv1.State_STATE_FAILED, downloaderv1.State_STATE_CANCELED:
		return true
	}
	return false
}

func (l *loader) run(tb testing.TB, id, manifestURL string) *downloaderv1.Job {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := l.api.StartJob(ctx, &downloaderv1.StartJobRequest{JobId: id, ManifestUrl: manifestURL}); err != nil {
		tb.Fatalf("start %s: %v", id, err)
	}
	return l.wait(tb, id, ended)
}

// expected reads the generated input: key -> value.
func expected(tb testing.TB, input string) map[string]string {
	tb.Helper()
	f, err := os.Open(input)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec struct{ Key, Value string }
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			tb.Fatal(err)
		}
		out[rec.Key] = rec.Value
	}
	return out
}

// checkAll reads every key back through the router in multi-gets of 1000.
func (c *cluster) checkAll(tb testing.TB, want map[string]string) {
	tb.Helper()
	kv := routerv1.NewKVServiceClient(c.conn(c.router.GRPC))
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	for i := 0; i < len(keys); i += 1000 {
		batch := keys[i:min(i+1000, len(keys))]
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		resp, err := kv.MultiGet(ctx, &routerv1.MultiGetRequest{Keys: batch})
		cancel()
		if err != nil {
			tb.Fatalf("multi-get: %v", err)
		}
		for j, e := range resp.GetEntries() {
			if !e.GetFound() || e.GetText() != want[batch[j]] {
				tb.Fatalf("key %s: found=%v value %q, want %q", batch[j], e.GetFound(), e.GetText(), want[batch[j]])
			}
		}
	}
}

func (c *cluster) count(tb testing.TB) uint64 {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := routerv1.NewKVServiceClient(c.conn(c.router.GRPC)).Count(ctx, &routerv1.CountRequest{})
	if err != nil {
		tb.Fatal(err)
	}
	return resp.GetCount()
}

// TestBulkLoadEndToEnd builds a dataset of 200k records from generated
// JSONL, serves it from a real HTTP server process, loads it into a 3-node
// cluster and reads every key back through the router.
func TestBulkLoadEndToEnd(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3, "bulk-secret")
	dir, input := buildDataset(t, 200_000, 48, "2MiB")
	m := readManifest(t, dir)
	if m.Records != 200_000 || len(m.Files) < 3 {
		t.Fatalf("dataset: %d records in %d files", m.Records, len(m.Files))
	}
	fs := serveDataset(t, dir)
	l := startLoader(t, c)
	job := l.run(t, "load-200k", fs.url+"/"+dataset.ManifestName)
	if job.GetState() != downloaderv1.State_STATE_SUCCEEDED {
		t.Fatalf("job %s: %v", job.GetState(), job.GetError())
	}
	if got := job.GetIngest().GetDone(); got != m.Records {
		t.Fatalf("job ingested %d records, manifest says %d", got, m.Records)
	}
	var perNode uint64
	for _, n := range job.GetNodes() {
		perNode += n.GetRecords()
	}
	if perNode != m.Records || len(job.GetNodes()) != 3 {
		t.Fatalf("per-node records %v sum to %d, want %d over 3 nodes", job.GetNodes(), perNode, m.Records)
	}
	for _, f := range job.GetFiles() {
		var want uint64
		for _, mf := range m.Files {
			if mf.Name == f.GetName() {
				want = mf.Keys
			}
		}
		if f.GetState() != downloaderv1.State_STATE_SUCCEEDED || f.GetIngest().GetDone() != want {
			t.Fatalf("file %s: %v, %d records, manifest %d", f.GetName(), f.GetState(), f.GetIngest().GetDone(), want)
		}
	}
	if got := c.count(t); got != m.Records {
		t.Fatalf("cluster holds %d keys, manifest %d", got, m.Records)
	}
	c.checkAll(t, expected(t, input))
}

// TestBulkLoadFaults breaks downloads in every way the issue names; each
// time the job either recovers or fails with an error naming the file, and
// the keys the cluster held before stay readable.
func TestBulkLoadFaults(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3, "fault-secret")
	dir, input := buildDataset(t, 20_000, 32, "256KiB")
	m := readManifest(t, dir)
	if len(m.Files) < 3 {
		t.Fatalf("want at least 3 files, got %d", len(m.Files))
	}
	want := expected(t, input)
	l := startLoader(t, c)

	// Data the cluster already holds must survive every failed load.
	before := map[string]string{}
	kv := routerv1.NewKVServiceClient(c.conn(c.router.GRPC))
	for i := 0; i < 200; i++ {
		k, v := fmt.Sprintf("existing/%03d", i), fmt.Sprintf("keep-%d", i)
		before[k] = v
		if _, err := kv.Put(context.Background(), &routerv1.PutRequest{Key: k, Data: &routerv1.PutRequest_Text{Text: v}}); err != nil {
			t.Fatal(err)
		}
	}
	victim := m.Files[1]

	failsNaming := func(t *testing.T, id, url, name string) {
		t.Helper()
		job := l.run(t, id, url)
		if job.GetState() != downloaderv1.State_STATE_FAILED || !strings.Contains(job.GetError(), name) {
			t.Fatalf("job %s: state %v error %q, want FAILED naming %q", id, job.GetState(), job.GetError(), name)
		}
		c.checkAll(t, before)
	}
	damaged := func(t *testing.T, damage func(dir string)) string {
		d := copyDataset(t, dir)
		damage(d)
		return serveDataset(t, d).url + "/" + dataset.ManifestName
	}
	editManifest := func(edit func(m map[string]any)) func(string) {
		return func(d string) {
			p := filepath.Join(d, dataset.ManifestName)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			var raw map[string]any
			if err := json.Unmarshal(b, &raw); err != nil {
				t.Fatal(err)
			}
			edit(raw)
			b, _ = json.Marshal(raw)
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}

	t.Run("http 500 for a while", func(t *testing.T) {
		fs := serveDataset(t, dir)
		fs.control(t, "/_fault/errors?count=5&code=500")
		job := l.run(t, "errors-500", fs.url+"/"+dataset.ManifestName)
		if job.GetState() != downloaderv1.State_STATE_SUCCEEDED {
			t.Fatalf("job %v: %s", job.GetState(), job.GetError())
		}
		var failed int
		for _, s := range fs.stats(t) {
			failed += s.Failed
		}
		if failed != 5 {
			t.Fatalf("server answered %d injected errors, want 5", failed)
		}
		c.checkAll(t, want)
	})
	t.Run("connection cut mid-file resumes by range", func(t *testing.T) {
		fs := serveDataset(t, dir)
		fs.control(t, fmt.Sprintf("/_fault/cut?file=%s&after=%d", victim.Name, victim.Size/2))
		job := l.run(t, "cut", fs.url+"/"+dataset.ManifestName)
		if job.GetState() != downloaderv1.State_STATE_SUCCEEDED {
			t.Fatalf("job %v: %s", job.GetState(), job.GetError())
		}
		st := fs.stats(t)[victim.Name]
		if st.RangeRequests < 1 || st.Bytes >= victim.Size*3/2 {
			t.Fatalf("%s: %d range requests, %d bytes served for a %d-byte file: not resumed by Range", victim.Name, st.RangeRequests, st.Bytes, victim.Size)
		}
		c.checkAll(t, want)
	})
	t.Run("sha256 mismatch", func(t *testing.T) {
		url := damaged(t, func(d string) {
			p := filepath.Join(d, victim.Name)
			b, _ := os.ReadFile(p)
			b[len(b)/2] ^= 0xff
			_ = os.WriteFile(p, b, 0o644)
		})
		failsNaming(t, "sha-mismatch", url, victim.Name)
	})
	t.Run("truncated file", func(t *testing.T) {
		url := damaged(t, func(d string) { _ = os.Truncate(filepath.Join(d, victim.Name), victim.Size-100) })
		failsNaming(t, "truncated", url, victim.Name)
	})
	t.Run("missing file", func(t *testing.T) {
		url := damaged(t, func(d string) { _ = os.Remove(filepath.Join(d, victim.Name)) })
		failsNaming(t, "missing", url, victim.Name)
	})
	t.Run("malformed manifest", func(t *testing.T) {
		url := damaged(t, func(d string) {
			_ = os.WriteFile(filepath.Join(d, dataset.ManifestName), []byte(`{"format_version":1,"files":[`), 0o644)
		})
		failsNaming(t, "malformed", url, dataset.ManifestName)
	})
	t.Run("unsupported format version", func(t *testing.T) {
		url := damaged(t, editManifest(func(m map[string]any) { m["format_version"] = 99 }))
		failsNaming(t, "version", url, "99")
	})
	t.Run("name escaping the download directory", func(t *testing.T) {
		url := damaged(t, editManifest(func(m map[string]any) {
			m["files"].([]any)[0].(map[string]any)["name"] = "../escape.skv"
		}))
		failsNaming(t, "escape", url, "../escape.skv")
	})
}

// TestBulkLoadDownloaderRestart kills the downloader (SIGKILL) in the middle
// of a job and starts it again on the same data: the job continues and no
// file that was already downloaded is downloaded again.
func TestBulkLoadDownloaderRestart(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3, "restart-secret")
	dir, input := buildDataset(t, 40_000, 64, "512KiB")
	m := readManifest(t, dir)
	fs := serveDataset(t, dir)
	l := startLoader(t, c)
	// Slow the downloads so the kill lands mid-job.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bw := uint64(1 << 20)
	if _, err := l.api.UpdateSettings(ctx, &downloaderv1.UpdateSettingsRequest{BandwidthBytesPerSecond: &bw}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.api.StartJob(ctx, &downloaderv1.StartJobRequest{JobId: "restart", ManifestUrl: fs.url + "/" + dataset.ManifestName}); err != nil {
		t.Fatal(err)
	}
	finished := func(j *downloaderv1.Job) []string {
		var out []string
		for _, f := range j.GetFiles() {
			switch f.GetState() {
			case downloaderv1.State_STATE_DOWNLOADED, downloaderv1.State_STATE_INGESTING, downloaderv1.State_STATE_SUCCEEDED:
				out = append(out, f.GetName())
			}
		}
		return out
	}
	mid := l.wait(t, "restart", func(j *downloaderv1.Job) bool { return len(finished(j)) >= 2 || ended(j) })
	if ended(mid) || len(finished(mid)) == len(m.Files) {
		t.Fatalf("job ended before the kill (%v): slow it down more", mid.GetState())
	}
	done := finished(mid)
	l.proc.Kill()
	t.Logf("killed the downloader (pid %d) with %d of %d files downloaded", l.proc.Pid(), len(done), len(m.Files))
	l.start(t, l.proc.GRPC, l.proc.HTTP)
	job := l.wait(t, "restart", ended)
	if job.GetState() != downloaderv1.State_STATE_SUCCEEDED {
		t.Fatalf("after restart: %v %s", job.GetState(), job.GetError())
	}
	st := fs.stats(t)
	for _, name := range done {
		if st[name].Requests != 1 {
			t.Errorf("%s was downloaded before the kill but requested %d times", name, st[name].Requests)
		}
	}
	c.checkAll(t, expected(t, input))
}

// TestBulkLoadStorageNodeDown: a storage node is down while the job ingests.
// The records bound for it cannot land: the job fails naming the node and
// the file, the data the cluster held stays readable, and once the node is
// back a resume finishes the load.
func TestBulkLoadStorageNodeDown(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3, "down-secret")
	dir, input := buildDataset(t, 20_000, 32, "256KiB")
	fs := serveDataset(t, dir)
	l := startLoader(t, c, "--node-retry-timeout", "2s")
	kv := routerv1.NewKVServiceClient(c.conn(c.router.GRPC))
	if _, err := kv.Put(context.Background(), &routerv1.PutRequest{Key: "existing", Data: &routerv1.PutRequest_Text{Text: "kept"}}); err != nil {
		t.Fatal(err)
	}
	down := c.Nodes[1]
	if err := down.Proc.Stop(); err != nil {
		t.Fatalf("stop %s: %v", down.ID, err)
	}
	job := l.run(t, "node-down", fs.url+"/"+dataset.ManifestName)
	if job.GetState() != downloaderv1.State_STATE_FAILED || !strings.Contains(job.GetError(), down.ID) || !strings.Contains(job.GetError(), ".skv") {
		t.Fatalf("job %v: %q, want FAILED naming node %s and a file", job.GetState(), job.GetError(), down.ID)
	}
	t.Logf("failed as expected: %s", job.GetError())

	c.Restart(t, down)
	got, err := kv.Get(context.Background(), &routerv1.GetRequest{Key: "existing"})
	if err != nil || got.GetText() != "kept" {
		t.Fatalf("existing key after the failed load: %v %v", got, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := l.api.ResumeJob(ctx, &downloaderv1.ResumeJobRequest{JobId: "node-down"}); err != nil {
		t.Fatalf("resume: %v", err)
	}
	job = l.wait(t, "node-down", ended)
	if job.GetState() != downloaderv1.State_STATE_SUCCEEDED {
		t.Fatalf("after the node came back: %v %s", job.GetState(), job.GetError())
	}
	c.checkAll(t, expected(t, input))
}
