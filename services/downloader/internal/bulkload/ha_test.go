package bulkload

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/slotkv/slotkv/pkg/etcdtest"
	"github.com/slotkv/slotkv/pkg/jobstore"
	"github.com/slotkv/slotkv/pkg/leader"
	"github.com/slotkv/slotkv/pkg/route"
	"github.com/slotkv/slotkv/pkg/topostore"
)

// TestDeposedLeaderWritesRefused: the records and settings of a replica
// are written only during its term. A write of a deposed leader that has
// not noticed yet (its term's context still live, the election key gone)
// is refused by etcd's comparison and leaves the record as it was; once
// the term's context has ended, no write is even tried.
func TestDeposedLeaderWritesRefused(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t)
	cli := e.Client(t)
	ts, err := topostore.New(cli, topostore.Options{Prefix: "/ha/"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := route.New(route.Options{Store: ts, Dial: func(addr string) (*grpc.ClientConn, error) {
		return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	m, err := Open(Config{DataDir: t.TempDir(), Router: r, AllowedPrefixes: []string{"http://127.0.0.1"}, Logger: slog.New(slog.DiscardHandler),
		Etcd: &EtcdConfig{Client: cli, JobsPrefix: "/ha/jobs/bulkloads/", SettingsKey: "/ha/downloader/settings"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })

	// Not leading: writes are refused before anything is tried.
	if _, err := m.Start(t.Context(), "http://127.0.0.1/ds/manifest.json", "a"); !errors.Is(err, ErrNotLeading) {
		t.Fatalf("Start without a term: %v, want ErrNotLeading", err)
	}
	if err := m.st.Put("x", &jobRecord{ID: "x"}); !errors.Is(err, jobstore.ErrNotLeader) {
		t.Fatalf("Put without a term: %v, want ErrNotLeader", err)
	}

	// Lead a term and write a record in it.
	el, err := leader.New(cli, leader.Options{Prefix: "/ha/", Role: "downloader", Value: "a", TTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	terms := make(chan leader.Term, 4)
	ectx, stopA := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		_ = el.Run(ectx, func(ctx context.Context, tm leader.Term) error {
			terms <- tm
			return m.Lead(ctx, tm)
		})
	}()
	t.Cleanup(func() { stopA(); <-ran })
	var term leader.Term
	select {
	case term = <-terms:
	case <-time.After(30 * time.Second):
		t.Fatal("no term within 30s")
	}
	waitFor(t, "the Manager to lead", m.leading)
	rec := &jobRecord{ID: "j1", ManifestURL: "http://x/1", State: StatePaused}
	if err := m.st.Put("j1", rec); err != nil {
		t.Fatalf("Put during the term: %v", err)
	}
	if _, err := m.UpdateSettings(SettingsUpdate{MaxDownloads: new(7)}); err != nil {
		t.Fatalf("UpdateSettings during the term: %v", err)
	}

	// The term ends (this replica resigns, another may lead).
	stopA()
	<-ran
	waitFor(t, "the Manager to follow", func() bool { return !m.leading() })

	// A deposed leader that still believes in its term: etcd refuses.
	m.ha.term.Store(&termState{t: term, ctx: context.Background()})
	stale := &jobRecord{ID: "j1", ManifestURL: "http://x/1", State: StateCanceled}
	if err := m.st.Put("j1", stale); !errors.Is(err, jobstore.ErrNotLeader) {
		t.Fatalf("Put of a deposed term: %v, want ErrNotLeader", err)
	}
	if err := m.ha.saveSettings(savedSettings{MaxDownloads: &savedSetting{Value: 1, Configured: 4}}); !errors.Is(err, ErrNotLeading) {
		t.Fatalf("saving the settings in a deposed term: %v, want ErrNotLeading", err)
	}
	// Its requests are refused, not answered as if they had happened.
	m.mu.Lock()
	m.jobs["j1"] = newJob(m, &jobRecord{ID: "j1", ManifestURL: "http://x/1", State: StatePaused})
	m.lead.Store(true)
	m.mu.Unlock()
	if _, err := m.Cancel(t.Context(), "j1"); !errors.Is(err, ErrNotLeading) {
		t.Fatalf("Cancel in a deposed term: %v, want ErrNotLeading", err)
	}
	m.mu.Lock()
	m.jobs["j1"] = newJob(m, &jobRecord{ID: "j1", ManifestURL: "http://x/1", State: StatePaused})
	m.mu.Unlock()
	if _, err := m.Resume(t.Context(), "j1"); !errors.Is(err, ErrNotLeading) {
		t.Fatalf("Resume in a deposed term: %v, want ErrNotLeading", err)
	}
	m.mu.Lock()
	m.jobs = map[string]*job{}
	m.lead.Store(false)
	m.mu.Unlock()
	for name, call := range map[string]func() error{
		"Pause":  func() error { _, err := m.Pause(t.Context(), "j1"); return err },
		"Resume": func() error { _, err := m.Resume(t.Context(), "j1"); return err },
		"Cancel": func() error { _, err := m.Cancel(t.Context(), "j1"); return err },
	} {
		if err := call(); !errors.Is(err, ErrNotLeading) {
			t.Errorf("%s at a follower: %v, want ErrNotLeading", name, err)
		}
	}

	// And one whose term's context has ended tries nothing.
	dead, cancel := context.WithCancel(context.Background())
	cancel()
	m.ha.term.Store(&termState{t: term, ctx: dead})
	if err := m.st.Put("j1", stale); !errors.Is(err, jobstore.ErrNotLeader) {
		t.Fatalf("Put after the term's context ended: %v, want ErrNotLeader", err)
	}
	m.ha.term.Store(nil)

	// Followers read what the term wrote, not the refused writes.
	st, err := m.Get("j1")
	if err != nil {
		t.Fatal(err)
	}
	if st.State != StatePaused {
		t.Fatalf("j1 is %s, want PAUSED (the deposed writes must not land)", st.State)
	}
	list, err := m.List()
	if err != nil || len(list) != 1 || list[0].ID != "j1" {
		t.Fatalf("List: %v %v", list, err)
	}
	set, err := m.Settings(t.Context())
	if err != nil || set.MaxDownloads != 7 {
		t.Fatalf("Settings at a follower: %+v %v, want max_downloads 7", set, err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
}
