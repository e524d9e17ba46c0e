package storage_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/etcdtest"
	"github.com/slotkv/slotkv/pkg/server"
	"github.com/slotkv/slotkv/pkg/topology"
	"github.com/slotkv/slotkv/pkg/topostore"
	"github.com/slotkv/slotkv/services/storage"
)

// testNode is a storage node running in process through storage.Run on
// 127.0.0.1:0, with a client connection through pkg/dial.
type testNode struct {
	opts     storage.Options
	grpcAddr string
	httpAddr string
	conn     *grpc.ClientConn
	data     storagev1.StorageServiceClient
	admin    storagev1.NodeServiceClient
	mig      storagev1.MigrationServiceClient
	stopOnce sync.Once
	stopErr  error
	cancel   context.CancelFunc
	runErr   chan error
}

// controlPlanes holds the etcd of each running test (testing.TB ->
// *etcdCluster): the nodes one test starts share it, as a cluster's nodes
// share theirs.
var controlPlanes sync.Map

// controlPlane is t's etcd with a topology store on it, started on first
// use and stopped when t ends.
func controlPlane(t testing.TB) *etcdCluster {
	t.Helper()
	if c, ok := controlPlanes.Load(t); ok {
		return c.(*etcdCluster)
	}
	e := etcdtest.Start(t)
	st, err := topostore.New(e.Client(t), topostore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := &etcdCluster{etcd: e, st: st}
	controlPlanes.Store(t, c)
	t.Cleanup(func() { controlPlanes.Delete(t) })
	return c
}

// testOptions returns options for a node with small Badger buffers, so
// many nodes fit in one parallel test run, following the topology in t's
// etcd (controlPlane), as every node does.
func testOptions(t testing.TB, id string) storage.Options {
	c := controlPlane(t)
	o := storage.DefaultOptions()
	o.Etcd = server.Etcd{Endpoints: c.etcd.Endpoints(), DialTimeout: 2 * time.Second}
	o.EtcdLeaseTTL = 2 * time.Second
	o.NodeID = id
	o.DataDir = t.TempDir()
	o.GRPCAddr, o.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	o.MemTableBytes, o.BlockCacheBytes = 4<<20, 4<<20
	o.ShutdownTimeout = 5 * time.Second
	o.Logger = slog.New(slog.DiscardHandler) // failures report through t
	return o
}

// startNode runs a node and stops it when the test ends.
func startNode(t testing.TB, o storage.Options) *testNode {
	t.Helper()
	n, err := tryStart(t, o)
	if err != nil {
		t.Fatalf("start node %s: %v", o.NodeID, err)
	}
	return n
}

// tryStart runs a node and returns Run's error if it fails to start.
func tryStart(t testing.TB, o storage.Options) (*testNode, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n := &testNode{opts: o, cancel: cancel, runErr: make(chan error, 1)}
	bound := make(chan [2]net.Addr, 1)
	o.OnListen = func(g, h net.Addr) { bound <- [2]net.Addr{g, h} }
	go func() { n.runErr <- storage.Run(ctx, o) }()
	select {
	case a := <-bound:
		n.grpcAddr, n.httpAddr = a[0].String(), a[1].String()
	case err := <-n.runErr:
		cancel()
		return nil, err
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("node did not start listening within 30s")
	}
	conn, err := dial.New(n.grpcAddr, dial.Options{Token: o.Tokens.Admin})
	if err != nil {
		t.Fatal(err)
	}
	n.conn = conn
	n.data = storagev1.NewStorageServiceClient(conn)
	n.admin = storagev1.NewNodeServiceClient(conn)
	n.mig = storagev1.NewMigrationServiceClient(conn)
	t.Cleanup(func() {
		if err := n.stop(); err != nil {
			t.Errorf("node %s: Run returned %v", o.NodeID, err)
		}
	})
	return n, nil
}

// stop cancels Run and waits for it to return (store closed).
func (n *testNode) stop() error {
	n.stopOnce.Do(func() {
		n.conn.Close()
		n.cancel()
		select {
		case n.stopErr = <-n.runErr:
		case <-time.After(30 * time.Second):
			n.stopErr = errors.New("Run did not return within 30s of cancel")
		}
	})
	return n.stopErr
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// topo builds a topology of nodes (id -> grpc address) and assignments
// (id -> ranges).
func topo(version uint64, nodes map[string]string, assign map[string][][2]uint32) *clusterv1.Topology {
	p := &clusterv1.Topology{Version: version}
	for id, addr := range nodes {
		p.Nodes = append(p.Nodes, &clusterv1.Node{Id: id, GrpcAddress: addr})
	}
	for id, rs := range assign {
		a := &clusterv1.Assignment{NodeId: id}
		for _, r := range rs {
			a.Ranges = append(a.Ranges, &clusterv1.SlotRange{Start: r[0], End: r[1]})
		}
		p.Assignments = append(p.Assignments, a)
	}
	return p
}

// setTopology stores p in the etcd n follows (bootstrapped, or committed
// over the older version stored; the version stored already is accepted
// only if identical, so the nodes of one test can each be given the same
// topology) and returns once n holds it. A commit carries the hand-off
// record of each job of handoffs, as the migrator's does.
func (n *testNode) setTopology(t testing.TB, p *clusterv1.Topology, handoffs ...string) {
	t.Helper()
	ctx := ctxT(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: n.opts.Etcd.Endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	st, err := topostore.New(cli, topostore.Options{Prefix: n.opts.Etcd.Prefix})
	if err != nil {
		t.Fatal(err)
	}
	want, err := topology.FromProto(p)
	if err != nil {
		t.Fatalf("topology v%d: %v", p.GetVersion(), err)
	}
	cur, err := st.Load(ctx)
	switch {
	case errors.Is(err, topostore.ErrNotBootstrapped):
		if _, _, err := st.Bootstrap(ctx, want); err != nil {
			t.Fatalf("bootstrap v%d in etcd: %v", p.GetVersion(), err)
		}
	case err != nil:
		t.Fatalf("load the topology from etcd: %v", err)
	case cur.Version() == want.Version():
		if !proto.Equal(cur.Proto(), want.Proto()) {
			t.Fatalf("etcd holds another topology v%d: %v, want %v", cur.Version(), cur.Proto(), want.Proto())
		}
	default:
		var ops []clientv3.Op
		for _, job := range handoffs {
			ops = append(ops, clientv3.OpPut(st.HandoffKey(job), strconv.FormatUint(want.Version(), 10)))
		}
		if err := st.CommitIf(ctx, nil, cur.Version(), want, ops...); err != nil {
			t.Fatalf("commit v%d over v%d in etcd: %v", want.Version(), cur.Version(), err)
		}
	}
	n.waitVersion(t, want.Version())
}

// waitServes waits until n answers a read of key with anything but
// Unavailable: a destination serves imported slots once it holds both the
// topology and the hand-off record committed with it, which it watches
// apart.
func (n *testNode) waitServes(t testing.TB, key []byte) {
	t.Helper()
	eventually(t, fmt.Sprintf("node %s serves %q", n.opts.NodeID, key), func() error {
		if _, err := n.data.Get(ctxT(t), &storagev1.GetRequest{Key: key}); status.Code(err) == codes.Unavailable {
			return err
		}
		return nil
	})
}

// ownAll gives n every slot.
func (n *testNode) ownAll(t testing.TB) {
	t.Helper()
	n.setTopology(t, topo(1, map[string]string{n.opts.NodeID: n.grpcAddr}, map[string][][2]uint32{n.opts.NodeID: {{0, 16383}}}))
}

// wantStatus checks the gRPC code of err and that its message contains
// every fragment.
func wantStatus(t *testing.T, err error, code codes.Code, fragments ...string) *status.Status {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != code {
		t.Fatalf("err = %v, want code %v", err, code)
	}
	for _, f := range fragments {
		if !strings.Contains(st.Message(), f) {
			t.Errorf("message %q does not contain %q", st.Message(), f)
		}
	}
	return st
}

// wantField checks err is InvalidArgument with a BadRequest naming field and
// a message containing the fragments.
func wantField(t *testing.T, err error, field string, fragments ...string) {
	t.Helper()
	st := wantStatus(t, err, codes.InvalidArgument, fragments...)
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				if v.GetField() == field {
					return
				}
			}
			t.Fatalf("field violations %v do not name %q", br.GetFieldViolations(), field)
		}
	}
	t.Fatalf("no BadRequest detail in %v", st.Proto())
}

// errorInfo returns the ErrorInfo detail of err.
func errorInfo(t *testing.T, err error) *errdetails.ErrorInfo {
	t.Helper()
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			return ei
		}
	}
	t.Fatalf("no ErrorInfo in %v", err)
	return nil
}
