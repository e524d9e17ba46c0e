package testcluster_test

import (
	"context"
	"testing"
	"time"

	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/testcluster"
)

// TestControlPlane: a cluster started without Options.Etcd runs its own;
// Bootstrap and SetTopology commit there, and return only once every node
// holds the version (read back from etcd and from each node).
func TestControlPlane(t *testing.T) {
	t.Parallel()
	c := testcluster.Start(t, 2, testcluster.Options{})
	if c.Etcd() == nil || c.Store() == nil {
		t.Fatal("a cluster without Options.Etcd has no control plane")
	}
	if args := c.EtcdArgs(); len(args) != 2 || args[0] != "--etcd-endpoints" || args[1] != c.Etcd().Endpoint {
		t.Errorf("EtcdArgs = %v, want --etcd-endpoints %s", args, c.Etcd().Endpoint)
	}
	if env := c.EtcdEnv(); len(env) != 1 || env[0] != "SLOTKV_ETCD_ENDPOINTS="+c.Etcd().Endpoint {
		t.Errorf("EtcdEnv = %v", env)
	}

	v1 := c.Bootstrap(t)
	moved := v1.RangesOf("n2")[0].Start
	v2 := testcluster.Move(t, v1, moved, "n1")
	c.SetTopology(t, v2)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stored, err := c.Store().Load(ctx)
	if err != nil || !stored.Equal(v2) {
		t.Fatalf("etcd holds %v, %v; want version %d", stored, err, v2.Version())
	}
	for _, n := range c.Nodes {
		resp, err := n.NodeClient().GetTopology(ctx, &storagev1.GetTopologyRequest{})
		if err != nil || resp.GetTopology().GetVersion() != v2.Version() {
			t.Errorf("%s holds %v, %v; want version %d", n.ID, resp.GetTopology(), err, v2.Version())
		}
	}
	if owner, _ := v2.Owner(moved); owner.ID != "n1" {
		t.Errorf("slot %d belongs to %q in version %d, want n1", moved, owner.ID, v2.Version())
	}
}
