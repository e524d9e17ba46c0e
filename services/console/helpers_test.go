package console

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	downloaderv1 "github.com/slotkv/slotkv/gen/slotkv/downloader/v1"
	migratorv1 "github.com/slotkv/slotkv/gen/slotkv/migrator/v1"
	routerv1 "github.com/slotkv/slotkv/gen/slotkv/router/v1"
	"github.com/slotkv/slotkv/pkg/auth"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/etcdtest"
	"github.com/slotkv/slotkv/pkg/proctest"
	"github.com/slotkv/slotkv/pkg/server"
	"github.com/slotkv/slotkv/pkg/testcluster"
)

// stack is a real local cluster: three storage nodes, a router, a migrator
// and a downloader as processes, and a console in this process in front of
// them, served by a real HTTP server.
type stack struct {
	t          *testing.T
	cluster    *testcluster.Cluster
	router     *proctest.Proc
	migrator   *proctest.Proc
	downloader *proctest.Proc
	console    *Console
	srv        *httptest.Server
	token      string
}

// startStack starts the stack; token "" runs an open cluster. tokens are
// the console's own (the cluster's admin token, maybe a data token). With
// The cluster runs on a real etcd control plane: every process is pointed
// at it and the console finds the cluster there.
func startStack(t *testing.T, token string, tokens auth.Tokens) *stack {
	t.Helper()
	s := &stack{t: t, token: token}
	co := testcluster.Options{Token: token, Etcd: etcdtest.Start(t)}
	s.cluster = testcluster.Start(t, 3, co)
	s.cluster.Bootstrap(t)
	tok := []string{}
	if token != "" {
		tok = []string{"--token", token}
	}
	start := func(name string, args ...string) *proctest.Proc {
		args = append([]string{"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"}, append(append(args, tok...), s.cluster.EtcdArgs()...)...)
		return proctest.Start(t, proctest.Bin(t, name), args...)
	}
	s.router = start("slotkv-router")
	// Small batches, so a stream's progress moves in many steps.
	s.migrator = start("slotkv-migrator", "--data-dir", filepath.Join(t.TempDir(), "migrator"), "--batch-records", "100")
	s.downloader = start("slotkv-downloader", "--data-dir", filepath.Join(t.TempDir(), "downloader"), "--allowed-prefixes", "http://127.0.0.1:")

	o := DefaultOptions()
	o.Tokens = tokens
	o.Router, o.Migrator, o.Downloader = s.router.GRPC, s.migrator.GRPC, s.downloader.GRPC
	o.RouterHTTP, o.MigratorHTTP, o.DownloaderHTTP = s.router.HTTP, s.migrator.HTTP, s.downloader.HTTP
	o.Etcd = server.Etcd{Endpoints: co.Etcd.Endpoints()}
	o.SampleInterval = 200 * time.Millisecond
	s.console, s.srv = serveConsole(t, o)
	return s
}

// serveConsole builds a console from o, runs its loops and serves it on a
// real HTTP server until the test ends.
func serveConsole(t *testing.T, o Options) (*Console, *httptest.Server) {
	t.Helper()
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Loop(ctx)
	}()
	srv := httptest.NewServer(c.Handler())
	t.Cleanup(func() {
		c.hub.close()
		srv.Close()
		cancel()
		<-done
		c.Close()
	})
	return c, srv
}

// client is a browser-like HTTP client with a cookie jar that does not
// follow redirects (the tests look at them).
func (s *stack) client() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// login opens a session on hc.
func (s *stack) login(hc *http.Client, token string) *http.Response {
	s.t.Helper()
	resp, err := hc.PostForm(s.srv.URL+"/login", map[string][]string{"token": {token}, "next": {"/migrations"}})
	if err != nil {
		s.t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// post sends a JSON API call and returns the status and decoded answer.
func (s *stack) post(hc *http.Client, path string, body any) (int, map[string]any) {
	s.t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, s.srv.URL+path, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]any{}
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &out); err != nil {
		s.t.Fatalf("POST %s: %d %q: %v", path, resp.StatusCode, raw, err)
	}
	return resp.StatusCode, out
}

// appState is /api/state, decoded.
type appState struct {
	Cluster    clusterView             `json:"cluster"`
	Traffic    trafficView             `json:"traffic"`
	Migrations jobsView[migrationView] `json:"migrations"`
	Bulkloads  jobsView[bulkView]      `json:"bulkloads"`
}

func (s *stack) state(hc *http.Client) appState {
	s.t.Helper()
	return stateAt(s.t, hc, s.srv.URL)
}

// waitState polls /api/state until ok says so.
func (s *stack) waitState(hc *http.Client, what string, ok func(appState) bool) appState {
	s.t.Helper()
	return waitStateAt(s.t, hc, s.srv.URL, what, ok)
}

// stateAt is the /api/state of the console at base.
func stateAt(t testing.TB, hc *http.Client, base string) appState {
	t.Helper()
	resp, err := hc.Get(base + "/api/state")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/api/state: %s", resp.Status)
	}
	var st appState
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// waitStateAt polls the /api/state of the console at base until ok says
// so.
func waitStateAt(t testing.TB, hc *http.Client, base, what string, ok func(appState) bool) appState {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		st := stateAt(t, hc, base)
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(st, "", " ")
			t.Fatalf("waiting for %s: not after 2 minutes; last state:\n%s", what, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// migration finds a job in the state.
func (st appState) migration(id string) (migrationView, bool) {
	for _, j := range st.Migrations.Jobs {
		if j.ID == id {
			return j, true
		}
	}
	return migrationView{}, false
}

func (st appState) bulkload(id string) (bulkView, bool) {
	for _, j := range st.Bulkloads.Jobs {
		if j.ID == id {
			return j, true
		}
	}
	return bulkView{}, false
}

// owner is the owner of slot s in the cluster view.
func (st appState) owner(s uint32) string {
	for _, o := range st.Cluster.Owners {
		if o.Start <= s && s <= o.End {
			return o.Node
		}
	}
	return ""
}

// migratorAPI is a direct client of the migrator, to compare with.
func (s *stack) migratorAPI() migratorv1.MigratorServiceClient {
	s.t.Helper()
	cc, err := dial.New(s.migrator.GRPC, dial.Options{Token: s.token})
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { cc.Close() })
	return migratorv1.NewMigratorServiceClient(cc)
}

// downloaderAPI is a direct client of the downloader.
func (s *stack) downloaderAPI() downloaderv1.BulkLoadServiceClient {
	s.t.Helper()
	cc, err := dial.New(s.downloader.GRPC, dial.Options{Token: s.token})
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { cc.Close() })
	return downloaderv1.NewBulkLoadServiceClient(cc)
}

// load writes n keys of size bytes through the router.
func (s *stack) load(prefix string, n, size int) {
	s.t.Helper()
	cc, err := dial.New(s.router.GRPC, dial.Options{Token: s.token})
	if err != nil {
		s.t.Fatal(err)
	}
	defer cc.Close()
	kv := routerv1.NewKVServiceClient(cc)
	val := strings.Repeat("v", size)
	for i := 0; i < n; i += 500 {
		req := &routerv1.MultiPutRequest{}
		for j := i; j < min(n, i+500); j++ {
			req.Entries = append(req.Entries, &routerv1.KeyValue{Key: fmt.Sprintf("%s:%06d", prefix, j), Data: &routerv1.KeyValue_Text{Text: val}})
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		_, err := kv.MultiPut(ctx, req)
		cancel()
		if err != nil {
			s.t.Fatalf("load: %v", err)
		}
	}
}

// dataset builds a dataset of n records with slotkv-dataset (the tool
// operators use) and serves it over HTTP; it returns the manifest URL.
func (s *stack) dataset(n int) string {
	s.t.Helper()
	dir := s.t.TempDir()
	in, out := filepath.Join(dir, "in.jsonl"), filepath.Join(dir, "ds")
	tool := proctest.Bin(s.t, "slotkv-dataset")
	for _, args := range [][]string{
		{"gen", "--records", fmt.Sprint(n), "--value-size", "64", "--out", in},
		{"build", "--input", in, "--out", out, "--target-file-size", "64KiB"},
	} {
		if b, err := exec.Command(tool, args...).CombinedOutput(); err != nil {
			s.t.Fatalf("slotkv-dataset %v: %v\n%s", args, err, b)
		}
	}
	fs := httptest.NewServer(http.FileServer(http.Dir(out)))
	s.t.Cleanup(fs.Close)
	return fs.URL + "/manifest.json"
}

// readEvents reads server-sent events from /events until it has seen
// every kind in want, and returns the last data of each.
func readEvents(t *testing.T, hc *http.Client, url string, want ...string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
		t.Fatalf("/events: %s, Content-Type %q", resp.Status, ct)
	}
	got := map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	event := ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			got[event] = strings.TrimPrefix(line, "data: ")
		}
		all := true
		for _, k := range want {
			if _, ok := got[k]; !ok {
				all = false
			}
		}
		if all {
			return got
		}
	}
	t.Fatalf("/events ended (%v) before %v; got %v", sc.Err(), want, got)
	return nil
}
