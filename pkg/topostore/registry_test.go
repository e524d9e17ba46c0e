package topostore

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	"github.com/slotkv/slotkv/pkg/etcdtest"
	"github.com/slotkv/slotkv/pkg/logtest"
)

// waitFor polls cond until it holds, failing after a long wait (a hang, not
// a timing assertion).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(60 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("%s: not within 60s", what)
}

func nodeIDs(t *testing.T, s *Store) []string {
	t.Helper()
	ns, err := s.Nodes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, n := range ns {
		ids = append(ids, n.GetId())
	}
	return ids
}

// TestRegister: a registration is listed while its context lives, gone at
// once when it ends (the lease revoked), and comes back by itself after an
// operator (or a lost lease) removed it.
func TestRegister(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t)
	cli := e.Client(t)
	s := newStore(t, cli, "/reg/")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n1 := &clusterv1.Node{Id: "n1", GrpcAddress: "127.0.0.1:7001", RespAddress: "127.0.0.1:7301"}
	leases, err := s.Register(ctx, n1, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	first := <-leases
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	if _, err := s.Register(ctx2, &clusterv1.Node{Id: "n2", GrpcAddress: "127.0.0.1:7002"}, 0); err != nil {
		t.Fatal(err)
	}
	ns, err := s.Nodes(context.Background())
	if err != nil || len(ns) != 2 || !proto.Equal(ns[0], n1) || ns[1].GetId() != "n2" {
		t.Fatalf("Nodes: %v, err %v", ns, err)
	}

	// The key removed under it (as a lost lease does): registered again.
	if _, err := cli.Revoke(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-leases:
		if l == first {
			t.Fatalf("re-registered under the revoked lease %x", l)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("not registered again within 60s after the lease was revoked")
	}
	waitFor(t, "n1 listed again", func() bool { return len(nodeIDs(t, s)) == 2 })

	// Ending the registration lists the node dead at once.
	cancel2()
	waitFor(t, "n2 gone", func() bool { ids := nodeIDs(t, s); return len(ids) == 1 && ids[0] == "n1" })

	if _, err := s.Register(ctx, &clusterv1.Node{}, 0); err == nil {
		t.Fatal("a node without an id registered")
	}
}

// TestRegisterSurvivesEtcdRestart: etcd down longer than the lease; the
// node is registered again once it is back.
func TestRegisterSurvivesEtcdRestart(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t)
	var logs logtest.Buffer
	s, err := New(e.Client(t), Options{Log: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	leases, err := s.Register(ctx, &clusterv1.Node{Id: "n1", GrpcAddress: "127.0.0.1:7001"}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	first := <-leases
	if err := e.Stop(); err != nil {
		t.Fatal(err)
	}
	// etcd stays away until the client has given the lease up. A restarted
	// etcd extends every lease by its TTL, so a keep-alive that reconnects
	// before the client's deadline renews the old lease: correct, but not
	// the path under test.
	waitFor(t, "the client gives the lease up", func() bool {
		return strings.Contains(logs.String(), "registration lease lost")
	})
	e.Restart()
	select {
	case l := <-leases:
		if l == first {
			t.Fatalf("re-registered under the old lease %x", l)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("not registered again within 60s after etcd came back")
	}
	waitFor(t, "n1 listed", func() bool { return len(nodeIDs(t, s)) == 1 })
}

// TestHandoffs: records present before the watch and put after it are
// delivered; Handoff reads one; DeleteHandoff removes it.
func TestHandoffs(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t)
	s := newStore(t, e.Client(t), "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.RecordHandoff(ctx, "j1", 4); err != nil {
		t.Fatal(err)
	}
	w := s.Handoffs(ctx)
	recv := func() string {
		select {
		case j := <-w:
			return j
		case <-time.After(60 * time.Second):
			t.Fatal("no hand-off delivered in 60s")
		}
		return ""
	}
	if j := recv(); j != "j1" {
		t.Fatalf("first delivery %q, want j1", j)
	}
	if err := s.RecordHandoff(ctx, "j2", 5); err != nil {
		t.Fatal(err)
	}
	if j := recv(); j != "j2" {
		t.Fatalf("second delivery %q, want j2", j)
	}
	tests := []struct {
		job  string
		v    uint64
		have bool
	}{{"j1", 4, true}, {"j2", 5, true}, {"j3", 0, false}}
	for _, tc := range tests {
		t.Run(tc.job, func(t *testing.T) {
			v, ok, err := s.Handoff(ctx, tc.job)
			if err != nil || ok != tc.have || v != tc.v {
				t.Fatalf("Handoff(%s) = %d, %v, %v; want %d, %v", tc.job, v, ok, err, tc.v, tc.have)
			}
		})
	}
	if err := s.DeleteHandoff(ctx, "j1"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Handoff(ctx, "j1"); ok {
		t.Fatal("j1 still recorded after DeleteHandoff")
	}
	// A bad value names the key.
	if _, err := e.Client(t).Put(ctx, s.HandoffKey("j4"), "x"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Handoff(ctx, "j4"); err == nil {
		t.Fatal("a non-numeric hand-off record read without error")
	}
	cancel()
	for range w { // closed once ctx is done
	}
}
