package migrator_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	migratorv1 "github.com/slotkv/slotkv/gen/slotkv/migrator/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/etcdtest"
	"github.com/slotkv/slotkv/pkg/proctest"
	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/testcluster"
	"github.com/slotkv/slotkv/pkg/topology"
	"github.com/slotkv/slotkv/pkg/topostore"
	"github.com/slotkv/slotkv/services/migrator"
)

// startEtcdCluster starts etcd and n storage nodes that follow it, with
// topology version 1 (slots split evenly: n1 0-5461, n2 5462-10922, n3
// 10923-16383 for three) bootstrapped there.
func startEtcdCluster(t *testing.T, n int) (*testcluster.Cluster, *etcdtest.Etcd) {
	t.Helper()
	e := etcdtest.Start(t)
	c := testcluster.Start(t, n, testcluster.Options{Etcd: e})
	c.Bootstrap(t)
	return c, e
}

// startEtcdMigrator runs a migrator on the cluster's etcd, with no seed
// nodes: everything it knows of the cluster comes from etcd.
func startEtcdMigrator(t *testing.T, c *testcluster.Cluster, adjust func(*migrator.Options)) *mig {
	t.Helper()
	return startMigrator(t, c, t.TempDir(), func(o *migrator.Options) {
		if adjust != nil {
			adjust(o)
		}
	})
}

// waitNodesHold waits until every node holds topology version v or newer.
func waitNodesHold(t *testing.T, c *testcluster.Cluster, v uint64) {
	t.Helper()
	ctx := testCtx(t)
	for _, n := range c.Nodes {
		for {
			resp, err := n.NodeClient().GetTopology(ctx, &storagev1.GetTopologyRequest{})
			if err == nil && resp.GetTopology().GetVersion() >= v {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("node %s does not hold topology version %d: %v, %v", n.ID, v, resp.GetTopology().GetVersion(), err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// checkServed checks that keys are served by node to and moved away from
// node from.
func checkServed(t *testing.T, keys []string, from, to *testcluster.Node) {
	t.Helper()
	ctx := testCtx(t)
	for _, k := range keys {
		resp, err := to.StorageClient().Get(ctx, &storagev1.GetRequest{Key: []byte(k)})
		if err != nil || string(resp.GetValue()) != string(value(k, 100)) {
			t.Fatalf("Get %s from %s: %v", k, to.ID, err)
		}
		_, err = from.StorageClient().Get(ctx, &storagev1.GetRequest{Key: []byte(k)})
		var sm *rpcerr.SlotMovedError
		if !errors.As(rpcerr.FromStatus(err), &sm) || sm.OwnerID != to.ID {
			t.Fatalf("Get %s from %s: %v, want SLOT_MOVED to %s", k, from.ID, err, to.ID)
		}
	}
}

func succeeded(t *testing.T, m *mig, id string) *migratorv1.Migration {
	t.Helper()
	final := waitEnd(t, m, id)
	if final.GetPhase() != migratorv1.Phase_PHASE_SUCCEEDED {
		t.Fatalf("job %s ended %s: %s (range %s)", id, final.GetPhase(), final.GetError(), final.GetErrorRange())
	}
	return final
}

// assigned checks that topo assigns every slot of rs to node id.
func assigned(t *testing.T, topo *topology.Topology, rs slot.RangeSet, id string) {
	t.Helper()
	for s := range rs.All() {
		if o, ok := topo.Owner(s); !ok || o.ID != id {
			t.Fatalf("topology version %d: slot %d owned by %q, want %s", topo.Version(), s, o.ID, id)
		}
	}
}

func TestEtcdMigration(t *testing.T) {
	t.Parallel()
	c, e := startEtcdCluster(t, 3)
	n1, n2, n3 := c.Node(t, "n1"), c.Node(t, "n2"), c.Node(t, "n3")
	moved := slot.MustParseRangeSet("0-1000,2000-2100")
	keys := keysIn(moved, 2000, "m")
	load(t, n1, keys, 100)
	m := startEtcdMigrator(t, c, nil)

	mg := start(t, m, &migratorv1.StartMigrationRequest{Ranges: moved.String(), SourceNodeId: "n1", DestinationNodeId: "n2", Parallelism: 2})
	final := succeeded(t, m, mg.GetId())
	if final.GetCommittedVersion() != 2 || final.GetWritePauseMs() <= 0 {
		t.Errorf("committed_version %d, write_pause_ms %v; want 2 and a pause", final.GetCommittedVersion(), final.GetWritePauseMs())
	}
	ctx := testCtx(t)
	st := c.Store()
	topo, err := st.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if topo.Version() != 2 {
		t.Fatalf("etcd holds topology version %d, want 2", topo.Version())
	}
	assigned(t, topo, moved, "n2")
	// The job's committed state, written in the commit's transaction: its
	// mod revision is the topology's.
	cli := e.Client(t)
	rec, err := cli.Get(ctx, st.Key("migrations/"+mg.GetId()))
	if err != nil || len(rec.Kvs) != 1 {
		t.Fatalf("migrations/%s: %v, %v", mg.GetId(), rec, err)
	}
	tk, err := cli.Get(ctx, st.TopologyKey())
	if err != nil {
		t.Fatal(err)
	}
	if rec.Kvs[0].ModRevision != tk.Kvs[0].ModRevision {
		t.Errorf("job record at revision %d, topology at %d: not one transaction", rec.Kvs[0].ModRevision, tk.Kvs[0].ModRevision)
	}
	raw := map[string]any{}
	if err := json.Unmarshal(rec.Kvs[0].Value, &raw); err != nil {
		t.Fatalf("migrations/%s: %v", mg.GetId(), err)
	}
	want := map[string]any{"job_id": mg.GetId(), "source": "n1", "destination": "n2", "ranges": moved.String(), "version": float64(2)}
	for k, v := range want {
		if raw[k] != v {
			t.Errorf("migrations/%s: %s = %v, want %v (record %s)", mg.GetId(), k, raw[k], v, rec.Kvs[0].Value)
		}
	}
	if at, _ := raw["committed_at"].(string); at == "" {
		t.Errorf("migrations/%s has no committed_at: %s", mg.GetId(), rec.Kvs[0].Value)
	}
	if _, ok, err := st.Handoff(ctx, mg.GetId()); err != nil || ok {
		t.Errorf("hand-off record after the job: present %v, err %v; want removed", ok, err)
	}
	waitNodesHold(t, c, 2)
	checkServed(t, keys, n1, n2)
	assertNoMigrationState(t, n1, n2, n3)
}

// TestEtcdConcurrentJobs: two disjoint jobs run at once; each commit bumps
// the version under the other, and both succeed.
func TestEtcdConcurrentJobs(t *testing.T) {
	t.Parallel()
	c, _ := startEtcdCluster(t, 3)
	n1, n2, n3 := c.Node(t, "n1"), c.Node(t, "n2"), c.Node(t, "n3")
	a, b := slot.MustParseRangeSet("0-2000"), slot.MustParseRangeSet("11000-13000")
	ka, kb := keysIn(a, 1500, "a"), keysIn(b, 1500, "b")
	load(t, n1, ka, 100)
	load(t, n3, kb, 100)
	m := startEtcdMigrator(t, c, nil)
	ja := start(t, m, &migratorv1.StartMigrationRequest{Ranges: a.String(), SourceNodeId: "n1", DestinationNodeId: "n2", Parallelism: 2})
	jb := start(t, m, &migratorv1.StartMigrationRequest{Ranges: b.String(), SourceNodeId: "n3", DestinationNodeId: "n2", Parallelism: 2})
	var wg sync.WaitGroup
	finals := make([]*migratorv1.Migration, 2)
	for i, id := range []string{ja.GetId(), jb.GetId()} {
		wg.Go(func() { finals[i] = waitEnd(t, m, id) })
	}
	wg.Wait()
	for _, f := range finals {
		if f.GetPhase() != migratorv1.Phase_PHASE_SUCCEEDED {
			t.Fatalf("job %s ended %s: %s", f.GetId(), f.GetPhase(), f.GetError())
		}
	}
	versions := []uint64{finals[0].GetCommittedVersion(), finals[1].GetCommittedVersion()}
	if !(versions[0] == 2 && versions[1] == 3 || versions[0] == 3 && versions[1] == 2) {
		t.Errorf("committed versions %v, want 2 and 3", versions)
	}
	topo, err := c.Store().Load(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if topo.Version() != 3 {
		t.Fatalf("etcd holds version %d, want 3", topo.Version())
	}
	assigned(t, topo, a, "n2")
	assigned(t, topo, b, "n2")
	waitNodesHold(t, c, 3)
	checkServed(t, ka, n1, n2)
	checkServed(t, kb, n3, n2)
	assertNoMigrationState(t, n1, n2, n3)
}

// TestEtcdCommitReplanned: the topology in etcd changes between the job's
// read and its commit transaction (another change of slots outside the
// job); the commit is re-planned on the stored version and keeps that
// change.
func TestEtcdCommitReplanned(t *testing.T) {
	t.Parallel()
	c, _ := startEtcdCluster(t, 3)
	n1, n2, n3 := c.Node(t, "n1"), c.Node(t, "n2"), c.Node(t, "n3")
	moved := slot.MustParseRangeSet("100-600")
	keys := keysIn(moved, 500, "r")
	load(t, n1, keys, 100)
	const other = 15000 // n3's, moved to n1 by the concurrent change
	var once sync.Once
	var hookErr error
	hooked := 0
	var mu sync.Mutex
	m := startEtcdMigrator(t, c, func(o *migrator.Options) {
		o.CommitHook = func(ctx context.Context, _ string) {
			mu.Lock()
			hooked++
			mu.Unlock()
			once.Do(func() {
				st := c.Store()
				cur, err := st.Load(ctx)
				if err == nil {
					err = st.Commit(ctx, cur.Version(), testcluster.Move(t, cur, other, "n1"))
				}
				hookErr = err
			})
		}
	})
	mg := start(t, m, &migratorv1.StartMigrationRequest{Ranges: moved.String(), SourceNodeId: "n1", DestinationNodeId: "n2"})
	final := succeeded(t, m, mg.GetId())
	if hookErr != nil {
		t.Fatalf("the concurrent commit: %v", hookErr)
	}
	mu.Lock()
	tries := hooked
	mu.Unlock()
	if tries != 2 {
		t.Errorf("commit transactions tried %d, want 2 (stale, then re-planned)", tries)
	}
	if final.GetCommittedVersion() != 3 {
		t.Errorf("committed_version %d, want 3 (re-planned over the concurrent version 2)", final.GetCommittedVersion())
	}
	topo, err := c.Store().Load(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if topo.Version() != 3 {
		t.Fatalf("etcd holds version %d, want 3", topo.Version())
	}
	assigned(t, topo, moved, "n2")
	assigned(t, topo, slot.FromSlots([]uint16{other}), "n1")
	waitNodesHold(t, c, 3)
	checkServed(t, keys, n1, n2)
	assertNoMigrationState(t, n1, n2, n3)
}

// TestEtcdDownStart: a migration started while etcd is down fails at once
// with an error that names etcd, the nodes keep serving, and once etcd is
// back a migration succeeds.
func TestEtcdDownStart(t *testing.T) {
	t.Parallel()
	c, e := startEtcdCluster(t, 2)
	n1, n2 := c.Node(t, "n1"), c.Node(t, "n2")
	moved := slot.MustParseRangeSet("0-300")
	keys := keysIn(moved, 300, "d")
	load(t, n1, keys, 100)
	m := startEtcdMigrator(t, c, nil)
	e.Kill()
	_, err := m.client.StartMigration(testCtx(t), &migratorv1.StartMigrationRequest{Ranges: moved.String(), SourceNodeId: "n1", DestinationNodeId: "n2"})
	if err == nil || !strings.Contains(err.Error(), "etcd") {
		t.Fatalf("StartMigration with etcd down: %v, want an error naming etcd", err)
	}
	// The nodes serve from what they hold.
	load(t, n1, keys, 100)
	e.Restart()
	var mg *migratorv1.Migration
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := m.client.StartMigration(testCtx(t), &migratorv1.StartMigrationRequest{Ranges: moved.String(), SourceNodeId: "n1", DestinationNodeId: "n2"})
		if err == nil {
			mg = resp.GetMigration()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("StartMigration after etcd is back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	succeeded(t, m, mg.GetId())
	waitNodesHold(t, c, 2)
	checkServed(t, keys, n1, n2)
}

// TestEtcdDownAtHandoff: etcd goes away after the freeze, before the
// commit transaction is sent. The hand-off cannot commit, and with etcd
// gone the replica's leadership term ends too, so it stops the job where
// it is (no rollback it could not record). Once etcd is back the replica
// leads again and takes the job over from its record with no operator
// action: the job ends (committed, since the source still holds it
// frozen at the commit point, or rolled back), etcd's topology agrees
// with the outcome, the keys are served by the owner it names, and no
// node is left in a migration state.
func TestEtcdDownAtHandoff(t *testing.T) {
	t.Parallel()
	c, e := startEtcdCluster(t, 2)
	n1, n2 := c.Node(t, "n1"), c.Node(t, "n2")
	moved := slot.MustParseRangeSet("0-300")
	keys := keysIn(moved, 300, "h")
	load(t, n1, keys, 100)
	var once sync.Once
	m := startEtcdMigrator(t, c, func(o *migrator.Options) {
		o.HandoffTimeout = 2 * time.Second
		o.LeaderTTL = 2 * time.Second
		o.CommitHook = func(context.Context, string) { once.Do(e.Kill) }
	})
	mg := start(t, m, &migratorv1.StartMigrationRequest{Ranges: moved.String(), SourceNodeId: "n1", DestinationNodeId: "n2"})
	// Down for longer than the leader's term.
	time.Sleep(4 * time.Second)
	e.Restart()
	final := pollJob(t, m, mg.GetId(), func(j *migratorv1.Migration) bool { return ended(j.GetPhase()) && !j.GetRollbackPending() })
	topo, err := c.Store().Load(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	switch final.GetPhase() {
	case migratorv1.Phase_PHASE_SUCCEEDED:
		assigned(t, topo, moved, "n2")
		waitNodesHold(t, c, topo.Version())
		checkServed(t, keys, n1, n2)
	case migratorv1.Phase_PHASE_FAILED:
		if topo.Version() != 1 {
			t.Fatalf("etcd holds version %d after a hand-off that rolled back, want 1", topo.Version())
		}
		assigned(t, topo, moved, "n1")
		load(t, n1, keys, 100) // the source takes writes again
	default:
		t.Fatalf("job ended %s: %q", final.GetPhase(), final.GetError())
	}
	assertNoMigrationState(t, n1, n2)
}

// pollJob polls GetMigration at m until cond holds, through errors (a
// replica between terms, etcd coming back), for up to two minutes.
func pollJob(t *testing.T, m *mig, id string, cond func(*migratorv1.Migration) bool) *migratorv1.Migration {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := m.client.GetMigration(ctx, &migratorv1.GetMigrationRequest{JobId: id})
		cancel()
		if err == nil && cond(resp.GetMigration()) {
			return resp.GetMigration()
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s: condition not met after 2 minutes: %v, %v", id, resp.GetMigration(), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestEtcdHandshakeFallback: a source that installs the commit but does
// not record the hand-off itself (here a node that follows another prefix
// of etcd, given each version by the test a moment after the commit, as a
// source whose own path to the cluster's records is broken): the migrator
// reads the source's topology and writes the record for it, and the job
// completes.
func TestEtcdHandshakeFallback(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t)
	c := testcluster.Start(t, 1, testcluster.Options{Etcd: e}) // n1, the destination, follows etcd
	dst := c.Node(t, "n1")
	const mirrorPrefix = "/slotkv-mirror/"
	p := proctest.Start(t, proctest.Bin(t, "slotkv-storage"), "--node-id", "src", "--data-dir", t.TempDir(),
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--etcd-endpoints", e.Endpoint, "--etcd-prefix", mirrorPrefix)
	cc, err := dial.New(p.GRPC, dial.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	src := &testcluster.Node{ID: "src", Proc: p, Conn: cc}
	mirror, err := topostore.New(e.Client(t), topostore.Options{Prefix: mirrorPrefix})
	if err != nil {
		t.Fatal(err)
	}
	t1, err := topology.New(1, []topology.Node{src.Topology(), dst.Topology()}, map[string][]slot.Range{
		"src": {{Start: 0, End: 8191}}, "n1": {{Start: 8192, End: 16383}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	// push gives the source a version through its own prefix, and waits
	// until it holds it.
	push := func(tp *topology.Topology) {
		var err error
		if tp.Version() == 1 {
			_, _, err = mirror.Bootstrap(ctx, tp)
		} else {
			err = mirror.Commit(ctx, tp.Version()-1, tp)
		}
		if err != nil {
			t.Errorf("commit v%d under the source's prefix: %v", tp.Version(), err)
			return
		}
		for ctx.Err() == nil {
			resp, err := src.NodeClient().GetTopology(ctx, &storagev1.GetTopologyRequest{})
			if err == nil && resp.GetTopology().GetVersion() >= tp.Version() {
				return
			}
			time.Sleep(20 * time.Millisecond) // poll interval
		}
	}
	push(t1)
	c.SetTopology(t, t1) // bootstraps etcd, waits for n1
	moved := slot.MustParseRangeSet("0-500")
	keys := keysIn(moved, 400, "f")
	load(t, src, keys, 100)
	// The source learns each version from the test, after etcd has it.
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() {
		for tp := range c.Store().Watch(wctx) {
			if tp.Version() > 1 {
				push(tp)
			}
		}
	})
	m := startEtcdMigrator(t, c, nil)
	mg := start(t, m, &migratorv1.StartMigrationRequest{Ranges: moved.String(), SourceNodeId: "src", DestinationNodeId: "n1"})
	final := succeeded(t, m, mg.GetId())
	stop()
	wg.Wait()
	if final.GetCommittedVersion() != 2 {
		t.Errorf("committed_version %d, want 2", final.GetCommittedVersion())
	}
	checkServed(t, keys, src, dst)
	if _, ok, err := c.Store().Handoff(ctx, mg.GetId()); err != nil || ok {
		t.Errorf("hand-off record after the job: %v, %v; want removed", ok, err)
	}
	assertNoMigrationState(t, src, dst)
}

// TestEtcdPrepareAfterOtherCommit: job b is planned on version 1 and held
// before PREPARE until the disjoint job a has committed version 2 (on the
// same destination): its nodes then hold a newer version than its plan,
// and b re-plans on it and commits version 3.
func TestEtcdPrepareAfterOtherCommit(t *testing.T) {
	t.Parallel()
	c, _ := startEtcdCluster(t, 3)
	n1, n2, n3 := c.Node(t, "n1"), c.Node(t, "n2"), c.Node(t, "n3")
	a, b := slot.MustParseRangeSet("0-1000"), slot.MustParseRangeSet("12000-13000")
	ka, kb := keysIn(a, 500, "a"), keysIn(b, 500, "b")
	load(t, n1, ka, 100)
	load(t, n3, kb, 100)
	aDone := make(chan struct{})
	m := startEtcdMigrator(t, c, func(o *migrator.Options) {
		o.PhaseHook = func(ctx context.Context, id string, p migrator.Phase) error {
			if id == "b" && p == migratorv1.Phase_PHASE_PREPARE {
				select {
				case <-aDone:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil
		}
	})
	start(t, m, &migratorv1.StartMigrationRequest{JobId: "b", Ranges: b.String(), SourceNodeId: "n3", DestinationNodeId: "n2"})
	start(t, m, &migratorv1.StartMigrationRequest{JobId: "a", Ranges: a.String(), SourceNodeId: "n1", DestinationNodeId: "n2"})
	fa := succeeded(t, m, "a")
	close(aDone)
	fb := succeeded(t, m, "b")
	if fa.GetCommittedVersion() != 2 || fb.GetCommittedVersion() != 3 {
		t.Errorf("committed versions a %d, b %d; want 2 and 3", fa.GetCommittedVersion(), fb.GetCommittedVersion())
	}
	waitNodesHold(t, c, 3)
	checkServed(t, ka, n1, n2)
	checkServed(t, kb, n3, n2)
	assertNoMigrationState(t, n1, n2, n3)
}
