package migrator_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	migratorv1 "github.com/slotkv/slotkv/gen/slotkv/migrator/v1"
	"github.com/slotkv/slotkv/pkg/jobstore"
	"github.com/slotkv/slotkv/pkg/leader"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/testcluster"
	"github.com/slotkv/slotkv/pkg/topostore"
	"github.com/slotkv/slotkv/services/migrator"
)

// haTTL is the replicas' leader TTL in these tests: short, so a takeover
// after a lost leader is quick (etcd rounds a lease up to its minimum).
const haTTL = 2 * time.Second

// startReplicas starts n migrators on the cluster's etcd, each with
// adjust applied, and returns them with the one that leads first.
func startReplicas(t *testing.T, c *testcluster.Cluster, n int, adjust func(*migrator.Options)) (all []*mig, lead *mig) {
	t.Helper()
	for range n {
		all = append(all, startEtcdMigrator(t, c, func(o *migrator.Options) {
			o.LeaderTTL = haTTL
			if adjust != nil {
				adjust(o)
			}
		}))
	}
	return all, leaderOf(t, c, all, nil)
}

// leaderOf waits until a replica other than not leads (etcd's election
// names it by its address) and returns it.
func leaderOf(t *testing.T, c *testcluster.Cluster, all []*mig, not *mig) *mig {
	t.Helper()
	el, err := leader.New(c.Etcd().Client(t), leader.Options{Prefix: c.Store().Key(""), Role: "migrator", Value: "observer"})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		addr, err := el.Leader(testCtx(t))
		for _, m := range all {
			if err == nil && m.addr == addr && m != not {
				return m
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no replica leads after a minute: leader %q, %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func other(all []*mig, m *mig) *mig {
	for _, o := range all {
		if o != m {
			return o
		}
	}
	return nil
}

// TestHAMigratorFollowerAndTakeover: two replicas; the follower forwards a
// StartMigration to the leader and answers Get, List and Watch from the
// records in etcd. The leader stops while the job is held in SNAPSHOT:
// the follower takes over with no operator action and rolls the job back
// (the source serves, etcd's topology unchanged, no migration state
// left), and then runs the same move to the end.
func TestHAMigratorFollowerAndTakeover(t *testing.T) {
	t.Parallel()
	c, _ := startEtcdCluster(t, 2)
	n1, n2 := c.Node(t, "n1"), c.Node(t, "n2")
	moved := slot.MustParseRangeSet("0-400")
	keys := keysIn(moved, 400, "ha")
	load(t, n1, keys, 100)
	all, lead := startReplicas(t, c, 2, func(o *migrator.Options) {
		o.PauseBeforePhase = []migrator.Phase{migratorv1.Phase_PHASE_SNAPSHOT}
		o.PauseTimeout = time.Minute
	})
	fol := other(all, lead)

	// The follower forwards the write to the leader.
	mg := start(t, fol, &migratorv1.StartMigrationRequest{JobId: "ha-1", Ranges: moved.String(), SourceNodeId: "n1", DestinationNodeId: "n2"})
	waitPhase(t, lead, mg.GetId(), migratorv1.Phase_PHASE_SNAPSHOT)

	t.Run("follower reads", func(t *testing.T) {
		ctx := testCtx(t)
		got, err := fol.client.GetMigration(ctx, &migratorv1.GetMigrationRequest{JobId: "ha-1"})
		if err != nil || got.GetMigration().GetPhase() != migratorv1.Phase_PHASE_SNAPSHOT ||
			got.GetMigration().GetRanges() != moved.String() || got.GetMigration().GetSourceNodeId() != "n1" {
			t.Fatalf("GetMigration at the follower: %v, %v; want ha-1 in SNAPSHOT", got.GetMigration(), err)
		}
		list, err := fol.client.ListMigrations(ctx, &migratorv1.ListMigrationsRequest{})
		if err != nil || len(list.GetMigrations()) != 1 || list.GetMigrations()[0].GetId() != "ha-1" {
			t.Fatalf("ListMigrations at the follower: %v, %v; want ha-1", list.GetMigrations(), err)
		}
		_, err = fol.client.GetMigration(ctx, &migratorv1.GetMigrationRequest{JobId: "nope"})
		if status.Code(err) != codes.NotFound {
			t.Fatalf("GetMigration of an unknown job at the follower: %v, want NotFound", err)
		}
		s, err := fol.client.WatchMigration(ctx, &migratorv1.WatchMigrationRequest{JobId: "ha-1", Interval: durationpb.New(20 * time.Millisecond)})
		if err != nil {
			t.Fatal(err)
		}
		w, err := s.Recv()
		if err != nil || w.GetMigration().GetId() != "ha-1" || w.GetMigration().GetPhase() != migratorv1.Phase_PHASE_SNAPSHOT {
			t.Fatalf("WatchMigration at the follower: %v, %v", w.GetMigration(), err)
		}
		// A write the follower cannot forward (it was forwarded once
		// already) is refused naming the leader.
		_, err = fol.client.UpdateMigration(forwardedCtx(ctx), &migratorv1.UpdateMigrationRequest{JobId: "ha-1", RateBytesPerSecond: new(uint64)})
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), lead.addr) {
			t.Fatalf("UpdateMigration forwarded twice: %v; want FailedPrecondition naming the leader %s", err, lead.addr)
		}
	})

	// The leader goes away mid-job: the follower takes the job over and
	// rolls it back (it never reached its commit point).
	lead.stop(t)
	next := leaderOf(t, c, all, lead)
	if next != fol {
		t.Fatalf("leader after the stop is %s, want the follower %s", next.addr, fol.addr)
	}
	final := pollJob(t, fol, "ha-1", func(j *migratorv1.Migration) bool { return ended(j.GetPhase()) && !j.GetRollbackPending() })
	if final.GetPhase() != migratorv1.Phase_PHASE_FAILED || !strings.Contains(final.GetError(), "the new leader took the job over") {
		t.Fatalf("job after the takeover: %s %q; want FAILED by the takeover", final.GetPhase(), final.GetError())
	}
	topo, err := c.Store().Load(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if topo.Version() != 1 {
		t.Fatalf("etcd holds topology version %d after a rolled back job, want 1", topo.Version())
	}
	assertNoMigrationState(t, n1, n2)
	load(t, n1, keys, 100) // the source takes writes

	// The new leader runs the move to the end (held a moment in SNAPSHOT).
	mg = start(t, fol, &migratorv1.StartMigrationRequest{JobId: "ha-2", Ranges: moved.String(), SourceNodeId: "n1", DestinationNodeId: "n2"})
	waitPhase(t, fol, mg.GetId(), migratorv1.Phase_PHASE_SNAPSHOT)
	if _, err := fol.client.UpdateMigration(testCtx(t), &migratorv1.UpdateMigrationRequest{JobId: "ha-2", RateBytesPerSecond: new(uint64)}); err != nil {
		t.Fatal(err)
	}
}

// TestHAMigratorTakeoverAfterCommit: the leader stops after etcd committed
// the hand-off (held there by the testing aid): the other replica takes
// the job over and rolls it forward to SUCCEEDED, the keys served by the
// destination.
func TestHAMigratorTakeoverAfterCommit(t *testing.T) {
	t.Parallel()
	c, _ := startEtcdCluster(t, 2)
	n1, n2 := c.Node(t, "n1"), c.Node(t, "n2")
	moved := slot.MustParseRangeSet("100-700")
	keys := keysIn(moved, 300, "hc")
	load(t, n1, keys, 100)
	all, lead := startReplicas(t, c, 2, func(o *migrator.Options) {
		o.PauseAfterCommit = true
		o.PauseTimeout = time.Minute
	})
	fol := other(all, lead)
	mg := start(t, lead, &migratorv1.StartMigrationRequest{Ranges: moved.String(), SourceNodeId: "n1", DestinationNodeId: "n2"})
	// Committed in etcd, the job still in HANDOFF.
	for {
		topo, err := c.Store().Load(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		if topo.Version() == 2 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if j := pollJob(t, fol, mg.GetId(), func(*migratorv1.Migration) bool { return true }); j.GetPhase() != migratorv1.Phase_PHASE_HANDOFF {
		t.Fatalf("job at the commit: %s, want HANDOFF", j.GetPhase())
	}
	lead.stop(t)
	final := pollJob(t, fol, mg.GetId(), func(j *migratorv1.Migration) bool { return ended(j.GetPhase()) })
	if final.GetPhase() != migratorv1.Phase_PHASE_SUCCEEDED || final.GetCommittedVersion() != 2 {
		t.Fatalf("job after the takeover: %s %q (committed version %d); want SUCCEEDED at 2", final.GetPhase(), final.GetError(), final.GetCommittedVersion())
	}
	waitNodesHold(t, c, 2)
	checkServed(t, keys, n1, n2)
	assertNoMigrationState(t, n1, n2)
}

// TestHAFence: a commit or a job record guarded by a term that ended
// changes nothing (topostore.ErrFenced); under the current term it lands.
func TestHAFence(t *testing.T) {
	t.Parallel()
	c, _ := startEtcdCluster(t, 2)
	cli := c.Etcd().Client(t)
	st := c.Store()
	term := func(value string) (leader.Term, context.CancelFunc, <-chan struct{}) {
		el, err := leader.New(cli, leader.Options{Prefix: st.Key(""), Role: "fence-test", Value: value, TTL: haTTL})
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan leader.Term, 1)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = el.Run(ctx, func(ctx context.Context, t leader.Term) error {
				got <- t
				<-ctx.Done()
				return nil
			})
		}()
		t.Cleanup(func() { cancel(); <-done })
		select {
		case tm := <-got:
			return tm, cancel, done
		case <-time.After(time.Minute):
			t.Fatal("no term within a minute")
		}
		return leader.Term{}, nil, nil
	}
	old, endOld, oldDone := term("a")
	endOld()
	<-oldDone // resigned: the term is over
	cur, _, _ := term("b")

	ctx := testCtx(t)
	topo, err := st.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	next, err := topo.Reassign(slot.MustParseRangeSet("0-10"), "n2")
	if err != nil {
		t.Fatal(err)
	}
	err = st.CommitIf(ctx, []clientv3.Cmp{old.Fence()}, topo.Version(), next)
	if !errors.Is(err, topostore.ErrFenced) {
		t.Fatalf("commit under the ended term: %v, want ErrFenced", err)
	}
	if now, _ := st.Load(ctx); now.Version() != topo.Version() {
		t.Fatalf("a fenced commit changed the topology to version %d", now.Version())
	}
	if err := st.CommitIf(ctx, []clientv3.Cmp{cur.Fence()}, topo.Version(), next); err != nil {
		t.Fatalf("commit under the current term: %v", err)
	}

	// A job record: refused under the ended term, saved under the
	// current one.
	type rec struct{ Phase string }
	fenced := func(tm leader.Term) jobstore.Fence {
		return func() (clientv3.Cmp, bool) { return tm.Fence(), true }
	}
	prefix := st.Key("jobs/migrations/")
	stale, err := jobstore.OpenEtcd[rec](cli, prefix, fenced(old))
	if err != nil {
		t.Fatal(err)
	}
	if err := stale.Put("j1", &rec{Phase: "FAILED"}); !errors.Is(err, jobstore.ErrNotLeader) {
		t.Fatalf("record under the ended term: %v, want jobstore.ErrNotLeader", err)
	}
	live, err := jobstore.OpenEtcd[rec](cli, prefix, fenced(cur))
	if err != nil {
		t.Fatal(err)
	}
	if err := live.Put("j1", &rec{Phase: "SNAPSHOT"}); err != nil {
		t.Fatalf("record under the current term: %v", err)
	}
	got, ok, err := live.Get(ctx, "j1")
	if err != nil || !ok || got.Phase != "SNAPSHOT" {
		t.Fatalf("record read back: %v %v %v, want the current term's", got, ok, err)
	}
}

// forwardedCtx marks a call as forwarded by another replica already, as
// pkg/leader's ForwardUnary does.
func forwardedCtx(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "slotkv-forwarded-by", "another-replica")
}

// TestHAMigratorDeposed: the leader's etcd session is revoked under it
// while a job is held in SNAPSHOT (as when the leader is cut off from
// etcd for longer than its TTL), the process staying up. Its term ends:
// it stops the job without a rollback, the other replica takes the job
// over and rolls it back, and the deposed replica, now a follower, answers
// reads from etcd and forwards writes to the new leader.
func TestHAMigratorDeposed(t *testing.T) {
	t.Parallel()
	c, _ := startEtcdCluster(t, 2)
	n1, n2 := c.Node(t, "n1"), c.Node(t, "n2")
	moved := slot.MustParseRangeSet("0-300")
	load(t, n1, keysIn(moved, 200, "dp"), 100)
	all, lead := startReplicas(t, c, 2, func(o *migrator.Options) {
		o.PauseBeforePhase = []migrator.Phase{migratorv1.Phase_PHASE_SNAPSHOT}
		o.PauseTimeout = time.Minute
	})
	fol := other(all, lead)
	start(t, lead, &migratorv1.StartMigrationRequest{JobId: "dp-1", Ranges: moved.String(), SourceNodeId: "n1", DestinationNodeId: "n2"})
	waitPhase(t, lead, "dp-1", migratorv1.Phase_PHASE_SNAPSHOT)

	// Revoke the lease of the leader's election key.
	cli := c.Etcd().Client(t)
	ctx := testCtx(t)
	resp, err := cli.Get(ctx, c.Store().Key("election/migrator/"), clientv3.WithFirstCreate()...)
	if err != nil || len(resp.Kvs) == 0 || string(resp.Kvs[0].Value) != lead.addr {
		t.Fatalf("leader's election key: %v, %v; want one naming %s", resp.Kvs, err, lead.addr)
	}
	if _, err := cli.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	if next := leaderOf(t, c, all, lead); next != fol {
		t.Fatalf("leader after the revoke: %s, want %s", next.addr, fol.addr)
	}
	final := pollJob(t, lead, "dp-1", func(j *migratorv1.Migration) bool { return ended(j.GetPhase()) && !j.GetRollbackPending() })
	if final.GetPhase() != migratorv1.Phase_PHASE_FAILED || !strings.Contains(final.GetError(), "the new leader took the job over") {
		t.Fatalf("job after the takeover, read at the deposed replica: %s %q; want FAILED by the takeover", final.GetPhase(), final.GetError())
	}
	assertNoMigrationState(t, n1, n2)
	// The deposed replica forwards a write to the new leader.
	mg := start(t, lead, &migratorv1.StartMigrationRequest{JobId: "dp-2", Ranges: moved.String(), SourceNodeId: "n1", DestinationNodeId: "n2"})
	waitPhase(t, fol, mg.GetId(), migratorv1.Phase_PHASE_SNAPSHOT)
}
