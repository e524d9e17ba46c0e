package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/services/storage/internal/store"
	"github.com/slotkv/slotkv/services/storage/internal/store/storetest"
)

func mustPut(t *testing.T, st *store.Store, key, value []byte) {
	t.Helper()
	if _, err := st.Put(key, value); err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
}

func TestGetPutDelete(t *testing.T) {
	t.Parallel()
	st := storetest.Open(t)
	key := []byte("user:1")
	if _, _, err := st.Get(key); !errors.Is(err, store.ErrNotFound) || !errors.Is(err, rpcerr.ErrNotFound) {
		t.Fatalf("Get of absent key: err = %v, want ErrNotFound", err)
	}
	sl, err := st.Put(key, []byte("v1"))
	if err != nil {
		t.Fatal(err)
	}
	if want := slot.Of(key); sl != want {
		t.Errorf("Put slot = %d, want %d", sl, want)
	}
	mustPut(t, st, key, []byte("v2"))
	v, gs, err := st.Get(key)
	if err != nil || string(v) != "v2" || gs != sl {
		t.Fatalf("Get = %q, %d, %v; want v2, %d, nil", v, gs, err, sl)
	}
	mustPut(t, st, []byte("empty"), nil)
	if v, _, err := st.Get([]byte("empty")); err != nil || v == nil || len(v) != 0 {
		t.Errorf("Get of empty value = %q (nil=%v), %v; want empty non-nil", v, v == nil, err)
	}
	if _, existed, err := st.Delete(key); err != nil || !existed {
		t.Fatalf("Delete = existed %v, %v; want true", existed, err)
	}
	if _, _, err := st.Get(key); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get after Delete: err = %v, want ErrNotFound", err)
	}
	if _, existed, err := st.Delete([]byte("never-there")); err != nil || existed {
		t.Errorf("Delete of absent key: existed %v, %v", existed, err)
	}
}

func TestKeyErrors(t *testing.T) {
	t.Parallel()
	st := storetest.Open(t)
	reserved := storetest.KeyInSlot(0x2162, "") // "{tag}": does not start with "adger!"
	// A user key that starts with "adger!" and lands in slot 0x2162 ("!b").
	var bad []byte
	for i := 0; ; i++ {
		k := fmt.Appendf(nil, "adger!%d", i)
		if slot.Of(k) == 0x2162 {
			bad = k
			break
		}
	}
	tests := []struct {
		name string
		key  []byte
		want error
	}{
		{"empty", nil, store.ErrEmptyKey},
		{"badger reserved", bad, store.ErrReservedKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := st.Put(tt.key, []byte("x")); !errors.Is(err, tt.want) || !errors.Is(err, rpcerr.ErrInvalidArgument) {
				t.Errorf("Put: err = %v, want %v", err, tt.want)
			}
			if _, _, err := st.Get(tt.key); !errors.Is(err, tt.want) {
				t.Errorf("Get: err = %v, want %v", err, tt.want)
			}
		})
	}
	// Other keys of that slot work.
	mustPut(t, st, reserved, []byte("ok"))
}

func TestBatch(t *testing.T) {
	t.Parallel()
	st := storetest.Open(t)
	mustPut(t, st, []byte("gone"), []byte("old"))
	err := st.BatchWrite([]store.Mutation{
		{Key: []byte("a"), Value: []byte("1")},
		{Key: []byte("b"), Value: []byte("2")},
		{Key: []byte("gone"), Delete: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	items, err := st.BatchGet([][]byte{[]byte("b"), []byte("gone"), []byte("a"), []byte("b")})
	if err != nil {
		t.Fatal(err)
	}
	want := []store.Item{
		{Key: []byte("b"), Value: []byte("2"), Found: true, Slot: slot.Of([]byte("b"))},
		{Key: []byte("gone"), Slot: slot.Of([]byte("gone"))},
		{Key: []byte("a"), Value: []byte("1"), Found: true, Slot: slot.Of([]byte("a"))},
		{Key: []byte("b"), Value: []byte("2"), Found: true, Slot: slot.Of([]byte("b"))},
	}
	if len(items) != len(want) {
		t.Fatalf("BatchGet returned %d items, want %d", len(items), len(want))
	}
	for i := range want {
		g, w := items[i], want[i]
		if !bytes.Equal(g.Key, w.Key) || !bytes.Equal(g.Value, w.Value) || g.Found != w.Found || g.Slot != w.Slot {
			t.Errorf("item %d = %+v, want %+v", i, g, w)
		}
	}
}

func TestBatchWriteAtomic(t *testing.T) {
	t.Parallel()
	st := storetest.Open(t)
	err := st.BatchWrite([]store.Mutation{
		{Key: []byte("x1"), Value: []byte("1")},
		{Key: nil, Value: []byte("2")},
		{Key: []byte("x3"), Value: []byte("3")},
	})
	if !errors.Is(err, store.ErrEmptyKey) || !strings.Contains(err.Error(), "mutations[1]") {
		t.Fatalf("err = %v, want ErrEmptyKey naming mutations[1]", err)
	}
	for _, k := range []string{"x1", "x3"} {
		if _, _, err := st.Get([]byte(k)); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s after failed batch: err = %v, want not found", k, err)
		}
	}
}

func TestBatchTooLarge(t *testing.T) {
	t.Parallel()
	st := storetest.OpenOptions(t, storetest.Options(t.TempDir()).WithMemTableSize(1<<20))
	muts := make([]store.Mutation, 2000)
	val := bytes.Repeat([]byte("v"), 1024)
	for i := range muts {
		muts[i] = store.Mutation{Key: fmt.Appendf(nil, "k%05d", i), Value: val}
	}
	err := st.BatchWrite(muts)
	if !errors.Is(err, store.ErrBatchTooLarge) || !errors.Is(err, rpcerr.ErrInvalidArgument) {
		t.Fatalf("err = %v, want ErrBatchTooLarge", err)
	}
	if !strings.Contains(err.Error(), "2000 mutations") {
		t.Errorf("error %q does not name the count", err)
	}
	if n, _ := st.KeyCount(t.Context()); n != 0 {
		t.Errorf("%d keys written by a refused batch", n)
	}
}

// fill writes n keys into each of slots and returns them in storage order.
func fill(t *testing.T, st *store.Store, slots []uint16, n int) []store.KV {
	t.Helper()
	var muts []store.Mutation
	var all []store.KV
	for _, s := range slots {
		for i := range n {
			k := storetest.KeyInSlot(s, fmt.Sprintf("k%03d", i))
			v := fmt.Appendf(nil, "v-%d-%d", s, i)
			muts = append(muts, store.Mutation{Key: k, Value: v})
			all = append(all, store.KV{Slot: s, Key: k, Value: v})
		}
	}
	if err := st.BatchWrite(muts); err != nil {
		t.Fatal(err)
	}
	sortKV(all)
	return all
}

func sortKV(kvs []store.KV) {
	for i := 1; i < len(kvs); i++ {
		for j := i; j > 0 && less(kvs[j], kvs[j-1]); j-- {
			kvs[j], kvs[j-1] = kvs[j-1], kvs[j]
		}
	}
}

func less(a, b store.KV) bool {
	if a.Slot != b.Slot {
		return a.Slot < b.Slot
	}
	return bytes.Compare(a.Key, b.Key) < 0
}

func filter(kvs []store.KV, keep func(store.KV) bool) []store.KV {
	var out []store.KV
	for _, kv := range kvs {
		if keep(kv) {
			out = append(out, kv)
		}
	}
	return out
}

func equalKV(t *testing.T, got, want []store.KV, keysOnly bool) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d items, want %d\ngot:  %v\nwant: %v", len(got), len(want), got, want)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Slot != w.Slot || !bytes.Equal(g.Key, w.Key) {
			t.Fatalf("item %d = (%d, %q), want (%d, %q)", i, g.Slot, g.Key, w.Slot, w.Key)
		}
		if keysOnly {
			if g.Value != nil {
				t.Fatalf("item %d has value %q in a keys-only scan", i, g.Value)
			}
		} else if !bytes.Equal(g.Value, w.Value) {
			t.Fatalf("item %d value = %q, want %q", i, g.Value, w.Value)
		}
	}
}

// scanAll follows Next until the scan is complete.
func scanAll(t *testing.T, st *store.Store, o store.ScanOptions) ([]store.KV, int) {
	t.Helper()
	var all []store.KV
	pages := 0
	for {
		res, err := st.Scan(o)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if pages > 10000 {
			t.Fatal("scan does not terminate")
		}
		all = append(all, res.Items...)
		if res.Next == nil {
			return all, pages
		}
		if len(res.Items) == 0 {
			t.Fatal("page with Next but no items")
		}
		o.Start = res.Next
	}
}

func TestScan(t *testing.T) {
	t.Parallel()
	st := storetest.Open(t)
	slots := []uint16{0, 1, 7, 100, 8000, slot.MaxSlot}
	all := fill(t, st, slots, 12)
	// System records and keys of other slots must never appear.
	mustPut(t, st, storetest.KeyInSlot(50, "other"), []byte("x"))

	in := func(rs ...slot.Range) func(store.KV) bool {
		return func(kv store.KV) bool {
			for _, r := range rs {
				if r.Contains(kv.Slot) {
					return true
				}
			}
			return false
		}
	}
	full := []slot.Range{{Start: 0, End: 49}, {Start: 51, End: slot.MaxSlot}}
	tests := []struct {
		name string
		o    store.ScanOptions
		want []store.KV
	}{
		{"all", store.ScanOptions{Ranges: full}, all},
		{"one slot", store.ScanOptions{Ranges: []slot.Range{{Start: 7, End: 7}}}, filter(all, in(slot.Range{Start: 7, End: 7}))},
		{"unsorted overlapping ranges", store.ScanOptions{Ranges: []slot.Range{{Start: 8000, End: 9000}, {Start: 0, End: 1}, {Start: 1, End: 5}}},
			filter(all, in(slot.Range{Start: 0, End: 5}, slot.Range{Start: 8000, End: 9000}))},
		{"empty range", store.ScanOptions{Ranges: []slot.Range{{Start: 2, End: 6}}}, nil},
		{"prefix", store.ScanOptions{Ranges: full, Prefix: storetest.KeyInSlot(100, "k00")},
			filter(all, func(kv store.KV) bool {
				return kv.Slot == 100 && bytes.HasPrefix(kv.Key, storetest.KeyInSlot(100, "k00"))
			})},
		{"prefix matching no key", store.ScanOptions{Ranges: full, Prefix: []byte("zzz")}, nil},
		{"start mid slot", store.ScanOptions{Ranges: full, Start: &store.Position{Slot: 100, Key: storetest.KeyInSlot(100, "k005")}},
			filter(all, func(kv store.KV) bool {
				return kv.Slot > 100 || kv.Slot == 100 && bytes.Compare(kv.Key, storetest.KeyInSlot(100, "k005")) >= 0
			})},
		{"start in empty slot", store.ScanOptions{Ranges: full, Start: &store.Position{Slot: 3}}, filter(all, func(kv store.KV) bool { return kv.Slot >= 3 })},
		{"start after ranges", store.ScanOptions{Ranges: []slot.Range{{Start: 0, End: 7}}, Start: &store.Position{Slot: 8}}, nil},
		{"limit", store.ScanOptions{Ranges: full, Limit: 5}, all[:5]},
		{"keys only", store.ScanOptions{Ranges: full, KeysOnly: true, Limit: 30}, all[:30]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res, err := st.Scan(tt.o)
			if err != nil {
				t.Fatal(err)
			}
			equalKV(t, res.Items, tt.want, tt.o.KeysOnly)
			complete := tt.o.Limit == 0 || len(tt.want) < tt.o.Limit
			if complete != (res.Next == nil) {
				t.Errorf("Next = %v, complete = %v", res.Next, complete)
			}
			if res.Next != nil {
				last := res.Items[len(res.Items)-1]
				if res.Next.Slot != last.Slot || string(res.Next.Key) != string(last.Key)+"\x00" {
					t.Errorf("Next = (%d, %q), want last key + NUL (%d, %q)", res.Next.Slot, res.Next.Key, last.Slot, last.Key)
				}
			}
		})
	}

	t.Run("continuation", func(t *testing.T) {
		t.Parallel()
		for _, limit := range []int{1, 5, 12, 13, 71, 72} {
			for _, prefix := range [][]byte{nil, []byte("{")} {
				for _, keysOnly := range []bool{false, true} {
					got, pages := scanAll(t, st, store.ScanOptions{Ranges: full, Limit: limit, Prefix: prefix, KeysOnly: keysOnly})
					equalKV(t, got, all, keysOnly)
					if want := (len(all) + limit - 1) / limit; pages != want {
						t.Errorf("limit %d: %d pages, want %d (a full last page must not need an empty extra page)", limit, pages, want)
					}
				}
			}
		}
	})
	t.Run("byte budget", func(t *testing.T) {
		t.Parallel()
		res, err := st.Scan(store.ScanOptions{Ranges: full, MaxBytes: 100})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Items) == 0 || len(res.Items) >= len(all) || res.Next == nil {
			t.Fatalf("budget of 100 bytes returned %d of %d items, next %v", len(res.Items), len(all), res.Next)
		}
		got, _ := scanAll(t, st, store.ScanOptions{Ranges: full, MaxBytes: 1})
		equalKV(t, got, all, false) // one item per page, never zero
	})
}

func TestScanErrors(t *testing.T) {
	t.Parallel()
	st := storetest.Open(t)
	tests := []struct {
		name string
		o    store.ScanOptions
	}{
		{"no ranges", store.ScanOptions{}},
		{"reversed range", store.ScanOptions{Ranges: []slot.Range{{Start: 5, End: 4}}}},
		{"slot out of range", store.ScanOptions{Ranges: []slot.Range{{Start: 0, End: slot.Count}}}},
		{"limit too big", store.ScanOptions{Ranges: []slot.Range{{Start: 0, End: 1}}, Limit: store.MaxScanLimit + 1}},
		{"start slot out of range", store.ScanOptions{Ranges: []slot.Range{{Start: 0, End: 1}}, Start: &store.Position{Slot: slot.Count}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := st.Scan(tt.o); !errors.Is(err, store.ErrBadScan) || !errors.Is(err, rpcerr.ErrInvalidArgument) {
				t.Errorf("err = %v, want ErrBadScan", err)
			}
		})
	}
}

func TestCount(t *testing.T) {
	t.Parallel()
	st := storetest.Open(t)
	fill(t, st, []uint16{0, 9, 10, slot.MaxSlot}, 7)
	if err := st.UpdateSystem(func(tx *store.SystemTxn) error { return tx.Set("x", []byte("y")) }); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		ranges []slot.Range
		want   uint64
	}{
		{[]slot.Range{{Start: 0, End: slot.MaxSlot}}, 28},
		{[]slot.Range{{Start: 0, End: 9}}, 14},
		{[]slot.Range{{Start: 1, End: 8}}, 0},
		{[]slot.Range{{Start: 10, End: 10}, {Start: slot.MaxSlot, End: slot.MaxSlot}}, 14},
	}
	for _, tt := range tests {
		got, err := st.Count(t.Context(), tt.ranges)
		if err != nil || got != tt.want {
			t.Errorf("Count(%v) = %d, %v; want %d", tt.ranges, got, err, tt.want)
		}
	}
	if n, err := st.KeyCount(t.Context()); err != nil || n != 28 {
		t.Errorf("KeyCount = %d, %v; want 28 (system records excluded)", n, err)
	}
}

func TestDigest(t *testing.T) {
	t.Parallel()
	type kv struct{ k, v string }
	var data []kv
	for i := range 300 {
		data = append(data, kv{fmt.Sprintf("key-%d", i), fmt.Sprintf("value-%d", i)})
	}
	full := []slot.Range{{Start: 0, End: slot.MaxSlot}}
	digestOf := func(order []int, batch bool) store.DigestResult {
		st := storetest.Open(t)
		if batch {
			var muts []store.Mutation
			for _, i := range order {
				muts = append(muts, store.Mutation{Key: []byte(data[i].k), Value: []byte(data[i].v)})
			}
			if err := st.BatchWrite(muts); err != nil {
				t.Fatal(err)
			}
		} else {
			for _, i := range order {
				mustPut(t, st, []byte(data[i].k), []byte(data[i].v))
			}
		}
		res, err := st.Digest(t.Context(), full, true)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	forward := make([]int, len(data))
	for i := range forward {
		forward[i] = i
	}
	shuffled := rand.New(rand.NewPCG(7, 9)).Perm(len(data))
	a, b := digestOf(forward, false), digestOf(shuffled, true)
	if a.Count != 300 || a.Digest != b.Digest || a.Count != b.Count {
		t.Fatalf("same data, different order: %v/%d vs %v/%d", a.Digest, a.Count, b.Digest, b.Count)
	}
	if a.Digest == (store.Digest{}) {
		t.Fatal("digest of 300 entries is zero")
	}
	// Per-slot digests combine to the total, and each matches a one-slot digest.
	var sum store.Digest
	var n uint64
	for _, sd := range a.Slots {
		sum = sum.Combine(sd.Digest)
		n += sd.Count
	}
	if sum != a.Digest || n != a.Count {
		t.Errorf("per-slot digests combine to %v/%d, total is %v/%d", sum, n, a.Digest, a.Count)
	}

	st := storetest.Open(t)
	for _, d := range data {
		mustPut(t, st, []byte(d.k), []byte(d.v))
	}
	first := a.Slots[0].Slot
	one, err := st.Digest(t.Context(), []slot.Range{{Start: first, End: first}}, false)
	if err != nil || one.Digest != a.Slots[0].Digest || one.Count != a.Slots[0].Count || one.Slots != nil {
		t.Errorf("one-slot digest %v/%d (%v), per-slot %v/%d", one.Digest, one.Count, err, a.Slots[0].Digest, a.Slots[0].Count)
	}
	// Split the space in two: the halves combine to the whole.
	lo, _ := st.Digest(t.Context(), []slot.Range{{Start: 0, End: 8191}}, false)
	hi, _ := st.Digest(t.Context(), []slot.Range{{Start: 8192, End: slot.MaxSlot}}, false)
	if lo.Digest.Combine(hi.Digest) != a.Digest {
		t.Error("digests of two halves do not combine to the whole")
	}

	changes := []struct {
		name string
		do   func() error
	}{
		{"value changed", func() error { _, err := st.Put([]byte(data[5].k), []byte("other")); return err }},
		{"key deleted", func() error { _, _, err := st.Delete([]byte(data[6].k)); return err }},
		{"key added", func() error { _, err := st.Put([]byte("new"), nil); return err }},
	}
	prev := a.Digest
	for _, c := range changes {
		if err := c.do(); err != nil {
			t.Fatal(err)
		}
		res, err := st.Digest(t.Context(), full, false)
		if err != nil {
			t.Fatal(err)
		}
		if res.Digest == prev {
			t.Errorf("%s: digest unchanged", c.name)
		}
		prev = res.Digest
	}
}

func TestSystemRecords(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	st, err := store.Open(storetest.Options(dir))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetSystem("topology"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("absent record: err = %v", err)
	}
	boom := errors.New("boom")
	err = st.UpdateSystem(func(tx *store.SystemTxn) error {
		if err := tx.Set("a", []byte("1")); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	if _, err := st.GetSystem("a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("record of a failed txn is visible: %v", err)
	}
	if err := st.UpdateSystem(func(tx *store.SystemTxn) error { return tx.Set("a", []byte("1")) }); err != nil {
		t.Fatal(err)
	}
	mustPut(t, st, []byte("user"), []byte("data"))
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := st.Put([]byte("k"), nil); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Put after Close: err = %v, want ErrClosed", err)
	}

	st = storetest.OpenOptions(t, storetest.Options(dir))
	if v, err := st.GetSystem("a"); err != nil || string(v) != "1" {
		t.Errorf("record after reopen = %q, %v", v, err)
	}
	if v, _, err := st.Get([]byte("user")); err != nil || string(v) != "data" {
		t.Errorf("data after reopen = %q, %v", v, err)
	}
	if lsm, vlog, err := st.Size(); err != nil || lsm+vlog <= 0 {
		t.Errorf("Size = %d, %d, %v; want bytes on disk", lsm, vlog, err)
	}
}

// TestFormatMismatch: a directory of an unknown format is refused; one
// of format 1 (before drop records) opens, with its data, and is stamped 2.
func TestFormatMismatch(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		format, want string // want "": refused
	}{
		{"99", ""},
		{"1", "2"},
		{"2", "2"},
	} {
		t.Run("format "+tc.format, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			st, err := store.Open(storetest.Options(dir))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.Put([]byte("k"), []byte("v")); err != nil {
				t.Fatal(err)
			}
			if err := st.UpdateSystem(func(tx *store.SystemTxn) error { return tx.Set("format", []byte(tc.format)) }); err != nil {
				t.Fatal(err)
			}
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			st, err = store.Open(storetest.Options(dir))
			if tc.want == "" {
				if !errors.Is(err, store.ErrFormat) {
					if err == nil {
						st.Close()
					}
					t.Fatalf("open of format %s: err = %v, want ErrFormat", tc.format, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("open of format %s: %v", tc.format, err)
			}
			defer st.Close()
			if v, err := st.GetSystem("format"); err != nil || string(v) != tc.want {
				t.Errorf("format after open = %q, %v; want %q", v, err, tc.want)
			}
			if v, _, err := st.Get([]byte("k")); err != nil || string(v) != "v" {
				t.Errorf("data after open = %q, %v", v, err)
			}
		})
	}
}

// TestCanceledWalks: Count, KeyCount and Digest stop at a canceled context
// (a caller that went away) instead of reading every key.
func TestCanceledWalks(t *testing.T) {
	t.Parallel()
	st := storetest.Open(t)
	muts := make([]store.Mutation, 5000)
	for i := range muts {
		muts[i] = store.Mutation{Key: fmt.Appendf(nil, "k%05d", i), Value: []byte("v")}
	}
	if err := st.BatchWrite(muts); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	full := []slot.Range{{Start: 0, End: slot.MaxSlot}}
	walks := []struct {
		name string
		run  func(context.Context) error
	}{
		{"Count", func(ctx context.Context) error { _, err := st.Count(ctx, full); return err }},
		{"KeyCount", func(ctx context.Context) error { _, err := st.KeyCount(ctx); return err }},
		{"Digest", func(ctx context.Context) error { _, err := st.Digest(ctx, full, true); return err }},
	}
	for _, w := range walks {
		t.Run(w.name, func(t *testing.T) {
			if err := w.run(ctx); !errors.Is(err, context.Canceled) {
				t.Errorf("with a canceled context: %v, want context.Canceled", err)
			}
			if err := w.run(t.Context()); err != nil {
				t.Errorf("with a live context: %v", err)
			}
		})
	}
}
