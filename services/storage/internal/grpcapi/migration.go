package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/kvpack"
	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/services/storage/internal/migration"
	"github.com/slotkv/slotkv/services/storage/internal/store"
)

// Migration batch caps (SnapshotScan, ReadChanges).
const (
	defaultMigrationRecords = 1000
	maxMigrationRecords     = 100000
	defaultMigrationBytes   = 1 << 20
	// maxMigrationBytes keeps an answer well below the 64 MiB message
	// limit (a batch always holds at least one entry, whatever its size).
	maxMigrationBytes = 32 << 20
)

// MigrationService implements storagev1.MigrationServiceServer on top of
// package migration.
type MigrationService struct {
	storagev1.UnimplementedMigrationServiceServer
	c Config
}

// NewMigrationService returns the migration service; c.Migration is required.
func NewMigrationService(c Config) *MigrationService {
	return &MigrationService{c: c.withDefaults()}
}

// importStreamRetryAfter is the delay suggested to an import stream refused
// at the node's stream limit.
const importStreamRetryAfter = 200 * time.Millisecond

// migStatus maps a domain error to a status: ErrTooManyImportStreams to
// ResourceExhausted with RetryInfo (a stream frees up when another job's
// ends: the migrator waits for one), the rest through rpcerr.ToStatus.
func migStatus(err error) error {
	if errors.Is(err, migration.ErrTooManyImportStreams) {
		st := status.New(codes.ResourceExhausted, err.Error())
		if wd, derr := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(importStreamRetryAfter)}); derr == nil {
			st = wd
		}
		return st.Err()
	}
	return rpcerr.ToStatus(err)
}

func checkJobID(id string) error {
	if err := store.CheckJobID(id); err != nil {
		return rpcerr.InvalidField("job_id", "%v", err)
	}
	return nil
}

// jobRanges validates wire ranges; required says whether an empty list is
// refused (otherwise it means "all of the job's").
func jobRanges(field string, in []*clusterv1.SlotRange, required bool) ([]slot.Range, error) {
	if len(in) == 0 {
		if required {
			return nil, rpcerr.InvalidField(field, "at least one slot range is required")
		}
		return nil, nil
	}
	return ranges(nil, field, in)
}

func batchCaps(records, bytes uint32, recordsField, bytesField string) (int, int, error) {
	r, b := int(records), int(bytes)
	switch {
	case r == 0:
		r = defaultMigrationRecords
	case r > maxMigrationRecords:
		return 0, 0, rpcerr.InvalidField(recordsField, "%d is above the maximum of %d", r, maxMigrationRecords)
	}
	switch {
	case b == 0:
		b = defaultMigrationBytes
	case b > maxMigrationBytes:
		return 0, 0, rpcerr.InvalidField(bytesField, "%d is above the maximum of %d", b, maxMigrationBytes)
	}
	return r, b, nil
}

// BeginMigration starts a job on this node.
func (s *MigrationService) BeginMigration(ctx context.Context, req *storagev1.BeginMigrationRequest) (*storagev1.BeginMigrationResponse, error) {
	if err := checkJobID(req.GetJobId()); err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	var role migration.Role
	switch req.GetRole() {
	case storagev1.MigrationRole_MIGRATION_ROLE_SOURCE:
		role = migration.Source
	case storagev1.MigrationRole_MIGRATION_ROLE_DESTINATION:
		role = migration.Destination
	default:
		return nil, rpcerr.ToStatus(rpcerr.InvalidField("role", "must be SOURCE or DESTINATION, got %v", req.GetRole()))
	}
	rs, err := jobRanges("ranges", req.GetRanges(), true)
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	switch peer := req.GetPeerNodeId(); {
	case peer == "":
		return nil, rpcerr.ToStatus(rpcerr.InvalidField("peer_node_id", "the other node of the migration is required"))
	case peer == s.c.Node.ID():
		return nil, rpcerr.ToStatus(rpcerr.InvalidField("peer_node_id", "is this node (%s): a node cannot migrate to itself", peer))
	}
	set, err := slot.NewRangeSet(rs...)
	if err != nil {
		return nil, rpcerr.ToStatus(rpcerr.InvalidField("ranges", "%v", err))
	}
	seq, err := s.c.Migration.Begin(ctx, migration.BeginRequest{
		Job: req.GetJobId(), Role: role, Ranges: set, Peer: req.GetPeerNodeId(), TopologyVersion: req.GetTopologyVersion(),
	})
	if err != nil {
		s.c.Logger.WarnContext(ctx, "begin migration refused", "job_id", req.GetJobId(), "role", role.String(), "ranges", set.String(), "err", err)
		return nil, migStatus(err)
	}
	return &storagev1.BeginMigrationResponse{ChangeSeq: seq}, nil
}

// OpenSnapshot opens the job's snapshot.
func (s *MigrationService) OpenSnapshot(_ context.Context, req *storagev1.OpenSnapshotRequest) (*storagev1.OpenSnapshotResponse, error) {
	if err := checkJobID(req.GetJobId()); err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	seq, err := s.c.Migration.OpenSnapshot(req.GetJobId())
	if err != nil {
		return nil, migStatus(err)
	}
	return &storagev1.OpenSnapshotResponse{SnapshotSeq: seq}, nil
}

// SnapshotScan streams the snapshot's entries of some of the job's ranges.
func (s *MigrationService) SnapshotScan(req *storagev1.SnapshotScanRequest, stream grpc.ServerStreamingServer[storagev1.SnapshotScanResponse]) error {
	if err := checkJobID(req.GetJobId()); err != nil {
		return rpcerr.ToStatus(err)
	}
	rs, err := jobRanges("ranges", req.GetRanges(), false)
	if err != nil {
		return rpcerr.ToStatus(err)
	}
	var startAfter []byte
	if sa := req.GetStartAfter(); len(sa) > 0 {
		if _, _, err := slot.SplitKey(sa); err != nil {
			return rpcerr.ToStatus(rpcerr.InvalidField("start_after", "not a storage key: %v", err))
		}
		startAfter = sa
	}
	recs, bytes, err := batchCaps(req.GetBatchRecords(), req.GetBatchBytes(), "batch_records", "batch_bytes")
	if err != nil {
		return rpcerr.ToStatus(err)
	}
	ctx := stream.Context()
	err = s.c.Migration.SnapshotScan(migration.ScanRequest{
		Job: req.GetJobId(), Ranges: rs, StartAfter: startAfter, BatchRecords: recs, BatchBytes: bytes,
	}, func(b store.SnapshotBatch) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		out := &storagev1.SnapshotScanResponse{LastPosition: b.Last, Digests: slotDigests(b.Digests)}
		if req.GetPacked() {
			out.Packed = b.Packed
			return stream.Send(out)
		}
		out.Entries = make([]*storagev1.MigrationEntry, len(b.Items))
		slab := make([]storagev1.MigrationEntry, len(b.Items))
		for i, kv := range b.Items {
			e := &slab[i]
			e.Key, e.Value, e.Slot, e.ExpiresAtMs = kv.Key, kv.Value, uint32(kv.Slot), kv.ExpiresAt
			out.Entries[i] = e
		}
		return stream.Send(out)
	})
	return migStatus(err)
}

func slotDigests(sds []store.SlotDigest) []*storagev1.SlotDigest {
	out := make([]*storagev1.SlotDigest, len(sds))
	for i, sd := range sds {
		out[i] = &storagev1.SlotDigest{Slot: uint32(sd.Slot), Count: sd.Count, Digest: sd.Digest.Bytes()}
	}
	return out
}

// SnapshotDigest digests the job's slots in the snapshot, per slot.
func (s *MigrationService) SnapshotDigest(ctx context.Context, req *storagev1.SnapshotDigestRequest) (*storagev1.SnapshotDigestResponse, error) {
	if err := checkJobID(req.GetJobId()); err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	rs, err := jobRanges("ranges", req.GetRanges(), false)
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	d, err := s.c.Migration.SnapshotDigest(ctx, req.GetJobId(), rs)
	if err != nil {
		return nil, migStatus(err)
	}
	return &storagev1.SnapshotDigestResponse{Count: d.Count, Digest: d.Digest.Bytes(), Slots: slotDigests(d.Slots)}, nil
}

// ReadChanges returns the job's captured changes after a sequence.
func (s *MigrationService) ReadChanges(_ context.Context, req *storagev1.ReadChangesRequest) (*storagev1.ReadChangesResponse, error) {
	if err := checkJobID(req.GetJobId()); err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	limit, maxBytes, err := batchCaps(req.GetLimit(), req.GetMaxBytes(), "limit", "max_bytes")
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	return s.readChanges(req.GetJobId(), req.GetAfterSeq(), limit, maxBytes)
}

func (s *MigrationService) readChanges(job string, after uint64, limit, maxBytes int) (*storagev1.ReadChangesResponse, error) {
	ch, err := s.c.Migration.ReadChanges(job, after, limit, maxBytes)
	if err != nil {
		return nil, migStatus(err)
	}
	return &storagev1.ReadChangesResponse{HeadSeq: ch.Head, Frozen: ch.Frozen, Changes: wireChanges(ch.Changes)}, nil
}

func wireChanges(cs []store.Change) []*storagev1.MigrationEntry {
	out := make([]*storagev1.MigrationEntry, len(cs))
	slab := make([]storagev1.MigrationEntry, len(cs))
	for i, c := range cs {
		e := &slab[i]
		e.Key, e.Value, e.Slot, e.Delete, e.Seq, e.ExpiresAtMs = c.Key, c.Value, uint32(c.Slot), c.Delete, c.Seq, c.ExpiresAt
		out[i] = e
	}
	return out
}

// Freeze stops serving the job's slots and, when asked, returns the
// changes up to the final sequence with it.
func (s *MigrationService) Freeze(ctx context.Context, req *storagev1.FreezeRequest) (*storagev1.FreezeResponse, error) {
	if err := checkJobID(req.GetJobId()); err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	cr := req.GetChanges()
	var limit, maxBytes int
	if cr != nil {
		if id := cr.GetJobId(); id != "" && id != req.GetJobId() {
			return nil, rpcerr.ToStatus(rpcerr.InvalidField("changes.job_id", "%q is not the job frozen (%q)", id, req.GetJobId()))
		}
		var err error
		if limit, maxBytes, err = batchCaps(cr.GetLimit(), cr.GetMaxBytes(), "changes.limit", "changes.max_bytes"); err != nil {
			return nil, rpcerr.ToStatus(err)
		}
	}
	fr, err := s.c.Migration.Freeze(ctx, req.GetJobId())
	if err != nil {
		return nil, migStatus(err)
	}
	seq := fr.FinalSeq
	out := &storagev1.FreezeResponse{FinalSeq: seq, SyncedBeforeMs: millis(fr.SyncedBefore)}
	if cr != nil && cr.GetAfterSeq() < seq {
		ch, err := s.readChanges(req.GetJobId(), cr.GetAfterSeq(), limit, maxBytes)
		if err != nil {
			return nil, err
		}
		out.Changes = ch.GetChanges()
	}
	return out, nil
}

// importEntries validates one import request and converts its entries.
func (s *MigrationService) importEntries(req *storagev1.ImportRequest, out []migration.ImportEntry) ([]migration.ImportEntry, error) {
	lim := s.c.Limits
	if err := checkJobID(req.GetJobId()); err != nil {
		return nil, err
	}
	switch id := req.GetStreamId(); {
	case id == "":
		return nil, rpcerr.InvalidField("stream_id", "a stream id is required")
	case len(id) > store.MaxStreamIDBytes:
		return nil, rpcerr.InvalidField("stream_id", "%d bytes, above %d", len(id), store.MaxStreamIDBytes)
	}
	if req.GetSeq() == 0 {
		return nil, rpcerr.InvalidField("seq", "batch sequences start at 1")
	}
	es := req.GetEntries()
	total := 0
	for i, e := range es {
		sl, err := lim.checkEntry("entries", i, e.GetKey(), e.GetValue())
		if err != nil {
			return nil, err
		}
		if e.GetDelete() && len(e.GetValue()) > 0 {
			return nil, rpcerr.InvalidField(fmt.Sprintf("entries[%d].value", i), "a delete carries no value")
		}
		if e.GetSlot() != uint32(sl) {
			return nil, rpcerr.InvalidField(fmt.Sprintf("entries[%d].slot", i), "slot %d is not the slot of the key (%d)", e.GetSlot(), sl)
		}
		if err := checkMutationExpiry(fmt.Sprintf("entries[%d]", i), e.GetDelete(), e.GetExpiresAtMs()); err != nil {
			return nil, err
		}
		total += len(e.GetKey()) + len(e.GetValue())
		out = append(out, migration.ImportEntry{Slot: sl, Mutation: store.Mutation{
			Key: e.GetKey(), Value: e.GetValue(), Delete: e.GetDelete(), ExpiresAt: e.GetExpiresAtMs(),
		}})
	}
	// Packed entries are puts; keys and values alias the request.
	err := kvpack.ForEachExpiring(req.GetPacked(), func(i int, key, value []byte, exp int64) error {
		sl, err := lim.checkEntry("packed", i, key, value)
		if err != nil {
			return err
		}
		if err := checkExpiry(fmt.Sprintf("packed[%d].expires_at_ms", i), exp); err != nil {
			return err
		}
		total += len(key) + len(value)
		out = append(out, migration.ImportEntry{Slot: sl, Mutation: store.Mutation{Key: key, Value: value, ExpiresAt: exp}})
		return nil
	})
	if errors.Is(err, kvpack.ErrCorrupt) {
		return nil, rpcerr.InvalidField("packed", "%v", err)
	}
	if err != nil {
		return nil, err
	}
	if err := lim.checkBatch("entries", len(out)); err != nil {
		return nil, err
	}
	if total > lim.MaxIngestBytes {
		return nil, rpcerr.InvalidField("entries", "%d entries of %d key and value bytes, above the limit --max-ingest-bytes=%d", len(out), total, lim.MaxIngestBytes)
	}
	return out, nil
}

// GetImportState returns the job's import progress and optional digest.
func (s *MigrationService) GetImportState(ctx context.Context, req *storagev1.GetImportStateRequest) (*storagev1.GetImportStateResponse, error) {
	if err := checkJobID(req.GetJobId()); err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	rs, err := jobRanges("digest_ranges", req.GetDigestRanges(), false)
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	st, err := s.c.Migration.ImportState(ctx, req.GetJobId(), rs, req.GetAppliedDigests())
	if err != nil {
		return nil, migStatus(err)
	}
	out := &storagev1.GetImportStateResponse{}
	for _, p := range st.Streams {
		out.Streams = append(out.Streams, &storagev1.ImportStream{StreamId: p.Stream, LastSeq: p.LastSeq, Entries: p.Entries,
			Applied: slotDigests(st.Applied[p.Stream])})
	}
	if d := st.Digest; d != nil {
		out.Count, out.Digest, out.Slots = d.Count, d.Digest.Bytes(), slotDigests(d.Slots)
	}
	return out, nil
}

// EndMigration ends the job on this node.
func (s *MigrationService) EndMigration(ctx context.Context, req *storagev1.EndMigrationRequest) (*storagev1.EndMigrationResponse, error) {
	if err := checkJobID(req.GetJobId()); err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	var outcome migration.Outcome
	switch req.GetOutcome() {
	case storagev1.MigrationOutcome_MIGRATION_OUTCOME_COMMITTED:
		outcome = migration.Committed
	case storagev1.MigrationOutcome_MIGRATION_OUTCOME_ABORTED:
		outcome = migration.Aborted
	default:
		return nil, rpcerr.ToStatus(rpcerr.InvalidField("outcome", "must be COMMITTED or ABORTED, got %v", req.GetOutcome()))
	}
	if req.GetWait() && outcome != migration.Committed {
		return nil, rpcerr.ToStatus(rpcerr.InvalidField("wait", "only an end COMMITTED waits for the node to serve the slots, not %v", req.GetOutcome()))
	}
	var (
		e   migration.Ended
		err error
	)
	if req.GetWait() {
		e, err = s.c.Migration.EndWhenServed(ctx, req.GetJobId())
	} else {
		e, err = s.c.Migration.End(ctx, req.GetJobId(), outcome)
	}
	if err != nil {
		s.c.Logger.WarnContext(ctx, "end migration failed", "job_id", req.GetJobId(), "outcome", req.GetOutcome().String(), "deleted_keys", e.Deleted, "err", err)
		return nil, migStatus(err)
	}
	return &storagev1.EndMigrationResponse{DeletedKeys: e.Deleted, ServingMs: millis(e.Serving)}, nil
}

// DeleteSlots deletes the data of slots this node neither owns nor migrates.
func (s *MigrationService) DeleteSlots(ctx context.Context, req *storagev1.DeleteSlotsRequest) (*storagev1.DeleteSlotsResponse, error) {
	rs, err := jobRanges("ranges", req.GetRanges(), true)
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	n, err := s.c.Migration.DeleteSlots(ctx, rs, req.GetKeysPerSecond())
	if err != nil {
		return nil, migStatus(err)
	}
	return &storagev1.DeleteSlotsResponse{DeletedKeys: n}, nil
}

// ListMigrations lists this node's migrations.
func (s *MigrationService) ListMigrations(context.Context, *storagev1.ListMigrationsRequest) (*storagev1.ListMigrationsResponse, error) {
	limit, open := s.c.Migration.ImportStreams()
	out := &storagev1.ListMigrationsResponse{MaxImportStreams: uint32(limit), OpenImportStreams: uint32(open)}
	for _, in := range s.c.Migration.List() {
		role := storagev1.MigrationRole_MIGRATION_ROLE_SOURCE
		if in.Role == migration.Destination {
			role = storagev1.MigrationRole_MIGRATION_ROLE_DESTINATION
		}
		out.Migrations = append(out.Migrations, &storagev1.NodeMigration{
			JobId: in.Job, Role: role, Ranges: protoRanges(in.Ranges), PeerNodeId: in.Peer,
			Frozen: in.Frozen, HeadSeq: in.HeadSeq, SnapshotSeq: in.SnapshotSeq,
		})
	}
	return out, nil
}

// millis is d in milliseconds, to the microsecond.
func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
