package router_test

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	routerv1 "github.com/slotkv/slotkv/gen/slotkv/router/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/testcluster"
	"github.com/slotkv/slotkv/pkg/topology"
	"github.com/slotkv/slotkv/services/router"
)

func textKV(k, v string) *routerv1.KeyValue {
	return &routerv1.KeyValue{Key: k, Data: &routerv1.KeyValue_Text{Text: v}}
}

func multiPut(t testing.TB, r *testRouter, kvs map[string]string) {
	t.Helper()
	var es []*routerv1.KeyValue
	for k, v := range kvs {
		es = append(es, textKV(k, v))
	}
	resp, err := r.KV.MultiPut(ctxT(t), &routerv1.MultiPutRequest{Entries: es})
	if err != nil {
		t.Fatalf("MultiPut: %v", err)
	}
	if resp.GetWritten() != uint32(len(es)) {
		t.Fatalf("MultiPut wrote %d, want %d", resp.GetWritten(), len(es))
	}
}

// rpcCount is the count of a StorageService method on node n.
func rpcCount(t testing.TB, n *testcluster.Node, method string) uint64 {
	t.Helper()
	info, err := n.NodeClient().GetNodeInfo(ctxT(t), &storagev1.GetNodeInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return info.GetRpcCounts()[method]
}

func TestMultiGetPutDelete(t *testing.T) {
	t.Parallel()
	c, topo, r := setup(t, 3, router.Options{})
	ctx := ctxT(t)

	want := map[string]string{}
	for i := range 90 {
		want[fmt.Sprintf("m/%d", i)] = fmt.Sprintf("value %d", i)
	}
	before := map[string]uint64{}
	for _, n := range c.Nodes {
		before[n.ID] = rpcCount(t, n, "BatchWrite")
	}
	multiPut(t, r, want)
	// One BatchWrite per node, whatever the number of keys.
	for _, n := range c.Nodes {
		if got := rpcCount(t, n, "BatchWrite") - before[n.ID]; got != 1 {
			t.Errorf("node %s got %d BatchWrite calls for one MultiPut, want 1", n.ID, got)
		}
	}
	// Binary values round-trip as bytes.
	bin := []byte{0xff, 0, 0xfe}
	if _, err := r.KV.MultiPut(ctx, &routerv1.MultiPutRequest{Entries: []*routerv1.KeyValue{
		{Key: "bin", Data: &routerv1.KeyValue_Value{Value: bin}},
	}}); err != nil {
		t.Fatal(err)
	}

	// Request order is kept: shuffled keys, duplicates, absent keys.
	var keys []string
	for k := range want {
		keys = append(keys, k)
	}
	keys = append(keys, "m/3", "absent-1", "m/3", "bin", "absent-2")
	rand.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	for _, n := range c.Nodes {
		before[n.ID] = rpcCount(t, n, "BatchGet")
	}
	got, err := r.KV.MultiGet(ctx, &routerv1.MultiGetRequest{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.GetEntries()) != len(keys) || len(got.GetFailed()) != 0 {
		t.Fatalf("MultiGet: %d entries, failed %v; want %d entries", len(got.GetEntries()), got.GetFailed(), len(keys))
	}
	nodes := map[string]bool{}
	for i, e := range got.GetEntries() {
		k := keys[i]
		owner, _ := topo.Owner(slot.OfString(k))
		if e.GetKey() != k || e.GetSlot() != uint32(slot.OfString(k)) || e.GetPartition() != owner.ID {
			t.Fatalf("entry %d = %v, want key %q slot %d partition %s", i, e, k, slot.OfString(k), owner.ID)
		}
		nodes[owner.ID] = true
		switch {
		case k == "bin":
			if !e.GetFound() || !bytes.Equal(e.GetValue(), bin) {
				t.Errorf("entry bin = %v", e)
			}
		case strings.HasPrefix(k, "absent"):
			if e.GetFound() || e.GetData() != nil {
				t.Errorf("entry %s = %v, want not found", k, e)
			}
		default:
			if !e.GetFound() || e.GetText() != want[k] {
				t.Errorf("entry %s = %v, want text %q", k, e, want[k])
			}
		}
	}
	if len(nodes) != 3 {
		t.Fatalf("keys on nodes %v, want all 3", nodes)
	}
	for _, n := range c.Nodes {
		if got := rpcCount(t, n, "BatchGet") - before[n.ID]; got != 1 {
			t.Errorf("node %s: rpc_counts BatchGet grew by %d for one MultiGet, want 1", n.ID, got)
		}
	}

	// MultiDelete, then the keys are gone and the others stay.
	del, err := r.KV.MultiDelete(ctx, &routerv1.MultiDeleteRequest{Keys: []string{"m/1", "m/2", "m/2", "never"}})
	if err != nil || del.GetDeleted() != 4 {
		t.Fatalf("MultiDelete = %v, %v", del, err)
	}
	got, err = r.KV.MultiGet(ctx, &routerv1.MultiGetRequest{Keys: []string{"m/1", "m/0", "m/2"}})
	if err != nil {
		t.Fatal(err)
	}
	if e := got.GetEntries(); e[0].GetFound() || !e[1].GetFound() || e[2].GetFound() {
		t.Fatalf("after MultiDelete: %v", e)
	}
	// A key written twice in one call takes its last value.
	if _, err := r.KV.MultiPut(ctx, &routerv1.MultiPutRequest{Entries: []*routerv1.KeyValue{textKV("dup", "a"), textKV("dup", "b")}}); err != nil {
		t.Fatal(err)
	}
	if g, err := r.KV.Get(ctx, &routerv1.GetRequest{Key: "dup"}); err != nil || g.GetText() != "b" {
		t.Fatalf("Get dup = %v, %v; want b", g, err)
	}
	// Empty calls are fine.
	if _, err := r.KV.MultiGet(ctx, &routerv1.MultiGetRequest{}); err != nil {
		t.Fatal(err)
	}

	// Bad input names the field.
	many := make([]string, 10001)
	for i := range many {
		many[i] = fmt.Sprint(i)
	}
	manyKV := make([]*routerv1.KeyValue, 10001)
	for i := range manyKV {
		manyKV[i] = textKV(fmt.Sprint(i), "v")
	}
	for _, tt := range []struct {
		name, field string
		call        func() error
	}{
		{"multi-get empty key", "keys[1]", func() error {
			_, err := r.KV.MultiGet(ctx, &routerv1.MultiGetRequest{Keys: []string{"a", ""}})
			return err
		}},
		{"multi-get too many", "keys", func() error {
			_, err := r.KV.MultiGet(ctx, &routerv1.MultiGetRequest{Keys: many})
			return err
		}},
		{"multi-put empty key", "entries[0].key", func() error {
			_, err := r.KV.MultiPut(ctx, &routerv1.MultiPutRequest{Entries: []*routerv1.KeyValue{textKV("", "x")}})
			return err
		}},
		{"multi-put no value", "entries[1].text", func() error {
			_, err := r.KV.MultiPut(ctx, &routerv1.MultiPutRequest{Entries: []*routerv1.KeyValue{textKV("a", "x"), {Key: "b"}}})
			return err
		}},
		{"multi-put too many", "entries", func() error {
			_, err := r.KV.MultiPut(ctx, &routerv1.MultiPutRequest{Entries: manyKV})
			return err
		}},
		{"multi-delete empty key", "keys[2]", func() error {
			_, err := r.KV.MultiDelete(ctx, &routerv1.MultiDeleteRequest{Keys: []string{"a", "b", ""}})
			return err
		}},
		{"multi-delete too many", "keys", func() error {
			_, err := r.KV.MultiDelete(ctx, &routerv1.MultiDeleteRequest{Keys: many})
			return err
		}},
		{"multi-get key too long (storage limit)", "keys[2]", func() error {
			_, err := r.KV.MultiGet(ctx, &routerv1.MultiGetRequest{Keys: []string{"a", "b", strings.Repeat("k", 20<<10)}})
			return err
		}},
		{"scan limit", "limit", func() error {
			_, err := r.KV.Scan(ctx, &routerv1.ScanRequest{Limit: 10001})
			return err
		}},
		{"scan cursor", "cursor", func() error {
			_, err := r.KV.Scan(ctx, &routerv1.ScanRequest{Cursor: "!!not a cursor"})
			return err
		}},
	} {
		err := tt.call()
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", tt.name, err)
			continue
		}
		if f := badField(err); f != tt.field {
			t.Errorf("%s: field %q, want %q (%v)", tt.name, f, tt.field, err)
		}
	}
}

// TestMultiGetSlotMoved: topology v2 moves the slots of some keys from n1
// to n2 behind the router's back; n1 answers SLOT_MOVED for its batch, the
// router refreshes and redoes that batch's keys on v2.
func TestMultiGetSlotMoved(t *testing.T) {
	t.Parallel()
	c, v1, r := setup(t, 3, router.Options{})
	ctx := ctxT(t)
	var moved, stay []string
	for i := range 5 {
		moved = append(moved, keyOn(t, v1, "n1", fmt.Sprintf("mv%d-", i)))
		stay = append(stay, keyOn(t, v1, "n1", fmt.Sprintf("st%d-", i)))
	}
	other := keyOn(t, v1, "n3", "other")
	kvs := map[string]string{other: "o"}
	for _, k := range stay {
		kvs[k] = "stay " + k
	}
	multiPut(t, r, kvs)
	v2 := v1
	for _, k := range moved {
		v2 = testcluster.Move(t, v2, slot.OfString(k), "n2")
	}
	v2 = reversion(t, v2, 2)
	for _, k := range stay {
		if o, _ := v2.Owner(slot.OfString(k)); o.ID != "n1" {
			t.Skipf("key %s shares a slot with a moved key", k)
		}
	}
	c.SetTopology(t, v2)
	// The moved keys' data is on n2 now (written there directly).
	for _, k := range moved {
		if _, err := c.Node(t, "n2").StorageClient().Put(ctx, &storagev1.PutRequest{Key: []byte(k), Value: []byte("moved " + k)}); err != nil {
			t.Fatal(err)
		}
	}
	keys := append(append(append([]string{}, moved...), stay...), other)
	rand.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	got, err := r.KV.MultiGet(ctx, &routerv1.MultiGetRequest{Keys: keys})
	if err != nil {
		t.Fatalf("MultiGet after the move: %v", err)
	}
	for i, e := range got.GetEntries() {
		k := keys[i]
		owner, _ := v2.Owner(slot.OfString(k))
		wantText := kvs[k]
		if slices.Contains(moved, k) {
			wantText = "moved " + k
		}
		if e.GetKey() != k || !e.GetFound() || e.GetText() != wantText || e.GetPartition() != owner.ID {
			t.Errorf("entry %d = %v; want %q from %s", i, e, wantText, owner.ID)
		}
	}
	tr, err := r.KV.GetTopology(ctx, &routerv1.GetTopologyRequest{})
	if err != nil || tr.GetTopology().GetVersion() != 2 {
		t.Fatalf("router topology after the move: %v, %v; want version 2", tr, err)
	}
}

// TestPartialResults: with node n2 stopped, allow_partial answers with the
// other nodes' keys and lists n2 in failed; without it the call fails with
// Unavailable naming n2.
func TestPartialResults(t *testing.T) {
	t.Parallel()
	c, topo, r := setup(t, 3, router.Options{CallTimeout: 2 * time.Second})
	ctx := ctxT(t)
	kvs := map[string]string{}
	for i := range 60 {
		kvs[fmt.Sprintf("p/%d", i)] = fmt.Sprint(i)
	}
	multiPut(t, r, kvs)
	var onN2 uint64
	for k := range kvs {
		if o, _ := topo.Owner(slot.OfString(k)); o.ID == "n2" {
			onN2++
		}
	}
	if onN2 == 0 {
		t.Fatal("no key on n2")
	}
	if err := c.Node(t, "n2").Proc.Stop(); err != nil {
		t.Logf("n2 exit: %v", err)
	}
	n2 := c.Node(t, "n2").Proc.GRPC
	var keys []string
	for k := range kvs {
		keys = append(keys, k)
	}

	wantFailedN2 := func(what string, failed []*routerv1.PartitionFailure) {
		t.Helper()
		if len(failed) != 1 || failed[0].GetPartition() != "n2" || failed[0].GetCode() != "UNAVAILABLE" || !strings.Contains(failed[0].GetMessage(), n2) {
			t.Errorf("%s: failed = %v, want n2 UNAVAILABLE", what, failed)
		}
	}
	// Strict calls retry an unavailable node until the deadline, as Get
	// does: give them a short one.
	short := func() context.Context {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		t.Cleanup(cancel)
		return ctx
	}
	wantErrN2 := func(what string, err error) {
		t.Helper()
		if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "n2") {
			t.Errorf("%s: %v, want Unavailable naming n2", what, err)
		}
	}

	got, err := r.KV.MultiGet(ctx, &routerv1.MultiGetRequest{Keys: keys, AllowPartial: true})
	if err != nil {
		t.Fatalf("MultiGet allow_partial: %v", err)
	}
	wantFailedN2("MultiGet", got.GetFailed())
	for i, e := range got.GetEntries() {
		owner, _ := topo.Owner(slot.OfString(keys[i]))
		switch {
		case e.GetKey() != keys[i] || e.GetPartition() != owner.ID:
			t.Errorf("entry %d = %v, want key %s partition %s", i, e, keys[i], owner.ID)
		case owner.ID == "n2" && (e.GetFound() || e.GetData() != nil):
			t.Errorf("entry %v of the stopped node is found", e)
		case owner.ID != "n2" && (!e.GetFound() || e.GetText() != kvs[keys[i]]):
			t.Errorf("entry %v, want %q", e, kvs[keys[i]])
		}
	}
	_, err = r.KV.MultiGet(short(), &routerv1.MultiGetRequest{Keys: keys})
	wantErrN2("MultiGet strict", err)
	// A partial answer needs one partition that answered: keys all on the
	// stopped node fail even with allow_partial.
	var n2Keys []string
	for _, k := range keys {
		if owner, _ := topo.Owner(slot.OfString(k)); owner.ID == "n2" {
			n2Keys = append(n2Keys, k)
		}
	}
	_, err = r.KV.MultiGet(short(), &routerv1.MultiGetRequest{Keys: n2Keys, AllowPartial: true})
	wantErrN2("MultiGet allow_partial, every key on the stopped node", err)

	cnt, err := r.KV.Count(ctx, &routerv1.CountRequest{AllowPartial: true})
	if err != nil {
		t.Fatal(err)
	}
	wantFailedN2("Count", cnt.GetFailed())
	if cnt.GetCount() != uint64(len(kvs))-onN2 {
		t.Errorf("partial count %d, want %d", cnt.GetCount(), uint64(len(kvs))-onN2)
	}
	_, err = r.KV.Count(short(), &routerv1.CountRequest{})
	wantErrN2("Count strict", err)

	sc, err := r.KV.Scan(ctx, &routerv1.ScanRequest{Limit: 1000, AllowPartial: true})
	if err != nil {
		t.Fatal(err)
	}
	wantFailedN2("Scan", sc.GetFailed())
	if uint64(len(sc.GetEntries())) != uint64(len(kvs))-onN2 {
		t.Errorf("partial scan: %d entries, want %d", len(sc.GetEntries()), uint64(len(kvs))-onN2)
	}
	_, err = r.KV.Scan(short(), &routerv1.ScanRequest{})
	wantErrN2("Scan strict", err)

	// REST: 200 with failed; 503 without allow_partial.
	code, m := rest(t, "POST", "http://"+r.HTTP+"/v1/kv:multiGet", `{"keys":["p/1","p/2","p/3"],"allow_partial":true}`, "")
	if fl, _ := m["failed"].([]any); code != 200 || len(fl) != 1 {
		t.Errorf("REST multiGet allow_partial: %d %v", code, m)
	}
	if code, m := rest(t, "GET", "http://"+r.HTTP+"/v1/count", "", ""); code != http.StatusServiceUnavailable {
		t.Errorf("REST count with a node down: %d %v, want 503", code, m)
	}
	if code, m := rest(t, "GET", "http://"+r.HTTP+"/v1/count?allow_partial=true", "", ""); code != 200 || m["count"] != fmt.Sprint(uint64(len(kvs))-onN2) {
		t.Errorf("REST count allow_partial: %d %v, want %d", code, m, uint64(len(kvs))-onN2)
	}
	// Writes: atomic per node, so the error names n2 and n1 took its key.
	_, err = r.KV.MultiPut(short(), &routerv1.MultiPutRequest{Entries: []*routerv1.KeyValue{textKV(keyOn(t, topo, "n2", "w"), "x"), textKV(keyOn(t, topo, "n1", "w"), "y")}})
	wantErrN2("MultiPut", err)
}

type slotKey struct {
	slot uint16
	key  string
}

func sortedSlotKeys(keys []string) []slotKey {
	out := make([]slotKey, len(keys))
	for i, k := range keys {
		out[i] = slotKey{slot.OfString(k), k}
	}
	slices.SortFunc(out, func(a, b slotKey) int {
		return cmp.Or(cmp.Compare(a.slot, b.slot), strings.Compare(a.key, b.key))
	})
	return out
}

// scanAll pages through a scan and returns every entry.
func scanAll(t testing.TB, r *testRouter, req *routerv1.ScanRequest) ([]*routerv1.Entry, int) {
	t.Helper()
	var all []*routerv1.Entry
	pages := 0
	for {
		resp, err := r.KV.Scan(ctxT(t), req)
		if err != nil {
			t.Fatalf("Scan page %d: %v", pages, err)
		}
		pages++
		if limit := cmp.Or(req.GetLimit(), 100); len(resp.GetEntries()) > int(limit) {
			t.Fatalf("page of %d entries, limit %d", len(resp.GetEntries()), limit)
		}
		all = append(all, resp.GetEntries()...)
		if resp.GetNextCursor() == "" {
			return all, pages
		}
		if pages > 10000 {
			t.Fatal("scan does not end")
		}
		req.Cursor = resp.GetNextCursor()
	}
}

func checkScan(t *testing.T, what string, got []*routerv1.Entry, want []slotKey, values map[string]string, keysOnly bool, topo *topology.Topology) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d entries, want %d", what, len(got), len(want))
	}
	for i, e := range got {
		w := want[i]
		if e.GetKey() != w.key || e.GetSlot() != uint32(w.slot) || !e.GetFound() {
			t.Fatalf("%s: entry %d = %v, want %q in slot %d", what, i, e, w.key, w.slot)
		}
		if keysOnly && e.GetData() != nil || !keysOnly && e.GetText() != values[w.key] {
			t.Fatalf("%s: entry %d = %v, want value %q (keys only %v)", what, i, e, values[w.key], keysOnly)
		}
		if topo != nil {
			if o, _ := topo.Owner(w.slot); e.GetPartition() != o.ID {
				t.Fatalf("%s: entry %v from partition %s, want %s", what, e, e.GetPartition(), o.ID)
			}
		}
	}
}

func TestScanAndCount(t *testing.T) {
	t.Parallel()
	_, topo, r := setup(t, 3, router.Options{})
	ctx := ctxT(t)
	values := map[string]string{}
	var keys, aKeys []string
	for i := range 300 {
		k := fmt.Sprintf("a/%03d", i)
		if i%3 == 0 {
			k = fmt.Sprintf("b/%03d", i)
		} else {
			aKeys = append(aKeys, k)
		}
		values[k] = "v" + k
		keys = append(keys, k)
	}
	// Keys sharing a slot (hash tags) so pages break inside a slot too.
	for i := range 20 {
		k := fmt.Sprintf("a/{tag}%02d", i)
		values[k] = "v" + k
		keys = append(keys, k)
		aKeys = append(aKeys, k)
	}
	multiPut(t, r, values)

	// Small pages: their concatenation is the whole (slot, key) order,
	// without duplicates or gaps, across node boundaries.
	for _, limit := range []uint32{1, 7, 64} {
		got, pages := scanAll(t, r, &routerv1.ScanRequest{Limit: limit})
		checkScan(t, fmt.Sprintf("scan limit %d", limit), got, sortedSlotKeys(keys), values, false, topo)
		if limit == 7 && pages < len(keys)/7 {
			t.Errorf("limit 7: %d pages for %d keys", pages, len(keys))
		}
	}
	// Prefix, keys only.
	got, _ := scanAll(t, r, &routerv1.ScanRequest{Prefix: "a/", Limit: 13, KeysOnly: true})
	checkScan(t, "prefix a/ keys only", got, sortedSlotKeys(aKeys), values, true, topo)
	// start_key: everything at or after its (slot, key) position.
	all := sortedSlotKeys(keys)
	startKey := all[len(all)/2].key
	got, _ = scanAll(t, r, &routerv1.ScanRequest{StartKey: startKey, Limit: 9})
	checkScan(t, "start_key", got, all[len(all)/2:], values, false, topo)
	// start_key that is not a stored key: the position is what counts.
	got, _ = scanAll(t, r, &routerv1.ScanRequest{StartKey: "zzz-not-stored", Limit: 50})
	pos := slotKey{slot.OfString("zzz-not-stored"), "zzz-not-stored"}
	i, _ := slices.BinarySearchFunc(all, pos, func(a, b slotKey) int {
		return cmp.Or(cmp.Compare(a.slot, b.slot), strings.Compare(a.key, b.key))
	})
	checkScan(t, "start_key absent", got, all[i:], values, false, topo)
	// Default limit 100.
	first, err := r.KV.Scan(ctx, &routerv1.ScanRequest{})
	if err != nil || len(first.GetEntries()) != 100 || first.GetNextCursor() == "" {
		t.Fatalf("default scan: %d entries, cursor %q, %v", len(first.GetEntries()), first.GetNextCursor(), err)
	}

	cnt, err := r.KV.Count(ctx, &routerv1.CountRequest{})
	if err != nil || cnt.GetCount() != uint64(len(keys)) || len(cnt.GetFailed()) != 0 {
		t.Fatalf("Count = %v, %v; want %d", cnt, err, len(keys))
	}

	// REST: GET /v1/scan with query parameters and cursor, GET /v1/count.
	var restKeys []string
	cursor := ""
	for {
		u := "http://" + r.HTTP + "/v1/scan?prefix=a/&limit=50&keys_only=true"
		if cursor != "" {
			u += "&cursor=" + url.QueryEscape(cursor)
		}
		code, m := rest(t, "GET", u, "", "")
		if code != 200 {
			t.Fatalf("GET /v1/scan: %d %v", code, m)
		}
		es, _ := m["entries"].([]any)
		for _, e := range es {
			restKeys = append(restKeys, e.(map[string]any)["key"].(string))
		}
		cursor, _ = m["next_cursor"].(string)
		if cursor == "" {
			break
		}
	}
	wantA := sortedSlotKeys(aKeys)
	if len(restKeys) != len(wantA) {
		t.Fatalf("REST scan: %d keys, want %d", len(restKeys), len(wantA))
	}
	for i, k := range restKeys {
		if k != wantA[i].key {
			t.Fatalf("REST scan key %d = %q, want %q", i, k, wantA[i].key)
		}
	}
	if code, m := rest(t, "GET", "http://"+r.HTTP+"/v1/count", "", ""); code != 200 || m["count"] != fmt.Sprint(len(keys)) {
		t.Fatalf("GET /v1/count: %d %v", code, m)
	}
	if code, m := rest(t, "GET", "http://"+r.HTTP+"/v1/scan?limit=20000", "", ""); code != http.StatusBadRequest {
		t.Fatalf("GET /v1/scan?limit=20000: %d %v, want 400", code, m)
	}
}

func TestMultiREST(t *testing.T) {
	t.Parallel()
	_, topo, r := setup(t, 3, router.Options{})
	base := "http://" + r.HTTP + "/v1/kv:"
	code, m := rest(t, "POST", base+"multiPut", `{"entries":[{"key":"r/1","text":"one"},{"key":"r/2","value":"/wA="},{"key":"r/3","text":"three"}]}`, "")
	if code != 200 || m["written"] != float64(3) {
		t.Fatalf("multiPut: %d %v", code, m)
	}
	code, m = rest(t, "POST", base+"multiGet", `{"keys":["r/3","r/2","nope","r/1"]}`, "")
	if code != 200 {
		t.Fatalf("multiGet: %d %v", code, m)
	}
	es, _ := m["entries"].([]any)
	if len(es) != 4 {
		t.Fatalf("multiGet: %v", m)
	}
	want := []struct {
		key, field, val string
		found           bool
	}{{"r/3", "text", "three", true}, {"r/2", "value", "/wA=", true}, {"nope", "", "", false}, {"r/1", "text", "one", true}}
	for i, w := range want {
		e := es[i].(map[string]any)
		owner, _ := topo.Owner(slot.OfString(w.key))
		if e["key"] != w.key || e["partition"] != owner.ID || (e["found"] == true) != w.found {
			t.Errorf("entry %d = %v, want key %s partition %s found %v", i, e, w.key, owner.ID, w.found)
		}
		if w.field != "" && e[w.field] != w.val {
			t.Errorf("entry %d = %v, want %s %q", i, e, w.field, w.val)
		}
	}
	code, m = rest(t, "POST", base+"multiDelete", `{"keys":["r/1","r/2"]}`, "")
	if code != 200 || m["deleted"] != float64(2) {
		t.Fatalf("multiDelete: %d %v", code, m)
	}
	if code, m = rest(t, "GET", "http://"+r.HTTP+"/v1/kv/r/1", "", ""); code != http.StatusNotFound {
		t.Fatalf("GET after multiDelete: %d %v", code, m)
	}
	if code, m = rest(t, "POST", base+"multiPut", `{"entries":[{"key":"x"}]}`, ""); code != http.StatusBadRequest {
		t.Fatalf("multiPut without a value: %d %v, want 400", code, m)
	}
	if code, m = rest(t, "POST", base+"multiGet", `{"keys":[""]}`, ""); code != http.StatusBadRequest {
		t.Fatalf("multiGet of an empty key: %d %v, want 400", code, m)
	}
}
