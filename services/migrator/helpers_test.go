package migrator_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	migratorv1 "github.com/slotkv/slotkv/gen/slotkv/migrator/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/auth"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/etcdtest"
	"github.com/slotkv/slotkv/pkg/server"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/telemetry"
	"github.com/slotkv/slotkv/pkg/testcluster"
	"github.com/slotkv/slotkv/services/migrator"
)

// testTimeout bounds every wait of a test.
const testTimeout = 60 * time.Second

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("MIGRATOR_TEST_LOG") != "" {
		return telemetry.NewLogger(os.Stderr, slog.LevelInfo, false).With("test", t.Name())
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// mig is an in-process migrator.
type mig struct {
	addr    string
	http    string
	dataDir string
	client  migratorv1.MigratorServiceClient
	cancel  context.CancelFunc
	done    chan error
}

// startMigrator runs migrator.Run on 127.0.0.1:0 against the cluster; o
// may adjust the options. Stopped at the end of the test.
func startMigrator(t testing.TB, c *testcluster.Cluster, dataDir string, adjust func(*migrator.Options)) *mig {
	t.Helper()
	o := migrator.DefaultOptions()
	o.GRPCAddr, o.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	o.DataDir = dataDir
	// Everything the migrator knows of the cluster comes from etcd.
	o.Etcd = server.Etcd{Endpoints: c.Etcd().Endpoints(), DialTimeout: 2 * time.Second}
	o.Tokens = auth.OneToken(c.Token)
	o.Logger = testLogger(t)
	o.RollbackRetryInterval = 200 * time.Millisecond
	o.ProgressInterval = time.Second
	if adjust != nil {
		adjust(&o)
	}
	addrs := make(chan [2]string, 1)
	o.OnListen = func(g, h net.Addr) { addrs <- [2]string{g.String(), h.String()} }
	ctx, cancel := context.WithCancel(context.Background())
	m := &mig{dataDir: dataDir, cancel: cancel, done: make(chan error, 1)}
	go func() { m.done <- migrator.Run(ctx, o) }()
	select {
	case a := <-addrs:
		m.addr, m.http = a[0], a[1]
	case err := <-m.done:
		cancel()
		t.Fatalf("migrator did not start: %v", err)
	}
	cc, err := dial.New(m.addr, dial.Options{Token: c.Token})
	if err != nil {
		t.Fatal(err)
	}
	m.client = migratorv1.NewMigratorServiceClient(cc)
	t.Cleanup(func() {
		_ = cc.Close()
		m.stop(t)
	})
	return m
}

// stop shuts the migrator down and waits for Run to return.
func (m *mig) stop(t testing.TB) {
	t.Helper()
	m.cancel()
	if m.done == nil {
		return
	}
	select {
	case err := <-m.done:
		if err != nil {
			t.Errorf("migrator.Run: %v", err)
		}
	case <-time.After(time.Minute):
		t.Error("migrator did not stop")
	}
	m.done = nil
}

func startCluster(t testing.TB, n int, token string) *testcluster.Cluster {
	t.Helper()
	c := testcluster.Start(t, n, testcluster.Options{Token: token, Etcd: etcdtest.Start(t)})
	c.Bootstrap(t)
	return c
}

// keysIn returns n distinct keys whose slots are in rs.
func keysIn(rs slot.RangeSet, n int, prefix string) []string {
	var out []string
	for i := 0; len(out) < n; i++ {
		k := fmt.Sprintf("%s-%d", prefix, i)
		if rs.Contains(slot.OfString(k)) {
			out = append(out, k)
		}
	}
	return out
}

func value(k string, size int) []byte {
	v := []byte(strings.Repeat(k+";", size/(len(k)+1)+1))
	return v[:size]
}

// load writes keys with values of size bytes to node in batches.
func load(t testing.TB, node *testcluster.Node, keys []string, size int) {
	t.Helper()
	ctx := testCtx(t)
	for i := 0; i < len(keys); i += 500 {
		req := &storagev1.BatchWriteRequest{}
		for _, k := range keys[i:min(i+500, len(keys))] {
			req.Mutations = append(req.Mutations, &storagev1.Mutation{Key: []byte(k), Value: value(k, size)})
		}
		if _, err := node.StorageClient().BatchWrite(ctx, req); err != nil {
			t.Fatalf("load into %s: %v", node.ID, err)
		}
	}
}

// start starts a job and fails the test on error.
func start(t testing.TB, m *mig, req *migratorv1.StartMigrationRequest) *migratorv1.Migration {
	t.Helper()
	resp, err := m.client.StartMigration(testCtx(t), req)
	if err != nil {
		t.Fatalf("StartMigration(%v): %v", req, err)
	}
	return resp.GetMigration()
}

func ended(p migratorv1.Phase) bool {
	return p == migratorv1.Phase_PHASE_SUCCEEDED || p == migratorv1.Phase_PHASE_FAILED || p == migratorv1.Phase_PHASE_CANCELED
}

// watchUntil watches a job until cond holds (returning that state) or
// the job ends (returning the final state).
func watchUntil(t testing.TB, m *mig, id string, cond func(*migratorv1.Migration) bool) *migratorv1.Migration {
	t.Helper()
	ctx := testCtx(t)
	s, err := m.client.WatchMigration(ctx, &migratorv1.WatchMigrationRequest{JobId: id, Interval: durationpb.New(20 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	var last *migratorv1.Migration
	for {
		resp, err := s.Recv()
		if errors.Is(err, io.EOF) {
			if last == nil {
				t.Fatalf("watch of %s ended without an update", id)
			}
			return last
		}
		if err != nil {
			t.Fatalf("watch %s: %v", id, err)
		}
		last = resp.GetMigration()
		if cond != nil && cond(last) {
			return last
		}
	}
}

func waitEnd(t testing.TB, m *mig, id string) *migratorv1.Migration {
	t.Helper()
	return watchUntil(t, m, id, nil)
}

func waitPhase(t testing.TB, m *mig, id string, p migratorv1.Phase) *migratorv1.Migration {
	t.Helper()
	got := watchUntil(t, m, id, func(mg *migratorv1.Migration) bool { return mg.GetPhase() == p })
	if got.GetPhase() != p {
		t.Fatalf("job %s ended %s (%s) before reaching %s", id, got.GetPhase(), got.GetError(), p)
	}
	return got
}

// assertNoMigrationState checks that no slot of the node is MIGRATING,
// IMPORTING or FROZEN and that the node takes part in no migration.
func assertNoMigrationState(t testing.TB, nodes ...*testcluster.Node) {
	t.Helper()
	ctx := testCtx(t)
	for _, n := range nodes {
		info, err := n.NodeClient().GetNodeInfo(ctx, &storagev1.GetNodeInfoRequest{})
		if err != nil {
			t.Fatalf("GetNodeInfo %s: %v", n.ID, err)
		}
		for _, s := range info.GetSlotStates() {
			switch s.GetState() {
			case clusterv1.SlotState_SLOT_STATE_MIGRATING, clusterv1.SlotState_SLOT_STATE_IMPORTING, clusterv1.SlotState_SLOT_STATE_FROZEN:
				t.Errorf("node %s: slots %d-%d are %s (job %s)", n.ID, s.GetRange().GetStart(), s.GetRange().GetEnd(), s.GetState(), s.GetJobId())
			}
		}
		ml, err := storagev1.NewMigrationServiceClient(n.Conn).ListMigrations(ctx, &storagev1.ListMigrationsRequest{})
		if err != nil {
			t.Fatalf("ListMigrations %s: %v", n.ID, err)
		}
		for _, mg := range ml.GetMigrations() {
			t.Errorf("node %s still takes part in migration %s (%s)", n.ID, mg.GetJobId(), mg.GetRole())
		}
	}
}

func keyCount(t testing.TB, n *testcluster.Node) uint64 {
	t.Helper()
	info, err := n.NodeClient().GetNodeInfo(testCtx(t), &storagev1.GetNodeInfoRequest{})
	if err != nil {
		t.Fatalf("GetNodeInfo %s: %v", n.ID, err)
	}
	return info.GetKeyCount()
}

// blocker is a PhaseHook that holds jobs at chosen phases until released
// (or the job is canceled).
type blocker struct {
	mu      sync.Mutex
	phases  map[migratorv1.Phase]chan struct{}
	reached map[migratorv1.Phase]chan struct{}
}

func newBlocker(phases ...migratorv1.Phase) *blocker {
	b := &blocker{phases: map[migratorv1.Phase]chan struct{}{}, reached: map[migratorv1.Phase]chan struct{}{}}
	for _, p := range phases {
		b.phases[p] = make(chan struct{})
		b.reached[p] = make(chan struct{})
	}
	return b
}

func (b *blocker) hook(ctx context.Context, _ string, p migratorv1.Phase) error {
	b.mu.Lock()
	ch, ok := b.phases[p]
	reached := b.reached[p]
	b.mu.Unlock()
	if !ok {
		return nil
	}
	select {
	case <-reached:
	default:
		close(reached)
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (b *blocker) release(p migratorv1.Phase) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if ch, ok := b.phases[p]; ok {
		close(ch)
		delete(b.phases, p)
	}
}
