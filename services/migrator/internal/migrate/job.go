package migrate

import (
	"context"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	migratorv1 "github.com/slotkv/slotkv/gen/slotkv/migrator/v1"
	"github.com/slotkv/slotkv/pkg/slot"
)

// job is one migration job in memory.
type job struct {
	m      *Manager
	id     string
	ranges slot.RangeSet // immutable
	log    *slog.Logger

	ctx    context.Context // canceled by Cancel (errCanceled) or shutdown
	cancel context.CancelCauseFunc

	limiter *rate.Limiter
	batch   atomic.Uint32
	limitMu sync.Mutex
	limitCh chan struct{} // closed when the rate changes

	mu       sync.Mutex
	rec      *record // guarded by mu
	canceled bool    // Cancel was accepted
	streams  []*streamState
	rate     float64 // bytes/s over all streams, smoothed
	keysRate float64 // keys/s over all streams, smoothed
	lastKeys uint64
	lastTick time.Time

	endOnce sync.Once
	ended   chan struct{} // closed once the phase is terminal
}

// streamState is the live progress of one snapshot stream.
type streamState struct {
	index   uint32
	ranges  slot.RangeSet
	keys    atomic.Uint64
	bytes   atomic.Uint64
	batches atomic.Uint64
	done    atomic.Bool
	err     atomic.Pointer[string]
	// sent adds up the source's digests of the acknowledged batches; only
	// the stream's receiver touches it until the stream ends.
	sent slotSums
	// at is the slot of the last acknowledged entry, -1 before the first.
	at atomic.Int32

	rate      float64 // guarded by job.mu
	lastBytes uint64  // guarded by job.mu
}

func (m *Manager) newJob(r *record) (*job, error) {
	rs, err := slot.ParseRangeSet(r.Ranges)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancelCause(m.ctx)
	j := &job{
		m: m, id: r.ID, ranges: rs, rec: r, ctx: ctx, cancel: cancel,
		log:     m.log.With("job", r.ID),
		limiter: rate.NewLimiter(limitOf(r.Rate), burstOf(r.Rate)),
		ended:   make(chan struct{}),
		limitCh: make(chan struct{}),
	}
	j.batch.Store(r.BatchRecords)
	for i, s := range r.Streams {
		srs, _ := slot.ParseRangeSet(s.Ranges)
		st := &streamState{index: uint32(i), ranges: srs}
		st.keys.Store(s.Keys)
		st.bytes.Store(s.Bytes)
		st.batches.Store(s.Batches)
		st.done.Store(s.Done)
		if s.Error != "" {
			e := s.Error
			st.err.Store(&e)
		}
		j.streams = append(j.streams, st)
	}
	return j, nil
}

func (j *job) limitChanged() <-chan struct{} {
	j.limitMu.Lock()
	defer j.limitMu.Unlock()
	return j.limitCh
}

func (j *job) setRate(bps uint64) {
	j.limiter.SetLimit(limitOf(bps))
	j.limiter.SetBurst(burstOf(bps))
	j.limitMu.Lock()
	defer j.limitMu.Unlock()
	close(j.limitCh)
	j.limitCh = make(chan struct{})
}

// burstOf sizes the limiter's burst to about a tenth of a second at the
// rate (1 KiB to one batch): a burst of a whole batch would let a slow rate
// pass its first megabyte unthrottled. wait takes bigger amounts in
// burst-sized pieces.
func burstOf(bps uint64) int {
	if bps == 0 {
		return batchBytes
	}
	return int(min(max(bps/10, 1<<10), batchBytes))
}

func limitOf(bps uint64) rate.Limit {
	if bps == 0 {
		return rate.Inf
	}
	return rate.Limit(bps)
}

func (j *job) closeEnded() { j.endOnce.Do(func() { close(j.ended) }) }

// unfinished: the job may still hold its slots somewhere.
func (j *job) unfinished() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return !terminal(j.rec.Phase) || j.rec.RollbackPending
}

func (j *job) phaseName() string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return phaseName(j.rec.Phase)
}

// update changes the record under the lock and persists it, best effort:
// for progress and for steps already done, whose loss a restart survives
// (it redoes or rolls back idempotently). A failed save is logged. A
// record that an action depends on (an intent, written before the action:
// "begun" before BeginMigration, the commit point before the topology
// pushes, a setting before it applies) goes through persist, or
// persistLocked with its error checked, and the action does not happen
// when it fails.
func (j *job) update(f func(r *record)) {
	j.mu.Lock()
	defer j.mu.Unlock()
	f(j.rec)
	j.persistLocked()
}

// note changes the record under the lock without saving it: for a step
// done inside the write pause, whose mark the update that ends the pause
// saves (an etcd round trip fewer in the pause each). A restart before
// that save redoes the step, as it would after a failed save.
func (j *job) note(f func(r *record)) {
	j.mu.Lock()
	defer j.mu.Unlock()
	f(j.rec)
}

// persist is update for a record that must be on disk before what follows
// (an intent): it returns the error of the save, and when the save fails
// the record in memory goes back to what it was, so that nothing acts on
// an intent that is not on disk (e.g. a rollback calling a node that was
// never told of the job).
func (j *job) persist(f func(r *record)) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	prev := *j.rec
	f(j.rec)
	if err := j.persistLocked(); err != nil {
		*j.rec = prev
		return err
	}
	return nil
}

// persistLocked saves the record. Most callers only need the error
// logged; the commit point checks it.
func (j *job) persistLocked() error {
	j.syncStreamsLocked()
	j.rec.Updated = time.Now().UTC()
	if err := j.m.put(j.rec); err != nil {
		j.log.Error("persisting the job failed", "err", err)
		return err
	}
	return nil
}

// syncStreamsLocked copies the live stream counters into the record.
func (j *job) syncStreamsLocked() {
	if len(j.streams) == 0 {
		return
	}
	var keys, bytes, batches uint64
	j.rec.Streams = j.rec.Streams[:0]
	for _, s := range j.streams {
		sr := &streamRecord{Index: s.index, Ranges: s.ranges.String(),
			Keys: s.keys.Load(), Bytes: s.bytes.Load(), Batches: s.batches.Load(), Done: s.done.Load()}
		if e := s.err.Load(); e != nil {
			sr.Error = *e
		}
		keys += sr.Keys
		bytes += sr.Bytes
		batches += sr.Batches
		j.rec.Streams = append(j.rec.Streams, sr)
	}
	j.rec.Keys, j.rec.Bytes, j.rec.Batches = keys, bytes, batches
}

// slotsDone is how many of the stream's slots lie wholly behind it: all
// once it is done, else those before the slot of its last acknowledged
// entry.
func (st *streamState) slotsDone() int {
	if st.done.Load() {
		return st.ranges.Len()
	}
	at := int(st.at.Load())
	n := 0
	for _, r := range st.ranges.Ranges() {
		if int(r.Start) >= at {
			break
		}
		n += min(int(r.End), at-1) - int(r.Start) + 1
	}
	return n
}

// estimateTotalLocked estimates the keys of the snapshot from the keys
// copied and the share of the job's slots the streams are through (keys
// spread over slots by hash, so the share of slots is close to the share
// of keys); it never goes below the keys copied.
func (j *job) estimateTotalLocked() {
	if j.rec.Phase != migratorv1.Phase_PHASE_SNAPSHOT || len(j.streams) == 0 {
		return
	}
	done := 0
	for _, s := range j.streams {
		done += s.slotsDone()
	}
	if done == 0 {
		return
	}
	est := uint64(float64(j.rec.Keys) * float64(j.ranges.Len()) / float64(done))
	j.rec.KeysTotal = max(est, j.rec.Keys)
}

// tick updates the smoothed rates and the estimate of the keys to copy;
// called about once a second.
func (j *job) tick(now time.Time) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.syncStreamsLocked()
	j.estimateTotalLocked()
	if j.lastTick.IsZero() {
		j.lastTick = now
		j.lastKeys = j.rec.Keys
		for _, s := range j.streams {
			s.lastBytes = s.bytes.Load()
		}
		return
	}
	dt := now.Sub(j.lastTick).Seconds()
	if dt <= 0 {
		return
	}
	const alpha = 0.5
	total := 0.0
	for _, s := range j.streams {
		b := s.bytes.Load()
		inst := float64(b-s.lastBytes) / dt
		s.lastBytes = b
		if s.done.Load() {
			inst = 0
		}
		s.rate = alpha*inst + (1-alpha)*s.rate
		total += s.rate
	}
	j.rate = total
	kInst := float64(j.rec.Keys-j.lastKeys) / dt
	j.keysRate = alpha*kInst + (1-alpha)*j.keysRate
	j.lastKeys = j.rec.Keys
	j.lastTick = now
}

func (j *job) etaLocked() time.Duration {
	if j.rec.Phase != migratorv1.Phase_PHASE_SNAPSHOT || j.keysRate <= 0 || j.rec.KeysTotal <= j.rec.Keys {
		return 0
	}
	s := float64(j.rec.KeysTotal-j.rec.Keys) / j.keysRate
	if s > math.MaxInt64/float64(time.Second) {
		return 0
	}
	return time.Duration(s * float64(time.Second)).Round(time.Second)
}

// proto is the API view of the job: its record with the live rates.
func (j *job) proto() *migratorv1.Migration {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.syncStreamsLocked()
	out := recordProto(j.rec)
	if !terminal(j.rec.Phase) {
		out.Rate = j.rate
		if eta := j.etaLocked(); eta > 0 {
			out.Eta = durationpb.New(eta)
		}
		for i, sp := range out.Streams {
			if i < len(j.streams) {
				sp.Rate = j.streams[i].rate
			}
		}
	}
	return out
}

// recordProto is the API view of a job record: what the leader shows
// without its live rates, and what a follower shows from etcd.
func recordProto(r *record) *migratorv1.Migration {
	out := &migratorv1.Migration{
		Id: r.ID, Ranges: r.Ranges, SourceNodeId: r.Source, DestinationNodeId: r.Destination,
		Phase: r.Phase, Parallelism: r.Parallelism, RateBytesPerSecond: r.Rate,
		BatchRecords: r.BatchRecords, LagThreshold: r.LagThreshold, MaxCatchUpRounds: r.MaxRounds,
		Keys: r.Keys, Bytes: r.Bytes, Batches: r.Batches, KeysTotal: r.KeysTotal,
		ChangesApplied: r.ChangesApplied, Lag: r.Lag, CatchUpRounds: r.Rounds,
		WritePauseMs: r.WritePauseMS, Error: r.Error, ErrorRange: r.ErrorRange,
		Created: timestamppb.New(r.Created), Updated: timestamppb.New(r.Updated),
		CommittedVersion: r.CommittedVersion, CleanedKeys: r.CleanedKeys, Verify: r.Verify,
		RollbackPending: r.RollbackPending,
	}
	if !r.Prepared.IsZero() && !r.HandedOff.IsZero() {
		out.TimeToHandoff = durationpb.New(r.HandedOff.Sub(r.Prepared))
	}
	if !r.CleanupStarted.IsZero() && !r.CleanupEnded.IsZero() {
		out.CleanupDuration = durationpb.New(r.CleanupEnded.Sub(r.CleanupStarted))
	}
	for _, s := range r.Streams {
		out.Streams = append(out.Streams, &migratorv1.StreamProgress{Index: s.Index, Ranges: s.Ranges, Keys: s.Keys, Bytes: s.Bytes,
			Batches: s.Batches, Done: s.Done, Error: s.Error})
	}
	return out
}

// progressLoop updates rates every second, and logs and persists the
// progress every ProgressInterval, until ctx ends.
func (j *job) progressLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			j.tick(now)
			if now.Sub(last) < j.m.cfg.ProgressInterval {
				continue
			}
			last = now
			j.mu.Lock()
			j.persistLocked()
			r := j.rec
			attrs := []any{"phase", phaseName(r.Phase), "keys", r.Keys, "keys_total", r.KeysTotal,
				"bytes", r.Bytes, "rate_bytes_per_second", math.Round(j.rate), "eta", j.etaLocked().String(),
				"changes_applied", r.ChangesApplied, "lag", r.Lag, "catch_up_rounds", r.Rounds}
			j.mu.Unlock()
			j.log.InfoContext(ctx, "migration progress", attrs...)
		}
	}
}
