package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	migratorv1 "github.com/slotkv/slotkv/gen/slotkv/migrator/v1"
	routerv1 "github.com/slotkv/slotkv/gen/slotkv/router/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/testcluster"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// rpcCount is one StorageService method's call count on a node.
func rpcCount(tb testing.TB, n *testcluster.Node, method string) uint64 {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := n.NodeClient().GetNodeInfo(ctx, &storagev1.GetNodeInfoRequest{})
	if err != nil {
		tb.Fatalf("node info of %s: %v", n.ID, err)
	}
	return info.GetRpcCounts()[method]
}

// routerVersion is the topology version the router routes by, without a
// refresh: what it learned by itself.
func (c *cluster) routerVersion(tb testing.TB) uint64 {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := routerv1.NewKVServiceClient(c.conn(c.router.GRPC)).GetTopology(ctx, &routerv1.GetTopologyRequest{})
	if err != nil {
		tb.Fatalf("router topology: %v", err)
	}
	return resp.GetTopology().GetVersion()
}

// TestRouterFollowsTheWatch: a migration commits a new topology in etcd and
// the router has it without having sent a single request to a node that
// would answer SLOT_MOVED: after the job, every read of a moved key goes
// straight to the new owner, and the old owner receives none of them (its
// RPC counters, which count refused calls too, do not move).
func TestRouterFollowsTheWatch(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3, "watch-secret")
	want := c.loadKeys(t, "w", 3000, 0)
	const ranges = "0-2000"
	moving := keysIn(want, ranges)
	before := c.routerVersion(t)
	m := startMover(t, c)
	m.begin(t, &migratorv1.StartMigrationRequest{JobId: "watched", Ranges: ranges, SourceNodeId: "n1", DestinationNodeId: "n2"})
	if job := m.wait(t, "watched", over); job.GetPhase() != migratorv1.Phase_PHASE_SUCCEEDED {
		t.Fatalf("migration %v: %s", job.GetPhase(), job.GetError())
	}
	stored, err := c.Store().Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if stored.Version() <= before {
		t.Fatalf("etcd holds topology version %d after the migration, the router had %d before it", stored.Version(), before)
	}
	// The router was sent nothing since the load; only the watch can have
	// told it.
	deadline := time.Now().Add(30 * time.Second)
	for c.routerVersion(t) < stored.Version() {
		if time.Now().After(deadline) {
			t.Fatalf("router still at version %d, etcd at %d", c.routerVersion(t), stored.Version())
		}
		time.Sleep(5 * time.Millisecond)
	}
	n1, n2 := c.Node(t, "n1"), c.Node(t, "n2")
	n1Gets, n2Gets := rpcCount(t, n1, "Get"), rpcCount(t, n2, "Get")
	kv := routerv1.NewKVServiceClient(c.conn(c.router.GRPC))
	for _, k := range moving {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := kv.Get(ctx, &routerv1.GetRequest{Key: k})
		cancel()
		if err != nil || resp.GetText() != want[k] {
			t.Fatalf("get %s: %q, %v; want %q", k, resp.GetText(), err, want[k])
		}
	}
	if got := rpcCount(t, n1, "Get") - n1Gets; got != 0 {
		t.Fatalf("the old owner n1 received %d gets of moved keys (SLOT_MOVED answers)", got)
	}
	if got := rpcCount(t, n2, "Get") - n2Gets; got != uint64(len(moving)) {
		t.Fatalf("the new owner n2 received %d gets, want %d", got, len(moving))
	}
}

// TestEtcdOutage stops the control plane for 10 s under steady traffic:
// reads and writes to slots that are not migrating keep working (the
// nodes serve from the topology they hold and the router routes by the one
// it has), a migration started meanwhile fails cleanly naming etcd and
// leaves every key served, and once etcd is back the same migration
// succeeds.
func TestEtcdOutage(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3, "outage-secret")
	want := c.loadKeys(t, "o", 4000, 0)
	m := startMover(t, c)
	const ranges = "100-900"
	var keys []string
	for k := range want {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	// Readers read the first keys, which nobody writes (their values stay
	// as loaded); writers write the rest.
	readOnly := keys[:200]
	w := startWriters(t, c, keys[200:], 4)

	// Readers too, on keys the writers do not touch.
	kv := routerv1.NewKVServiceClient(c.conn(c.router.GRPC))
	ctx, stopReads := context.WithCancel(context.Background())
	var reads, readFails atomic.Int64
	var firstReadErr atomic.Value
	var rg sync.WaitGroup
	for g := range 2 {
		rg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				k := readOnly[(g*len(readOnly)/2+i)%len(readOnly)]
				cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				resp, err := kv.Get(cctx, &routerv1.GetRequest{Key: k})
				cancel()
				reads.Add(1)
				if err == nil && resp.GetText() != want[k] {
					err = fmt.Errorf("get %s: %q, want %q", k, resp.GetText(), want[k])
				}
				if err != nil {
					readFails.Add(1)
					firstReadErr.CompareAndSwap(nil, err.Error())
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
	for w.ops.Load() < 200 {
		time.Sleep(10 * time.Millisecond)
	}

	e := c.Etcd()
	if err := e.Stop(); err != nil {
		t.Fatal(err)
	}
	opsAtStop, readsAtStop := w.ops.Load(), reads.Load()
	// A migration asked for meanwhile is refused naming etcd, or accepted
	// and then waits for etcd or fails naming it; it never commits.
	sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
	_, startErr := m.api.StartMigration(sctx, &migratorv1.StartMigrationRequest{JobId: "during-outage", Ranges: ranges, SourceNodeId: "n1", DestinationNodeId: "n2"})
	scancel()
	if startErr != nil && !strings.Contains(startErr.Error(), "etcd") {
		t.Fatalf("migration refused during the etcd outage without naming etcd: %v", startErr)
	}
	time.Sleep(10 * time.Second)
	opsDuring, readsDuring := w.ops.Load()-opsAtStop, reads.Load()-readsAtStop
	var during *migratorv1.Migration
	if startErr == nil {
		during = m.wait(t, "during-outage", func(*migratorv1.Migration) bool { return true })
	}
	e.Restart()
	if opsDuring < 100 || readsDuring < 100 {
		t.Fatalf("traffic stalled while etcd was down: %d writes, %d reads in the outage", opsDuring, readsDuring)
	}
	rerun := func(id string) {
		t.Helper()
		// As an operator would: the services reconnect to etcd within
		// seconds of its return (pkg/server bounds their connect backoff).
		for end := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := m.api.StartMigration(sctx, &migratorv1.StartMigrationRequest{JobId: id, Ranges: ranges, SourceNodeId: "n1", DestinationNodeId: "n2"})
			scancel()
			if err == nil {
				break
			}
			if status.Code(err) != codes.Unavailable || time.Now().After(end) {
				t.Fatalf("start migration %s after the outage: %v", id, err)
			}
		}
		if job := m.wait(t, id, over); job.GetPhase() != migratorv1.Phase_PHASE_SUCCEEDED {
			t.Fatalf("migration %s after the outage %v: %s", id, job.GetPhase(), job.GetError())
		}
	}
	if startErr != nil {
		t.Logf("etcd down 10s: %d writes and %d reads served; the migration was refused: %v", opsDuring, readsDuring, startErr)
		rerun("after-outage")
	} else {
		switch during.GetPhase() {
		case migratorv1.Phase_PHASE_SUCCEEDED, migratorv1.Phase_PHASE_CLEANUP:
			t.Fatalf("migration committed while etcd was down: %v", during.GetPhase())
		case migratorv1.Phase_PHASE_FAILED:
			if !strings.Contains(during.GetError(), "etcd") {
				t.Fatalf("migration failed during the etcd outage without naming etcd: %s", during.GetError())
			}
		}
		t.Logf("etcd down 10s: %d writes and %d reads served; the migration was %v %s", opsDuring, readsDuring, during.GetPhase(), during.GetError())
		job := m.wait(t, "during-outage", over)
		switch job.GetPhase() {
		case migratorv1.Phase_PHASE_SUCCEEDED:
		case migratorv1.Phase_PHASE_FAILED:
			if !strings.Contains(job.GetError(), "etcd") {
				t.Fatalf("migration failed across the etcd outage without naming etcd: %s", job.GetError())
			}
			// Rolled back; once that is through, the same move succeeds.
			m.wait(t, "during-outage", func(j *migratorv1.Migration) bool { return !j.GetRollbackPending() })
			c.waitClean(t)
			rerun("after-outage")
		default:
			t.Fatalf("migration across the etcd outage ended %v: %s", job.GetPhase(), job.GetError())
		}
	}
	stopReads()
	rg.Wait()
	if n := readFails.Load(); n > 0 {
		t.Fatalf("%d of %d reads failed; first: %v", n, reads.Load(), firstReadErr.Load())
	}
	for k, v := range w.finish(t) {
		want[k] = v
	}
	c.verify(t, want)
	c.verifyOwnedBy(t, "n2", ranges)
}
