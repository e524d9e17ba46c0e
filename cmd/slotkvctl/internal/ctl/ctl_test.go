package ctl_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/slotkv/slotkv/cmd/slotkvctl/internal/ctl"
	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/proctest"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/topology"
)

type node struct {
	id   string
	proc *proctest.Proc
	nc   storagev1.NodeServiceClient
}

// startNodes runs n real storage nodes n1..nN, stopped by pid at the end.
func startNodes(t *testing.T, n int, token string, extraArgs ...string) []*node {
	t.Helper()
	bin := proctest.Bin(t, "slotkv-storage")
	nodes := make([]*node, n)
	var wg sync.WaitGroup
	for i := range n {
		id := fmt.Sprintf("n%d", i+1)
		dir := filepath.Join(t.TempDir(), id)
		wg.Go(func() {
			args := []string{"--node-id", id, "--data-dir", dir, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"}
			if token != "" {
				args = append(args, "--token", token)
			}
			args = append(args, extraArgs...)
			p := proctest.Start(t, bin, args...)
			cc, err := dial.New(p.GRPC, dial.Options{Token: token})
			if err != nil {
				t.Error(err)
				return
			}
			t.Cleanup(func() { _ = cc.Close() })
			nodes[i] = &node{id: id, proc: p, nc: storagev1.NewNodeServiceClient(cc)}
		})
	}
	wg.Wait()
	for i, nd := range nodes {
		if nd == nil {
			t.Fatalf("storage node n%d did not start", i+1)
		}
	}
	return nodes
}

func addrs(nodes []*node) string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.proc.GRPC)
	}
	return strings.Join(out, ",")
}

func env(kv ...string) func(string) (string, bool) {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// run runs slotkvctl and returns exit code, stdout and stderr.
func run(t *testing.T, lookup func(string) (string, bool), args ...string) (int, string, string) {
	t.Helper()
	if lookup == nil {
		lookup = env()
	}
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code := ctl.Main(ctx, args, &out, &errb, lookup)
	return code, out.String(), errb.String()
}

func heldTopology(t *testing.T, n *node) *topology.Topology {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := n.nc.GetTopology(ctx, &storagev1.GetTopologyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetTopology() == nil {
		return nil
	}
	topo, err := topology.FromProto(resp.GetTopology())
	if err != nil {
		t.Fatal(err)
	}
	return topo
}

func TestBootstrapEvenTwiceAndTopology(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, 3, "")
	code, out, errOut := run(t, nil, "bootstrap", "--storage", addrs(nodes))
	if code != 0 {
		t.Fatalf("bootstrap: exit %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(out, "bootstrapped topology version 1 on 3 nodes") || strings.Count(out, "installed") != 3 {
		t.Fatalf("bootstrap output:\n%s", out)
	}
	var want *topology.Topology
	for _, n := range nodes {
		got := heldTopology(t, n)
		if got == nil || got.Version() != 1 {
			t.Fatalf("%s holds %v after bootstrap", n.id, got)
		}
		if want == nil {
			want = got
		} else if !got.Equal(want) {
			t.Fatalf("%s holds a different topology", n.id)
		}
	}
	for i, wantRanges := range []string{"0-5460", "5461-10922", "10923-16383"} {
		set, _ := slot.NewRangeSet(want.RangesOf(nodes[i].id)...)
		if set.String() != wantRanges {
			t.Errorf("%s owns %s, want %s (even split in --storage order)", nodes[i].id, set, wantRanges)
		}
		if n, _ := want.Node(nodes[i].id); n.GRPCAddress != nodes[i].proc.GRPC {
			t.Errorf("%s has address %s, want %s", nodes[i].id, n.GRPCAddress, nodes[i].proc.GRPC)
		}
	}

	// Twice: nothing changes, exit 0.
	code, out, errOut = run(t, env("SLOTKV_STORAGE", addrs(nodes)), "bootstrap")
	if code != 0 {
		t.Fatalf("second bootstrap: exit %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(out, "nothing changed") || strings.Count(out, "already held") != 3 {
		t.Fatalf("second bootstrap output:\n%s", out)
	}

	// topology prints ranges in 0-5460 form.
	code, out, errOut = run(t, nil, "topology", "--storage", nodes[1].proc.GRPC)
	if code != 0 {
		t.Fatalf("topology: exit %d\n%s%s", code, out, errOut)
	}
	for _, s := range []string{"topology version 1", "n1", "0-5460", "5461-10922", "10923-16383", nodes[2].proc.GRPC} {
		if !strings.Contains(out, s) {
			t.Errorf("topology output lacks %q:\n%s", s, out)
		}
	}
	code, out, _ = run(t, nil, "topology", "--json", "--storage", nodes[0].proc.GRPC)
	if code != 0 || !strings.Contains(out, `"version": "1"`) {
		t.Errorf("topology --json: exit %d\n%s", code, out)
	}

	// info describes the node.
	code, out, errOut = run(t, nil, "info", "--storage", nodes[0].proc.GRPC)
	if code != 0 {
		t.Fatalf("info: exit %d\n%s%s", code, out, errOut)
	}
	for _, s := range []string{"n1", nodes[0].proc.GRPC, "0-5460 (5461)", "topology version"} {
		if !strings.Contains(out, s) {
			t.Errorf("info output lacks %q:\n%s", s, out)
		}
	}

	// Once every node holds a newer version, bootstrap says so and exits 0.
	p := want.Proto()
	p.Version = 5
	for _, n := range nodes {
		if _, err := n.nc.SetTopology(context.Background(), &storagev1.SetTopologyRequest{Topology: proto.Clone(p).(*clusterv1.Topology)}); err != nil {
			t.Fatal(err)
		}
	}
	code, out, errOut = run(t, nil, "bootstrap", "--storage", addrs(nodes))
	if code != 0 || !strings.Contains(out, "already bootstrapped at topology version 5") {
		t.Fatalf("bootstrap of a bootstrapped cluster: exit %d\n%s%s", code, out, errOut)
	}
}

// TestBootstrapStaleAddresses: nodes that already hold one version 1 with
// these very nodes and slots, but other addresses (bootstrapped before
// their RESP listener or on other ports), are a bootstrapped cluster:
// bootstrap exits 0, changes nothing and names the addresses that differ;
// the same with other slots is still refused.
func TestBootstrapStaleAddresses(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, 3, "")
	tnodes := make([]topology.Node, len(nodes))
	for i, n := range nodes {
		tnodes[i] = topology.Node{ID: n.id, GRPCAddress: n.proc.GRPC, HTTPAddress: n.proc.HTTP}
	}
	tnodes[1].HTTPAddress = "127.0.0.1:1" // n2's address then
	old, err := topology.Even(1, tnodes)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if _, err := n.nc.SetTopology(context.Background(), &storagev1.SetTopologyRequest{Topology: old.Proto()}); err != nil {
			t.Fatal(err)
		}
	}
	code, out, errOut := run(t, nil, "bootstrap", "--storage", addrs(nodes))
	if code != 0 || !strings.Contains(out, "already bootstrapped at topology version 1") ||
		!strings.Contains(out, fmt.Sprintf("n2 http %q -> %q", "127.0.0.1:1", nodes[1].proc.HTTP)) {
		t.Fatalf("bootstrap over stale addresses: exit %d\n%s%s", code, out, errOut)
	}
	for _, n := range nodes {
		if got := heldTopology(t, n); !got.Equal(old) {
			t.Fatalf("%s holds %v after bootstrap, want the old version 1 unchanged", n.id, got)
		}
	}
	// Other slots than an even split: a different cluster, refused.
	code, out, errOut = run(t, nil, "bootstrap", "--storage", addrs(nodes), "--ranges", "n1=0-8191,n2=8192-16383")
	if code == 0 || !strings.Contains(errOut, "already holds a different topology version 1") {
		t.Fatalf("bootstrap with other ranges over an existing version 1: exit 0\n%s%s", out, errOut)
	}
}

func TestBootstrapRangesAndConflict(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, 3, "")
	ranges := "n2=0-99,200-16383;n1=100-150,n3=151-199"
	code, out, errOut := run(t, nil, "bootstrap", "--storage", addrs(nodes), "--ranges", ranges)
	if code != 0 {
		t.Fatalf("bootstrap --ranges: exit %d\n%s%s", code, out, errOut)
	}
	topo := heldTopology(t, nodes[0])
	for id, want := range map[string]string{"n1": "100-150", "n2": "0-99,200-16383", "n3": "151-199"} {
		set, _ := slot.NewRangeSet(topo.RangesOf(id)...)
		if set.String() != want {
			t.Errorf("%s owns %s, want %s", id, set, want)
		}
	}
	// Same ranges again: fine.
	if code, out, errOut = run(t, nil, "bootstrap", "--storage", addrs(nodes), "--ranges", ranges); code != 0 {
		t.Fatalf("bootstrap --ranges twice: exit %d\n%s%s", code, out, errOut)
	}
	// Different version 1: refused, naming a node, nothing changed.
	code, out, errOut = run(t, nil, "bootstrap", "--storage", addrs(nodes))
	if code != 1 || !strings.Contains(errOut, "storage node n1") || !strings.Contains(errOut, "different topology version 1") {
		t.Fatalf("conflicting bootstrap: exit %d\nstdout:%s\nstderr:%s", code, out, errOut)
	}
	if !heldTopology(t, nodes[0]).Equal(topo) {
		t.Fatal("a refused bootstrap changed the topology")
	}
	// Ranges naming an unknown node or overlapping: clear errors.
	code, _, errOut = run(t, nil, "bootstrap", "--storage", addrs(nodes), "--ranges", "n1=0-10,n9=11-16383")
	if code != 1 || !strings.Contains(errOut, `"n9"`) {
		t.Fatalf("unknown node in --ranges: exit %d %s", code, errOut)
	}
	code, _, errOut = run(t, nil, "bootstrap", "--storage", addrs(nodes), "--ranges", "n1=0-10,n2=5-16383")
	if code != 1 || !strings.Contains(errOut, "5-10") {
		t.Fatalf("overlapping --ranges: exit %d %s", code, errOut)
	}
}

func TestBootstrapToken(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, 2, "tok")
	code, _, errOut := run(t, nil, "bootstrap", "--storage", addrs(nodes))
	if code != 1 || !strings.Contains(errOut, "Unauthenticated") {
		t.Fatalf("bootstrap without the token: exit %d %s", code, errOut)
	}
	code, out, errOut := run(t, env("SLOTKV_TOKEN", "tok"), "bootstrap", "--storage", addrs(nodes))
	if code != 0 {
		t.Fatalf("bootstrap with the token: exit %d\n%s%s", code, out, errOut)
	}
}

// TestBootstrapTwoTokens: bootstrap is an admin call; the data token is
// refused, the admin token passes, also read from --admin-token-file.
func TestBootstrapTwoTokens(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, 2, "admin-tok", "--data-token", "data-tok")
	code, _, errOut := run(t, nil, "bootstrap", "--storage", addrs(nodes), "--token", "data-tok")
	if code != 1 || !strings.Contains(errOut, "PermissionDenied") {
		t.Fatalf("bootstrap with the data token: exit %d %s", code, errOut)
	}
	missing := filepath.Join(t.TempDir(), "missing")
	code, _, errOut = run(t, nil, "bootstrap", "--storage", addrs(nodes), "--admin-token-file", missing)
	if code != 2 || !strings.Contains(errOut, "--admin-token-file") || !strings.Contains(errOut, missing) {
		t.Fatalf("bootstrap with a missing token file: exit %d %s", code, errOut)
	}
	file := filepath.Join(t.TempDir(), "admin")
	if err := os.WriteFile(file, []byte("admin-tok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := run(t, env("SLOTKV_ADMIN_TOKEN_FILE", file), "bootstrap", "--storage", addrs(nodes), "--token", "data-tok")
	if code != 0 {
		t.Fatalf("bootstrap with the admin token file: exit %d\n%s%s", code, out, errOut)
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	if code, _, _ := run(t, nil); code != 2 {
		t.Errorf("no command: exit %d, want 2", code)
	}
	if code, _, errOut := run(t, nil, "frobnicate"); code != 2 || !strings.Contains(errOut, "unknown command") {
		t.Errorf("unknown command: exit %d %s", code, errOut)
	}
	if code, _, errOut := run(t, nil, "topology"); code != 2 || !strings.Contains(errOut, "--storage") {
		t.Errorf("topology without --storage: exit %d %s", code, errOut)
	}
	if code, out, _ := run(t, nil, "help"); code != 0 || !strings.Contains(out, "bootstrap") {
		t.Errorf("help: exit %d %s", code, out)
	}
}

func TestParseNodeRanges(t *testing.T) {
	t.Parallel()
	got, err := ctl.ParseNodeRanges("n1=0-5460, n2=5461-10922,n3=10923-16000,16001-16383")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got.IDs, ",") != "n1,n2,n3" || got.Ranges["n3"].String() != "10923-16383" || got.Ranges["n1"].String() != "0-5460" {
		t.Fatalf("parsed %+v", got)
	}
	for _, bad := range []string{"", "0-100", "=0-10", "n1=", "n1=0-10,n1=20-30", "n1=10-5", "n1=0-20000", "n1=0-10,5-20"} {
		if _, err := ctl.ParseNodeRanges(bad); err == nil {
			t.Errorf("ParseNodeRanges(%q) accepted", bad)
		}
	}
}
