package storage_test

import (
	"bytes"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/digest"
	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/services/storage/internal/store/storetest"
)

// nowMs is the clock expiries are compared with.
func nowMs() int64 { return time.Now().UnixMilli() }

// waitPast returns once the clock is past ms (expiries are absolute).
func waitPast(ms int64) {
	for nowMs() <= ms {
		time.Sleep(5 * time.Millisecond)
	}
}

// shortTTL is how far ahead the keys that a test waits to expire expire:
// nothing is asserted about them before they do.
const shortTTL = 150

// TestExpiryReadPaths: a key past its expiry is absent to every read
// path (Get, BatchGet, Scan with and without values, Count, Digest,
// GetNodeInfo's key count); a key that expires later is returned with its
// exact millisecond expiry; a write whose expiry has passed deletes the
// key; a negative expiry is refused naming the field.
func TestExpiryReadPaths(t *testing.T) {
	t.Parallel()
	n := startNode(t, testOptions(t, "a"))
	n.ownAll(t)
	ctx := ctxT(t)
	type kv struct {
		key, val []byte
		exp      int64
	}
	later := nowMs() + 3_600_000 + 123 // not a whole second
	var live, short []kv
	for i := range 30 {
		k := storetest.KeyInSlot(uint16(40+i%3), fmt.Sprint("k", i))
		e := kv{key: k, val: []byte(fmt.Sprint("v", i))}
		switch i % 3 {
		case 1:
			e.exp = later + int64(i)
		case 2:
			e.exp = nowMs() + shortTTL
		}
		if _, err := n.data.Put(ctx, &storagev1.PutRequest{Key: e.key, Value: e.val, ExpiresAtMs: e.exp}); err != nil {
			t.Fatal(err)
		}
		if i%3 == 2 {
			short = append(short, e)
		} else {
			live = append(live, e)
		}
	}
	// Written already expired: deletes the key it overwrites.
	gone := storetest.KeyInSlot(41, "gone")
	n.put(t, gone, []byte("old"))
	if _, err := n.data.Put(ctx, &storagev1.PutRequest{Key: gone, Value: []byte("new"), ExpiresAtMs: nowMs() - 1}); err != nil {
		t.Fatal(err)
	}
	_, err := n.data.Put(ctx, &storagev1.PutRequest{Key: gone, Value: []byte("x"), ExpiresAtMs: -1})
	wantStatus(t, err, codes.InvalidArgument, "expires_at_ms")
	_, err = n.data.BatchWrite(ctx, &storagev1.BatchWriteRequest{Mutations: []*storagev1.Mutation{{Key: gone, Delete: true, ExpiresAtMs: 5}}})
	wantStatus(t, err, codes.InvalidArgument, "mutations[0].expires_at_ms")
	for _, e := range short {
		waitPast(e.exp)
	}

	for _, e := range live {
		got, err := n.data.Get(ctx, &storagev1.GetRequest{Key: e.key})
		if err != nil || !bytes.Equal(got.GetValue(), e.val) || got.GetExpiresAtMs() != e.exp {
			t.Fatalf("Get(%q) = %q exp %d, %v; want %q exp %d", e.key, got.GetValue(), got.GetExpiresAtMs(), err, e.val, e.exp)
		}
	}
	for _, e := range append(slices.Clone(short), kv{key: gone}) {
		_, err := n.data.Get(ctx, &storagev1.GetRequest{Key: e.key})
		wantStatus(t, err, codes.NotFound)
	}
	var keys [][]byte
	for _, e := range append(slices.Clone(live), short...) {
		keys = append(keys, e.key)
	}
	bg, err := n.data.BatchGet(ctx, &storagev1.BatchGetRequest{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	for i, it := range bg.GetItems() {
		if i < len(live) {
			if !it.GetFound() || !bytes.Equal(it.GetValue(), live[i].val) || it.GetExpiresAtMs() != live[i].exp {
				t.Errorf("BatchGet item %d = %v, want %q exp %d", i, it, live[i].val, live[i].exp)
			}
		} else if it.GetFound() {
			t.Errorf("BatchGet returns the expired key %q", it.GetKey())
		}
	}
	want := map[string]kv{}
	for _, e := range live {
		want[string(e.key)] = e
	}
	rs := []*clusterv1.SlotRange{sr(40, 42)}
	for _, keysOnly := range []bool{false, true} {
		sc, err := n.data.Scan(ctx, &storagev1.ScanRequest{Ranges: rs, KeysOnly: keysOnly})
		if err != nil {
			t.Fatal(err)
		}
		if len(sc.GetItems()) != len(live) {
			t.Errorf("Scan (keys only %v) returns %d items, want the %d live ones", keysOnly, len(sc.GetItems()), len(live))
		}
		for _, it := range sc.GetItems() {
			w, ok := want[string(it.GetKey())]
			if !ok || it.GetExpiresAtMs() != w.exp || (!keysOnly && !bytes.Equal(it.GetValue(), w.val)) {
				t.Errorf("Scan (keys only %v) item %q = %q exp %d; want live %v %q exp %d", keysOnly, it.GetKey(), it.GetValue(), it.GetExpiresAtMs(), ok, w.val, w.exp)
			}
		}
	}
	cnt, err := n.data.Count(ctx, &storagev1.CountRequest{Ranges: rs})
	if err != nil || cnt.GetCount() != uint64(len(live)) {
		t.Errorf("Count = %v, %v; want %d", cnt, err, len(live))
	}
	// The digest covers the live entries, expiries included.
	var wantDigest digest.Digest
	h := digest.NewHasher()
	for _, e := range live {
		h.AddExpiring(&wantDigest, e.key, e.val, e.exp)
	}
	dg, err := n.data.Digest(ctx, &storagev1.DigestRequest{Ranges: rs, PerSlot: true})
	if err != nil || dg.GetCount() != uint64(len(live)) || !bytes.Equal(dg.GetDigest(), wantDigest.Bytes()) {
		t.Errorf("Digest = %d keys %x, %v; want %d keys %x", dg.GetCount(), dg.GetDigest(), err, len(live), wantDigest.Bytes())
	}
	info, err := n.admin.GetNodeInfo(ctx, &storagev1.GetNodeInfoRequest{})
	if err != nil || info.GetKeyCount() != uint64(len(live)) {
		t.Errorf("GetNodeInfo key count = %d, %v; want %d", info.GetKeyCount(), err, len(live))
	}
	// Deleting an expired key: it did not exist.
	d, err := n.data.Delete(ctx, &storagev1.DeleteRequest{Key: short[0].key})
	if err != nil || d.GetExisted() {
		t.Errorf("Delete of an expired key = %v, %v; want existed false", d, err)
	}
}

// update sends one Update and fails the test on an error.
func (n *testNode) update(t *testing.T, req *storagev1.UpdateRequest) *storagev1.UpdateResponse {
	t.Helper()
	res, err := n.data.Update(ctxT(t), req)
	if err != nil {
		t.Fatalf("Update(%v): %v", req, err)
	}
	return res
}

// TestUpdate runs each Update op and condition against a key in a given
// state (absent, a value without expiry, a value with one) and checks the
// answer and the key afterwards, as Redis answers the same commands.
func TestUpdate(t *testing.T) {
	t.Parallel()
	n := startNode(t, testOptions(t, "a"))
	n.ownAll(t)
	ctx := ctxT(t)
	const (
		set    = storagev1.UpdateOp_UPDATE_OP_SET
		incr   = storagev1.UpdateOp_UPDATE_OP_INCR_BY
		app    = storagev1.UpdateOp_UPDATE_OP_APPEND
		expire = storagev1.UpdateOp_UPDATE_OP_EXPIRE
		pers   = storagev1.UpdateOp_UPDATE_OP_PERSIST
		getdel = storagev1.UpdateOp_UPDATE_OP_GET_DEL
		getex  = storagev1.UpdateOp_UPDATE_OP_GET_EX
		nx     = storagev1.WriteCondition_WRITE_CONDITION_IF_ABSENT
		xx     = storagev1.WriteCondition_WRITE_CONDITION_IF_PRESENT
		eNX    = storagev1.ExpireCondition_EXPIRE_CONDITION_NO_EXPIRY
		eXX    = storagev1.ExpireCondition_EXPIRE_CONDITION_HAS_EXPIRY
		eGT    = storagev1.ExpireCondition_EXPIRE_CONDITION_GREATER
		eLT    = storagev1.ExpireCondition_EXPIRE_CONDITION_LESS
	)
	base := nowMs() + 3_600_000 // the initial expiry of keys that have one
	type state struct {
		found bool
		val   string
		exp   int64
	}
	absent := state{}
	plain := func(v string) state { return state{true, v, 0} }
	timed := func(v string) state { return state{true, v, base} }
	tests := []struct {
		name   string
		before state
		req    *storagev1.UpdateRequest
		want   *storagev1.UpdateResponse // slot is not compared
		after  state
	}{
		{"SET absent", absent, &storagev1.UpdateRequest{Op: set, Value: []byte("a")}, &storagev1.UpdateResponse{Applied: true}, plain("a")},
		{"SET clears the expiry", timed("x"), &storagev1.UpdateRequest{Op: set, Value: []byte("a")}, &storagev1.UpdateResponse{Applied: true}, plain("a")},
		{"SET KEEPTTL", timed("x"), &storagev1.UpdateRequest{Op: set, Value: []byte("a"), KeepTtl: true}, &storagev1.UpdateResponse{Applied: true, ExpiresAtMs: base}, timed("a")},
		{"SET PX", plain("x"), &storagev1.UpdateRequest{Op: set, Value: []byte("a"), ExpiresAtMs: base + 7}, &storagev1.UpdateResponse{Applied: true, ExpiresAtMs: base + 7}, state{true, "a", base + 7}},
		{"SET PXAT past deletes", plain("x"), &storagev1.UpdateRequest{Op: set, Value: []byte("a"), ExpiresAtMs: 1}, &storagev1.UpdateResponse{Applied: true}, absent},
		{"SET NX absent", absent, &storagev1.UpdateRequest{Op: set, Value: []byte("a"), Condition: nx}, &storagev1.UpdateResponse{Applied: true}, plain("a")},
		{"SET NX present", plain("x"), &storagev1.UpdateRequest{Op: set, Value: []byte("a"), Condition: nx}, &storagev1.UpdateResponse{}, plain("x")},
		{"SET XX absent", absent, &storagev1.UpdateRequest{Op: set, Value: []byte("a"), Condition: xx}, &storagev1.UpdateResponse{}, absent},
		{"SET XX present", timed("x"), &storagev1.UpdateRequest{Op: set, Value: []byte("a"), Condition: xx}, &storagev1.UpdateResponse{Applied: true}, plain("a")},
		{"SET GET", plain("x"), &storagev1.UpdateRequest{Op: set, Value: []byte("a"), ReturnOld: true}, &storagev1.UpdateResponse{Applied: true, OldFound: true, OldValue: []byte("x")}, plain("a")},
		{"SET GET absent", absent, &storagev1.UpdateRequest{Op: set, Value: []byte("a"), ReturnOld: true}, &storagev1.UpdateResponse{Applied: true}, plain("a")},
		{"SET NX GET present", plain("x"), &storagev1.UpdateRequest{Op: set, Value: []byte("a"), Condition: nx, ReturnOld: true}, &storagev1.UpdateResponse{OldFound: true, OldValue: []byte("x")}, plain("x")},
		{"INCRBY absent", absent, &storagev1.UpdateRequest{Op: incr, Delta: 5}, &storagev1.UpdateResponse{Applied: true, NewInt: 5}, plain("5")},
		{"INCRBY keeps the expiry", timed("-3"), &storagev1.UpdateRequest{Op: incr, Delta: -4}, &storagev1.UpdateResponse{Applied: true, NewInt: -7, ExpiresAtMs: base}, timed("-7")},
		{"INCRBY to the maximum", plain("9223372036854775806"), &storagev1.UpdateRequest{Op: incr, Delta: 1}, &storagev1.UpdateResponse{Applied: true, NewInt: 9223372036854775807}, plain("9223372036854775807")},
		{"APPEND absent", absent, &storagev1.UpdateRequest{Op: app, Value: []byte("ab")}, &storagev1.UpdateResponse{Applied: true, NewLength: 2}, plain("ab")},
		{"APPEND keeps the expiry", timed("x"), &storagev1.UpdateRequest{Op: app, Value: []byte("yz")}, &storagev1.UpdateResponse{Applied: true, NewLength: 3, ExpiresAtMs: base}, timed("xyz")},
		{"EXPIRE absent", absent, &storagev1.UpdateRequest{Op: expire, ExpiresAtMs: base}, &storagev1.UpdateResponse{}, absent},
		{"EXPIRE", plain("x"), &storagev1.UpdateRequest{Op: expire, ExpiresAtMs: base + 1}, &storagev1.UpdateResponse{Applied: true, ExpiresAtMs: base + 1}, state{true, "x", base + 1}},
		{"EXPIRE past deletes", timed("x"), &storagev1.UpdateRequest{Op: expire, ExpiresAtMs: 1}, &storagev1.UpdateResponse{Applied: true}, absent},
		{"EXPIREAT 0 deletes", plain("x"), &storagev1.UpdateRequest{Op: expire}, &storagev1.UpdateResponse{Applied: true}, absent},
		{"EXPIRE NX without", plain("x"), &storagev1.UpdateRequest{Op: expire, ExpiresAtMs: base, ExpireCondition: eNX}, &storagev1.UpdateResponse{Applied: true, ExpiresAtMs: base}, timed("x")},
		{"EXPIRE NX with", timed("x"), &storagev1.UpdateRequest{Op: expire, ExpiresAtMs: base + 9, ExpireCondition: eNX}, &storagev1.UpdateResponse{ExpiresAtMs: base}, timed("x")},
		{"EXPIRE XX without", plain("x"), &storagev1.UpdateRequest{Op: expire, ExpiresAtMs: base, ExpireCondition: eXX}, &storagev1.UpdateResponse{}, plain("x")},
		{"EXPIRE XX with", timed("x"), &storagev1.UpdateRequest{Op: expire, ExpiresAtMs: base + 9, ExpireCondition: eXX}, &storagev1.UpdateResponse{Applied: true, ExpiresAtMs: base + 9}, state{true, "x", base + 9}},
		{"EXPIRE GT later", timed("x"), &storagev1.UpdateRequest{Op: expire, ExpiresAtMs: base + 9, ExpireCondition: eGT}, &storagev1.UpdateResponse{Applied: true, ExpiresAtMs: base + 9}, state{true, "x", base + 9}},
		{"EXPIRE GT earlier", timed("x"), &storagev1.UpdateRequest{Op: expire, ExpiresAtMs: base - 9, ExpireCondition: eGT}, &storagev1.UpdateResponse{ExpiresAtMs: base}, timed("x")},
		{"EXPIRE GT without (infinite)", plain("x"), &storagev1.UpdateRequest{Op: expire, ExpiresAtMs: base, ExpireCondition: eGT}, &storagev1.UpdateResponse{}, plain("x")},
		{"EXPIRE LT earlier", timed("x"), &storagev1.UpdateRequest{Op: expire, ExpiresAtMs: base - 9, ExpireCondition: eLT}, &storagev1.UpdateResponse{Applied: true, ExpiresAtMs: base - 9}, state{true, "x", base - 9}},
		{"EXPIRE LT later", timed("x"), &storagev1.UpdateRequest{Op: expire, ExpiresAtMs: base + 9, ExpireCondition: eLT}, &storagev1.UpdateResponse{ExpiresAtMs: base}, timed("x")},
		{"EXPIRE LT without (infinite)", plain("x"), &storagev1.UpdateRequest{Op: expire, ExpiresAtMs: base, ExpireCondition: eLT}, &storagev1.UpdateResponse{Applied: true, ExpiresAtMs: base}, timed("x")},
		{"EXPIRE GT past refused", timed("x"), &storagev1.UpdateRequest{Op: expire, ExpiresAtMs: 1, ExpireCondition: eGT}, &storagev1.UpdateResponse{ExpiresAtMs: base}, timed("x")},
		{"PERSIST", timed("x"), &storagev1.UpdateRequest{Op: pers}, &storagev1.UpdateResponse{Applied: true}, plain("x")},
		{"PERSIST without", plain("x"), &storagev1.UpdateRequest{Op: pers}, &storagev1.UpdateResponse{}, plain("x")},
		{"PERSIST absent", absent, &storagev1.UpdateRequest{Op: pers}, &storagev1.UpdateResponse{}, absent},
		{"GETDEL", timed("x"), &storagev1.UpdateRequest{Op: getdel}, &storagev1.UpdateResponse{Applied: true, OldFound: true, OldValue: []byte("x")}, absent},
		{"GETDEL absent", absent, &storagev1.UpdateRequest{Op: getdel}, &storagev1.UpdateResponse{}, absent},
		{"GETEX", timed("x"), &storagev1.UpdateRequest{Op: getex}, &storagev1.UpdateResponse{Applied: true, OldFound: true, OldValue: []byte("x"), ExpiresAtMs: base}, timed("x")},
		{"GETEX PX", plain("x"), &storagev1.UpdateRequest{Op: getex, ExpiresAtMs: base + 3}, &storagev1.UpdateResponse{Applied: true, OldFound: true, OldValue: []byte("x"), ExpiresAtMs: base + 3}, state{true, "x", base + 3}},
		{"GETEX PERSIST", timed("x"), &storagev1.UpdateRequest{Op: getex, Persist: true}, &storagev1.UpdateResponse{Applied: true, OldFound: true, OldValue: []byte("x")}, plain("x")},
		{"GETEX past deletes", timed("x"), &storagev1.UpdateRequest{Op: getex, ExpiresAtMs: 1}, &storagev1.UpdateResponse{Applied: true, OldFound: true, OldValue: []byte("x")}, absent},
		{"GETEX absent", absent, &storagev1.UpdateRequest{Op: getex, ExpiresAtMs: base}, &storagev1.UpdateResponse{}, absent},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k := storetest.KeyInSlot(uint16(i), "u")
			if tc.before.found {
				if _, err := n.data.Put(ctx, &storagev1.PutRequest{Key: k, Value: []byte(tc.before.val), ExpiresAtMs: tc.before.exp}); err != nil {
					t.Fatal(err)
				}
			}
			req := tc.req
			req.Key = k
			got := n.update(t, req)
			got.Slot = 0
			if !proto.Equal(got, tc.want) {
				t.Errorf("Update = {%v}, want {%v}", got, tc.want)
			}
			g, err := n.data.Get(ctx, &storagev1.GetRequest{Key: k})
			switch {
			case !tc.after.found:
				wantStatus(t, err, codes.NotFound)
			case err != nil || string(g.GetValue()) != tc.after.val || g.GetExpiresAtMs() != tc.after.exp:
				t.Errorf("afterwards Get = %q exp %d, %v; want %q exp %d", g.GetValue(), g.GetExpiresAtMs(), err, tc.after.val, tc.after.exp)
			}
		})
	}

	// Errors: Redis's INCR errors carry their reasons; bad requests name
	// their field.
	errTests := []struct {
		name   string
		before string
		req    *storagev1.UpdateRequest
		code   codes.Code
		reason string
		field  string
	}{
		{"INCRBY text", "abc", &storagev1.UpdateRequest{Op: incr, Delta: 1}, codes.FailedPrecondition, rpcerr.ReasonNotInteger, ""},
		{"INCRBY leading zero", "01", &storagev1.UpdateRequest{Op: incr, Delta: 1}, codes.FailedPrecondition, rpcerr.ReasonNotInteger, ""},
		{"INCRBY plus sign", "+1", &storagev1.UpdateRequest{Op: incr, Delta: 1}, codes.FailedPrecondition, rpcerr.ReasonNotInteger, ""},
		{"INCRBY space", " 1", &storagev1.UpdateRequest{Op: incr, Delta: 1}, codes.FailedPrecondition, rpcerr.ReasonNotInteger, ""},
		{"INCRBY out of range", "9223372036854775808", &storagev1.UpdateRequest{Op: incr, Delta: 1}, codes.FailedPrecondition, rpcerr.ReasonNotInteger, ""},
		{"INCRBY overflow", "9223372036854775807", &storagev1.UpdateRequest{Op: incr, Delta: 1}, codes.FailedPrecondition, rpcerr.ReasonOverflow, ""},
		{"DECRBY underflow", "-9223372036854775807", &storagev1.UpdateRequest{Op: incr, Delta: -2}, codes.FailedPrecondition, rpcerr.ReasonOverflow, ""},
		{"no op", "", &storagev1.UpdateRequest{}, codes.InvalidArgument, "", "op"},
		{"NX on INCRBY", "", &storagev1.UpdateRequest{Op: incr, Delta: 1, Condition: nx}, codes.InvalidArgument, "", "condition"},
		{"negative SET expiry", "", &storagev1.UpdateRequest{Op: set, ExpiresAtMs: -1}, codes.InvalidArgument, "", "expires_at_ms"},
		{"KEEPTTL with PX", "", &storagev1.UpdateRequest{Op: set, KeepTtl: true, ExpiresAtMs: base}, codes.InvalidArgument, "", "keep_ttl"},
		{"value on EXPIRE", "", &storagev1.UpdateRequest{Op: expire, Value: []byte("v")}, codes.InvalidArgument, "", "value"},
	}
	for i, tc := range errTests {
		t.Run(tc.name, func(t *testing.T) {
			k := storetest.KeyInSlot(uint16(1000+i), "e")
			if tc.before != "" {
				n.put(t, k, []byte(tc.before))
			}
			req := tc.req
			req.Key = k
			_, err := n.data.Update(ctx, req)
			st := wantStatus(t, err, tc.code, tc.field)
			if tc.reason != "" {
				if r := errorInfo(t, err).GetReason(); r != tc.reason {
					t.Errorf("reason %q, want %q (%v)", r, tc.reason, st.Message())
				}
			}
			if tc.before != "" { // unchanged
				if g, err := n.data.Get(ctx, &storagev1.GetRequest{Key: k}); err != nil || string(g.GetValue()) != tc.before {
					t.Errorf("after a refused update: %q, %v; want %q", g.GetValue(), err, tc.before)
				}
			}
		})
	}
	// An expired key is absent to Update: INCRBY starts from 0.
	k := storetest.KeyInSlot(2000, "expired")
	exp := nowMs() + shortTTL
	if _, err := n.data.Put(ctx, &storagev1.PutRequest{Key: k, Value: []byte("41"), ExpiresAtMs: exp}); err != nil {
		t.Fatal(err)
	}
	waitPast(exp)
	if got := n.update(t, &storagev1.UpdateRequest{Key: k, Op: incr, Delta: 1}); got.GetNewInt() != 1 || got.GetExpiresAtMs() != 0 {
		t.Errorf("INCRBY of an expired key = %v, want 1 without expiry", got)
	}
	// A key served elsewhere is refused as Put is.
	other := startNode(t, testOptions(t, "b"))
	other.setTopology(t, topo(2, map[string]string{"a": n.grpcAddr, "b": other.grpcAddr}, map[string][][2]uint32{"a": {{0, 16383}}}))
	_, err := other.data.Update(ctx, &storagev1.UpdateRequest{Key: k, Op: incr, Delta: 1})
	wantStatus(t, err, codes.FailedPrecondition)
	if r := errorInfo(t, err).GetReason(); r != rpcerr.ReasonSlotMoved {
		t.Errorf("Update on a node that does not own the slot: reason %q", r)
	}
}

// TestConcurrentIncrBy: many clients increment one key at once, while
// others overwrite a neighbour; every increment counts, none is lost to a
// read-then-write race.
func TestConcurrentIncrBy(t *testing.T) {
	t.Parallel()
	n := startNode(t, testOptions(t, "a"))
	n.ownAll(t)
	ctx := ctxT(t)
	const clients, each = 16, 50
	k := storetest.KeyInSlot(77, "counter")
	var wg sync.WaitGroup
	errs := make(chan error, clients+1)
	for c := range clients {
		wg.Go(func() {
			for range each {
				if _, err := n.data.Update(ctx, &storagev1.UpdateRequest{Key: k, Op: storagev1.UpdateOp_UPDATE_OP_INCR_BY, Delta: 1}); err != nil {
					errs <- fmt.Errorf("client %d: %w", c, err)
					return
				}
			}
		})
	}
	wg.Go(func() { // plain writes of another key of the slot meanwhile
		for i := range each {
			if _, err := n.data.Put(ctx, &storagev1.PutRequest{Key: storetest.KeyInSlot(77, "other"), Value: fmt.Append(nil, i)}); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	g, err := n.data.Get(ctx, &storagev1.GetRequest{Key: k})
	if err != nil || string(g.GetValue()) != fmt.Sprint(clients*each) {
		t.Fatalf("counter = %q, %v; want %d", g.GetValue(), err, clients*each)
	}
}

// TestDeleteAndBatchConditions: Delete says whether the key existed;
// BatchWrite counts the deletes of existing keys (a key deleted twice
// once) and, with if_all_absent, writes nothing when any put's key
// exists.
func TestDeleteAndBatchConditions(t *testing.T) {
	t.Parallel()
	n := startNode(t, testOptions(t, "a"))
	n.ownAll(t)
	ctx := ctxT(t)
	a, b, c := storetest.KeyInSlot(5, "a"), storetest.KeyInSlot(6, "b"), storetest.KeyInSlot(7, "c")
	n.put(t, a, []byte("1"))
	for i, want := range []bool{true, false} {
		d, err := n.data.Delete(ctx, &storagev1.DeleteRequest{Key: a})
		if err != nil || d.GetExisted() != want {
			t.Errorf("Delete %d = %v, %v; want existed %v", i, d, err, want)
		}
	}
	tests := []struct {
		name    string
		req     *storagev1.BatchWriteRequest
		applied bool
		deleted uint32
		after   map[string]string // key -> value; "" absent
	}{
		{"MSETNX all absent", &storagev1.BatchWriteRequest{IfAllAbsent: true, Mutations: []*storagev1.Mutation{{Key: a, Value: []byte("1")}, {Key: b, Value: []byte("2")}, {Key: a, Value: []byte("3")}}},
			true, 0, map[string]string{"a": "3", "b": "2", "c": ""}},
		{"MSETNX one present", &storagev1.BatchWriteRequest{IfAllAbsent: true, Mutations: []*storagev1.Mutation{{Key: c, Value: []byte("x")}, {Key: b, Value: []byte("y")}}},
			false, 0, map[string]string{"a": "3", "b": "2", "c": ""}},
		{"DEL a c a", &storagev1.BatchWriteRequest{Mutations: []*storagev1.Mutation{{Key: a, Delete: true}, {Key: c, Delete: true}, {Key: a, Delete: true}}},
			true, 1, map[string]string{"a": "", "b": "2", "c": ""}},
		{"put then delete", &storagev1.BatchWriteRequest{Mutations: []*storagev1.Mutation{{Key: c, Value: []byte("z")}, {Key: c, Delete: true}, {Key: b, Delete: true}}},
			true, 2, map[string]string{"a": "", "b": "", "c": ""}},
	}
	names := map[string][]byte{"a": a, "b": b, "c": c}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := n.data.BatchWrite(ctx, tc.req)
			if err != nil || res.GetApplied() != tc.applied || res.GetDeleted() != tc.deleted {
				t.Fatalf("BatchWrite = %v, %v; want applied %v deleted %d", res, err, tc.applied, tc.deleted)
			}
			for name, want := range tc.after {
				g, err := n.data.Get(ctx, &storagev1.GetRequest{Key: names[name]})
				if want == "" {
					wantStatus(t, err, codes.NotFound)
				} else if err != nil || string(g.GetValue()) != want {
					t.Errorf("%s = %q, %v; want %q", name, g.GetValue(), err, want)
				}
			}
		})
	}
}

// TestFlushSlots: FlushSlots empties the named ranges this node owns and
// nothing else; ranges it does not own are refused.
func TestFlushSlots(t *testing.T) {
	t.Parallel()
	n := startNode(t, testOptions(t, "a"))
	other := startNode(t, testOptions(t, "b"))
	nodes := map[string]string{"a": n.grpcAddr, "b": other.grpcAddr}
	t1 := topo(1, nodes, map[string][][2]uint32{"a": {{0, 8191}}, "b": {{8192, 16383}}})
	n.setTopology(t, t1)
	other.setTopology(t, t1)
	ctx := ctxT(t)
	for i := range 1200 { // more than one batch
		n.put(t, storetest.KeyInSlot(uint16(10+i%5), fmt.Sprint("f", i)), []byte("v"))
	}
	n.put(t, storetest.KeyInSlot(20, "kept"), []byte("v"))
	_, err := n.data.FlushSlots(ctx, &storagev1.FlushSlotsRequest{Ranges: []*clusterv1.SlotRange{sr(8000, 8200)}})
	wantStatus(t, err, codes.FailedPrecondition)
	res, err := n.data.FlushSlots(ctx, &storagev1.FlushSlotsRequest{Ranges: []*clusterv1.SlotRange{sr(10, 14)}})
	if err != nil || res.GetDeletedKeys() != 1200 {
		t.Fatalf("FlushSlots = %v, %v; want 1200 keys", res, err)
	}
	cnt, err := n.data.Count(ctx, &storagev1.CountRequest{})
	if err != nil || cnt.GetCount() != 1 {
		t.Fatalf("Count after the flush = %v, %v; want the 1 key of slot 20", cnt, err)
	}
	// No ranges: every range the node serves.
	if res, err := n.data.FlushSlots(ctx, &storagev1.FlushSlotsRequest{}); err != nil || res.GetDeletedKeys() != 1 {
		t.Fatalf("FlushSlots of everything = %v, %v; want 1 key", res, err)
	}
}
