package e2e

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	migratorv1 "github.com/slotkv/slotkv/gen/slotkv/migrator/v1"
	routerv1 "github.com/slotkv/slotkv/gen/slotkv/router/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/proctest"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/testcluster"
)

// mover is a migrator process and its client.
type mover struct {
	proc *proctest.Proc
	args []string
	env  []string
	api  migratorv1.MigratorServiceClient
}

func startMover(tb testing.TB, c *cluster, extra ...string) *mover {
	tb.Helper()
	return startMoverEnv(tb, c, nil, extra...)
}

// startMoverEnv is startMover with env added to the process's environment.
func startMoverEnv(tb testing.TB, c *cluster, env []string, extra ...string) *mover {
	tb.Helper()
	m := &mover{env: env}
	m.args = append(append([]string{"--token", c.Token}, c.EtcdArgs()...), extra...)
	m.start(tb, "127.0.0.1:0", "127.0.0.1:0")
	return m
}

func (m *mover) start(tb testing.TB, grpcAddr, httpAddr string) {
	tb.Helper()
	args := append([]string{"--grpc-addr", grpcAddr, "--http-addr", httpAddr}, m.args...)
	m.proc = proctest.StartWith(tb, proctest.Options{Env: m.env}, proctest.Bin(tb, "slotkv-migrator"), args...)
	m.api = migratorv1.NewMigratorServiceClient(benchConnToken(tb, m.proc.GRPC, tokenOf(m.args)))
}

func (m *mover) begin(tb testing.TB, req *migratorv1.StartMigrationRequest) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := m.api.StartMigration(ctx, req); err != nil {
		tb.Fatalf("start migration %s: %v", req.GetJobId(), err)
	}
}

// wait polls the job until done says so and returns it.
func (m *mover) wait(tb testing.TB, id string, done func(*migratorv1.Migration) bool) *migratorv1.Migration {
	tb.Helper()
	deadline := time.Now().Add(4 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := m.api.GetMigration(ctx, &migratorv1.GetMigrationRequest{JobId: id})
		cancel()
		if err == nil && done(resp.GetMigration()) {
			return resp.GetMigration()
		}
		if time.Now().After(deadline) {
			tb.Fatalf("migration %s: not done after 4 minutes: %v %v", id, resp.GetMigration(), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func over(j *migratorv1.Migration) bool {
	switch j.GetPhase() {
	case migratorv1.Phase_PHASE_SUCCEEDED, migratorv1.Phase_PHASE_FAILED, migratorv1.Phase_PHASE_CANCELED:
		return true
	}
	return false
}

func inPhase(p migratorv1.Phase) func(*migratorv1.Migration) bool {
	return func(j *migratorv1.Migration) bool { return j.GetPhase() == p || over(j) }
}

// loadKeys writes n keys through the router and returns key -> value;
// with size > 0 every value is padded or cut to size bytes.
func (c *cluster) loadKeys(tb testing.TB, prefix string, n, size int) map[string]string {
	tb.Helper()
	kv := routerv1.NewKVServiceClient(c.conn(c.router.GRPC))
	out := make(map[string]string, n)
	pad := strings.Repeat("x", size)
	batch := 2000
	if size > 0 {
		batch = max(1, min(batch, (1<<20)/size)) // about 1 MiB per call
	}
	for i := 0; i < n; i += batch {
		req := &routerv1.MultiPutRequest{}
		for j := i; j < min(i+batch, n); j++ {
			k, v := fmt.Sprintf("%s:%07d", prefix, j), fmt.Sprintf("v0-%d", j)
			if size > 0 {
				v = (v + "-" + pad)[:size]
			}
			out[k] = v
			req.Entries = append(req.Entries, &routerv1.KeyValue{Key: k, Data: &routerv1.KeyValue_Text{Text: v}})
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		_, err := kv.MultiPut(ctx, req)
		cancel()
		if err != nil {
			tb.Fatalf("load: %v", err)
		}
	}
	return out
}

// slotStates returns, for one node, every slot range that is not OWNED.
func slotStates(n *testcluster.Node) ([]*clusterv1.SlotStateRange, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := n.NodeClient().GetNodeInfo(ctx, &storagev1.GetNodeInfoRequest{})
	if err != nil {
		return nil, fmt.Errorf("node info of %s: %w", n.ID, err)
	}
	var out []*clusterv1.SlotStateRange
	for _, s := range info.GetSlotStates() {
		if s.GetState() != clusterv1.SlotState_SLOT_STATE_OWNED {
			out = append(out, s)
		}
	}
	return out, nil
}

// waitClean waits until every node answers and none has a slot MIGRATING,
// IMPORTING or FROZEN (a node just restarted may take a moment to answer).
func (c *cluster) waitClean(tb testing.TB) {
	tb.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		var left []string
		for _, n := range c.Nodes {
			states, err := slotStates(n)
			if err != nil {
				left = append(left, err.Error())
			}
			for _, s := range states {
				left = append(left, fmt.Sprintf("%s %d-%d %v", n.ID, s.GetRange().GetStart(), s.GetRange().GetEnd(), s.GetState()))
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("slots still in a migration state after a minute: %v", left)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// noStrays checks that a node stores exactly the keys of the slots it
// owns: a source keeps no copy of moved slots, a destination no leftover.
func noStrays(tb testing.TB, n *testcluster.Node) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := n.NodeClient().GetNodeInfo(ctx, &storagev1.GetNodeInfoRequest{})
	if err != nil {
		tb.Fatal(err)
	}
	cnt, err := n.StorageClient().Count(ctx, &storagev1.CountRequest{Ranges: info.GetOwned()})
	if err != nil {
		tb.Fatal(err)
	}
	if cnt.GetCount() != info.GetKeyCount() {
		tb.Fatalf("%s stores %d keys but owns slots holding %d: %d stray keys", n.ID, info.GetKeyCount(), cnt.GetCount(), info.GetKeyCount()-cnt.GetCount())
	}
}

// verify reads every key through the router: present ones with their value,
// deleted ones (value "") absent.
func (c *cluster) verify(tb testing.TB, want map[string]string) {
	tb.Helper()
	kv := routerv1.NewKVServiceClient(c.conn(c.router.GRPC))
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	for i := 0; i < len(keys); i += 1000 {
		batch := keys[i:min(i+1000, len(keys))]
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		resp, err := kv.MultiGet(ctx, &routerv1.MultiGetRequest{Keys: batch})
		cancel()
		if err != nil {
			tb.Fatalf("multi-get: %v", err)
		}
		for j, e := range resp.GetEntries() {
			w := want[batch[j]]
			if (w == "") == e.GetFound() || e.GetText() != w {
				tb.Fatalf("key %s: found=%v %q, want %q (\"\" = deleted)", batch[j], e.GetFound(), e.GetText(), w)
			}
		}
	}
}

// writers put, overwrite and delete keys of the given slots through the
// router until stopped, logging every acknowledged operation. Each key
// belongs to one writer, so its last acknowledged operation is its state.
type writers struct {
	mu       sync.Mutex
	state    map[string]string // key -> last acknowledged value, "" deleted
	ops      atomic.Int64
	failures atomic.Int64
	firstErr atomic.Value
	stop     context.CancelFunc
	wg       sync.WaitGroup
}

func startWriters(tb testing.TB, c *cluster, keys []string, n int) *writers {
	tb.Helper()
	kv := routerv1.NewKVServiceClient(c.conn(c.router.GRPC))
	ctx, cancel := context.WithCancel(context.Background())
	w := &writers{state: map[string]string{}, stop: cancel}
	for g := 0; g < n; g++ {
		var mine []string
		for _, k := range keys {
			h := fnv.New32a()
			h.Write([]byte(k))
			if int(h.Sum32()%uint32(n)) == g {
				mine = append(mine, k)
			}
		}
		w.wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 7))
			for i := 0; ctx.Err() == nil; i++ {
				k := mine[r.IntN(len(mine))]
				var err error
				var val string
				cctx, ccancel := context.WithTimeout(context.Background(), 20*time.Second)
				if r.IntN(5) == 0 {
					_, err = kv.Delete(cctx, &routerv1.DeleteRequest{Key: k})
				} else {
					val = fmt.Sprintf("w%d-%d", g, i)
					_, err = kv.Put(cctx, &routerv1.PutRequest{Key: k, Data: &routerv1.PutRequest_Text{Text: val}})
				}
				ccancel()
				w.ops.Add(1)
				if err != nil {
					// Not acknowledged: the key's state is unknown now, so
					// the check below would be meaningless; count it.
					w.failures.Add(1)
					w.firstErr.CompareAndSwap(nil, fmt.Sprintf("%s: %v", k, err))
					continue
				}
				w.mu.Lock()
				w.state[k] = val
				w.mu.Unlock()
			}
		})
	}
	return w
}

func (w *writers) finish(tb testing.TB) map[string]string {
	tb.Helper()
	w.stop()
	w.wg.Wait()
	if n := w.failures.Load(); n > 0 {
		tb.Fatalf("%d of %d client writes failed; first: %v", n, w.ops.Load(), w.firstErr.Load())
	}
	return w.state
}

// keysIn returns the keys of want whose slot is in ranges.
func keysIn(want map[string]string, ranges string) []string {
	set := slot.MustParseRangeSet(ranges)
	var out []string
	for k := range want {
		if set.Contains(slot.OfString(k)) {
			out = append(out, k)
		}
	}
	return out
}

// TestMigrationUnderLoad moves slot ranges holding part of 200k keys from
// n1 to n2 while writers put, overwrite and delete keys of those ranges
// through the router for the whole job; afterwards every acknowledged write
// is there, through the router and directly on the new owner, the source
// keeps no copy, and no client call failed.
func TestMigrationUnderLoad(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3, "move-secret")
	want := c.loadKeys(t, "user", 200_000, 0)
	const ranges = "0-1000,2000-2600"
	moving := keysIn(want, ranges)
	m := startMover(t, c)
	w := startWriters(t, c, moving, 4)
	for w.ops.Load() < 200 { // writers are going before the job starts
		time.Sleep(10 * time.Millisecond)
	}
	m.begin(t, &migratorv1.StartMigrationRequest{JobId: "under-load", Ranges: ranges,
		SourceNodeId: "n1", DestinationNodeId: "n2", Parallelism: 4, LagThreshold: 50})
	job := m.wait(t, "under-load", over)
	opsAtEnd := w.ops.Load()
	for w.ops.Load() < opsAtEnd+200 { // and after it, on the new owner
		time.Sleep(10 * time.Millisecond)
	}
	for k, v := range w.finish(t) {
		want[k] = v
	}
	if job.GetPhase() != migratorv1.Phase_PHASE_SUCCEEDED {
		t.Fatalf("migration %v: %s (%s)", job.GetPhase(), job.GetError(), job.GetErrorRange())
	}
	t.Logf("moved %d keys (%d bytes) in %d batches, %d changes replayed in %d rounds, write pause %.1f ms, %d client writes",
		job.GetKeys(), job.GetBytes(), job.GetBatches(), job.GetChangesApplied(), job.GetCatchUpRounds(), job.GetWritePauseMs(), w.ops.Load())
	c.verify(t, want)

	// Directly from the new owner.
	n2 := c.Nodes[1]
	for i := 0; i < len(moving); i += 1000 {
		var batch [][]byte
		for _, k := range moving[i:min(i+1000, len(moving))] {
			batch = append(batch, []byte(k))
		}
		resp, err := n2.StorageClient().BatchGet(context.Background(), &storagev1.BatchGetRequest{Keys: batch})
		if err != nil {
			t.Fatalf("batch get on n2: %v", err)
		}
		for _, it := range resp.GetItems() {
			if v := want[string(it.GetKey())]; it.GetFound() != (v != "") || string(it.GetValue()) != v {
				t.Fatalf("n2 %s: found=%v %q, want %q", it.GetKey(), it.GetFound(), it.GetValue(), v)
			}
		}
	}
	c.waitClean(t)
	for _, n := range c.Nodes {
		noStrays(t, n)
	}
}

// TestMigrationFaults injects the faults of the issue; after each the
// cluster serves every key it had and no slot stays in a migration state.
func TestMigrationFaults(t *testing.T) {
	t.Parallel()
	const ranges = "100-1500"
	start := func(id string) *migratorv1.StartMigrationRequest {
		return &migratorv1.StartMigrationRequest{JobId: id, Ranges: ranges, SourceNodeId: "n1", DestinationNodeId: "n2", Parallelism: 2}
	}

	t.Run("destination killed during the snapshot", func(t *testing.T) {
		t.Parallel()
		c := startCluster(t, 3, "f1")
		want := c.loadKeys(t, "k", 20_000, 0)
		m := startMover(t, c)
		req := start("dest-killed")
		req.RateBytesPerSecond = 4 << 10 // about ten seconds for the ~40 KB to move
		m.begin(t, req)
		mid := m.wait(t, req.JobId, func(j *migratorv1.Migration) bool { return j.GetKeys() > 0 || over(j) })
		if mid.GetPhase() != migratorv1.Phase_PHASE_SNAPSHOT {
			t.Fatalf("job in %v before the kill, want SNAPSHOT: slow it down more", mid.GetPhase())
		}
		c.Nodes[1].Proc.Kill()
		job := m.wait(t, req.JobId, over)
		if job.GetPhase() != migratorv1.Phase_PHASE_FAILED || job.GetError() == "" {
			t.Fatalf("job %v %q, want FAILED with the error", job.GetPhase(), job.GetError())
		}
		t.Logf("failed as expected: %s (range %s)", job.GetError(), job.GetErrorRange())
		c.verifyOwnedBy(t, "n1", ranges)
		c.Restart(t, c.Nodes[1])
		c.waitClean(t)
		c.verify(t, want)
		noStrays(t, c.Nodes[1])
	})

	t.Run("migrator killed during catch-up", func(t *testing.T) {
		t.Parallel()
		c := startCluster(t, 3, "f2")
		want := c.loadKeys(t, "k", 20_000, 0)
		m := startMover(t, c, "--pause-before-phase", "PHASE_CATCH_UP")
		w := startWriters(t, c, keysIn(want, ranges), 2)
		m.begin(t, start("mover-killed"))
		m.wait(t, "mover-killed", inPhase(migratorv1.Phase_PHASE_CATCH_UP))
		m.proc.Kill()
		m.args = m.args[:len(m.args)-2] // restart without the pause
		m.start(t, m.proc.GRPC, m.proc.HTTP)
		job := m.wait(t, "mover-killed", over)
		t.Logf("after the restart: %v %s", job.GetPhase(), job.GetError())
		for k, v := range w.finish(t) {
			want[k] = v
		}
		c.waitClean(t)
		c.verify(t, want)
		for _, n := range c.Nodes {
			noStrays(t, n)
		}
	})

	t.Run("cancel in each phase", func(t *testing.T) {
		t.Parallel()
		c := startCluster(t, 3, "f3")
		want := c.loadKeys(t, "k", 10_000, 0)
		for _, p := range []migratorv1.Phase{migratorv1.Phase_PHASE_PREPARE, migratorv1.Phase_PHASE_SNAPSHOT,
			migratorv1.Phase_PHASE_VERIFY, migratorv1.Phase_PHASE_CATCH_UP, migratorv1.Phase_PHASE_HANDOFF} {
			m := startMover(t, c, "--pause-before-phase", p.String())
			id := "cancel-" + strings.ToLower(strings.TrimPrefix(p.String(), "PHASE_"))
			m.begin(t, start(id))
			m.wait(t, id, inPhase(p))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := m.api.CancelMigration(ctx, &migratorv1.CancelMigrationRequest{JobId: id})
			cancel()
			if err != nil {
				t.Fatalf("cancel in %v: %v", p, err)
			}
			job := m.wait(t, id, over)
			if job.GetPhase() != migratorv1.Phase_PHASE_CANCELED {
				t.Fatalf("cancel in %v: job ended %v %s", p, job.GetPhase(), job.GetError())
			}
			c.waitClean(t)
			c.verifyOwnedBy(t, "n1", ranges)
			noStrays(t, c.Nodes[1])
			m.proc.Stop()
		}
		c.verify(t, want)
	})

	t.Run("wrong token on the destination", func(t *testing.T) {
		t.Parallel()
		c := startCluster(t, 3, "f4")
		want := c.loadKeys(t, "k", 5_000, 0)
		n2 := c.Nodes[1]
		g, h := n2.Proc.GRPC, n2.Proc.HTTP
		if err := n2.Proc.Stop(); err != nil {
			t.Fatal(err)
		}
		n2.Proc = proctest.Start(t, proctest.Bin(t, "slotkv-storage"), append([]string{"--node-id", n2.ID, "--data-dir", n2.DataDir,
			"--grpc-addr", g, "--http-addr", h, "--token", "not-the-cluster-token"}, c.EtcdArgs()...)...)
		m := startMover(t, c)
		m.begin(t, start("bad-token"))
		job := m.wait(t, "bad-token", over)
		if job.GetPhase() != migratorv1.Phase_PHASE_FAILED || !strings.Contains(job.GetError(), "n2") {
			t.Fatalf("job %v %q, want FAILED naming n2", job.GetPhase(), job.GetError())
		}
		t.Logf("failed as expected: %s", job.GetError())
		c.Restart(t, n2) // back with the cluster token
		c.waitClean(t)
		c.verify(t, want)
	})

	t.Run("source killed before commit", func(t *testing.T) {
		t.Parallel()
		c := startCluster(t, 3, "f5")
		want := c.loadKeys(t, "k", 20_000, 0)
		m := startMover(t, c, "--pause-before-phase", "PHASE_HANDOFF", "--pause-before-phase-timeout", "3s")
		m.begin(t, start("source-killed"))
		m.wait(t, "source-killed", inPhase(migratorv1.Phase_PHASE_HANDOFF))
		c.Nodes[0].Proc.Kill()
		job := m.wait(t, "source-killed", over)
		if job.GetPhase() != migratorv1.Phase_PHASE_FAILED {
			t.Fatalf("job %v %q, want FAILED", job.GetPhase(), job.GetError())
		}
		t.Logf("failed as expected: %s", job.GetError())
		c.Restart(t, c.Nodes[0])
		c.waitClean(t)
		c.verify(t, want)
		noStrays(t, c.Nodes[1])
	})
}

// verifyOwnedBy checks that the topology still gives ranges to node id.
func (c *cluster) verifyOwnedBy(tb testing.TB, id, ranges string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, n := range c.Nodes {
		resp, err := n.NodeClient().GetTopology(ctx, &storagev1.GetTopologyRequest{})
		if err != nil {
			continue // a node that is down
		}
		for _, a := range resp.GetTopology().GetAssignments() {
			if a.GetNodeId() == id {
				continue
			}
			for _, r := range a.GetRanges() {
				if slot.MustParseRangeSet(ranges).Overlaps(slot.MustParseRangeSet(fmt.Sprintf("%d-%d", r.GetStart(), r.GetEnd()))) {
					tb.Fatalf("%s's topology gives part of %s to %s", n.ID, ranges, a.GetNodeId())
				}
			}
		}
	}
}
