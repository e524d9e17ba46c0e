package route_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/etcdtest"
	"github.com/slotkv/slotkv/pkg/logtest"
	"github.com/slotkv/slotkv/pkg/route"
	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/testcluster"
	"github.com/slotkv/slotkv/pkg/topology"
	"github.com/slotkv/slotkv/pkg/topostore"
)

// newStore returns a topology store on a fresh real etcd.
func newStore(t *testing.T) (*etcdtest.Etcd, *topostore.Store) {
	t.Helper()
	e := etcdtest.Start(t)
	st, err := topostore.New(e.Client(t), topostore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return e, st
}

// newEtcdRouter returns a Router whose topology comes from st, logging to
// log when it is not nil. It has no seeds: the storage nodes are never
// asked for a topology.
func newEtcdRouter(t *testing.T, st *topostore.Store, log *logtest.Buffer) *route.Router {
	t.Helper()
	o := route.Options{
		Store: st,
		Dial:  func(addr string) (*grpc.ClientConn, error) { return dial.New(addr, dial.Options{}) },
	}
	if log != nil {
		o.Logger = slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	r, err := route.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// runRouter runs r.Run until the test ends.
func runRouter(t *testing.T, r *route.Router) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = r.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// waitVersion waits until r holds topology version v (or fails the test at
// ctx's deadline).
func waitVersion(ctx context.Context, t *testing.T, r *route.Router, v uint64) {
	t.Helper()
	for {
		if cur := r.Topology(); cur != nil && cur.Version() >= v {
			if cur.Version() != v {
				t.Fatalf("router jumped to version %d, want %d", cur.Version(), v)
			}
			return
		}
		select {
		case <-ctx.Done():
			got := uint64(0)
			if cur := r.Topology(); cur != nil {
				got = cur.Version()
			}
			t.Fatalf("router holds version %d, want %d: %v", got, v, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// installed lists the versions of the router's "topology updated" lines,
// in order.
var updatedLine = regexp.MustCompile(`msg="topology updated" from_version=(\d+) version=(\d+)`)

func installed(log string) []string {
	var out []string
	for _, m := range updatedLine.FindAllStringSubmatch(log, -1) {
		out = append(out, m[1]+"->"+m[2])
	}
	return out
}

// A topology committed in etcd reaches a running Router through the watch:
// no call fails on it first, no refresh is made, every version is installed
// in order, and the connection to a node that left is closed.
func TestEtcdWatchDeliversCommits(t *testing.T) {
	t.Parallel()
	_, st := newStore(t)
	c := testcluster.Start(t, 3, testcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var log logtest.Buffer
	r := newEtcdRouter(t, st, &log)
	if r.Ready() {
		t.Fatal("ready before any topology")
	}
	if err := r.CheckReady(ctx); err == nil || !strings.Contains(err.Error(), "etcd") {
		t.Fatalf("CheckReady before a bootstrap: %v, want an error naming etcd", err)
	}
	runRouter(t, r)

	// The nodes and etcd hold the same topologies: the nodes are given
	// theirs directly (they do not read etcd in this test), then etcd's is
	// written.
	v1, err := topology.Even(1, c.TopologyNodes())
	if err != nil {
		t.Fatal(err)
	}
	c.SetTopology(t, v1)
	if _, created, err := st.Bootstrap(ctx, v1); err != nil || !created {
		t.Fatalf("bootstrap: created %v, %v", created, err)
	}
	waitVersion(ctx, t, r, 1)
	if !r.Ready() || r.CheckReady(ctx) != nil {
		t.Fatalf("not ready with version 1: %v", r.CheckReady(ctx))
	}

	key := keysOn(v1, "n1", 1)[0]
	if res, err := r.Do(ctx, key, put(key, "v1")); err != nil || res.Node.ID != "n1" || res.Attempts != 1 {
		t.Fatalf("put on n1: %+v, %v", res, err)
	}

	// v2: n1 leaves, n2 takes its slots.
	nodes := c.TopologyNodes()
	v2, err := topology.New(2, nodes[1:], map[string][]slot.Range{
		"n2": append(v1.RangesOf("n1"), v1.RangesOf("n2")...), "n3": v1.RangesOf("n3"),
	})
	if err != nil {
		t.Fatal(err)
	}
	c.SetTopology(t, v2)
	before := r.Refreshes()
	if err := st.Commit(ctx, 1, v2); err != nil {
		t.Fatal(err)
	}
	waitVersion(ctx, t, r, 2)
	if slices.Contains(r.ConnAddrs(), nodes[0].GRPCAddress) {
		t.Errorf("connections %v still include n1 (%s), which left the topology", r.ConnAddrs(), nodes[0].GRPCAddress)
	}
	// The first call after the change goes to the new owner: the router
	// learned of it without a SLOT_MOVED.
	if res, err := r.Do(ctx, key, put(key, "v2")); err != nil || res.Node.ID != "n2" || res.Attempts != 1 {
		t.Fatalf("put after the commit: %+v, %v; want n2 at the first attempt", res, err)
	}

	// Versions committed back to back are each installed, in order.
	cur := v2
	for range 3 {
		next := testcluster.Move(t, cur, slot.OfString(key), []string{"n3", "n2"}[cur.Version()%2])
		if err := st.Commit(ctx, cur.Version(), next); err != nil {
			t.Fatal(err)
		}
		cur = next
	}
	waitVersion(ctx, t, r, cur.Version())
	if n := r.Refreshes() - before; n != 0 {
		t.Errorf("%d refreshes while following the watch, want 0", n)
	}
	// The router logs an install just after it makes it visible: wait for
	// the last line rather than read the log as the version turns.
	want := []string{"0->1", "1->2", "2->3", "3->4", "4->5"}
	got := installed(log.String())
	for deadline := time.Now().Add(10 * time.Second); !slices.Equal(got, want) && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
		got = installed(log.String())
	}
	if !slices.Equal(got, want) {
		t.Errorf("installed %v, want %v", got, want)
	}
}

// Refresh and SLOT_MOVED read the topology from etcd, never from the
// nodes: nodes that hold a newer version than etcd do not move the router.
func TestEtcdRefreshReadsEtcd(t *testing.T) {
	t.Parallel()
	_, st := newStore(t)
	c := testcluster.Start(t, 3, testcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := newEtcdRouter(t, st, nil) // not running: no watch

	if _, err := r.Refresh(ctx); !errors.Is(err, rpcerr.ErrNoTopology) || !errors.Is(err, topostore.ErrNotBootstrapped) {
		t.Fatalf("Refresh before a bootstrap: %v, want ErrNotBootstrapped", err)
	}
	if err := r.CheckReady(ctx); err == nil || !strings.Contains(err.Error(), "bootstrap") {
		t.Fatalf("CheckReady before a bootstrap: %v, want an error saying to bootstrap", err)
	}

	v1, err := topology.Even(1, c.TopologyNodes())
	if err != nil {
		t.Fatal(err)
	}
	key := keysOn(v1, "n1", 1)[0]
	v2 := testcluster.Move(t, v1, slot.OfString(key), "n2")
	c.SetTopology(t, v1)
	c.SetTopology(t, v2) // the nodes are ahead of etcd
	if _, _, err := st.Bootstrap(ctx, v1); err != nil {
		t.Fatal(err)
	}
	got, err := r.Refresh(ctx)
	if err != nil || got.Version() != 1 {
		t.Fatalf("Refresh: version %v, %v; want 1 from etcd, not the nodes' 2", got, err)
	}
	if got, err := r.RefreshTo(ctx, 2); err != nil || got.Version() != 1 {
		t.Fatalf("RefreshTo(2) with etcd at 1: version %v, %v; want 1", got, err)
	}

	// n1 answers SLOT_MOVED (it holds v2); the router reads etcd, which
	// holds v2 once committed, and goes to n2.
	if err := st.Commit(ctx, 1, v2); err != nil {
		t.Fatal(err)
	}
	before := r.Refreshes()
	res, err := r.Do(ctx, key, put(key, "v"))
	if err != nil || res.Node.ID != "n2" || res.Attempts != 2 {
		t.Fatalf("put after the move: %+v, %v; want n2 at the second attempt", res, err)
	}
	if n := r.Refreshes() - before; n != 1 {
		t.Errorf("%d refreshes for one SLOT_MOVED, want 1", n)
	}
	if got := r.Topology().Version(); got != 2 {
		t.Errorf("version %d after the SLOT_MOVED, want 2", got)
	}
}

// The watch survives etcd going away under it: the router keeps its
// topology meanwhile and picks up what is committed after etcd is back.
func TestEtcdRestartUnderWatch(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		down func(*testing.T, *etcdtest.Etcd)
	}{
		{"stop", func(t *testing.T, e *etcdtest.Etcd) {
			if err := e.Stop(); err != nil {
				t.Fatal(err)
			}
		}},
		{"kill", func(_ *testing.T, e *etcdtest.Etcd) { e.Kill() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e, st := newStore(t)
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			// Nodes that are never called: the router dials lazily.
			var nodes []topology.Node
			for i := range 3 {
				nodes = append(nodes, topology.Node{ID: fmt.Sprintf("n%d", i+1), GRPCAddress: fmt.Sprintf("127.0.0.1:%d", 1+i)})
			}
			v1, err := topology.Even(1, nodes)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := st.Bootstrap(ctx, v1); err != nil {
				t.Fatal(err)
			}
			r := newEtcdRouter(t, st, nil)
			runRouter(t, r)
			waitVersion(ctx, t, r, 1)

			tc.down(t, e)
			if !r.Ready() || r.Topology().Version() != 1 {
				t.Fatalf("router lost its topology with etcd down: %v", r.Topology())
			}
			e.Restart()
			v2 := testcluster.Move(t, v1, 0, "n3")
			if err := st.Commit(ctx, 1, v2); err != nil {
				t.Fatal(err)
			}
			waitVersion(ctx, t, r, 2)
			if o, _ := r.Topology().Owner(0); o.ID != "n3" {
				t.Fatalf("slot 0 owned by %s in the router's version 2, want n3", o.ID)
			}
		})
	}
}

func TestNewWithStoreContactsNothing(t *testing.T) {
	t.Parallel()
	// A client that never dials: New contacts nothing.
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"127.0.0.1:1"}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	st, err := topostore.New(cli, topostore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := route.New(route.Options{Store: st, Dial: func(string) (*grpc.ClientConn, error) { return nil, nil }})
	if err != nil {
		t.Fatalf("New with a store and no seeds: %v", err)
	}
	defer r.Close()
	if !strings.Contains(r.Source(), st.TopologyKey()) {
		t.Fatalf("source %q does not name the etcd key", r.Source())
	}
}
