package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	routerv1 "github.com/slotkv/slotkv/gen/slotkv/router/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/auth"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/etcdtest"
	"github.com/slotkv/slotkv/pkg/proctest"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/testcluster"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// cluster is a set of storage processes plus a router, all real processes.
type cluster struct {
	*testcluster.Cluster
	t      testing.TB
	router *proctest.Proc
}

// startCluster starts a single-member etcd (the control plane) and n
// storage nodes on it, bootstraps the topology into etcd with slotkvctl
// (the documented command) and starts a router in front of them.
func startCluster(t testing.TB, n int, token string) *cluster {
	t.Helper()
	return startClusterEnv(t, n, token, nil)
}

// startClusterEnv is startCluster with env added to every process's
// environment.
func startClusterEnv(t testing.TB, n int, token string, env []string) *cluster {
	t.Helper()
	c := &cluster{Cluster: testcluster.Start(t, n, testcluster.Options{Token: token, Env: env, Etcd: etcdtest.Start(t)}), t: t}
	c.ctl("bootstrap", "--storage", c.storageAddrs())
	c.router = proctest.StartWith(t, proctest.Options{Env: env}, proctest.Bin(t, "slotkv-router"),
		append([]string{"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
			"--token", token}, c.EtcdArgs()...)...)
	c.waitReady(c.router.HTTP)
	return c
}

func (c *cluster) storageAddrs() string { return strings.Join(c.Addrs(), ",") }

// ctl runs slotkvctl with the cluster token and returns its output.
func (c *cluster) ctl(args ...string) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, proctest.Bin(c.t, "slotkvctl"), args...)
	cmd.Env = append(append(cmd.Environ(), "SLOTKV_TOKEN="+c.Token), c.EtcdEnv()...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		c.t.Fatalf("slotkvctl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func (c *cluster) waitReady(httpAddr string) {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s not ready after 30s (last error %v)", httpAddr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// rest sends one REST request to the router with the cluster token.
func (c *cluster) rest(method, path string, body any) (int, map[string]any) {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://"+c.router.HTTP+path, rd)
	auth.SetHeader(req.Header, c.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	b, _ := io.ReadAll(resp.Body)
	if len(b) > 0 {
		if err := json.Unmarshal(b, &out); err != nil {
			c.t.Fatalf("%s %s: %d %q: %v", method, path, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode, out
}

func (c *cluster) conn(addr string) *grpc.ClientConn {
	c.t.Helper()
	cc, err := dial.New(addr, dial.Options{Token: c.Token})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cc.Close() })
	return cc
}

func TestClusterEndToEnd(t *testing.T) {
	t.Parallel()
	const token = "e2e-secret"
	c := startCluster(t, 3, token)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Bootstrap again: safe, changes nothing.
	out := c.ctl("bootstrap", "--storage", c.storageAddrs())
	t.Logf("second bootstrap: %s", out)

	// REST: string values without base64, keys with slashes.
	const n = 300
	seenNodes := map[string]int{}
	for i := 0; i < n; i++ {
		key := fmt.Sprintf("user/%d", i)
		code, body := c.rest(http.MethodPut, "/v1/kv/"+key, map[string]any{"text": fmt.Sprintf("value-%d", i)})
		if code != http.StatusOK {
			t.Fatalf("PUT %s: %d %v", key, code, body)
		}
		seenNodes[body["node_id"].(string)]++
	}
	if len(seenNodes) != 3 {
		t.Fatalf("keys landed on %v, want all 3 nodes", seenNodes)
	}
	for i := 0; i < n; i++ {
		key := fmt.Sprintf("user/%d", i)
		code, body := c.rest(http.MethodGet, "/v1/kv/"+key, nil)
		if code != http.StatusOK || body["text"] != fmt.Sprintf("value-%d", i) || body["key"] != key {
			t.Fatalf("GET %s: %d %v", key, code, body)
		}
	}
	if code, _ := c.rest(http.MethodDelete, "/v1/kv/user/7", nil); code != http.StatusOK {
		t.Fatalf("DELETE: %d", code)
	}
	if code, body := c.rest(http.MethodGet, "/v1/kv/user/7", nil); code != http.StatusNotFound {
		t.Fatalf("GET deleted key: %d %v", code, body)
	}

	// REST without the token is refused.
	resp, err := http.Get("http://" + c.router.HTTP + "/v1/kv/user/1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET without token: %d, want 401", resp.StatusCode)
	}

	// gRPC through the router: binary values come back as bytes.
	kv := routerv1.NewKVServiceClient(c.conn(c.router.GRPC))
	bin := []byte{0xff, 0x00, 0xfe}
	if _, err := kv.Put(ctx, &routerv1.PutRequest{Key: "bin", Data: &routerv1.PutRequest_Value{Value: bin}}); err != nil {
		t.Fatal(err)
	}
	got, err := kv.Get(ctx, &routerv1.GetRequest{Key: "bin"})
	if err != nil || !bytes.Equal(got.GetValue(), bin) {
		t.Fatalf("Get bin = %v, %v", got, err)
	}
	got, err = kv.Get(ctx, &routerv1.GetRequest{Key: "user/42"})
	if err != nil || got.GetText() != "value-42" || got.GetSlot() != uint32(slot.OfString("user/42")) {
		t.Fatalf("Get user/42 = %v, %v", got, err)
	}
	if _, err := kv.Get(ctx, &routerv1.GetRequest{Key: "user/7"}); status.Code(err) != codes.NotFound {
		t.Fatalf("Get deleted = %v, want NotFound", err)
	}

	// Every key is on the node that owns its slot, and only there.
	var total uint64
	for _, nd := range c.Nodes {
		info, err := nd.NodeClient().GetNodeInfo(ctx, &storagev1.GetNodeInfoRequest{})
		if err != nil {
			t.Fatal(err)
		}
		cnt, err := nd.StorageClient().Count(ctx, &storagev1.CountRequest{Ranges: info.GetOwned()})
		if err != nil {
			t.Fatal(err)
		}
		if cnt.GetCount() != info.GetKeyCount() {
			t.Fatalf("%s: count over owned ranges %d != key count %d", nd.ID, cnt.GetCount(), info.GetKeyCount())
		}
		total += cnt.GetCount()
	}
	if want := uint64(n - 1 + 1); total != want { // 300 - deleted + "bin"
		t.Fatalf("keys on storage nodes = %d, want %d", total, want)
	}

	// A storage node restarts on the same ports with its data: the router
	// finds every key again.
	c.Restart(t, c.Nodes[1])
	for i := 0; i < n; i++ {
		key := fmt.Sprintf("user/%d", i)
		code, body := c.rest(http.MethodGet, "/v1/kv/"+key, nil)
		if i == 7 {
			if code != http.StatusNotFound {
				t.Fatalf("GET %s after restart: %d", key, code)
			}
			continue
		}
		if code != http.StatusOK || body["text"] != fmt.Sprintf("value-%d", i) {
			t.Fatalf("GET %s after restart: %d %v", key, code, body)
		}
	}
}
