package migrate

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	migratorv1 "github.com/slotkv/slotkv/gen/slotkv/migrator/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/etcdtest"
	"github.com/slotkv/slotkv/pkg/route"
	"github.com/slotkv/slotkv/pkg/testcluster"
)

const testToken = "migrate-secret"

// callLog records the RPCs the migrator's job connections make, by node
// address and method (a client interceptor on the real connections).
type callLog struct {
	mu    sync.Mutex
	calls map[string][]string // address -> full method names
}

func (l *callLog) interceptor(addr string) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		l.mu.Lock()
		l.calls[addr] = append(l.calls[addr], method)
		l.mu.Unlock()
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

// count is how many calls of method (its last path element) went to addr.
func (l *callLog) count(addr, method string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.calls[addr] {
		if strings.HasSuffix(m, "/"+method) {
			n++
		}
	}
	return n
}

// openManager opens a Manager on dir against the cluster, as the
// migrator service does (a real route.Router, real gRPC connections), and
// closes it at the end of the test unless closed before.
func openManager(t *testing.T, c *testcluster.Cluster, dir string, calls *callLog, adjust func(*Config)) *Manager {
	t.Helper()
	dialer := func(addr string) (*grpc.ClientConn, error) {
		var opts []grpc.DialOption
		if calls != nil {
			opts = append(opts, grpc.WithChainUnaryInterceptor(calls.interceptor(addr)))
		}
		return dial.New(addr, dial.Options{Token: c.Token, DialOptions: opts})
	}
	rt, err := route.New(route.Options{Store: c.Store(), Dial: func(addr string) (*grpc.ClientConn, error) {
		return dial.New(addr, dial.Options{Token: c.Token})
	}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Close() })
	cfg := Config{
		Router: rt, Dial: dialer, Topo: c.Store(), Etcd: c.Etcd().Client(t), Fence: noFence,
		RollbackRetryInterval: 100 * time.Millisecond,
		ProgressInterval:      time.Second,
		Logger:                slog.New(slog.DiscardHandler),
	}
	if adjust != nil {
		adjust(&cfg)
	}
	m, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { _ = m.Close() }) })
	return m
}

func getJob(t *testing.T, m *Manager, id string) *migratorv1.Migration {
	t.Helper()
	resp, err := m.GetMigration(t.Context(), &migratorv1.GetMigrationRequest{JobId: id})
	if err != nil {
		t.Fatalf("GetMigration(%s): %v", id, err)
	}
	return resp.GetMigration()
}

// waitEnded waits until the job has ended and is rolled back.
func waitEnded(t *testing.T, m *Manager, id string) *migratorv1.Migration {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		m.mu.Lock()
		j := m.jobs[id]
		m.mu.Unlock()
		if j != nil && !j.unfinished() {
			return getJob(t, m, id)
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
	t.Fatalf("job %s did not end within 60s", id)
	return nil
}

// checkNodesUntouched asserts that no node holds a slot in another state
// than OWNED, nor a migration.
func checkNodesUntouched(t *testing.T, c *testcluster.Cluster) {
	t.Helper()
	for _, n := range c.Nodes {
		info, err := n.NodeClient().GetNodeInfo(t.Context(), &storagev1.GetNodeInfoRequest{})
		if err != nil {
			t.Fatalf("GetNodeInfo on %s: %v", n.ID, err)
		}
		for _, s := range info.GetSlotStates() {
			if s.GetState() != clusterv1.SlotState_SLOT_STATE_OWNED {
				t.Errorf("node %s: slots %d-%d are %s (job %q)", n.ID, s.GetRange().GetStart(), s.GetRange().GetEnd(), s.GetState(), s.GetJobId())
			}
		}
		lm, err := storagev1.NewMigrationServiceClient(n.Conn).ListMigrations(t.Context(), &storagev1.ListMigrationsRequest{})
		if err != nil {
			t.Fatalf("ListMigrations on %s: %v", n.ID, err)
		}
		if len(lm.GetMigrations()) != 0 {
			t.Errorf("node %s holds migrations %v", n.ID, lm.GetMigrations())
		}
	}
}

// TestIntentWriteFailureStopsTheJob (issue 12): the "begun" intent record
// is written before BeginMigration reaches a node. When the job store
// refuses that write, the job fails with an error saying the intent could
// not be recorded, and the node concerned never hears of the job: with
// the destination's intent failing no node gets any call; with the
// source's failing, the destination (begun first) is rolled back and the
// source gets no call. No slot is left MIGRATING or IMPORTING, and the
// record on disk, read by a restarted manager, agrees.
func TestIntentWriteFailureStopsTheJob(t *testing.T) {
	c := testcluster.Start(t, 2, testcluster.Options{Token: testToken, Etcd: etcdtest.Start(t)})
	c.Bootstrap(t)
	src, dst := c.Node(t, "n1"), c.Node(t, "n2")
	injected := errors.New("injected: job store write refused")
	for _, tc := range []struct {
		name   string
		role   string
		fails  func(r *record) bool
		dstHit bool // BeginMigration reached the destination
	}{
		{"destination intent", "destination n2", func(r *record) bool { return r.BegunDestination }, false},
		{"source intent", "source n1", func(r *record) bool { return r.BegunSource }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			calls := &callLog{calls: map[string][]string{}}
			m := openManager(t, c, dir, calls, func(cfg *Config) {})
			var refused sync.Once
			hit := false
			m.setPutHook(func(r *record) error {
				if tc.fails(r) {
					refused.Do(func() { hit = true })
					return injected
				}
				return nil
			})
			id := "intent-" + strings.ReplaceAll(tc.name, " ", "-")
			if _, err := m.StartMigration(t.Context(), &migratorv1.StartMigrationRequest{
				JobId: id, SourceNodeId: "n1", DestinationNodeId: "n2", Ranges: "0-99"}); err != nil {
				t.Fatalf("StartMigration: %v", err)
			}
			j := waitEnded(t, m, id)
			if !hit {
				t.Fatal("the intent write was never attempted")
			}
			if j.GetPhase() != migratorv1.Phase_PHASE_FAILED || !strings.Contains(j.GetError(), "writing the intent record (the job begins on "+tc.role+") failed") ||
				!strings.Contains(j.GetError(), injected.Error()) {
				t.Fatalf("job: %s %q, want FAILED saying the intent for %s could not be recorded (%q)", j.GetPhase(), j.GetError(), tc.role, injected)
			}
			if n := calls.count(src.Proc.GRPC, "BeginMigration"); n != 0 {
				t.Errorf("source got %d BeginMigration calls, want 0", n)
			}
			if n := calls.count(src.Proc.GRPC, "EndMigration"); n != 0 {
				t.Errorf("source got %d EndMigration calls for a job it never heard of", n)
			}
			wantDst := 0
			if tc.dstHit {
				wantDst = 1
			}
			if n := calls.count(dst.Proc.GRPC, "BeginMigration"); n != wantDst {
				t.Errorf("destination got %d BeginMigration calls, want %d", n, wantDst)
			}
			if n := calls.count(dst.Proc.GRPC, "EndMigration"); n != wantDst {
				t.Errorf("destination got %d EndMigration calls, want %d (its rollback)", n, wantDst)
			}
			checkNodesUntouched(t, c)

			// The record on disk says the same to a restarted manager.
			m.setPutHook(nil)
			_ = m.Close()
			m2 := openManager(t, c, dir, nil, nil)
			j2 := getJob(t, m2, id)
			if j2.GetPhase() != migratorv1.Phase_PHASE_FAILED || j2.GetError() != j.GetError() {
				t.Errorf("after a restart: %s %q, want FAILED %q", j2.GetPhase(), j2.GetError(), j.GetError())
			}
			m2.mu.Lock()
			r := *m2.jobs[id].rec
			m2.mu.Unlock()
			if r.BegunSource || r.BegunDestination || r.RollbackPending {
				t.Errorf("record after a restart: begun source %v destination %v, rollback pending %v", r.BegunSource, r.BegunDestination, r.RollbackPending)
			}
		})
	}
}

// TestUpdateMigrationSurvivesRestart (issue 12): a rate and batch size set
// with UpdateMigration are saved before they apply; a restarted migrator
// (same data directory) reports them. A save that fails changes nothing
// and says so.
func TestUpdateMigrationSurvivesRestart(t *testing.T) {
	c := testcluster.Start(t, 2, testcluster.Options{Token: testToken, Etcd: etcdtest.Start(t)})
	c.Bootstrap(t)
	dir := t.TempDir()
	hold := func(cfg *Config) {
		cfg.PauseBeforePhase = []migratorv1.Phase{migratorv1.Phase_PHASE_PREPARE}
		cfg.PauseTimeout = time.Minute
	}
	m := openManager(t, c, dir, nil, hold)
	if _, err := m.StartMigration(t.Context(), &migratorv1.StartMigrationRequest{
		JobId: "rate", SourceNodeId: "n1", DestinationNodeId: "n2", Ranges: "0-99", RateBytesPerSecond: 1 << 20}); err != nil {
		t.Fatalf("StartMigration: %v", err)
	}
	ur, err := m.UpdateMigration(t.Context(), &migratorv1.UpdateMigrationRequest{JobId: "rate",
		RateBytesPerSecond: proto.Uint64(12345), BatchRecords: proto.Uint32(77)})
	if err != nil {
		t.Fatalf("UpdateMigration: %v", err)
	}
	if ur.GetMigration().GetRateBytesPerSecond() != 12345 || ur.GetMigration().GetBatchRecords() != 77 {
		t.Fatalf("UpdateMigration answered rate %d batch %d", ur.GetMigration().GetRateBytesPerSecond(), ur.GetMigration().GetBatchRecords())
	}

	// A save that fails: refused, nothing changes (in memory either).
	m.setPutHook(func(*record) error { return errors.New("injected: disk full") })
	_, err = m.UpdateMigration(t.Context(), &migratorv1.UpdateMigrationRequest{JobId: "rate", RateBytesPerSecond: proto.Uint64(999)})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "rate_bytes_per_second") || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("UpdateMigration with the store failing: %v, want Unavailable naming the field and the cause", err)
	}
	m.setPutHook(nil)
	m.mu.Lock()
	j := m.jobs["rate"]
	m.mu.Unlock()
	if got := getJob(t, m, "rate").GetRateBytesPerSecond(); got != 12345 || float64(j.limiter.Limit()) != 12345 {
		t.Errorf("after a refused update: rate %d, limiter %v, want 12345", got, j.limiter.Limit())
	}

	_ = m.Close()
	m2 := openManager(t, c, dir, nil, nil)
	j2 := getJob(t, m2, "rate")
	if j2.GetRateBytesPerSecond() != 12345 || j2.GetBatchRecords() != 77 {
		t.Errorf("after a restart: rate %d batch %d, want 12345 and 77 (set through the API)", j2.GetRateBytesPerSecond(), j2.GetBatchRecords())
	}
	waitEnded(t, m2, "rate") // rolled back: the restart interrupted it
	checkNodesUntouched(t, c)
}

// TestMaxRunningJobs (issue 12): beyond MaxRunningJobs a new migration is
// refused with ResourceExhausted naming the limit, and is not recorded;
// once a job ends there is room again.
func TestMaxRunningJobs(t *testing.T) {
	c := testcluster.Start(t, 2, testcluster.Options{Token: testToken, Etcd: etcdtest.Start(t)})
	c.Bootstrap(t)
	m := openManager(t, c, t.TempDir(), nil, func(cfg *Config) {
		cfg.MaxRunningJobs = 1
		cfg.PauseBeforePhase = []migratorv1.Phase{migratorv1.Phase_PHASE_PREPARE}
		cfg.PauseTimeout = time.Minute
	})
	start := func(id, ranges string) error {
		_, err := m.StartMigration(t.Context(), &migratorv1.StartMigrationRequest{
			JobId: id, SourceNodeId: "n1", DestinationNodeId: "n2", Ranges: ranges})
		return err
	}
	if err := start("cap-a", "0-9"); err != nil {
		t.Fatalf("first job: %v", err)
	}
	err := start("cap-b", "20-29")
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "1 migrations are running") ||
		!strings.Contains(err.Error(), "MaxRunningJobs") || !strings.Contains(err.Error(), "is 1") {
		t.Fatalf("second job beyond the cap: %v, want ResourceExhausted naming the limit", err)
	}
	if _, err := m.GetMigration(t.Context(), &migratorv1.GetMigrationRequest{JobId: "cap-b"}); status.Code(err) != codes.NotFound {
		t.Errorf("the refused job was recorded: %v", err)
	}
	if _, err := m.CancelMigration(t.Context(), &migratorv1.CancelMigrationRequest{JobId: "cap-a"}); err != nil {
		t.Fatalf("CancelMigration: %v", err)
	}
	waitEnded(t, m, "cap-a")
	if err := start("cap-b", "20-29"); err != nil {
		t.Errorf("a job once the other ended: %v", err)
	}
}
