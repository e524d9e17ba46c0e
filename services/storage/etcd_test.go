package storage_test

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/etcdtest"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/topology"
	"github.com/slotkv/slotkv/pkg/topostore"
	"github.com/slotkv/slotkv/services/storage"
)

// etcdCluster is a real etcd with a topology store on it, for nodes started
// with --etcd-endpoints.
type etcdCluster struct {
	etcd *etcdtest.Etcd
	st   *topostore.Store
}

// startEtcd is t's control plane (the one testOptions points nodes at).
func startEtcd(t *testing.T) *etcdCluster {
	t.Helper()
	return controlPlane(t)
}

// options are testOptions: the control plane is this etcd.
func (c *etcdCluster) options(t *testing.T, id string) storage.Options {
	return testOptions(t, id)
}

func mustTopo(t *testing.T, p *clusterv1.Topology) *topology.Topology {
	t.Helper()
	tp, err := topology.FromProto(p)
	if err != nil {
		t.Fatal(err)
	}
	return tp
}

// commit replaces the stored version expect with p.
func (c *etcdCluster) commit(t *testing.T, expect uint64, p *clusterv1.Topology) {
	t.Helper()
	if err := c.st.Commit(ctxT(t), expect, mustTopo(t, p)); err != nil {
		t.Fatalf("commit version %d: %v", p.GetVersion(), err)
	}
}

// eventually polls cond until it returns nil, failing with its last error
// after 20 s.
func eventually(t testing.TB, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (n *testNode) waitVersion(t testing.TB, v uint64) {
	t.Helper()
	eventually(t, fmt.Sprintf("node %s holds topology version %d", n.opts.NodeID, v), func() error {
		resp, err := n.admin.GetTopology(ctxT(t), &storagev1.GetTopologyRequest{})
		if err != nil {
			return err
		}
		if got := resp.GetTopology().GetVersion(); got < v {
			return fmt.Errorf("holds version %d", got)
		}
		return nil
	})
}

// keyIn returns a key whose slot is in [from, to].
func keyIn(from, to uint16) []byte {
	for i := 0; ; i++ {
		k := fmt.Sprintf("k%d", i)
		if s := slot.OfString(k); s >= from && s <= to {
			return []byte(k)
		}
	}
}

func (n *testNode) getErr(t *testing.T, key []byte) ([]byte, error) {
	resp, err := n.data.Get(ctxT(t), &storagev1.GetRequest{Key: key})
	return resp.GetValue(), err
}

func TestEtcdTopology(t *testing.T) {
	t.Parallel()
	c := startEtcd(t)
	n := startNode(t, c.options(t, "a"))
	nodes := map[string]string{"a": n.grpcAddr}
	if _, _, err := c.st.Bootstrap(ctxT(t), mustTopo(t, topo(1, nodes, map[string][][2]uint32{"a": {{0, 8191}}}))); err != nil {
		t.Fatal(err)
	}
	n.waitVersion(t, 1)
	lo, hi := keyIn(0, 8191), keyIn(8192, 16383)
	n.put(t, lo, []byte("v"))
	if _, err := n.getErr(t, hi); err == nil {
		t.Fatalf("slot %d served before the topology assigns it", slot.Of(hi))
	}
	c.commit(t, 1, topo(2, nodes, map[string][][2]uint32{"a": {{0, 16383}}}))
	n.waitVersion(t, 2)
	n.put(t, hi, []byte("w"))
}

func TestEtcdRegistration(t *testing.T) {
	t.Parallel()
	c := startEtcd(t)
	o := c.options(t, "a")
	o.RESPAddr = "127.0.0.1:0"
	n := startNode(t, o)
	var reg *clusterv1.Node
	eventually(t, "node a registered", func() error {
		ns, err := c.st.Nodes(ctxT(t))
		if err != nil {
			return err
		}
		if len(ns) != 1 {
			return fmt.Errorf("registered: %v", ns)
		}
		reg = ns[0]
		return nil
	})
	info, err := n.admin.GetNodeInfo(ctxT(t), &storagev1.GetNodeInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want := info.GetNode()
	if reg.GetId() != "a" || reg.GetGrpcAddress() != want.GetGrpcAddress() || reg.GetHttpAddress() != want.GetHttpAddress() ||
		reg.GetRespAddress() != want.GetRespAddress() || want.GetRespAddress() == "" {
		t.Fatalf("registered %v, want the node's own %v", reg, want)
	}
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	// The lease is revoked when the node stops, not a TTL later: the
	// listing right after Run returned no longer has it.
	ns, err := c.st.Nodes(ctxT(t))
	if err != nil || len(ns) != 0 {
		t.Fatalf("after stop: Nodes = %v, %v; want none", ns, err)
	}
}

// TestEtcdHandshake: the destination does not serve slots a new topology
// assigns to it until the source's hand-off record exists in etcd.
func TestEtcdHandshake(t *testing.T) {
	t.Parallel()
	c := startEtcd(t)
	// The source follows its own cluster (another prefix in the etcd) that
	// the test drives; the test writes the record that the migrator would
	// commit with the topology.
	so := testOptions(t, "a")
	so.Etcd.Prefix = "/source-only/"
	src := startNode(t, so)
	dst := startNode(t, c.options(t, "b"))
	nodes := map[string]string{"a": src.grpcAddr, "b": dst.grpcAddr}
	t1 := topo(1, nodes, map[string][][2]uint32{"a": {{0, 8191}}, "b": {{8192, 16383}}})
	src.setTopology(t, t1)
	if _, _, err := c.st.Bootstrap(ctxT(t), mustTopo(t, t1)); err != nil {
		t.Fatal(err)
	}
	dst.waitVersion(t, 1)
	const job = "j1"
	if err := dst.begin(t, job, dstRole, "a", 1, sr(100, 199)); err != nil {
		t.Fatal(err)
	}
	key := keyIn(100, 199)
	c.commit(t, 1, topo(2, nodes, map[string][][2]uint32{"a": {{0, 99}, {200, 8191}}, "b": {{100, 199}, {8192, 16383}}}))
	dst.waitVersion(t, 2)
	// Held: the topology assigns the slots, the handshake is missing.
	if _, err := dst.getErr(t, key); err == nil {
		t.Fatal("destination serves an imported slot before the hand-off record")
	} else {
		wantStatus(t, err, codes.Unavailable, "IMPORTING", "not served yet")
	}
	_, err := dst.mig.EndMigration(ctxT(t), &storagev1.EndMigrationRequest{JobId: job, Outcome: commit})
	wantStatus(t, err, codes.FailedPrecondition, "is not recorded in etcd yet")

	if err := c.st.RecordHandoff(ctxT(t), job, 2); err != nil {
		t.Fatal(err)
	}
	eventually(t, "destination serves the slot after the hand-off record", func() error {
		// Never written: served means NotFound, not a refusal.
		if _, err := dst.getErr(t, key); statusCode(err) != codes.NotFound {
			return fmt.Errorf("Get = %v, want NotFound", err)
		}
		return nil
	})
	if _, err := dst.mig.EndMigration(ctxT(t), &storagev1.EndMigrationRequest{JobId: job, Outcome: commit}); err != nil {
		t.Fatalf("EndMigration COMMITTED after the hand-off: %v", err)
	}
	dst.put(t, key, []byte("v"))
}

// TestEtcdFrozenSource: a FROZEN source serves nothing of the job's slots,
// reads included, across a restart too, since the migrator commits the
// hand-off record with the topology; once it installs the commit it sends
// callers to the destination, and the job ends COMMITTED there.
func TestEtcdFrozenSource(t *testing.T) {
	t.Parallel()
	c := startEtcd(t)
	o := c.options(t, "a")
	src := startNode(t, o)
	nodes := map[string]string{"a": src.grpcAddr, "b": "127.0.0.1:1"}
	if _, _, err := c.st.Bootstrap(ctxT(t), mustTopo(t, topo(1, nodes, map[string][][2]uint32{"a": {{0, 16383}}}))); err != nil {
		t.Fatal(err)
	}
	src.waitVersion(t, 1)
	const job = "j1"
	key := keyIn(100, 199)
	src.put(t, key, []byte("v"))
	if err := src.begin(t, job, srcRole, "b", 1, sr(100, 199)); err != nil {
		t.Fatal(err)
	}
	if v, err := src.getErr(t, key); err != nil || string(v) != "v" {
		t.Fatalf("MIGRATING read = %q, %v", v, err)
	}
	if _, err := src.mig.Freeze(ctxT(t), &storagev1.FreezeRequest{JobId: job}); err != nil {
		t.Fatal(err)
	}
	_, err := src.getErr(t, key)
	wantStatus(t, err, codes.Unavailable, "frozen")
	if err := src.stop(); err != nil {
		t.Fatal(err)
	}
	src2 := startNode(t, o)
	_, err = src2.getErr(t, key)
	wantStatus(t, err, codes.Unavailable, "frozen")
	c.commit(t, 1, topo(2, nodes, map[string][][2]uint32{"a": {{0, 99}, {200, 16383}}, "b": {{100, 199}}}))
	src2.waitVersion(t, 2)
	_, err = src2.getErr(t, key)
	wantStatus(t, err, codes.FailedPrecondition, "moved")
	if _, err := src2.mig.EndMigration(ctxT(t), &storagev1.EndMigrationRequest{JobId: job, Outcome: commit}); err != nil {
		t.Fatalf("EndMigration COMMITTED on the source: %v", err)
	}
}

// TestEtcdDown: with etcd stopped the node keeps serving, a restart serves
// from disk, and the node registers again once etcd is back.
func TestEtcdDown(t *testing.T) {
	t.Parallel()
	c := startEtcd(t)
	o := c.options(t, "a")
	n := startNode(t, o)
	nodes := map[string]string{"a": n.grpcAddr}
	if _, _, err := c.st.Bootstrap(ctxT(t), mustTopo(t, topo(1, nodes, map[string][][2]uint32{"a": {{0, 16383}}}))); err != nil {
		t.Fatal(err)
	}
	n.waitVersion(t, 1)
	key := keyIn(0, 16383)
	n.put(t, key, []byte("v1"))
	// Killed: a graceful stop waits for the node's watches to drain.
	c.etcd.Kill()
	n.put(t, key, []byte("v2"))
	if v, err := n.getErr(t, key); err != nil || string(v) != "v2" {
		t.Fatalf("with etcd down: Get = %q, %v", v, err)
	}
	// Restart on the same data directory while etcd is down.
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	n2 := startNode(t, o)
	if v, err := n2.getErr(t, key); err != nil || string(v) != "v2" {
		t.Fatalf("restarted with etcd down: Get = %q, %v", v, err)
	}
	n2.put(t, key, []byte("v3"))
	c.etcd.Restart()
	eventually(t, "node registered again after etcd is back", func() error {
		ns, err := c.st.Nodes(ctxT(t))
		if err != nil {
			return err
		}
		if len(ns) != 1 || ns[0].GetGrpcAddress() != n2.grpcAddr {
			return fmt.Errorf("registered: %v", ns)
		}
		return nil
	})
	// And follows etcd again.
	c.commit(t, 1, topo(2, map[string]string{"a": n2.grpcAddr}, map[string][][2]uint32{"a": {{0, 16383}}}))
	n2.waitVersion(t, 2)
}
