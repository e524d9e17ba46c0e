package console

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/slotkv/slotkv/pkg/etcdtest"
	"github.com/slotkv/slotkv/pkg/proctest"
	"github.com/slotkv/slotkv/pkg/server"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/testcluster"
	"github.com/slotkv/slotkv/pkg/topology"
)

// node finds a node in the cluster view.
func (st appState) node(id string) (nodeView, bool) {
	for _, n := range st.Cluster.Nodes {
		if n.ID == id {
			return n, true
		}
	}
	return nodeView{}, false
}

// With --etcd-endpoints alone the console finds the cluster in etcd: the
// topology from the watch, live nodes from their registrations, dead ones
// as the topology's nodes without one.
func TestEtcdControlPlane(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t)
	c := testcluster.Start(t, 3, testcluster.Options{Etcd: e})
	v1 := c.Bootstrap(t)

	o := DefaultOptions()
	o.Etcd = server.Etcd{Endpoints: e.Endpoints()}
	o.SampleInterval = 200 * time.Millisecond
	_, srv := serveConsole(t, o)
	// A console that samples once an hour: only the watch can show it a
	// new topology while the test runs.
	slow := o
	slow.SampleInterval = time.Hour
	_, slowSrv := serveConsole(t, slow)
	hc := &http.Client{Timeout: 30 * time.Second}
	var v2 *topology.Topology // committed by a subtest below

	t.Run("topology from etcd", func(t *testing.T) {
		st := waitStateAt(t, hc, srv.URL, "3 healthy registered nodes", func(st appState) bool {
			ok := 0
			for _, n := range st.Cluster.Nodes {
				if n.Health == "ok" && n.Registered != nil && *n.Registered {
					ok++
				}
			}
			return ok == 3
		})
		if st.Cluster.Version != 1 || st.Cluster.From != "etcd" || len(st.Cluster.Errors) != 0 || len(st.Cluster.Dead) != 0 {
			t.Errorf("topology v%d from %q, errors %v, dead %v: want v1 from etcd, no error, none dead", st.Cluster.Version, st.Cluster.From, st.Cluster.Errors, st.Cluster.Dead)
		}
		slots := 0
		for _, n := range st.Cluster.Nodes {
			slots += n.Slots
			if want := c.Node(t, n.ID).Proc; !n.InTopology || n.GRPC != want.GRPC || n.HTTP != want.HTTP {
				t.Errorf("node %s: in topology %v at %s/%s, want in it at %s/%s", n.ID, n.InTopology, n.GRPC, n.HTTP, want.GRPC, want.HTTP)
			}
		}
		if slots != slot.Count {
			t.Errorf("nodes own %d slots, want %d", slots, slot.Count)
		}
	})

	t.Run("the binary, with only the etcd endpoints", func(t *testing.T) {
		p := proctest.StartWith(t, proctest.Options{Env: []string{server.EnvEtcdEndpoints + "=" + e.Endpoint, "SLOTKV_ROUTER="}},
			proctest.Bin(t, "slotkv-console"), "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--sample-interval", "200ms")
		st := waitStateAt(t, hc, "http://"+p.HTTP, "3 nodes from etcd", func(st appState) bool {
			return st.Cluster.From == "etcd" && len(st.Cluster.Nodes) == 3
		})
		if st.Cluster.Version != 1 || len(st.Cluster.Dead) != 0 {
			t.Errorf("binary: v%d, dead %v, errors %v", st.Cluster.Version, st.Cluster.Dead, st.Cluster.Errors)
		}
		if err := p.Stop(); err != nil {
			t.Errorf("the console did not exit cleanly on SIGTERM: %v", err)
		}
	})

	t.Run("a commit in etcd reaches the page", func(t *testing.T) {
		from, _ := v1.Owner(0)
		to := "n2"
		if from.ID == to {
			to = "n3"
		}
		v2 = testcluster.Move(t, v1, 0, to)
		c.SetTopology(t, v2)
		moved := func(st appState) bool { return st.Cluster.Version == 2 && st.owner(0) == to }
		waitStateAt(t, hc, srv.URL, "v2 with slot 0 on "+to, moved)
		waitStateAt(t, hc, slowSrv.URL, "v2 with slot 0 on "+to+" on the console that samples hourly", moved)
		var cv clusterView
		if err := json.Unmarshal([]byte(readEvents(t, hc, srv.URL+"/events", kindCluster)[kindCluster]), &cv); err != nil || cv.Version != 2 || cv.From != "etcd" {
			t.Errorf("cluster event: v%d from %q (%v), want v2 from etcd", cv.Version, cv.From, err)
		}
	})

	t.Run("a registered node outside the topology", func(t *testing.T) {
		p := proctest.Start(t, proctest.Bin(t, "slotkv-storage"), append([]string{"--node-id", "n4", "--data-dir", filepath.Join(t.TempDir(), "n4"),
			"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"}, c.EtcdArgs()...)...)
		st := waitStateAt(t, hc, srv.URL, "n4 listed", func(st appState) bool {
			n, ok := st.node("n4")
			return ok && n.Registered != nil && *n.Registered && n.Health != "down"
		})
		if n, _ := st.node("n4"); n.InTopology || n.Health == "dead" || n.Slots != 0 || n.GRPC != p.GRPC || len(st.Cluster.Dead) != 0 {
			t.Errorf("n4 %+v, dead %v: want a live node at %s, not in the topology, no slots", n, st.Cluster.Dead, p.GRPC)
		}
		// Gone from etcd and never in the topology: not listed at all.
		if err := p.Stop(); err != nil {
			t.Fatalf("stop n4: %v", err)
		}
		st = waitStateAt(t, hc, srv.URL, "n4 gone", func(st appState) bool { _, ok := st.node("n4"); return !ok })
		if len(st.Cluster.Dead) != 0 {
			t.Errorf("dead %v after n4, never in the topology, stopped", st.Cluster.Dead)
		}
	})

	n3 := c.Node(t, "n3")
	t.Run("a stopped node is dead", func(t *testing.T) {
		// A clean stop revokes the node's lease: it is unregistered at once.
		if err := n3.Proc.Stop(); err != nil {
			t.Fatalf("stop n3: %v", err)
		}
		st := waitStateAt(t, hc, srv.URL, "n3 dead", func(st appState) bool {
			n, ok := st.node("n3")
			return ok && n.Health == "dead"
		})
		n, _ := st.node("n3")
		want, _ := slot.NewRangeSet(v2.RangesOf("n3")...)
		if n.Registered == nil || *n.Registered || !n.InTopology || !strings.Contains(n.Error, "not registered in etcd") || n.Keys != 0 || n.TopologyVersion != 0 {
			t.Errorf("n3 %+v: want in the topology, not registered, the reason shown, no figures", n)
		}
		if n.Slots != want.Len() || n.Ranges != want.String() {
			t.Errorf("n3 shows slots %d %q, want the topology's %d %q (the slots nobody serves)", n.Slots, n.Ranges, want.Len(), want.String())
		}
		if !slices.Equal(st.Cluster.Dead, []string{"n3"}) || len(st.Cluster.Errors) != 0 {
			t.Errorf("dead %v, errors %v: want [n3] and no error", st.Cluster.Dead, st.Cluster.Errors)
		}
		for _, id := range []string{"n1", "n2"} {
			if n, _ := st.node(id); n.Health != "ok" {
				t.Errorf("%s: %s %s, want ok", id, n.Health, n.Error)
			}
		}
		deadSpans := 0
		for _, sp := range st.Cluster.Owners {
			if sp.Dead != (sp.Node == "n3") {
				t.Errorf("owner span %+v: dead %v", sp, sp.Dead)
			}
			if sp.Dead {
				deadSpans++
			}
		}
		if deadSpans == 0 {
			t.Errorf("no slot span marked dead: %v", st.Cluster.Owners)
		}
		var cv clusterView
		if err := json.Unmarshal([]byte(readEvents(t, hc, srv.URL+"/events", kindCluster)[kindCluster]), &cv); err != nil || !slices.Equal(cv.Dead, []string{"n3"}) {
			t.Errorf("cluster event: dead %v (%v), want [n3]", cv.Dead, err)
		}
	})

	t.Run("a restarted node is live again", func(t *testing.T) {
		c.Restart(t, n3)
		waitStateAt(t, hc, srv.URL, "n3 back", func(st appState) bool {
			n, ok := st.node("n3")
			return ok && n.Health == "ok" && n.Registered != nil && *n.Registered && len(st.Cluster.Dead) == 0
		})
	})

	t.Run("etcd down", func(t *testing.T) {
		if err := e.Stop(); err != nil {
			t.Fatal(err)
		}
		// The registrations cannot be read: an error naming etcd, and no
		// node called dead for it; the nodes still answer.
		st := waitStateAt(t, hc, srv.URL, "an error naming etcd", func(st appState) bool {
			return slices.ContainsFunc(st.Cluster.Errors, func(s string) bool { return strings.Contains(s, "etcd "+e.Endpoint) })
		})
		if len(st.Cluster.Dead) != 0 || st.Cluster.Version != 2 {
			t.Errorf("dead %v, v%d while etcd is down: want none dead, the last topology v2", st.Cluster.Dead, st.Cluster.Version)
		}
		for _, n := range st.Cluster.Nodes {
			if n.Registered != nil || n.Health == "dead" {
				t.Errorf("node %s: registered %v, health %s while etcd is down: want unknown, not dead", n.ID, n.Registered, n.Health)
			}
		}
	})
}

func TestMembers(t *testing.T) {
	t.Parallel()
	nodes := []topology.Node{{ID: "a", GRPCAddress: "a:1"}, {ID: "b", GRPCAddress: "b:1"}}
	topo, err := topology.Even(1, nodes)
	if err != nil {
		t.Fatal(err)
	}
	yes, no := true, false
	for _, tc := range []struct {
		name     string
		reg      map[string]topology.Node
		withEtcd bool
		want     []member
	}{
		{"without etcd: the topology's nodes", nil, false, []member{{node: nodes[0], inTopology: true}, {node: nodes[1], inTopology: true}}},
		{"etcd unreadable: registration unknown", nil, true, []member{{node: nodes[0], inTopology: true}, {node: nodes[1], inTopology: true}}},
		{
			"registered at a new address, one dead, one new",
			map[string]topology.Node{"b": {ID: "b", GRPCAddress: "b:2"}, "c": {ID: "c", GRPCAddress: "c:1"}},
			true,
			[]member{
				{node: nodes[0], inTopology: true, registered: &no},
				{node: topology.Node{ID: "b", GRPCAddress: "b:2"}, inTopology: true, registered: &yes},
				{node: topology.Node{ID: "c", GRPCAddress: "c:1"}, registered: &yes},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := members(topo, tc.reg, tc.withEtcd)
			if len(got) != len(tc.want) {
				t.Fatalf("got %d members %+v, want %+v", len(got), got, tc.want)
			}
			for i, w := range tc.want {
				g := got[i]
				if g.node != w.node || g.inTopology != w.inTopology || (g.registered == nil) != (w.registered == nil) || (g.registered != nil && *g.registered != *w.registered) {
					t.Errorf("member %d: %+v (registered %v), want %+v (registered %v)", i, g, deref(g.registered), w, deref(w.registered))
				}
			}
		})
	}
}

func deref(b *bool) string {
	if b == nil {
		return "unknown"
	}
	if *b {
		return "yes"
	}
	return "no"
}
