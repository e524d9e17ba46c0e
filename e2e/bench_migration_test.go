package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	migratorv1 "github.com/slotkv/slotkv/gen/slotkv/migrator/v1"
	routerv1 "github.com/slotkv/slotkv/gen/slotkv/router/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/proctest"
	"github.com/slotkv/slotkv/pkg/server"
	"github.com/slotkv/slotkv/pkg/slot"
)

const (
	// scaleRanges is n1's third of the slots after bootstrap: the range
	// the scaling runs move, back and forth between n1 and n2.
	scaleRanges = "0-5460"
	// pauseRanges (n3's) move n3 -> n2 -> n3 ... for the pause figures.
	pauseRanges = "11000-11099"
	scaleToken  = "bench-migration"
)

// scaleConfig is the benchmark's size; every field has an environment
// override so the team can run it small, or wide on a big machine.
type scaleConfig struct {
	keys, valueSize int
	ps              []int         // SLOTKV_BENCH_P, e.g. "1,2,4,8,16"
	rounds          int           // runs per P and side, averaged; even: slotkv goes there and back
	handoffs        int           // hand-offs measured under write load
	writesPerSec    int           // the write load's rate
	handoffGap      time.Duration // SLOTKV_BENCH_HANDOFF_GAP_MS between hand-offs (0: back to back)
	profileDir      string        // where CPU/mutex/block profiles go; "" none
}

func scaleConfigFromEnv(tb testing.TB) scaleConfig {
	tb.Helper()
	c := scaleConfig{keys: 1_000_000, valueSize: 1024, ps: []int{1, 2, 4}, rounds: 2, handoffs: 100, writesPerSec: 5000,
		profileDir: os.Getenv("SLOTKV_BENCH_PROFILE_DIR")}
	for env, dst := range map[string]*int{
		"SLOTKV_BENCH_KEYS": &c.keys, "SLOTKV_BENCH_VALUE_BYTES": &c.valueSize,
		"SLOTKV_BENCH_ROUNDS": &c.rounds, "SLOTKV_BENCH_HANDOFFS": &c.handoffs, "SLOTKV_BENCH_WRITES_PER_SEC": &c.writesPerSec,
	} {
		if v := os.Getenv(env); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				tb.Fatalf("%s=%q: want a positive integer", env, v)
			}
			*dst = n
		}
	}
	if v := os.Getenv("SLOTKV_BENCH_HANDOFF_GAP_MS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			tb.Fatalf("SLOTKV_BENCH_HANDOFF_GAP_MS=%q: want milliseconds, 0 or more", v)
		}
		c.handoffGap = time.Duration(n) * time.Millisecond
	}
	if v := os.Getenv("SLOTKV_BENCH_P"); v != "" {
		c.ps = nil
		for f := range strings.SplitSeq(v, ",") {
			p, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || p <= 0 {
				tb.Fatalf("SLOTKV_BENCH_P=%q: want positive integers separated by commas", v)
			}
			c.ps = append(c.ps, p)
		}
	}
	if os.Getenv("SLOTKV_BENCH_PAUSE_ONLY") != "" {
		c.ps = nil // the hand-off pause part alone
	}
	return c
}

// BenchmarkMigrationScaling moves a third of the slots (0-5460) of a
// cluster of 3 storage processes holding SLOTKV_BENCH_KEYS keys (default
// 1,000,000) of 1 KiB, at each parallelism P of SLOTKV_BENCH_P (default
// 1,2,4), with the migrator process, each P next to the raw pipeline
// (cmd/rawpipe: the same keys copied source process -> relay process ->
// destination process with plain gRPC streams and Badger, no protocol, no
// checks) at the same P. Each side runs SLOTKV_BENCH_ROUNDS (2) times per
// P and reports the mean: slotkv moves the range there and back, so every
// P starts from the same place; the raw pipeline copies into a fresh
// destination each time. The rounds run in a balanced order (P ascending,
// then descending: 1,2,4,4,2,1 for two rounds), since every move leaves
// work behind on the nodes (the tombstones of the source's cleanup, the
// older versions under the imported ones, until compactions drop them),
// which slows the moves after it: in a plain P order each P would pay for
// the history of the ones before it. Metrics:
//
//	s-to-handoff, MB/s-handoff  start of the job to the commit (the
//	                            destination serves the slots)
//	s-job, MB/s-job             the whole job, the source's cleanup included
//	cpu-s/GB                    CPU seconds of source, migrator (or relay)
//	                            and destination, summed, per GB moved, from
//	                            /proc/PID/stat (the relay's rusage)
//	cpu-s/GB-settled            the same until those processes are quiet
//	                            again: the compactions a job leaves behind
//	                            are its cost too
//	cpu-s-src, -mid, -dst       the CPU seconds of each process
//
// MB are 10^6 bytes of user keys and values, the same count on both sides.
// Before each measured run every process of the benchmark is left to
// finish its background work (see waitQuiet).
//
// Then handoff-pause runs SLOTKV_BENCH_HANDOFFS (100) small migrations
// (100 slots, back and forth between n3 and n2) while an open-loop load of
// SLOTKV_BENCH_WRITES_PER_SEC (5000) puts/s goes through the router to keys
// of those slots (the writes a hand-off pauses), and reports the write
// pause each job measured (p50/p99/max) and what the clients saw: failed
// and late puts, latency from each put's scheduled time. The jobs run back
// to back unless SLOTKV_BENCH_HANDOFF_GAP_MS spaces them: on a box that
// the load alone nearly fills, back-to-back jobs take the CPU the load
// needs, and the achieved rate printed falls below the asked one. The p99
// is the nearest rank: below 100 hand-offs it is the worst one.
//
// With SLOTKV_BENCH_PROFILE_DIR set, every process runs with mutex and
// block profiling on, and CPU, mutex and block profiles of the source, the
// migrator and the destination during the largest P's first migration are
// saved there (pP-ROLE-KIND.pb.gz; go tool pprof -top FILE), and those of
// the router, n3, n2 and the migrator under the pause part's load alone
// (pause-alone-*) and during its first 10 s of hand-offs
// (pause-handoffs-*). SLOTKV_BENCH_PAUSE_ONLY=1 runs the pause part alone.
//
// Run it once: -bench MigrationScaling -benchtime 1x (`make
// bench-migration`, which prints the ratios). Timings are printed, never
// asserted.
func BenchmarkMigrationScaling(b *testing.B) {
	cfg := scaleConfigFromEnv(b)
	// Storage nodes and router at warn: the runs should not measure logging.
	env := []string{"SLOTKV_LOG_LEVEL=warn"}
	var moverEnv []string
	if cfg.profileDir != "" {
		prof := []string{server.EnvMutexProfileFraction + "=5", server.EnvBlockProfileRate + "=100000"}
		env, moverEnv = append(env, prof...), prof
	}
	t0 := time.Now()
	c := startClusterEnv(b, 3, scaleToken, env)
	data := loadBenchData(b, c, cfg.keys, cfg.valueSize, slot.MustParseRangeSet(scaleRanges), slot.MustParseRangeSet(pauseRanges))
	// Printed, not logged: a parent benchmark's log has no result line to
	// go out with.
	fmt.Printf("loaded %d keys of %d bytes into 3 storage nodes in %v; %d keys (%.0f MB) in %s\n",
		cfg.keys, cfg.valueSize, time.Since(t0).Round(time.Second), data.movedKeys, float64(data.movedBytes)/1e6, scaleRanges)
	s := &scaleBench{cfg: cfg, c: c, data: data, from: "n1", to: "n2", raw: map[int]runFigures{}, slotkv: map[int]runFigures{}}
	s.checkCount(b)
	s.mover = startMoverEnv(b, c, moverEnv)
	if len(cfg.ps) > 0 {
		s.rawSource = startRawpipe(b, "source", data.rawDir)
		s.warmRawSource(b)
	}
	for i, p := range roundOrder(cfg.ps, cfg.rounds) {
		s.rawRound(b, p)
		s.slotkvRound(b, p, i)
	}
	// Each P's means, as sub-benchmarks that benchratio compares.
	for _, p := range cfg.ps {
		b.Run(fmt.Sprintf("p%d-raw", p), func(b *testing.B) { s.report(b, s.raw[p], false) })
		b.Run(fmt.Sprintf("p%d-slotkv", p), func(b *testing.B) { s.report(b, s.slotkv[p], true) })
	}
	b.Run("handoff-pause", s.benchPauses)
	s.logSummary(b)
}

// scaleBench is the benchmark's shared state: one cluster and its data
// for every sub-benchmark, and their results for the summary.
type scaleBench struct {
	cfg       scaleConfig
	c         *cluster
	data      *benchData
	mover     *mover
	rawSource *proctest.Proc
	from, to  string // where scaleRanges are now, and where they go next

	mu       sync.Mutex
	raw      map[int]runFigures // summed over the rounds of each P
	slotkv   map[int]runFigures
	pause    pauseFigures
	lastJob  time.Duration // of the previous slotkv run: sizes the profiles
	profiled bool          // the profiles are taken (once)
}

// runFigures are one run's measurements, summed over n rounds.
type runFigures struct {
	n            int
	handoff, job time.Duration
	// CPU of every process of the job (source, migrator or relay,
	// destination): during the job, and settled, i.e. until they are
	// quiet again, which also bills the job for the compactions it left.
	cpu, cpuSettled time.Duration
	cpuByRole       [3]time.Duration // during: source, migrator/relay, destination
	foreign         time.Duration    // CPU of other processes of the machine during the jobs
	writePauseMs    float64
}

func (f runFigures) mbps(d time.Duration, bytes int64) float64 {
	return float64(bytes) / 1e6 / (d.Seconds() / float64(f.n))
}

func perGB(cpu time.Duration, n int, bytes int64) float64 {
	return cpu.Seconds() / float64(n) / (float64(bytes) / 1e9)
}

func (f runFigures) cpuPerGB(bytes int64) float64 { return perGB(f.cpu, f.n, bytes) }

func (f runFigures) settledPerGB(bytes int64) float64 { return perGB(f.cpuSettled, f.n, bytes) }

// add sums one round's CPU per role into f: during and settled.
func (f *runFigures) add(during, settled []time.Duration) {
	for i := range during {
		f.cpuByRole[i] += during[i]
		f.cpu += during[i]
		f.cpuSettled += settled[i]
	}
}

// checkCount makes sure the source holds exactly the keys the raw
// pipeline's source holds, so both move the same data.
func (s *scaleBench) checkCount(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var ranges []*clusterv1.SlotRange
	for _, r := range slot.MustParseRangeSet(scaleRanges).Ranges() {
		ranges = append(ranges, &clusterv1.SlotRange{Start: uint32(r.Start), End: uint32(r.End)})
	}
	resp, err := s.c.Node(b, s.from).StorageClient().Count(ctx, &storagev1.CountRequest{Ranges: ranges})
	if err != nil {
		b.Fatalf("count %s on %s: %v", scaleRanges, s.from, err)
	}
	if int(resp.GetCount()) != s.data.movedKeys {
		b.Fatalf("%s holds %d keys in %s, the raw source %d", s.from, resp.GetCount(), scaleRanges, s.data.movedKeys)
	}
}

// allPids are every long-running process of the benchmark: before a
// measurement all of them must be quiet, not only the job's.
func (s *scaleBench) allPids() []int {
	out := []int{s.mover.proc.Pid(), s.c.router.Pid()}
	if s.rawSource != nil { // none when the scaling runs are skipped
		out = append(out, s.rawSource.Pid())
	}
	for _, n := range s.c.Nodes {
		out = append(out, n.Proc.Pid())
	}
	return out
}

// cpuAround runs job and returns the CPU time pids used during it, and
// until they were quiet again after it. foreign is the CPU time the rest
// of the machine used during the job: every CPU second /proc/stat counts
// less those of the benchmark's own processes (all, this one included),
// so a run disturbed by something else on the machine says so.
func cpuAround(b *testing.B, pids, all []int, job func()) (during, settled []time.Duration, foreign time.Duration) {
	mine := append(slices.Clone(all), append(pids, os.Getpid())...)
	slices.Sort(mine)
	mine = slices.Compact(mine)
	before, mineBefore, busyBefore := cpuOf(b, pids...), sum(cpuOf(b, mine...)), machineBusy(b)
	job()
	after, mineAfter, busyAfter := cpuOf(b, pids...), sum(cpuOf(b, mine...)), machineBusy(b)
	waitQuiet(b, 2*time.Minute, pids...)
	quiet := cpuOf(b, pids...)
	during, settled = make([]time.Duration, len(pids)), make([]time.Duration, len(pids))
	for i := range pids {
		during[i], settled[i] = after[i]-before[i], quiet[i]-before[i]
	}
	return during, settled, (busyAfter - busyBefore) - (mineAfter - mineBefore)
}

// warmRawSource copies the range once with the raw pipeline, unmeasured:
// the slotkv source has just written its data and has it in its caches,
// the raw source has just opened its directory, and the first measured run
// should not pay for that difference.
func (s *scaleBench) warmRawSource(b *testing.B) {
	dst := startRawpipe(b, "dest", b.TempDir())
	runRelay(b, s.rawSource.GRPC, dst.GRPC, 1, scaleRanges)
	if err := dst.Stop(); err != nil {
		b.Fatalf("rawpipe dest: %v", err)
	}
}

// roundOrder is the order of the measured rounds: the Ps ascending, then
// descending, and so on, rounds passes in all, so that over an even number
// of rounds every P has as many moves before it as after it.
func roundOrder(ps []int, rounds int) []int {
	var out []int
	for r := range rounds {
		pass := slices.Clone(ps)
		if r%2 == 1 {
			slices.Reverse(pass)
		}
		out = append(out, pass...)
	}
	return out
}

// rawRound copies scaleRanges once with the raw pipeline, into a fresh
// destination process, and adds the run to s.raw[p].
func (s *scaleBench) rawRound(b *testing.B, p int) {
	dst := startRawpipe(b, "dest", b.TempDir())
	waitQuiet(b, 2*time.Minute, append(s.allPids(), dst.Pid())...)
	var r relayRun
	during, settled, foreign := cpuAround(b, []int{s.rawSource.Pid(), dst.Pid()}, s.allPids(), func() {
		r = runRelay(b, s.rawSource.GRPC, dst.GRPC, p, scaleRanges)
	})
	if err := dst.Stop(); err != nil {
		b.Fatalf("rawpipe dest: %v", err)
	}
	if int(r.Keys) != s.data.movedKeys {
		b.Fatalf("raw pipeline moved %d keys, want %d", r.Keys, s.data.movedKeys)
	}
	job := time.Duration(r.Seconds * float64(time.Second))
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.raw[p]
	f.n++
	f.handoff += job
	f.job += job
	f.add([]time.Duration{during[0], r.CPU, during[1]}, []time.Duration{settled[0], r.CPU, settled[1]})
	f.foreign += foreign - r.CPU // the relay, a child that has exited, is ours
	s.raw[p] = f
}

// slotkvRound moves scaleRanges once with the migrator, from wherever they
// are to the other of n1 and n2, and adds the run to s.slotkv[p]. i
// numbers the job.
func (s *scaleBench) slotkvRound(b *testing.B, p, i int) {
	src, dst := s.c.Node(b, s.from), s.c.Node(b, s.to)
	waitQuiet(b, 2*time.Minute, s.allPids()...)
	prof := s.maybeProfile(b, p, map[string]string{"source": src.Proc.HTTP, "migrator": s.mover.proc.HTTP, "destination": dst.Proc.HTTP})
	var r migrationRun
	during, settled, foreign := cpuAround(b, []int{src.Proc.Pid(), s.mover.proc.Pid(), dst.Proc.Pid()}, s.allPids(), func() {
		r = runMigration(b, s.mover, &migratorv1.StartMigrationRequest{JobId: fmt.Sprintf("scale-p%d-%d", p, i),
			Ranges: scaleRanges, SourceNodeId: s.from, DestinationNodeId: s.to, Parallelism: uint32(p)})
	})
	prof.wait(b)
	if r.job.GetPhase() != migratorv1.Phase_PHASE_SUCCEEDED {
		b.Fatalf("migration P=%d %s -> %s ended %v: %s (%s)", p, s.from, s.to, r.job.GetPhase(), r.job.GetError(), r.job.GetErrorRange())
	}
	// The job's own times next to the watch's: what the whole job spends
	// besides the hand-off and the cleanup shows as the difference.
	b.Logf("%s %s -> %s: to hand-off %v (the job's %v), cleanup %v, whole job %v", r.job.GetId(), s.from, s.to,
		r.handoff.Round(time.Millisecond), r.job.GetTimeToHandoff().AsDuration().Round(time.Millisecond),
		r.job.GetCleanupDuration().AsDuration().Round(time.Millisecond), r.end.Round(time.Millisecond))
	if phases, err := jobPhases(s.mover.proc.Log(), r.job.GetId()); err != nil {
		b.Logf("%s: phases unknown: %v", r.job.GetId(), err)
	} else {
		parts := make([]string, len(phases))
		for i, p := range phases {
			parts[i] = fmt.Sprintf("%s %v", p.phase, p.took.Round(time.Millisecond))
		}
		b.Logf("%s phases (the migrator's log): %s", r.job.GetId(), strings.Join(parts, ", "))
	}
	if int(r.job.GetKeys()) != s.data.movedKeys {
		b.Logf("job copied %d keys in its snapshot, the range holds %d", r.job.GetKeys(), s.data.movedKeys)
	}
	s.from, s.to = s.to, s.from
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.slotkv[p]
	f.n++
	f.handoff += r.handoff
	f.job += r.end
	f.writePauseMs += r.job.GetWritePauseMs()
	f.add(during, settled)
	f.foreign += foreign
	s.slotkv[p] = f
	s.lastJob = r.end
}

// maybeProfile starts the profiles of the largest P's first round when a
// profile directory is set; they last about as long as the previous run
// took.
func (s *scaleBench) maybeProfile(b *testing.B, p int, addrs map[string]string) *profiles {
	if s.cfg.profileDir == "" || p != slices.Max(s.cfg.ps) || s.profiled {
		return nil
	}
	s.profiled = true
	secs := max(2, int(math.Ceil(s.lastJob.Seconds())))
	b.Logf("profiling source, migrator and destination for %ds into %s", secs, s.cfg.profileDir)
	return startProfiles(s.cfg.profileDir, fmt.Sprintf("p%d", p), scaleToken, secs, addrs)
}

// report turns a P's sums into benchmark metrics (means per round); ns/op
// is the mean whole job.
func (s *scaleBench) report(b *testing.B, f runFigures, slotkv bool) {
	if f.n == 0 {
		b.Fatal("no measured round")
	}
	bytes := s.data.movedBytes
	b.ReportMetric(float64(f.job.Nanoseconds())/float64(f.n), "ns/op")
	if slotkv {
		b.ReportMetric(f.handoff.Seconds()/float64(f.n), "s-to-handoff")
		b.ReportMetric(f.mbps(f.handoff, bytes), "MB/s-handoff")
		b.ReportMetric(f.writePauseMs/float64(f.n), "pause-ms")
	}
	b.ReportMetric(f.job.Seconds()/float64(f.n), "s-job")
	b.ReportMetric(f.mbps(f.job, bytes), "MB/s-job")
	b.ReportMetric(f.cpuPerGB(bytes), "cpu-s/GB")
	b.ReportMetric(f.settledPerGB(bytes), "cpu-s/GB-settled")
	for i, role := range []string{"src", "mid", "dst"} {
		b.ReportMetric(f.cpuByRole[i].Seconds()/float64(f.n), "cpu-s-"+role)
	}
	b.ReportMetric(f.foreign.Seconds()/float64(f.n), "cpu-s-foreign")
}

// migrationRun is one job as the benchmark saw it, times from the start
// request.
type migrationRun struct {
	job     *migratorv1.Migration
	handoff time.Duration // until the job was seen past the commit
	end     time.Duration // until the job was seen ended
}

// runMigration starts a job and watches it (every 20 ms) until it ends.
// The hand-off is the first update in CLEANUP or later with a committed
// topology version: the destination serves the slots from then on.
func runMigration(tb testing.TB, m *mover, req *migratorv1.StartMigrationRequest) migrationRun {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	start := time.Now()
	m.begin(tb, req)
	w, err := m.api.WatchMigration(ctx, &migratorv1.WatchMigrationRequest{JobId: req.GetJobId(), Interval: durationpb.New(20 * time.Millisecond)})
	if err != nil {
		tb.Fatalf("watch %s: %v", req.GetJobId(), err)
	}
	var r migrationRun
	for {
		resp, err := w.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			tb.Fatalf("watch %s: %v", req.GetJobId(), err)
		}
		j := resp.GetMigration()
		now := time.Since(start)
		if r.handoff == 0 && j.GetCommittedVersion() > 0 &&
			(j.GetPhase() == migratorv1.Phase_PHASE_CLEANUP || j.GetPhase() == migratorv1.Phase_PHASE_SUCCEEDED) {
			r.handoff = now
		}
		r.job, r.end = j, now
		if over(j) {
			break
		}
	}
	if r.job == nil || !over(r.job) {
		tb.Fatalf("watch %s ended before the job: %v", req.GetJobId(), r.job)
	}
	return r
}

// pauseFigures are what handoff-pause measured.
type pauseFigures struct {
	pausesMs           []float64
	puts, failed, late int64
	firstErr           string
	putLat             []time.Duration
	elapsed            time.Duration
	// alone is the same load for loadAlone with no migration: the
	// ceiling, what this machine carries through the router at all.
	alone *pauseFigures
	// steps are the parts of each pause in ms, by step name, from the
	// migrator's log (pauseSteps).
	steps map[string][]float64
}

// pauseStepNames are the steps of a hand-off that the migrator's
// "committed" log line times, in order: from the freeze to the
// destination's answer, which came destination_served_before_reply after
// it began to serve; then the source's sync before the freeze, which the
// freeze step includes but the pause does not (writes were admitted).
var pauseStepNames = []string{"freeze", "drain", "commit_point", "etcd_commit", "destination_serves", "destination_served_before_reply", "source_synced_before_freeze"}

// pauseSteps reads the step times of the hand-offs of the jobs whose id
// starts with prefix from a migrator's JSON log.
func pauseSteps(log, prefix string) (map[string][]float64, error) {
	out := map[string][]float64{}
	for line := range strings.Lines(log) {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil || rec["msg"] != "committed" {
			continue
		}
		if job, _ := rec["job"].(string); !strings.HasPrefix(job, prefix) {
			continue
		}
		for _, name := range pauseStepNames {
			v, ok := rec[name].(string)
			if !ok {
				return nil, fmt.Errorf("committed line without %s: %s", name, line)
			}
			d, err := time.ParseDuration(v)
			if err != nil {
				return nil, fmt.Errorf("step %s: %w", name, err)
			}
			out[name] = append(out[name], ms(d))
		}
	}
	return out, nil
}

// phaseTime is how long a migration job spent in one of its phases.
type phaseTime struct {
	phase string
	took  time.Duration
}

// jobPhases reads from a migrator's JSON log how long job spent in each
// phase, in order: from its "migration phase" line to the next one, the
// last to its "migration succeeded" line.
func jobPhases(log, job string) ([]phaseTime, error) {
	var (
		out  []phaseTime
		last time.Time
	)
	for line := range strings.Lines(log) {
		var rec struct {
			Time  time.Time `json:"time"`
			Msg   string    `json:"msg"`
			Job   string    `json:"job"`
			Phase string    `json:"phase"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil || rec.Job != job ||
			(rec.Msg != "migration phase" && rec.Msg != "migration succeeded") {
			continue
		}
		if len(out) > 0 {
			out[len(out)-1].took = rec.Time.Sub(last)
		}
		if rec.Msg == "migration succeeded" {
			return out, nil
		}
		out = append(out, phaseTime{phase: rec.Phase})
		last = rec.Time
	}
	return nil, fmt.Errorf("no \"migration succeeded\" line for job %s in the migrator's log", job)
}

// loadAlone is how long the write load runs alone before the hand-offs.
const loadAlone = 3 * time.Second

// benchPauses runs cfg.handoffs migrations of pauseRanges, alternately
// n3 -> n2 and back, under a steady write load through the router.
func (s *scaleBench) benchPauses(b *testing.B) {
	kv := routerv1.NewKVServiceClient(s.c.conn(s.c.router.GRPC))
	if len(s.data.pauseKeys) == 0 {
		b.Fatalf("no key of the %d loaded falls in %s", s.cfg.keys, pauseRanges)
	}
	var fig pauseFigures
	b.StopTimer()
	for range b.N {
		waitQuiet(b, 2*time.Minute, s.allPids()...)
		if fig.alone == nil {
			// The baseline: the load alone, after a second's warm-up.
			w := startPacedWriters(kv, s.data.pauseKeys, s.cfg.writesPerSec, s.cfg.valueSize)
			time.Sleep(time.Second)
			w.stop()
			w = startPacedWriters(kv, s.data.pauseKeys, s.cfg.writesPerSec, s.cfg.valueSize)
			prof := s.pauseProfiles(b, "pause-alone", int(loadAlone.Seconds()))
			time.Sleep(loadAlone)
			w.stop()
			prof.wait(b)
			alone := &pauseFigures{}
			w.addTo(alone)
			slices.Sort(alone.putLat)
			fig.alone = alone
		}
		w := startPacedWriters(kv, s.data.pauseKeys, s.cfg.writesPerSec, s.cfg.valueSize)
		time.Sleep(time.Second) // the load is steady before the first job
		from, to := "n3", "n2"
		prof := s.pauseProfiles(b, "pause-handoffs", 10)
		b.StartTimer()
		for i := range s.cfg.handoffs {
			r := runMigration(b, s.mover, &migratorv1.StartMigrationRequest{JobId: fmt.Sprintf("pause-%d-%d", fig.n(), i),
				Ranges: pauseRanges, SourceNodeId: from, DestinationNodeId: to})
			if r.job.GetPhase() != migratorv1.Phase_PHASE_SUCCEEDED {
				w.stop()
				b.Fatalf("hand-off %d %s -> %s ended %v: %s", i, from, to, r.job.GetPhase(), r.job.GetError())
			}
			fig.pausesMs = append(fig.pausesMs, r.job.GetWritePauseMs())
			from, to = to, from
			time.Sleep(s.cfg.handoffGap)
		}
		b.StopTimer()
		w.stop()
		w.addTo(&fig)
		prof.wait(b)
	}
	slices.Sort(fig.pausesMs)
	slices.Sort(fig.putLat)
	b.ReportMetric(percentile(fig.pausesMs, 0.50), "pause-p50-ms")
	b.ReportMetric(percentile(fig.pausesMs, 0.99), "pause-p99-ms")
	b.ReportMetric(slices.Max(fig.pausesMs), "pause-max-ms")
	b.ReportMetric(float64(len(fig.pausesMs)), "handoffs")
	b.ReportMetric(float64(fig.puts)/fig.elapsed.Seconds(), "puts/s")
	b.ReportMetric(float64(fig.failed), "failed-puts")
	b.ReportMetric(float64(fig.late), "late-puts")
	if len(fig.putLat) > 0 {
		b.ReportMetric(ms(fig.putLat[len(fig.putLat)/2]), "put-p50-ms")
		b.ReportMetric(ms(percentileDur(fig.putLat, 0.99)), "put-p99-ms")
		b.ReportMetric(ms(fig.putLat[len(fig.putLat)-1]), "put-max-ms")
	}
	if fig.failed > 0 {
		b.Logf("%d of %d puts failed; first: %s", fig.failed, fig.puts+fig.failed, fig.firstErr)
	}
	steps, err := pauseSteps(s.mover.proc.Log(), "pause-")
	if err != nil {
		b.Fatalf("the migrator's log: %v", err)
	}
	for _, v := range steps {
		slices.Sort(v)
	}
	fig.steps = steps
	s.mu.Lock()
	s.pause = fig
	s.mu.Unlock()
}

func (f *pauseFigures) n() int { return len(f.pausesMs) }

// pauseProfiles starts secs-long profiles of every process the write load
// and the hand-offs go through, when a profile directory is set (nil
// otherwise).
func (s *scaleBench) pauseProfiles(b *testing.B, prefix string, secs int) *profiles {
	if s.cfg.profileDir == "" {
		return nil
	}
	b.Logf("profiling router, storage nodes and migrator for %ds into %s (%s-*)", secs, s.cfg.profileDir, prefix)
	return startProfiles(s.cfg.profileDir, prefix, scaleToken, secs, map[string]string{
		"router": s.c.router.HTTP, "n3": s.c.Node(b, "n3").Proc.HTTP, "n2": s.c.Node(b, "n2").Proc.HTTP, "migrator": s.mover.proc.HTTP})
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// percentile is the nearest-rank percentile of sorted values.
func percentile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[max(0, int(math.Ceil(q*float64(len(sorted))))-1)]
}

func percentileDur(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[max(0, int(math.Ceil(q*float64(len(sorted))))-1)]
}

// pacedWriters put at a fixed rate, open loop: a pacer issues one ticket
// per 1/rate seconds whatever the latency, workers take them, and each
// put's latency counts from its ticket's time, so a stall shows in full
// (no coordinated omission). A ticket that finds the queue (one second of
// tickets) full is counted late and dropped.
type pacedWriters struct {
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	start   time.Time
	elapsed time.Duration

	puts, failed, late atomic.Int64
	firstErr           atomic.Value
	mu                 sync.Mutex
	lat                []time.Duration
}

func startPacedWriters(kv routerv1.KVServiceClient, keys []string, perSec, valueSize int) *pacedWriters {
	ctx, cancel := context.WithCancel(context.Background())
	w := &pacedWriters{cancel: cancel, start: time.Now()}
	tickets := make(chan time.Time, perSec)
	w.wg.Go(func() { w.pace(ctx, tickets, perSec) })
	value := make([]byte, valueSize)
	var next atomic.Uint64
	// Enough workers to keep the rate through a put latency of tens of ms.
	for range max(64, 16*runtime.GOMAXPROCS(0)) {
		w.wg.Go(func() {
			var lat []time.Duration
			defer func() { w.mu.Lock(); w.lat = append(w.lat, lat...); w.mu.Unlock() }()
			for {
				var due time.Time
				select {
				case <-ctx.Done():
					return
				case due = <-tickets:
				}
				k := keys[next.Add(1)%uint64(len(keys))]
				cctx, ccancel := context.WithTimeout(context.Background(), 20*time.Second)
				_, err := kv.Put(cctx, &routerv1.PutRequest{Key: k, Data: &routerv1.PutRequest_Value{Value: value}})
				ccancel()
				if err != nil {
					w.failed.Add(1)
					w.firstErr.CompareAndSwap(nil, fmt.Sprintf("%s: %v", k, err))
					continue
				}
				w.puts.Add(1)
				lat = append(lat, time.Since(due))
			}
		})
	}
	return w
}

// pace issues the tickets due since the start every 2 ms.
func (w *pacedWriters) pace(ctx context.Context, tickets chan<- time.Time, perSec int) {
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	issued := int64(0)
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			due := int64(now.Sub(w.start).Seconds() * float64(perSec))
			for ; issued < due; issued++ {
				at := w.start.Add(time.Duration(float64(issued) / float64(perSec) * float64(time.Second)))
				select {
				case tickets <- at:
				default:
					w.late.Add(1)
				}
			}
		}
	}
}

func (w *pacedWriters) stop() {
	w.elapsed = time.Since(w.start)
	w.cancel()
	w.wg.Wait()
}

func (w *pacedWriters) addTo(f *pauseFigures) {
	f.puts += w.puts.Load()
	f.failed += w.failed.Load()
	f.late += w.late.Load()
	f.elapsed += w.elapsed
	f.putLat = append(f.putLat, w.lat...)
	if e, ok := w.firstErr.Load().(string); ok && f.firstErr == "" {
		f.firstErr = e
	}
}

// logSummary prints the table the issue asks for, from this run only,
// with the targets the team compares against (printed, not asserted).
func (s *scaleBench) logSummary(b *testing.B) {
	s.mu.Lock()
	defer s.mu.Unlock()
	bytes := s.data.movedBytes
	var t strings.Builder
	fmt.Fprintf(&t, "\nmigration of slots %s: %d keys, %.0f MB of keys and values, 3 storage nodes, GOMAXPROCS %d, mean of %d rounds\n",
		scaleRanges, s.data.movedKeys, float64(bytes)/1e6, runtime.GOMAXPROCS(0), s.cfg.rounds)
	fmt.Fprintf(&t, "%3s | %-27s | %-39s | %s\n", "", "raw pipeline", "slotkv", "slotkv / raw")
	fmt.Fprintf(&t, "%3s | %6s %20s | %8s %6s %6s %6s %9s | %7s %8s %6s %8s\n",
		"P", "MB/s", "CPU s/GB (settled)", "handoff", "MB/s", "job", "MB/s", "CPU s/GB", "handoff", "job MB/s", "CPU", "settled")
	first := -1.0
	if len(s.cfg.ps) == 0 {
		t.WriteString("(SLOTKV_BENCH_PAUSE_ONLY: no scaling runs)\n")
	}
	for _, p := range s.cfg.ps {
		raw, ok1 := s.raw[p]
		sk, ok2 := s.slotkv[p]
		if !ok1 || !ok2 {
			fmt.Fprintf(&t, "%3d | missing (a sub-benchmark failed or was filtered out)\n", p)
			continue
		}
		rawMB, jobMB, hoMB := raw.mbps(raw.job, bytes), sk.mbps(sk.job, bytes), sk.mbps(sk.handoff, bytes)
		if first < 0 {
			first = jobMB
		}
		fmt.Fprintf(&t, "%3d | %6.1f %9.2f (%8.2f) | %7.2fs %6.1f %5.2fs %6.1f %4.1f (%4.1f) | %6.2fx %7.2fx %5.2fx %7.2fx\n",
			p, rawMB, raw.cpuPerGB(bytes), raw.settledPerGB(bytes),
			sk.handoff.Seconds()/float64(sk.n), hoMB, sk.job.Seconds()/float64(sk.n), jobMB, sk.cpuPerGB(bytes), sk.settledPerGB(bytes),
			hoMB/rawMB, jobMB/rawMB, sk.cpuPerGB(bytes)/raw.cpuPerGB(bytes), sk.settledPerGB(bytes)/raw.settledPerGB(bytes))
	}
	for _, p := range s.cfg.ps[min(1, len(s.cfg.ps)):] {
		if sk, ok := s.slotkv[p]; ok && first > 0 {
			fmt.Fprintf(&t, "P=%d / P=%d whole job: %.2fx\n", p, s.cfg.ps[0], sk.mbps(sk.job, bytes)/first)
		}
	}
	if f := s.pause; len(f.pausesMs) > 0 {
		fmt.Fprintf(&t, "hand-off write pause, %d hand-offs of %s under %d puts/s to those slots (achieved %.0f/s): p50 %.1f ms, p99 %.1f ms, max %.1f ms; client puts failed %d, late %d, latency p50 %.1f ms p99 %.1f ms\n",
			len(f.pausesMs), pauseRanges, s.cfg.writesPerSec, float64(f.puts)/f.elapsed.Seconds(),
			percentile(f.pausesMs, 0.5), percentile(f.pausesMs, 0.99), slices.Max(f.pausesMs), f.failed, f.late,
			ms(percentileDur(f.putLat, 0.5)), ms(percentileDur(f.putLat, 0.99)))
		if len(f.steps) > 0 {
			t.WriteString("where the pause goes, ms p50/p99 (the migrator's log line \"committed\"):")
			for _, name := range pauseStepNames {
				fmt.Fprintf(&t, " %s %.1f/%.1f", name, percentile(f.steps[name], 0.5), percentile(f.steps[name], 0.99))
			}
			t.WriteString("\n")
		}
		if a := f.alone; a != nil && a.elapsed > 0 {
			fmt.Fprintf(&t, "the same load alone (%v, no migration): achieved %.0f/s, failed %d, late %d, latency p50 %.1f ms p99 %.1f ms\n",
				loadAlone, float64(a.puts)/a.elapsed.Seconds(), a.failed, a.late, ms(percentileDur(a.putLat, 0.5)), ms(percentileDur(a.putLat, 0.99)))
		}
	}
	s.warnForeign(&t)
	t.WriteString("targets (2 cores): job >= 0.8x raw at P=1 and P=2, CPU/GB <= 1.3x raw, P=2 >= 0.95x P=1, pause p99 <= 50 ms")
	// Printed, not logged, for the reason given at the load.
	fmt.Println(t.String())
}

// warnForeign adds a line when other processes of the machine used a
// noticeable share of it during the measured jobs (another test run on a
// shared box): those figures are disturbed and worth running again.
func (s *scaleBench) warnForeign(t *strings.Builder) {
	var disturbed []string
	for _, p := range s.cfg.ps {
		for side, f := range map[string]runFigures{"raw": s.raw[p], "slotkv": s.slotkv[p]} {
			// More than a tenth of one core on average over the jobs, and
			// more than the reading's own noise (/proc counts in 10 ms
			// ticks per process).
			if f.n > 0 && f.foreign.Seconds() > max(0.1*f.job.Seconds(), 0.25) {
				disturbed = append(disturbed, fmt.Sprintf("P=%d %s %.1f CPU-s in %.1f s", p, side, f.foreign.Seconds(), f.job.Seconds()))
			}
		}
	}
	if len(disturbed) > 0 {
		slices.Sort(disturbed)
		fmt.Fprintf(t, "DISTURBED: other processes of this machine used CPU during: %s; run again on a quiet machine\n", strings.Join(disturbed, "; "))
	}
}

func TestJobPhases(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 12, 7, 6, 10, 0, 0, time.UTC)
	line := func(ms int, msg, job, phase string) string {
		rec := map[string]any{"time": t0.Add(time.Duration(ms) * time.Millisecond), "level": "INFO", "msg": msg, "job": job}
		if phase != "" {
			rec["phase"] = phase
		}
		b, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		return string(b) + "\n"
	}
	interleaved := line(0, "migration planned", "a", "") +
		line(1, "migration phase", "a", "PREPARE") +
		line(2, "migration phase", "b", "PREPARE") +
		line(8, "migration phase", "a", "SNAPSHOT") +
		"not json\n" +
		line(900, "migration progress", "a", "") +
		line(2008, "migration phase", "a", "CLEANUP") +
		line(2100, "migration phase", "b", "SNAPSHOT") +
		line(2458, "migration succeeded", "a", "")
	tests := []struct {
		name    string
		log     string
		job     string
		want    []phaseTime
		wantErr string
	}{
		{name: "one job among another's lines", log: interleaved, job: "a",
			want: []phaseTime{{"PREPARE", 7 * time.Millisecond}, {"SNAPSHOT", 2 * time.Second}, {"CLEANUP", 450 * time.Millisecond}}},
		{name: "a job that has not succeeded", log: interleaved, job: "b", wantErr: "no \"migration succeeded\" line for job b"},
		{name: "a job not in the log", log: interleaved, job: "c", wantErr: "for job c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := jobPhases(tt.log, tt.job)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("phases = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestPauseSteps(t *testing.T) {
	t.Parallel()
	line := func(job string, steps ...string) string {
		rec := map[string]any{"level": "INFO", "msg": "committed", "job": job}
		for i, name := range pauseStepNames {
			if i < len(steps) {
				rec[name] = steps[i]
			}
		}
		b, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		return string(b) + "\n"
	}
	all := []string{"8.5ms", "4.2ms", "1.1ms", "7ms", "6.5ms", "850µs", "3ms"}
	tests := []struct {
		name    string
		log     string
		want    map[string][]float64
		wantErr string
	}{
		{name: "one hand-off", log: line("pause-0-0", all...),
			want: map[string][]float64{"freeze": {8.5}, "drain": {4.2}, "commit_point": {1.1}, "etcd_commit": {7},
				"destination_serves": {6.5}, "destination_served_before_reply": {0.85}, "source_synced_before_freeze": {3}}},
		{name: "other jobs and lines skipped", log: `not json` + "\n" + `{"msg":"migration succeeded","job":"pause-0-0"}` + "\n" + line("p1-slotkv-0", all...),
			want: map[string][]float64{}},
		{name: "a step missing", log: line("pause-0-1", all[:3]...), wantErr: "without etcd_commit"},
		{name: "not a duration", log: line("pause-0-1", "8.5", "1ms", "1ms", "1ms", "1ms", "1ms", "1ms"), wantErr: "step freeze"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := pauseSteps(tc.log, "pause-")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for name, v := range tc.want {
				if !slices.Equal(got[name], v) {
					t.Errorf("%s = %v, want %v", name, got[name], v)
				}
			}
		})
	}
}
