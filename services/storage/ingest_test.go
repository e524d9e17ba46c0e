package storage_test

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/auth"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/services/storage"
	"github.com/slotkv/slotkv/services/storage/internal/store/storetest"
)

// records returns n records per slot, keyed by tag, in (slot, key) order
// like a bulk-load data file.
func records(tag string, n int, slots ...uint16) []*storagev1.IngestRecord {
	var out []*storagev1.IngestRecord
	for _, s := range slots {
		for i := range n {
			k := storetest.KeyInSlot(s, fmt.Sprintf("%s-%04d", tag, i))
			out = append(out, &storagev1.IngestRecord{Key: k, Value: append([]byte("v="), k...)})
		}
	}
	return out
}

func ingestReq(batch uint64, recs []*storagev1.IngestRecord) *storagev1.IngestRequest {
	return &storagev1.IngestRequest{JobId: "job-1", File: "part-0001.dat", Batch: batch, Records: recs}
}

func recBytes(recs []*storagev1.IngestRecord) (n uint64) {
	for _, r := range recs {
		n += uint64(len(r.GetKey()) + len(r.GetValue()))
	}
	return n
}

// ingest sends reqs on one stream, each after the previous one is
// acknowledged, then closes it. It returns the acks and the stream's
// error: nil when the server ended it cleanly.
func ingest(ctx context.Context, c storagev1.NodeServiceClient, reqs ...*storagev1.IngestRequest) ([]*storagev1.IngestResponse, error) {
	s, err := c.Ingest(ctx)
	if err != nil {
		return nil, err
	}
	var acks []*storagev1.IngestResponse
	for _, r := range reqs {
		if err := s.Send(r); err != nil {
			_, err = s.Recv() // the stream's status
			return acks, err
		}
		ack, err := s.Recv()
		if err != nil {
			return acks, err
		}
		acks = append(acks, ack)
	}
	if err := s.CloseSend(); err != nil {
		return acks, err
	}
	if ack, err := s.Recv(); !errors.Is(err, io.EOF) {
		return acks, fmt.Errorf("after the last ack: got %v, %v; want io.EOF", ack, err)
	}
	return acks, nil
}

// present checks that every record reads back with its value (want true)
// or that none is stored (want false).
func (n *testNode) present(t *testing.T, recs []*storagev1.IngestRecord, want bool) {
	t.Helper()
	for chunk := range slices.Chunk(recs, cmp.Or(n.opts.MaxBatch, storage.DefaultMaxBatch)) {
		req := &storagev1.BatchGetRequest{}
		for _, r := range chunk {
			req.Keys = append(req.Keys, r.GetKey())
		}
		res, err := n.data.BatchGet(ctxT(t), req)
		if err != nil {
			t.Fatalf("BatchGet: %v", err)
		}
		for i, it := range res.GetItems() {
			switch {
			case it.GetFound() != want:
				t.Fatalf("key %q: found = %v, want %v", chunk[i].GetKey(), it.GetFound(), want)
			case want && !bytes.Equal(it.GetValue(), chunk[i].GetValue()):
				t.Fatalf("key %q = %q, want %q", chunk[i].GetKey(), it.GetValue(), chunk[i].GetValue())
			}
		}
	}
}

// logCapture keeps the log records of a node.
type logCapture struct {
	mu   sync.Mutex
	recs []slog.Record
}

type captureHandler struct {
	c     *logCapture
	attrs []slog.Attr
}

func (h captureHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h captureHandler) Handle(_ context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(h.attrs...)
	h.c.mu.Lock()
	defer h.c.mu.Unlock()
	h.c.recs = append(h.c.recs, r)
	return nil
}
func (h captureHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return captureHandler{h.c, append(slices.Clip(h.attrs), a...)}
}
func (h captureHandler) WithGroup(string) slog.Handler { return h }

func (c *logCapture) logger() *slog.Logger { return slog.New(captureHandler{c: c}) }

// ended returns the attributes of every "ingest stream ended" line, and
// the number of Info lines about ingest.
func (c *logCapture) ended() (ends []map[string]string, infos int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.recs {
		if r.Level != slog.LevelInfo || !strings.Contains(r.Message, "ingest") {
			continue
		}
		infos++
		if r.Message == "ingest stream ended" {
			m := map[string]string{}
			r.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value.String(); return true })
			ends = append(ends, m)
		}
	}
	return ends, infos
}

// waitEnded waits for the n-th "ingest stream ended" line and returns it.
func (c *logCapture) waitEnded(t *testing.T, n int) map[string]string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if ends, _ := c.ended(); len(ends) >= n {
			return ends[n-1]
		}
	}
	t.Fatalf("no %d-th ingest stream end logged within 10s", n)
	return nil
}

func TestIngest(t *testing.T) {
	t.Parallel()
	var logs logCapture
	o := testOptions(t, "n1")
	o.Logger = logs.logger()
	n := startNode(t, o)
	n.ownAll(t)
	ctx := ctxT(t)

	var reqs []*storagev1.IngestRequest
	var all []*storagev1.IngestRecord
	for b := range 5 {
		recs := records(fmt.Sprint("b", b), 40, uint16(b*1000), uint16(b*1000+1), 16383-uint16(b))
		reqs = append(reqs, ingestReq(uint64(b+1), recs))
		all = append(all, recs...)
	}
	acks, err := ingest(ctx, n.admin, reqs...)
	if err != nil {
		t.Fatalf("ingest: %v", err)
	}
	if len(acks) != len(reqs) {
		t.Fatalf("%d acks for %d batches", len(acks), len(reqs))
	}
	var wantBytes uint64
	for i, a := range acks {
		want := &storagev1.IngestResponse{Batch: uint64(i + 1), Records: 120, Bytes: recBytes(reqs[i].GetRecords())}
		if a.GetBatch() != want.Batch || a.GetRecords() != want.Records || a.GetBytes() != want.Bytes {
			t.Errorf("ack %d = %v, want %v", i, a, want)
		}
		wantBytes += want.Bytes
	}
	n.present(t, all, true)

	// One Info line for the stream, with its totals; none per batch.
	end := logs.waitEnded(t, 1)
	for k, v := range map[string]string{"job_id": "job-1", "file": "part-0001.dat", "batches": "5", "records": "600", "bytes": fmt.Sprint(wantBytes)} {
		if end[k] != v {
			t.Errorf("log %s = %q, want %q (line %v)", k, end[k], v, end)
		}
	}
	if _, ok := end["duration"]; !ok {
		t.Errorf("log line has no duration: %v", end)
	}
	if _, ok := end["err"]; ok {
		t.Errorf("clean stream logged an error: %v", end)
	}
	if _, infos := logs.ended(); infos != 1 {
		t.Errorf("%d Info lines about ingest, want 1", infos)
	}

	// Pipelined: every batch sent before any ack is read; acks come in
	// order. Same records again: ingest is idempotent.
	s, err := n.admin.Ingest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range reqs {
		if err := s.Send(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	for i := range reqs {
		a, err := s.Recv()
		if err != nil || a.GetBatch() != uint64(i+1) || a.GetRecords() != 120 {
			t.Fatalf("pipelined ack %d = %v, %v", i, a, err)
		}
	}
	if _, err := s.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("end of pipelined stream: %v", err)
	}
	cnt, err := n.data.Count(ctx, &storagev1.CountRequest{})
	if err != nil || cnt.GetCount() != uint64(len(all)) {
		t.Fatalf("Count = %v, %v; want %d (idempotent re-ingest)", cnt, err, len(all))
	}

	// An empty stream and an empty batch are fine.
	if acks, err := ingest(ctx, n.admin); err != nil || len(acks) != 0 {
		t.Errorf("empty stream: %v, %v", acks, err)
	}
	if acks, err := ingest(ctx, n.admin, ingestReq(1, nil)); err != nil || len(acks) != 1 || acks[0].GetRecords() != 0 {
		t.Errorf("empty batch: %v, %v", acks, err)
	}
}

// TestIngestLargeBatch: a batch larger than one Badger transaction (the
// test node's 4 MiB memtables allow about 600 KiB) is written whole.
func TestIngestLargeBatch(t *testing.T) {
	t.Parallel()
	n := startNode(t, testOptions(t, "n1"))
	n.ownAll(t)
	var recs []*storagev1.IngestRecord
	val := bytes.Repeat([]byte("x"), 2000)
	for i := range storage.DefaultMaxBatch {
		recs = append(recs, &storagev1.IngestRecord{Key: fmt.Appendf(nil, "big:%06d", i), Value: val})
	}
	acks, err := ingest(ctxT(t), n.admin, ingestReq(1, recs))
	if err != nil || len(acks) != 1 || acks[0].GetRecords() != uint64(len(recs)) || acks[0].GetBytes() != recBytes(recs) {
		t.Fatalf("ingest = %v, %v", acks, err)
	}
	n.present(t, recs, true)
}

// TestIngestSlotMoved: a batch with a record of a slot owned elsewhere ends
// the stream with SLOT_MOVED naming the owner and writes nothing of that
// batch; the batches acknowledged before stay.
func TestIngestSlotMoved(t *testing.T) {
	t.Parallel()
	var logs logCapture
	o := testOptions(t, "a")
	o.Logger = logs.logger()
	n := startNode(t, o)
	n.setTopology(t, topo(7, map[string]string{"a": n.grpcAddr, "b": "10.9.8.7:7100"},
		map[string][][2]uint32{"a": {{0, 8191}}, "b": {{8192, 16383}}}))
	first := records("first", 20, 1, 2, 8191)
	mixed := records("mixed", 20, 3, 4)
	mixed = append(mixed, records("elsewhere", 1, 9000)...)
	mixed = append(mixed, records("after", 20, 9001, 5)...) // 9001 also moved; 9000 is named
	acks, err := ingest(ctxT(t), n.admin, ingestReq(1, first), ingestReq(2, mixed))
	if len(acks) != 1 || acks[0].GetBatch() != 1 {
		t.Errorf("acks = %v, want batch 1 only", acks)
	}
	wantStatus(t, err, codes.FailedPrecondition, "moved", "records[40]", "batch 2")
	ei := errorInfo(t, err)
	md := ei.GetMetadata()
	if ei.GetReason() != rpcerr.ReasonSlotMoved || md["slot"] != "9000" || md["owner_id"] != "b" ||
		md["owner_address"] != "10.9.8.7:7100" || md["topology_version"] != "7" {
		t.Errorf("ErrorInfo = %v", ei)
	}
	n.present(t, first, true)
	n.present(t, mixed[:40], false) // the owned part of the refused batch
	end := logs.waitEnded(t, 1)
	if end["batches"] != "1" || !strings.Contains(end["err"], "moved") {
		t.Errorf("log line = %v, want 1 batch and the error", end)
	}
}

func TestIngestValidation(t *testing.T) {
	t.Parallel()
	o := testOptions(t, "n1")
	o.MaxKeyBytes, o.MaxValueBytes, o.MaxBatch, o.MaxIngestBytes = 64, 128, 5, 400
	n := startNode(t, o)
	n.ownAll(t)
	rec := func(k string, vlen int) *storagev1.IngestRecord {
		return &storagev1.IngestRecord{Key: []byte(k), Value: bytes.Repeat([]byte("v"), vlen)}
	}
	tests := []struct {
		name      string
		batches   [][]*storagev1.IngestRecord // batch i+1, unless numbers is set
		numbers   []uint64
		acked     int // batches acknowledged before the error
		field     string
		fragments []string
	}{
		{name: "empty key", batches: [][]*storagev1.IngestRecord{{rec("ek1", 1)}, {rec("ek2", 1), {Value: []byte("v")}}},
			acked: 1, field: "records[1].key", fragments: []string{"empty key", "batch 2"}},
		{name: "value too long", batches: [][]*storagev1.IngestRecord{{rec("vl1", 1), rec("vl2", 129)}},
			field: "records[1].value", fragments: []string{"129 bytes", "--max-value-bytes=128"}},
		{name: "key too long", batches: [][]*storagev1.IngestRecord{{rec(strings.Repeat("k", 65), 1)}},
			field: "records[0].key", fragments: []string{"65 bytes", "--max-key-bytes=64"}},
		{name: "too many records", batches: [][]*storagev1.IngestRecord{{rec("tm1", 1), rec("tm2", 1), rec("tm3", 1), rec("tm4", 1), rec("tm5", 1), rec("tm6", 1)}},
			field: "records", fragments: []string{"6 entries", "--max-batch=5"}},
		{name: "too many bytes", batches: [][]*storagev1.IngestRecord{{rec("tb1", 120), rec("tb2", 120), rec("tb3", 120), rec("tb4", 120)}},
			field: "records", fragments: []string{"--max-ingest-bytes=400"}},
		{name: "first batch not 1", batches: [][]*storagev1.IngestRecord{{rec("nb1", 1)}}, numbers: []uint64{2},
			field: "batch", fragments: []string{"batch 2", "batch 1 was expected"}},
		{name: "batch skipped", batches: [][]*storagev1.IngestRecord{{rec("sk1", 1)}, {rec("sk2", 1)}}, numbers: []uint64{1, 3},
			acked: 1, field: "batch", fragments: []string{"batch 3", "batch 2 was expected"}},
		{name: "batch repeated", batches: [][]*storagev1.IngestRecord{{rec("rp1", 1)}, {rec("rp2", 1)}}, numbers: []uint64{1, 1},
			acked: 1, field: "batch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var reqs []*storagev1.IngestRequest
			for i, b := range tt.batches {
				num := uint64(i + 1)
				if tt.numbers != nil {
					num = tt.numbers[i]
				}
				reqs = append(reqs, ingestReq(num, b))
			}
			acks, err := ingest(ctxT(t), n.admin, reqs...)
			if len(acks) != tt.acked {
				t.Errorf("%d batches acknowledged, want %d", len(acks), tt.acked)
			}
			wantField(t, err, tt.field, tt.fragments...)
			// Acknowledged batches stay; nothing valid of the refused one
			// was written.
			for i, b := range tt.batches {
				var valid []*storagev1.IngestRecord
				for _, r := range b {
					if len(r.GetKey()) > 0 && len(r.GetKey()) <= 64 {
						valid = append(valid, r)
					}
				}
				n.present(t, valid, i < tt.acked)
			}
		})
	}
}

func TestIngestNoTopology(t *testing.T) {
	t.Parallel()
	n := startNode(t, testOptions(t, "n1"))
	_, err := ingest(ctxT(t), n.admin, ingestReq(1, records("nt", 2, 5)))
	wantStatus(t, err, codes.FailedPrecondition, "topology")
	if r := errorInfo(t, err).GetReason(); r != rpcerr.ReasonNoTopology {
		t.Errorf("reason %q, want %s", r, rpcerr.ReasonNoTopology)
	}
}

func TestIngestToken(t *testing.T) {
	t.Parallel()
	o := testOptions(t, "n1")
	o.Tokens = auth.Tokens{Data: "data-tok", Admin: "s3cret"}
	n := startNode(t, o)
	n.ownAll(t)
	recs := records("tok", 3, 10)
	for _, tc := range []struct {
		name, token string
		code        codes.Code
	}{
		{"no token", "", codes.Unauthenticated},
		{"wrong token", "nope", codes.PermissionDenied},
		{"data token", "data-tok", codes.PermissionDenied},
	} {
		conn, err := dial.New(n.grpcAddr, dial.Options{Token: tc.token})
		if err != nil {
			t.Fatal(err)
		}
		_, err = ingest(ctxT(t), storagev1.NewNodeServiceClient(conn), ingestReq(1, recs))
		conn.Close()
		if code := statusCode(err); code != tc.code {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.code)
		}
	}
	n.present(t, recs, false)
	if _, err := ingest(ctxT(t), n.admin, ingestReq(1, recs)); err != nil {
		t.Fatalf("with the token: %v", err)
	}
	n.present(t, recs, true)
}

// TestIngestCancel: a client that goes away mid-stream stops the server's
// stream; acknowledged batches stay, a batch in flight is all or nothing.
func TestIngestCancel(t *testing.T) {
	t.Parallel()
	var logs logCapture
	o := testOptions(t, "n1")
	o.Logger = logs.logger()
	n := startNode(t, o)
	n.ownAll(t)
	ctx, cancel := context.WithCancel(ctxT(t))
	s, err := n.admin.Ingest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first, second := records("c1", 50, 100, 200), records("c2", 50, 300, 400)
	if err := s.Send(ingestReq(1, first)); err != nil {
		t.Fatal(err)
	}
	if a, err := s.Recv(); err != nil || a.GetBatch() != 1 {
		t.Fatalf("ack 1 = %v, %v", a, err)
	}
	if err := s.Send(ingestReq(2, second)); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := s.Recv(); statusCode(err) != codes.Canceled {
		t.Errorf("Recv after cancel: %v, want Canceled", err)
	}
	end := logs.waitEnded(t, 1)
	if end["batches"] != "1" && end["batches"] != "2" || end["err"] == "" {
		t.Errorf("log line = %v, want the stream ended by the cancel", end)
	}
	n.present(t, first, true)
	// Batch 2 was never acknowledged to the client: written whole or not at all.
	cnt, err := n.data.Count(ctxT(t), &storagev1.CountRequest{})
	if err != nil || (cnt.GetCount() != 100 && cnt.GetCount() != 200) {
		t.Errorf("Count = %v, %v; want 100 or 200", cnt, err)
	}
	// The node takes new streams.
	if _, err := ingest(ctxT(t), n.admin, ingestReq(1, second)); err != nil {
		t.Fatalf("ingest after a canceled stream: %v", err)
	}
	n.present(t, second, true)
}

func statusCode(err error) codes.Code { return status.Code(err) }

// TestIngestExpiry: records carry their expiry: one that expires later is
// written with it, one already expired is skipped and counted as skipped
// (not in records or bytes) without deleting the key it would overwrite, a
// negative expiry is refused naming the record, and a record refused for
// its slot is named by its index in the batch also after a skipped one.
func TestIngestExpiry(t *testing.T) {
	t.Parallel()
	n := startNode(t, testOptions(t, "a"))
	n.setTopology(t, topo(1, map[string]string{"a": n.grpcAddr, "b": "10.9.8.7:7100"},
		map[string][][2]uint32{"a": {{0, 8191}}, "b": {{8192, 16383}}}))
	ctx := ctxT(t)
	later := nowMs() + 3_600_000 + 5
	recs := records("x", 6, 10)
	for i, r := range recs {
		switch i % 3 {
		case 1:
			r.ExpiresAtMs = later + int64(i)
		case 2:
			r.ExpiresAtMs = nowMs() - 1 // expired already
		}
	}
	// The key of an expired record holds a newer value: it stays.
	n.put(t, recs[2].GetKey(), []byte("newer"))
	acks, err := ingest(ctx, n.admin, ingestReq(1, recs))
	if err != nil || len(acks) != 1 {
		t.Fatalf("ingest = %v, %v", acks, err)
	}
	kept := []*storagev1.IngestRecord{recs[0], recs[1], recs[3], recs[4]}
	if a := acks[0]; a.GetRecords() != 4 || a.GetSkipped() != 2 || a.GetBytes() != recBytes(kept) {
		t.Errorf("ack = %v, want 4 records of %d bytes, 2 skipped", a, recBytes(kept))
	}
	for _, r := range kept {
		g, err := n.data.Get(ctx, &storagev1.GetRequest{Key: r.GetKey()})
		if err != nil || !bytes.Equal(g.GetValue(), r.GetValue()) || g.GetExpiresAtMs() != r.GetExpiresAtMs() {
			t.Errorf("Get(%q) = %q exp %d, %v; want %q exp %d", r.GetKey(), g.GetValue(), g.GetExpiresAtMs(), err, r.GetValue(), r.GetExpiresAtMs())
		}
	}
	if g, err := n.data.Get(ctx, &storagev1.GetRequest{Key: recs[2].GetKey()}); err != nil || string(g.GetValue()) != "newer" {
		t.Errorf("key of a skipped record = %q, %v; want its newer value", g.GetValue(), err)
	}
	_, err = n.data.Get(ctx, &storagev1.GetRequest{Key: recs[5].GetKey()})
	wantStatus(t, err, codes.NotFound)

	bad := records("neg", 2, 11)
	bad[1].ExpiresAtMs = -3
	_, err = ingest(ctx, n.admin, ingestReq(1, bad))
	wantStatus(t, err, codes.InvalidArgument, "records[1].expires_at_ms")

	moved := records("m", 2, 12)
	moved[0].ExpiresAtMs = 1 // skipped
	moved = append(moved, records("elsewhere", 1, 9000)...)
	_, err = ingest(ctx, n.admin, ingestReq(1, moved))
	wantStatus(t, err, codes.FailedPrecondition, "records[2]")
}
