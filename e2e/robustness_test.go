package e2e

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slotkv/slotkv/e2e/robustness"
	downloaderv1 "github.com/slotkv/slotkv/gen/slotkv/downloader/v1"
	migratorv1 "github.com/slotkv/slotkv/gen/slotkv/migrator/v1"
	routerv1 "github.com/slotkv/slotkv/gen/slotkv/router/v1"
	"github.com/slotkv/slotkv/pkg/auth"
	"github.com/slotkv/slotkv/pkg/dataset"
	"github.com/slotkv/slotkv/pkg/faultproxy"
	"github.com/slotkv/slotkv/pkg/proctest"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/topology"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The robustness suite (make test-robustness): clients record get, put and
// delete histories through the router while the cluster is disturbed, and
// porcupine checks every history against a per-key register model (package
// e2e/robustness). It runs only when SLOTKV_ROBUSTNESS is set: it takes a
// few minutes, which make test's budget does not have.
//
// Every scenario starts its own cluster (3 storage nodes, a router, a
// migrator; all real processes), writes the clients' keys, runs the
// clients during its disturbances, waits until no slot is left in a
// migration state, reads every key once more (recorded too, so the end
// state is checked as well), and checks:
//   - the history is linearizable (an ambiguous write may have taken effect
//     or not; a read must return what the register could hold);
//   - every job ended (none hangs), a job the scenario says must succeed
//     succeeded, and a job a fault failed is followed by the same move
//     without faults, which must succeed: the cluster recovers;
//   - no node keeps a key of a slot it does not own.
//
// The summary table (ops, ambiguous, failed, linearizable per scenario) is
// logged and written to .data/robustness/summary.txt; the visualization of
// any violation is written next to it as SCENARIO.html.

// robustRanges are the clients' slots: two ranges that move between the
// nodes. bootstrap puts 0-5460 on n1, 5461-10922 on n2, the rest on n3.
var robustRanges = [2]string{"100-1100", "1101-2100"}

// robustClients record a history of gets, puts and deletes of shared keys
// through the router: several clients write the same keys, so a stale or
// lost value shows as a read no register order explains.
type robustClients struct {
	h    *robustness.History
	kv   routerv1.KVServiceClient
	keys []string
	stop context.CancelFunc
	wg   sync.WaitGroup
}

// robustKeys are n keys in the moving ranges and n/4 elsewhere (they must
// stay readable while their neighbours move).
func robustKeys(n int) []string {
	var moving slot.RangeSet
	for _, r := range robustRanges {
		moving = moving.Union(slot.MustParseRangeSet(r))
	}
	var in, out []string
	for i := 0; len(in) < n || len(out) < n/4; i++ {
		k := fmt.Sprintf("rk:%d", i)
		if moving.Contains(slot.OfString(k)) {
			if len(in) < n {
				in = append(in, k)
			}
		} else if len(out) < n/4 {
			out = append(out, k)
		}
	}
	return append(in, out...)
}

const robustCallTimeout = 5 * time.Second

// call runs one recorded operation as client id.
func (rc *robustClients) call(id int, in robustness.Input) {
	ctx, cancel := context.WithTimeout(context.Background(), robustCallTimeout)
	defer cancel()
	call := rc.h.Now()
	var out robustness.Output
	var err error
	switch in.Kind {
	case robustness.Put:
		_, err = rc.kv.Put(ctx, &routerv1.PutRequest{Key: in.Key, Data: &routerv1.PutRequest_Text{Text: in.Value}})
	case robustness.Delete:
		_, err = rc.kv.Delete(ctx, &routerv1.DeleteRequest{Key: in.Key})
	default:
		var resp *routerv1.GetResponse
		resp, err = rc.kv.Get(ctx, &routerv1.GetRequest{Key: in.Key})
		switch {
		case status.Code(err) == codes.NotFound:
			err = nil
		case err == nil:
			out = robustness.Output{Found: true, Value: resp.GetText()}
		}
	}
	rc.h.Record(id, in, call, out, err)
	if err != nil {
		// A node is down or cut off: do not pile up ambiguous writes (each
		// one widens the checker's search), give the cluster a moment.
		time.Sleep(50 * time.Millisecond)
	}
}

// startRobustClients writes every key once (recorded), then starts n
// clients doing random operations on all of them until finish.
func startRobustClients(tb testing.TB, c *cluster, keys []string, n int) *robustClients {
	tb.Helper()
	rc := &robustClients{h: robustness.NewHistory(), kv: routerv1.NewKVServiceClient(c.conn(c.router.GRPC)), keys: keys}
	for _, k := range keys {
		rc.call(n, robustness.Input{Kind: robustness.Put, Key: k, Value: k + "@init"})
	}
	ctx, cancel := context.WithCancel(context.Background())
	rc.stop = cancel
	for id := range n {
		rc.wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(id), 99))
			for i := 0; ctx.Err() == nil; i++ {
				in := robustness.Input{Key: keys[r.IntN(len(keys))]}
				switch p := r.IntN(100); {
				case p < 45:
					in.Kind = robustness.Get
				case p < 88:
					in.Kind, in.Value = robustness.Put, fmt.Sprintf("c%d-%d", id, i)
				default:
					in.Kind = robustness.Delete
				}
				rc.call(id, in)
				// About 400 calls a second per client: enough to hit every
				// phase, few enough for the checker and for 2 cores.
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	return rc
}

// finish stops the clients and reads every key once more as the last
// client (n), so the history ends with the store's final state.
func (rc *robustClients) finish(n int) {
	rc.stop()
	rc.wg.Wait()
	for _, k := range rc.keys {
		rc.call(n, robustness.Input{Kind: robustness.Get, Key: k})
	}
}

// robustRow is one line of the summary.
type robustRow struct {
	scenario     string
	stats        robustness.Stats
	verdict      string
	jobs, failed int // migration and bulk-load jobs run, and how many a fault failed
	took         time.Duration
}

var robustSummary struct {
	mu   sync.Mutex
	rows []robustRow
}

// robustDir is .data/robustness at the workspace root: the summary and
// visualizations outlive the test's temporary directories (CI keeps them).
func robustDir(tb testing.TB) string {
	tb.Helper()
	root, err := proctest.WorkspaceRoot()
	if err != nil {
		tb.Fatal(err)
	}
	dir := filepath.Join(root, ".data", "robustness")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// robustRig is one scenario's cluster, migrator and clients.
type robustRig struct {
	t       *testing.T
	c       *cluster
	m       *mover
	rc      *robustClients
	owner   [2]string // current owner of each robustRange
	jobs    int
	faulted int
	seq     int
}

const robustClientCount = 4

func newRobustRig(t *testing.T, token string) *robustRig {
	t.Helper()
	c := startCluster(t, 3, token)
	// Filler keys outside the history, so each job's snapshot takes a
	// second or two: about 250 KiB in each moving range.
	c.loadKeys(t, "fill", 4000, 1<<10)
	return &robustRig{t: t, c: c, owner: [2]string{"n1", "n1"}}
}

// run starts the clients, runs disturb, then checks the scenario.
func (g *robustRig) run(name string, disturb func()) {
	t := g.t
	began := time.Now()
	g.rc = startRobustClients(t, g.c, robustKeys(48), robustClientCount)
	// Let the clients go before the first disturbance.
	for g.rc.h.Stats().Ops < 300 {
		time.Sleep(10 * time.Millisecond)
	}
	disturb()
	time.Sleep(300 * time.Millisecond) // and a little after the last
	g.c.waitClean(t)
	g.rc.finish(robustClientCount)
	for i, r := range robustRanges {
		g.c.verifyOwnedBy(t, g.owner[i], r)
	}
	for _, n := range g.c.Nodes {
		noStrays(t, n)
	}
	viz := filepath.Join(robustDir(t), name+".html")
	_ = os.Remove(viz)
	res, err := g.rc.h.Check(2*time.Minute, viz)
	if err != nil {
		t.Error(err)
	}
	row := robustRow{scenario: name, stats: res.Stats, verdict: string(res.Verdict), jobs: g.jobs, failed: g.faulted, took: time.Since(began)}
	robustSummary.mu.Lock()
	robustSummary.rows = append(robustSummary.rows, row)
	robustSummary.mu.Unlock()
	t.Logf("%s: %d ops, %d ambiguous, %d failed reads, %s; %d jobs, %d failed by the fault, took %s",
		name, res.Ops, res.Ambiguous, res.FailedReads, res.Verdict, g.jobs, g.faulted, row.took.Round(time.Millisecond))
	if !res.Linearizable() {
		t.Errorf("%s: history of %d operations is %s, not linearizable; visualization: %s", name, res.Ops, res.Verdict, res.Visualization)
	}
}

// moveTo migrates robustRanges[i] to node to with the given migrator and
// returns the ended job. mustSucceed makes anything but SUCCEEDED an error.
func (g *robustRig) moveTo(m *mover, i int, to string, mustSucceed bool, during func(id string)) *migratorv1.Migration {
	t := g.t
	t.Helper()
	g.seq++
	g.jobs++
	id := fmt.Sprintf("j%02d-%s-%s-%s", g.seq, robustRanges[i], g.owner[i], to)
	m.begin(t, &migratorv1.StartMigrationRequest{JobId: id, Ranges: robustRanges[i],
		SourceNodeId: g.owner[i], DestinationNodeId: to, Parallelism: 2,
		// A range holds about 250 KiB: a snapshot of about two seconds,
		// so the clients write during every phase, and a low lag
		// threshold, so catch-up runs rounds.
		RateBytesPerSecond: 128 << 10, BatchRecords: 16, LagThreshold: 5})
	if during != nil {
		during(id)
	}
	job := m.wait(t, id, over)
	switch {
	case job.GetPhase() == migratorv1.Phase_PHASE_SUCCEEDED:
		g.owner[i] = to
	case mustSucceed:
		t.Errorf("job %s ended %v: %s", id, job.GetPhase(), job.GetError())
	default:
		g.faulted++
	}
	t.Logf("job %s: %v %s (%d keys, %d changes, pause %.1f ms)", id, job.GetPhase(), job.GetError(), job.GetKeys(), job.GetChangesApplied(), job.GetWritePauseMs())
	return job
}

// other is a node that is neither a nor b.
func other(a, b string) string {
	for _, n := range []string{"n1", "n2", "n3"} {
		if n != a && n != b {
			return n
		}
	}
	return ""
}

// restartRouter SIGKILLs the router and starts it again on its ports.
func (c *cluster) restartRouter(tb testing.TB) {
	tb.Helper()
	c.router.Kill()
	c.router = proctest.Start(tb, proctest.Bin(tb, "slotkv-router"),
		append([]string{"--grpc-addr", c.router.GRPC, "--http-addr", c.router.HTTP,
			"--token", c.Token}, c.EtcdArgs()...)...)
	c.waitReady(c.router.HTTP)
}

// killAt is one kill of the kill scenarios: which process, in which phase.
type killAt struct {
	phase migratorv1.Phase
	// mid: kill once the phase has done some of its work (the snapshot has
	// copied keys) instead of holding the job at the phase's start.
	mid bool
	// committed: the phase is after the commit point, so the job must
	// finish (recovery forward) and succeed.
	committed bool
}

var killPhases = []killAt{
	{phase: migratorv1.Phase_PHASE_PREPARE},
	{phase: migratorv1.Phase_PHASE_SNAPSHOT, mid: true},
	{phase: migratorv1.Phase_PHASE_VERIFY},
	{phase: migratorv1.Phase_PHASE_CATCH_UP},
	{phase: migratorv1.Phase_PHASE_HANDOFF},
	{phase: migratorv1.Phase_PHASE_CLEANUP, committed: true},
}

// nodeDowntime is how long a killed storage node stays down: longer than
// the migrator's hold at a phase start, so the phase's work runs into the
// dead node.
const nodeDowntime = 1500 * time.Millisecond

// killEachPhase moves the first range back and forth, SIGKILLing victim
// (source, destination or migrator) in each phase of killPhases. The
// migrator holds each job for a second at the start of the phase (its
// testing aid --pause-before-phase) so the kill lands in it, or the kill
// waits for the phase's first progress (mid). A killed node is started
// again on its ports and data directory after nodeDowntime, a killed
// migrator at once (its restart recovery rolls the job back, or forward
// once committed). A job the kill failed is followed by the same move
// without a kill, which must succeed.
func (g *robustRig) killEachPhase(victim string) {
	t := g.t
	for _, k := range killPhases {
		var args []string
		if !k.mid {
			args = []string{"--pause-before-phase", k.phase.String(), "--pause-before-phase-timeout", "1s"}
		}
		m := startMover(t, g.c, args...)
		from := g.owner[0]
		to := other(from, "n3")
		job := g.moveTo(m, 0, to, k.committed, func(id string) {
			j := m.wait(t, id, func(j *migratorv1.Migration) bool {
				return over(j) || j.GetPhase() == k.phase && (!k.mid || j.GetKeys() > 0)
			})
			if j.GetPhase() != k.phase {
				t.Errorf("job %s ended %v before the kill in %v: %s", id, j.GetPhase(), k.phase, j.GetError())
				return
			}
			switch victim {
			case "migrator":
				t.Logf("killing the migrator (pid %d) in %v", m.proc.Pid(), k.phase)
				m.proc.Kill()
				m.start(t, m.proc.GRPC, m.proc.HTTP)
			default:
				id := from
				if victim == "destination" {
					id = to
				}
				n := g.c.Node(t, id)
				t.Logf("killing the %s %s (pid %d) in %v", victim, id, n.Proc.Pid(), k.phase)
				n.Proc.Kill()
				time.Sleep(nodeDowntime)
				g.c.Restart(t, n)
			}
		})
		if job.GetPhase() != migratorv1.Phase_PHASE_SUCCEEDED {
			// The rollback may still be retrying toward the restarted node
			// in the background; until it is done the slots stay reserved
			// and the rerun would be refused as a conflict.
			m.wait(t, job.GetId(), func(j *migratorv1.Migration) bool { return !j.GetRollbackPending() })
			g.c.waitClean(t)
			g.moveTo(m, 0, to, true, nil)
		}
		if err := m.proc.Stop(); err != nil {
			t.Errorf("stop migrator: %v", err)
		}
	}
}

// TestRobustness runs the scenarios one after the other (each is a whole
// cluster under load; 2 cores do not run two well) and prints the summary.
func TestRobustness(t *testing.T) {
	if os.Getenv("SLOTKV_ROBUSTNESS") == "" {
		t.Skip("the robustness suite runs with SLOTKV_ROBUSTNESS=1 (make test-robustness)")
	}
	scenarios := []struct {
		name string
		run  func(g *robustRig)
	}{
		{"migrations", func(g *robustRig) {
			// Back to back, then two concurrent disjoint jobs at a time,
			// including one node that is the source of one and the
			// destination of the other.
			g.m = startMover(g.t, g.c)
			g.run("migrations", func() {
				g.moveTo(g.m, 0, "n2", true, nil)
				g.moveTo(g.m, 1, "n3", true, nil)
				for _, round := range [][2]string{{"n3", "n2"}, {"n1", "n1"}, {"n2", "n3"}} {
					var wg sync.WaitGroup
					for i, to := range round {
						if g.owner[i] == to {
							continue
						}
						wg.Go(func() { g.moveTo(g.m, i, to, true, nil) })
					}
					wg.Wait()
				}
			})
		}},
		{"kill-source", func(g *robustRig) { g.run("kill-source", func() { g.killEachPhase("source") }) }},
		{"kill-destination", func(g *robustRig) { g.run("kill-destination", func() { g.killEachPhase("destination") }) }},
		{"kill-migrator", func(g *robustRig) { g.run("kill-migrator", func() { g.killEachPhase("migrator") }) }},
		{"kill-router", func(g *robustRig) {
			g.m = startMover(g.t, g.c)
			g.run("kill-router", func() {
				for i, to := range []string{"n2", "n3", "n1"} {
					g.moveTo(g.m, i%2, to, true, func(string) {
						time.Sleep(300 * time.Millisecond)
						g.t.Logf("killing the router (pid %d)", g.c.router.Pid())
						g.c.restartRouter(g.t)
					})
				}
			})
		}},
		{"stream-cut", func(g *robustRig) { g.run("stream-cut", g.cutStreams) }},
		{"bulk-load", func(g *robustRig) { g.run("bulk-load", g.bulkLoadDuringMigration) }},
		{"soak", func(g *robustRig) { g.run("soak", g.soak) }},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			sc.run(newRobustRig(t, "robust-"+sc.name))
		})
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-18s %8s %10s %7s %-14s %5s %7s %8s\n", "scenario", "ops", "ambiguous", "failed", "linearizable", "jobs", "faulted", "took")
	robustSummary.mu.Lock()
	for _, r := range robustSummary.rows {
		fmt.Fprintf(&b, "%-18s %8d %10d %7d %-14s %5d %7d %8s\n", r.scenario, r.stats.Ops, r.stats.Ambiguous, r.stats.FailedReads,
			map[bool]string{true: "yes", false: "NO (" + r.verdict + ")"}[r.verdict == "Ok"], r.jobs, r.failed, r.took.Round(time.Second))
	}
	robustSummary.mu.Unlock()
	t.Logf("robustness summary (failed = reads that returned an error; ambiguous = writes that did):\n%s", b.String())
	if err := os.WriteFile(filepath.Join(robustDir(t), "summary.txt"), []byte(b.String()), 0o644); err != nil {
		t.Error(err)
	}
}

// cutStreams puts a faultproxy in front of n2 in the topology (so the
// migrator's streams and the router's calls to n2 pass through it) and cuts
// every connection through it in the middle of a snapshot and of a
// catch-up. A job the cut failed is run again, uncut, and must succeed.
func (g *robustRig) cutStreams() {
	t := g.t
	n2 := g.c.Node(t, "n2")
	px, err := faultproxy.New(n2.Proc.GRPC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { px.Close() })
	g.c.pushTopology(t, func(nodes []topology.Node) {
		for i := range nodes {
			if nodes[i].ID == "n2" {
				nodes[i].GRPCAddress = px.Addr()
			}
		}
	})
	m := startMover(t, g.c)
	for _, p := range []migratorv1.Phase{migratorv1.Phase_PHASE_SNAPSHOT, migratorv1.Phase_PHASE_CATCH_UP} {
		// n1 -> n2, then back: the destination's and the source's streams.
		for _, to := range []string{"n2", "n1"} {
			job := g.moveTo(m, 0, to, false, func(id string) {
				j := m.wait(t, id, func(j *migratorv1.Migration) bool {
					return over(j) || j.GetPhase() == p && (p != migratorv1.Phase_PHASE_SNAPSHOT || j.GetKeys() > 0)
				})
				if over(j) {
					t.Logf("job %s ended before the cut in %v", id, p)
					return
				}
				t.Logf("cutting %d connections to n2 in %v", px.Cut(), p)
			})
			if job.GetPhase() != migratorv1.Phase_PHASE_SUCCEEDED {
				g.c.waitClean(t)
				g.moveTo(m, 0, to, true, nil)
			}
		}
	}
	if px.Accepted() == 0 {
		t.Errorf("nothing connected through the proxy: the cut scenario cut nothing")
	}
}

// pushTopology gives every node the current topology (as the router sees
// it) with version+1 and the node list changed by edit.
func (c *cluster) pushTopology(tb testing.TB, edit func([]topology.Node)) {
	tb.Helper()
	kv := routerv1.NewKVServiceClient(c.conn(c.router.GRPC))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := kv.GetTopology(ctx, &routerv1.GetTopologyRequest{Refresh: true})
	if err != nil {
		tb.Fatal(err)
	}
	cur, err := topology.FromProto(resp.GetTopology())
	if err != nil {
		tb.Fatal(err)
	}
	nodes := cur.Nodes()
	edit(nodes)
	ranges := map[string][]slot.Range{}
	for _, n := range nodes {
		ranges[n.ID] = cur.RangesOf(n.ID)
	}
	next, err := topology.New(cur.Version()+1, nodes, ranges)
	if err != nil {
		tb.Fatal(err)
	}
	c.SetTopology(tb, next)
}

// bulkLoadDuringMigration loads a dataset (its keys spread over every
// slot, the clients' included) while the clients' ranges migrate; every
// key of the dataset must be readable after, with its value.
func (g *robustRig) bulkLoadDuringMigration() {
	t := g.t
	dir, input := buildDataset(t, 6000, 64, "64KiB")
	want := expected(t, input)
	fs := serveDataset(t, dir)
	l := startLoader(t, g.c)
	m := startMover(t, g.c)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	g.jobs++
	if _, err := l.api.StartJob(ctx, &downloaderv1.StartJobRequest{JobId: "bulk", ManifestUrl: fs.url + "/" + dataset.ManifestName}); err != nil {
		t.Fatalf("start bulk load: %v", err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { g.moveTo(m, 0, "n2", true, nil) })
	wg.Go(func() { g.moveTo(m, 1, "n3", true, nil) })
	wg.Wait()
	job := l.wait(t, "bulk", ended)
	if job.GetState() != downloaderv1.State_STATE_SUCCEEDED {
		t.Errorf("bulk load ended %v: %s", job.GetState(), job.GetError())
	}
	g.moveTo(m, 0, "n1", true, nil)
	g.c.checkAll(t, want)
}

// soakFor is how long the soak runs its steady load.
const soakFor = time.Minute

// soak runs the clients' steady load for soakFor with no disturbance and
// samples every process's goroutines and live heap (after a GC, through
// pprof) each second: neither may grow between the second ten seconds and
// the last ten. Growth there is a leak (a goroutine per call, a cache
// without bound), not warm-up.
func (g *robustRig) soak() {
	t := g.t
	procs := map[string]string{"router": g.c.router.HTTP}
	for _, n := range g.c.Nodes {
		procs[n.ID] = n.Proc.HTTP
	}
	type sample struct{ goroutines, heap float64 }
	samples := map[string][]sample{}
	began := time.Now()
	for time.Since(began) < soakFor {
		time.Sleep(time.Second)
		for name, addr := range procs {
			gr, heap, err := g.c.runtimeStats(addr)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			samples[name] = append(samples[name], sample{float64(gr), float64(heap)})
		}
	}
	mean := func(ss []sample, f func(sample) float64) float64 {
		var sum float64
		for _, s := range ss {
			sum += f(s)
		}
		return sum / float64(len(ss))
	}
	gor := func(s sample) float64 { return s.goroutines }
	heap := func(s sample) float64 { return s.heap }
	for name, ss := range samples {
		second, last := ss[10:20], ss[len(ss)-10:]
		g0, g1 := mean(second, gor), mean(last, gor)
		h0, h1 := mean(second, heap), mean(last, heap)
		t.Logf("soak %s: goroutines %.0f -> %.0f, live heap %.1f -> %.1f MiB", name, g0, g1, h0/(1<<20), h1/(1<<20))
		// A little slack for what is in flight at a sample, and for GC
		// timing; a leak of one goroutine or a few KiB per call (tens of
		// thousands of calls a minute) is far beyond it.
		if g1 > g0*1.1+10 {
			t.Errorf("soak %s: goroutines grew from %.0f to %.0f between the second and the last ten seconds", name, g0, g1)
		}
		if h1 > h0*1.25+4<<20 {
			t.Errorf("soak %s: live heap grew from %.1f to %.1f MiB between the second and the last ten seconds", name, h0/(1<<20), h1/(1<<20))
		}
	}
}

// runtimeStats reads a process's goroutine count and live heap (HeapAlloc
// right after a GC) from its pprof endpoints.
func (c *cluster) runtimeStats(httpAddr string) (goroutines int, heap uint64, err error) {
	get := func(path string) (string, error) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+httpAddr+path, nil)
		auth.SetHeader(req.Header, c.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("GET %s: %s", path, resp.Status)
		}
		return string(b), err
	}
	body, err := get("/debug/pprof/goroutine?debug=1")
	if err != nil {
		return 0, 0, err
	}
	if _, err := fmt.Sscanf(body, "goroutine profile: total %d", &goroutines); err != nil {
		return 0, 0, fmt.Errorf("goroutine profile: %w", err)
	}
	body, err = get("/debug/pprof/heap?gc=1&debug=1")
	if err != nil {
		return 0, 0, err
	}
	i := strings.Index(body, "# HeapAlloc = ")
	if i < 0 {
		return 0, 0, fmt.Errorf("heap profile without HeapAlloc")
	}
	if _, err := fmt.Sscanf(body[i:], "# HeapAlloc = %d", &heap); err != nil {
		return 0, 0, fmt.Errorf("heap profile: %w", err)
	}
	return goroutines, heap, nil
}
