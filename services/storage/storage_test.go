package storage_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/digest"
	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/pkg/server"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/services/storage"
	"github.com/slotkv/slotkv/services/storage/internal/node"
	"github.com/slotkv/slotkv/services/storage/internal/store/storetest"
)

func TestGetPutDelete(t *testing.T) {
	t.Parallel()
	n := startNode(t, testOptions(t, "n1"))
	n.ownAll(t)
	ctx := ctxT(t)
	key := []byte("{user1000}.name")
	want := uint32(slot.Of(key))

	_, err := n.data.Get(ctx, &storagev1.GetRequest{Key: key})
	wantStatus(t, err, codes.NotFound, "not found")

	put, err := n.data.Put(ctx, &storagev1.PutRequest{Key: key, Value: []byte("ada")})
	if err != nil || put.GetSlot() != want {
		t.Fatalf("Put = %v, %v; want slot %d", put, err, want)
	}
	got, err := n.data.Get(ctx, &storagev1.GetRequest{Key: key})
	if err != nil || string(got.GetValue()) != "ada" || got.GetSlot() != want {
		t.Fatalf("Get = %v, %v", got, err)
	}
	del, err := n.data.Delete(ctx, &storagev1.DeleteRequest{Key: key})
	if err != nil || del.GetSlot() != want {
		t.Fatalf("Delete = %v, %v", del, err)
	}
	_, err = n.data.Get(ctx, &storagev1.GetRequest{Key: key})
	wantStatus(t, err, codes.NotFound)
	if _, err := n.data.Delete(ctx, &storagev1.DeleteRequest{Key: key}); err != nil {
		t.Errorf("Delete of an absent key: %v", err)
	}
	// A value at the limit goes through (the gRPC message limit is not the
	// bottleneck).
	big := bytes.Repeat([]byte("x"), storage.DefaultMaxValueBytes)
	if _, err := n.data.Put(ctx, &storagev1.PutRequest{Key: []byte("big"), Value: big}); err != nil {
		t.Fatalf("Put of a %d-byte value: %v", len(big), err)
	}
	if got, err := n.data.Get(ctx, &storagev1.GetRequest{Key: []byte("big")}); err != nil || !bytes.Equal(got.GetValue(), big) {
		t.Fatalf("Get of the big value: %d bytes, %v", len(got.GetValue()), err)
	}
}

func TestBatch(t *testing.T) {
	t.Parallel()
	n := startNode(t, testOptions(t, "n1"))
	n.ownAll(t)
	ctx := ctxT(t)
	if _, err := n.data.Put(ctx, &storagev1.PutRequest{Key: []byte("old"), Value: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	_, err := n.data.BatchWrite(ctx, &storagev1.BatchWriteRequest{Mutations: []*storagev1.Mutation{
		{Key: []byte("a"), Value: []byte("1")},
		{Key: []byte("b"), Value: []byte("")},
		{Key: []byte("old"), Delete: true},
	}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := n.data.BatchGet(ctx, &storagev1.BatchGetRequest{Keys: [][]byte{[]byte("old"), []byte("a"), []byte("b"), []byte("zz")}})
	if err != nil {
		t.Fatal(err)
	}
	want := []*storagev1.Item{
		{Key: []byte("old"), Slot: uint32(slot.OfString("old"))},
		{Key: []byte("a"), Value: []byte("1"), Found: true, Slot: uint32(slot.OfString("a"))},
		{Key: []byte("b"), Value: []byte{}, Found: true, Slot: uint32(slot.OfString("b"))},
		{Key: []byte("zz"), Slot: uint32(slot.OfString("zz"))},
	}
	if len(res.GetItems()) != len(want) {
		t.Fatalf("%d items, want %d", len(res.GetItems()), len(want))
	}
	for i := range want {
		if !proto.Equal(res.GetItems()[i], want[i]) {
			t.Errorf("item %d = %v, want %v", i, res.GetItems()[i], want[i])
		}
	}
}

// TestBatchWriteAtomicity: a batch with one bad mutation writes nothing,
// whether the mutation is invalid, names an unowned slot or does not fit.
func TestBatchWriteAtomicity(t *testing.T) {
	t.Parallel()
	o := testOptions(t, "a")
	o.MaxValueBytes = 100
	n := startNode(t, o)
	// a owns 0-8191; 8192-16383 belongs to b.
	n.setTopology(t, topo(1, map[string]string{"a": n.grpcAddr, "b": "b.example:7100"},
		map[string][][2]uint32{"a": {{0, 8191}}, "b": {{8192, 16383}}}))
	ctx := ctxT(t)
	good := func(i int) *storagev1.Mutation {
		return &storagev1.Mutation{Key: storetest.KeyInSlot(uint16(i), "k"), Value: []byte("v")}
	}
	tests := []struct {
		name  string
		bad   *storagev1.Mutation
		check func(t *testing.T, err error)
	}{
		{"empty key", &storagev1.Mutation{Value: []byte("v")}, func(t *testing.T, err error) {
			wantField(t, err, "mutations[1].key", "empty key")
		}},
		{"value too big", &storagev1.Mutation{Key: []byte("k"), Value: make([]byte, 101)}, func(t *testing.T, err error) {
			wantField(t, err, "mutations[1].value", "101 bytes", "--max-value-bytes=100")
		}},
		{"slot moved", &storagev1.Mutation{Key: storetest.KeyInSlot(9000, "k"), Value: []byte("v")}, func(t *testing.T, err error) {
			wantStatus(t, err, codes.FailedPrecondition, "slot 9000")
			if ei := errorInfo(t, err); ei.GetReason() != rpcerr.ReasonSlotMoved {
				t.Errorf("reason %q", ei.GetReason())
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := n.data.BatchWrite(ctx, &storagev1.BatchWriteRequest{Mutations: []*storagev1.Mutation{good(1), tt.bad, good(2)}})
			tt.check(t, err)
			for _, s := range []int{1, 2} {
				_, err := n.data.Get(ctx, &storagev1.GetRequest{Key: good(s).Key})
				wantStatus(t, err, codes.NotFound)
			}
		})
	}

	t.Run("too large for one transaction", func(t *testing.T) {
		var muts []*storagev1.Mutation
		for i := range 8000 { // 8000 x ~110 bytes > 15% of a 4 MiB memtable
			muts = append(muts, &storagev1.Mutation{Key: storetest.KeyInSlot(5, fmt.Sprintf("%05d", i)), Value: bytes.Repeat([]byte("v"), 100)})
		}
		_, err := n.data.BatchWrite(ctx, &storagev1.BatchWriteRequest{Mutations: muts})
		wantField(t, err, "mutations", "batch too large", "8000 mutations")
		c, err := n.data.Count(ctx, &storagev1.CountRequest{Ranges: []*clusterv1.SlotRange{{Start: 0, End: 8191}}})
		if err != nil || c.GetCount() != 0 {
			t.Errorf("Count after refused batch = %v, %v; want 0", c, err)
		}
	})
}

// fill writes perSlot keys into each slot with one BatchWrite and returns
// the expected scan order.
func fill(t *testing.T, n *testNode, slots []uint16, perSlot int) []*storagev1.KeyValue {
	t.Helper()
	var muts []*storagev1.Mutation
	var all []*storagev1.KeyValue
	for _, s := range slots {
		for i := range perSlot {
			k := storetest.KeyInSlot(s, fmt.Sprintf("/%03d", i))
			v := fmt.Appendf(nil, "value %d/%d", s, i)
			muts = append(muts, &storagev1.Mutation{Key: k, Value: v})
			all = append(all, &storagev1.KeyValue{Key: k, Value: v, Slot: uint32(s)})
		}
	}
	rand.Shuffle(len(muts), func(i, j int) { muts[i], muts[j] = muts[j], muts[i] })
	if _, err := n.data.BatchWrite(ctxT(t), &storagev1.BatchWriteRequest{Mutations: muts}); err != nil {
		t.Fatal(err)
	}
	sortKV(all)
	return all
}

func sortKV(kvs []*storagev1.KeyValue) {
	for i := 1; i < len(kvs); i++ {
		for j := i; j > 0 && (kvs[j].Slot < kvs[j-1].Slot || kvs[j].Slot == kvs[j-1].Slot && bytes.Compare(kvs[j].Key, kvs[j-1].Key) < 0); j-- {
			kvs[j], kvs[j-1] = kvs[j-1], kvs[j]
		}
	}
}

func sameKVs(t *testing.T, got, want []*storagev1.KeyValue, keysOnly bool) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d items, want %d", len(got), len(want))
	}
	for i := range want {
		w := want[i]
		if keysOnly {
			w = &storagev1.KeyValue{Key: w.Key, Slot: w.Slot}
		}
		if !proto.Equal(got[i], w) {
			t.Fatalf("item %d = %v, want %v", i, got[i], w)
		}
	}
}

func TestScan(t *testing.T) {
	t.Parallel()
	n := startNode(t, testOptions(t, "n1"))
	n.ownAll(t)
	slots := []uint16{0, 3, 4, 1000, 16383}
	all := fill(t, n, slots, 10)
	full := []*clusterv1.SlotRange{{Start: 0, End: 16383}}
	inSlots := func(lo, hi uint32) []*storagev1.KeyValue {
		var out []*storagev1.KeyValue
		for _, kv := range all {
			if kv.Slot >= lo && kv.Slot <= hi {
				out = append(out, kv)
			}
		}
		return out
	}
	prefix := storetest.KeyInSlot(1000, "/00")
	tests := []struct {
		name     string
		req      *storagev1.ScanRequest
		want     []*storagev1.KeyValue
		complete bool
	}{
		{"everything", &storagev1.ScanRequest{Ranges: full}, all, true},
		{"default ranges are the served ones", &storagev1.ScanRequest{}, all, true},
		{"two ranges", &storagev1.ScanRequest{Ranges: []*clusterv1.SlotRange{{Start: 1000, End: 16383}, {Start: 3, End: 3}}},
			append(inSlots(3, 3), inSlots(1000, 16383)...), true},
		{"prefix", &storagev1.ScanRequest{Ranges: full, Prefix: prefix}, inSlots(1000, 1000)[:10], true},
		{"start", &storagev1.ScanRequest{Ranges: full, Start: &storagev1.ScanPosition{Slot: 4, Key: storetest.KeyInSlot(4, "/005")}},
			append(inSlots(4, 4)[5:], inSlots(5, 16383)...), true},
		{"limit", &storagev1.ScanRequest{Ranges: full, Limit: 7}, all[:7], false},
		{"keys only", &storagev1.ScanRequest{Ranges: full, KeysOnly: true}, all, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res, err := n.data.Scan(ctxT(t), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			sameKVs(t, res.GetItems(), tt.want, tt.req.GetKeysOnly())
			if tt.complete != (res.GetNext() == nil) {
				t.Errorf("next = %v, want complete=%v", res.GetNext(), tt.complete)
			}
		})
	}
	t.Run("continuation across slots", func(t *testing.T) {
		t.Parallel()
		for _, limit := range []uint32{1, 3, 10, 11, 49, 50} {
			req := &storagev1.ScanRequest{Ranges: full, Limit: limit}
			var got []*storagev1.KeyValue
			for pages := 1; ; pages++ {
				res, err := n.data.Scan(ctxT(t), req)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, res.GetItems()...)
				if res.GetNext() == nil {
					if want := (len(all) + int(limit) - 1) / int(limit); pages != want {
						t.Errorf("limit %d: %d pages, want %d", limit, pages, want)
					}
					break
				}
				last := res.GetItems()[len(res.GetItems())-1]
				if res.GetNext().GetSlot() != last.GetSlot() || string(res.GetNext().GetKey()) != string(last.GetKey())+"\x00" {
					t.Fatalf("next = %v, want last key + NUL in slot %d", res.GetNext(), last.GetSlot())
				}
				if pages > len(all) {
					t.Fatal("scan does not end")
				}
				req.Start = res.GetNext()
			}
			sameKVs(t, got, all, false)
		}
	})
}

func TestCountAndDigest(t *testing.T) {
	t.Parallel()
	// Two clusters (two prefixes in the etcd), each node owning every slot.
	ob := testOptions(t, "b")
	ob.Etcd.Prefix = "/b/"
	a, b := startNode(t, testOptions(t, "a")), startNode(t, ob)
	a.ownAll(t)
	b.ownAll(t)
	ctx := ctxT(t)
	var muts []*storagev1.Mutation
	for i := range 500 {
		muts = append(muts, &storagev1.Mutation{Key: []byte("key-" + strconv.Itoa(i)), Value: []byte("value-" + strconv.Itoa(i))})
	}
	// Same data, different orders: one batch forwards, single puts backwards.
	if _, err := a.data.BatchWrite(ctx, &storagev1.BatchWriteRequest{Mutations: muts}); err != nil {
		t.Fatal(err)
	}
	for i := len(muts) - 1; i >= 0; i-- {
		if _, err := b.data.Put(ctx, &storagev1.PutRequest{Key: muts[i].Key, Value: muts[i].Value}); err != nil {
			t.Fatal(err)
		}
	}
	full := []*clusterv1.SlotRange{{Start: 0, End: 16383}}
	for _, n := range []*testNode{a, b} {
		c, err := n.data.Count(ctx, &storagev1.CountRequest{Ranges: full})
		if err != nil || c.GetCount() != 500 {
			t.Fatalf("Count = %v, %v; want 500", c, err)
		}
	}
	half, err := a.data.Count(ctx, &storagev1.CountRequest{Ranges: []*clusterv1.SlotRange{{Start: 0, End: 8191}}})
	if err != nil {
		t.Fatal(err)
	}
	other, err := a.data.Count(ctx, &storagev1.CountRequest{Ranges: []*clusterv1.SlotRange{{Start: 8192, End: 16383}}})
	if err != nil || half.GetCount()+other.GetCount() != 500 || half.GetCount() == 0 {
		t.Fatalf("halves count %d + %d, want 500 (%v)", half.GetCount(), other.GetCount(), err)
	}

	da, err := a.data.Digest(ctx, &storagev1.DigestRequest{Ranges: full, PerSlot: true})
	if err != nil {
		t.Fatal(err)
	}
	db, err := b.data.Digest(ctx, &storagev1.DigestRequest{Ranges: full})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(da.GetDigest(), db.GetDigest()) || da.GetCount() != 500 || len(da.GetDigest()) != digest.DigestSize {
		t.Fatalf("digests differ for the same data: %x (%d) vs %x (%d)", da.GetDigest(), da.GetCount(), db.GetDigest(), db.GetCount())
	}
	if len(db.GetSlots()) != 0 {
		t.Errorf("per-slot digests returned without per_slot")
	}
	// Per-slot digests combine (lane-wise sums) to the total.
	var lanes [digest.DigestSize / 8]uint64
	var count uint64
	for _, sd := range da.GetSlots() {
		for i := range lanes {
			lanes[i] += leUint64(sd.GetDigest()[8*i:])
		}
		count += sd.GetCount()
	}
	for i := range lanes {
		if lanes[i] != leUint64(da.GetDigest()[8*i:]) {
			t.Fatalf("lane %d of the combined per-slot digests differs from the total", i)
		}
	}
	if count != 500 {
		t.Errorf("per-slot counts sum to %d", count)
	}

	if _, err := b.data.Put(ctx, &storagev1.PutRequest{Key: []byte("key-7"), Value: []byte("changed")}); err != nil {
		t.Fatal(err)
	}
	db2, err := b.data.Digest(ctx, &storagev1.DigestRequest{Ranges: full})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(db2.GetDigest(), da.GetDigest()) {
		t.Error("digest unchanged after a value changed")
	}
}

func leUint64(b []byte) uint64 {
	var v uint64
	for i := 7; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

func TestValidation(t *testing.T) {
	t.Parallel()
	o := testOptions(t, "n1")
	o.MaxKeyBytes, o.MaxValueBytes, o.MaxBatch = 64, 128, 5
	n := startNode(t, o)
	n.ownAll(t)
	long := bytes.Repeat([]byte("k"), 65)
	tests := []struct {
		name      string
		call      func() error
		field     string
		fragments []string
	}{
		{"get empty key", func() error { _, err := n.data.Get(ctxT(t), &storagev1.GetRequest{}); return err }, "key", []string{"empty key"}},
		{"put empty key", func() error { _, err := n.data.Put(ctxT(t), &storagev1.PutRequest{Value: []byte("v")}); return err }, "key", nil},
		{"delete empty key", func() error { _, err := n.data.Delete(ctxT(t), &storagev1.DeleteRequest{}); return err }, "key", nil},
		{"key too long", func() error { _, err := n.data.Put(ctxT(t), &storagev1.PutRequest{Key: long}); return err },
			"key", []string{"65 bytes", "--max-key-bytes=64"}},
		{"value too long", func() error {
			_, err := n.data.Put(ctxT(t), &storagev1.PutRequest{Key: []byte("k"), Value: make([]byte, 129)})
			return err
		}, "value", []string{"129 bytes", "--max-value-bytes=128"}},
		{"batch get empty key", func() error {
			_, err := n.data.BatchGet(ctxT(t), &storagev1.BatchGetRequest{Keys: [][]byte{[]byte("a"), nil}})
			return err
		}, "keys[1]", []string{"empty key"}},
		{"batch get key too long", func() error {
			_, err := n.data.BatchGet(ctxT(t), &storagev1.BatchGetRequest{Keys: [][]byte{long}})
			return err
		}, "keys[0]", []string{"--max-key-bytes=64"}},
		{"batch get too many keys", func() error {
			_, err := n.data.BatchGet(ctxT(t), &storagev1.BatchGetRequest{Keys: make([][]byte, 6)})
			return err
		}, "keys", []string{"6 entries", "--max-batch=5"}},
		{"batch write empty key", func() error {
			_, err := n.data.BatchWrite(ctxT(t), &storagev1.BatchWriteRequest{Mutations: []*storagev1.Mutation{{Key: []byte("a")}, {Key: []byte("b")}, {}}})
			return err
		}, "mutations[2].key", []string{"empty key"}},
		{"batch write too many", func() error {
			_, err := n.data.BatchWrite(ctxT(t), &storagev1.BatchWriteRequest{Mutations: make([]*storagev1.Mutation, 6)})
			return err
		}, "mutations", []string{"--max-batch=5"}},
		{"delete with a value", func() error {
			_, err := n.data.BatchWrite(ctxT(t), &storagev1.BatchWriteRequest{Mutations: []*storagev1.Mutation{{Key: []byte("a"), Value: []byte("v"), Delete: true}}})
			return err
		}, "mutations[0].value", nil},
		{"scan reversed range", func() error {
			_, err := n.data.Scan(ctxT(t), &storagev1.ScanRequest{Ranges: []*clusterv1.SlotRange{{Start: 0, End: 1}, {Start: 9, End: 8}}})
			return err
		}, "ranges[1]", []string{"9-8"}},
		{"scan slot out of range", func() error {
			_, err := n.data.Scan(ctxT(t), &storagev1.ScanRequest{Ranges: []*clusterv1.SlotRange{{Start: 0, End: 16384}}})
			return err
		}, "ranges[0]", []string{"16384"}},
		{"scan limit", func() error {
			_, err := n.data.Scan(ctxT(t), &storagev1.ScanRequest{Limit: 10001})
			return err
		}, "limit", []string{"10001", "10000"}},
		{"scan start slot", func() error {
			_, err := n.data.Scan(ctxT(t), &storagev1.ScanRequest{Start: &storagev1.ScanPosition{Slot: 20000}})
			return err
		}, "start.slot", nil},
		{"count range", func() error {
			_, err := n.data.Count(ctxT(t), &storagev1.CountRequest{Ranges: []*clusterv1.SlotRange{{Start: 5, End: 4}}})
			return err
		}, "ranges[0]", nil},
		{"digest range", func() error {
			_, err := n.data.Digest(ctxT(t), &storagev1.DigestRequest{Ranges: []*clusterv1.SlotRange{{Start: 1, End: 1}, {Start: 70000, End: 70001}}})
			return err
		}, "ranges[1]", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			wantField(t, tt.call(), tt.field, tt.fragments...)
		})
	}
}

func TestOwnershipErrors(t *testing.T) {
	t.Parallel()
	n := startNode(t, testOptions(t, "a"))
	ctx := ctxT(t)
	inA, inB, free := storetest.KeyInSlot(10, "k"), storetest.KeyInSlot(9000, "k"), storetest.KeyInSlot(16000, "k")

	// No topology yet: every data RPC says so.
	noTopo := []func() error{
		func() error { _, err := n.data.Get(ctx, &storagev1.GetRequest{Key: inA}); return err },
		func() error { _, err := n.data.Put(ctx, &storagev1.PutRequest{Key: inA}); return err },
		func() error { _, err := n.data.Scan(ctx, &storagev1.ScanRequest{}); return err },
		func() error { _, err := n.data.Count(ctx, &storagev1.CountRequest{}); return err },
	}
	for i, call := range noTopo {
		err := call()
		wantStatus(t, err, codes.FailedPrecondition, "topology")
		if r := errorInfo(t, err).GetReason(); r != rpcerr.ReasonNoTopology {
			t.Errorf("call %d: reason %q, want %s", i, r, rpcerr.ReasonNoTopology)
		}
	}
	gt, err := n.admin.GetTopology(ctx, &storagev1.GetTopologyRequest{})
	if err != nil || gt.GetTopology() != nil {
		t.Fatalf("GetTopology before any = %v, %v; want unset", gt, err)
	}

	p := topo(4, map[string]string{"a": n.grpcAddr, "b": "10.1.2.3:7100"},
		map[string][][2]uint32{"a": {{0, 8191}}, "b": {{8192, 15999}}})
	n.setTopology(t, p)

	moved := []struct {
		name string
		call func() error
	}{
		{"get", func() error { _, err := n.data.Get(ctx, &storagev1.GetRequest{Key: inB}); return err }},
		{"put", func() error { _, err := n.data.Put(ctx, &storagev1.PutRequest{Key: inB}); return err }},
		{"delete", func() error { _, err := n.data.Delete(ctx, &storagev1.DeleteRequest{Key: inB}); return err }},
		{"batch get", func() error {
			_, err := n.data.BatchGet(ctx, &storagev1.BatchGetRequest{Keys: [][]byte{inA, inB}})
			return err
		}},
		{"scan", func() error {
			_, err := n.data.Scan(ctx, &storagev1.ScanRequest{Ranges: []*clusterv1.SlotRange{{Start: 8000, End: 9000}}})
			return err
		}},
		{"count", func() error {
			_, err := n.data.Count(ctx, &storagev1.CountRequest{Ranges: []*clusterv1.SlotRange{{Start: 0, End: 16383}}})
			return err
		}},
		{"digest", func() error {
			_, err := n.data.Digest(ctx, &storagev1.DigestRequest{Ranges: []*clusterv1.SlotRange{{Start: 9000, End: 9000}}})
			return err
		}},
	}
	for _, tt := range moved {
		t.Run("moved "+tt.name, func(t *testing.T) {
			err := tt.call()
			wantStatus(t, err, codes.FailedPrecondition, "moved")
			ei := errorInfo(t, err)
			md := ei.GetMetadata()
			if ei.GetReason() != rpcerr.ReasonSlotMoved || md["owner_id"] != "b" || md["owner_address"] != "10.1.2.3:7100" || md["topology_version"] != "4" || md["slot"] == "" {
				t.Errorf("ErrorInfo = %v", ei)
			}
			var sm *rpcerr.SlotMovedError
			if !errors.As(rpcerr.FromStatus(err), &sm) || sm.OwnerID != "b" || sm.Version != 4 {
				t.Errorf("FromStatus = %v", rpcerr.FromStatus(err))
			}
		})
	}
	// The first unowned slot of a range is the one named.
	_, err = n.data.Scan(ctx, &storagev1.ScanRequest{Ranges: []*clusterv1.SlotRange{{Start: 100, End: 9000}}})
	if got := errorInfo(t, err).GetMetadata()["slot"]; got != "8192" {
		t.Errorf("scan names slot %s, want 8192", got)
	}
	_, err = n.data.Get(ctx, &storagev1.GetRequest{Key: free})
	wantStatus(t, err, codes.FailedPrecondition, "16000")
	if r := errorInfo(t, err).GetReason(); r != rpcerr.ReasonSlotUnassigned {
		t.Errorf("reason %q, want %s", r, rpcerr.ReasonSlotUnassigned)
	}
	if _, err := n.data.Put(ctx, &storagev1.PutRequest{Key: inA, Value: []byte("v")}); err != nil {
		t.Errorf("Put to an owned slot: %v", err)
	}
}

// TestTopologyFromEtcd: the node holds each topology committed in etcd and
// reports it (GetTopology, GetNodeInfo); the node's own refusals of stale
// or differing versions are internal/node's tests.
func TestTopologyFromEtcd(t *testing.T) {
	t.Parallel()
	n := startNode(t, testOptions(t, "a"))
	ctx := ctxT(t)
	nodes := map[string]string{"a": "127.0.0.1:1", "b": "127.0.0.1:2"}
	n.setTopology(t, topo(5, nodes, map[string][][2]uint32{"a": {{0, 99}}, "b": {{100, 199}}}))
	got, err := n.admin.GetTopology(ctx, &storagev1.GetTopologyRequest{})
	if err != nil || got.GetTopology().GetVersion() != 5 || len(got.GetTopology().GetAssignments()) != 2 {
		t.Fatalf("GetTopology = %v, %v", got, err)
	}
	n.setTopology(t, topo(6, nodes, map[string][][2]uint32{"a": {{50, 149}}}))
	info, err := n.admin.GetNodeInfo(ctx, &storagev1.GetNodeInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.GetTopologyVersion() != 6 || len(info.GetOwned()) != 1 || info.GetOwned()[0].GetStart() != 50 || info.GetOwned()[0].GetEnd() != 149 {
		t.Errorf("after v6: version %d owned %v", info.GetTopologyVersion(), info.GetOwned())
	}
}

func TestRestartPersistence(t *testing.T) {
	t.Parallel()
	o := testOptions(t, "n1")
	n := startNode(t, o)
	ctx := ctxT(t)
	p := topo(3, map[string]string{"n1": "127.0.0.1:1", "n2": "127.0.0.1:2"}, map[string][][2]uint32{"n1": {{0, 9999}}, "n2": {{10000, 16383}}})
	n.setTopology(t, p)
	key := storetest.KeyInSlot(42, "persist")
	if _, err := n.data.Put(ctx, &storagev1.PutRequest{Key: key, Value: []byte("kept")}); err != nil {
		t.Fatal(err)
	}
	before, err := n.admin.GetNodeInfo(ctx, &storagev1.GetNodeInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}

	other := o
	other.NodeID = "intruder"
	if m, err := tryStart(t, other); err == nil {
		m.stop()
		t.Fatal("a node with another id started on the same data directory")
	} else if !errors.Is(err, node.ErrIdentity) || !strings.Contains(err.Error(), `"n1"`) || !strings.Contains(err.Error(), `"intruder"`) {
		t.Fatalf("start with another id: %v, want ErrIdentity naming both ids", err)
	}

	n = startNode(t, o)
	got, err := n.data.Get(ctx, &storagev1.GetRequest{Key: key})
	if err != nil || string(got.GetValue()) != "kept" {
		t.Fatalf("Get after restart = %v, %v", got, err)
	}
	gt, err := n.admin.GetTopology(ctx, &storagev1.GetTopologyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want := p
	if !proto.Equal(canonical(gt.GetTopology()), canonical(want)) {
		t.Errorf("topology after restart = %v, want %v", gt.GetTopology(), want)
	}
	after, err := n.admin.GetNodeInfo(ctx, &storagev1.GetNodeInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if after.GetNode().GetId() != "n1" || after.GetTopologyVersion() != 3 || after.GetKeyCount() != 1 ||
		!proto.Equal(&storagev1.GetNodeInfoResponse{SlotStates: after.GetSlotStates(), Owned: after.GetOwned()},
			&storagev1.GetNodeInfoResponse{SlotStates: before.GetSlotStates(), Owned: before.GetOwned()}) {
		t.Errorf("node info after restart = %v\nbefore = %v", after, before)
	}
	// Slot states are enforced after the restart, not just reported.
	_, err = n.data.Get(ctx, &storagev1.GetRequest{Key: storetest.KeyInSlot(12000, "x")})
	wantStatus(t, err, codes.FailedPrecondition, "n2")
}

// canonical sorts a topology's nodes and assignments by id.
func canonical(p *clusterv1.Topology) *clusterv1.Topology {
	c := proto.Clone(p).(*clusterv1.Topology)
	for i := range c.Nodes {
		for j := i + 1; j < len(c.Nodes); j++ {
			if c.Nodes[j].Id < c.Nodes[i].Id {
				c.Nodes[i], c.Nodes[j] = c.Nodes[j], c.Nodes[i]
			}
		}
	}
	for i := range c.Assignments {
		for j := i + 1; j < len(c.Assignments); j++ {
			if c.Assignments[j].NodeId < c.Assignments[i].NodeId {
				c.Assignments[i], c.Assignments[j] = c.Assignments[j], c.Assignments[i]
			}
		}
	}
	return c
}

func TestNodeInfo(t *testing.T) {
	t.Parallel()
	n := startNode(t, testOptions(t, "info-node"))
	n.setTopology(t, topo(2, map[string]string{"info-node": "127.0.0.1:1", "z": "127.0.0.1:2"},
		map[string][][2]uint32{"info-node": {{0, 10}, {20, 30}}, "z": {{11, 19}}}))
	fill(t, n, []uint16{1, 2, 25}, 4)
	info, err := n.admin.GetNodeInfo(ctxT(t), &storagev1.GetNodeInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want := &storagev1.GetNodeInfoResponse{
		Node:            &clusterv1.Node{Id: "info-node", GrpcAddress: n.grpcAddr, HttpAddress: n.httpAddr},
		TopologyVersion: 2,
		Owned:           []*clusterv1.SlotRange{{Start: 0, End: 10}, {Start: 20, End: 30}},
		SlotStates: []*clusterv1.SlotStateRange{
			{Range: &clusterv1.SlotRange{Start: 0, End: 10}, State: clusterv1.SlotState_SLOT_STATE_OWNED},
			{Range: &clusterv1.SlotRange{Start: 20, End: 30}, State: clusterv1.SlotState_SLOT_STATE_OWNED},
		},
		KeyCount: 12,
		Version:  info.GetVersion(),
	}
	gotCore := proto.Clone(info).(*storagev1.GetNodeInfoResponse)
	gotCore.LsmBytes, gotCore.VlogBytes = 0, 0
	gotCore.RpcCounts = nil // TestRPCCounts
	if !proto.Equal(gotCore, want) {
		t.Errorf("GetNodeInfo = %v\nwant %v", gotCore, want)
	}
	if info.GetLsmBytes()+info.GetVlogBytes() <= 0 || info.GetVersion() == "" {
		t.Errorf("disk bytes %d + %d, version %q", info.GetLsmBytes(), info.GetVlogBytes(), info.GetVersion())
	}
}

func TestAdvertisedAddresses(t *testing.T) {
	t.Parallel()
	o := testOptions(t, "adv")
	o.AdvertiseGRPC, o.AdvertiseHTTP = "storage-1.internal:7100", "storage-1.internal:8100"
	n := startNode(t, o)
	info, err := n.admin.GetNodeInfo(ctxT(t), &storagev1.GetNodeInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.GetNode().GetGrpcAddress() != o.AdvertiseGRPC || info.GetNode().GetHttpAddress() != o.AdvertiseHTTP {
		t.Errorf("node = %v, want the advertised addresses", info.GetNode())
	}
}

func TestRunConfigErrors(t *testing.T) {
	t.Parallel()
	base := testOptions(t, "x")
	tests := []struct {
		name   string
		mutate func(*storage.Options)
		want   string
	}{
		{"no node id", func(o *storage.Options) { o.NodeID = "" }, "--node-id"},
		{"no data dir", func(o *storage.Options) { o.DataDir = "" }, "--data-dir"},
		{"no grpc addr", func(o *storage.Options) { o.GRPCAddr = "" }, "--grpc-addr"},
		{"no etcd", func(o *storage.Options) { o.Etcd = server.Etcd{} }, "--etcd-endpoints"},
		{"negative limit", func(o *storage.Options) { o.MaxValueBytes = -1 }, "--max-value-bytes=-1"},
		{"key limit above badger", func(o *storage.Options) { o.MaxKeyBytes = 70000 }, "--max-key-bytes=70000"},
		{"value threshold above badger", func(o *storage.Options) { o.ValueThreshold = 2 << 20 }, "--value-threshold=2097152"},
		{"negative value threshold", func(o *storage.Options) { o.ValueThreshold = -1 }, "--value-threshold=-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o := base
			o.DataDir = t.TempDir()
			tt.mutate(&o)
			err := storage.Run(ctxT(t), o)
			if !errors.Is(err, storage.ErrConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Run = %v, want ErrConfig naming %s", err, tt.want)
			}
		})
	}
}
