package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	routerv1 "github.com/slotkv/slotkv/gen/slotkv/router/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/etcdtest"
	"github.com/slotkv/slotkv/pkg/fanout"
	"github.com/slotkv/slotkv/pkg/proctest"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/testcluster"
	"github.com/slotkv/slotkv/pkg/topology"
	"github.com/slotkv/slotkv/pkg/topostore"
)

// selfServed are storage nodes that each follow a topology of their own
// in etcd (one prefix per node, /self/<id>/): in naming-file mode every
// instance is a node that owns its partition, and replicas of a partition
// own the same slots, which no single topology can say.
type selfServed struct {
	etcd  *etcdtest.Etcd
	Nodes []*testcluster.Node
}

func selfPrefix(id string) string { return "/self/" + id + "/" }

// startSelfServed starts n storage nodes n1..nN on one etcd, each
// following its own prefix; they hold no topology until serve.
func startSelfServed(tb testing.TB, n int) *selfServed {
	tb.Helper()
	s := &selfServed{etcd: etcdtest.Start(tb), Nodes: make([]*testcluster.Node, n)}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprintf("n%d", i+1)
			dir := filepath.Join(tb.TempDir(), id)
			p := proctest.Start(tb, proctest.Bin(tb, "slotkv-storage"), "--node-id", id, "--data-dir", dir,
				"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
				"--etcd-endpoints", s.etcd.Endpoint, "--etcd-prefix", selfPrefix(id))
			cc, err := dial.New(p.GRPC, dial.Options{})
			if err != nil {
				tb.Error(err)
				return
			}
			tb.Cleanup(func() { _ = cc.Close() })
			s.Nodes[i] = &testcluster.Node{ID: id, Proc: p, DataDir: dir, Conn: cc}
		})
	}
	wg.Wait()
	for i, nd := range s.Nodes {
		if nd == nil {
			tb.Fatalf("storage node n%d did not start", i+1)
		}
	}
	return s
}

// serve gives node n, through a topology of its own committed in etcd
// under its prefix, the slots of partition part of m, and waits until the
// node holds it.
func (s *selfServed) serve(tb testing.TB, n *testcluster.Node, part, m int) {
	tb.Helper()
	start, end := fanout.PartitionRange(part, m, slot.Count)
	topo, err := topology.New(1, []topology.Node{n.Topology()},
		map[string][]slot.Range{n.ID: {{Start: uint16(start), End: uint16(end - 1)}}})
	if err != nil {
		tb.Fatal(err)
	}
	st, err := topostore.New(s.etcd.Client(tb), topostore.Options{Prefix: selfPrefix(n.ID)})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, created, err := st.Bootstrap(ctx, topo); err != nil || !created {
		tb.Fatalf("topology of %s in etcd: created %v, err %v", n.ID, created, err)
	}
	for {
		resp, err := n.NodeClient().GetTopology(ctx, &storagev1.GetTopologyRequest{})
		if err == nil && resp.GetTopology().GetVersion() >= topo.Version() {
			return
		}
		if ctx.Err() != nil {
			tb.Fatalf("node %s does not hold its topology: %v", n.ID, err)
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
}

// seed writes keys straight into node n (the ones of its partition), as a
// bulk load of an offline-built dataset would.
func seed(tb testing.TB, n *testcluster.Node, keys []string, part, m int) {
	tb.Helper()
	var muts []*storagev1.Mutation
	for _, k := range keys {
		if fanout.PartitionOf(int(slot.OfString(k)), m, slot.Count) == part {
			muts = append(muts, &storagev1.Mutation{Key: []byte(k), Value: []byte("v:" + k)})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := n.StorageClient().BatchWrite(ctx, &storagev1.BatchWriteRequest{Mutations: muts}); err != nil {
		tb.Fatalf("seed %s: %v", n.ID, err)
	}
}

// writeNaming replaces the naming file atomically (the router polls it).
func writeNaming(tb testing.TB, path string, lines []string) {
	tb.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		tb.Fatal(err)
	}
}

// getCounts reads how many data RPCs each node has served (reads and
// writes, whatever method the router chose).
func getCounts(tb testing.TB, nodes []*testcluster.Node) []uint64 {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := make([]uint64, len(nodes))
	for i, n := range nodes {
		info, err := n.NodeClient().GetNodeInfo(ctx, &storagev1.GetNodeInfoRequest{})
		if err != nil {
			tb.Fatal(err)
		}
		for _, c := range info.GetRpcCounts() {
			out[i] += c
		}
	}
	return out
}

func sumRange(before, after []uint64, from, to int) uint64 {
	var s uint64
	for i := from; i < to; i++ {
		s += after[i] - before[i]
	}
	return s
}

func testKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("doc:%05d", i)
	}
	return keys
}

// TestDynamicPartitionMove replays bRPC's DynamicPartitionChannel demo: a
// 3-partition layout and a 4-partition layout serve the same read-mostly
// data; traffic follows capacity while instances come and go, and no client
// call fails during the changes. Per-node request counters prove it.
func TestDynamicPartitionMove(t *testing.T) {
	t.Parallel()
	c := startSelfServed(t, 11)
	three, four, extra := c.Nodes[0:3], c.Nodes[3:7], c.Nodes[7:11]
	keys := testKeys(400)
	type placed struct {
		n       *testcluster.Node
		part, m int
	}
	var all []placed
	for i, n := range three {
		all = append(all, placed{n, i, 3})
	}
	for i, n := range four {
		all = append(all, placed{n, i, 4})
	}
	for i, n := range extra {
		all = append(all, placed{n, i, 4})
	}
	for _, p := range all {
		c.serve(t, p.n, p.part, p.m)
		seed(t, p.n, keys, p.part, p.m)
	}
	line := func(p placed) string { return fmt.Sprintf("%s %d/%d", p.n.Proc.GRPC, p.part, p.m) }
	phase1 := []string{"# layout of 3 partitions, then layout of 4"}
	for _, p := range all[:7] {
		phase1 = append(phase1, line(p))
	}
	naming := filepath.Join(t.TempDir(), "naming.txt")
	writeNaming(t, naming, phase1)

	rt := proctest.Start(t, proctest.Bin(t, "slotkv-router"), "--naming-file", naming,
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--log-level", "warn")
	kv := routerv1.NewKVServiceClient(benchConn(t, rt.GRPC))

	// A client load runs through every change and must never fail.
	ctx, stopLoad := context.WithCancel(context.Background())
	var (
		wg       sync.WaitGroup
		calls    atomic.Int64
		failures atomic.Int64
		firstErr atomic.Value
	)
	for w := 0; w < 4; w++ {
		wg.Go(func() {
			for i := w; ctx.Err() == nil; i += 4 {
				k := keys[i%len(keys)]
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				resp, err := kv.Get(cctx, &routerv1.GetRequest{Key: k})
				cancel()
				if ctx.Err() != nil {
					return
				}
				calls.Add(1)
				if err != nil || resp.GetText() != "v:"+k {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("get %s: %v %v", k, resp, err))
				}
			}
		})
	}
	t.Cleanup(func() { stopLoad(); wg.Wait() })

	nodes := make([]*testcluster.Node, len(all))
	for i, p := range all {
		nodes[i] = p.n
	}
	// window counts the Gets each node serves while the load makes n more
	// calls.
	window := func(n int64) (before, after []uint64) {
		before = getCounts(t, nodes)
		target := calls.Load() + n
		for calls.Load() < target {
			time.Sleep(5 * time.Millisecond)
		}
		return before, getCounts(t, nodes)
	}
	share := func(b, a []uint64) (s3, s4, sx uint64) {
		return sumRange(b, a, 0, 3), sumRange(b, a, 3, 7), sumRange(b, a, 7, 11)
	}
	waitFor := func(what string, ok func(b, a []uint64) bool) {
		deadline := time.Now().Add(30 * time.Second)
		for {
			if b, a := window(100); ok(b, a) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("router did not %s within 30s", what)
			}
		}
	}

	// Phase 1: equal capacities (1 and 1): traffic splits about evenly.
	waitFor("serve both layouts", func(b, a []uint64) bool { s3, s4, _ := share(b, a); return s3 > 0 && s4 > 0 })
	b, a := window(1000)
	s3, s4, sx := share(b, a)
	t.Logf("phase 1: 3-layout %d, 4-layout %d, extra %d", s3, s4, sx)
	if f := float64(s3) / float64(s3+s4); sx != 0 || f < 0.35 || f > 0.65 {
		t.Fatalf("phase 1: 3-layout got %.2f of the traffic (%d vs %d, extra %d), want about 0.5", f, s3, s4, sx)
	}

	// Phase 2: a second instance in every partition of the 4-layout doubles
	// its capacity: it should take about two thirds.
	phase2 := slices.Clone(phase1)
	for _, p := range all[7:] {
		phase2 = append(phase2, line(p))
	}
	writeNaming(t, naming, phase2)
	waitFor("use the added instances", func(b, a []uint64) bool { _, _, sx := share(b, a); return sx > 0 })
	b, a = window(1500)
	s3, s4, sx = share(b, a)
	t.Logf("phase 2: 3-layout %d, 4-layout %d + %d", s3, s4, sx)
	if f := float64(s3) / float64(s3+s4+sx); f < 0.2 || f > 0.46 {
		t.Fatalf("phase 2: 3-layout got %.2f of the traffic (%d vs %d+%d), want about 0.33", f, s3, s4, sx)
	}

	// Phase 3: commenting out one line of the 3-layout leaves it incomplete
	// (capacity 0): its traffic drops to zero.
	phase3 := slices.Clone(phase2)
	phase3[2] = "# " + phase3[2]
	writeNaming(t, naming, phase3)
	waitFor("drop the incomplete layout", func(b, a []uint64) bool { s3, _, _ := share(b, a); return s3 == 0 })
	b, a = window(1000)
	s3, s4, sx = share(b, a)
	t.Logf("phase 3: 3-layout %d, 4-layout %d + %d", s3, s4, sx)
	if s3 != 0 || s4 == 0 || sx == 0 {
		t.Fatalf("phase 3: 3-layout still served %d calls (4-layout %d+%d)", s3, s4, sx)
	}

	stopLoad()
	wg.Wait()
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d of %d client calls failed during the layout changes; first: %v", n, calls.Load(), firstErr.Load())
	}
	t.Logf("%d client calls, none failed", calls.Load())
}
