package main

import (
	"bytes"
	"fmt"
	"net"
	"testing"

	badger "github.com/dgraph-io/badger/v4"
	"google.golang.org/grpc"

	"github.com/slotkv/slotkv/pkg/slot"
)

func TestBatchFrame(t *testing.T) {
	var b batch
	want := map[string]string{"\x00\x01a": "1", "\x00\x02bb": "", "\x3f\xffc": string(make([]byte, 300))}
	for k, v := range want {
		b.add([]byte(k), []byte(v))
	}
	p := b.bytes()
	n, kv, _, err := header(p)
	if err != nil || n != 3 || kv != uint64(b.kvBytes) {
		t.Fatalf("header = %d records, %d bytes, %v; want 3, %d", n, kv, err, b.kvBytes)
	}
	got := map[string]string{}
	if err := eachRecord(p, func(k, v []byte) error { got[string(k)] = string(v); return nil }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("decoded %q, want %q", got, want)
	}
	if err := eachRecord(p[:len(p)-1], func(k, v []byte) error { return nil }); err == nil {
		t.Fatal("a cut frame decoded without error")
	}
}

// The relay copies exactly the records of the requested slots, with P
// streams, between two in-process servers.
func TestRelayCopiesTheRange(t *testing.T) {
	src, dst := open(t), open(t)
	wb := src.NewWriteBatch()
	want := 0
	for i := range 5000 {
		k := fmt.Sprintf("key:%d", i)
		s := slot.OfString(k)
		if s <= 5460 {
			want++
		}
		if err := wb.Set(slot.AppendKey(nil, s, []byte(k)), bytes.Repeat([]byte{byte(i)}, 1024)); err != nil {
			t.Fatal(err)
		}
	}
	if err := wb.Flush(); err != nil {
		t.Fatal(err)
	}
	srcAddr, dstAddr := start(t, &sourceDesc, src), start(t, &destDesc, dst)
	for _, p := range []string{"1", "3"} {
		var out bytes.Buffer
		if err := runRelay([]string{"--source", srcAddr, "--dest", dstAddr, "--parallelism", p, "--ranges", "0-5460"}, &out); err != nil {
			t.Fatalf("relay P=%s: %v", p, err)
		}
		t.Logf("P=%s: %s", p, out.String())
		if !bytes.Contains(out.Bytes(), fmt.Appendf(nil, `"keys":%d,`, want)) {
			t.Fatalf("relay P=%s printed %s, want %d keys", p, out.String(), want)
		}
	}
	got := 0
	err := dst.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			s, _, err := slot.SplitKey(it.Item().Key())
			if err != nil || s > 5460 {
				return fmt.Errorf("dest holds %q (slot %d, %v)", it.Item().Key(), s, err)
			}
			v, err := it.Item().ValueCopy(nil)
			if err != nil || len(v) != 1024 {
				return fmt.Errorf("value of %q: %d bytes, %v", it.Item().Key(), len(v), err)
			}
			got++
		}
		return nil
	})
	if err != nil || got != want {
		t.Fatalf("dest holds %d keys (%v), want %d", got, err, want)
	}
}

func open(t *testing.T) *badger.DB {
	db, err := openDB(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func start(t *testing.T, desc *grpc.ServiceDesc, db *badger.DB) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := newServer(desc, db)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}
