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

	"github.com/slotkv/slotkv/cmd/slotkvctl/internal/ctl"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/etcdtest"
	"github.com/slotkv/slotkv/pkg/proctest"
	"github.com/slotkv/slotkv/pkg/testcluster"
	"github.com/slotkv/slotkv/pkg/topology"
)

type node struct {
	id   string
	proc *proctest.Proc
	nc   storagev1.NodeServiceClient
}

// startNodes runs n real storage nodes n1..nN, stopped by pid at the end.
// They watch an etcd of their own (a node needs one), not the one a test
// bootstraps: what slotkvctl writes there never reaches them.
func startNodes(t *testing.T, n int, token string, extraArgs ...string) []*node {
	t.Helper()
	bin := proctest.Bin(t, "slotkv-storage")
	own := etcdtest.Start(t)
	nodes := make([]*node, n)
	var wg sync.WaitGroup
	for i := range n {
		id := fmt.Sprintf("n%d", i+1)
		dir := filepath.Join(t.TempDir(), id)
		wg.Go(func() {
			args := []string{"--node-id", id, "--data-dir", dir, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--etcd-endpoints", own.Endpoint}
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

// TestInfo: info asks the nodes given for their own report.
func TestInfo(t *testing.T) {
	t.Parallel()
	c := testcluster.Start(t, 3, testcluster.Options{})
	c.Bootstrap(t)
	n1 := c.Node(t, "n1")
	code, out, errOut := run(t, nil, "info", "--storage", n1.Proc.GRPC)
	if code != 0 {
		t.Fatalf("info: exit %d\n%s%s", code, out, errOut)
	}
	for _, s := range []string{"n1", n1.Proc.GRPC, "0-5460 (5461)", "topology version"} {
		if !strings.Contains(out, s) {
			t.Errorf("info output lacks %q:\n%s", s, out)
		}
	}
}

// clusterAddrs are the gRPC addresses of c's nodes, comma-separated.
func clusterAddrs(c *testcluster.Cluster) string { return strings.Join(c.Addrs(), ",") }

// TestBootstrapToken: bootstrap asks the --storage nodes who they are
// with the token, then writes the topology in etcd.
func TestBootstrapToken(t *testing.T) {
	t.Parallel()
	c := testcluster.Start(t, 2, testcluster.Options{Token: "tok"})
	etcdEnv := []string{"SLOTKV_ETCD_ENDPOINTS", c.Etcd().Endpoint}
	code, _, errOut := run(t, env(etcdEnv...), "bootstrap", "--storage", clusterAddrs(c))
	if code != 1 || !strings.Contains(errOut, "Unauthenticated") {
		t.Fatalf("bootstrap without the token: exit %d %s", code, errOut)
	}
	code, out, errOut := run(t, env(append(etcdEnv, "SLOTKV_TOKEN", "tok")...), "bootstrap", "--storage", clusterAddrs(c))
	if code != 0 {
		t.Fatalf("bootstrap with the token: exit %d\n%s%s", code, out, errOut)
	}
}

// TestBootstrapTwoTokens: bootstrap is an admin call; the data token is
// refused, the admin token passes, also read from --admin-token-file.
func TestBootstrapTwoTokens(t *testing.T) {
	t.Parallel()
	c := testcluster.Start(t, 2, testcluster.Options{Token: "admin-tok", Args: []string{"--data-token", "data-tok"}})
	etcdEnv := []string{"SLOTKV_ETCD_ENDPOINTS", c.Etcd().Endpoint}
	code, _, errOut := run(t, env(etcdEnv...), "bootstrap", "--storage", clusterAddrs(c), "--token", "data-tok")
	if code != 1 || !strings.Contains(errOut, "PermissionDenied") {
		t.Fatalf("bootstrap with the data token: exit %d %s", code, errOut)
	}
	missing := filepath.Join(t.TempDir(), "missing")
	code, _, errOut = run(t, env(etcdEnv...), "bootstrap", "--storage", clusterAddrs(c), "--admin-token-file", missing)
	if code != 2 || !strings.Contains(errOut, "--admin-token-file") || !strings.Contains(errOut, missing) {
		t.Fatalf("bootstrap with a missing token file: exit %d %s", code, errOut)
	}
	file := filepath.Join(t.TempDir(), "admin")
	if err := os.WriteFile(file, []byte("admin-tok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := run(t, env(append(etcdEnv, "SLOTKV_ADMIN_TOKEN_FILE", file)...), "bootstrap", "--storage", clusterAddrs(c), "--token", "data-tok")
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
	// The topology lives in etcd only: no command reads or writes it
	// anywhere else.
	for _, cmd := range []string{"topology", "nodes", "bootstrap"} {
		if code, _, errOut := run(t, env("SLOTKV_STORAGE", "127.0.0.1:1"), cmd); code != 2 || !strings.Contains(errOut, "--etcd-endpoints") {
			t.Errorf("%s without --etcd-endpoints: exit %d %s", cmd, code, errOut)
		}
	}
	if code, _, errOut := run(t, nil, "info"); code != 2 || !strings.Contains(errOut, "--storage") {
		t.Errorf("info without --storage: exit %d %s", code, errOut)
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
