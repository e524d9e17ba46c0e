package router_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	routerv1 "github.com/slotkv/slotkv/gen/slotkv/router/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/etcdtest"
	"github.com/slotkv/slotkv/pkg/proctest"
	"github.com/slotkv/slotkv/pkg/server"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/testcluster"
	"github.com/slotkv/slotkv/pkg/topology"
	"github.com/slotkv/slotkv/pkg/topostore"
	"github.com/slotkv/slotkv/services/router"
)

// putCounts is each node's count of Put calls received (the storage
// nodes' own RPC counters, refused calls included).
func putCounts(t *testing.T, ctx context.Context, c *testcluster.Cluster) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for _, n := range c.Nodes {
		info, err := n.NodeClient().GetNodeInfo(ctx, &storagev1.GetNodeInfoRequest{})
		if err != nil {
			t.Fatalf("GetNodeInfo on %s: %v", n.ID, err)
		}
		out[n.ID] = info.GetRpcCounts()["Put"]
	}
	return out
}

func readyz(t *testing.T, httpAddr string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// With etcd the router takes no seeds, is ready once etcd holds a
// topology, and follows a change committed in etcd before any call: the
// first call after it goes to the new owner, and the old owner is not
// called at all (no SLOT_MOVED answer), by the storage nodes' RPC counters.
// The storage nodes either watch etcd too (the control plane) or are given
// the same topologies directly.
func TestEtcdTopologyWatched(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		nodesEtcd bool
	}{
		{"nodes watching etcd", true},
		{"nodes given the topology", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testEtcdTopologyWatched(t, tc.nodesEtcd)
		})
	}
}

func testEtcdTopologyWatched(t *testing.T, nodesEtcd bool) {
	e := etcdtest.Start(t)
	st, err := topostore.New(e.Client(t), topostore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var c *testcluster.Cluster
	// setTopology leaves topo in etcd and on every node.
	setTopology := func(topo *topology.Topology) {
		t.Helper()
		if nodesEtcd {
			c.SetTopology(t, topo) // committed in etcd; returns once every node holds it
			return
		}
		c.SetTopology(t, topo)
		ctx := ctxT(t)
		if topo.Version() == 1 {
			if _, created, err := st.Bootstrap(ctx, topo); err != nil || !created {
				t.Fatalf("bootstrap in etcd: created %v, %v", created, err)
			}
		} else if err := st.Commit(ctx, topo.Version()-1, topo); err != nil {
			t.Fatal(err)
		}
	}
	o := testcluster.Options{}
	if nodesEtcd {
		o.Etcd = e
	}
	c = testcluster.Start(t, 3, o)
	ctx := ctxT(t)
	r := startRouter(t, router.Options{Common: server.Common{Etcd: server.Etcd{Endpoints: e.Endpoints()}}})

	if code, body := readyz(t, r.HTTP); code != http.StatusServiceUnavailable || !strings.Contains(body, "etcd") {
		t.Fatalf("/readyz before a bootstrap: %d %q, want 503 naming etcd", code, body)
	}
	v1, err := topology.Even(1, c.TopologyNodes())
	if err != nil {
		t.Fatal(err)
	}
	setTopology(v1)
	waitReady(t, r)

	key := keyOn(t, v1, "n1", "watched")
	put := func(text string) string {
		t.Helper()
		resp, err := r.KV.Put(ctx, &routerv1.PutRequest{Key: key, Data: &routerv1.PutRequest_Text{Text: text}})
		if err != nil {
			t.Fatalf("Put %q: %v", text, err)
		}
		return resp.GetNodeId()
	}
	if id := put("before"); id != "n1" {
		t.Fatalf("Put before the move answered by %s, want n1", id)
	}

	// The move, as a migration's commit leaves it: etcd and every node
	// hold v2.
	v2 := testcluster.Move(t, v1, slot.OfString(key), "n2")
	before := putCounts(t, ctx, c)
	setTopology(v2)
	for {
		tr, err := r.KV.GetTopology(ctx, &routerv1.GetTopologyRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if tr.GetTopology().GetVersion() == 2 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("router still at version %d after the commit of 2", tr.GetTopology().GetVersion())
		case <-time.After(5 * time.Millisecond):
		}
	}
	if id := put("after"); id != "n2" {
		t.Fatalf("Put after the move answered by %s, want n2", id)
	}
	got, err := r.KV.Get(ctx, &routerv1.GetRequest{Key: key})
	if err != nil || got.GetText() != "after" || got.GetNodeId() != "n2" {
		t.Fatalf("Get after the move = %v, %v", got, err)
	}
	after := putCounts(t, ctx, c)
	if d := after["n1"] - before["n1"]; d != 0 {
		t.Errorf("the old owner n1 received %d Put calls after the commit (SLOT_MOVED answers), want 0", d)
	}
	if d := after["n2"] - before["n2"]; d != 1 {
		t.Errorf("the new owner n2 received %d Put calls, want 1", d)
	}
}

// The binary takes --etcd-endpoints from the environment.
func TestBinaryEtcd(t *testing.T) {
	t.Parallel()
	// The whole control plane: the nodes watch etcd too.
	e := etcdtest.Start(t)
	c := testcluster.Start(t, 2, testcluster.Options{Etcd: e})
	v1 := c.Bootstrap(t) // committed in etcd, held by every node
	p := proctest.StartWith(t, proctest.Options{Env: []string{server.EnvEtcdEndpoints + "=" + e.Endpoint}},
		proctest.Bin(t, "slotkv-router"), "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
	waitReady(t, &testRouter{GRPC: p.GRPC, HTTP: p.HTTP})
	for _, k := range []string{keyOn(t, v1, "n1", "bin"), keyOn(t, v1, "n2", "bin")} {
		if code, m := rest(t, "PUT", "http://"+p.HTTP+"/v1/kv/"+k, `{"text":"v"}`, ""); code != 200 {
			t.Fatalf("PUT %s: %d %v", k, code, m)
		}
	}
	if err := p.Stop(); err != nil {
		t.Fatalf("router did not exit cleanly on SIGTERM: %v\n%s", err, p.Log())
	}
}
