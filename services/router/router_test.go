package router_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	routerv1 "github.com/slotkv/slotkv/gen/slotkv/router/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/auth"
	"github.com/slotkv/slotkv/pkg/proctest"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/testcluster"
	"github.com/slotkv/slotkv/pkg/topology"
	"github.com/slotkv/slotkv/services/router"
)

// testRouter is a router running in the test process.
type testRouter struct {
	GRPC, HTTP string
	Conn       *grpc.ClientConn
	KV         routerv1.KVServiceClient
}

// startRouter runs router.Run in the test process on 127.0.0.1:0 and stops
// it (waiting for Run to return) when the test ends.
func startRouter(t testing.TB, o router.Options) *testRouter {
	t.Helper()
	o.GRPCAddr, o.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(tlog{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	addrs := make(chan [2]string, 1)
	o.OnListen = func(g, h net.Addr) { addrs <- [2]string{g.String(), h.String()} }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- router.Run(ctx, o) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("router.Run: %v", err)
		}
	})
	var a [2]string
	select {
	case a = <-addrs:
	case err := <-done:
		t.Fatalf("router.Run returned before listening: %v", err)
	}
	cc, err := grpc.NewClient(a[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return &testRouter{GRPC: a[0], HTTP: a[1], Conn: cc, KV: routerv1.NewKVServiceClient(cc)}
}

// tlog sends router logs to t.Log, so they show up only for failing tests.
type tlog struct{ t testing.TB }

func (w tlog) Write(p []byte) (int, error) {
	w.t.Helper()
	defer func() { _ = recover() }() // a log line after the test ended
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// waitReady polls /readyz until it answers 200.
func waitReady(t testing.TB, r *testRouter) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + r.HTTP + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("router not ready after 30s (last: %v)", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// setup starts n storage nodes with topology v1 and a router on them.
func setup(t testing.TB, n int, o router.Options) (*testcluster.Cluster, *topology.Topology, *testRouter) {
	t.Helper()
	c := testcluster.Start(t, n, testcluster.Options{Token: o.Tokens.Admin})
	topo := c.Bootstrap(t)
	o.Etcd.Endpoints = c.Etcd().Endpoints()
	r := startRouter(t, o)
	waitReady(t, r)
	return c, topo, r
}

// keyOn returns a key whose slot node id owns in topo.
func keyOn(t testing.TB, topo *topology.Topology, id, prefix string) string {
	t.Helper()
	for i := range 100000 {
		k := fmt.Sprintf("%s%d", prefix, i)
		if n, ok := topo.Owner(slot.OfString(k)); ok && n.ID == id {
			return k
		}
	}
	t.Fatalf("no key on node %s", id)
	return ""
}

func TestGRPCGetPutDelete(t *testing.T) {
	t.Parallel()
	_, topo, r := setup(t, 3, router.Options{})
	ctx := ctxT(t)

	// Many keys: each lands on (and is answered by) its topology owner.
	seen := map[string]bool{}
	for i := range 60 {
		key := fmt.Sprintf("user/%d", i)
		put, err := r.KV.Put(ctx, &routerv1.PutRequest{Key: key, Data: &routerv1.PutRequest_Text{Text: "v" + key}})
		if err != nil {
			t.Fatalf("Put %q: %v", key, err)
		}
		s := slot.OfString(key)
		owner, _ := topo.Owner(s)
		if put.GetSlot() != uint32(s) || put.GetNodeId() != owner.ID || put.GetKey() != key {
			t.Fatalf("Put %q answered key %q slot %d node %s; want slot %d node %s", key, put.GetKey(), put.GetSlot(), put.GetNodeId(), s, owner.ID)
		}
		got, err := r.KV.Get(ctx, &routerv1.GetRequest{Key: key})
		if err != nil {
			t.Fatalf("Get %q: %v", key, err)
		}
		if got.GetText() != "v"+key || got.GetNodeId() != owner.ID || got.GetSlot() != uint32(s) {
			t.Fatalf("Get %q = %v; want text %q from %s", key, got, "v"+key, owner.ID)
		}
		seen[owner.ID] = true
	}
	if len(seen) != 3 {
		t.Fatalf("keys reached nodes %v, want all 3", seen)
	}

	// Binary values come back as bytes, not text.
	bin := []byte{0xff, 0x00, 0xfe, 'x'}
	if _, err := r.KV.Put(ctx, &routerv1.PutRequest{Key: "bin", Data: &routerv1.PutRequest_Value{Value: bin}}); err != nil {
		t.Fatal(err)
	}
	got, err := r.KV.Get(ctx, &routerv1.GetRequest{Key: "bin"})
	if err != nil {
		t.Fatal(err)
	}
	if _, isText := got.GetData().(*routerv1.GetResponse_Text); isText || !bytes.Equal(got.GetValue(), bin) {
		t.Fatalf("Get bin = %v, want value %x", got, bin)
	}
	// An empty text is a value too.
	if _, err := r.KV.Put(ctx, &routerv1.PutRequest{Key: "empty", Data: &routerv1.PutRequest_Text{}}); err != nil {
		t.Fatal(err)
	}
	if got, err := r.KV.Get(ctx, &routerv1.GetRequest{Key: "empty"}); err != nil || got.GetText() != "" || got.GetData() == nil {
		t.Fatalf("Get empty = %v, %v", got, err)
	}

	// Delete, then NotFound; deleting again succeeds.
	del, err := r.KV.Delete(ctx, &routerv1.DeleteRequest{Key: "user/1"})
	if err != nil {
		t.Fatal(err)
	}
	if owner, _ := topo.Owner(slot.OfString("user/1")); del.GetNodeId() != owner.ID {
		t.Fatalf("Delete answered by %s, want %s", del.GetNodeId(), owner.ID)
	}
	if _, err := r.KV.Get(ctx, &routerv1.GetRequest{Key: "user/1"}); status.Code(err) != codes.NotFound {
		t.Fatalf("Get after delete: %v, want NotFound", err)
	}
	if _, err := r.KV.Delete(ctx, &routerv1.DeleteRequest{Key: "user/1"}); err != nil {
		t.Fatalf("Delete of an absent key: %v", err)
	}

	// Bad input names the field.
	for name, call := range map[string]func() error{
		"get empty key": func() error { _, err := r.KV.Get(ctx, &routerv1.GetRequest{}); return err },
		"put empty key": func() error {
			_, err := r.KV.Put(ctx, &routerv1.PutRequest{Data: &routerv1.PutRequest_Text{Text: "x"}})
			return err
		},
		"delete empty key": func() error { _, err := r.KV.Delete(ctx, &routerv1.DeleteRequest{}); return err },
		"put no value":     func() error { _, err := r.KV.Put(ctx, &routerv1.PutRequest{Key: "k"}); return err },
	} {
		err := call()
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
			continue
		}
		want := "key"
		if name == "put no value" {
			want = "text"
		}
		if f := badField(err); f != want {
			t.Errorf("%s: field violation %q, want %q (%v)", name, f, want, err)
		}
	}

	// GetTopology answers the router's topology.
	tr, err := r.KV.GetTopology(ctx, &routerv1.GetTopologyRequest{Refresh: true})
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(tr.GetTopology(), topo.Proto()) {
		t.Fatalf("GetTopology = %v, want %v", tr.GetTopology(), topo.Proto())
	}
}

func badField(err error) string {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) > 0 {
			return br.GetFieldViolations()[0].GetField()
		}
	}
	return ""
}

// rest does one HTTP call and decodes the JSON answer.
func rest(t testing.TB, method, url, body, token string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if len(b) > 0 {
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s %s: %d %q is not JSON: %v", method, url, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode, m
}

func TestREST(t *testing.T) {
	t.Parallel()
	_, topo, r := setup(t, 3, router.Options{})
	base := "http://" + r.HTTP + "/v1/kv/"

	code, m := rest(t, "PUT", base+"hello", `{"text":"world"}`, "")
	if code != 200 || m["key"] != "hello" {
		t.Fatalf("PUT hello: %d %v", code, m)
	}
	owner, _ := topo.Owner(slot.OfString("hello"))
	if m["node_id"] != owner.ID || m["slot"] != float64(slot.OfString("hello")) {
		t.Fatalf("PUT hello answered %v, want node_id %s slot %d", m, owner.ID, slot.OfString("hello"))
	}
	code, m = rest(t, "GET", base+"hello", "", "")
	if code != 200 || m["key"] != "hello" || m["text"] != "world" || m["node_id"] != owner.ID {
		t.Fatalf("GET hello: %d %v", code, m)
	}
	if _, ok := m["value"]; ok {
		t.Fatalf("GET hello answered both text and value: %v", m)
	}

	// Keys with slashes, and POST as an alias of PUT.
	code, m = rest(t, "POST", base+"user/42/name", `{"text":"ada"}`, "")
	if code != 200 || m["key"] != "user/42/name" {
		t.Fatalf("POST user/42/name: %d %v", code, m)
	}
	code, m = rest(t, "GET", base+"user/42/name", "", "")
	if code != 200 || m["key"] != "user/42/name" || m["text"] != "ada" {
		t.Fatalf("GET user/42/name: %d %v", code, m)
	}
	if owner, _ := topo.Owner(slot.OfString("user/42/name")); m["node_id"] != owner.ID {
		t.Fatalf("GET user/42/name from %v, want %s", m["node_id"], owner.ID)
	}

	// Binary values travel as base64 "value".
	bin := []byte{0xff, 0xfe, 0x00, 0x01}
	b64 := base64.StdEncoding.EncodeToString(bin)
	if code, m = rest(t, "PUT", base+"blob", `{"value":"`+b64+`"}`, ""); code != 200 {
		t.Fatalf("PUT blob: %d %v", code, m)
	}
	code, m = rest(t, "GET", base+"blob", "", "")
	if code != 200 || m["value"] != b64 {
		t.Fatalf("GET blob: %d %v, want value %s", code, m, b64)
	}
	if _, ok := m["text"]; ok {
		t.Fatalf("GET blob answered text: %v", m)
	}

	// Delete and 404.
	if code, m = rest(t, "DELETE", base+"hello", "", ""); code != 200 || m["key"] != "hello" {
		t.Fatalf("DELETE hello: %d %v", code, m)
	}
	if code, m = rest(t, "GET", base+"hello", "", ""); code != http.StatusNotFound {
		t.Fatalf("GET deleted hello: %d %v, want 404", code, m)
	}
	if code, m = rest(t, "GET", base+"never-written", "", ""); code != http.StatusNotFound {
		t.Fatalf("GET never-written: %d %v, want 404", code, m)
	}

	// Bad input: 400.
	if code, m = rest(t, "PUT", base+"novalue", `{}`, ""); code != http.StatusBadRequest {
		t.Fatalf("PUT without a value: %d %v, want 400", code, m)
	}
	if code, m = rest(t, "GET", base, "", ""); code != http.StatusBadRequest {
		t.Fatalf("GET empty key: %d %v, want 400", code, m)
	}
	if code, m = rest(t, "PUT", base, `{"text":"x"}`, ""); code != http.StatusBadRequest {
		t.Fatalf("PUT empty key: %d %v, want 400", code, m)
	}

	// Topology.
	code, m = rest(t, "GET", "http://"+r.HTTP+"/v1/topology", "", "")
	if code != 200 {
		t.Fatalf("GET /v1/topology: %d %v", code, m)
	}
	if tm, _ := m["topology"].(map[string]any); tm["version"] != "1" {
		t.Fatalf("GET /v1/topology: %v, want version 1", m)
	}
}

// TestSlotMovedIsFollowed pushes topology v2, which moves a key's slot to
// another node, straight to the storage nodes: the router still routes by
// v1, gets SLOT_MOVED, refreshes once and succeeds on the new owner.
func TestSlotMovedIsFollowed(t *testing.T) {
	t.Parallel()
	c, v1, r := setup(t, 3, router.Options{})
	ctx := ctxT(t)

	key := keyOn(t, v1, "n1", "moving")
	s := slot.OfString(key)
	v2 := testcluster.Move(t, v1, s, "n2")
	c.SetTopology(t, v2)

	put, err := r.KV.Put(ctx, &routerv1.PutRequest{Key: key, Data: &routerv1.PutRequest_Text{Text: "after the move"}})
	if err != nil {
		t.Fatalf("Put after the move: %v", err)
	}
	if put.GetNodeId() != "n2" {
		t.Fatalf("Put after the move answered by %s, want n2", put.GetNodeId())
	}
	got, err := r.KV.Get(ctx, &routerv1.GetRequest{Key: key})
	if err != nil || got.GetText() != "after the move" || got.GetNodeId() != "n2" {
		t.Fatalf("Get after the move = %v, %v", got, err)
	}
	tr, err := r.KV.GetTopology(ctx, &routerv1.GetTopologyRequest{})
	if err != nil || tr.GetTopology().GetVersion() != 2 {
		t.Fatalf("router topology after the move: %v, %v; want version 2", tr, err)
	}
	// The data the router never wrote after the move is where v2 says.
	direct, err := c.Node(t, "n2").StorageClient().Get(ctx, &storagev1.GetRequest{Key: []byte(key)})
	if err != nil || string(direct.GetValue()) != "after the move" {
		t.Fatalf("direct Get on n2 = %v, %v", direct, err)
	}
}

func TestNodeDown(t *testing.T) {
	t.Parallel()
	c, topo, r := setup(t, 2, router.Options{CallTimeout: time.Second})
	ctx := ctxT(t)
	down := keyOn(t, topo, "n2", "down")
	up := keyOn(t, topo, "n1", "up")
	for _, k := range []string{down, up} {
		if _, err := r.KV.Put(ctx, &routerv1.PutRequest{Key: k, Data: &routerv1.PutRequest_Text{Text: "x"}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Node(t, "n2").Proc.Stop(); err != nil {
		t.Logf("n2 exit: %v", err)
	}

	// No caller deadline: the router's CallTimeout bounds the retries.
	_, err := r.KV.Get(context.Background(), &routerv1.GetRequest{Key: down})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("Get on a stopped node: %v, want Unavailable", err)
	}
	n2 := c.Node(t, "n2").Proc.GRPC
	if msg := status.Convert(err).Message(); !strings.Contains(msg, "n2") || !strings.Contains(msg, n2) {
		t.Fatalf("error %q does not name node n2 at %s", msg, n2)
	}
	// Keys of the live node are unaffected.
	if got, err := r.KV.Get(ctx, &routerv1.GetRequest{Key: up}); err != nil || got.GetText() != "x" {
		t.Fatalf("Get on the live node = %v, %v", got, err)
	}
	// REST maps it to 503.
	if code, m := rest(t, "GET", "http://"+r.HTTP+"/v1/kv/"+down, "", ""); code != http.StatusServiceUnavailable {
		t.Fatalf("REST GET on a stopped node: %d %v, want 503", code, m)
	}
}

// TestToken: the router's key-value methods take the data token or the
// admin token, GetTopology (node addresses) and /metrics only the admin
// token; over gRPC and REST alike.
func TestToken(t *testing.T) {
	t.Parallel()
	var o router.Options
	o.Tokens = auth.Tokens{Data: "data-s3cret", Admin: "admin-s3cret"}
	_, _, r := setup(t, 2, o)

	withToken := func(tok string) context.Context {
		if tok == "" {
			return ctxT(t)
		}
		return metadata.AppendToOutgoingContext(ctxT(t), "authorization", "Bearer "+tok)
	}
	if _, err := r.KV.Put(withToken("data-s3cret"), &routerv1.PutRequest{Key: "k", Data: &routerv1.PutRequest_Text{Text: "v"}}); err != nil {
		t.Fatalf("Put with the data token: %v", err)
	}
	tests := []struct {
		name               string
		token              string
		data, admin        codes.Code // Get, GetTopology
		restData, restAdmn int        // GET /v1/kv/k, GET /v1/topology
	}{
		{"no token", "", codes.Unauthenticated, codes.Unauthenticated, http.StatusUnauthorized, http.StatusUnauthorized},
		{"wrong token", "wrong", codes.PermissionDenied, codes.PermissionDenied, http.StatusForbidden, http.StatusForbidden},
		{"data token", "data-s3cret", codes.OK, codes.PermissionDenied, http.StatusOK, http.StatusForbidden},
		{"admin token", "admin-s3cret", codes.OK, codes.OK, http.StatusOK, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp, err := r.KV.Get(withToken(tt.token), &routerv1.GetRequest{Key: "k"})
			if status.Code(err) != tt.data || (err == nil && resp.GetText() != "v") {
				t.Errorf("gRPC Get: %v %v, want %v", resp, err, tt.data)
			}
			if _, err := r.KV.GetTopology(withToken(tt.token), &routerv1.GetTopologyRequest{}); status.Code(err) != tt.admin {
				t.Errorf("gRPC GetTopology: %v, want %v", err, tt.admin)
			}
			if code, m := rest(t, "GET", "http://"+r.HTTP+"/v1/kv/k", "", tt.token); code != tt.restData || (code == 200 && m["text"] != "v") {
				t.Errorf("REST GET /v1/kv/k: %d %v, want %d", code, m, tt.restData)
			}
			if code, m := rest(t, "GET", "http://"+r.HTTP+"/v1/topology", "", tt.token); code != tt.restAdmn {
				t.Errorf("REST GET /v1/topology: %d %v, want %d", code, m, tt.restAdmn)
			}
		})
	}
}

// TestNotReadyUntilBootstrapped: a router whose etcd holds no topology
// is alive but not ready, answers Unavailable, and becomes ready
// once the cluster is bootstrapped.
func TestNotReadyUntilBootstrapped(t *testing.T) {
	t.Parallel()
	c := testcluster.Start(t, 2, testcluster.Options{})
	var o router.Options
	o.Etcd.Endpoints = c.Etcd().Endpoints()
	r := startRouter(t, o)
	resp, err := http.Get("http://" + r.HTTP + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz before bootstrap: %d, want 503", resp.StatusCode)
	}
	if _, err := r.KV.Get(ctxT(t), &routerv1.GetRequest{Key: "k"}); status.Code(err) != codes.Unavailable {
		t.Fatalf("Get before bootstrap: %v, want Unavailable", err)
	}
	c.Bootstrap(t)
	waitReady(t, r)
	if _, err := r.KV.Put(ctxT(t), &routerv1.PutRequest{Key: "k", Data: &routerv1.PutRequest_Text{Text: "v"}}); err != nil {
		t.Fatal(err)
	}
}

// TestNeedsEtcd: without a naming file the topology can only come from
// etcd, so a router without --etcd-endpoints refuses to start, naming it.
func TestNeedsEtcd(t *testing.T) {
	t.Parallel()
	o := router.DefaultOptions()
	o.GRPCAddr, o.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	if err := router.Run(t.Context(), o); err == nil || !strings.Contains(err.Error(), "--etcd-endpoints") {
		t.Fatalf("Run without etcd = %v, want an error naming --etcd-endpoints", err)
	}
}

// TestBinary runs the slotkv-router binary: flags, environment fallback,
// listen file, REST.
func TestBinary(t *testing.T) {
	t.Parallel()
	c := testcluster.Start(t, 2, testcluster.Options{})
	c.Bootstrap(t)
	p := proctest.StartWith(t, proctest.Options{Env: c.EtcdEnv()},
		proctest.Bin(t, "slotkv-router"), "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
	r := &testRouter{GRPC: p.GRPC, HTTP: p.HTTP}
	waitReady(t, r)
	code, m := rest(t, "PUT", "http://"+p.HTTP+"/v1/kv/a/b", `{"text":"c"}`, "")
	if code != 200 {
		t.Fatalf("PUT: %d %v", code, m)
	}
	code, m = rest(t, "GET", "http://"+p.HTTP+"/v1/kv/a/b", "", "")
	if code != 200 || m["text"] != "c" {
		t.Fatalf("GET: %d %v", code, m)
	}
	if err := p.Stop(); err != nil {
		t.Fatalf("router did not exit cleanly on SIGTERM: %v\n%s", err, p.Log())
	}
	if log := p.Log(); !strings.Contains(log, `"service":"slotkv-router"`) {
		t.Fatalf("log is not JSON with the service name:\n%s", log)
	}
}

// TestConcurrentMoved: many calls hitting SLOT_MOVED at once all end on the
// new owner (the single-refresh count is checked in internal/route).
func TestConcurrentMoved(t *testing.T) {
	t.Parallel()
	c, v1, r := setup(t, 3, router.Options{})
	ctx := ctxT(t)
	var keys []string
	for i := range 32 {
		keys = append(keys, keyOn(t, v1, "n1", fmt.Sprintf("c%d-", i)))
	}
	v2 := v1
	for _, k := range keys {
		v2 = testcluster.Move(t, v2, slot.OfString(k), "n3")
	}
	// Move bumps the version per key; install one v2 with every move.
	v2 = reversion(t, v2, 2)
	c.SetTopology(t, v2)

	var wg sync.WaitGroup
	errs := make(chan error, len(keys))
	for _, k := range keys {
		wg.Go(func() {
			put, err := r.KV.Put(ctx, &routerv1.PutRequest{Key: k, Data: &routerv1.PutRequest_Text{Text: k}})
			if err == nil && put.GetNodeId() != "n3" {
				err = fmt.Errorf("put %s answered by %s, want n3", k, put.GetNodeId())
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func reversion(t *testing.T, topo *topology.Topology, v uint64) *topology.Topology {
	t.Helper()
	p := topo.Proto()
	p.Version = v
	out, err := topology.FromProto(p)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRunRefusesBadLimits: limits no storage node could honour stop the
// router at start with an error naming the flag.
func TestRunRefusesBadLimits(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		key, value  int
		wantInError string
	}{
		{"key limit above Badger's", 70000, 0, "--max-key-bytes=70000"},
		{"negative value limit", 0, -1, "--max-value-bytes=-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o := router.DefaultOptions()
			o.GRPCAddr, o.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
			o.Etcd.Endpoints = []string{"127.0.0.1:1"}
			o.MaxKeyBytes, o.MaxValueBytes = tt.key, tt.value
			err := router.Run(t.Context(), o)
			if err == nil || !strings.Contains(err.Error(), tt.wantInError) {
				t.Fatalf("Run = %v, want an error naming %s", err, tt.wantInError)
			}
		})
	}
}
