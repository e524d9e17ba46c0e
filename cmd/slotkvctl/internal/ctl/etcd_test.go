package ctl_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	"github.com/slotkv/slotkv/pkg/etcdtest"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/testcluster"
	"github.com/slotkv/slotkv/pkg/topology"
	"github.com/slotkv/slotkv/pkg/topostore"
)

func startEtcd(t *testing.T) (*etcdtest.Etcd, *topostore.Store) {
	t.Helper()
	e := etcdtest.Start(t)
	st, err := topostore.New(e.Client(t), topostore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return e, st
}

func load(t *testing.T, st *topostore.Store) *topology.Topology {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topo, err := st.Load(ctx)
	if err != nil {
		t.Fatalf("load the topology from etcd: %v", err)
	}
	return topo
}

// register registers n in etcd as a storage node does, until the returned
// function (or the test's end) revokes it.
func register(t *testing.T, st *topostore.Store, id, grpcAddr string) (revoke func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	leases, err := st.Register(ctx, &clusterv1.Node{Id: id, GrpcAddress: grpcAddr}, 0)
	if err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
	return func() {
		cancel()
		// The channel closes once the lease is revoked.
		for range leases {
		}
	}
}

func ranges(t *testing.T, topo *topology.Topology, id string) string {
	t.Helper()
	set, _ := slot.NewRangeSet(topo.RangesOf(id)...)
	return set.String()
}

// bootstrap --etcd-endpoints writes version 1 to etcd from the nodes at
// --storage, once: the second call is a no-op that says so (text and
// JSON), also after later commits; topology reads etcd.
func TestBootstrapEtcd(t *testing.T) {
	t.Parallel()
	e, st := startEtcd(t)
	nodes := startNodes(t, 3, "")
	code, out, errOut := run(t, nil, "bootstrap", "--etcd-endpoints", e.Endpoint, "--storage", addrs(nodes))
	if code != 0 {
		t.Fatalf("bootstrap: exit %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(out, "bootstrapped topology version 1 in etcd (/slotkv/topology) with 3 nodes") || strings.Count(out, "written") != 3 {
		t.Fatalf("bootstrap output:\n%s", out)
	}
	v1 := load(t, st)
	for i, want := range []string{"0-5460", "5461-10922", "10923-16383"} {
		if got := ranges(t, v1, nodes[i].id); got != want {
			t.Errorf("%s owns %s, want %s (even split in --storage order)", nodes[i].id, got, want)
		}
		if n, _ := v1.Node(nodes[i].id); n.GRPCAddress != nodes[i].proc.GRPC {
			t.Errorf("%s has address %s in etcd, want %s", nodes[i].id, n.GRPCAddress, nodes[i].proc.GRPC)
		}
		// Written to etcd only: these nodes watch another etcd, and
		// nothing was pushed to them.
		if held := heldTopology(t, nodes[i]); held != nil {
			t.Errorf("%s was given topology version %d directly", nodes[i].id, held.Version())
		}
	}

	// Twice, from the environment: nothing changes, exit 0.
	code, out, errOut = run(t, env("SLOTKV_ETCD_ENDPOINTS", e.Endpoint), "bootstrap", "--storage", addrs(nodes[:2]))
	if code != 0 || !strings.Contains(out, "already bootstrapped at topology version 1 in etcd") {
		t.Fatalf("second bootstrap: exit %d\n%s%s", code, out, errOut)
	}
	if now := load(t, st); !now.Equal(v1) {
		t.Fatalf("the second bootstrap changed the topology in etcd: %v", now)
	}

	// After a commit, the same, in JSON.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := st.Commit(ctx, 1, testcluster.Move(t, v1, 0, "n2")); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = run(t, nil, "bootstrap", "--json", "--etcd-endpoints", e.Endpoint)
	var res struct {
		AlreadyBootstrappedAt uint64 `json:"already_bootstrapped_at"`
		EtcdKey               string `json:"etcd_key"`
	}
	if code != 0 {
		t.Fatalf("bootstrap --json after a commit: exit %d\n%s%s", code, out, errOut)
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.AlreadyBootstrappedAt != 2 || res.EtcdKey != "/slotkv/topology" {
		t.Fatalf("bootstrap --json after a commit: %+v, %v\n%s", res, err, out)
	}

	// topology reads etcd.
	code, out, errOut = run(t, nil, "topology", "--etcd-endpoints", e.Endpoint)
	if code != 0 {
		t.Fatalf("topology: exit %d\n%s%s", code, out, errOut)
	}
	for _, s := range []string{"topology version 2", "n1", "1-5460", "0,5461-10922", nodes[2].proc.GRPC} {
		if !strings.Contains(out, s) {
			t.Errorf("topology output lacks %q:\n%s", s, out)
		}
	}
}

// Without --storage, bootstrap takes the nodes registered in etcd, ordered
// by id, with the addresses they registered.
func TestBootstrapEtcdFromRegistrations(t *testing.T) {
	t.Parallel()
	e, st := startEtcd(t)
	ep := "--etcd-endpoints=" + e.Endpoint
	if code, out, errOut := run(t, nil, "bootstrap", ep); code != 1 || !strings.Contains(errOut, "no storage node is registered in etcd under /slotkv/nodes/") {
		t.Fatalf("bootstrap with nothing registered: exit %d\n%s%s", code, out, errOut)
	}
	// Registered in another order than their ids.
	for _, id := range []string{"n3", "n1", "n2"} {
		register(t, st, id, fmt.Sprintf("10.0.0.%s:7000", id[1:]))
	}
	for _, tc := range []struct {
		name, ranges, errText string
	}{
		{"unknown node", "n1=0-100,n9=101-200", `--ranges names node "n9", which is not among the nodes registered in etcd (n1, n2, n3)`},
		{"overlap", "n1=0-100,n2=100-200", "slots 100 of node n2 are given to another node too"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code, out, errOut := run(t, nil, "bootstrap", ep, "--ranges", tc.ranges); code != 1 || !strings.Contains(errOut, tc.errText) {
				t.Fatalf("exit %d\n%s%s\nwant %q", code, out, errOut, tc.errText)
			}
		})
	}
	code, out, errOut := run(t, nil, "bootstrap", ep, "--ranges", "n1=0-8191;n3=8192-16000")
	if code != 0 || !strings.Contains(out, "slots 16001-16383 (383) are served by no node") {
		t.Fatalf("bootstrap from registrations: exit %d\n%s%s", code, out, errOut)
	}
	v1 := load(t, st)
	for id, want := range map[string]string{"n1": "0-8191", "n2": "", "n3": "8192-16000"} {
		if got := ranges(t, v1, id); got != want {
			t.Errorf("%s owns %q, want %q", id, got, want)
		}
		if n, _ := v1.Node(id); n.GRPCAddress != "10.0.0."+id[1:]+":7000" {
			t.Errorf("%s at %q, want its registered address", id, n.GRPCAddress)
		}
	}
	if ids := v1.Nodes(); len(ids) != 3 || ids[0].ID != "n1" || ids[1].ID != "n2" || ids[2].ID != "n3" {
		t.Errorf("nodes %v, want n1, n2, n3", ids)
	}
}

// nodes --etcd-endpoints lists the nodes of the topology and the
// registered ones: live or dead, addresses, slots; exit 1 while one is
// dead.
func TestNodesEtcd(t *testing.T) {
	t.Parallel()
	e, st := startEtcd(t)
	nodes := startNodes(t, 4, "")
	ep := "--etcd-endpoints=" + e.Endpoint
	if code, out, errOut := run(t, nil, "bootstrap", ep, "--storage", addrs(nodes[:3])); code != 0 {
		t.Fatalf("bootstrap: exit %d\n%s%s", code, out, errOut)
	}
	revoke := map[string]func(){}
	for _, n := range []*node{nodes[0], nodes[1], nodes[3]} { // n3 is not registered
		revoke[n.id] = register(t, st, n.id, n.proc.GRPC)
	}

	code, out, errOut := run(t, nil, "nodes", ep)
	t.Logf("slotkvctl nodes:\n%s%s", out, errOut)
	if code != 1 || !strings.Contains(errOut, "node n3 is dead") {
		t.Fatalf("nodes with n3 dead: exit %d\n%s%s", code, out, errOut)
	}
	for _, s := range []string{
		"topology version 1, 4 nodes: 3 live, 1 dead",
		"dead: n3 is in the topology (5461 slots) but not registered in etcd",
		"note: n4 is registered but not in the topology",
		nodes[2].proc.GRPC, nodes[3].proc.GRPC, "10923-16383",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("nodes output lacks %q:\n%s", s, out)
		}
	}

	type nodeJSON struct {
		ID, State, GRPCAddress, Health string
		InTopology                     bool
		Slots                          int
	}
	listJSON := func() (int, map[string]nodeJSON, [2]int) {
		t.Helper()
		code, out, errOut := run(t, nil, "nodes", "--json", ep)
		var res struct {
			Live, Dead int
			Nodes      []struct {
				ID          string `json:"id"`
				State       string `json:"state"`
				InTopology  bool   `json:"in_topology"`
				GRPCAddress string `json:"grpc_address"`
				Health      string `json:"health"`
				Slots       int    `json:"slots"`
			}
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("nodes --json: %v\n%s%s", err, out, errOut)
		}
		m := map[string]nodeJSON{}
		for _, n := range res.Nodes {
			m[n.ID] = nodeJSON{n.ID, n.State, n.GRPCAddress, n.Health, n.InTopology, n.Slots}
		}
		return code, m, [2]int{res.Live, res.Dead}
	}
	code, got, counts := listJSON()
	want := map[string]nodeJSON{
		"n1": {"n1", "live", nodes[0].proc.GRPC, "SERVING", true, 5461},
		"n2": {"n2", "live", nodes[1].proc.GRPC, "SERVING", true, 5462},
		"n3": {"n3", "dead", nodes[2].proc.GRPC, "DEAD", true, 5461},
		"n4": {"n4", "live", nodes[3].proc.GRPC, "SERVING", false, 0},
	}
	if code != 1 || counts != [2]int{3, 1} || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("nodes --json: exit %d, live/dead %v\n got %v\nwant %v", code, counts, got, want)
	}

	// n3 registers: every node is live. n2's registration ends: it is dead.
	register(t, st, "n3", nodes[2].proc.GRPC)
	if code, out, errOut := run(t, nil, "nodes", ep); code != 0 || !strings.Contains(out, "4 live, 0 dead") {
		t.Fatalf("nodes with every node registered: exit %d\n%s%s", code, out, errOut)
	}
	revoke["n2"]()
	code, got, counts = listJSON()
	if code != 1 || got["n2"].State != "dead" || counts != [2]int{3, 1} {
		t.Fatalf("nodes after n2's registration ended: exit %d, %v %v", code, got, counts)
	}
}

// The whole control plane: storage nodes that register in etcd and watch
// it. bootstrap without --storage takes the registered nodes, and every
// node installs the topology from etcd; nodes shows them live, and a node
// that stops (its lease revoked) dead.
func TestEtcdControlPlane(t *testing.T) {
	t.Parallel()
	e, st := startEtcd(t)
	c := testcluster.Start(t, 3, testcluster.Options{Etcd: e})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The nodes register as they start, maybe after they answer.
	for {
		regs, err := st.Nodes(ctx)
		if err == nil && len(regs) == 3 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("registered nodes: %v, %v; want 3", regs, err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	ep := "--etcd-endpoints=" + e.Endpoint
	code, out, errOut := run(t, nil, "bootstrap", ep)
	if code != 0 || !strings.Contains(out, "bootstrapped topology version 1 in etcd") {
		t.Fatalf("bootstrap: exit %d\n%s%s", code, out, errOut)
	}
	v1 := load(t, st)
	for _, n := range c.Nodes {
		if tn, ok := v1.Node(n.ID); !ok || tn.GRPCAddress != n.Proc.GRPC {
			t.Errorf("%s in the topology: %+v, want its address %s", n.ID, tn, n.Proc.GRPC)
		}
		// Installed from the watch.
		for {
			if held := heldTopology(t, &node{id: n.ID, nc: n.NodeClient()}); held != nil && held.Equal(v1) {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("%s did not install version 1 from etcd", n.ID)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	if code, out, errOut := run(t, nil, "nodes", ep); code != 0 || !strings.Contains(out, "3 live, 0 dead") || strings.Contains(out, "behind") {
		t.Fatalf("nodes: exit %d\n%s%s", code, out, errOut)
	}

	if err := c.Nodes[1].Proc.Stop(); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = run(t, nil, "nodes", ep)
	if code != 1 || !strings.Contains(out, "2 live, 1 dead") || !strings.Contains(errOut, "node n2 is dead") {
		t.Fatalf("nodes with n2 stopped: exit %d\n%s%s", code, out, errOut)
	}
}
