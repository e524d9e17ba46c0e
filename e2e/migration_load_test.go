package e2e

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	migratorv1 "github.com/slotkv/slotkv/gen/slotkv/migrator/v1"
	routerv1 "github.com/slotkv/slotkv/gen/slotkv/router/v1"
	"github.com/slotkv/slotkv/pkg/slot"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// This file holds the migration tests of issue 10 "Must show": many
// back-to-back and concurrent migrations under a steady client load, and a
// source killed in the middle of the snapshot. They compose the harness of
// migration_test.go (cluster, mover, verify, waitClean, noStrays).

// keyState is what a client knows of one of its keys: the values it may
// hold ("" = absent). One value once a write was acknowledged; more when
// writes since the last acknowledged one failed (their effect is unknown).
type keyState struct {
	possible []string
}

func (s *keyState) acked(v string) { s.possible = append(s.possible[:0], v) }

func (s *keyState) unknown(v string) {
	if !slices.Contains(s.possible, v) {
		s.possible = append(s.possible, v)
	}
}

// loadClients are n goroutines that put, delete, get, multi-put, multi-get
// and multi-delete their own keys through the router until stopped. Each
// key belongs to one client, so the client knows the value every read must
// return: its last acknowledged write. Every failed call and every read
// that does not return that value is recorded.
type loadClients struct {
	ops   atomic.Int64
	reads atomic.Int64
	stop  context.CancelFunc
	wg    sync.WaitGroup

	mu       sync.Mutex
	failures []string       // every failed call: op, keys, error text
	byError  map[string]int // failed calls per op and error text
	bad      []string       // reads that returned a value the client did not expect
	states   []map[string]*keyState
}

const loadCallTimeout = 20 * time.Second

// startLoadClients starts n clients over the keys of initial (key -> value
// at the start), each owning the keys that hash to it. Half of the
// single-key calls go to keys for which hot is true (the keys of the
// slots that move), the others and the multi-key calls to any of the
// client's keys.
func startLoadClients(tb testing.TB, c *cluster, initial map[string]string, n int, hot func(string) bool) *loadClients {
	tb.Helper()
	kv := routerv1.NewKVServiceClient(c.conn(c.router.GRPC))
	ctx, cancel := context.WithCancel(context.Background())
	lc := &loadClients{stop: cancel, byError: map[string]int{}, states: make([]map[string]*keyState, n)}
	keys := make([]string, 0, len(initial))
	for k := range initial {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for g := 0; g < n; g++ {
		st := map[string]*keyState{}
		var mine, mineHot []string
		for _, k := range keys {
			h := fnv.New32a()
			h.Write([]byte(k))
			if int(h.Sum32()%uint32(n)) == g {
				mine = append(mine, k)
				if hot(k) {
					mineHot = append(mineHot, k)
				}
				st[k] = &keyState{possible: []string{initial[k]}}
			}
		}
		lc.states[g] = st
		if len(mine) == 0 || len(mineHot) == 0 {
			tb.Fatalf("client %d owns %d keys, %d of them hot", g, len(mine), len(mineHot))
		}
		lc.wg.Go(func() { lc.run(ctx, kv, g, mine, mineHot, st) })
	}
	return lc
}

func (lc *loadClients) fail(op string, keys []string, err error) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	ks := strings.Join(keys, ",")
	if len(keys) > 3 {
		ks = fmt.Sprintf("%s,... (%d keys)", strings.Join(keys[:3], ","), len(keys))
	}
	lc.failures = append(lc.failures, fmt.Sprintf("%s %s %s: %v", time.Now().Format("15:04:05.000"), op, ks, err))
	lc.byError[op+": "+err.Error()]++
}

// check compares what a read returned with what the client knows.
func (lc *loadClients) check(op string, st *keyState, key, got string) {
	lc.reads.Add(1)
	if slices.Contains(st.possible, got) {
		return
	}
	lc.mu.Lock()
	defer lc.mu.Unlock()
	lc.bad = append(lc.bad, fmt.Sprintf("%s %s %s returned %q, want one of %q (\"\" = absent)",
		time.Now().Format("15:04:05.000"), op, key, got, st.possible))
}

func entryValue(e *routerv1.Entry) string {
	if !e.GetFound() {
		return ""
	}
	if e.GetText() != "" {
		return e.GetText()
	}
	return string(e.GetValue())
}

func (lc *loadClients) run(ctx context.Context, kv routerv1.KVServiceClient, g int, mine, hot []string, st map[string]*keyState) {
	r := rand.New(rand.NewPCG(uint64(g), 11))
	one := func() string {
		if r.IntN(2) == 0 {
			return hot[r.IntN(len(hot))]
		}
		return mine[r.IntN(len(mine))]
	}
	pick := func(n int) []string {
		n = min(n, len(mine))
		idx := r.Perm(len(mine))[:n]
		out := make([]string, n)
		for i, j := range idx {
			out[i] = mine[j]
		}
		return out
	}
	for i := 0; ctx.Err() == nil; i++ {
		val := fmt.Sprintf("c%d-%d", g, i)
		cctx, ccancel := context.WithTimeout(context.Background(), loadCallTimeout)
		switch op := r.IntN(100); {
		case op < 30: // Put
			k := one()
			if _, err := kv.Put(cctx, &routerv1.PutRequest{Key: k, Data: &routerv1.PutRequest_Text{Text: val}}); err != nil {
				lc.fail("Put", []string{k}, err)
				st[k].unknown(val)
			} else {
				st[k].acked(val)
			}
		case op < 38: // Delete
			k := one()
			if _, err := kv.Delete(cctx, &routerv1.DeleteRequest{Key: k}); err != nil {
				lc.fail("Delete", []string{k}, err)
				st[k].unknown("")
			} else {
				st[k].acked("")
			}
		case op < 60: // Get
			k := one()
			resp, err := kv.Get(cctx, &routerv1.GetRequest{Key: k})
			switch {
			case status.Code(err) == codes.NotFound:
				lc.check("Get", st[k], k, "")
			case err != nil:
				lc.fail("Get", []string{k}, err)
			default:
				got := resp.GetText()
				if got == "" {
					got = string(resp.GetValue())
				}
				lc.check("Get", st[k], k, got)
			}
		case op < 75: // MultiPut over several slots
			ks := pick(4 + r.IntN(5))
			req := &routerv1.MultiPutRequest{}
			for j, k := range ks {
				req.Entries = append(req.Entries, &routerv1.KeyValue{Key: k, Data: &routerv1.KeyValue_Text{Text: fmt.Sprintf("%s.%d", val, j)}})
			}
			_, err := kv.MultiPut(cctx, req)
			if err != nil {
				lc.fail("MultiPut", ks, err)
			}
			for j, k := range ks {
				if err != nil {
					st[k].unknown(fmt.Sprintf("%s.%d", val, j))
				} else {
					st[k].acked(fmt.Sprintf("%s.%d", val, j))
				}
			}
		case op < 95: // MultiGet over several slots
			ks := pick(8 + r.IntN(9))
			resp, err := kv.MultiGet(cctx, &routerv1.MultiGetRequest{Keys: ks})
			switch {
			case err != nil:
				lc.fail("MultiGet", ks, err)
			case len(resp.GetFailed()) > 0 || len(resp.GetEntries()) != len(ks):
				lc.fail("MultiGet", ks, fmt.Errorf("%d entries for %d keys, failed partitions %v", len(resp.GetEntries()), len(ks), resp.GetFailed()))
			default:
				for j, e := range resp.GetEntries() {
					if e.GetKey() != ks[j] {
						lc.fail("MultiGet", ks, fmt.Errorf("entry %d is key %q, want %q", j, e.GetKey(), ks[j]))
						break
					}
					lc.check("MultiGet", st[ks[j]], ks[j], entryValue(e))
				}
			}
		default: // MultiDelete
			ks := pick(2 + r.IntN(3))
			_, err := kv.MultiDelete(cctx, &routerv1.MultiDeleteRequest{Keys: ks})
			if err != nil {
				lc.fail("MultiDelete", ks, err)
			}
			for _, k := range ks {
				if err != nil {
					st[k].unknown("")
				} else {
					st[k].acked("")
				}
			}
		}
		ccancel()
		lc.ops.Add(1)
	}
}

// finish stops the clients and returns each key's state.
func (lc *loadClients) finish() map[string]*keyState {
	lc.stop()
	lc.wg.Wait()
	out := map[string]*keyState{}
	for _, st := range lc.states {
		for k, s := range st {
			out[k] = s
		}
	}
	return out
}

// report fails tb for every failed call and every unexpected read.
func (lc *loadClients) report(tb testing.TB) {
	tb.Helper()
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if len(lc.failures) > 0 {
		var b strings.Builder
		fmt.Fprintf(&b, "%d of %d client calls failed.\nBy op and error:\n", len(lc.failures), lc.ops.Load())
		type kc struct {
			k string
			n int
		}
		var agg []kc
		for k, n := range lc.byError {
			agg = append(agg, kc{k, n})
		}
		sort.Slice(agg, func(i, j int) bool { return agg[i].n > agg[j].n || agg[i].n == agg[j].n && agg[i].k < agg[j].k })
		for _, a := range agg {
			fmt.Fprintf(&b, "  %5d × %s\n", a.n, a.k)
		}
		b.WriteString("Every failed call:\n")
		for _, f := range lc.failures {
			b.WriteString("  " + f + "\n")
		}
		tb.Error(b.String())
	}
	if len(lc.bad) > 0 {
		tb.Errorf("%d of %d reads returned a value other than the client's last acknowledged write:\n  %s",
			len(lc.bad), lc.reads.Load(), strings.Join(lc.bad, "\n  "))
	}
}

// verifyStates reads every key through the router and reports every one
// whose value is not one its client may have left (the last acknowledged
// write, or a failed one after it).
func (c *cluster) verifyStates(tb testing.TB, want map[string]*keyState) {
	tb.Helper()
	kv := routerv1.NewKVServiceClient(c.conn(c.router.GRPC))
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var bad []string
	for i := 0; i < len(keys); i += 500 {
		batch := keys[i:min(i+500, len(keys))]
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		resp, err := kv.MultiGet(ctx, &routerv1.MultiGetRequest{Keys: batch})
		cancel()
		if err != nil {
			tb.Fatalf("final multi-get: %v", err)
		}
		if len(resp.GetEntries()) != len(batch) {
			tb.Fatalf("final multi-get: %d entries for %d keys", len(resp.GetEntries()), len(batch))
		}
		for j, e := range resp.GetEntries() {
			if got := entryValue(e); !slices.Contains(want[batch[j]].possible, got) {
				bad = append(bad, fmt.Sprintf("%s (slot %d): %q, want one of %q", batch[j], slot.OfString(batch[j]), got, want[batch[j]].possible))
			}
		}
	}
	if len(bad) > 0 {
		tb.Errorf("%d of %d keys do not hold their last acknowledged value:\n  %s", len(bad), len(keys), strings.Join(bad, "\n  "))
	}
}

// ownerOf returns the node that owns every slot of rs in the router's
// (refreshed) topology.
func (c *cluster) ownerOf(tb testing.TB, rs slot.RangeSet) string {
	tb.Helper()
	kv := routerv1.NewKVServiceClient(c.conn(c.router.GRPC))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := kv.GetTopology(ctx, &routerv1.GetTopologyRequest{Refresh: true})
	if err != nil {
		tb.Fatal(err)
	}
	var owners []string
	for _, a := range resp.GetTopology().GetAssignments() {
		for _, r := range a.GetRanges() {
			ar := slot.MustParseRangeSet(fmt.Sprintf("%d-%d", r.GetStart(), r.GetEnd()))
			if ar.Overlaps(rs) && !slices.Contains(owners, a.GetNodeId()) {
				owners = append(owners, a.GetNodeId())
			}
		}
	}
	if len(owners) != 1 {
		tb.Fatalf("%s is owned by %v in topology version %d, want one node", rs, owners, resp.GetTopology().GetVersion())
	}
	owner := owners[0]
	return owner
}

// TestMigrationsUnderClientLoad runs 20 migrations back to back, in rounds
// of one to three concurrent jobs with disjoint ranges (some sharing a
// source, some a destination, some a node that is the source of one and
// the destination of another), moving four ranges around three nodes so
// that the clients' keys move many times, while 8 clients put, delete,
// get, multi-put, multi-get and multi-delete their own keys through the
// router for the whole test. No client call may fail, every read returns
// the client's last acknowledged write, every job SUCCEEDS, and at the end
// every key holds its last acknowledged value, no slot is left in a
// migration state and no node keeps a key of a slot it does not own.
func TestMigrationsUnderClientLoad(t *testing.T) {
	t.Parallel()
	began := time.Now()
	c := startCluster(t, 3, "load-secret")
	initial := c.loadKeys(t, "lk", 4000, 64)
	m := startMover(t, c)

	// Four ranges that move; the rest of the keys stay where they are.
	ranges := map[string]slot.RangeSet{
		"A": slot.MustParseRangeSet("100-1500"),
		"B": slot.MustParseRangeSet("2000-3000"),
		"C": slot.MustParseRangeSet("6000-7000"),
		"D": slot.MustParseRangeSet("11000-12000"),
	}
	names := []string{"A", "B", "C", "D"}
	owner := map[string]string{}
	for _, n := range names {
		owner[n] = c.ownerOf(t, ranges[n])
		t.Logf("range %s %s: %d of %d keys, on %s", n, ranges[n], len(keysIn(initial, ranges[n].String())), len(initial), owner[n])
	}
	if owner["A"] != "n1" || owner["B"] != "n1" || owner["C"] != "n2" || owner["D"] != "n3" {
		t.Fatalf("bootstrap gave %v, the rounds below expect A,B on n1, C on n2, D on n3", owner)
	}
	type move struct{ rng, to string }
	rounds := [][]move{
		{{"A", "n2"}},                           // n1->n2
		{{"A", "n3"}, {"C", "n1"}},              // shared source n2
		{{"B", "n2"}, {"D", "n1"}},              // n1->n2, n3->n1: n1 source and destination
		{{"A", "n1"}, {"B", "n3"}, {"C", "n2"}}, // a ring n3->n1, n2->n3, n1->n2
		{{"A", "n2"}},                           // n1->n2
		{{"D", "n3"}, {"B", "n1"}},              // n1->n3, n3->n1: crossing
		{{"A", "n1"}, {"C", "n1"}},              // shared source n2 and destination n1
		{{"A", "n3"}, {"B", "n3"}, {"D", "n2"}}, // shared source n1 and destination n3, n3->n2
		{{"A", "n1"}, {"B", "n2"}},              // shared source n3
		{{"C", "n3"}, {"D", "n3"}},              // shared destination n3
	}

	var moving slot.RangeSet
	for _, n := range names {
		moving = moving.Union(ranges[n])
	}
	lc := startLoadClients(t, c, initial, 8, func(k string) bool { return moving.Contains(slot.OfString(k)) })
	for lc.ops.Load() < 300 { // the clients are going before the first job
		time.Sleep(10 * time.Millisecond)
	}

	var jobs, failedJobs int
	moves := map[string]int{}
	for ri, round := range rounds {
		roundStart := time.Now()
		var ids []string
		idRange := map[string]string{}
		idTo := map[string]string{}
		for _, mv := range round {
			src := owner[mv.rng]
			if src == mv.to {
				t.Errorf("round %d: range %s is still on %s (an earlier job failed); not moving it", ri+1, mv.rng, src)
				continue
			}
			jobs++
			id := fmt.Sprintf("r%02d-%s-%s-%s", ri+1, mv.rng, src, mv.to)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, err := m.api.StartMigration(ctx, &migratorv1.StartMigrationRequest{JobId: id, Ranges: ranges[mv.rng].String(),
				SourceNodeId: src, DestinationNodeId: mv.to, Parallelism: 2,
				// A few seconds per job (a range holds 15-25 KB), so the
				// clients write during every phase, and a low lag
				// threshold, so catch-up replays their changes in rounds.
				RateBytesPerSecond: 6 << 10, LagThreshold: 10})
			cancel()
			if err != nil {
				failedJobs++
				t.Errorf("job %s refused: %v", id, err)
				continue
			}
			ids = append(ids, id)
			idRange[id], idTo[id] = mv.rng, mv.to
		}
		for _, id := range ids {
			job := m.wait(t, id, over)
			if job.GetPhase() != migratorv1.Phase_PHASE_SUCCEEDED {
				failedJobs++
				t.Errorf("job %s ended %v: %s (range %s)", id, job.GetPhase(), job.GetError(), job.GetErrorRange())
				continue
			}
			owner[idRange[id]] = idTo[id]
			moves[idRange[id]]++
			t.Logf("job %s: %d keys, %d changes in %d rounds, write pause %.1f ms, to hand-off %s, cleanup %s",
				id, job.GetKeys(), job.GetChangesApplied(), job.GetCatchUpRounds(), job.GetWritePauseMs(),
				job.GetTimeToHandoff().AsDuration().Round(time.Millisecond), job.GetCleanupDuration().AsDuration().Round(time.Millisecond))
		}
		t.Logf("round %d: %d jobs in %s, %d client calls so far", ri+1, len(ids), time.Since(roundStart).Round(time.Millisecond), lc.ops.Load())
	}
	opsAtEnd := lc.ops.Load()
	for lc.ops.Load() < opsAtEnd+300 { // and after the last one
		time.Sleep(10 * time.Millisecond)
	}
	final := lc.finish()
	t.Logf("%d jobs (%d did not succeed), moves per range %v, %d client calls, %d reads checked",
		jobs, failedJobs, moves, lc.ops.Load(), lc.reads.Load())
	if jobs != 20 {
		t.Errorf("%d jobs ran, want 20", jobs)
	}
	lc.report(t)
	c.verifyStates(t, final)
	for _, n := range names {
		c.verifyOwnedBy(t, owner[n], ranges[n].String())
	}
	c.waitClean(t)
	for _, n := range c.Nodes {
		noStrays(t, n)
	}
	t.Logf("took %s", time.Since(began).Round(time.Millisecond))
}

// TestMigrationSourceKilledMidSnapshot kills the source (SIGKILL) while a
// rate-limited job is in SNAPSHOT with some keys copied: the job must end
// FAILED with an error that names the source, not the destination; once
// the source is back every key is there, no slot stays MIGRATING or
// IMPORTING and the destination keeps nothing of the job.
func TestMigrationSourceKilledMidSnapshot(t *testing.T) {
	t.Parallel()
	began := time.Now()
	const ranges = "100-1500"
	c := startCluster(t, 3, "src-killed")
	// 1 KiB values, so that each stream's part of the snapshot (about
	// 500 KiB) is far more than gRPC's flow-control windows hold: the
	// source is still sending when it dies, not done with a snapshot
	// that sits in the migrator's buffers.
	want := c.loadKeys(t, "k", 12_000, 1<<10)
	total := uint64(len(keysIn(want, ranges))) // the keys the snapshot holds
	m := startMover(t, c)
	req := &migratorv1.StartMigrationRequest{JobId: "source-killed-snapshot", Ranges: ranges,
		SourceNodeId: "n1", DestinationNodeId: "n2", Parallelism: 2, BatchRecords: 32,
		RateBytesPerSecond: 100 << 10} // about ten seconds for the ~1 MB to move
	m.begin(t, req)
	mid := m.wait(t, req.JobId, func(j *migratorv1.Migration) bool { return j.GetKeys() > 0 || over(j) })
	if mid.GetPhase() != migratorv1.Phase_PHASE_SNAPSHOT || mid.GetKeys() >= total/2 {
		t.Fatalf("job in %v with %d of %d keys copied before the kill, want SNAPSHOT with less than half: slow it down more",
			mid.GetPhase(), mid.GetKeys(), total)
	}
	t.Logf("killing source n1 (pid %d) with %d of %d keys copied", c.Nodes[0].Proc.Pid(), mid.GetKeys(), total)
	c.Nodes[0].Proc.Kill()
	job := m.wait(t, req.JobId, over)
	t.Logf("job ended %v with %d of %d keys copied: %q (range %q)", job.GetPhase(), job.GetKeys(), total, job.GetError(), job.GetErrorRange())
	if job.GetKeys() >= total {
		t.Fatalf("the snapshot was copied whole (%d keys) after the source died: the kill was not in the middle of it", job.GetKeys())
	}
	if job.GetPhase() != migratorv1.Phase_PHASE_FAILED {
		t.Errorf("job ended %v, want FAILED", job.GetPhase())
	}
	if e := job.GetError(); !strings.Contains(e, "source n1") || strings.Contains(e, "destination n2") {
		t.Errorf("job error %q, want one that names the source (\"source n1\") and not the destination", e)
	}
	c.verifyOwnedBy(t, "n1", ranges)
	c.Restart(t, c.Nodes[0])
	c.waitClean(t)
	c.verify(t, want)
	c.verifyOwnedBy(t, "n1", ranges)
	for _, n := range c.Nodes {
		noStrays(t, n)
	}
	t.Logf("took %s", time.Since(began).Round(time.Millisecond))
}
