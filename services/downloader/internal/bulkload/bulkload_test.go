package bulkload

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/slotkv/slotkv/pkg/rpcerr"
)

func TestCheckURL(t *testing.T) {
	t.Parallel()
	m := &Manager{opts: Config{AllowedPrefixes: []string{"http://127.0.0.1", "https://data.example.com/sets/"}}}
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"http://127.0.0.1/ds/manifest.json", true},
		{"http://127.0.0.1:8080/ds/manifest.json", true},
		{"http://127.0.0.1", true},
		{"https://data.example.com/sets/a/manifest.json", true},
		{"http://127.0.0.1.evil.example/manifest.json", false},
		{"http://127.0.0.10/manifest.json", false},
		{"https://data.example.com/setsx/manifest.json", false},
		{"https://data.example.com/sets/../secret/manifest.json", false},
		{"http://user:pw@127.0.0.1/m.json", false},
		{"file:///tmp/m.json", false},
		{"gopher://127.0.0.1/m.json", false},
		{"", false},
	} {
		_, err := m.checkURL("manifest_url", tc.url)
		if (err == nil) != tc.ok {
			t.Errorf("checkURL(%q) = %v, want ok=%v", tc.url, err, tc.ok)
		}
		var fe *rpcerr.FieldError
		if err != nil && (!errors.As(err, &fe) || fe.Field != "manifest_url") {
			t.Errorf("checkURL(%q): %v is not a manifest_url field error", tc.url, err)
		}
	}
	port := &Manager{opts: Config{AllowedPrefixes: []string{"http://127.0.0.1:"}}}
	if _, err := port.checkURL("manifest_url", "http://127.0.0.1:4567/ds/manifest.json"); err != nil {
		t.Errorf("prefix ending in ':' refused a URL: %v", err)
	}
	none := &Manager{}
	if _, err := none.checkURL("manifest_url", "http://127.0.0.1/m.json"); err == nil {
		t.Error("no allowed prefix configured, yet a URL was allowed")
	}
	files := &Manager{opts: Config{AllowFileURLs: true, AllowedPrefixes: []string{"file:///srv/ds/"}}}
	if _, err := files.checkURL("manifest_url", "file:///srv/ds/a/manifest.json"); err != nil {
		t.Errorf("file URL under an allowed prefix refused: %v", err)
	}
	if _, err := files.checkURL("manifest_url", "file:///etc/manifest.json"); err == nil {
		t.Error("file URL outside the allowed prefixes allowed")
	}
}

func TestLocalPath(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"../x", "a/b", "/abs", "..", `a\b`} {
		if _, err := localPath("/data/jobs/j", name); err == nil {
			t.Errorf("localPath(%q) allowed", name)
		}
	}
	if p, err := localPath("/data/jobs/j", "part-0.skv"); err != nil || p != "/data/jobs/j/part-0.skv" {
		t.Errorf("localPath: %q %v", p, err)
	}
}

func TestSchedulerCaps(t *testing.T) {
	t.Parallel()
	s := newScheduler(2, 1)
	ctx := context.Background()
	r1, err := s.acquire(ctx, []string{"n1"})
	if err != nil {
		t.Fatal(err)
	}
	// n1 is at its per-node cap: a second n1 download waits, an n2 one
	// does not.
	got := make(chan func(), 1)
	go func() {
		r, err := s.acquire(ctx, []string{"n1", "n2"})
		if err == nil {
			got <- r
		}
	}()
	r2, err := s.acquire(ctx, []string{"n3"})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-got:
		t.Fatal("per-node cap not respected")
	default:
	}
	// Global cap 2 reached: raising the per-node cap is not enough.
	s.setCaps(2, 5)
	select {
	case <-got:
		t.Fatal("global cap not respected")
	default:
	}
	r2()
	r3 := <-got // granted once a global slot frees
	if s.active != 2 {
		t.Errorf("active %d", s.active)
	}
	// A canceled waiter leaves the queue.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.acquire(cctx, []string{"n9"}); err == nil {
		t.Error("acquire with a canceled context succeeded")
	}
	r1()
	r3()
	r3() // idempotent
	if s.active != 0 || len(s.perNode) != 0 || len(s.waiters) != 0 {
		t.Errorf("not released: active %d perNode %v waiters %d", s.active, s.perNode, len(s.waiters))
	}
}

func TestParseContentRange(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in           string
		start, total int64
		ok           bool
	}{
		{"bytes 100-199/200", 100, 200, true},
		{"bytes 0-9/*", 0, -1, true},
		{"bytes */200", 0, 0, false},
		{"items 1-2/3", 0, 0, false},
		{"", 0, 0, false},
	} {
		s, tot, ok := parseContentRange(tc.in)
		if ok != tc.ok || (ok && (s != tc.start || tot != tc.total)) {
			t.Errorf("parseContentRange(%q) = %d %d %v", tc.in, s, tot, ok)
		}
	}
}

func TestMeter(t *testing.T) {
	t.Parallel()
	var m meter
	m.total = 1000
	now := time.Unix(0, 0)
	m.tick(now)
	for i := 1; i <= 30; i++ {
		m.done = uint64(i * 10)
		m.tick(now.Add(time.Duration(i) * time.Second))
	}
	if m.rate < 9 || m.rate > 10.01 {
		t.Errorf("rate %f, want about 10/s", m.rate)
	}
	eta, ok := m.eta()
	if !ok || eta < 65*time.Second || eta > 80*time.Second {
		t.Errorf("eta %s %v, want about 70s", eta, ok)
	}
}

func TestStateRules(t *testing.T) {
	t.Parallel()
	for st, want := range map[State][3]bool{ // running, final, ended
		StatePending: {true, false, false}, StateDownloading: {true, false, false},
		StateDownloaded: {true, false, false}, StateIngesting: {true, false, false},
		StateSucceeded: {false, true, true}, StateFailed: {false, false, true},
		StatePaused: {false, false, false}, StateCanceled: {false, true, true},
	} {
		if got := [3]bool{st.Running(), st.Final(), st.Ended()}; got != want {
			t.Errorf("%s: running/final/ended %v, want %v", st, got, want)
		}
	}
}
