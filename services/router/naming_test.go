package router_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	routerv1 "github.com/slotkv/slotkv/gen/slotkv/router/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/fanout"
	"github.com/slotkv/slotkv/pkg/proctest"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/testcluster"
	"github.com/slotkv/slotkv/pkg/topology"
	"github.com/slotkv/slotkv/services/router"
)

// namingCluster starts m storage instances; instance i holds a
// single-node topology that gives it the slots of partition i of m. Each
// instance is a cluster of its own (its own etcd holding that topology):
// a naming file routes across clusters that know nothing of each other.
func namingCluster(t testing.TB, m int) *testcluster.Cluster {
	t.Helper()
	all := &testcluster.Cluster{}
	for i := range m {
		c := testcluster.Start(t, 1, testcluster.Options{})
		n := c.Nodes[0]
		lo, hi := fanout.PartitionRange(i, m, slot.Count)
		topo, err := topology.New(1, []topology.Node{n.Topology()}, map[string][]slot.Range{n.ID: {{Start: uint16(lo), End: uint16(hi - 1)}}})
		if err != nil {
			t.Fatal(err)
		}
		c.SetTopology(t, topo)
		all.Nodes = append(all.Nodes, n)
	}
	return all
}

// namingLines are the naming lines of c's instances as partitions of m.
func namingLines(c *testcluster.Cluster, m int) string {
	var b strings.Builder
	for i, n := range c.Nodes {
		fmt.Fprintf(&b, "%s %d/%d\n", n.Proc.GRPC, i, m)
	}
	return b.String()
}

// writeFile replaces path's content atomically (write, then rename).
func writeFile(t testing.TB, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func partitionName(key string, m int) string {
	return fmt.Sprintf("%d/%d", fanout.PartitionOf(int(slot.OfString(key)), m, slot.Count), m)
}

// direct reads key straight from instance i of c.
func direct(t testing.TB, c *testcluster.Cluster, i int, key string) (string, bool) {
	t.Helper()
	resp, err := c.Nodes[i].StorageClient().Get(ctxT(t), &storagev1.GetRequest{Key: []byte(key)})
	if status.Code(err) == codes.NotFound {
		return "", false
	}
	if err != nil {
		t.Fatalf("direct Get %q on instance %d: %v", key, i, err)
	}
	return string(resp.GetValue()), true
}

func TestNamingMode(t *testing.T) {
	t.Parallel()
	c3 := namingCluster(t, 3)
	path := filepath.Join(t.TempDir(), "naming.txt")
	writeFile(t, path, "# three partitions\n"+namingLines(c3, 3)+"not-a-valid line here x\n127.0.0.1:1 5/3\n")
	r := startRouter(t, router.Options{NamingFile: path, NamingPoll: 20 * time.Millisecond})
	waitReady(t, r)
	ctx := ctxT(t)

	// Single keys.
	put, err := r.KV.Put(ctx, &routerv1.PutRequest{Key: "hello", Data: &routerv1.PutRequest_Text{Text: "world"}})
	if err != nil {
		t.Fatal(err)
	}
	if put.GetNodeId() != partitionName("hello", 3) || put.GetSlot() != uint32(slot.OfString("hello")) {
		t.Fatalf("Put = %v, want node_id %s", put, partitionName("hello", 3))
	}
	if v, ok := direct(t, c3, fanout.PartitionOf(int(slot.OfString("hello")), 3, slot.Count), "hello"); !ok || v != "world" {
		t.Fatalf("hello on its instance: %q %v", v, ok)
	}
	got, err := r.KV.Get(ctx, &routerv1.GetRequest{Key: "hello"})
	if err != nil || got.GetText() != "world" || got.GetNodeId() != partitionName("hello", 3) {
		t.Fatalf("Get hello = %v, %v", got, err)
	}
	if _, err := r.KV.Get(ctx, &routerv1.GetRequest{Key: "absent"}); status.Code(err) != codes.NotFound {
		t.Fatalf("Get absent: %v, want NotFound", err)
	}

	// Multi-key calls: one sub-call per partition.
	values := map[string]string{"hello": "world"}
	for i := range 60 {
		values[fmt.Sprintf("n/%d", i)] = fmt.Sprint("v", i)
	}
	multiPut(t, r, values)
	var keys []string
	for k := range values {
		keys = append(keys, k)
	}
	rand.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	before := make([]uint64, 3)
	for i, n := range c3.Nodes {
		before[i] = rpcCount(t, n, "BatchGet")
	}
	mg, err := r.KV.MultiGet(ctx, &routerv1.MultiGetRequest{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range mg.GetEntries() {
		if e.GetKey() != keys[i] || !e.GetFound() || e.GetText() != values[keys[i]] || e.GetPartition() != partitionName(keys[i], 3) {
			t.Fatalf("entry %d = %v, want %s=%s from %s", i, e, keys[i], values[keys[i]], partitionName(keys[i], 3))
		}
	}
	for i, n := range c3.Nodes {
		if got := rpcCount(t, n, "BatchGet") - before[i]; got != 1 {
			t.Errorf("instance %d: BatchGet count grew by %d for one MultiGet, want 1", i, got)
		}
	}

	// Scan and count over the partitions' slot ranges.
	all, _ := scanAll(t, r, &routerv1.ScanRequest{Limit: 7})
	if len(all) != len(keys) {
		t.Fatalf("scan: %d entries, want %d", len(all), len(keys))
	}
	for i, e := range sortedSlotKeys(keys) {
		if all[i].GetKey() != e.key || all[i].GetText() != values[e.key] || all[i].GetPartition() != partitionName(e.key, 3) {
			t.Fatalf("scan entry %d = %v, want %s from %s", i, all[i], e.key, partitionName(e.key, 3))
		}
	}
	cnt, err := r.KV.Count(ctx, &routerv1.CountRequest{})
	if err != nil || cnt.GetCount() != uint64(len(keys)) {
		t.Fatalf("Count = %v, %v; want %d", cnt, err, len(keys))
	}
	if _, err := r.KV.GetTopology(ctx, &routerv1.GetTopologyRequest{}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("GetTopology in naming mode: %v, want FailedPrecondition", err)
	}
	if _, err := r.KV.Delete(ctx, &routerv1.DeleteRequest{Key: "hello"}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.KV.Get(ctx, &routerv1.GetRequest{Key: "hello"}); status.Code(err) != codes.NotFound {
		t.Fatalf("Get after Delete: %v, want NotFound", err)
	}
	if code, m := rest(t, "GET", "http://"+r.HTTP+"/v1/count", "", ""); code != 200 || m["count"] != fmt.Sprint(len(keys)-1) {
		t.Fatalf("REST count: %d %v", code, m)
	}

	// Reload: a 4-partition layout joins the file. Writes then go to both
	// layouts; reads to either.
	c4 := namingCluster(t, 4)
	writeFile(t, path, namingLines(c3, 3)+namingLines(c4, 4))
	probe := "probe"
	i4 := fanout.PartitionOf(int(slot.OfString(probe)), 4, slot.Count)
	deadline := time.Now().Add(30 * time.Second)
	for n := 0; ; n++ {
		if _, err := r.KV.Put(ctx, &routerv1.PutRequest{Key: probe, Data: &routerv1.PutRequest_Text{Text: fmt.Sprint(n)}}); err != nil {
			t.Fatal(err)
		}
		if v, ok := direct(t, c4, i4, probe); ok && v == fmt.Sprint(n) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("writes do not reach the 4-partition layout after the naming file changed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	fresh := map[string]string{}
	for i := range 40 {
		fresh[fmt.Sprintf("f/%d", i)] = fmt.Sprint("fresh", i)
	}
	multiPut(t, r, fresh)
	var freshKeys []string
	for k, v := range fresh {
		freshKeys = append(freshKeys, k)
		s := int(slot.OfString(k))
		if got, ok := direct(t, c3, fanout.PartitionOf(s, 3, slot.Count), k); !ok || got != v {
			t.Fatalf("%s on the 3-layout: %q %v", k, got, ok)
		}
		if got, ok := direct(t, c4, fanout.PartitionOf(s, 4, slot.Count), k); !ok || got != v {
			t.Fatalf("%s on the 4-layout: %q %v", k, got, ok)
		}
	}
	// Reads go to one layout per call, chosen by capacity (1:1 here): go
	// on until both layouts have served some.
	b3, b4 := rpcCount(t, c3.Nodes[0], "BatchGet"), rpcCount(t, c4.Nodes[0], "BatchGet")
	for n := 0; rpcCount(t, c3.Nodes[0], "BatchGet") == b3 || rpcCount(t, c4.Nodes[0], "BatchGet") == b4; n++ {
		if n == 200 {
			t.Fatal("200 multi-gets did not reach both layouts")
		}
		mg, err := r.KV.MultiGet(ctx, &routerv1.MultiGetRequest{Keys: freshKeys})
		if err != nil {
			t.Fatal(err)
		}
		m := 0
		for i, e := range mg.GetEntries() {
			if !e.GetFound() || e.GetText() != fresh[freshKeys[i]] {
				t.Fatalf("entry %v, want %s", e, fresh[freshKeys[i]])
			}
			fmt.Sscanf(e.GetPartition()[strings.IndexByte(e.GetPartition(), '/')+1:], "%d", &m)
			if e.GetPartition() != partitionName(e.GetKey(), m) {
				t.Fatalf("entry %v from partition %s, want %s", e, e.GetPartition(), partitionName(e.GetKey(), m))
			}
		}
	}
}

// TestNamingReplicas: two instances of one partition (0/1) are replicas:
// writes reach both, reads (hedged) are served by either.
func TestNamingReplicas(t *testing.T) {
	t.Parallel()
	c := namingCluster(t, 1)
	c2 := namingCluster(t, 1)
	path := filepath.Join(t.TempDir(), "naming.txt")
	writeFile(t, path, c.Nodes[0].Proc.GRPC+" 0/1\n"+c2.Nodes[0].Proc.GRPC+" 0/1 2\n")
	r := startRouter(t, router.Options{NamingFile: path, HedgeDelay: time.Millisecond, HedgeMaxRatio: 0.5, Balancer: "rr"})
	waitReady(t, r)
	ctx := ctxT(t)
	values := map[string]string{}
	for i := range 30 {
		values[fmt.Sprintf("r/%d", i)] = fmt.Sprint(i)
	}
	multiPut(t, r, values)
	var keys []string
	for k, v := range values {
		keys = append(keys, k)
		for _, cl := range []*testcluster.Cluster{c, c2} {
			if got, ok := direct(t, cl, 0, k); !ok || got != v {
				t.Fatalf("%s on %s: %q %v", k, cl.Nodes[0].Proc.GRPC, got, ok)
			}
		}
	}
	for range 20 {
		mg, err := r.KV.MultiGet(ctx, &routerv1.MultiGetRequest{Keys: keys})
		if err != nil {
			t.Fatal(err)
		}
		for i, e := range mg.GetEntries() {
			if !e.GetFound() || e.GetText() != values[keys[i]] || e.GetPartition() != "0/1" {
				t.Fatalf("entry %v, want %s from 0/1", e, values[keys[i]])
			}
		}
	}
	reads := rpcCount(t, c.Nodes[0], "BatchGet") + rpcCount(t, c2.Nodes[0], "BatchGet")
	if reads < 20 {
		t.Fatalf("%d BatchGet calls for 20 multi-gets", reads)
	}
}

// TestBinaryNaming runs the binary with SLOTKV_NAMING_FILE.
func TestBinaryNaming(t *testing.T) {
	t.Parallel()
	c := namingCluster(t, 2)
	path := filepath.Join(t.TempDir(), "naming.txt")
	writeFile(t, path, namingLines(c, 2))
	p := proctest.StartWith(t, proctest.Options{Env: []string{"SLOTKV_NAMING_FILE=" + path, "SLOTKV_HEDGE_DELAY=5ms", "SLOTKV_BALANCER=hash"}},
		proctest.Bin(t, "slotkv-router"), "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
	r := &testRouter{GRPC: p.GRPC, HTTP: p.HTTP}
	waitReady(t, r)
	if code, m := rest(t, "POST", "http://"+p.HTTP+"/v1/kv:multiPut", `{"entries":[{"key":"a","text":"1"},{"key":"b","text":"2"}]}`, ""); code != 200 {
		t.Fatalf("multiPut: %d %v", code, m)
	}
	if code, m := rest(t, "GET", "http://"+p.HTTP+"/v1/scan", "", ""); code != 200 || len(m["entries"].([]any)) != 2 {
		t.Fatalf("scan: %d %v", code, m)
	}
	if code, m := rest(t, "GET", "http://"+p.HTTP+"/v1/topology", "", ""); code != http400or412(code) {
		t.Fatalf("topology in naming mode: %d %v", code, m)
	}
	if err := p.Stop(); err != nil {
		t.Fatalf("router did not exit cleanly: %v\n%s", err, p.Log())
	}
}

// http400or412 accepts the HTTP code grpc-gateway gives FailedPrecondition.
func http400or412(code int) int {
	if code == 400 || code == 412 {
		return code
	}
	return -1
}

// TestNamingPartial: with the instance of partition 1/3 stopped, reads
// with allow_partial list it in failed; strict reads and writes fail with
// Unavailable naming it.
func TestNamingPartial(t *testing.T) {
	t.Parallel()
	c := namingCluster(t, 3)
	path := filepath.Join(t.TempDir(), "naming.txt")
	writeFile(t, path, namingLines(c, 3))
	r := startRouter(t, router.Options{NamingFile: path})
	waitReady(t, r)
	ctx := ctxT(t)
	values := map[string]string{}
	var keys []string
	for i := range 30 {
		k := fmt.Sprintf("p/%d", i)
		values[k] = fmt.Sprint(i)
		keys = append(keys, k)
	}
	multiPut(t, r, values)
	if err := c.Nodes[1].Proc.Stop(); err != nil {
		t.Logf("instance 1 exit: %v", err)
	}
	mg, err := r.KV.MultiGet(ctx, &routerv1.MultiGetRequest{Keys: keys, AllowPartial: true})
	if err != nil {
		t.Fatal(err)
	}
	if f := mg.GetFailed(); len(f) != 1 || f[0].GetPartition() != "1/3" || f[0].GetCode() != "UNAVAILABLE" {
		t.Fatalf("failed = %v, want 1/3 UNAVAILABLE", f)
	}
	for i, e := range mg.GetEntries() {
		p := partitionName(keys[i], 3)
		if e.GetPartition() != p || e.GetFound() != (p != "1/3") {
			t.Fatalf("entry %v, want partition %s found %v", e, p, p != "1/3")
		}
	}
	cnt, err := r.KV.Count(ctx, &routerv1.CountRequest{AllowPartial: true})
	if err != nil || len(cnt.GetFailed()) != 1 {
		t.Fatalf("partial count = %v, %v", cnt, err)
	}
	for what, call := range map[string]func() error{
		"multi-get": func() error { _, err := r.KV.MultiGet(ctx, &routerv1.MultiGetRequest{Keys: keys}); return err },
		"scan":      func() error { _, err := r.KV.Scan(ctx, &routerv1.ScanRequest{}); return err },
		"multi-put": func() error {
			_, err := r.KV.MultiPut(ctx, &routerv1.MultiPutRequest{Entries: []*routerv1.KeyValue{textKV(keys[0], "x"), textKV(keys[1], "y"), textKV(keys[2], "z")}})
			return err
		},
	} {
		if err := call(); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "1/3") {
			t.Errorf("%s: %v, want Unavailable naming 1/3", what, err)
		}
	}
}
