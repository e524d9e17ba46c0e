package route_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/route"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/testcluster"
	"github.com/slotkv/slotkv/pkg/topology"
	"github.com/slotkv/slotkv/pkg/topostore"
)

// newRouter returns a Router reading the topology from st, not running
// its watch: it learns a new topology only by refreshing (a SLOT_MOVED
// answer, Refresh).
func newRouter(t *testing.T, st *topostore.Store) *route.Router {
	t.Helper()
	r, err := route.New(route.Options{
		Store: st,
		Dial:  func(addr string) (*grpc.ClientConn, error) { return dial.New(addr, dial.Options{}) },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func put(key, value string) route.Call {
	return func(ctx context.Context, _ route.Attempt, c storagev1.StorageServiceClient) error {
		_, err := c.Put(ctx, &storagev1.PutRequest{Key: []byte(key), Value: []byte(value)})
		return err
	}
}

func keysOn(topo *topology.Topology, id string, n int) []string {
	var out []string
	for i := 0; len(out) < n; i++ {
		k := fmt.Sprintf("key-%d", i)
		if o, ok := topo.Owner(slot.OfString(k)); ok && o.ID == id {
			out = append(out, k)
		}
	}
	return out
}

// Concurrent SLOT_MOVED answers cause a single refresh, and every call ends
// on the new owner.
func TestMovedSingleFlight(t *testing.T) {
	t.Parallel()
	c := testcluster.Start(t, 3, testcluster.Options{})
	v1 := c.Bootstrap(t)
	r := newRouter(t, c.Store())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := r.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got := r.Topology().Version(); got != 1 {
		t.Fatalf("version %d after the first refresh, want 1", got)
	}

	keys := keysOn(v1, "n1", 40)
	ranges := map[string][]slot.Range{}
	moved := slot.FromSlots(func() []uint16 {
		var s []uint16
		for _, k := range keys {
			s = append(s, slot.OfString(k))
		}
		return s
	}())
	for _, n := range v1.Nodes() {
		set, _ := slot.NewRangeSet(v1.RangesOf(n.ID)...)
		set = set.Subtract(moved)
		if n.ID == "n2" {
			set = set.Union(moved)
		}
		ranges[n.ID] = set.Ranges()
	}
	v2, err := topology.New(2, v1.Nodes(), ranges)
	if err != nil {
		t.Fatal(err)
	}
	c.SetTopology(t, v2)

	before := r.Refreshes()
	var wg sync.WaitGroup
	errs := make(chan error, len(keys))
	for _, k := range keys {
		wg.Go(func() {
			res, err := r.Do(ctx, k, put(k, "v"))
			if err == nil && res.Node.ID != "n2" {
				err = fmt.Errorf("%s served by %s, want n2", k, res.Node.ID)
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
	if n := r.Refreshes() - before; n != 1 {
		t.Errorf("%d refreshes for %d concurrent SLOT_MOVED answers, want 1", n, len(keys))
	}
	if got := r.Topology().Version(); got != 2 {
		t.Errorf("version %d, want 2", got)
	}
}

// A node that leaves the topology has its connection closed; the node
// that took its slots is found in etcd after the SLOT_MOVED answer.
func TestNodeLeaves(t *testing.T) {
	t.Parallel()
	c := testcluster.Start(t, 3, testcluster.Options{})
	nodes := c.TopologyNodes()
	// v1 knows n1 and n2 only.
	v1, err := topology.Even(1, nodes[:2])
	if err != nil {
		t.Fatal(err)
	}
	c.SetTopology(t, v1)
	r := newRouter(t, c.Store())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := r.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	key := keysOn(v1, "n2", 1)[0]
	if res, err := r.Do(ctx, key, put(key, "v1")); err != nil || res.Node.ID != "n2" {
		t.Fatalf("put on n2: %+v, %v", res, err)
	}
	// Connections are dialed on first use: only n2 has been called.
	if got, want := strings.Join(r.ConnAddrs(), ","), nodes[1].GRPCAddress; got != want {
		t.Fatalf("connections %s, want %s", got, want)
	}
	// v2: n2 leaves, n3 takes its slots.
	v2, err := topology.New(2, []topology.Node{nodes[0], nodes[2]}, map[string][]slot.Range{
		"n1": v1.RangesOf("n1"), "n3": v1.RangesOf("n2"),
	})
	if err != nil {
		t.Fatal(err)
	}
	c.SetTopology(t, v2)
	var attempts []string // what each attempt was told
	res, err := r.Do(ctx, key, func(ctx context.Context, a route.Attempt, sc storagev1.StorageServiceClient) error {
		attempts = append(attempts, fmt.Sprintf("%d:%s:%d", a.Number, a.Node.ID, a.Slot))
		return put(key, "v")(ctx, a, sc)
	})
	if err != nil {
		t.Fatal(err)
	}
	s := slot.OfString(key)
	if want := []string{fmt.Sprintf("1:n2:%d", s), fmt.Sprintf("2:n3:%d", s)}; !slices.Equal(attempts, want) {
		t.Fatalf("attempts %v, want %v", attempts, want)
	}
	if res.Node.ID != "n3" || res.Attempts != 2 {
		t.Fatalf("served by %s after %d attempts, want n3 after 2", res.Node.ID, res.Attempts)
	}
	if got, want := strings.Join(r.ConnAddrs(), ","), nodes[2].GRPCAddress; got != want {
		t.Fatalf("connections %s after n2 left, want %s", got, want)
	}
}

// Non-retryable storage answers keep their code.
func TestErrorsRelayed(t *testing.T) {
	t.Parallel()
	c := testcluster.Start(t, 1, testcluster.Options{})
	c.Bootstrap(t)
	r := newRouter(t, c.Store())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := r.Do(ctx, "absent", func(ctx context.Context, _ route.Attempt, c storagev1.StorageServiceClient) error {
		_, err := c.Get(ctx, &storagev1.GetRequest{Key: []byte("absent")})
		return err
	})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("Get absent: %v, want NotFound", err)
	}
}

func TestNewNeedsStore(t *testing.T) {
	t.Parallel()
	_, err := route.New(route.Options{Dial: func(string) (*grpc.ClientConn, error) { return nil, nil }})
	if err == nil || !strings.Contains(err.Error(), "etcd") {
		t.Fatalf("New without a store: %v, want an error naming etcd", err)
	}
}
