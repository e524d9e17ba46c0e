package migrator_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	migratorv1 "github.com/slotkv/slotkv/gen/slotkv/migrator/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/etcdtest"
	"github.com/slotkv/slotkv/pkg/proctest"
	"github.com/slotkv/slotkv/pkg/route"
	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/testcluster"
	"github.com/slotkv/slotkv/pkg/topology"
	"github.com/slotkv/slotkv/services/migrator"
)

// TestFullMigration moves two ranges with data from n1 to n2 and checks
// every promise of a commit.
func TestFullMigration(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3, "")
	n1, n2, n3 := c.Node(t, "n1"), c.Node(t, "n2"), c.Node(t, "n3")
	moved := slot.MustParseRangeSet("0-1000,2000-2100")
	kept := slot.MustParseRangeSet("3000-5460")
	movedKeys := keysIn(moved, 3000, "m")
	keptKeys := keysIn(kept, 500, "k")
	load(t, n1, movedKeys, 200)
	load(t, n1, keptKeys, 200)
	m := startMigrator(t, c, t.TempDir(), nil)

	mg := start(t, m, &migratorv1.StartMigrationRequest{Ranges: moved.String(), SourceNodeId: "n1", DestinationNodeId: "n2", Parallelism: 4, BatchRecords: 300})
	final := waitEnd(t, m, mg.GetId())
	if final.GetPhase() != migratorv1.Phase_PHASE_SUCCEEDED {
		t.Fatalf("job ended %s: %s (range %s)", final.GetPhase(), final.GetError(), final.GetErrorRange())
	}
	if final.GetKeys() != uint64(len(movedKeys)) || final.GetKeysTotal() != uint64(len(movedKeys)) || len(final.GetStreams()) != 4 {
		t.Errorf("progress: keys %d, keys_total %d, streams %d; want %d, %d, 4", final.GetKeys(), final.GetKeysTotal(), len(final.GetStreams()), len(movedKeys), len(movedKeys))
	}
	if final.GetWritePauseMs() <= 0 || final.GetCommittedVersion() != 2 || final.GetCleanedKeys() != uint64(len(movedKeys)) {
		t.Errorf("write_pause_ms %v, committed_version %d, cleaned_keys %d", final.GetWritePauseMs(), final.GetCommittedVersion(), final.GetCleanedKeys())
	}
	if final.GetVerify() != migratorv1.Verify_VERIFY_STREAM || final.GetTimeToHandoff().AsDuration() <= 0 || final.GetCleanupDuration().AsDuration() <= 0 {
		t.Errorf("verify %v, time_to_handoff %v, cleanup_duration %v; want VERIFY_STREAM and both times reported",
			final.GetVerify(), final.GetTimeToHandoff(), final.GetCleanupDuration())
	}

	ctx := testCtx(t)
	for _, k := range movedKeys {
		resp, err := n2.StorageClient().Get(ctx, &storagev1.GetRequest{Key: []byte(k)})
		if err != nil || string(resp.GetValue()) != string(value(k, 200)) {
			t.Fatalf("Get %s from the destination: %v", k, err)
		}
		_, err = n1.StorageClient().Get(ctx, &storagev1.GetRequest{Key: []byte(k)})
		var sm *rpcerr.SlotMovedError
		if !errors.As(rpcerr.FromStatus(err), &sm) || sm.OwnerID != "n2" {
			t.Fatalf("Get %s from the source: %v, want SLOT_MOVED to n2", k, err)
		}
	}
	if got := keyCount(t, n1); got != uint64(len(keptKeys)) {
		t.Errorf("source holds %d keys, want the %d it kept", got, len(keptKeys))
	}
	for _, n := range c.Nodes {
		resp, err := n.NodeClient().GetTopology(ctx, &storagev1.GetTopologyRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if v := resp.GetTopology().GetVersion(); v != 2 {
			t.Errorf("node %s holds topology version %d, want 2", n.ID, v)
		}
		topo, err := topology.FromProto(resp.GetTopology())
		if err != nil {
			t.Fatal(err)
		}
		for s := range moved.All() {
			if o, _ := topo.Owner(s); o.ID != "n2" {
				t.Fatalf("node %s: slot %d owned by %q", n.ID, s, o.ID)
			}
		}
	}
	assertNoMigrationState(t, n1, n2, n3)
	// REST: the job through the gateway.
	resp, err := http.Get("http://" + m.http + "/v1/migrations/" + mg.GetId())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"phase":"PHASE_SUCCEEDED"`) {
		t.Errorf("GET /v1/migrations/%s = %d %s", mg.GetId(), resp.StatusCode, body)
	}
	if _, err := m.client.CancelMigration(ctx, &migratorv1.CancelMigrationRequest{JobId: mg.GetId()}); status.Code(err) != codes.FailedPrecondition ||
		!strings.Contains(err.Error(), "already committed") {
		t.Errorf("cancel after commit: %v", err)
	}
	rate := uint64(5)
	if _, err := m.client.UpdateMigration(ctx, &migratorv1.UpdateMigrationRequest{JobId: mg.GetId(), RateBytesPerSecond: &rate}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("update after the end: %v", err)
	}
}

// TestWritesDuringMigration writes to the migrating slots through a
// topology-aware client during every phase; every acknowledged write must
// be on the destination at the end.
func TestWritesDuringMigration(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 2, "")
	n2 := c.Node(t, "n2")
	moved := slot.MustParseRangeSet("100-600")
	keys := keysIn(moved, 2000, "w")
	load(t, c.Node(t, "n1"), keys, 100)

	rt, err := route.New(route.Options{Store: c.Store(), Dial: func(a string) (*grpc.ClientConn, error) { return dial.New(a, dial.Options{}) },
		CallTimeout: 30 * time.Second, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Close() })
	if _, err := rt.Refresh(testCtx(t)); err != nil {
		t.Fatal(err)
	}

	// The writer: key i%len, value "v<n>"; acked[key] = last acknowledged
	// value, unsure[key] when the last write to it failed.
	var (
		mu      sync.Mutex
		acked   = map[string]string{}
		unsure  = map[string]bool{}
		written atomic.Int64
	)
	wctx, stopWriter := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for n := 0; wctx.Err() == nil; n++ {
			k := keys[n%len(keys)]
			v := fmt.Sprintf("v%d", n)
			_, err := rt.Do(wctx, k, func(ctx context.Context, _ route.Attempt, sc storagev1.StorageServiceClient) error {
				_, err := sc.Put(ctx, &storagev1.PutRequest{Key: []byte(k), Value: []byte(v)})
				return err
			})
			mu.Lock()
			if err == nil {
				acked[k], unsure[k] = v, false
			} else {
				unsure[k] = true // maybe applied, maybe not
				if wctx.Err() == nil {
					t.Logf("write %s failed: %v", k, err)
				}
			}
			mu.Unlock()
			written.Add(1)
		}
	})
	t.Cleanup(func() { stopWriter(); wg.Wait() })
	// At the start of each phase, let the writer make progress first.
	afterWrites := func(ctx context.Context, _ string, p migratorv1.Phase) error {
		switch p {
		case migratorv1.Phase_PHASE_SNAPSHOT, migratorv1.Phase_PHASE_CATCH_UP, migratorv1.Phase_PHASE_HANDOFF:
		default:
			return nil
		}
		target := written.Load() + 300
		for written.Load() < target {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(5 * time.Millisecond):
			}
		}
		return nil
	}
	m := startMigrator(t, c, t.TempDir(), func(o *migrator.Options) { o.PhaseHook = afterWrites })
	mg := start(t, m, &migratorv1.StartMigrationRequest{Ranges: moved.String(), SourceNodeId: "n1", DestinationNodeId: "n2", Parallelism: 3, BatchRecords: 200})
	final := waitEnd(t, m, mg.GetId())
	// A few more writes after the commit go to the destination.
	target := written.Load() + 200
	for written.Load() < target {
		time.Sleep(5 * time.Millisecond)
	}
	stopWriter()
	wg.Wait()
	if final.GetPhase() != migratorv1.Phase_PHASE_SUCCEEDED {
		t.Fatalf("job ended %s: %s", final.GetPhase(), final.GetError())
	}
	if final.GetChangesApplied() == 0 {
		t.Errorf("no change was replayed (changes_applied 0) although writes went on")
	}
	ctx := testCtx(t)
	mu.Lock()
	defer mu.Unlock()
	checked := 0
	for k, v := range acked {
		if unsure[k] {
			continue
		}
		resp, err := n2.StorageClient().Get(ctx, &storagev1.GetRequest{Key: []byte(k)})
		if err != nil || string(resp.GetValue()) != v {
			t.Fatalf("key %s: destination has %q (%v), last acknowledged write was %q", k, resp.GetValue(), err, v)
		}
		checked++
	}
	t.Logf("%d writes, %d keys checked, %d changes replayed, write pause %.1f ms", written.Load(), checked, final.GetChangesApplied(), final.GetWritePauseMs())
}

// TestCancelDuringSnapshot cancels a job whose snapshot streams are held
// by the rate limit: CANCELED, the destination keeps nothing, the source
// serves its slots again.
func TestCancelDuringSnapshot(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 2, "")
	n1, n2 := c.Node(t, "n1"), c.Node(t, "n2")
	moved := slot.MustParseRangeSet("0-999")
	keys := keysIn(moved, 3000, "c")
	load(t, n1, keys, 1000)
	m := startMigrator(t, c, t.TempDir(), nil)
	// 20 KiB/s for ~3 MB: the first small batches land within a second,
	// the whole snapshot would take minutes.
	mg := start(t, m, &migratorv1.StartMigrationRequest{Ranges: moved.String(), SourceNodeId: "n1", DestinationNodeId: "n2",
		Parallelism: 2, RateBytesPerSecond: 20 << 10, BatchRecords: 10})
	running := watchUntil(t, m, mg.GetId(), func(mg *migratorv1.Migration) bool {
		return mg.GetPhase() == migratorv1.Phase_PHASE_SNAPSHOT && mg.GetKeys() > 0
	})
	if running.GetPhase() != migratorv1.Phase_PHASE_SNAPSHOT {
		t.Fatalf("job %s: %s", running.GetPhase(), running.GetError())
	}
	resp, err := m.client.CancelMigration(testCtx(t), &migratorv1.CancelMigrationRequest{JobId: mg.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	final := resp.GetMigration()
	if final.GetPhase() != migratorv1.Phase_PHASE_CANCELED || !strings.Contains(final.GetError(), "SNAPSHOT") {
		t.Fatalf("after cancel: %s %q", final.GetPhase(), final.GetError())
	}
	assertNoMigrationState(t, n1, n2)
	if got := keyCount(t, n2); got != 0 {
		t.Errorf("destination keeps %d keys of the canceled job", got)
	}
	ctx := testCtx(t)
	if _, err := n1.StorageClient().Get(ctx, &storagev1.GetRequest{Key: []byte(keys[0])}); err != nil {
		t.Errorf("source does not serve %s: %v", keys[0], err)
	}
	if _, err := n1.StorageClient().Put(ctx, &storagev1.PutRequest{Key: []byte(keys[1]), Value: []byte("x")}); err != nil {
		t.Errorf("source refuses a write: %v", err)
	}
}

// TestPauseHookCancel uses the --pause-before-phase testing aid to cancel
// a job at the start of its snapshot.
func TestPauseHookCancel(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 2, "")
	load(t, c.Node(t, "n1"), keysIn(slot.MustParseRangeSet("10-20"), 50, "p"), 10)
	m := startMigrator(t, c, t.TempDir(), func(o *migrator.Options) {
		o.PauseBeforePhase = []migrator.Phase{migratorv1.Phase_PHASE_SNAPSHOT}
		o.PauseTimeout = 10 * time.Minute
	})
	mg := start(t, m, &migratorv1.StartMigrationRequest{Ranges: "10-20", SourceNodeId: "n1", DestinationNodeId: "n2"})
	waitPhase(t, m, mg.GetId(), migratorv1.Phase_PHASE_SNAPSHOT)
	resp, err := m.client.CancelMigration(testCtx(t), &migratorv1.CancelMigrationRequest{JobId: mg.GetId()})
	if err != nil || resp.GetMigration().GetPhase() != migratorv1.Phase_PHASE_CANCELED {
		t.Fatalf("cancel: %v %v", resp, err)
	}
	assertNoMigrationState(t, c.Nodes...)
}

// TestUpdateRate starts a job throttled to 20 KiB/s (minutes for its ~2 MB)
// and lifts the limit while it runs: the job then finishes.
func TestUpdateRate(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 2, "")
	moved := slot.MustParseRangeSet("0-499")
	keys := keysIn(moved, 2000, "u")
	load(t, c.Node(t, "n1"), keys, 1000)
	m := startMigrator(t, c, t.TempDir(), nil)
	mg := start(t, m, &migratorv1.StartMigrationRequest{Ranges: moved.String(), SourceNodeId: "n1", DestinationNodeId: "n2",
		Parallelism: 2, RateBytesPerSecond: 20 << 10, BatchRecords: 10})
	watchUntil(t, m, mg.GetId(), func(mg *migratorv1.Migration) bool { return mg.GetKeys() > 0 })
	ctx := testCtx(t)
	unlimited, batch := uint64(0), uint32(500)
	resp, err := m.client.UpdateMigration(ctx, &migratorv1.UpdateMigrationRequest{JobId: mg.GetId(), RateBytesPerSecond: &unlimited, BatchRecords: &batch})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetMigration().GetRateBytesPerSecond() != 0 || resp.GetMigration().GetBatchRecords() != 500 {
		t.Errorf("after update: %v", resp.GetMigration())
	}
	final := waitEnd(t, m, mg.GetId())
	if final.GetPhase() != migratorv1.Phase_PHASE_SUCCEEDED || final.GetKeys() != uint64(len(keys)) {
		t.Fatalf("job ended %s with %d keys: %s", final.GetPhase(), final.GetKeys(), final.GetError())
	}
}

// TestWrongTokenDestination: a destination with another cluster token
// refuses the job; it fails naming the destination, the source is left as
// it was.
func TestWrongTokenDestination(t *testing.T) {
	t.Parallel()
	c := testcluster.Start(t, 2, testcluster.Options{Token: "right", Etcd: etcdtest.Start(t)})
	dir := filepath.Join(t.TempDir(), "n3")
	// n3 follows the cluster's etcd, but with another token.
	p := proctest.Start(t, proctest.Bin(t, "slotkv-storage"), append([]string{"--node-id", "n3", "--data-dir", dir,
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--token", "wrong"}, c.EtcdArgs()...)...)
	nodes := append(c.TopologyNodes(), topology.Node{ID: "n3", GRPCAddress: p.GRPC, HTTPAddress: p.HTTP})
	topo, err := topology.Even(1, nodes)
	if err != nil {
		t.Fatal(err)
	}
	c.SetTopology(t, topo)
	waitHolds(t, p.GRPC, "wrong", topo.Version())
	load(t, c.Node(t, "n1"), keysIn(slot.MustParseRangeSet("0-100"), 100, "t"), 10)
	m := startMigrator(t, c, t.TempDir(), nil)
	mg := start(t, m, &migratorv1.StartMigrationRequest{Ranges: "0-100", SourceNodeId: "n1", DestinationNodeId: "n3"})
	final := waitEnd(t, m, mg.GetId())
	if final.GetPhase() != migratorv1.Phase_PHASE_FAILED || !strings.Contains(final.GetError(), "destination n3") ||
		!(strings.Contains(final.GetError(), "PermissionDenied") || strings.Contains(final.GetError(), "Unauthenticated")) {
		t.Fatalf("job ended %s: %q", final.GetPhase(), final.GetError())
	}
	assertNoMigrationState(t, c.Node(t, "n1"))
	// The slots are free for a new job.
	again := start(t, m, &migratorv1.StartMigrationRequest{Ranges: "0-100", SourceNodeId: "n1", DestinationNodeId: "n2"})
	if f := waitEnd(t, m, again.GetId()); f.GetPhase() != migratorv1.Phase_PHASE_SUCCEEDED {
		t.Fatalf("retry to n2 ended %s: %s", f.GetPhase(), f.GetError())
	}
}

// TestRestartMidJob stops the migrator in the middle of jobs and starts it
// again on the same data directory: a job before its commit is rolled back
// and fails, a committed one rolls forward; no slot stays MIGRATING,
// IMPORTING or FROZEN.
func TestRestartMidJob(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3, "")
	n1, n2, n3 := c.Node(t, "n1"), c.Node(t, "n2"), c.Node(t, "n3")
	load(t, n1, keysIn(slot.MustParseRangeSet("0-200"), 500, "r"), 100)
	load(t, n1, keysIn(slot.MustParseRangeSet("300-400"), 500, "s"), 100)
	dataDir := t.TempDir()
	// early is held at CATCH_UP (before its commit), late at CLEANUP
	// (after it), until the migrator stops.
	hold := func(ctx context.Context, id string, p migratorv1.Phase) error {
		if (id == "early" && p == migratorv1.Phase_PHASE_CATCH_UP) || (id == "late" && p == migratorv1.Phase_PHASE_CLEANUP) {
			<-ctx.Done()
			return context.Cause(ctx)
		}
		return nil
	}
	m := startMigrator(t, c, dataDir, func(o *migrator.Options) { o.PhaseHook = hold })
	early := start(t, m, &migratorv1.StartMigrationRequest{JobId: "early", Ranges: "0-200", SourceNodeId: "n1", DestinationNodeId: "n2"})
	late := start(t, m, &migratorv1.StartMigrationRequest{JobId: "late", Ranges: "300-400", SourceNodeId: "n1", DestinationNodeId: "n3"})
	waitPhase(t, m, early.GetId(), migratorv1.Phase_PHASE_CATCH_UP)
	waitPhase(t, m, late.GetId(), migratorv1.Phase_PHASE_CLEANUP)
	m.stop(t)

	m2 := startMigrator(t, c, dataDir, nil)
	f := waitEnd(t, m2, "early")
	const want = "migrator restarted during CATCH_UP (the leading replica changed: the new leader took the job over from its record)"
	if f.GetPhase() != migratorv1.Phase_PHASE_FAILED || f.GetError() != want {
		t.Errorf("early: %s %q", f.GetPhase(), f.GetError())
	}
	l := waitEnd(t, m2, "late")
	if l.GetPhase() != migratorv1.Phase_PHASE_SUCCEEDED || l.GetCommittedVersion() != 2 {
		t.Errorf("late: %s %q (version %d)", l.GetPhase(), l.GetError(), l.GetCommittedVersion())
	}
	assertNoMigrationState(t, n1, n2, n3)
	if got := keyCount(t, n2); got != 0 {
		t.Errorf("destination of the rolled-back job keeps %d keys", got)
	}
	if got := keyCount(t, n3); got != 500 {
		t.Errorf("destination of the committed job has %d keys, want 500", got)
	}
}

// TestRollbackRetriesKilledNode kills the destination in the middle of a
// job: the job fails, its rollback waits for the node, and once the node is
// back no slot stays MIGRATING, IMPORTING or FROZEN on either node.
func TestRollbackRetriesKilledNode(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 2, "")
	n1, n2 := c.Node(t, "n1"), c.Node(t, "n2")
	load(t, n1, keysIn(slot.MustParseRangeSet("0-300"), 500, "k"), 100)
	hold := newBlocker(migratorv1.Phase_PHASE_VERIFY)
	m := startMigrator(t, c, t.TempDir(), func(o *migrator.Options) { o.PhaseHook = hold.hook })
	mg := start(t, m, &migratorv1.StartMigrationRequest{Ranges: "0-300", SourceNodeId: "n1", DestinationNodeId: "n2"})
	waitPhase(t, m, mg.GetId(), migratorv1.Phase_PHASE_VERIFY)
	n2.Proc.Kill()
	hold.release(migratorv1.Phase_PHASE_VERIFY)
	final := waitEnd(t, m, mg.GetId())
	if final.GetPhase() != migratorv1.Phase_PHASE_FAILED || !strings.Contains(final.GetError(), "destination n2") {
		t.Fatalf("job ended %s: %q", final.GetPhase(), final.GetError())
	}
	// The source is rolled back already; the destination once it is back.
	assertNoMigrationState(t, n1)
	n2.Proc = proctest.Start(t, proctest.Bin(t, "slotkv-storage"), append([]string{"--node-id", "n2", "--data-dir", n2.DataDir,
		"--grpc-addr", n2.Proc.GRPC, "--http-addr", n2.Proc.HTTP}, c.EtcdArgs()...)...)
	ctx := testCtx(t)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ml, err := storagev1.NewMigrationServiceClient(n2.Conn).ListMigrations(ctx, &storagev1.ListMigrationsRequest{})
		if err == nil && len(ml.GetMigrations()) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("destination still takes part in the job: %v %v", ml, err)
		case <-tick.C:
		}
	}
	assertNoMigrationState(t, n1, n2)
	if got := keyCount(t, n2); got != 0 {
		t.Errorf("destination keeps %d imported keys", got)
	}
}

// TestShutdownRollsBack stops the migrator in the middle of a job. A
// stopping replica leaves its jobs where they are for the next leader (a
// rollback at shutdown would race a new leader's takeover): the next start
// rolls the job back on the source and the destination, and the job fails
// naming the restart.
func TestShutdownRollsBack(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 2, "")
	n1, n2 := c.Node(t, "n1"), c.Node(t, "n2")
	load(t, n1, keysIn(slot.MustParseRangeSet("0-200"), 200, "k"), 100)
	hold := func(ctx context.Context, id string, p migratorv1.Phase) error {
		if p == migratorv1.Phase_PHASE_CATCH_UP {
			<-ctx.Done()
			return context.Cause(ctx)
		}
		return nil
	}
	m := startMigrator(t, c, t.TempDir(), func(o *migrator.Options) { o.PhaseHook = hold })
	mg := start(t, m, &migratorv1.StartMigrationRequest{JobId: "j", Ranges: "0-200", SourceNodeId: "n1", DestinationNodeId: "n2"})
	waitPhase(t, m, mg.GetId(), migratorv1.Phase_PHASE_CATCH_UP)
	m.stop(t)
	m2 := startMigrator(t, c, t.TempDir(), nil)
	if f := waitEnd(t, m2, "j"); f.GetPhase() != migratorv1.Phase_PHASE_FAILED || !strings.Contains(f.GetError(), "migrator restarted during CATCH_UP") {
		t.Errorf("job after the restart: %s %q", f.GetPhase(), f.GetError())
	}
	assertNoMigrationState(t, n1, n2)
	if got := keyCount(t, n2); got != 0 {
		t.Errorf("destination keeps %d imported keys after the shutdown", got)
	}
}

// waitHolds waits until the node at addr (cluster token token) holds
// topology version v or newer.
func waitHolds(t *testing.T, addr, token string, v uint64) {
	t.Helper()
	cc, err := dial.New(addr, dial.Options{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx := testCtx(t)
	for {
		resp, err := storagev1.NewNodeServiceClient(cc).GetTopology(ctx, &storagev1.GetTopologyRequest{})
		if err == nil && resp.GetTopology().GetVersion() >= v {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("node %s does not hold topology version %d: %v", addr, v, err)
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
}
