package browser

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"google.golang.org/grpc/status"

	migratorv1 "github.com/slotkv/slotkv/gen/slotkv/migrator/v1"
	routerv1 "github.com/slotkv/slotkv/gen/slotkv/router/v1"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/etcdtest"
	"github.com/slotkv/slotkv/pkg/proctest"
	"github.com/slotkv/slotkv/pkg/testcluster"
)

const (
	token = "browser-admin-secret"
	// The browser's viewport, and so every screenshot's size.
	width, height = 1280, 900
)

// stack is the local cluster the console runs against.
type stack struct {
	cluster                               *testcluster.Cluster
	router, migrator, downloader, console *proctest.Proc
	url                                   string // the console
}

// startStack runs the stack on a real etcd control plane, as the services
// run now: the topology is bootstrapped into etcd, every process is pointed
// at it, and the console finds the cluster there (no --storage).
func startStack(t *testing.T) *stack {
	t.Helper()
	s := &stack{cluster: testcluster.Start(t, 3, testcluster.Options{Token: token, Etcd: etcdtest.Start(t)})}
	seeds := strings.Join(s.cluster.Addrs(), ",")
	if out, err := exec.Command(proctest.Bin(t, "slotkvctl"), append([]string{"bootstrap", "--storage", seeds, "--token", token}, s.cluster.EtcdArgs()...)...).CombinedOutput(); err != nil {
		t.Fatalf("slotkvctl bootstrap: %v\n%s", err, out)
	}
	start := func(name string, args ...string) *proctest.Proc {
		args = append(append([]string{"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--token", token}, s.cluster.EtcdArgs()...), args...)
		return proctest.Start(t, proctest.Bin(t, name), args...)
	}
	s.router = start("slotkv-router")
	// Small batches, so a stream's progress bar moves in many steps.
	s.migrator = start("slotkv-migrator", "--batch-records", "40")
	s.downloader = start("slotkv-downloader", "--data-dir", filepath.Join(t.TempDir(), "downloader"), "--allowed-prefixes", "http://127.0.0.1:")
	s.console = start("slotkv-console",
		"--router", s.router.GRPC, "--migrator", s.migrator.GRPC, "--downloader", s.downloader.GRPC,
		"--router-http", s.router.HTTP, "--migrator-http", s.migrator.HTTP, "--downloader-http", s.downloader.HTTP,
		"--sample-interval", "500ms")
	s.url = "http://" + s.console.HTTP
	return s
}

// kv is a data client of the router.
func (s *stack) kv(t *testing.T) routerv1.KVServiceClient {
	t.Helper()
	cc, err := dial.New(s.router.GRPC, dial.Options{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return routerv1.NewKVServiceClient(cc)
}

// load writes n keys of size bytes through the router.
func (s *stack) load(t *testing.T, n, size int) {
	t.Helper()
	kv := s.kv(t)
	val := strings.Repeat("v", size)
	for i := 0; i < n; i += 500 {
		req := &routerv1.MultiPutRequest{}
		for j := i; j < min(n, i+500); j++ {
			req.Entries = append(req.Entries, &routerv1.KeyValue{Key: fmt.Sprintf("key:%06d", j), Data: &routerv1.KeyValue_Text{Text: val}})
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		_, err := kv.MultiPut(ctx, req)
		cancel()
		if err != nil {
			t.Fatalf("load: %v", err)
		}
	}
}

// dataset builds a dataset with slotkv-dataset and serves it with
// faulthttp, as the e2e bulk-load tests do; it returns the manifest URL.
func dataset(t *testing.T, n int) string {
	t.Helper()
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.jsonl"), filepath.Join(dir, "dataset")
	tool := proctest.Bin(t, "slotkv-dataset")
	for _, args := range [][]string{
		{"gen", "--records", fmt.Sprint(n), "--value-size", "100", "--out", in},
		{"build", "--input", in, "--out", out, "--target-file-size", "128KiB"},
	} {
		if b, err := exec.Command(tool, args...).CombinedOutput(); err != nil {
			t.Fatalf("slotkv-dataset %v: %v\n%s", args, err, b)
		}
	}
	p := proctest.Start(t, proctest.Bin(t, "faulthttp"), "--dir", out, "--addr", "127.0.0.1:0")
	return "http://" + p.HTTP + "/manifest.json"
}

// chromium is the browser to drive: $SLOTKV_CHROMIUM or chromium on PATH.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("SLOTKV_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no chromium on PATH: install Debian's chromium (make test-browser does) or set SLOTKV_CHROMIUM")
	return ""
}

// browser starts a headless Chromium with its own profile directory.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(width, height),
		// Root in a container has no user namespace for the sandbox.
		chromedp.NoSandbox,
		chromedp.Flag("disable-dev-shm-usage", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancelCtx()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(width, height)); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// get runs one browser action with a time bound and returns its value,
// failing the test on error.
func get[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	v, err := chromedp.Run(tctx, a)
	if err != nil {
		loc, _ := chromedp.Run(ctx, chromedp.Location())
		t.Fatalf("%s (at %s): %v", what, loc, err)
	}
	return v
}

// run runs browser actions in order.
func run(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	get(t, ctx, what, chromedp.Steps(steps...))
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	return get(t, ctx, "evaluate "+expr, chromedp.Evaluate[T](expr))
}

// poll waits until the expression is true in the page.
func poll(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	get(t, ctx, "waiting for "+what, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(2*time.Minute)))
}

// shots saves and checks the screenshots.
type shots struct {
	dir   string
	saved []string
}

func newShots(t *testing.T) *shots {
	t.Helper()
	root, err := proctest.WorkspaceRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, ".data", "screenshots")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return &shots{dir: dir}
}

// take captures the viewport as name.png and checks the file: a PNG of
// the viewport's size with more than one color.
func (s *shots) take(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	b := get(t, ctx, "screenshot "+name, chromedp.CaptureScreenshot())
	path := filepath.Join(s.dir, name+".png")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("screenshot %s is not a PNG: %v", path, err)
	}
	if got := img.Bounds().Size(); got != image.Pt(width, height) {
		t.Errorf("screenshot %s is %v, want %dx%d", path, got, width, height)
	}
	if n := colors(img); n < 8 {
		t.Errorf("screenshot %s has %d colors: blank", path, n)
	}
	s.saved = append(s.saved, path)
	t.Logf("screenshot %s", path)
}

// colors counts the distinct colors of img (up to 1000).
func colors(img image.Image) int {
	seen := map[[4]uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 3 {
		for x := b.Min.X; x < b.Max.X; x += 3 {
			r, g, bl, a := img.At(x, y).RGBA()
			seen[[4]uint32{r, g, bl, a}] = true
			if len(seen) >= 1000 {
				return len(seen)
			}
		}
	}
	return len(seen)
}

// slotOwnerJS is the node the slot bar shows as the owner of slot s.
func slotOwnerJS(s int) string {
	return fmt.Sprintf(`(() => { const r = [...document.querySelectorAll("#slot-owners rect.owner")].find((r) => +r.dataset.start <= %d && %d <= +r.dataset.end); return r ? r.dataset.node : ""; })()`, s, s)
}

// The console in Chromium: log in, see the cluster, run a migration from
// the form and watch it, see a bad range refused with the migrator's
// message, run a bulk load, see the traffic.
func TestConsoleInChromium(t *testing.T) {
	if os.Getenv("SLOTKV_BROWSER") == "" {
		t.Skip("the browser test runs with SLOTKV_BROWSER=1 (make test-browser)")
	}
	t.Parallel()
	s := startStack(t)
	s.load(t, 3000, 512)
	manifest := dataset(t, 6000)
	ctx := browser(t)
	sh := newShots(t)

	// Login: the token goes in a form, never in the URL.
	run(t, ctx, "open the console", chromedp.Navigate(s.url+"/"), chromedp.WaitVisible(chromedp.ID("token")))
	if loc := eval[string](t, ctx, "location.pathname"); loc != "/login" {
		t.Fatalf("without a session the console shows %s, want /login", loc)
	}
	sh.take(t, ctx, "login")
	run(t, ctx, "log in", chromedp.SendKeys(chromedp.ID("token"), token), chromedp.Click(chromedp.ID("login")), chromedp.WaitVisible(chromedp.ID("slotbar")))
	if loc := eval[string](t, ctx, "location.href"); strings.Contains(loc, token) {
		t.Fatalf("the token is in the URL %s", loc)
	}
	if ck := eval[string](t, ctx, "document.cookie"); strings.Contains(ck, "slotkv_console_session") || strings.Contains(ck, token) {
		t.Fatalf("the session is readable by scripts: %q", ck)
	}

	// Cluster: 3 healthy nodes and the slot bar.
	poll(t, ctx, "3 healthy nodes", `document.querySelectorAll("#nodes tr[data-health=ok]").length === 3`)
	poll(t, ctx, "the slot bar", `document.querySelectorAll("#slot-owners rect.owner").length >= 3`)
	if got := eval[string](t, ctx, slotOwnerJS(0)); got != "n1" {
		t.Fatalf("slot 0 shows owner %q, want n1", got)
	}
	if n := eval[int](t, ctx, `document.querySelectorAll("#links a").length`); n < 6 {
		t.Errorf("%d API doc links, want router, migrator, downloader and 3 nodes", n)
	}
	sh.take(t, ctx, "cluster")

	// A bad range: the page shows the migrator's own message.
	run(t, ctx, "open migrations", chromedp.Navigate(s.url+"/migrations"), chromedp.WaitVisible(chromedp.ID("mig-form")))
	poll(t, ctx, "node choices", `document.querySelectorAll("#mig-source option").length === 3`)
	run(t, ctx, "submit a bad range",
		chromedp.SetValue(chromedp.ID("mig-source"), "n1"), chromedp.SetValue(chromedp.ID("mig-destination"), "n2"),
		chromedp.SetValue(chromedp.ID("mig-ranges"), "5000-100"), chromedp.Click(chromedp.ID("mig-start")))
	poll(t, ctx, "the error", `!document.querySelector("#mig-error").hidden`)
	shown := eval[string](t, ctx, `document.querySelector("#mig-error").textContent`)
	cc, err := dial.New(s.migrator.GRPC, dial.Options{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	mctx, mcancel := context.WithTimeout(context.Background(), 10*time.Second)
	_, err = migratorv1.NewMigratorServiceClient(cc).StartMigration(mctx, &migratorv1.StartMigrationRequest{SourceNodeId: "n1", DestinationNodeId: "n2", Ranges: "5000-100"})
	mcancel()
	if err == nil || shown != status.Convert(err).Message() {
		t.Fatalf("the page says %q; the migrator says %v", shown, err)
	}
	sh.take(t, ctx, "migration-error")

	// A migration from the form: its stream bars advance, then it ends.
	run(t, ctx, "start a migration",
		chromedp.SetValue(chromedp.ID("mig-ranges"), "0-2000"), chromedp.SetValue(chromedp.ID("mig-parallelism"), "2"),
		chromedp.SetValue(chromedp.ID("mig-rate"), "24KiB"), chromedp.Click(chromedp.ID("mig-start")))
	poll(t, ctx, "the job's card", `document.querySelector("#mig-error").hidden && document.querySelectorAll("#migrations section.migration").length === 1`)
	const streamBars = `[...document.querySelectorAll("#migrations section.migration tr.stream .bar")].map((b) => +b.getAttribute("aria-valuenow"))`
	var partial []float64
	deadline := time.Now().Add(2 * time.Minute)
	for partial == nil {
		vals := eval[[]float64](t, ctx, streamBars)
		for _, v := range vals {
			if v > 0 && v < 100 {
				partial = vals
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no stream bar between 0 and 100 in 2 minutes (last %v)", vals)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("stream bars in progress: %v", partial)
	sh.take(t, ctx, "migrations")
	// Faster from the page; the bars keep advancing to the end.
	run(t, ctx, "set the rate", chromedp.SetValue(chromedp.CSS("#migrations .rate-input"), "2MiB"), chromedp.Click(chromedp.CSS("#migrations .set-rate")))
	poll(t, ctx, "the new rate", `document.querySelector("#migrations .rate-limit").textContent === "2.0 MiB/s"`)
	poll(t, ctx, "the job done", `document.querySelector("#migrations section.migration").dataset.phase === "SUCCEEDED"`)
	final := eval[[]float64](t, ctx, streamBars)
	if len(final) != 2 || final[0] != 100 || final[1] != 100 {
		t.Errorf("stream bars at the end: %v, want [100 100]", final)
	}
	for i, v := range partial {
		if final[i] < v {
			t.Errorf("stream %d went back from %v to %v", i, v, final[i])
		}
	}
	sh.take(t, ctx, "migrations-done")

	// Cancel from the page.
	run(t, ctx, "start a slow migration",
		chromedp.SetValue(chromedp.ID("mig-source"), "n3"), chromedp.SetValue(chromedp.ID("mig-destination"), "n1"),
		chromedp.SetValue(chromedp.ID("mig-ranges"), "12000-16383"), chromedp.SetValue(chromedp.ID("mig-rate"), "4KiB"),
		chromedp.Click(chromedp.ID("mig-start")))
	poll(t, ctx, "the slow job running", `(() => { const c = document.querySelector("#migrations section.migration"); return c && c.dataset.phase === "SNAPSHOT"; })()`)
	// Meanwhile the slot bar marks its slots on both nodes.
	run(t, ctx, "open the cluster page", chromedp.Navigate(s.url+"/"), chromedp.WaitVisible(chromedp.ID("slotbar")))
	poll(t, ctx, "migrating and importing marks", `document.querySelector('#slot-marks rect.migrating[data-node=n3][data-start="12000"]') && document.querySelector('#slot-marks rect.importing[data-node=n1][data-start="12000"]')`)
	sh.take(t, ctx, "cluster-migrating")
	run(t, ctx, "back to migrations", chromedp.Navigate(s.url+"/migrations"), chromedp.WaitVisible(chromedp.ID("mig-form")))
	poll(t, ctx, "the slow job's card", `(() => { const c = document.querySelector("#migrations section.migration"); return c && c.dataset.phase === "SNAPSHOT"; })()`)
	run(t, ctx, "cancel", chromedp.Click(chromedp.CSS("#migrations section.migration .cancel")))
	poll(t, ctx, "the job canceled", `document.querySelector("#migrations section.migration").dataset.phase === "CANCELED"`)

	// The slot bar shows the new owner.
	run(t, ctx, "open the cluster page", chromedp.Navigate(s.url+"/"), chromedp.WaitVisible(chromedp.ID("slotbar")))
	poll(t, ctx, "slot 0 on n2, no marks left", slotOwnerJS(0)+` === "n2" && document.querySelectorAll("#slot-marks rect").length === 0`)
	if got := eval[string](t, ctx, slotOwnerJS(2001)); got != "n1" {
		t.Errorf("slot 2001 shows owner %q, want n1", got)
	}
	sh.take(t, ctx, "cluster-after-migration")

	// A bulk load from a manifest URL, to the end.
	run(t, ctx, "start a bulk load", chromedp.Navigate(s.url+"/bulkloads"), chromedp.WaitVisible(chromedp.ID("bl-form")),
		chromedp.SetValue(chromedp.ID("bl-url"), manifest), chromedp.Click(chromedp.ID("bl-start")))
	poll(t, ctx, "the bulk load done", `(() => { const c = document.querySelector("#bulkloads section.bulkload"); return c && ["SUCCEEDED", "FAILED", "CANCELED"].includes(c.dataset.state); })()`)
	if st := eval[string](t, ctx, `document.querySelector("#bulkloads section.bulkload").dataset.state`); st != "SUCCEEDED" {
		t.Fatalf("bulk load ended %s: %s", st, eval[string](t, ctx, `document.querySelector("#bulkloads section.bulkload").textContent`))
	}
	files := eval[[]string](t, ctx, `[...document.querySelectorAll("#bulkloads tr.file")].map((r) => r.dataset.state)`)
	if len(files) < 2 {
		t.Errorf("files %v: want several", files)
	}
	for _, f := range files {
		if f != "SUCCEEDED" {
			t.Errorf("file states %v: want every file SUCCEEDED", files)
			break
		}
	}
	sh.take(t, ctx, "bulkloads")

	// Traffic: writes go on while the page draws them.
	kv := s.kv(t)
	tctx, stopTraffic := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; tctx.Err() == nil; i++ {
			cctx, cancel := context.WithTimeout(tctx, 5*time.Second)
			_, _ = kv.Put(cctx, &routerv1.PutRequest{Key: fmt.Sprintf("traffic:%d", i%5000), Data: &routerv1.PutRequest_Text{Text: "x"}})
			cancel()
		}
	})
	defer func() {
		stopTraffic()
		wg.Wait()
	}()
	run(t, ctx, "open traffic", chromedp.Navigate(s.url+"/traffic"))
	poll(t, ctx, "a rate and a latency chart per node", `(() => {
		const c = [...document.querySelectorAll("#traffic section.chart")];
		return c.length === 3 && c.every((s) => +s.querySelector("svg[data-key=rate]").dataset.points >= 6 && +s.querySelector("svg[data-key=latency_ms]").dataset.points >= 3);
	})()`)
	sh.take(t, ctx, "traffic")

	// A stopped node: its lease is gone from etcd, and the cluster page
	// says it is dead, on its row and above the slot bar.
	stopTraffic()
	wg.Wait()
	if err := s.cluster.Node(t, "n2").Proc.Stop(); err != nil {
		t.Fatalf("stop n2: %v", err)
	}
	run(t, ctx, "open the cluster page", chromedp.Navigate(s.url+"/"), chromedp.WaitVisible(chromedp.ID("slotbar")))
	poll(t, ctx, "n2 dead", `!!document.querySelector("#nodes tr[data-node=n2][data-health=dead]") && !document.querySelector("#dead").hidden && !!document.querySelector("#dead li[data-node=n2]") && !!document.querySelector("#slot-owners rect.owner.dead[data-node=n2]")`)
	if n := eval[int](t, ctx, `document.querySelectorAll("#nodes tr[data-health=ok]").length`); n != 2 {
		t.Errorf("%d healthy nodes with n2 stopped, want 2", n)
	}
	sh.take(t, ctx, "cluster-dead-node")

	t.Logf("screenshots:\n%s", strings.Join(sh.saved, "\n"))
}
