package e2e

// Helpers of BenchmarkMigrationScaling: CPU time of processes, the raw
// pipeline's processes (cmd/rawpipe), the bulk loader of the benchmark's
// data, and the profiles it saves.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"google.golang.org/grpc"

	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/auth"
	"github.com/slotkv/slotkv/pkg/proctest"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/testcluster"
)

// userHZ is the unit of utime and stime in /proc/PID/stat: USER_HZ, 100
// on every Linux ABI Go supports (the kernel converts to it for userland).
const userHZ = 100

// procCPU is the CPU time (user + system) process pid has used so far.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("cpu time of pid %d: %w", pid, err)
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// count fields after the last ')'. Field 3 (state) is rest[0], so
	// utime (14) and stime (15) are rest[11] and rest[12].
	i := strings.LastIndexByte(string(b), ')')
	rest := strings.Fields(string(b[i+1:]))
	if i < 0 || len(rest) < 13 {
		return 0, fmt.Errorf("cpu time of pid %d: unexpected /proc/%d/stat %q", pid, pid, b)
	}
	var ticks int64
	for _, f := range rest[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("cpu time of pid %d: field %q: %w", pid, f, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// cpuOf reads the CPU time of each pid.
func cpuOf(tb testing.TB, pids ...int) []time.Duration {
	tb.Helper()
	out := make([]time.Duration, len(pids))
	for i, pid := range pids {
		d, err := procCPU(pid)
		if err != nil {
			tb.Fatal(err)
		}
		out[i] = d
	}
	return out
}

// machineBusy is the CPU time every process of the machine has used so
// far: the busy columns of /proc/stat's "cpu" line (user, nice, system,
// irq, softirq, steal; guest time is already in user).
func machineBusy(tb testing.TB) time.Duration {
	tb.Helper()
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		tb.Fatalf("machine cpu time: %v", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		tb.Fatalf("machine cpu time: unexpected /proc/stat line %q", line)
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		n, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			tb.Fatalf("machine cpu time: field %d of %q: %v", i, line, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ
}

func sum(ds []time.Duration) time.Duration {
	var t time.Duration
	for _, d := range ds {
		t += d
	}
	return t
}

// waitQuiet waits until the processes together use under 5% of one core
// over a second, so that the compactions a load or the previous run left
// behind are not billed to the next measurement. It gives up (and says so)
// after limit: an always-busy process must not hang the benchmark.
func waitQuiet(tb testing.TB, limit time.Duration, pids ...int) {
	tb.Helper()
	start := time.Now()
	prev := sum(cpuOf(tb, pids...))
	for {
		time.Sleep(time.Second)
		cur := sum(cpuOf(tb, pids...))
		if cur-prev < 50*time.Millisecond {
			if waited := time.Since(start); waited > 2*time.Second {
				tb.Logf("waited %v for background work (compactions) to finish", waited.Round(time.Second))
			}
			return
		}
		if time.Since(start) > limit {
			tb.Logf("processes %v still busy (%v CPU in the last second) after %v; measuring anyway", pids, cur-prev, limit)
			return
		}
		prev = cur
	}
}

// Raw pipeline processes.

var (
	rawpipeOnce sync.Once
	rawpipePath string
	rawpipeErr  error
)

// rawpipeBin is bin/rawpipe when `make bench` built it into $SLOTKV_BIN,
// otherwise a build of ./e2e/cmd/rawpipe made once per test process.
func rawpipeBin(tb testing.TB) string {
	tb.Helper()
	if dir := os.Getenv("SLOTKV_BIN"); dir != "" {
		if p := filepath.Join(dir, "rawpipe"); fileExists(p) {
			return p
		}
	}
	rawpipeOnce.Do(func() {
		root, err := proctest.WorkspaceRoot()
		if err != nil {
			rawpipeErr = err
			return
		}
		dir, err := os.MkdirTemp("", "slotkv-rawpipe-")
		if err != nil {
			rawpipeErr = err
			return
		}
		rawpipePath = filepath.Join(dir, "rawpipe")
		cmd := exec.Command("go", "build", "-o", rawpipePath, "./e2e/cmd/rawpipe")
		cmd.Dir, cmd.Env = root, append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			rawpipeErr = fmt.Errorf("go build ./e2e/cmd/rawpipe: %v\n%s", err, out)
		}
	})
	if rawpipeErr != nil {
		tb.Fatal(rawpipeErr)
	}
	return rawpipePath
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// startRawpipe starts `rawpipe source|dest` on dir; proctest learns its
// port from the listen file and stops it by pid at cleanup.
func startRawpipe(tb testing.TB, role, dir string) *proctest.Proc {
	tb.Helper()
	return proctest.Start(tb, rawpipeBin(tb), role, "--dir", dir, "--addr", "127.0.0.1:0")
}

// relayRun is what one `rawpipe relay` did.
type relayRun struct {
	Keys    uint64  `json:"keys"`
	Bytes   uint64  `json:"bytes"`
	Seconds float64 `json:"seconds"`
	CPU     time.Duration
}

// runRelay runs `rawpipe relay` to completion and returns its report and
// its own CPU time (from its rusage).
func runRelay(tb testing.TB, src, dst string, p int, ranges string) relayRun {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, rawpipeBin(tb), "relay", "--source", src, "--dest", dst,
		"--parallelism", strconv.Itoa(p), "--ranges", ranges)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("rawpipe relay P=%d: %v\n%s", p, err, stderr.String())
	}
	var r relayRun
	if err := json.Unmarshal(out, &r); err != nil {
		tb.Fatalf("rawpipe relay printed %q: %v", out, err)
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.CPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return r
}

// rawBadgerOptions are the options cmd/rawpipe and slotkv's storage node
// open Badger with (values from 256 bytes in the value log: the storage
// node's --value-threshold default).
func rawBadgerOptions(dir string) badger.Options {
	return badger.DefaultOptions(dir).WithLogger(nil).WithMetricsEnabled(false).
		WithMemTableSize(64 << 20).WithBlockCacheSize(256 << 20).WithValueLogFileSize(256 << 20).
		WithValueThreshold(256)
}

// Loading.

// benchData is what the load wrote.
type benchData struct {
	movedKeys  int   // keys in the migrated ranges
	movedBytes int64 // their user key + value bytes
	pauseKeys  []string
	rawDir     string // a Badger directory holding exactly the migrated keys
}

// loadBenchData writes n keys of valueSize random bytes straight into the
// storage node owning each key's slot through the node's Ingest stream (in
// 1000-record batches, one stream per node), and the keys of moved into a
// Badger directory of its own for the raw pipeline, with the storage-key
// layout slotkv uses. Values are random so that Badger's compression
// flatters neither side.
func loadBenchData(tb testing.TB, c *cluster, n, valueSize int, moved, pause slot.RangeSet) *benchData {
	tb.Helper()
	owners := slotOwners(tb, c)
	d := &benchData{rawDir: filepath.Join(tb.TempDir(), "raw-source")}
	raw, err := badger.Open(rawBadgerOptions(d.rawDir))
	if err != nil {
		tb.Fatalf("open raw source %s: %v", d.rawDir, err)
	}
	rawWB := raw.NewWriteBatch()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ings := make([]*ingester, len(c.Nodes))
	for i, nd := range c.Nodes {
		ings[i] = startIngester(ctx, tb, nd)
	}
	const batchRecords = 1000
	pending := make([][]*storagev1.IngestRecord, len(c.Nodes))
	rng := rand.NewChaCha8([32]byte{'s', 'l', 'o', 't', 'k', 'v'})
	var arena []byte
	for i := range n {
		if len(arena) < valueSize {
			arena = make([]byte, batchRecords*valueSize)
			_, _ = rng.Read(arena)
		}
		val := arena[:valueSize:valueSize]
		arena = arena[valueSize:]
		key := fmt.Appendf(nil, "mig:%08d", i)
		s := slot.Of(key)
		o := owners[s]
		pending[o] = append(pending[o], &storagev1.IngestRecord{Key: key, Value: val})
		if len(pending[o]) == batchRecords {
			ings[o].send(pending[o])
			pending[o] = nil
		}
		if moved.Contains(s) {
			d.movedKeys++
			d.movedBytes += int64(len(key) + len(val))
			if err := rawWB.Set(slot.AppendKey(nil, s, key), val); err != nil {
				tb.Fatalf("raw source: %v", err)
			}
		}
		if pause.Contains(s) {
			d.pauseKeys = append(d.pauseKeys, string(key))
		}
	}
	for o, recs := range pending {
		if len(recs) > 0 {
			ings[o].send(recs)
		}
	}
	var errs []error
	for i, in := range ings {
		if err := in.finish(); err != nil {
			errs = append(errs, fmt.Errorf("ingest into %s: %w", c.Nodes[i].ID, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		tb.Fatal(err)
	}
	if err := rawWB.Flush(); err != nil {
		tb.Fatalf("raw source: %v", err)
	}
	if err := raw.Close(); err != nil {
		tb.Fatalf("close raw source: %v", err)
	}
	return d
}

// slotOwners maps every slot to the index in c.Nodes of its owner, from
// the topology the first node holds. The node follows etcd, so right after
// the bootstrap it may not hold the first topology yet: it is asked again
// until every slot has an owner, for up to 30 s.
func slotOwners(tb testing.TB, c *cluster) []int {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		owners, err := ownersNow(c)
		if err == nil {
			return owners
		}
		if time.Now().After(deadline) {
			tb.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ownersNow is slotOwners' one try.
func ownersNow(c *cluster) ([]int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Nodes[0].NodeClient().GetTopology(ctx, &storagev1.GetTopologyRequest{})
	if err != nil {
		return nil, fmt.Errorf("topology of %s: %w", c.Nodes[0].ID, err)
	}
	owners := make([]int, slot.Count)
	for i := range owners {
		owners[i] = -1
	}
	for _, a := range resp.GetTopology().GetAssignments() {
		idx := slices.IndexFunc(c.Nodes, func(n *testcluster.Node) bool { return n.ID == a.GetNodeId() })
		for _, r := range a.GetRanges() {
			for s := r.GetStart(); s <= r.GetEnd(); s++ {
				owners[s] = idx
			}
		}
	}
	if i := slices.Index(owners, -1); i >= 0 {
		return nil, fmt.Errorf("slot %d has no owner in the topology %s holds", i, c.Nodes[0].ID)
	}
	return owners, nil
}

// ingester is one Ingest stream to a node: batches go out from a sender
// goroutine while a receiver counts the acknowledgements, so the node
// writes one batch while the next travels.
type ingester struct {
	stream  grpc.BidiStreamingClient[storagev1.IngestRequest, storagev1.IngestResponse]
	reqs    chan *storagev1.IngestRequest
	sendErr chan error
	recvErr chan error
	next    uint64
}

func startIngester(ctx context.Context, tb testing.TB, n *testcluster.Node) *ingester {
	tb.Helper()
	stream, err := n.NodeClient().Ingest(ctx)
	if err != nil {
		tb.Fatalf("open ingest stream to %s: %v", n.ID, err)
	}
	in := &ingester{stream: stream, reqs: make(chan *storagev1.IngestRequest, 2), sendErr: make(chan error, 1), recvErr: make(chan error, 1)}
	go func() {
		var err error
		for req := range in.reqs {
			if err == nil { // after a failure, drain so the loader never blocks
				err = stream.Send(req)
			}
		}
		in.sendErr <- errors.Join(err, stream.CloseSend())
	}()
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				in.recvErr <- err
				return
			}
		}
	}()
	return in
}

func (in *ingester) send(recs []*storagev1.IngestRecord) {
	in.next++
	in.reqs <- &storagev1.IngestRequest{JobId: "bench-load", File: "generated", Batch: in.next, Records: recs}
}

// finish closes the stream and waits until every batch is acknowledged.
// The receiver's error comes first: a failed Send only says io.EOF.
func (in *ingester) finish() error {
	close(in.reqs)
	sendErr := <-in.sendErr
	if err := <-in.recvErr; err != nil {
		return err
	}
	return sendErr
}

// Profiles.

// profiles fetches CPU, mutex and block profiles of several processes at
// once over their pprof endpoints, for secs seconds.
type profiles struct {
	wg   sync.WaitGroup
	mu   sync.Mutex
	errs []error
}

// startProfiles saves, for each role -> HTTP address, the files
// DIR/PREFIX-ROLE-{cpu,mutex,block}.pb.gz. Mutex and block profiles are
// deltas over the same seconds (they are empty unless the processes run
// with SLOTKV_MUTEX_PROFILE_FRACTION / SLOTKV_BLOCK_PROFILE_RATE).
func startProfiles(dir, prefix, token string, secs int, addrs map[string]string) *profiles {
	p := &profiles{}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		p.errs = append(p.errs, err)
		return p
	}
	kinds := map[string]string{"cpu": "profile", "mutex": "mutex", "block": "block"}
	for role, addr := range addrs {
		for kind, path := range kinds {
			url := fmt.Sprintf("http://%s/debug/pprof/%s?seconds=%d", addr, path, secs)
			file := filepath.Join(dir, fmt.Sprintf("%s-%s-%s.pb.gz", prefix, role, kind))
			p.wg.Go(func() {
				if err := fetchProfile(url, token, file); err != nil {
					p.mu.Lock()
					p.errs = append(p.errs, err)
					p.mu.Unlock()
				}
			})
		}
	}
	return p
}

func fetchProfile(url, token, file string) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	auth.SetHeader(req.Header, token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("profile %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("profile %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profile %s: %s %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	if err := os.WriteFile(file, body, 0o644); err != nil {
		return fmt.Errorf("save profile: %w", err)
	}
	return nil
}

// wait waits for every profile and fails tb with the files' errors. A nil
// p (no profiles asked for) has nothing to wait for.
func (p *profiles) wait(tb testing.TB) {
	if p == nil {
		return
	}
	p.wg.Wait()
	if err := errors.Join(p.errs...); err != nil {
		tb.Errorf("profiles: %v", err)
	}
}
