package kv

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	routerv1 "github.com/slotkv/slotkv/gen/slotkv/router/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/etcdtest"
	"github.com/slotkv/slotkv/pkg/grpctest"
	"github.com/slotkv/slotkv/pkg/route"
	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/topology"
	"github.com/slotkv/slotkv/pkg/topostore"
)

// fakeNode is a storage node over real gRPC on 127.0.0.1: it answers
// BatchGet as a node holding topo would (every key found, valued by the
// node's id), unless before answers instead. The router reads the
// topology from a real etcd.
type fakeNode struct {
	storagev1.UnimplementedStorageServiceServer
	id    string
	srv   *grpctest.Server
	topo  atomic.Pointer[topology.Topology]
	calls atomic.Int64 // BatchGet calls
	// before, when set, runs first in BatchGet; its error is the answer.
	before atomic.Pointer[func(call int64) error]
}

func (n *fakeNode) setBefore(f func(call int64) error) { n.before.Store(&f) }

func startFake(t *testing.T, id string) *fakeNode {
	t.Helper()
	n := &fakeNode{id: id}
	n.srv = grpctest.Start(t, func(srv *grpc.Server) {
		storagev1.RegisterStorageServiceServer(srv, n)
	})
	return n
}

func (n *fakeNode) node() topology.Node { return topology.Node{ID: n.id, GRPCAddress: n.srv.Addr()} }

func (n *fakeNode) BatchGet(_ context.Context, req *storagev1.BatchGetRequest) (*storagev1.BatchGetResponse, error) {
	call := n.calls.Add(1)
	if f := n.before.Load(); f != nil {
		if err := (*f)(call); err != nil {
			return nil, rpcerr.ToStatus(err)
		}
	}
	t := n.topo.Load()
	resp := &storagev1.BatchGetResponse{}
	for _, k := range req.GetKeys() {
		s := slot.Of(k)
		if o, _ := t.Owner(s); o.ID != n.id {
			return nil, rpcerr.ToStatus(&rpcerr.SlotMovedError{Slot: s, OwnerID: o.ID, OwnerAddress: o.GRPCAddress, Version: t.Version()})
		}
		resp.Items = append(resp.Items, &storagev1.Item{Key: k, Value: []byte(n.id), Found: true, Slot: uint32(s)})
	}
	return resp, nil
}

// twoNodes: n1 and n2 holding v1 (slots split evenly), v1 in a real etcd
// (st), a router on it with millisecond backoffs (not watching: it reads
// etcd on SLOT_MOVED), and keys of each node.
func twoNodes(t *testing.T) (n1, n2 *fakeNode, v1 *topology.Topology, st *topostore.Store, svc *Service, keys map[string][]string) {
	t.Helper()
	n1, n2 = startFake(t, "n1"), startFake(t, "n2")
	v1, err := topology.Even(1, []topology.Node{n1.node(), n2.node()})
	if err != nil {
		t.Fatal(err)
	}
	n1.topo.Store(v1)
	n2.topo.Store(v1)
	st, err = topostore.New(etcdtest.Start(t).Client(t), topostore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, created, err := st.Bootstrap(t.Context(), v1); err != nil || !created {
		t.Fatalf("bootstrap v1 in etcd: created %v, %v", created, err)
	}
	r, err := route.New(route.Options{
		Store:      st,
		Dial:       func(addr string) (*grpc.ClientConn, error) { return dial.New(addr, dial.Options{}) },
		MinBackoff: time.Millisecond,
		MaxBackoff: 5 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	if _, err := r.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	obs, err := NewObserver(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	keys = map[string][]string{}
	for i := 0; len(keys["n1"]) < 3 || len(keys["n2"]) < 3; i++ {
		k := fmt.Sprintf("k%d", i)
		o, _ := v1.Owner(slot.OfString(k))
		keys[o.ID] = append(keys[o.ID], k)
	}
	return n1, n2, v1, st, New(r, obs), keys
}

// TestMultiGetMovedUntilTheDestinationLearns: a multi-get round whose
// destination has not been told of a migration's commit yet is redone with
// backoff, more than the 5 times the router used to give up after, until
// the destination learns the topology.
func TestMultiGetMovedUntilTheDestinationLearns(t *testing.T) {
	t.Parallel()
	n1, n2, v1, st, svc, keys := twoNodes(t)
	moving := keys["n1"][0]
	s := slot.OfString(moving)
	set, _ := slot.NewRangeSet(slot.Range{Start: s, End: s})
	v2, err := v1.Reassign(set, "n2")
	if err != nil {
		t.Fatal(err)
	}
	const behind = 12 // calls n2 answers on v1 before it learns v2
	var refused atomic.Int64
	n2.setBefore(func(int64) error {
		if n2.topo.Load().Version() == 1 && refused.Add(1) == behind {
			n2.topo.Store(v2) // the migrator reaches the destination
		}
		return nil
	})
	// The commit: v2 in etcd, and the source installs it before the
	// destination does.
	if err := st.Commit(t.Context(), 1, v2); err != nil {
		t.Fatalf("commit v2: %v", err)
	}
	n1.topo.Store(v2)
	req := []string{moving, keys["n1"][1], keys["n2"][0]}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	resp, err := svc.MultiGet(ctx, &routerv1.MultiGetRequest{Keys: req})
	if err != nil {
		t.Fatalf("MultiGet: %v", err)
	}
	for i, e := range resp.GetEntries() {
		want := "n1"
		if i != 1 {
			want = "n2"
		}
		if !e.GetFound() || e.GetText() != want {
			t.Errorf("entry %d %v, want served by %s", i, e, want)
		}
	}
	if got := refused.Load(); got != behind {
		t.Errorf("n2 answered on v1 %d times, want %d", got, behind)
	}
}

// TestPartialGivesUpOnADownNode: with allow_partial, an unavailable
// partition gets MaxRetries backoff rounds, then the answer lists it as
// failed; without, it is retried until the deadline.
func TestPartialGivesUpOnADownNode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		partial bool
	}{
		{"partial", true},
		{"strict", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, n2, _, _, svc, keys := twoNodes(t)
			n2.setBefore(func(int64) error { return status.Error(codes.Unavailable, "node n2 is down") })
			ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
			defer cancel()
			resp, err := svc.MultiGet(ctx, &routerv1.MultiGetRequest{Keys: []string{keys["n1"][0], keys["n2"][0]}, AllowPartial: tc.partial})
			calls := n2.calls.Load()
			if tc.partial {
				if err != nil || len(resp.GetFailed()) != 1 || resp.GetFailed()[0].GetPartition() != "n2" || resp.GetFailed()[0].GetCode() != "UNAVAILABLE" {
					t.Fatalf("MultiGet: %v, %v; want n2 failed", resp, err)
				}
				if want := int64(route.DefaultMaxRetries + 1); calls != want {
					t.Fatalf("%d calls to n2, want %d (MaxRetries backoff rounds)", calls, want)
				}
				return
			}
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("MultiGet: %v, want Unavailable", err)
			}
			if calls <= int64(route.DefaultMaxRetries+1) {
				t.Fatalf("%d calls to n2, want retries until the deadline", calls)
			}
		})
	}
}
