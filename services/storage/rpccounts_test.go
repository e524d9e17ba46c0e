package storage_test

import (
	"testing"

	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/services/storage/internal/store/storetest"
)

// TestRPCCounts: GetNodeInfo.rpc_counts counts every StorageService call
// by method, refused ones included, and no NodeService call.
func TestRPCCounts(t *testing.T) {
	t.Parallel()
	n := startNode(t, testOptions(t, "a"))
	ctx := ctxT(t)
	counts := func() map[string]uint64 {
		t.Helper()
		info, err := n.admin.GetNodeInfo(ctx, &storagev1.GetNodeInfoRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return info.GetRpcCounts()
	}
	before := counts()
	for _, m := range []string{"Get", "Put", "Delete", "BatchGet", "BatchWrite", "Scan", "Count", "Digest", "Update", "FlushSlots"} {
		if v, ok := before[m]; !ok || v != 0 {
			t.Errorf("rpc_counts[%s] = %d (present %v) before any call, want 0 and present", m, v, ok)
		}
	}
	// Refused: no topology yet.
	if _, err := n.data.Get(ctx, &storagev1.GetRequest{Key: []byte("k")}); err == nil {
		t.Fatal("Get without a topology succeeded")
	}
	// Refused: invalid.
	if _, err := n.data.Put(ctx, &storagev1.PutRequest{}); err == nil {
		t.Fatal("Put of an empty key succeeded")
	}
	n.ownAll(t)
	k := storetest.KeyInSlot(7, "k")
	for range 3 {
		if _, err := n.data.Put(ctx, &storagev1.PutRequest{Key: k, Value: []byte("v")}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := n.data.BatchGet(ctx, &storagev1.BatchGetRequest{Keys: [][]byte{k}}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.data.Count(ctx, &storagev1.CountRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.data.Update(ctx, &storagev1.UpdateRequest{Key: k, Op: storagev1.UpdateOp_UPDATE_OP_APPEND, Value: []byte("w")}); err != nil {
		t.Fatal(err)
	}
	got := counts()
	want := map[string]uint64{"Get": 1, "Put": 4, "BatchGet": 1, "Count": 1, "Update": 1, "Delete": 0, "BatchWrite": 0, "Scan": 0, "Digest": 0, "FlushSlots": 0}
	for m, w := range want {
		if got[m] != w {
			t.Errorf("rpc_counts[%s] = %d, want %d (all: %v)", m, got[m], w, got)
		}
	}
	for m := range got {
		if _, ok := want[m]; !ok {
			t.Errorf("rpc_counts has %q, not a StorageService method", m)
		}
	}
}
