package console

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/slotkv/slotkv/pkg/dial"
)

// Run serves the pages on the HTTP port and gRPC health on the other,
// shows a node it cannot reach as an error, and stops cleanly.
func TestRun(t *testing.T) {
	t.Parallel()
	// A port nothing listens on: etcd is down.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()

	o := DefaultOptions()
	o.GRPCAddr, o.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	o.Etcd.Endpoints = []string{dead}
	o.SampleInterval = 100 * time.Millisecond
	addrs := make(chan [2]net.Addr, 1)
	o.OnListen = func(g, h net.Addr) { addrs <- [2]net.Addr{g, h} }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, o) }()
	var a [2]net.Addr
	select {
	case a = <-addrs:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	base := "http://" + a[1].String()

	for _, path := range []string{"/healthz", "/readyz", "/", "/static/app.js", "/static/app.css"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Body.Close(); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %s", path, resp.Status)
		}
	}
	cc, err := dial.New(a[0].String(), dial.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	hctx, hcancel := context.WithTimeout(ctx, 10*time.Second)
	defer hcancel()
	if h, err := healthpb.NewHealthClient(cc).Check(hctx, &healthpb.HealthCheckRequest{}); err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("gRPC health: %v %v", h, err)
	}

	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/api/state")
		if err != nil {
			t.Fatal(err)
		}
		var st struct{ Cluster clusterView }
		err = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		if err == nil && len(st.Cluster.Errors) > 0 {
			if !strings.Contains(st.Cluster.Errors[0], "topology from etcd "+dead) {
				t.Errorf("errors %q: want the dead etcd named", st.Cluster.Errors)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no error shown for the dead seed: %+v %v", st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// An open event stream does not hold the shutdown up.
	resp, err := http.Get(base + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after shutdown: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return within 20s of its context ending")
	}
}

func TestNewRefuses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"no etcd", func(o *Options) {}, "--etcd-endpoints"},
		{"no http", func(o *Options) { o.Etcd.Endpoints = []string{"127.0.0.1:1"}; o.HTTPAddr = "" }, "--http-addr"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := DefaultOptions()
			tc.edit(&o)
			if _, err := New(o); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v, want an error naming %s", err, tc.want)
			}
		})
	}
}
