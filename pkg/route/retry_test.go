package route_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

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

// withRetryInfo is a status error of code c that asks to retry after d.
func withRetryInfo(c codes.Code, msg string, d time.Duration) error {
	st, err := status.New(c, msg).WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)})
	if err != nil {
		panic(err)
	}
	return st.Err()
}

func TestClassify(t *testing.T) {
	t.Parallel()
	moved := &rpcerr.SlotMovedError{Slot: 42, OwnerID: "n2", OwnerAddress: "127.0.0.2:7000", Version: 7}
	movedClass := route.Class{Kind: route.Moved, Slot: 42, OwnerID: "n2", OwnerAddress: "127.0.0.2:7000", Version: 7}
	node := topology.Node{ID: "n1", GRPCAddress: "127.0.0.1:7000"}
	tests := []struct {
		name      string
		err       error
		want      route.Class
		retryable bool
	}{
		{"nil", nil, route.Class{Kind: route.OK}, false},
		{"moved", rpcerr.ToStatus(moved), movedClass, true},
		{"moved annotated", route.Annotate(rpcerr.ToStatus(moved), node), movedClass, true},
		{"moved wrapped", fmt.Errorf("put: %w", rpcerr.ToStatus(moved)), movedClass, true},
		{"moved in process", moved, movedClass, true},
		{"moved without details", status.Error(codes.FailedPrecondition, "x") /* a conflict, not a move */, route.Class{Kind: route.Fatal}, false},
		{"moved reason only", rpcerr.ToStatus(fmt.Errorf("%w: slot 3", rpcerr.ErrSlotMoved)), route.Class{Kind: route.Moved}, true},
		{"frozen", rpcerr.ToStatus(&rpcerr.SlotFrozenError{Slot: 3, RetryAfter: 20 * time.Millisecond}),
			route.Class{Kind: route.Frozen, Slot: 3, RetryAfter: 20 * time.Millisecond}, true},
		{"frozen without RetryInfo", rpcerr.ToStatus(fmt.Errorf("%w: slot 3", rpcerr.ErrSlotFrozen)), route.Class{Kind: route.Frozen}, true},
		{"unavailable", status.Error(codes.Unavailable, "connection refused"), route.Class{Kind: route.NodeUnavailable}, true},
		{"unavailable annotated", route.Annotate(errors.New("dial"), node), route.Class{Kind: route.NodeUnavailable}, true},
		{"not served yet", rpcerr.ToStatus(fmt.Errorf("%w: slot 3 is IMPORTING", rpcerr.ErrUnavailable)), route.Class{Kind: route.NodeUnavailable}, true},
		{"unavailable in process", fmt.Errorf("x: %w", rpcerr.ErrUnavailable), route.Class{Kind: route.NodeUnavailable}, true},
		{"connection closed", status.Error(codes.Canceled, "grpc: the client connection is closing"), route.Class{Kind: route.NodeUnavailable}, true},
		{"attempt timeout", status.Error(codes.DeadlineExceeded, "context deadline exceeded"), route.Class{Kind: route.NodeUnavailable}, true},
		{"resource exhausted", status.Error(codes.ResourceExhausted, "message too large"), route.Class{Kind: route.Busy}, false},
		{"import cap, retry later", withRetryInfo(codes.ResourceExhausted, "too many import streams", 200*time.Millisecond),
			route.Class{Kind: route.Busy, RetryAfter: 200 * time.Millisecond}, false},
		{"aborted", status.Error(codes.Aborted, "aborted"), route.Class{Kind: route.Busy}, false},
		{"no topology", rpcerr.ToStatus(fmt.Errorf("%w: node n1", rpcerr.ErrNoTopology)), route.Class{Kind: route.NoTopology}, true},
		{"stale topology", rpcerr.ToStatus(fmt.Errorf("%w: have 5", rpcerr.ErrStaleTopology)), route.Class{Kind: route.StaleTopology}, false},
		{"unassigned", rpcerr.ToStatus(fmt.Errorf("%w: slot 9", rpcerr.ErrSlotUnassigned)), route.Class{Kind: route.Fatal}, false},
		{"not found", rpcerr.ToStatus(rpcerr.ErrNotFound), route.Class{Kind: route.Fatal}, false},
		{"invalid", rpcerr.ToStatus(rpcerr.InvalidField("key", "empty")), route.Class{Kind: route.Fatal}, false},
		{"denied", rpcerr.ToStatus(rpcerr.ErrPermissionDenied), route.Class{Kind: route.Fatal}, false},
		{"internal", status.Error(codes.Internal, "boom"), route.Class{Kind: route.Fatal}, false},
		{"plain error", errors.New("boom"), route.Class{Kind: route.Fatal}, false},
		{"own context", context.Canceled, route.Class{Kind: route.Fatal}, false},
		{"own deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), route.Class{Kind: route.Fatal}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := route.Classify(tc.err)
			if got != tc.want {
				t.Fatalf("Classify(%v) = %+v (%s), want %+v (%s)", tc.err, got, got.Kind, tc.want, tc.want.Kind)
			}
			if got.Retryable() != tc.retryable {
				t.Fatalf("Retryable() = %v, want %v", got.Retryable(), tc.retryable)
			}
		})
	}
}

func TestBackoffer(t *testing.T) {
	t.Parallel()
	within := func(t *testing.T, got, want time.Duration) {
		t.Helper()
		if got < want-want/5 || got > want+want/5 {
			t.Fatalf("delay %s, want %s ±20%%", got, want)
		}
	}
	unavailable := route.Class{Kind: route.NodeUnavailable}
	t.Run("exponential and capped", func(t *testing.T) {
		t.Parallel()
		b := route.NewBackoffer(t.Context(), 10*time.Millisecond, 50*time.Millisecond)
		for _, want := range []time.Duration{10, 20, 40, 50, 50} {
			within(t, b.Next(unavailable), want*time.Millisecond)
		}
		if b.Waits(route.NodeUnavailable) != 5 || b.Total() != 5 {
			t.Fatalf("waits %d, total %d, want 5", b.Waits(route.NodeUnavailable), b.Total())
		}
	})
	t.Run("one backoff per kind", func(t *testing.T) {
		t.Parallel()
		b := route.NewBackoffer(t.Context(), 10*time.Millisecond, time.Second)
		b.Next(unavailable)
		b.Next(unavailable)
		within(t, b.Next(route.Class{Kind: route.Moved}), 10*time.Millisecond)
		within(t, b.Next(unavailable), 40*time.Millisecond)
		if b.Waits(route.Moved) != 1 || b.Total() != 4 {
			t.Fatalf("moved waits %d, total %d", b.Waits(route.Moved), b.Total())
		}
	})
	t.Run("frozen waits its RetryAfter", func(t *testing.T) {
		t.Parallel()
		b := route.NewBackoffer(t.Context(), 10*time.Millisecond, time.Second)
		for range 3 {
			within(t, b.Next(route.Class{Kind: route.Frozen, RetryAfter: 300 * time.Millisecond}), 300*time.Millisecond)
		}
		within(t, b.Next(route.Class{Kind: route.Frozen}), 10*time.Millisecond)
	})
	t.Run("reset", func(t *testing.T) {
		t.Parallel()
		b := route.NewBackoffer(t.Context(), 10*time.Millisecond, time.Second)
		b.Next(unavailable)
		b.Next(unavailable)
		b.Reset()
		within(t, b.Next(unavailable), 10*time.Millisecond)
		if b.Total() != 1 {
			t.Fatalf("total %d after a reset and one delay", b.Total())
		}
	})
	t.Run("defaults", func(t *testing.T) {
		t.Parallel()
		b := route.NewBackoffer(t.Context(), 0, 0)
		within(t, b.Next(unavailable), route.DefaultMinBackoff)
		if _, ok := b.Deadline(); ok {
			t.Fatal("a deadline without one in the context")
		}
		if !b.Fits(time.Hour) {
			t.Fatal("without a deadline every delay fits")
		}
	})
	t.Run("no budget", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		b := route.NewBackoffer(ctx, 10*time.Minute, 10*time.Minute)
		if b.Fits(10 * time.Minute) {
			t.Fatal("a 10m delay fits a 1m deadline")
		}
		// Returns at once rather than sleeping ten minutes.
		if err := b.Wait(ctx, unavailable); !errors.Is(err, route.ErrNoBudget) {
			t.Fatalf("Wait = %v, want ErrNoBudget", err)
		}
	})
	t.Run("context ends", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		b := route.NewBackoffer(ctx, time.Minute, time.Minute)
		if err := b.Wait(ctx, unavailable); !errors.Is(err, context.Canceled) {
			t.Fatalf("Wait = %v, want context.Canceled", err)
		}
	})
}

func TestRetry(t *testing.T) {
	t.Parallel()
	var (
		frozen      = rpcerr.ToStatus(&rpcerr.SlotFrozenError{Slot: 1, RetryAfter: time.Millisecond})
		unavailable = status.Error(codes.Unavailable, "connection refused")
		busy        = status.Error(codes.ResourceExhausted, "import streams")
		stale       = rpcerr.ToStatus(fmt.Errorf("%w: have 3", rpcerr.ErrStaleTopology))
		moved       = rpcerr.ToStatus(&rpcerr.SlotMovedError{Slot: 1, OwnerID: "n2", Version: 2})
		notFound    = rpcerr.ToStatus(rpcerr.ErrNotFound)
		replanErr   = errors.New("source no longer owns the slots")
	)
	tests := []struct {
		name      string
		answers   []error // then nil
		opts      func(stale *int) []route.RetryOption
		wantCode  codes.Code
		wantErr   error // instead of wantCode
		wantCalls int
		wantStale int
	}{
		{name: "frozen then ok", answers: []error{frozen, frozen}, wantCode: codes.OK, wantCalls: 3},
		{name: "unavailable then ok", answers: []error{unavailable, unavailable, unavailable}, wantCode: codes.OK, wantCalls: 4},
		{name: "not found at once", answers: []error{notFound}, wantCode: codes.NotFound, wantCalls: 1},
		{name: "busy not retried", answers: []error{busy}, wantCode: codes.ResourceExhausted, wantCalls: 1},
		{name: "busy retried", answers: []error{busy, frozen}, wantCode: codes.OK, wantCalls: 3,
			opts: func(*int) []route.RetryOption { return []route.RetryOption{route.RetryBusy()} }},
		{name: "moved not retried", answers: []error{moved}, wantCode: codes.FailedPrecondition, wantCalls: 1},
		{name: "moved retried", answers: []error{moved, moved}, wantCode: codes.OK, wantCalls: 3,
			opts: func(*int) []route.RetryOption { return []route.RetryOption{route.RetryMoved()} }},
		{name: "stale not retried", answers: []error{stale}, wantCode: codes.FailedPrecondition, wantCalls: 1},
		{name: "stale re-planned", answers: []error{stale, unavailable, stale}, wantCode: codes.OK, wantCalls: 4, wantStale: 2,
			opts: func(n *int) []route.RetryOption {
				return []route.RetryOption{route.RetryStale(func(_ context.Context, c route.Class, _ error) error {
					if c.Kind != route.StaleTopology {
						return fmt.Errorf("class %s", c.Kind)
					}
					*n++
					return nil
				})}
			}},
		{name: "re-planning fails", answers: []error{stale}, wantErr: replanErr, wantCalls: 1, wantStale: 1,
			opts: func(n *int) []route.RetryOption {
				return []route.RetryOption{route.RetryStale(func(context.Context, route.Class, error) error {
					*n++
					return replanErr
				})}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			var calls, staleCalls, retries int
			var opts []route.RetryOption
			if tc.opts != nil {
				opts = tc.opts(&staleCalls)
			}
			opts = append(opts, route.OnRetry(func(attempt int, err error, _ time.Duration) {
				retries++
				if attempt != calls || err == nil {
					t.Errorf("OnRetry(%d, %v) after call %d", attempt, err, calls)
				}
			}))
			err := route.Retry(ctx, route.NewBackoffer(ctx, time.Millisecond, 2*time.Millisecond), func(context.Context) error {
				calls++
				if calls <= len(tc.answers) {
					return tc.answers[calls-1]
				}
				return nil
			}, opts...)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Retry = %v, want %v", err, tc.wantErr)
				}
			} else if status.Code(err) != tc.wantCode {
				t.Fatalf("Retry = %v, want code %v", err, tc.wantCode)
			}
			if calls != tc.wantCalls || staleCalls != tc.wantStale {
				t.Fatalf("%d calls, %d re-plans, want %d and %d", calls, staleCalls, tc.wantCalls, tc.wantStale)
			}
			if tc.wantCode == codes.OK && tc.wantErr == nil && retries != calls-1 {
				t.Fatalf("%d OnRetry calls for %d calls", retries, calls)
			}
		})
	}

	t.Run("until the deadline", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		calls := 0
		err := route.Retry(ctx, nil, func(ctx context.Context) error {
			calls++
			return unavailable
		})
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "connection refused") {
			t.Fatalf("Retry = %v, want the last answer", err)
		}
		if calls < 2 {
			t.Fatalf("%d calls, want retries until the deadline", calls)
		}
	})
	t.Run("deadline during an attempt", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		calls := 0
		err := route.Retry(ctx, route.NewBackoffer(ctx, time.Millisecond, time.Millisecond), func(ctx context.Context) error {
			calls++
			if calls == 1 {
				return frozen
			}
			<-ctx.Done()
			return status.FromContextError(ctx.Err()).Err()
		})
		if calls != 2 || route.Classify(err).Kind != route.Frozen {
			t.Fatalf("after %d calls: %v, want the frozen answer rather than DeadlineExceeded", calls, err)
		}
	})
}

// fakeNode is a storage node over real gRPC on 127.0.0.1 that answers Put
// with what put says; topo is the topology it holds (what owns answers
// by). The router reads the topology from a real etcd (topoStore).
type fakeNode struct {
	storagev1.UnimplementedStorageServiceServer
	*grpctest.Server // stop and restart on the same address
	t                *testing.T
	id               string

	topo atomic.Pointer[topology.Topology]
	put  atomic.Pointer[func(key []byte) error]
	puts atomic.Int64
}

func startFake(t *testing.T, id string) *fakeNode {
	t.Helper()
	n := &fakeNode{t: t, id: id}
	n.Server = grpctest.Start(t, func(srv *grpc.Server) {
		storagev1.RegisterStorageServiceServer(srv, n)
	})
	return n
}

func (n *fakeNode) node() topology.Node { return topology.Node{ID: n.id, GRPCAddress: n.Addr()} }

func (n *fakeNode) setPut(f func(key []byte) error) { n.put.Store(&f) }

func (n *fakeNode) Put(_ context.Context, req *storagev1.PutRequest) (*storagev1.PutResponse, error) {
	n.puts.Add(1)
	if f := n.put.Load(); f != nil {
		if err := (*f)(req.GetKey()); err != nil {
			return nil, rpcerr.ToStatus(err)
		}
	}
	return &storagev1.PutResponse{}, nil
}

// owns answers puts as a storage node holding topology t would: served
// when t gives the key's slot to n, SLOT_MOVED naming the owner otherwise.
func (n *fakeNode) owns(key []byte) error {
	t := n.topo.Load()
	s := slot.Of(key)
	o, _ := t.Owner(s)
	if o.ID == n.id {
		return nil
	}
	return &rpcerr.SlotMovedError{Slot: s, OwnerID: o.ID, OwnerAddress: o.GRPCAddress, Version: t.Version()}
}

// topoStore returns a topology store on a fresh real etcd holding topo.
func topoStore(t *testing.T, topo *topology.Topology) *topostore.Store {
	t.Helper()
	st, err := topostore.New(etcdtest.Start(t).Client(t), topostore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, created, err := st.Bootstrap(t.Context(), topo); err != nil || !created {
		t.Fatalf("bootstrap v%d in etcd: created %v, %v", topo.Version(), created, err)
	}
	return st
}

// fastRouter returns a Router on st with short backoffs, not running its
// watch: it reads etcd when it has no topology or a SLOT_MOVED asks.
func fastRouter(t *testing.T, st *topostore.Store, dialer route.DialFunc) *route.Router {
	t.Helper()
	if dialer == nil {
		dialer = func(addr string) (*grpc.ClientConn, error) { return dial.New(addr, dial.Options{}) }
	}
	r, err := route.New(route.Options{
		Store:      st,
		Dial:       dialer,
		MinBackoff: time.Millisecond,
		MaxBackoff: 5 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// migrated sets up a source n1 that holds v2 (where key's slot has moved
// to n2) and a destination n2 still on v1, and a router on v1.
func migrated(t *testing.T, key string) (src, dst *fakeNode, r *route.Router, v2 *topology.Topology) {
	t.Helper()
	src, dst = startFake(t, "n1"), startFake(t, "n2")
	nodes := []topology.Node{src.node(), dst.node()}
	v1, err := topology.New(1, nodes, map[string][]slot.Range{"n1": {{Start: 0, End: slot.MaxSlot}}})
	if err != nil {
		t.Fatal(err)
	}
	s := slot.OfString(key)
	set, _ := slot.NewRangeSet(slot.Range{Start: s, End: s})
	if v2, err = v1.Reassign(set, "n2"); err != nil {
		t.Fatal(err)
	}
	src.topo.Store(v1)
	dst.topo.Store(v1)
	src.setPut(src.owns)
	dst.setPut(dst.owns)
	st := topoStore(t, v1)
	r = fastRouter(t, st, nil)
	if _, err := r.Refresh(t.Context()); err != nil || r.Topology().Version() != 1 {
		t.Fatalf("first refresh: %v", err)
	}
	// The commit: v2 in etcd, and the source installs it before the
	// destination does.
	if err := st.Commit(t.Context(), 1, v2); err != nil {
		t.Fatalf("commit v2: %v", err)
	}
	src.topo.Store(v2)
	return src, dst, r, v2
}

// TestMovedUntilTheDestinationLearns: right after a migration's commit the
// source answers SLOT_MOVED naming the destination, which has not been told
// yet and answers SLOT_MOVED naming the source. Do keeps retrying the
// destination with backoff, well past the 5 refreshes it used to give up
// after, without refreshing the topology for a node that is behind, and
// succeeds once the destination learns the topology.
func TestMovedUntilTheDestinationLearns(t *testing.T) {
	t.Parallel()
	const key = "moving-key"
	const behind = 12 // SLOT_MOVED answers of the destination before it learns
	src, dst, r, v2 := migrated(t, key)
	var refused atomic.Int64
	dst.setPut(func(k []byte) error {
		if refused.Add(1) == behind {
			dst.topo.Store(v2) // the migrator reaches the destination
		}
		return dst.owns(k)
	})
	before := r.Refreshes()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var attempts []string
	res, err := r.Do(ctx, key, func(ctx context.Context, a route.Attempt, c storagev1.StorageServiceClient) error {
		attempts = append(attempts, fmt.Sprintf("%d:%s", a.Number, a.Node.ID))
		return put(key, "v")(ctx, a, c)
	})
	if err != nil {
		t.Fatalf("Do: %v (attempts %v)", err, attempts)
	}
	// n1 once (SLOT_MOVED, version 2), then n2 until it learns v2.
	if res.Node.ID != "n2" || res.Attempts != behind+1 || len(attempts) != behind+1 || attempts[0] != "1:n1" || attempts[1] != "2:n2" {
		t.Fatalf("served by %s after %d attempts %v, want n2 after %d", res.Node.ID, res.Attempts, attempts, behind+1)
	}
	if src.puts.Load() != 1 || dst.puts.Load() != behind {
		t.Fatalf("puts: %d on the source, %d on the destination; want 1 and %d", src.puts.Load(), dst.puts.Load(), behind)
	}
	// One refresh, for the source's answer; the destination's answers
	// name an older version than the router's and cause none.
	if n := r.Refreshes() - before; n != 1 {
		t.Fatalf("%d topology refreshes, want 1", n)
	}
}

// TestMovedGivesUpAtTheDeadline: a destination that never learns the
// topology costs the call its deadline, not a count of refreshes; the
// error is the last SLOT_MOVED answer, naming the node.
func TestMovedGivesUpAtTheDeadline(t *testing.T) {
	t.Parallel()
	const key = "stuck-key"
	_, dst, r, _ := migrated(t, key)
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	res, err := r.Do(ctx, key, put(key, "v"))
	if status.Code(err) != codes.FailedPrecondition || route.Classify(err).Kind != route.Moved {
		t.Fatalf("Do: %v, want the SLOT_MOVED answer", err)
	}
	if msg := status.Convert(err).Message(); !strings.Contains(msg, "n2") || !strings.Contains(msg, dst.Addr()) {
		t.Fatalf("error %q does not name the destination n2 at %s", msg, dst.Addr())
	}
	if res.Attempts <= 6 {
		t.Fatalf("%d attempts, want retries until the deadline (more than the 5 refreshes of old)", res.Attempts)
	}
}

// TestRetriedAnswers: frozen slots wait and are retried on the same node,
// unavailable answers and a node still to install its first topology too;
// answers about the request are relayed at once.
func TestRetriedAnswers(t *testing.T) {
	t.Parallel()
	frozen := &rpcerr.SlotFrozenError{Slot: 1, RetryAfter: 2 * time.Millisecond}
	tests := []struct {
		name         string
		answers      []error // then nil
		wantCode     codes.Code
		wantAttempts int
	}{
		{"frozen", []error{frozen, frozen, frozen}, codes.OK, 4},
		{"frozen without RetryInfo", []error{fmt.Errorf("%w: slot 1", rpcerr.ErrSlotFrozen)}, codes.OK, 2},
		{"not served yet", []error{fmt.Errorf("%w: importing", rpcerr.ErrUnavailable), frozen}, codes.OK, 3},
		{"no topology on the node yet", []error{fmt.Errorf("%w: node n1", rpcerr.ErrNoTopology), fmt.Errorf("%w: node n1", rpcerr.ErrNoTopology)}, codes.OK, 3},
		{"not found", []error{rpcerr.ErrNotFound}, codes.NotFound, 1},
		{"stale topology", []error{rpcerr.ErrStaleTopology}, codes.FailedPrecondition, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n := startFake(t, "n1")
			topo, err := topology.Even(1, []topology.Node{n.node()})
			if err != nil {
				t.Fatal(err)
			}
			n.topo.Store(topo)
			st := topoStore(t, topo)
			var calls atomic.Int64
			n.setPut(func([]byte) error {
				if i := int(calls.Add(1)); i <= len(tc.answers) {
					return tc.answers[i-1]
				}
				return nil
			})
			r := fastRouter(t, st, nil)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			res, err := r.Do(ctx, "k", put("k", "v"))
			if status.Code(err) != tc.wantCode || res.Attempts != tc.wantAttempts {
				t.Fatalf("Do: %v after %d attempts, want %v after %d", err, res.Attempts, tc.wantCode, tc.wantAttempts)
			}
		})
	}
}

// TestReconnectAfterRestart: a node that was down long enough for gRPC's
// connect backoff to grow past the call's deadline comes back on the same
// address. The first call after that succeeds within a deadline shorter
// than the backoff: the failed attempt resets the connection's backoff
// (pkg/dial), so the retry connects again. Without the reset (a bare
// connection with the same backoff) the same call fails.
func TestReconnectAfterRestart(t *testing.T) {
	t.Parallel()
	// A connect backoff of 30s stands for the one a long outage leaves.
	longBackoff := grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 30 * time.Second, Multiplier: 1, MaxDelay: 30 * time.Second},
		MinConnectTimeout: 20 * time.Second,
	})
	tests := []struct {
		name   string
		dialer func(addr string) (*grpc.ClientConn, error)
		wantOK bool
	}{
		{"pkg/dial", func(addr string) (*grpc.ClientConn, error) {
			return dial.New(addr, dial.Options{DialOptions: []grpc.DialOption{longBackoff}})
		}, true},
		{"without the reset", func(addr string) (*grpc.ClientConn, error) {
			return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), longBackoff)
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n := startFake(t, "n1")
			topo, err := topology.Even(1, []topology.Node{n.node()})
			if err != nil {
				t.Fatal(err)
			}
			n.topo.Store(topo)
			r := fastRouter(t, topoStore(t, topo), tc.dialer)
			do := func(d time.Duration) (route.Result, error) {
				ctx, cancel := context.WithTimeout(t.Context(), d)
				defer cancel()
				return r.Do(ctx, "k", put("k", "v"))
			}
			if _, err := do(10 * time.Second); err != nil {
				t.Fatalf("put before the outage: %v", err)
			}
			n.Stop()
			if _, err := do(300 * time.Millisecond); status.Code(err) != codes.Unavailable {
				t.Fatalf("put while the node is down: %v, want Unavailable", err)
			}
			n.Restart()
			res, err := do(3 * time.Second)
			if tc.wantOK && err != nil {
				t.Fatalf("put after the node is back: %v after %d attempts", err, res.Attempts)
			}
			if !tc.wantOK && status.Code(err) != codes.Unavailable {
				t.Fatalf("put after the node is back, without the reset: %v, want Unavailable (the test shows nothing)", err)
			}
		})
	}
}
