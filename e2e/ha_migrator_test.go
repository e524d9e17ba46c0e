package e2e

import (
	"context"
	"testing"
	"time"

	migratorv1 "github.com/slotkv/slotkv/gen/slotkv/migrator/v1"
	"github.com/slotkv/slotkv/pkg/leader"
)

// haLeaderTTL is the migrators' --leader-ttl here: how long a killed
// leader keeps its term before the other replica takes over.
const haLeaderTTL = "2s"

// startMovers starts n migrator replicas on the cluster's etcd with the
// extra flags and returns them with the one that leads.
func startMovers(t *testing.T, c *cluster, n int, extra ...string) (all []*mover, lead *mover) {
	t.Helper()
	for range n {
		all = append(all, startMover(t, c, append([]string{"--leader-ttl", haLeaderTTL}, extra...)...))
	}
	return all, leadingMover(t, c, all, nil)
}

// leadingMover waits until a replica other than not leads, as etcd's
// election names it (by its gRPC address), and returns it.
func leadingMover(t *testing.T, c *cluster, all []*mover, not *mover) *mover {
	t.Helper()
	el, err := leader.New(c.Etcd().Client(t), leader.Options{Prefix: c.Store().Key(""), Role: "migrator", Value: "e2e-observer"})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		addr, err := el.Leader(ctx)
		cancel()
		for _, m := range all {
			if err == nil && m != not && m.proc.GRPC == addr {
				return m
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no migrator replica leads after a minute: %q, %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func otherMover(all []*mover, m *mover) *mover {
	for _, o := range all {
		if o != m {
			return o
		}
	}
	return nil
}

// TestHAMigrator runs two migrator replicas and SIGKILLs the leader mid-job,
// with writers on the moving slots through the router the whole time:
// once mid-SNAPSHOT (the other replica takes the job over and rolls it
// back), once in HANDOFF after etcd committed it (held there by the
// testing aid --pause-after-commit; the other replica rolls it forward:
// the slots end on the destination). No operator action in between: no
// client call fails, every key is served, no slot stays in a migration
// state and no node keeps keys of slots it does not own.
func TestHAMigrator(t *testing.T) {
	t.Parallel()
	const ranges = "100-1500"
	c := startCluster(t, 3, "ha-migrator")
	want := c.loadKeys(t, "k", 20_000, 0)
	w := startWriters(t, c, keysIn(want, ranges), 2)
	req := func(id string) *migratorv1.StartMigrationRequest {
		return &migratorv1.StartMigrationRequest{JobId: id, Ranges: ranges, SourceNodeId: "n1", DestinationNodeId: "n2", Parallelism: 2}
	}

	// Mid-SNAPSHOT: slowed down so the kill lands while keys are copied.
	all, lead := startMovers(t, c, 2)
	fol := otherMover(all, lead)
	r := req("ha-snapshot")
	r.RateBytesPerSecond = 4 << 10
	fol.begin(t, r) // forwarded to the leader
	mid := lead.wait(t, r.JobId, func(j *migratorv1.Migration) bool { return j.GetKeys() > 0 || over(j) })
	if mid.GetPhase() != migratorv1.Phase_PHASE_SNAPSHOT {
		t.Fatalf("job in %v before the kill, want SNAPSHOT: slow it down more", mid.GetPhase())
	}
	t.Logf("killing the leading migrator (pid %d) mid-SNAPSHOT (%d keys copied)", lead.proc.Pid(), mid.GetKeys())
	lead.proc.Kill()
	if next := leadingMover(t, c, all, lead); next != fol {
		t.Fatalf("leader after the kill: %s, want the other replica %s", next.proc.GRPC, fol.proc.GRPC)
	}
	job := fol.wait(t, r.JobId, func(j *migratorv1.Migration) bool { return over(j) && !j.GetRollbackPending() })
	if job.GetPhase() != migratorv1.Phase_PHASE_FAILED {
		t.Fatalf("job after the takeover: %v %q; want FAILED (rolled back)", job.GetPhase(), job.GetError())
	}
	t.Logf("rolled back by the new leader: %s", job.GetError())
	c.waitClean(t)
	c.verifyOwnedBy(t, "n1", ranges)
	if err := fol.proc.Stop(); err != nil {
		t.Errorf("stop migrator: %v", err)
	}

	// HANDOFF after the commit.
	all, lead = startMovers(t, c, 2, "--pause-after-commit", "--pause-before-phase-timeout", "2m")
	fol = otherMover(all, lead)
	r = req("ha-handoff")
	lead.begin(t, r)
	for {
		topo, err := c.Store().Load(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if topo.Version() > 1 {
			break
		}
		if j := lead.wait(t, r.JobId, func(*migratorv1.Migration) bool { return true }); over(j) {
			t.Fatalf("job ended %v %q before its commit", j.GetPhase(), j.GetError())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if j := fol.wait(t, r.JobId, func(*migratorv1.Migration) bool { return true }); j.GetPhase() != migratorv1.Phase_PHASE_HANDOFF {
		t.Fatalf("job at the commit: %v, want HANDOFF", j.GetPhase())
	}
	t.Logf("killing the leading migrator (pid %d) in HANDOFF after the commit", lead.proc.Pid())
	lead.proc.Kill()
	job = fol.wait(t, r.JobId, over)
	if job.GetPhase() != migratorv1.Phase_PHASE_SUCCEEDED {
		t.Fatalf("job after the takeover: %v %q; want SUCCEEDED (rolled forward)", job.GetPhase(), job.GetError())
	}
	c.verifyOwnedBy(t, "n2", ranges)

	for k, v := range w.finish(t) {
		want[k] = v
	}
	c.waitClean(t)
	c.verify(t, want)
	for _, n := range c.Nodes {
		noStrays(t, n)
	}
}
