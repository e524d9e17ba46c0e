package migration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/topology"
	"github.com/slotkv/slotkv/services/storage/internal/node"
	"github.com/slotkv/slotkv/services/storage/internal/store"
)

// DefaultMaxImportStreams is the import streams a node accepts at once.
const DefaultMaxImportStreams = 16

// Sentinel errors.
var (
	// ErrJobNotFound: the node takes no part in the job.
	ErrJobNotFound = fmt.Errorf("migration job %w", rpcerr.ErrNotFound)
	// ErrTooManyImportStreams: the node's import stream cap is reached. It
	// matches no rpcerr sentinel: the gRPC layer maps it to
	// ResourceExhausted.
	ErrTooManyImportStreams = errors.New("too many import streams")
)

// Role is a node's side of a migration.
type Role uint8

// Roles.
const (
	Source Role = iota + 1
	Destination
)

func (r Role) String() string {
	switch r {
	case Source:
		return "source"
	case Destination:
		return "destination"
	}
	return fmt.Sprintf("Role(%d)", r)
}

// Outcome is how a migration ends.
type Outcome uint8

// Outcomes.
const (
	Committed Outcome = iota + 1
	Aborted
)

// record is the persisted job record, system record "m" + job id.
type record struct {
	Job             string    `json:"job"`
	Role            Role      `json:"role"`
	Ranges          string    `json:"ranges"`
	Peer            string    `json:"peer"`
	TopologyVersion uint64    `json:"topology_version"`
	Created         time.Time `json:"created"`
	// Source: frozen, and the final change sequence.
	Frozen   bool   `json:"frozen,omitempty"`
	FinalSeq uint64 `json:"final_seq,omitempty"`
	// Destination: leftover data deleted (imports allowed), abort started.
	Cleaned  bool `json:"cleaned,omitempty"`
	Aborting bool `json:"aborting,omitempty"`
}

func recordName(job string) string { return store.JobRecordSpace + job }

// job is one migration this node takes part in. rec, snap and streams are
// guarded by Manager.mu; id, ranges and log never change.
type job struct {
	id      string
	rec     record
	ranges  slot.RangeSet
	log     *store.ChangeLog // source
	snap    *store.Snapshot  // source, after OpenSnapshot
	streams map[string]*importStream
}

// importStream is the state of one import stream of a destination job.
// Batches of a stream are submitted one at a time (mu) and commit in the
// background, several at once; applied is updated as each commits.
type importStream struct {
	mu     sync.Mutex // held while a batch is submitted
	loaded bool       // prog read from the store
	prog   store.ImportProgress

	dmu     sync.Mutex // guards applied and failed; taken per committed batch
	applied map[uint16]store.SlotDigest
	failed  error
}

// commitDone records a committed (or failed) batch of the stream.
func (st *importStream) commitDone(digests []store.SlotDigest, err error) {
	st.dmu.Lock()
	defer st.dmu.Unlock()
	if err != nil {
		if st.failed == nil {
			st.failed = err
		}
		return
	}
	for _, d := range digests {
		cur := st.applied[d.Slot]
		cur.Slot = d.Slot
		cur.Count += d.Count
		cur.Digest = cur.Digest.Combine(d.Digest)
		st.applied[d.Slot] = cur
	}
}

// err is the error of a batch of the stream that failed to commit, if any.
func (st *importStream) err() error {
	st.dmu.Lock()
	defer st.dmu.Unlock()
	return st.failed
}

// appliedDigests returns the stream's applied digests in slot order, or
// the error of a batch that failed to commit.
func (st *importStream) appliedDigests() ([]store.SlotDigest, error) {
	st.dmu.Lock()
	defer st.dmu.Unlock()
	if st.failed != nil {
		return nil, st.failed
	}
	out := make([]store.SlotDigest, 0, len(st.applied))
	for _, d := range st.applied {
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b store.SlotDigest) int { return int(a.Slot) - int(b.Slot) })
	return out, nil
}

// Manager runs the migration building blocks of one node.
//
// Lock order: a job's operation lock, then an import stream's lock, then
// the node's write gate (Transition, Guard), then mu. mu is never held while
// waiting for anything else.
type Manager struct {
	st        *store.Store
	node      *node.Node
	log       *slog.Logger
	importSem chan struct{}

	mu   sync.Mutex
	jobs map[string]*job
	ops  map[string]*sync.Mutex // per-job operation locks (Begin, Freeze, End, OpenSnapshot)
	// held are the keys of slots this node handed off, by range set, for
	// their cleanup (DeleteSlots); oldest first.
	held []heldKeys
	// emptyAt[s] > 0: slot s held no key here at that node generation (a
	// cleanup had just deleted them all), and holds none as long as no
	// install since gave it to this node (node.HeldAt). In memory only.
	emptyAt [slot.Count]uint64
}

// heldKeys is what a source job that ended COMMITTED knew of the keys its
// slots still hold here (store.HeldKeys): valid while no install after
// generation gen gave this node any of the slots again.
type heldKeys struct {
	ranges slot.RangeSet
	keys   *store.KeyList
	gen    uint64
}

// maxHeldLists bounds the key lists kept for cleanups not run yet.
const maxHeldLists = 4

// Options configures a Manager.
type Options struct {
	// MaxImportStreams caps the Import streams open at once; 0 means
	// DefaultMaxImportStreams.
	MaxImportStreams int
	Logger           *slog.Logger
}

// Open loads the node's jobs and deletes change-log and import records of
// jobs it no longer knows.
func Open(st *store.Store, n *node.Node, o Options) (*Manager, error) {
	if o.MaxImportStreams <= 0 {
		o.MaxImportStreams = DefaultMaxImportStreams
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	m := &Manager{
		st: st, node: n, log: o.Logger,
		importSem: make(chan struct{}, o.MaxImportStreams),
		jobs:      map[string]*job{},
		ops:       map[string]*sync.Mutex{},
	}
	err := st.SystemRecords(store.JobRecordSpace, func(name string, v []byte) error {
		var rec record
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("migration: job record %q is corrupt: %w", name, err)
		}
		j, err := m.newJob(rec)
		if err != nil {
			return err
		}
		m.jobs[rec.Job] = j
		return nil
	})
	if err != nil {
		return nil, err
	}
	orphans, err := st.JobsWithRecords()
	if err != nil {
		return nil, err
	}
	for _, id := range orphans {
		if _, ok := m.jobs[id]; ok {
			continue
		}
		m.log.Info("deleting leftover records of an ended migration", "job_id", id)
		if err := errors.Join(st.DropChangeLog(id), st.DropImport(id)); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Manager) newJob(rec record) (*job, error) {
	rs, err := slot.ParseRangeSet(rec.Ranges)
	if err != nil {
		return nil, fmt.Errorf("migration: job %q: ranges %q: %w", rec.Job, rec.Ranges, err)
	}
	j := &job{id: rec.Job, rec: rec, ranges: rs, streams: map[string]*importStream{}}
	if rec.Role == Source {
		if j.log, err = m.st.ChangeLog(rec.Job); err != nil {
			return nil, err
		}
	}
	return j, nil
}

// Close releases every open snapshot (node shutdown).
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, j := range m.jobs {
		if j.snap != nil {
			j.snap.Close()
			j.snap = nil
		}
	}
}

// lockJob takes the operation lock of job id.
func (m *Manager) lockJob(id string) func() {
	m.mu.Lock()
	l, ok := m.ops[id]
	if !ok {
		l = new(sync.Mutex)
		m.ops[id] = l
	}
	m.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// get returns job id (with a copy of its record) or ErrJobNotFound.
func (m *Manager) get(id string) (*job, record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	j, ok := m.jobs[id]
	if !ok {
		return nil, record{}, fmt.Errorf("%w: node %s takes no part in job %q", ErrJobNotFound, m.node.ID(), id)
	}
	return j, j.rec, nil
}

func (m *Manager) getRole(id string, role Role) (*job, record, error) {
	j, rec, err := m.get(id)
	if err != nil {
		return nil, rec, err
	}
	if rec.Role != role {
		return nil, rec, fmt.Errorf("%w: node %s is the %s of job %q, not its %s", rpcerr.ErrConflict, m.node.ID(), rec.Role, id, role)
	}
	return j, rec, nil
}

func putRecord(tx *store.SystemTxn, rec record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("migration: encode job record: %w", err)
	}
	return tx.Set(recordName(rec.Job), b)
}

// setRecord updates a job record that goes with no slot state change.
func (m *Manager) setRecord(j *job, rec record) error {
	err := m.st.UpdateSystem(func(tx *store.SystemTxn) error { return putRecord(tx, rec) })
	if err != nil {
		return err
	}
	m.mu.Lock()
	j.rec = rec
	m.mu.Unlock()
	return nil
}

// slotList formats slots as a range set ("100-120,300").
func slotList(slots []uint16) string { return slot.FromSlots(slots).String() }

// inMigration describes the slots of set that are in a migration other
// than job ("slots 100-120,300 are in migration j7"), or "".
func inMigration(sl *node.Slots, set slot.RangeSet, except string) string {
	byJob := map[string][]uint16{}
	for s := range set.All() {
		switch sl.Kind[s] {
		case node.Migrating, node.Frozen, node.Importing:
			if sl.Job[s] != except {
				byJob[sl.Job[s]] = append(byJob[sl.Job[s]], s)
			}
		}
	}
	if len(byJob) == 0 {
		return ""
	}
	ids := make([]string, 0, len(byJob))
	for id := range byJob {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = fmt.Sprintf("slots %s are in migration %s", slotList(byJob[id]), id)
	}
	return strings.Join(parts, "; ")
}

func ownedBy(t *topology.Topology, s uint16, id string) bool {
	if t == nil {
		return false
	}
	o, ok := t.Owner(s)
	return ok && o.ID == id
}

// BeginRequest is a BeginMigration call.
type BeginRequest struct {
	Job             string
	Role            Role
	Ranges          slot.RangeSet
	Peer            string
	TopologyVersion uint64
}

// Begin starts job on this node (see the package doc). Idempotent for the
// same request (role, ranges, peer); another request for an existing job is
// a conflict. It returns the change sequence the job's changes start after:
// always 0, since a job's change log starts empty (and a repeated Begin
// must not let a caller skip changes).
func (m *Manager) Begin(ctx context.Context, req BeginRequest) (uint64, error) {
	defer m.lockJob(req.Job)()
	if j, rec, err := m.get(req.Job); err == nil {
		if rec.Role != req.Role || !j.ranges.Equal(req.Ranges) || rec.Peer != req.Peer {
			return 0, fmt.Errorf("%w: job %q exists on node %s as %s of slots %s with peer %s; this request (%s of slots %s with peer %s) differs",
				rpcerr.ErrConflict, req.Job, m.node.ID(), rec.Role, rec.Ranges, rec.Peer, req.Role, req.Ranges, req.Peer)
		}
		if rec.Aborting {
			return 0, fmt.Errorf("%w: job %q is being aborted on node %s; end it (ABORTED) before starting it again", rpcerr.ErrConflict, req.Job, m.node.ID())
		}
		if rec.Role == Destination && !rec.Cleaned {
			return 0, m.clearLeftovers(ctx, j, false)
		}
		return 0, nil
	}

	// A new job: no records of an earlier job with this id may remain.
	if err := errors.Join(m.st.DropChangeLog(req.Job), m.st.DropImport(req.Job)); err != nil {
		return 0, err
	}
	rec := record{
		Job: req.Job, Role: req.Role, Ranges: req.Ranges.String(), Peer: req.Peer,
		TopologyVersion: req.TopologyVersion, Created: time.Now().UTC().Truncate(time.Millisecond),
	}
	j, err := m.newJob(rec)
	if err != nil {
		return 0, err
	}
	me := m.node.ID()
	empty := false // a destination's slots are known to hold nothing
	err = m.node.Transition(func(t *topology.Topology, sl *node.Slots, tx *store.SystemTxn) error {
		switch {
		case t == nil:
			return fmt.Errorf("%w: node %s has not been given a topology yet", rpcerr.ErrNoTopology, me)
		case t.Version() != req.TopologyVersion:
			return fmt.Errorf("%w: job %q was planned on topology version %d, node %s holds version %d",
				rpcerr.ErrStaleTopology, req.Job, req.TopologyVersion, me, t.Version())
		}
		if msg := inMigration(sl, req.Ranges, ""); msg != "" {
			return fmt.Errorf("%w: %s", rpcerr.ErrConflict, msg)
		}
		if req.Role == Source {
			for s := range req.Ranges.All() {
				if owner, ok := t.Owner(s); !ok {
					return fmt.Errorf("%w: slot %d has no owner in topology version %d; node %s cannot migrate it",
						rpcerr.ErrSlotUnassigned, s, t.Version(), me)
				} else if owner.ID != me {
					return &rpcerr.SlotMovedError{Slot: s, OwnerID: owner.ID, OwnerAddress: owner.GRPCAddress, Version: t.Version()}
				}
				if sl.Kind[s] != node.Owned {
					return fmt.Errorf("%w: slot %d is %s on node %s, not OWNED", rpcerr.ErrConflict, s, sl.Kind[s], me)
				}
			}
			for s := range req.Ranges.All() {
				sl.Set(s, node.Migrating, req.Job, req.Peer)
			}
		} else {
			var owned []uint16
			for s := range req.Ranges.All() {
				if sl.Kind[s] == node.Owned || ownedBy(t, s, me) {
					owned = append(owned, s)
				}
			}
			if len(owned) > 0 {
				return fmt.Errorf("%w: slots %s are owned by node %s, which cannot import them", rpcerr.ErrConflict, slotList(owned), me)
			}
			empty = m.emptySlots(req.Ranges)
			for s := range req.Ranges.All() {
				sl.Set(s, node.Importing, req.Job, req.Peer)
			}
		}
		return putRecord(tx, rec)
	}, func() {
		m.mu.Lock()
		m.jobs[req.Job] = j
		m.mu.Unlock()
	})
	if err != nil {
		return 0, err
	}
	m.log.InfoContext(ctx, "migration begun", "job_id", req.Job, "role", req.Role.String(), "ranges", rec.Ranges, "peer", req.Peer,
		"known_empty", empty)
	if req.Role == Destination {
		return 0, m.clearLeftovers(ctx, j, empty)
	}
	return 0, nil
}

// clearLeftovers deletes whatever a destination holds in the job's slots
// before the first import, and records that it did. Slots known to hold
// nothing (emptySlots) are not read.
func (m *Manager) clearLeftovers(ctx context.Context, j *job, empty bool) error {
	var n uint64
	if !empty {
		var err error
		if n, err = m.deleteJobData(ctx, j, 0); err != nil {
			return fmt.Errorf("job %q: delete leftover data: %w", j.id, err)
		}
	}
	m.mu.Lock()
	rec := j.rec
	m.mu.Unlock()
	rec.Cleaned = true
	if err := m.setRecord(j, rec); err != nil {
		return err
	}
	if n > 0 {
		m.log.InfoContext(ctx, "deleted leftover data before import", "job_id", rec.Job, "keys", n)
	}
	return nil
}

// deleteJobData deletes the data of the job's slots that are IMPORTING for
// it, dropped under the gate and only while every one of them still is (an
// aborting job's states stay until the data is gone); kps paces the purge.
func (m *Manager) deleteJobData(ctx context.Context, j *job, kps uint64) (uint64, error) {
	id := j.id
	return m.st.DeleteSlots(ctx, j.ranges.Ranges(), store.DeleteOptions{
		KeysPerSecond: kps,
		Guard: func() (func(), error) {
			err := m.node.Guard(func() error {
				var other []uint16
				for s := range j.ranges.All() {
					if k, owner := m.node.StateOf(s); k != node.Importing || owner != id {
						other = append(other, s)
					}
				}
				if len(other) > 0 {
					return fmt.Errorf("%w: slots %s are no longer IMPORTING for job %q on node %s; deletion stopped",
						rpcerr.ErrConflict, slotList(other), id, m.node.ID())
				}
				return nil
			})
			return m.node.EndWrite, err
		},
	})
}

// OpenSnapshot opens (or returns) the job's snapshot and its sequence.
func (m *Manager) OpenSnapshot(id string) (uint64, error) {
	defer m.lockJob(id)()
	j, _, err := m.getRole(id, Source)
	if err != nil {
		return 0, err
	}
	m.mu.Lock()
	sn := j.snap
	m.mu.Unlock()
	if sn != nil && !sn.Closed() {
		return sn.Seq(), nil
	}
	var moved []uint16
	for s := range j.ranges.All() {
		if k, owner := m.node.StateOf(s); (k != node.Migrating && k != node.Frozen) || owner != id {
			moved = append(moved, s)
		}
	}
	if len(moved) > 0 {
		return 0, fmt.Errorf("%w: slots %s are no longer migrating for job %q on node %s", rpcerr.ErrConflict, slotList(moved), id, m.node.ID())
	}
	sn, err = m.st.OpenSnapshot(j.log)
	if err != nil {
		return 0, err
	}
	m.mu.Lock()
	j.snap = sn
	m.mu.Unlock()
	return sn.Seq(), nil
}

// within checks that every range lies in the job's ranges; an empty list
// means all of them. field names the request field ("ranges").
func within(j *job, field string, rs []slot.Range) ([]slot.Range, error) {
	if len(rs) == 0 {
		return j.ranges.Ranges(), nil
	}
	for i, r := range rs {
		set, err := slot.NewRangeSet(r)
		if err != nil {
			return nil, rpcerr.InvalidField(fmt.Sprintf("%s[%d]", field, i), "%v", err)
		}
		if out := set.Subtract(j.ranges); !out.IsEmpty() {
			return nil, rpcerr.InvalidField(fmt.Sprintf("%s[%d]", field, i), "slots %s are not in job %q (slots %s)", out, j.id, j.ranges)
		}
	}
	return rs, nil
}

func (m *Manager) snapshot(id string) (*job, *store.Snapshot, error) {
	j, _, err := m.getRole(id, Source)
	if err != nil {
		return nil, nil, err
	}
	m.mu.Lock()
	sn := j.snap
	m.mu.Unlock()
	if sn == nil || sn.Closed() {
		return nil, nil, fmt.Errorf("%w: job %q has no open snapshot on node %s: call OpenSnapshot (a snapshot does not survive a restart of the node)",
			rpcerr.ErrConflict, id, m.node.ID())
	}
	return j, sn, nil
}

// ScanRequest is a SnapshotScan call.
type ScanRequest struct {
	Job          string
	Ranges       []slot.Range // empty: all of the job's
	StartAfter   []byte       // storage key; nil: from the first
	BatchRecords int
	BatchBytes   int
}

// SnapshotScan streams the snapshot's entries of req.Ranges to emit.
func (m *Manager) SnapshotScan(req ScanRequest, emit func(store.SnapshotBatch) error) error {
	j, sn, err := m.snapshot(req.Job)
	if err != nil {
		return err
	}
	rs, err := within(j, "ranges", req.Ranges)
	if err != nil {
		return err
	}
	return sn.Scan(rs, req.StartAfter, req.BatchRecords, req.BatchBytes, emit)
}

// SnapshotDigest digests the snapshot's entries of ranges, per slot.
func (m *Manager) SnapshotDigest(ctx context.Context, id string, ranges []slot.Range) (store.DigestResult, error) {
	j, sn, err := m.snapshot(id)
	if err != nil {
		return store.DigestResult{}, err
	}
	rs, err := within(j, "ranges", ranges)
	if err != nil {
		return store.DigestResult{}, err
	}
	return sn.Digest(ctx, rs)
}

// Changes is a ReadChanges answer.
type Changes struct {
	Changes []store.Change
	Head    uint64
	Frozen  bool
}

// ReadChanges returns the job's changes after seq.
func (m *Manager) ReadChanges(id string, after uint64, limit, maxBytes int) (Changes, error) {
	j, rec, err := m.getRole(id, Source)
	if err != nil {
		return Changes{}, err
	}
	cs, head, err := m.st.ReadChanges(j.log, after, limit, maxBytes)
	if err != nil {
		return Changes{}, err
	}
	if rec.Frozen {
		head = rec.FinalSeq
	}
	return Changes{Changes: cs, Head: head, Frozen: rec.Frozen}, nil
}

// Frozen is what Freeze reports.
type Frozen struct {
	// FinalSeq is the last change of the job: none follows.
	FinalSeq uint64
	// SyncedBefore is how long the disk sync before the freeze took,
	// while writes were still admitted (zero when already frozen).
	SyncedBefore time.Duration
}

// Freeze pauses writes to the job's slots and returns the final sequence.
func (m *Manager) Freeze(ctx context.Context, id string) (Frozen, error) {
	defer m.lockJob(id)()
	j, rec, err := m.getRole(id, Source)
	if err != nil {
		return Frozen{}, err
	}
	if rec.Frozen {
		return Frozen{FinalSeq: rec.FinalSeq}, nil
	}
	// The freeze is acknowledged after a sync of everything written since
	// the last one, and the slots' write pause lasts until the migrator
	// hears it. Sync first, with writes still admitted, so that the sync
	// after the freeze flushes only the writes of the last few milliseconds.
	t0 := time.Now()
	if err := m.st.SyncSystem(); err != nil {
		return Frozen{}, err
	}
	out := Frozen{SyncedBefore: time.Since(t0)}
	me := m.node.ID()
	err = m.node.Transition(func(_ *topology.Topology, sl *node.Slots, tx *store.SystemTxn) error {
		var gone []uint16
		for s := range j.ranges.All() {
			if sl.Kind[s] != node.Migrating || sl.Job[s] != id {
				gone = append(gone, s)
			}
		}
		if len(gone) > 0 {
			return fmt.Errorf("%w: slots %s are not MIGRATING for job %q on node %s", rpcerr.ErrConflict, slotList(gone), id, me)
		}
		for s := range j.ranges.All() {
			sl.Set(s, node.Frozen, id, sl.Peer[s])
		}
		// The gate is held exclusively: every write admitted as MIGRATING
		// has committed (and advanced the head), and none can follow.
		rec.Frozen, rec.FinalSeq = true, j.log.Head()
		return putRecord(tx, rec)
	}, func() {
		m.mu.Lock()
		j.rec = rec
		m.mu.Unlock()
	})
	if err != nil {
		return Frozen{}, err
	}
	out.FinalSeq = rec.FinalSeq
	m.log.InfoContext(ctx, "migration frozen", "job_id", id, "final_seq", rec.FinalSeq, "synced_before", out.SyncedBefore)
	return out, nil
}

// AcquireImportStream takes one of the node's import stream slots; release
// it when the stream ends.
func (m *Manager) AcquireImportStream() (release func(), err error) {
	select {
	case m.importSem <- struct{}{}:
		return func() { <-m.importSem }, nil
	default:
		return nil, fmt.Errorf("%w: node %s already runs %d import streams (--max-import-streams); retry when one ends",
			ErrTooManyImportStreams, m.node.ID(), cap(m.importSem))
	}
}

// ImportStreams returns the import streams the node accepts at once and
// how many are open now.
func (m *Manager) ImportStreams() (limit, open int) { return cap(m.importSem), len(m.importSem) }

// ImportGroupLimits bounds the batches one CommitImport should take: key
// and value bytes, and entries.
func (m *Manager) ImportGroupLimits() (bytes, entries int) { return m.st.GroupLimits() }

// NewImportCommitter returns the Committer of one import stream's
// CommitImport calls, made from one goroutine.
func (m *Manager) NewImportCommitter() *store.Committer { return m.st.NewCommitter() }

// ImportEntry is one entry of an import batch; the caller has validated the
// key and that Slot is its slot.
type ImportEntry struct {
	Slot uint16
	store.Mutation
}

// ImportBatch is one batch of a job's import stream, validated and
// digested by PrepareImport, ready for CommitImport.
type ImportBatch struct {
	Seq     uint64
	muts    []store.Mutation
	slots   []uint16 // sorted, distinct
	digests []store.SlotDigest
	bytes   int // key and value bytes
}

// Bytes is the batch's key and value bytes; Len its entries.
func (b *ImportBatch) Bytes() int { return b.bytes }

// Len is the number of entries of the batch.
func (b *ImportBatch) Len() int { return len(b.muts) }

// PrepareImport checks that every entry of a batch of job id lies in the
// job's slots and computes the digest of its puts, per slot: the
// destination's half of the verification of the snapshot, computed as the
// data arrives, so nothing is read back. It takes no lock but the job
// table's, once.
func (m *Manager) PrepareImport(id string, seq uint64, entries []ImportEntry) (*ImportBatch, error) {
	j, _, err := m.getRole(id, Destination)
	if err != nil {
		return nil, err
	}
	b := &ImportBatch{Seq: seq, muts: make([]store.Mutation, len(entries)), slots: make([]uint16, 0, 4)}
	h := store.NewHasher()
	for i, e := range entries {
		if !j.ranges.Contains(e.Slot) {
			return nil, rpcerr.InvalidField(fmt.Sprintf("entries[%d].slot", i), "slot %d is not in job %q (slots %s)", e.Slot, id, j.ranges)
		}
		if len(b.slots) == 0 || b.slots[len(b.slots)-1] != e.Slot {
			b.slots = append(b.slots, e.Slot)
		}
		b.muts[i] = e.Mutation
		b.bytes += len(e.Key) + len(e.Value)
		if e.Delete {
			continue
		}
		k := len(b.digests) - 1
		if k < 0 || b.digests[k].Slot != e.Slot {
			if k = slices.IndexFunc(b.digests, func(d store.SlotDigest) bool { return d.Slot == e.Slot }); k < 0 {
				b.digests = append(b.digests, store.SlotDigest{Slot: e.Slot})
				k = len(b.digests) - 1
			}
		}
		b.digests[k].Count++
		// Digested as received, expiry included, also when it has
		// passed and the entry is written as a delete: the source
		// digested the same entry when it sent it.
		h.AddExpiring(&b.digests[k].Digest, e.Key, e.Value, e.ExpiresAt)
	}
	slices.Sort(b.slots)
	b.slots = slices.Compact(b.slots)
	return b, nil
}

// CommitImport commits batches of a job's import stream, prepared by
// PrepareImport and given in stream order, in one transaction, without
// waiting for it: done gets the outcome (always, once, when CommitImport
// returns no error). applied[i] is false for a batch applied before (a
// resumed stream resends batches), which is skipped. Calls for one stream
// must come one at a time, in order (the stream is sequential); their
// transactions commit in that order. Each committed batch adds its digests
// to the stream's applied digests (ImportState). cm, when not nil, is the
// calling goroutine's (NewImportCommitter).
func (m *Manager) CommitImport(id, stream string, batches []*ImportBatch, cm *store.Committer, done func(error)) (applied []bool, err error) {
	j, _, err := m.getRole(id, Destination)
	if err != nil {
		return nil, err
	}
	st := m.importStream(j, stream)
	// One call of a stream at a time; taken before the gate (lock order).
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.loaded {
		if st.prog, err = m.st.StreamProgress(id, stream); err != nil {
			return nil, err
		}
		st.loaded = true
	}
	if err := st.err(); err != nil {
		return nil, fmt.Errorf("an earlier batch of the stream failed: %w", err)
	}
	applied = make([]bool, len(batches))
	next := st.prog
	var (
		muts    [][]store.Mutation
		slots   []uint16
		digests []store.SlotDigest
	)
	for i, b := range batches {
		if b.Seq <= next.LastSeq {
			continue
		}
		applied[i] = true
		next.LastSeq, next.Entries = b.Seq, next.Entries+uint64(len(b.muts))
		muts = append(muts, b.muts)
		slots = append(slots, b.slots...)
		digests = append(digests, b.digests...)
	}
	if len(muts) == 0 {
		done(nil)
		return applied, nil
	}
	slices.Sort(slots)
	slots = slices.Compact(slots)

	me := m.node.ID()
	err = m.node.Guard(func() error {
		m.mu.Lock()
		cur, ok := m.jobs[id]
		var rec record
		if ok {
			rec = cur.rec
		}
		m.mu.Unlock()
		switch {
		case !ok || cur != j:
			return fmt.Errorf("%w: job %q ended on node %s", ErrJobNotFound, id, me)
		case rec.Aborting:
			return fmt.Errorf("%w: job %q is being aborted on node %s", rpcerr.ErrConflict, id, me)
		case !rec.Cleaned:
			return fmt.Errorf("%w: job %q is still deleting leftover data on node %s; retry BeginMigration", rpcerr.ErrUnavailable, id, me)
		}
		var bad []uint16
		for _, s := range slots {
			if k, owner := m.node.StateOf(s); k != node.Importing || owner != id {
				bad = append(bad, s)
			}
		}
		if len(bad) > 0 {
			return fmt.Errorf("%w: slots %s are no longer IMPORTING for job %q on node %s (committed or ended)", rpcerr.ErrConflict, slotList(bad), id, me)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// The gate stays shared until the transaction has committed, so no
	// transition (commit, abort) can pass a batch admitted before it.
	// Released exactly once: by the commit callback, or here when the
	// transaction never reached Badger (an error, a panic).
	release := sync.OnceFunc(m.node.EndWrite)
	queued := false
	defer func() {
		if !queued {
			release()
		}
	}()
	err = m.st.CommitImport(id, next, muts, cm, func(err error) {
		release()
		st.commitDone(digests, err)
		done(err)
	})
	if err != nil {
		return nil, err
	}
	queued = true
	st.prog = next
	return applied, nil
}

// importStream returns the state of a stream of job j, creating it.
func (m *Manager) importStream(j *job, stream string) *importStream {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, ok := j.streams[stream]
	if !ok {
		st = &importStream{applied: map[uint16]store.SlotDigest{}}
		j.streams[stream] = st
	}
	return st
}

// ImportState is a GetImportState answer.
type ImportState struct {
	Streams []store.ImportProgress
	// Applied holds, when asked, the applied digests of each stream of
	// Streams that this process has applied batches of, by stream id.
	Applied map[string][]store.SlotDigest
	Digest  *store.DigestResult // when asked
}

// ImportState returns the job's import progress, with applied the digests
// of what each stream applied (see Import), and, when digestRanges is not
// empty, the digest of the data in them, read back, per slot.
func (m *Manager) ImportState(ctx context.Context, id string, digestRanges []slot.Range, applied bool) (ImportState, error) {
	j, _, err := m.getRole(id, Destination)
	if err != nil {
		return ImportState{}, err
	}
	var out ImportState
	if len(digestRanges) > 0 {
		rs, err := within(j, "digest_ranges", digestRanges)
		if err != nil {
			return ImportState{}, err
		}
		d, err := m.st.Digest(ctx, rs, true)
		if err != nil {
			return ImportState{}, err
		}
		out.Digest = &d
	}
	if out.Streams, err = m.st.ImportProgressOf(id); err != nil {
		return ImportState{}, err
	}
	if applied {
		// What the streams applied is made durable here, once per job
		// (the migrator asks when the snapshot is done), so the hand-off
		// that follows syncs only what came after it, not the whole
		// snapshot inside its write pause; and not at the end of each of
		// P streams, where the syncs held up Badger's memtable switches.
		if err := m.st.SyncSystem(); err != nil {
			return ImportState{}, err
		}
		m.mu.Lock()
		streams := maps.Clone(j.streams)
		m.mu.Unlock()
		out.Applied = map[string][]store.SlotDigest{}
		for name, st := range streams {
			d, err := st.appliedDigests()
			if err != nil {
				return ImportState{}, fmt.Errorf("import stream %q of job %q: %w", name, id, err)
			}
			out.Applied[name] = d
		}
	}
	return out, nil
}

// Ended is what End did.
type Ended struct {
	// Deleted counts the keys deleted (an aborted destination's data).
	Deleted uint64
	// Serving is, for a committed destination, how long the node had
	// served the job's slots when End returned (see node.ServedSince): it
	// begins to serve when it installs the state (End's transition, or the
	// topology or hand-off watch before it), and makes it durable after
	// that, outside the write gate, so the write pause ended this long
	// before End's answer.
	Serving time.Duration
}

// End ends job on this node; see the package doc.
func (m *Manager) End(ctx context.Context, id string, outcome Outcome) (Ended, error) {
	defer m.lockJob(id)()
	j, rec, err := m.get(id)
	if errors.Is(err, ErrJobNotFound) {
		return Ended{}, nil
	}
	if err != nil {
		return Ended{}, err
	}
	var out Ended
	switch {
	case rec.Role == Source:
		err = m.endSource(ctx, j, outcome)
	case outcome == Aborted:
		out.Deleted, err = m.abortDestination(ctx, j)
	default:
		if err = m.commitDestination(j); err == nil {
			if since, ok := m.node.ServedSince(id); ok {
				out.Serving = time.Since(since)
			}
			m.node.ForgetServed(id)
		}
	}
	if err != nil {
		return out, err
	}
	m.log.InfoContext(ctx, "migration ended", "job_id", id, "role", rec.Role.String(), "committed", outcome == Committed,
		"deleted_keys", out.Deleted, "serving_before_reply", out.Serving)
	return out, nil
}

// MaxServedWait bounds how long EndWhenServed waits.
const MaxServedWait = 30 * time.Second

// notServedYet marks why a destination cannot end a job COMMITTED yet: the
// state that lets it serve the slots (the new topology, the hand-off
// record) has not reached it. It goes away by itself.
type notServedYet struct{ error }

func (e notServedYet) Unwrap() error { return e.error }

// EndWhenServed ends the job COMMITTED on a destination, waiting until the
// node serves its slots when it does not yet, up to ctx's deadline or
// MaxServedWait. The wait wakes at each state the node installs rather
// than polling: every End takes the exclusive write gate.
func (m *Manager) EndWhenServed(ctx context.Context, id string) (Ended, error) {
	ctx, cancel := context.WithTimeout(ctx, MaxServedWait)
	defer cancel()
	t0 := time.Now()
	for {
		changed := m.node.Changed()
		out, err := m.End(ctx, id, Committed)
		if !errors.As(err, new(notServedYet)) {
			return out, err
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return out, fmt.Errorf("%w: waited %s for node %s to serve job %q: %v",
				ctx.Err(), time.Since(t0).Round(time.Millisecond), m.node.ID(), id, err)
		}
	}
}

// forget removes the job from memory and releases its snapshot; called
// under the exclusive gate once its record is deleted.
func (m *Manager) forget(j *job) func() {
	return func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.jobs[j.id] == j {
			delete(m.jobs, j.id)
		}
		if j.snap != nil {
			j.snap.Close()
			j.snap = nil
		}
	}
}

func (m *Manager) endSource(ctx context.Context, j *job, outcome Outcome) error {
	id, me := j.id, m.node.ID()
	m.mu.Lock()
	sn, rec := j.snap, j.rec
	m.mu.Unlock()
	var gen uint64
	err := m.node.Transition(func(t *topology.Topology, sl *node.Slots, tx *store.SystemTxn) error {
		var stillMine, moved []uint16
		for s := range j.ranges.All() {
			mine := ownedBy(t, s, me)
			// Installing a topology that gives the slots away clears their
			// MIGRATING/FROZEN state, so look at the topology, not the kind.
			if outcome == Aborted && !mine {
				moved = append(moved, s)
				continue
			}
			if (sl.Kind[s] != node.Migrating && sl.Kind[s] != node.Frozen) || sl.Job[s] != id {
				continue
			}
			if outcome == Committed && mine {
				stillMine = append(stillMine, s)
				continue
			}
			if mine {
				sl.Set(s, node.Owned, "", "")
			} else {
				sl.Set(s, node.None, "", "")
			}
		}
		if len(moved) > 0 {
			var v uint64
			if t != nil {
				v = t.Version()
			}
			return fmt.Errorf("%w: topology version %d no longer assigns slots %s of job %q to node %s (the job was committed); refusing to abort it: end it COMMITTED",
				rpcerr.ErrConflict, v, slotList(moved), id, me)
		}
		if len(stillMine) > 0 {
			return fmt.Errorf("%w: topology version %d still assigns slots %s of job %q to node %s: install the new topology before ending the job COMMITTED (or end it ABORTED)",
				rpcerr.ErrConflict, t.Version(), slotList(stillMine), id, me)
		}
		return tx.Delete(recordName(id))
	}, func() {
		m.forget(j)()
		gen = m.node.Generation()
	})
	if err != nil {
		return err
	}
	if outcome == Committed {
		m.keepHeldKeys(ctx, j, sn, rec, gen)
	}
	return m.st.DropChangeLog(id)
}

// keepHeldKeys keeps the keys the slots of a source job that just ended
// COMMITTED hold here, for their cleanup, when the job's snapshot knows
// them (store.HeldKeys); otherwise the cleanup reads them. gen is the
// generation of the install that ended the job.
func (m *Manager) keepHeldKeys(ctx context.Context, j *job, sn *store.Snapshot, rec record, gen uint64) {
	if sn == nil || !rec.Frozen {
		return // a restart lost the snapshot: the cleanup reads the keys
	}
	keys, ok, err := m.st.HeldKeys(sn, j.log, j.ranges.Ranges(), rec.FinalSeq)
	if err != nil || !ok {
		reason := "the snapshot's scans did not record every key"
		if err != nil {
			reason = err.Error()
		}
		m.log.InfoContext(ctx, "the cleanup of the handed-off slots will read their keys", "job_id", j.id, "ranges", j.ranges.String(), "reason", reason)
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.held = slices.DeleteFunc(m.held, func(h heldKeys) bool { return h.ranges.Overlaps(j.ranges) })
	if len(m.held) >= maxHeldLists {
		m.held = m.held[1:]
	}
	m.held = append(m.held, heldKeys{ranges: j.ranges, keys: keys, gen: gen})
}

// heldKeysOf returns the kept keys of exactly the slots of set, while
// they are valid; invalid ones are dropped.
func (m *Manager) heldKeysOf(set slot.RangeSet) (heldKeys, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, h := range m.held {
		if !h.ranges.Equal(set) {
			continue
		}
		if m.node.HeldSince(set.Ranges(), h.gen) {
			m.held = slices.Delete(m.held, i, i+1)
			return heldKeys{}, false
		}
		return h, true
	}
	return heldKeys{}, false
}

// markEmpty records that the slots of set held no key at generation gen.
// A mark is only ever read against node.HeldAt, so an install that gave a
// slot back to this node, before or after the mark, voids it.
func (m *Manager) markEmpty(set slot.RangeSet, gen uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for s := range set.All() {
		m.emptyAt[s] = gen
	}
}

// emptySlots reports whether every slot of set is known to hold no key:
// marked empty, and not given to this node by an install since. Call it
// under the write gate, before the install that gives them to the node.
func (m *Manager) emptySlots(set slot.RangeSet) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for s := range set.All() {
		if at := m.emptyAt[s]; at == 0 || m.node.HeldAt(s) > at {
			return false
		}
	}
	return true
}

// dropHeldKeys forgets the kept keys of set.
func (m *Manager) dropHeldKeys(set slot.RangeSet) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.held = slices.DeleteFunc(m.held, func(h heldKeys) bool { return h.ranges.Equal(set) })
}

func (m *Manager) commitDestination(j *job) error {
	id, me := j.id, m.node.ID()
	// In etcd mode the destination serves only once the job's hand-off
	// record says the source stopped, EndMigration included.
	released := m.node.ImportReleased(id)
	err := m.node.Transition(func(t *topology.Topology, sl *node.Slots, tx *store.SystemTxn) error {
		var notYet, unreleased []uint16
		for s := range j.ranges.All() {
			if sl.Kind[s] != node.Importing || sl.Job[s] != id {
				continue
			}
			if !ownedBy(t, s, me) {
				notYet = append(notYet, s)
				continue
			}
			if !released {
				unreleased = append(unreleased, s)
				continue
			}
			sl.Set(s, node.Owned, "", "")
		}
		if len(notYet) > 0 {
			var v uint64
			if t != nil {
				v = t.Version()
			}
			return notServedYet{fmt.Errorf("%w: topology version %d does not assign slots %s of job %q to node %s yet: install the new topology before ending the job COMMITTED",
				rpcerr.ErrConflict, v, slotList(notYet), id, me)}
		}
		if len(unreleased) > 0 {
			return notServedYet{fmt.Errorf("%w: the hand-off of job %q is not recorded in etcd yet (the source may still serve): node %s does not serve slots %s before it is",
				rpcerr.ErrConflict, id, me, slotList(unreleased))}
		}
		return tx.Delete(recordName(id))
	}, m.forget(j))
	if err != nil {
		return err
	}
	return m.st.DropImport(id)
}

func (m *Manager) abortDestination(ctx context.Context, j *job) (uint64, error) {
	id, me := j.id, m.node.ID()
	m.mu.Lock()
	rec := j.rec
	m.mu.Unlock()
	if !rec.Aborting {
		// Stop imports first: they check the flag under the gate.
		rec.Aborting = true
		err := m.node.Transition(func(t *topology.Topology, sl *node.Slots, tx *store.SystemTxn) error {
			var served []uint16
			for s := range j.ranges.All() {
				if sl.Kind[s] == node.Owned {
					served = append(served, s)
				}
			}
			if len(served) > 0 {
				return fmt.Errorf("%w: slots %s of job %q are OWNED by node %s (the job was committed); refusing to abort and delete them",
					rpcerr.ErrConflict, slotList(served), id, me)
			}
			return putRecord(tx, rec)
		}, func() {
			m.mu.Lock()
			j.rec = rec
			m.mu.Unlock()
		})
		if err != nil {
			return 0, err
		}
	}
	deleted, err := m.deleteJobData(ctx, j, 0)
	if err != nil {
		return deleted, fmt.Errorf("job %q: delete imported data: %w", id, err)
	}
	if err := m.st.DropImport(id); err != nil {
		return deleted, err
	}
	err = m.node.Transition(func(_ *topology.Topology, sl *node.Slots, tx *store.SystemTxn) error {
		for s := range j.ranges.All() {
			if sl.Kind[s] == node.Importing && sl.Job[s] == id {
				sl.Set(s, node.None, "", "")
			}
		}
		return tx.Delete(recordName(id))
	}, m.forget(j))
	return deleted, err
}

// DeleteSlots deletes the data of ranges, which this node must neither own
// nor have in a migration, checked under the gate the drop commits under.
// kps paces the purge that deletes the dropped entries after it.
func (m *Manager) DeleteSlots(ctx context.Context, ranges []slot.Range, kps uint64) (uint64, error) {
	set, err := slot.NewRangeSet(ranges...)
	if err != nil {
		return 0, rpcerr.InvalidField("ranges", "%v", err)
	}
	me := m.node.ID()
	check := func() error {
		t := m.node.Topology()
		var owned []uint16
		byJob := map[string][]uint16{}
		for s := range set.All() {
			k, id := m.node.StateOf(s)
			switch {
			case k == node.Migrating || k == node.Frozen || k == node.Importing:
				byJob[id] = append(byJob[id], s)
			case k == node.Owned || ownedBy(t, s, me):
				owned = append(owned, s)
			}
		}
		var msgs []string
		if len(owned) > 0 {
			msgs = append(msgs, fmt.Sprintf("slots %s are owned by node %s", slotList(owned), me))
		}
		ids := make([]string, 0, len(byJob))
		for id := range byJob {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			msgs = append(msgs, fmt.Sprintf("slots %s are in migration %s", slotList(byJob[id]), id))
		}
		if len(msgs) > 0 {
			return fmt.Errorf("%w: %s; refusing to delete them", rpcerr.ErrConflict, strings.Join(msgs, "; "))
		}
		return nil
	}
	// Refused at once, before the drop counts the keys.
	if err := m.node.Guard(check); err != nil {
		return 0, err
	}
	m.node.EndWrite()
	// The keys the slots hold, when the job that handed them off knows
	// them and no install gave this node any of them since: the drop
	// counts them instead of reading the slots.
	held, ok := m.heldKeysOf(set)
	// The slots are dropped under the gate, checked there: every key they
	// hold at that generation is gone with the drop, and none can arrive
	// without an install after it (store.DeleteSlots).
	var from uint64
	o := store.DeleteOptions{KeysPerSecond: kps, Keys: held.keys, Guard: func() (func(), error) {
		return m.node.EndWrite, m.node.Guard(func() error { from = m.node.Generation(); return check() })
	}}
	n, err := m.st.DeleteSlots(ctx, set.Ranges(), o)
	if err == nil {
		if ok {
			m.dropHeldKeys(set)
		}
		m.markEmpty(set, from)
	}
	m.log.InfoContext(ctx, "slots deleted", "ranges", set.String(), "keys", n, "keys_known", ok, "err", err)
	return n, err
}

// Info is a job as ListMigrations shows it.
type Info struct {
	Job         string
	Role        Role
	Ranges      []slot.Range
	Peer        string
	Frozen      bool
	HeadSeq     uint64
	SnapshotSeq uint64
}

// List returns the node's jobs by id.
func (m *Manager) List() []Info {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Info, 0, len(m.jobs))
	for _, j := range m.jobs {
		in := Info{Job: j.id, Role: j.rec.Role, Ranges: j.ranges.Ranges(), Peer: j.rec.Peer, Frozen: j.rec.Frozen}
		if j.log != nil {
			in.HeadSeq = j.log.Head()
		}
		if j.snap != nil && !j.snap.Closed() {
			in.SnapshotSeq = j.snap.Seq()
		}
		out = append(out, in)
	}
	slices.SortFunc(out, func(a, b Info) int { return strings.Compare(a.Job, b.Job) })
	return out
}
