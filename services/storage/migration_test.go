package storage_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/digest"
	"github.com/slotkv/slotkv/pkg/kvpack"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/services/storage/internal/store/storetest"
)

const (
	srcRole = storagev1.MigrationRole_MIGRATION_ROLE_SOURCE
	dstRole = storagev1.MigrationRole_MIGRATION_ROLE_DESTINATION
	commit  = storagev1.MigrationOutcome_MIGRATION_OUTCOME_COMMITTED
	abort   = storagev1.MigrationOutcome_MIGRATION_OUTCOME_ABORTED
)

func sr(a, b uint32) *clusterv1.SlotRange { return &clusterv1.SlotRange{Start: a, End: b} }

// pair is two nodes, a owning 0-8191 and b 8192-16383 at topology version 1.
type pair struct {
	a, b  *testNode
	nodes map[string]string
}

func startPair(t *testing.T) *pair {
	t.Helper()
	oa, ob := testOptions(t, "a"), testOptions(t, "b")
	oa.MaxImportStreams, ob.MaxImportStreams = 2, 2
	p := &pair{a: startNode(t, oa), b: startNode(t, ob)}
	p.nodes = map[string]string{"a": p.a.grpcAddr, "b": p.b.grpcAddr}
	t1 := topo(1, p.nodes, map[string][][2]uint32{"a": {{0, 8191}}, "b": {{8192, 16383}}})
	p.a.setTopology(t, t1)
	p.b.setTopology(t, t1)
	return p
}

func (n *testNode) begin(t *testing.T, job string, role storagev1.MigrationRole, peer string, version uint64, rs ...*clusterv1.SlotRange) error {
	t.Helper()
	_, err := n.mig.BeginMigration(ctxT(t), &storagev1.BeginMigrationRequest{JobId: job, Role: role, Ranges: rs, PeerNodeId: peer, TopologyVersion: version})
	return err
}

func (n *testNode) put(t *testing.T, key, val []byte) {
	t.Helper()
	if _, err := n.data.Put(ctxT(t), &storagev1.PutRequest{Key: key, Value: val}); err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
}

func (n *testNode) del(t *testing.T, key []byte) {
	t.Helper()
	if _, err := n.data.Delete(ctxT(t), &storagev1.DeleteRequest{Key: key}); err != nil {
		t.Fatalf("Delete(%q): %v", key, err)
	}
}

// changes reads every change after seq, page by page (small pages).
func (n *testNode) changes(t *testing.T, job string, after uint64) (out []*storagev1.MigrationEntry, head uint64, frozen bool) {
	t.Helper()
	for {
		res, err := n.mig.ReadChanges(ctxT(t), &storagev1.ReadChangesRequest{JobId: job, AfterSeq: after, Limit: 7})
		if err != nil {
			t.Fatalf("ReadChanges(%s, %d): %v", job, after, err)
		}
		out = append(out, res.GetChanges()...)
		head, frozen = res.GetHeadSeq(), res.GetFrozen()
		if len(res.GetChanges()) == 0 {
			return out, head, frozen
		}
		after = res.GetChanges()[len(res.GetChanges())-1].GetSeq()
	}
}

// scan reads a whole SnapshotScan of ranges.
func (n *testNode) scan(t testing.TB, job string, batch uint32, rs ...*clusterv1.SlotRange) []*storagev1.MigrationEntry {
	t.Helper()
	es, _ := n.scanDigests(t, job, batch, false, rs...)
	return es
}

// scanDigests is scan that also adds up the per-slot digests the source
// sends with each batch, as "count/digest" by slot (see digestMap); with
// packed the batches come packed (pkg/kvpack) and are unpacked here.
func (n *testNode) scanDigests(t testing.TB, job string, batch uint32, packed bool, rs ...*clusterv1.SlotRange) ([]*storagev1.MigrationEntry, map[uint32]string) {
	t.Helper()
	st, err := n.mig.SnapshotScan(ctxT(t), &storagev1.SnapshotScanRequest{JobId: job, Ranges: rs, BatchRecords: batch, Packed: packed})
	if err != nil {
		t.Fatalf("SnapshotScan: %v", err)
	}
	var out []*storagev1.MigrationEntry
	sums := map[uint32]*storagev1.SlotDigest{}
	for {
		res, err := st.Recv()
		if errors.Is(err, io.EOF) {
			var all []*storagev1.SlotDigest
			for _, d := range sums {
				all = append(all, d)
			}
			return out, digestMap(all)
		}
		if err != nil {
			t.Fatalf("SnapshotScan recv: %v", err)
		}
		if packed {
			if len(res.GetEntries()) > 0 {
				t.Fatalf("a packed scan sent %d entries unpacked", len(res.GetEntries()))
			}
			if err := kvpack.ForEachExpiring(res.GetPacked(), func(_ int, k, v []byte, exp int64) error {
				res.Entries = append(res.Entries, &storagev1.MigrationEntry{Key: k, Value: v, Slot: uint32(slot.Of(k)), ExpiresAtMs: exp})
				return nil
			}); err != nil {
				t.Fatalf("packed batch: %v", err)
			}
		}
		if batch > 0 && len(res.GetEntries()) > int(batch) {
			t.Errorf("batch of %d entries, cap %d", len(res.GetEntries()), batch)
		}
		last := res.GetEntries()[len(res.GetEntries())-1]
		if want := slot.AppendKey(nil, uint16(last.GetSlot()), last.GetKey()); !bytes.Equal(res.GetLastPosition(), want) {
			t.Errorf("last_position %q, want %q", res.GetLastPosition(), want)
		}
		var counted uint64
		for _, d := range res.GetDigests() {
			counted += d.GetCount()
			add, err := digest.ParseDigest(d.GetDigest())
			if err != nil {
				t.Fatalf("batch digest of slot %d: %v", d.GetSlot(), err)
			}
			cur := sums[d.GetSlot()]
			if cur == nil {
				cur = &storagev1.SlotDigest{Slot: d.GetSlot(), Digest: make([]byte, digest.DigestSize)}
				sums[d.GetSlot()] = cur
			}
			prev, _ := digest.ParseDigest(cur.Digest)
			cur.Count += d.GetCount()
			cur.Digest = prev.Combine(add).Bytes()
		}
		if counted != uint64(len(res.GetEntries())) {
			t.Errorf("batch digests count %d entries, the batch has %d", counted, len(res.GetEntries()))
		}
		out = append(out, res.GetEntries()...)
	}
}

// importer is one open Import stream.
type importer struct {
	t      *testing.T
	stream grpc.BidiStreamingClient[storagev1.ImportRequest, storagev1.ImportResponse]
	job    string
	id     string
	seq    uint64
}

func (n *testNode) importer(t *testing.T, job, id string) *importer {
	t.Helper()
	st, err := n.mig.Import(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	return &importer{t: t, stream: st, job: job, id: id}
}

// send sends entries as batch seq and returns the answer or the stream error.
func (im *importer) sendSeq(seq uint64, es []*storagev1.MigrationEntry) (*storagev1.ImportResponse, error) {
	if err := im.stream.Send(&storagev1.ImportRequest{JobId: im.job, StreamId: im.id, Seq: seq, Entries: es}); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return im.stream.Recv()
}

// apply sends es in batches of 5 with increasing sequences.
func (im *importer) apply(es []*storagev1.MigrationEntry) {
	im.t.Helper()
	for i := 0; i < len(es); i += 5 {
		im.seq++
		res, err := im.sendSeq(im.seq, es[i:min(i+5, len(es))])
		if err != nil || !res.GetApplied() || res.GetSeq() != im.seq || res.GetStreamId() != im.id {
			im.t.Fatalf("import batch %d: %v, %v", im.seq, res, err)
		}
	}
}

// applyPipelined sends es packed (pkg/kvpack) in batches of 5 without
// waiting, then reads every acknowledgement: they come in order, once each
// batch committed.
func (im *importer) applyPipelined(es []*storagev1.MigrationEntry) {
	im.t.Helper()
	first := im.seq + 1
	for i := 0; i < len(es); i += 5 {
		im.seq++
		var packed []byte
		for _, e := range es[i:min(i+5, len(es))] {
			packed = kvpack.AppendExpiring(packed, e.GetKey(), e.GetValue(), e.GetExpiresAtMs())
		}
		if err := im.stream.Send(&storagev1.ImportRequest{JobId: im.job, StreamId: im.id, Seq: im.seq, Packed: packed}); err != nil {
			im.t.Fatalf("send batch %d: %v", im.seq, err)
		}
	}
	for seq := first; seq <= im.seq; seq++ {
		res, err := im.stream.Recv()
		if err != nil || !res.GetApplied() || res.GetSeq() != seq {
			im.t.Fatalf("acknowledgement %d: %v, %v", seq, res, err)
		}
	}
}

func (im *importer) close() {
	im.t.Helper()
	if err := im.stream.CloseSend(); err != nil {
		im.t.Fatal(err)
	}
	if _, err := im.stream.Recv(); !errors.Is(err, io.EOF) {
		im.t.Fatalf("import stream end: %v", err)
	}
}

func digestMap(sds []*storagev1.SlotDigest) map[uint32]string {
	m := map[uint32]string{}
	for _, d := range sds {
		m[d.GetSlot()] = fmt.Sprintf("%d/%x", d.GetCount(), d.GetDigest())
	}
	return m
}

func equalMaps(a, b map[uint32]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestBeginMigration(t *testing.T) {
	t.Parallel()
	p := startPair(t)
	// j7 holds 100-120 and 300 on a.
	if err := p.a.begin(t, "j7", srcRole, "b", 1, sr(100, 120), sr(300, 300)); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		n     *testNode
		req   *storagev1.BeginMigrationRequest
		code  codes.Code
		field string   // InvalidArgument field
		frag  []string // message fragments
		info  string   // ErrorInfo reason
	}{
		{name: "idempotent", n: p.a, req: &storagev1.BeginMigrationRequest{JobId: "j7", Role: srcRole, Ranges: []*clusterv1.SlotRange{sr(300, 300), sr(100, 120)}, PeerNodeId: "b", TopologyVersion: 1}, code: codes.OK},
		{name: "same job other ranges", n: p.a, req: &storagev1.BeginMigrationRequest{JobId: "j7", Role: srcRole, Ranges: []*clusterv1.SlotRange{sr(100, 121)}, PeerNodeId: "b", TopologyVersion: 1},
			code: codes.FailedPrecondition, frag: []string{`job "j7" exists`}},
		{name: "overlap", n: p.a, req: &storagev1.BeginMigrationRequest{JobId: "j8", Role: srcRole, Ranges: []*clusterv1.SlotRange{sr(90, 400)}, PeerNodeId: "b", TopologyVersion: 1},
			code: codes.FailedPrecondition, frag: []string{"slots 100-120,300 are in migration j7"}},
		{name: "not owned", n: p.a, req: &storagev1.BeginMigrationRequest{JobId: "j9", Role: srcRole, Ranges: []*clusterv1.SlotRange{sr(8000, 8200)}, PeerNodeId: "b", TopologyVersion: 1},
			code: codes.FailedPrecondition, frag: []string{"slot 8192 moved to node b"}, info: "SLOT_MOVED"},
		{name: "stale version", n: p.a, req: &storagev1.BeginMigrationRequest{JobId: "j9", Role: srcRole, Ranges: []*clusterv1.SlotRange{sr(0, 10)}, PeerNodeId: "b", TopologyVersion: 2},
			code: codes.FailedPrecondition, frag: []string{"topology version 2", "holds version 1"}, info: "STALE_TOPOLOGY"},
		{name: "destination owns", n: p.b, req: &storagev1.BeginMigrationRequest{JobId: "j9", Role: dstRole, Ranges: []*clusterv1.SlotRange{sr(8190, 8195)}, PeerNodeId: "a", TopologyVersion: 1},
			code: codes.FailedPrecondition, frag: []string{"slots 8192-8195 are owned by node b"}},
		{name: "destination ok", n: p.b, req: &storagev1.BeginMigrationRequest{JobId: "j7", Role: dstRole, Ranges: []*clusterv1.SlotRange{sr(100, 120), sr(300, 300)}, PeerNodeId: "a", TopologyVersion: 1}, code: codes.OK},
		{name: "no job id", n: p.a, req: &storagev1.BeginMigrationRequest{Role: srcRole, Ranges: []*clusterv1.SlotRange{sr(0, 1)}, PeerNodeId: "b", TopologyVersion: 1}, code: codes.InvalidArgument, field: "job_id"},
		{name: "no role", n: p.a, req: &storagev1.BeginMigrationRequest{JobId: "x", Ranges: []*clusterv1.SlotRange{sr(0, 1)}, PeerNodeId: "b", TopologyVersion: 1}, code: codes.InvalidArgument, field: "role"},
		{name: "no ranges", n: p.a, req: &storagev1.BeginMigrationRequest{JobId: "x", Role: srcRole, PeerNodeId: "b", TopologyVersion: 1}, code: codes.InvalidArgument, field: "ranges"},
		{name: "bad range", n: p.a, req: &storagev1.BeginMigrationRequest{JobId: "x", Role: srcRole, Ranges: []*clusterv1.SlotRange{sr(5, 1)}, PeerNodeId: "b", TopologyVersion: 1}, code: codes.InvalidArgument, field: "ranges[0]"},
		{name: "peer is self", n: p.a, req: &storagev1.BeginMigrationRequest{JobId: "x", Role: srcRole, Ranges: []*clusterv1.SlotRange{sr(0, 1)}, PeerNodeId: "a", TopologyVersion: 1}, code: codes.InvalidArgument, field: "peer_node_id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Not parallel: the cases share the two nodes' states.
			_, err := tc.n.mig.BeginMigration(ctxT(t), tc.req)
			switch {
			case tc.code == codes.OK:
				if err != nil {
					t.Fatal(err)
				}
			case tc.field != "":
				wantField(t, err, tc.field, tc.frag...)
			default:
				wantStatus(t, err, tc.code, tc.frag...)
				if tc.info != "" {
					if got := errorInfo(t, err).GetReason(); got != tc.info {
						t.Errorf("reason %s, want %s", got, tc.info)
					}
				}
			}
		})
	}
	// Node info shows the states; unknown jobs are NotFound except for End.
	info, err := p.a.admin.GetNodeInfo(ctxT(t), &storagev1.GetNodeInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var migrating []string
	for _, s := range info.GetSlotStates() {
		if s.GetState() == clusterv1.SlotState_SLOT_STATE_MIGRATING {
			migrating = append(migrating, fmt.Sprintf("%d-%d/%s/%s", s.GetRange().GetStart(), s.GetRange().GetEnd(), s.GetJobId(), s.GetPeerNodeId()))
		}
	}
	if want := []string{"100-120/j7/b", "300-300/j7/b"}; !slices.Equal(migrating, want) {
		t.Errorf("migrating states %v, want %v", migrating, want)
	}
	_, err = p.a.mig.OpenSnapshot(ctxT(t), &storagev1.OpenSnapshotRequest{JobId: "nope"})
	wantStatus(t, err, codes.NotFound, "nope")
	_, err = p.a.mig.ReadChanges(ctxT(t), &storagev1.ReadChangesRequest{JobId: "nope"})
	wantStatus(t, err, codes.NotFound)
	if _, err := p.a.mig.EndMigration(ctxT(t), &storagev1.EndMigrationRequest{JobId: "nope", Outcome: abort}); err != nil {
		t.Errorf("EndMigration of an unknown job: %v", err)
	}
	_, err = p.a.mig.EndMigration(ctxT(t), &storagev1.EndMigrationRequest{JobId: "j7", Outcome: abort, Wait: true})
	wantField(t, err, "wait", "COMMITTED")
	// Role mismatch: a is j7's source.
	_, err = p.a.mig.GetImportState(ctxT(t), &storagev1.GetImportStateRequest{JobId: "j7"})
	wantStatus(t, err, codes.FailedPrecondition, "source")
	// A destination slot is not served: SLOT_MOVED to the owner, a.
	_, err = p.b.data.Get(ctxT(t), &storagev1.GetRequest{Key: storetest.KeyInSlot(110, "k")})
	wantStatus(t, err, codes.FailedPrecondition)
	if md := errorInfo(t, err).GetMetadata(); md["owner_id"] != "a" {
		t.Errorf("SLOT_MOVED metadata %v, want owner a", md)
	}
}

// TestChangeCapture: every write path into a migrating slot is captured in
// commit order; writes to other slots are not.
func TestChangeCapture(t *testing.T) {
	t.Parallel()
	p := startPair(t)
	ctx := ctxT(t)
	k := func(s uint16, i int) []byte { return storetest.KeyInSlot(s, fmt.Sprint("k", i)) }
	p.a.put(t, k(100, 0), []byte("before")) // before the job: not captured
	if err := p.a.begin(t, "cap", srcRole, "b", 1, sr(100, 109)); err != nil {
		t.Fatal(err)
	}
	type change struct {
		key, val string
		del      bool
	}
	var want []change
	p.a.put(t, k(100, 1), []byte("v1"))
	want = append(want, change{string(k(100, 1)), "v1", false})
	p.a.put(t, k(500, 1), []byte("other")) // not migrating
	p.a.del(t, k(100, 0))
	want = append(want, change{string(k(100, 0)), "", true})
	_, err := p.a.data.BatchWrite(ctx, &storagev1.BatchWriteRequest{Mutations: []*storagev1.Mutation{
		{Key: k(101, 2), Value: []byte("b1")},
		{Key: k(501, 2), Value: []byte("other")},
		{Key: k(100, 1), Delete: true},
		{Key: k(109, 3), Value: []byte{}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, change{string(k(101, 2)), "b1", false}, change{string(k(100, 1)), "", true}, change{string(k(109, 3)), "", false})
	ing, err := p.a.admin.Ingest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ing.Send(&storagev1.IngestRequest{JobId: "bulk", Batch: 1, Records: []*storagev1.IngestRecord{
		{Key: k(600, 4), Value: []byte("other")}, {Key: k(105, 4), Value: []byte("i1")}, {Key: k(106, 5), Value: []byte("i2")},
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ing.Recv(); err != nil {
		t.Fatal(err)
	}
	ing.CloseSend()
	want = append(want, change{string(k(105, 4)), "i1", false}, change{string(k(106, 5)), "i2", false})

	got, head, frozen := p.a.changes(t, "cap", 0)
	if head != uint64(len(want)) || frozen {
		t.Errorf("head %d frozen %v, want %d false", head, frozen, len(want))
	}
	if len(got) != len(want) {
		t.Fatalf("%d changes, want %d: %v", len(got), len(want), got)
	}
	for i, c := range got {
		w := want[i]
		if c.GetSeq() != uint64(i+1) || string(c.GetKey()) != w.key || string(c.GetValue()) != w.val || c.GetDelete() != w.del ||
			c.GetSlot() != uint32(slot.Of(c.GetKey())) {
			t.Errorf("change %d = %v, want seq %d %+v", i, c, i+1, w)
		}
	}
	// From the middle, and past the head.
	if rest, _, _ := p.a.changes(t, "cap", 4); len(rest) != len(want)-4 || rest[0].GetSeq() != 5 {
		t.Errorf("changes after 4: %v", rest)
	}
	if none, head, _ := p.a.changes(t, "cap", 100); len(none) != 0 || head != uint64(len(want)) {
		t.Errorf("changes after 100: %v head %d", none, head)
	}
	ls, err := p.a.mig.ListMigrations(ctx, &storagev1.ListMigrationsRequest{})
	if err != nil || len(ls.GetMigrations()) != 1 || ls.GetMigrations()[0].GetHeadSeq() != uint64(len(want)) || ls.GetMigrations()[0].GetRole() != srcRole {
		t.Errorf("ListMigrations = %v, %v", ls, err)
	}
	// REST: GET /v1/node/migrations.
	code, body := rest(t, p.a, http.MethodGet, "/v1/node/migrations", "", "")
	if code != http.StatusOK || !strings.Contains(fmt.Sprint(body), "cap") {
		t.Errorf("REST migrations: HTTP %d %v", code, body)
	}
}

// TestSnapshotIsolation: the snapshot holds the writes before OpenSnapshot
// and none after; ReadChanges after snapshot_seq holds exactly the later
// ones.
func TestSnapshotIsolation(t *testing.T) {
	t.Parallel()
	p := startPair(t)
	ctx := ctxT(t)
	if err := p.a.begin(t, "iso", srcRole, "b", 1, sr(200, 209)); err != nil {
		t.Fatal(err)
	}
	_, err := p.a.mig.SnapshotScan(ctx, &storagev1.SnapshotScanRequest{JobId: "iso"})
	if err == nil {
		_, err = func() (any, error) {
			st, _ := p.a.mig.SnapshotScan(ctx, &storagev1.SnapshotScanRequest{JobId: "iso"})
			return st.Recv()
		}()
	}
	wantStatus(t, err, codes.FailedPrecondition, "OpenSnapshot")
	for i := range 20 {
		p.a.put(t, storetest.KeyInSlot(uint16(200+i%10), fmt.Sprint("pre", i)), []byte("old"))
	}
	snap, err := p.a.mig.OpenSnapshot(ctx, &storagev1.OpenSnapshotRequest{JobId: "iso"})
	if err != nil || snap.GetSnapshotSeq() != 20 {
		t.Fatalf("OpenSnapshot = %v, %v; want seq 20", snap, err)
	}
	if again, err := p.a.mig.OpenSnapshot(ctx, &storagev1.OpenSnapshotRequest{JobId: "iso"}); err != nil || again.GetSnapshotSeq() != 20 {
		t.Fatalf("OpenSnapshot again = %v, %v", again, err)
	}
	for i := range 5 {
		p.a.put(t, storetest.KeyInSlot(uint16(200+i), fmt.Sprint("pre", i)), []byte("new")) // overwrite
		p.a.put(t, storetest.KeyInSlot(uint16(200+i), fmt.Sprint("post", i)), []byte("new"))
	}
	p.a.del(t, storetest.KeyInSlot(205, "pre5"))

	entries := p.a.scan(t, "iso", 3)
	if len(entries) != 20 {
		t.Fatalf("snapshot holds %d entries, want 20", len(entries))
	}
	for _, e := range entries {
		if string(e.GetValue()) != "old" || !strings.Contains(string(e.GetKey()), "pre") {
			t.Errorf("snapshot entry %q = %q, want a pre-snapshot value", e.GetKey(), e.GetValue())
		}
	}
	after, head, _ := p.a.changes(t, "iso", snap.GetSnapshotSeq())
	if len(after) != 11 || head != 31 || after[0].GetSeq() != 21 {
		t.Fatalf("changes after the snapshot: %d (head %d), want 11 (head 31)", len(after), head)
	}
	for _, c := range after {
		if string(c.GetValue()) != "new" && !c.GetDelete() {
			t.Errorf("change after the snapshot %v", c)
		}
	}
	// Out-of-job ranges are refused, naming the field.
	st, err := p.a.mig.SnapshotScan(ctx, &storagev1.SnapshotScanRequest{JobId: "iso", Ranges: []*clusterv1.SlotRange{sr(205, 210)}})
	if err == nil {
		_, err = st.Recv()
	}
	wantField(t, err, "ranges[0]", "slots 210 are not in job")
	_, err = p.a.mig.SnapshotDigest(ctx, &storagev1.SnapshotDigestRequest{JobId: "iso", Ranges: []*clusterv1.SlotRange{sr(0, 300)}})
	wantField(t, err, "ranges[0]")
	d, err := p.a.mig.SnapshotDigest(ctx, &storagev1.SnapshotDigestRequest{JobId: "iso"})
	if err != nil || d.GetCount() != 20 || len(d.GetSlots()) != 10 {
		t.Fatalf("SnapshotDigest = %v, %v", d, err)
	}
}

// TestParallelSnapshotScans: streams over disjoint sub-ranges share the one
// snapshot and together cover it exactly once, also when resumed.
func TestParallelSnapshotScans(t *testing.T) {
	t.Parallel()
	p := startPair(t)
	want := map[string]string{}
	var muts []*storagev1.Mutation
	for i := range 2000 {
		k := storetest.KeyInSlot(uint16(1000+i%64), fmt.Sprintf("key-%04d", i))
		want[string(k)] = fmt.Sprint("v", i)
		muts = append(muts, &storagev1.Mutation{Key: k, Value: []byte(want[string(k)])})
	}
	if _, err := p.a.data.BatchWrite(ctxT(t), &storagev1.BatchWriteRequest{Mutations: muts}); err != nil {
		t.Fatal(err)
	}
	if err := p.a.begin(t, "par", srcRole, "b", 1, sr(1000, 1063)); err != nil {
		t.Fatal(err)
	}
	if _, err := p.a.mig.OpenSnapshot(ctxT(t), &storagev1.OpenSnapshotRequest{JobId: "par"}); err != nil {
		t.Fatal(err)
	}
	parts := []*clusterv1.SlotRange{sr(1000, 1015), sr(1016, 1031), sr(1032, 1047), sr(1048, 1063)}
	results := make([][]*storagev1.MigrationEntry, len(parts))
	var wg sync.WaitGroup
	for i, r := range parts {
		wg.Go(func() { results[i] = p.a.scan(t, "par", 17, r) })
	}
	// Writes while the scans run change nothing in them.
	for i := range 50 {
		p.a.put(t, storetest.KeyInSlot(uint16(1000+i), "late"), []byte("x"))
	}
	wg.Wait()
	got := map[string]string{}
	for i, es := range results {
		for j, e := range es {
			if _, dup := got[string(e.GetKey())]; dup {
				t.Fatalf("key %q scanned twice", e.GetKey())
			}
			if !(slot.Range{Start: uint16(parts[i].GetStart()), End: uint16(parts[i].GetEnd())}).Contains(uint16(e.GetSlot())) {
				t.Errorf("stream %d returned slot %d", i, e.GetSlot())
			}
			if j > 0 {
				prev := es[j-1]
				if bytes.Compare(slot.AppendKey(nil, uint16(prev.GetSlot()), prev.GetKey()), slot.AppendKey(nil, uint16(e.GetSlot()), e.GetKey())) >= 0 {
					t.Errorf("stream %d out of storage order at %d", i, j)
				}
			}
			got[string(e.GetKey())] = string(e.GetValue())
		}
	}
	if len(got) != len(want) {
		t.Fatalf("scanned %d keys, want %d", len(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%q = %q, want %q", k, got[k], v)
		}
	}
	// Resume from a position: the rest, exactly.
	all := results[0]
	st, err := p.a.mig.SnapshotScan(ctxT(t), &storagev1.SnapshotScanRequest{JobId: "par", Ranges: []*clusterv1.SlotRange{parts[0]},
		StartAfter: slot.AppendKey(nil, uint16(all[99].GetSlot()), all[99].GetKey())})
	if err != nil {
		t.Fatal(err)
	}
	var rest int
	for {
		res, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if rest == 0 && !bytes.Equal(res.GetEntries()[0].GetKey(), all[100].GetKey()) {
			t.Errorf("resume starts at %q, want %q", res.GetEntries()[0].GetKey(), all[100].GetKey())
		}
		rest += len(res.GetEntries())
	}
	if rest != len(all)-100 {
		t.Errorf("resumed scan: %d entries, want %d", rest, len(all)-100)
	}
}

// TestFullMigration drives a whole migration of slots 100-199 from a to b
// by hand, the way the migrator does.
func TestFullMigration(t *testing.T) {
	t.Parallel()
	p := startPair(t)
	ctx := ctxT(t)
	final := map[string]string{} // the data of the moving slots
	key := func(s uint16, i int) []byte { return storetest.KeyInSlot(s, fmt.Sprint("m", i)) }
	for i := range 400 {
		k := key(uint16(100+i%100), i)
		p.a.put(t, k, []byte(fmt.Sprint("v0-", i)))
		final[string(k)] = fmt.Sprint("v0-", i)
	}
	var kept [][]byte // a keeps these (slots 300-309)
	for i := range 50 {
		k := storetest.KeyInSlot(uint16(300+i%10), fmt.Sprint("keep", i))
		p.a.put(t, k, []byte("keep"))
		kept = append(kept, k)
	}
	write := func(i int, round string) {
		k := key(uint16(100+i%100), i)
		if i%7 == 0 {
			p.a.del(t, k)
			delete(final, string(k))
			return
		}
		v := fmt.Sprint(round, "-", i)
		p.a.put(t, k, []byte(v))
		final[string(k)] = v
	}

	// Prepare.
	if err := p.b.begin(t, "job1", dstRole, "a", 1, sr(100, 199)); err != nil {
		t.Fatal(err)
	}
	if err := p.a.begin(t, "job1", srcRole, "b", 1, sr(100, 199)); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 60; i++ {
		write(i, "r1") // captured, before the snapshot
	}
	snap, err := p.a.mig.OpenSnapshot(ctx, &storagev1.OpenSnapshotRequest{JobId: "job1"})
	if err != nil || snap.GetSnapshotSeq() != 60 {
		t.Fatalf("OpenSnapshot = %v, %v", snap, err)
	}
	for i := 30; i < 90; i++ {
		write(i, "r2") // after the snapshot
	}

	// Snapshot: two streams, two import streams, one with a message per
	// entry acknowledged batch by batch, the other packed with every batch
	// in flight at once.
	var wg sync.WaitGroup
	streamed := map[uint32]string{} // the source's batch digests, added up
	for i, r := range []*clusterv1.SlotRange{sr(100, 149), sr(150, 199)} {
		es, ds := p.a.scanDigests(t, "job1", 16, i == 1, r)
		maps.Copy(streamed, ds) // the streams' slots are disjoint
		wg.Go(func() {
			im := p.b.importer(t, "job1", fmt.Sprint("snap-", i))
			if i == 0 {
				im.apply(es)
			} else {
				im.applyPipelined(es)
			}
			im.close()
		})
	}
	wg.Wait()
	sd, err := p.a.mig.SnapshotDigest(ctx, &storagev1.SnapshotDigestRequest{JobId: "job1"})
	if err != nil {
		t.Fatal(err)
	}
	is, err := p.b.mig.GetImportState(ctx, &storagev1.GetImportStateRequest{JobId: "job1", DigestRanges: []*clusterv1.SlotRange{sr(100, 199)}, AppliedDigests: true})
	if err != nil {
		t.Fatal(err)
	}
	if !equalMaps(digestMap(sd.GetSlots()), digestMap(is.GetSlots())) || sd.GetCount() != is.GetCount() || !bytes.Equal(sd.GetDigest(), is.GetDigest()) {
		t.Fatalf("digest at the snapshot: source %d keys, destination %d keys; slots differ", sd.GetCount(), is.GetCount())
	}
	if len(is.GetStreams()) != 2 {
		t.Errorf("import streams %v", is.GetStreams())
	}
	// The digests computed while the data streamed say the same as the
	// read-backs: the source's as it scanned, the destination's as it
	// applied (no read on either side).
	var appliedDigests []*storagev1.SlotDigest
	for _, st := range is.GetStreams() {
		appliedDigests = append(appliedDigests, st.GetApplied()...)
	}
	if want := digestMap(sd.GetSlots()); !equalMaps(streamed, want) || !equalMaps(digestMap(appliedDigests), want) {
		t.Fatalf("streamed digests differ from the snapshot's: source batches %d slots, destination applied %d slots, snapshot %d slots",
			len(streamed), len(appliedDigests), len(want))
	}

	// Catch-up.
	changes := p.b.importer(t, "job1", "changes")
	cs, _, _ := p.a.changes(t, "job1", snap.GetSnapshotSeq())
	changes.apply(cs)
	applied := cs[len(cs)-1].GetSeq()
	for i := 90; i < 120; i++ {
		write(i, "r3")
	}

	// Hand-off. The source's digest is taken first: nothing writes
	// between it and the freeze, and a FROZEN slot serves no reads.
	ad, err := p.a.data.Digest(ctx, &storagev1.DigestRequest{Ranges: []*clusterv1.SlotRange{sr(100, 199)}, PerSlot: true})
	if err != nil {
		t.Fatal(err)
	}
	fr, err := p.a.mig.Freeze(ctx, &storagev1.FreezeRequest{JobId: "job1"})
	if err != nil {
		t.Fatal(err)
	}
	// Frozen already: the same final sequence, and no sync before it.
	if again, err := p.a.mig.Freeze(ctx, &storagev1.FreezeRequest{JobId: "job1"}); err != nil || again.GetFinalSeq() != fr.GetFinalSeq() || again.GetSyncedBeforeMs() != 0 {
		t.Fatalf("Freeze again = %v, %v; want %d and no sync", again, err, fr.GetFinalSeq())
	}
	_, err = p.a.data.Put(ctx, &storagev1.PutRequest{Key: key(150, 1), Value: []byte("no")})
	st := wantStatus(t, err, codes.Unavailable, "frozen")
	var retry *errdetails.RetryInfo
	for _, d := range st.Details() {
		if r, ok := d.(*errdetails.RetryInfo); ok {
			retry = r
		}
	}
	if retry == nil || retry.GetRetryDelay().AsDuration() <= 0 {
		t.Errorf("no RetryInfo in %v", st.Proto())
	}
	// Reads too: the destination may serve from the commit on.
	_, err = p.a.data.Get(ctx, &storagev1.GetRequest{Key: key(150, 50)})
	wantStatus(t, err, codes.Unavailable, "frozen")
	_, err = p.a.data.Scan(ctx, &storagev1.ScanRequest{Ranges: []*clusterv1.SlotRange{{Start: 140, End: 160}}})
	wantStatus(t, err, codes.Unavailable, "frozen")
	if _, err := p.a.data.Put(ctx, &storagev1.PutRequest{Key: kept[0], Value: []byte("keep")}); err != nil {
		t.Errorf("write to a slot a keeps: %v", err)
	}
	cs, head, frozen := p.a.changes(t, "job1", applied)
	if !frozen || head != fr.GetFinalSeq() || cs[len(cs)-1].GetSeq() != fr.GetFinalSeq() {
		t.Fatalf("final changes: head %d frozen %v last %d, want final %d", head, frozen, cs[len(cs)-1].GetSeq(), fr.GetFinalSeq())
	}
	// A freeze can bring the changes to drain, as ReadChanges would, in
	// pages of the caps asked for.
	withChanges := func(rc *storagev1.ReadChangesRequest) (*storagev1.FreezeResponse, error) {
		return p.a.mig.Freeze(ctx, &storagev1.FreezeRequest{JobId: "job1", Changes: rc})
	}
	seqs := func(es []*storagev1.MigrationEntry) []uint64 {
		var out []uint64
		for _, e := range es {
			out = append(out, e.GetSeq())
		}
		return out
	}
	if fc, err := withChanges(&storagev1.ReadChangesRequest{AfterSeq: applied, Limit: 1000}); err != nil || !slices.Equal(seqs(fc.GetChanges()), seqs(cs)) {
		t.Errorf("Freeze with changes after %d = %v, %v; want the changes %v", applied, seqs(fc.GetChanges()), err, seqs(cs))
	}
	if fc, err := withChanges(&storagev1.ReadChangesRequest{JobId: "job1", AfterSeq: applied, Limit: 2}); err != nil || !slices.Equal(seqs(fc.GetChanges()), seqs(cs[:2])) {
		t.Errorf("Freeze with 2 changes = %v, %v; want %v", seqs(fc.GetChanges()), err, seqs(cs[:2]))
	}
	if fc, err := withChanges(&storagev1.ReadChangesRequest{AfterSeq: fr.GetFinalSeq()}); err != nil || len(fc.GetChanges()) != 0 {
		t.Errorf("Freeze with changes after the final one = %v, %v; want none", fc, err)
	}
	_, err = withChanges(&storagev1.ReadChangesRequest{JobId: "job2"})
	wantField(t, err, "changes.job_id", "job2")
	_, err = withChanges(&storagev1.ReadChangesRequest{Limit: 1 << 30})
	wantField(t, err, "changes.limit")
	changes.apply(cs)
	changes.close()
	is, err = p.b.mig.GetImportState(ctx, &storagev1.GetImportStateRequest{JobId: "job1", DigestRanges: []*clusterv1.SlotRange{sr(100, 199)}})
	if err != nil {
		t.Fatal(err)
	}
	if ad.GetCount() != uint64(len(final)) || is.GetCount() != ad.GetCount() || !bytes.Equal(ad.GetDigest(), is.GetDigest()) {
		t.Fatalf("after the final changes: source %d keys, destination %d, want %d; digests equal %v",
			ad.GetCount(), is.GetCount(), len(final), bytes.Equal(ad.GetDigest(), is.GetDigest()))
	}

	// Commit: topology v2 on both.
	t2 := topo(2, p.nodes, map[string][][2]uint32{"a": {{0, 99}, {200, 8191}}, "b": {{100, 199}, {8192, 16383}}})
	_, err = p.a.mig.EndMigration(ctx, &storagev1.EndMigrationRequest{JobId: "job1", Outcome: commit})
	wantStatus(t, err, codes.FailedPrecondition, "install the new topology")
	p.a.setTopology(t, t2, "job1")
	_, err = p.a.data.Get(ctx, &storagev1.GetRequest{Key: key(150, 50)})
	wantStatus(t, err, codes.FailedPrecondition)
	if md := errorInfo(t, err).GetMetadata(); md["owner_id"] != "b" || md["topology_version"] != "2" {
		t.Errorf("source after commit: %v", md)
	}
	p.b.setTopology(t, t2)
	p.b.waitServes(t, key(150, 50))
	for k, v := range final {
		got, err := p.b.data.Get(ctx, &storagev1.GetRequest{Key: []byte(k)})
		if err != nil || string(got.GetValue()) != v {
			t.Fatalf("destination Get(%q) = %q, %v; want %q", k, got.GetValue(), err, v)
		}
	}
	for i := 0; i < 120; i += 7 { // deleted by write
		_, err := p.b.data.Get(ctx, &storagev1.GetRequest{Key: key(uint16(100+i%100), i)})
		wantStatus(t, err, codes.NotFound)
	}
	// A late import batch is refused: the slots are OWNED now.
	late := p.b.importer(t, "job1", "late")
	_, err = late.sendSeq(1, []*storagev1.MigrationEntry{{Key: key(150, 1), Value: []byte("stale"), Slot: uint32(slot.Of(key(150, 1)))}})
	wantStatus(t, err, codes.FailedPrecondition, "no longer IMPORTING")
	for _, n := range []*testNode{p.a, p.b} {
		if _, err := n.mig.EndMigration(ctx, &storagev1.EndMigrationRequest{JobId: "job1", Outcome: commit}); err != nil {
			t.Fatalf("EndMigration COMMITTED on %s: %v", n.opts.NodeID, err)
		}
		if ls, err := n.mig.ListMigrations(ctx, &storagev1.ListMigrationsRequest{}); err != nil || len(ls.GetMigrations()) != 0 {
			t.Errorf("%s still lists %v, %v", n.opts.NodeID, ls, err)
		}
	}

	// Cleanup on the source.
	_, err = p.a.mig.DeleteSlots(ctx, &storagev1.DeleteSlotsRequest{Ranges: []*clusterv1.SlotRange{sr(100, 199), sr(300, 301)}})
	wantStatus(t, err, codes.FailedPrecondition, "slots 300-301 are owned by node a")
	del, err := p.a.mig.DeleteSlots(ctx, &storagev1.DeleteSlotsRequest{Ranges: []*clusterv1.SlotRange{sr(100, 199)}, KeysPerSecond: 100000})
	if err != nil || del.GetDeletedKeys() != uint64(len(final)) {
		t.Fatalf("DeleteSlots = %v, %v; want %d keys", del, err, len(final))
	}
	infoA, _ := p.a.admin.GetNodeInfo(ctx, &storagev1.GetNodeInfoRequest{})
	infoB, _ := p.b.admin.GetNodeInfo(ctx, &storagev1.GetNodeInfoRequest{})
	if infoA.GetKeyCount() != uint64(len(kept)) || infoB.GetKeyCount() != uint64(len(final)) {
		t.Errorf("key counts: a %d (want %d), b %d (want %d)", infoA.GetKeyCount(), len(kept), infoB.GetKeyCount(), len(final))
	}
}

// TestImportIdempotency: re-sent batches are acknowledged without being
// applied again, a wrong slot is refused, and the stream cap holds.
func TestImportIdempotency(t *testing.T) {
	t.Parallel()
	p := startPair(t)
	ctx := ctxT(t)
	// Leftover data in the slots is dropped by BeginMigration.
	if _, err := p.b.mig.BeginMigration(ctx, &storagev1.BeginMigrationRequest{JobId: "imp", Role: dstRole, Ranges: []*clusterv1.SlotRange{sr(50, 59)}, PeerNodeId: "a", TopologyVersion: 1}); err != nil {
		t.Fatal(err)
	}
	e := func(s uint16, i int, v string) *storagev1.MigrationEntry {
		k := storetest.KeyInSlot(s, fmt.Sprint("i", i))
		return &storagev1.MigrationEntry{Key: k, Value: []byte(v), Slot: uint32(s)}
	}
	im := p.b.importer(t, "imp", "s1")
	if res, err := im.sendSeq(1, []*storagev1.MigrationEntry{e(50, 1, "a"), e(51, 2, "b")}); err != nil || !res.GetApplied() {
		t.Fatalf("batch 1: %v, %v", res, err)
	}
	if res, err := im.sendSeq(3, []*storagev1.MigrationEntry{e(50, 1, "c")}); err != nil || !res.GetApplied() {
		t.Fatalf("batch 3: %v, %v", res, err)
	}
	// Resent: not applied again (the value stays "c").
	for _, seq := range []uint64{1, 3, 2} {
		if res, err := im.sendSeq(seq, []*storagev1.MigrationEntry{e(50, 1, "stale")}); err != nil || res.GetApplied() || res.GetSeq() != seq {
			t.Fatalf("resent batch %d: %v, %v", seq, res, err)
		}
	}
	st, err := p.b.mig.GetImportState(ctx, &storagev1.GetImportStateRequest{JobId: "imp", DigestRanges: []*clusterv1.SlotRange{sr(50, 50)}})
	if err != nil || len(st.GetStreams()) != 1 || st.GetStreams()[0].GetLastSeq() != 3 || st.GetStreams()[0].GetEntries() != 3 || st.GetCount() != 1 {
		t.Fatalf("GetImportState = %v, %v", st, err)
	}
	// A slot outside the job ends the stream, naming the entry.
	_, err = im.sendSeq(4, []*storagev1.MigrationEntry{e(50, 3, "x"), e(60, 4, "y")})
	wantField(t, err, "entries[1].slot", "slot 60 is not in job")
	// Packed entries that do not parse end the stream, naming the field.
	im3 := p.b.importer(t, "imp", "s3")
	packed := append(kvpack.Append(nil, e(50, 6, "").GetKey(), []byte("ok")), 0x05, 'a')
	if err := im3.stream.Send(&storagev1.ImportRequest{JobId: "imp", StreamId: "s3", Seq: 1, Packed: packed}); err != nil {
		t.Fatal(err)
	}
	_, err = im3.stream.Recv()
	wantField(t, err, "packed", "entry 1")
	im2 := p.b.importer(t, "imp", "s2")
	bad := e(50, 5, "x")
	bad.Slot = 51
	_, err = im2.sendSeq(1, []*storagev1.MigrationEntry{bad})
	wantField(t, err, "entries[0].slot")
	// The cap (2 per node in startPair): two open streams, the third refused.
	open1, open2 := p.b.importer(t, "imp", "c1"), p.b.importer(t, "imp", "c2")
	for _, o := range []*importer{open1, open2} {
		// Poll: the refused streams above may still hold their slots for a moment.
		deadline := time.Now().Add(10 * time.Second)
		for {
			res, err := o.sendSeq(1, nil)
			if err == nil && res.GetApplied() {
				break
			}
			if status.Code(err) != codes.ResourceExhausted || time.Now().After(deadline) {
				t.Fatalf("stream %s: %v, %v", o.id, res, err)
			}
			time.Sleep(10 * time.Millisecond)
			*o = *p.b.importer(t, "imp", o.id)
		}
	}
	third := p.b.importer(t, "imp", "c3")
	_, err = third.sendSeq(1, nil)
	wantStatus(t, err, codes.ResourceExhausted, "--max-import-streams")
	open1.close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		again := p.b.importer(t, "imp", "c3")
		res, err := again.sendSeq(1, nil)
		if err == nil && res.GetApplied() {
			again.close()
			break
		}
		if status.Code(err) != codes.ResourceExhausted || time.Now().After(deadline) {
			t.Fatalf("after a stream ended: %v, %v", res, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	open2.close()
}

// TestAbort: an aborted source serves its slots as OWNED again without
// capture; an aborted destination drops what it imported.
func TestAbort(t *testing.T) {
	t.Parallel()
	p := startPair(t)
	ctx := ctxT(t)
	k := storetest.KeyInSlot(70, "x")
	p.a.put(t, k, []byte("1"))
	if err := p.b.begin(t, "ab", dstRole, "a", 1, sr(70, 79)); err != nil {
		t.Fatal(err)
	}
	if err := p.a.begin(t, "ab", srcRole, "b", 1, sr(70, 79)); err != nil {
		t.Fatal(err)
	}
	if _, err := p.a.mig.OpenSnapshot(ctx, &storagev1.OpenSnapshotRequest{JobId: "ab"}); err != nil {
		t.Fatal(err)
	}
	p.a.put(t, k, []byte("2"))
	im := p.b.importer(t, "ab", "s")
	var es []*storagev1.MigrationEntry
	for i := range 30 {
		kk := storetest.KeyInSlot(uint16(70+i%10), fmt.Sprint("imp", i))
		es = append(es, &storagev1.MigrationEntry{Key: kk, Value: []byte("v"), Slot: uint32(slot.Of(kk))})
	}
	im.apply(es)
	im.close()
	if _, err := p.a.mig.Freeze(ctx, &storagev1.FreezeRequest{JobId: "ab"}); err != nil {
		t.Fatal(err)
	}

	for _, n := range []*testNode{p.a, p.b} {
		res, err := n.mig.EndMigration(ctx, &storagev1.EndMigrationRequest{JobId: "ab", Outcome: abort})
		if err != nil {
			t.Fatalf("abort on %s: %v", n.opts.NodeID, err)
		}
		if want := map[string]uint64{"a": 0, "b": 30}[n.opts.NodeID]; res.GetDeletedKeys() != want {
			t.Errorf("%s deleted %d keys, want %d", n.opts.NodeID, res.GetDeletedKeys(), want)
		}
		// Idempotent.
		if _, err := n.mig.EndMigration(ctx, &storagev1.EndMigrationRequest{JobId: "ab", Outcome: abort}); err != nil {
			t.Errorf("second abort on %s: %v", n.opts.NodeID, err)
		}
		info, _ := n.admin.GetNodeInfo(ctx, &storagev1.GetNodeInfoRequest{})
		for _, s := range info.GetSlotStates() {
			if s.GetJobId() != "" {
				t.Errorf("%s keeps state %v", n.opts.NodeID, s)
			}
		}
	}
	// The source is OWNED: writes work and are not captured.
	p.a.put(t, k, []byte("3"))
	if got, err := p.a.data.Get(ctx, &storagev1.GetRequest{Key: k}); err != nil || string(got.GetValue()) != "3" {
		t.Fatalf("Get after abort = %v, %v", got, err)
	}
	_, err := p.a.mig.ReadChanges(ctx, &storagev1.ReadChangesRequest{JobId: "ab"})
	wantStatus(t, err, codes.NotFound)
	// A new job with the same id starts from an empty change log.
	if err := p.a.begin(t, "ab", srcRole, "b", 1, sr(70, 79)); err != nil {
		t.Fatal(err)
	}
	if cs, head, _ := p.a.changes(t, "ab", 0); len(cs) != 0 || head != 0 {
		t.Errorf("new job sees %d changes, head %d", len(cs), head)
	}
	// The destination holds nothing in the slots.
	info, _ := p.b.admin.GetNodeInfo(ctx, &storagev1.GetNodeInfoRequest{})
	if info.GetKeyCount() != 0 {
		t.Errorf("destination keeps %d keys", info.GetKeyCount())
	}
}

// TestRestartMidMigration: slot states, job records and the change log
// survive a restart; the snapshot does not, and is opened again.
func TestRestartMidMigration(t *testing.T) {
	t.Parallel()
	oa := testOptions(t, "a")
	a := startNode(t, oa)
	nodes := map[string]string{"a": a.grpcAddr, "b": "10.0.0.2:7100"}
	a.setTopology(t, topo(1, nodes, map[string][][2]uint32{"a": {{0, 8191}}, "b": {{8192, 16383}}}))
	if err := a.begin(t, "rs", srcRole, "b", 1, sr(10, 19)); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		a.put(t, storetest.KeyInSlot(uint16(10+i), "k"), []byte(fmt.Sprint(i)))
	}
	if _, err := a.mig.OpenSnapshot(ctxT(t), &storagev1.OpenSnapshotRequest{JobId: "rs"}); err != nil {
		t.Fatal(err)
	}
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	a2 := startNode(t, oa)
	ls, err := a2.mig.ListMigrations(ctxT(t), &storagev1.ListMigrationsRequest{})
	if err != nil || len(ls.GetMigrations()) != 1 {
		t.Fatalf("ListMigrations after restart = %v, %v", ls, err)
	}
	if m := ls.GetMigrations()[0]; m.GetJobId() != "rs" || m.GetHeadSeq() != 10 || m.GetSnapshotSeq() != 0 || m.GetPeerNodeId() != "b" {
		t.Errorf("after restart: %v", m)
	}
	st, err := a2.mig.SnapshotScan(ctxT(t), &storagev1.SnapshotScanRequest{JobId: "rs"})
	if err == nil {
		_, err = st.Recv()
	}
	wantStatus(t, err, codes.FailedPrecondition, "restart")
	// Capture goes on from the persisted head.
	a2.put(t, storetest.KeyInSlot(15, "after"), []byte("x"))
	cs, head, _ := a2.changes(t, "rs", 0)
	if len(cs) != 11 || head != 11 || string(cs[10].GetValue()) != "x" {
		t.Fatalf("changes after restart: %d, head %d", len(cs), head)
	}
	snap, err := a2.mig.OpenSnapshot(ctxT(t), &storagev1.OpenSnapshotRequest{JobId: "rs"})
	if err != nil || snap.GetSnapshotSeq() != 11 {
		t.Fatalf("OpenSnapshot after restart = %v, %v", snap, err)
	}
	if es := a2.scan(t, "rs", 0); len(es) != 11 {
		t.Errorf("snapshot after restart holds %d entries, want 11", len(es))
	}
	// Freeze survives a restart too.
	fr, err := a2.mig.Freeze(ctxT(t), &storagev1.FreezeRequest{JobId: "rs"})
	if err != nil || fr.GetFinalSeq() != 11 {
		t.Fatalf("Freeze = %v, %v", fr, err)
	}
	if err := a2.stop(); err != nil {
		t.Fatal(err)
	}
	a3 := startNode(t, oa)
	_, err = a3.data.Put(ctxT(t), &storagev1.PutRequest{Key: storetest.KeyInSlot(12, "z"), Value: []byte("z")})
	wantStatus(t, err, codes.Unavailable, "frozen")
	_, err = a3.data.Get(ctxT(t), &storagev1.GetRequest{Key: storetest.KeyInSlot(12, "z")})
	wantStatus(t, err, codes.Unavailable, "frozen")
	if fr2, err := a3.mig.Freeze(ctxT(t), &storagev1.FreezeRequest{JobId: "rs"}); err != nil || fr2.GetFinalSeq() != 11 {
		t.Errorf("Freeze after restart = %v, %v", fr2, err)
	}
	if _, err := a3.mig.EndMigration(ctxT(t), &storagev1.EndMigrationRequest{JobId: "rs", Outcome: abort}); err != nil {
		t.Fatal(err)
	}
	a3.put(t, storetest.KeyInSlot(12, "z"), []byte("z"))
}

// TestMigrationWithExpiry migrates keys that expire: later than the
// migration (they arrive with their exact millisecond expiry), during it
// (in the snapshot, in captured changes, and a value overwritten by one
// that expires: none comes back on the destination, and the older value
// does not resurface), and expiry changes made during the catch-up
// (EXPIRE, PERSIST, GETEX). The streams' digests agree on both sides
// whatever expired meanwhile; once every short expiry has passed, the
// read-back digests of source and destination agree too (Kvrocks #1223).
func TestMigrationWithExpiry(t *testing.T) {
	t.Parallel()
	p := startPair(t)
	ctx := ctxT(t)
	later := nowMs() + 3_600_000 + 321
	type want struct {
		val string
		exp int64 // 0: none
	}
	final := map[string]want{} // the live keys of slots 100-199 at the end
	var short []int64          // expiries the test waits out
	key := func(i int) []byte { return storetest.KeyInSlot(uint16(100+i%100), fmt.Sprint("x", i)) }
	put := func(i int, val string, exp int64) {
		t.Helper()
		if _, err := p.a.data.Put(ctx, &storagev1.PutRequest{Key: key(i), Value: []byte(val), ExpiresAtMs: exp}); err != nil {
			t.Fatal(err)
		}
		if exp != 0 && exp < later {
			short = append(short, exp)
			delete(final, string(key(i)))
			return
		}
		final[string(key(i))] = want{val, exp}
	}
	for i := range 300 {
		switch i % 3 {
		case 0:
			put(i, fmt.Sprint("plain", i), 0)
		case 1:
			put(i, fmt.Sprint("later", i), later+int64(i))
		}
	}
	if err := p.b.begin(t, "jx", dstRole, "a", 1, sr(100, 199)); err != nil {
		t.Fatal(err)
	}
	if err := p.a.begin(t, "jx", srcRole, "b", 1, sr(100, 199)); err != nil {
		t.Fatal(err)
	}
	// Captured before the snapshot, and in it: keys that expire during
	// the migration (i%3 == 2), one overwriting a plain value.
	for i := 2; i < 300; i += 3 {
		put(i, fmt.Sprint("short", i), nowMs()+shortTTL)
	}
	put(0, "short-over-plain", nowMs()+shortTTL)
	atSnap := maps.Clone(final)
	snap, err := p.a.mig.OpenSnapshot(ctx, &storagev1.OpenSnapshotRequest{JobId: "jx"})
	if err != nil {
		t.Fatal(err)
	}
	// After the snapshot: an overwrite that expires, expiry changes.
	put(3, "short-after-snapshot", nowMs()+shortTTL)
	upd := func(i int, req *storagev1.UpdateRequest) {
		t.Helper()
		req.Key = key(i)
		p.a.update(t, req)
	}
	upd(6, &storagev1.UpdateRequest{Op: storagev1.UpdateOp_UPDATE_OP_EXPIRE, ExpiresAtMs: later + 6000})
	final[string(key(6))] = want{"plain6", later + 6000}
	upd(4, &storagev1.UpdateRequest{Op: storagev1.UpdateOp_UPDATE_OP_PERSIST})
	final[string(key(4))] = want{"later4", 0}
	upd(7, &storagev1.UpdateRequest{Op: storagev1.UpdateOp_UPDATE_OP_GET_EX, ExpiresAtMs: later + 7000})
	final[string(key(7))] = want{"later7", later + 7000}
	_, err = p.a.data.Update(ctx, &storagev1.UpdateRequest{Key: key(9), Op: storagev1.UpdateOp_UPDATE_OP_INCR_BY, Delta: 2})
	wantStatus(t, err, codes.FailedPrecondition, "not an integer") // refused: no change captured
	upd(12, &storagev1.UpdateRequest{Op: storagev1.UpdateOp_UPDATE_OP_APPEND, Value: []byte("+")})
	final[string(key(12))] = want{"plain12+", 0}

	// Snapshot, in two streams: one message per entry, and packed.
	streamed := map[uint32]string{}
	var scanned [2][]*storagev1.MigrationEntry
	for i, r := range []*clusterv1.SlotRange{sr(100, 149), sr(150, 199)} {
		es, ds := p.a.scanDigests(t, "jx", 16, i == 1, r)
		maps.Copy(streamed, ds)
		scanned[i] = es
	}
	var withExpiry int
	for _, es := range scanned {
		for _, e := range es {
			w, ok := atSnap[string(e.GetKey())]
			switch {
			case ok && (e.GetExpiresAtMs() != w.exp || string(e.GetValue()) != w.val):
				t.Errorf("snapshot entry %q = %q exp %d, want %q exp %d", e.GetKey(), e.GetValue(), e.GetExpiresAtMs(), w.val, w.exp)
			case !ok && (e.GetExpiresAtMs() == 0 || e.GetExpiresAtMs() >= later):
				t.Errorf("snapshot entry %q = %q exp %d, not a key of the snapshot", e.GetKey(), e.GetValue(), e.GetExpiresAtMs())
			}
			if e.GetExpiresAtMs() != 0 {
				withExpiry++
			}
		}
	}
	if withExpiry == 0 {
		t.Fatal("the snapshot carries no expiry")
	}
	// Half of the snapshot is applied now, the other half once every short
	// expiry has passed (the destination deletes those entries).
	im0 := p.b.importer(t, "jx", "snap-0")
	im0.apply(scanned[0])
	for _, e := range short {
		waitPast(e)
	}
	im1 := p.b.importer(t, "jx", "snap-1")
	im1.applyPipelined(scanned[1])
	im0.close()
	im1.close()
	is, err := p.b.mig.GetImportState(ctx, &storagev1.GetImportStateRequest{JobId: "jx", AppliedDigests: true})
	if err != nil {
		t.Fatal(err)
	}
	var applied []*storagev1.SlotDigest
	for _, st := range is.GetStreams() {
		applied = append(applied, st.GetApplied()...)
	}
	if !equalMaps(streamed, digestMap(applied)) {
		t.Fatalf("the streams' digests differ: source %d slots, destination %d", len(streamed), len(applied))
	}

	// Catch-up and hand-off: the captured puts whose expiry has passed
	// come as deletes.
	changes := p.b.importer(t, "jx", "changes")
	cs, _, _ := p.a.changes(t, "jx", snap.GetSnapshotSeq())
	for _, c := range cs {
		if bytes.Equal(c.GetKey(), key(3)) && !c.GetDelete() {
			t.Errorf("the expired put of %q comes as a put (%v)", key(3), c)
		}
	}
	changes.apply(cs)
	// Before the freeze: a FROZEN slot serves no reads.
	ad, err := p.a.data.Digest(ctx, &storagev1.DigestRequest{Ranges: []*clusterv1.SlotRange{sr(100, 199)}})
	if err != nil {
		t.Fatal(err)
	}
	fr, err := p.a.mig.Freeze(ctx, &storagev1.FreezeRequest{JobId: "jx"})
	if err != nil {
		t.Fatal(err)
	}
	cs, _, _ = p.a.changes(t, "jx", cs[len(cs)-1].GetSeq())
	if len(cs) > 0 {
		changes.apply(cs)
	}
	changes.close()
	is, err = p.b.mig.GetImportState(ctx, &storagev1.GetImportStateRequest{JobId: "jx", DigestRanges: []*clusterv1.SlotRange{sr(100, 199)}})
	if err != nil {
		t.Fatal(err)
	}
	if ad.GetCount() != uint64(len(final)) || is.GetCount() != ad.GetCount() || !bytes.Equal(ad.GetDigest(), is.GetDigest()) {
		t.Fatalf("after the final changes (seq %d): source %d keys, destination %d, want %d; digests equal %v",
			fr.GetFinalSeq(), ad.GetCount(), is.GetCount(), len(final), bytes.Equal(ad.GetDigest(), is.GetDigest()))
	}

	// The destination serves only once it holds the new topology:
	// EndMigration COMMITTED fails at once without wait, and with wait
	// holds until the install, or the call's deadline.
	end := &storagev1.EndMigrationRequest{JobId: "jx", Outcome: commit}
	_, err = p.b.mig.EndMigration(ctx, end)
	wantStatus(t, err, codes.FailedPrecondition, "does not assign slots")
	endWait := &storagev1.EndMigrationRequest{JobId: "jx", Outcome: commit, Wait: true}
	sctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err = p.b.mig.EndMigration(sctx, endWait)
	cancel()
	wantStatus(t, err, codes.DeadlineExceeded)
	var installing atomic.Bool
	waited := make(chan error, 1)
	go func() {
		_, err := p.b.mig.EndMigration(ctx, endWait)
		if err == nil && !installing.Load() {
			err = errors.New("answered before the new topology was committed")
		}
		waited <- err
	}()

	t2 := topo(2, p.nodes, map[string][][2]uint32{"a": {{0, 99}, {200, 8191}}, "b": {{100, 199}, {8192, 16383}}})
	// Both nodes watch the etcd that this commits to.
	installing.Store(true)
	p.a.setTopology(t, t2, "jx")
	p.b.setTopology(t, t2)
	if err := <-waited; err != nil {
		t.Fatalf("EndMigration with wait on the destination: %v", err)
	}
	p.b.waitServes(t, key(0))
	for i := range 300 {
		k := key(i)
		g, err := p.b.data.Get(ctx, &storagev1.GetRequest{Key: k})
		w, ok := final[string(k)]
		if !ok {
			wantStatus(t, err, codes.NotFound)
			continue
		}
		if err != nil || string(g.GetValue()) != w.val || g.GetExpiresAtMs() != w.exp {
			t.Errorf("destination Get(%q) = %q exp %d, %v; want %q exp %d", k, g.GetValue(), g.GetExpiresAtMs(), err, w.val, w.exp)
		}
	}
	for _, n := range []*testNode{p.a, p.b} {
		if _, err := n.mig.EndMigration(ctx, &storagev1.EndMigrationRequest{JobId: "jx", Outcome: commit}); err != nil {
			t.Fatalf("EndMigration on %s: %v", n.opts.NodeID, err)
		}
	}
}
