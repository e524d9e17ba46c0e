package migrate

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	migratorv1 "github.com/slotkv/slotkv/gen/slotkv/migrator/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/digest"
	"github.com/slotkv/slotkv/pkg/kvpack"
	"github.com/slotkv/slotkv/pkg/route"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/topology"
)

// rangeError is an error with the sub-range of the job it hit.
type rangeError struct {
	err error
	rng string
}

func (e *rangeError) Error() string { return e.err.Error() }
func (e *rangeError) Unwrap() error { return e.err }

func inRange(err error, rng string) error {
	var re *rangeError
	if err == nil || errors.As(err, &re) {
		return err
	}
	return &rangeError{err: err, rng: rng}
}

// nodeError names the node and the call that failed.
type nodeError struct {
	role, id, op string
	err          error
}

func (e *nodeError) Error() string {
	if st, ok := status.FromError(e.err); ok {
		return fmt.Sprintf("%s %s: %s: %s: %s", e.role, e.id, e.op, st.Code(), st.Message())
	}
	return fmt.Sprintf("%s %s: %s: %v", e.role, e.id, e.op, e.err)
}
func (e *nodeError) Unwrap() error { return e.err }

// definitive reports whether a node answered err itself, so the call
// certainly had no effect (as opposed to a call cut in transit).
func definitive(err error) bool {
	switch status.Code(err) {
	case grpccodes.InvalidArgument, grpccodes.FailedPrecondition, grpccodes.PermissionDenied,
		grpccodes.Unauthenticated, grpccodes.AlreadyExists, grpccodes.NotFound, grpccodes.OutOfRange,
		grpccodes.Unimplemented:
		return true
	}
	return false
}

// conns are the connections of one job (or one rollback attempt); close
// them on every path.
type conns struct {
	dial func(string) (*grpc.ClientConn, error)
	mu   sync.Mutex
	m    map[string]*grpc.ClientConn
}

func (m *Manager) newConns() *conns {
	return &conns{dial: m.cfg.Dial, m: map[string]*grpc.ClientConn{}}
}

func (c *conns) get(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cc, ok := c.m[addr]; ok {
		return cc, nil
	}
	cc, err := c.dial(addr)
	if err != nil {
		return nil, err
	}
	c.m[addr] = cc
	return cc, nil
}

func (c *conns) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for a, cc := range c.m {
		_ = cc.Close()
		delete(c.m, a)
	}
}

// peer is one node of the job with its clients.
type peer struct {
	role, id, addr string
	mig            storagev1.MigrationServiceClient
	data           storagev1.StorageServiceClient
	node           storagev1.NodeServiceClient
}

func (p *peer) err(op string, err error) error {
	if err == nil {
		return nil
	}
	return &nodeError{role: p.role, id: p.id, op: op, err: err}
}

// addr is the current gRPC address of node id (fallback: the one planned).
func (j *job) addr(id, planned string) string {
	if t := j.m.cfg.Router.Topology(); t != nil {
		if n, ok := t.Node(id); ok {
			return n.GRPCAddress
		}
	}
	return planned
}

func (j *job) peers(c *conns) (src, dst *peer, err error) {
	mk := func(role, id, planned string) (*peer, error) {
		addr := j.addr(id, planned)
		cc, err := c.get(addr)
		if err != nil {
			return nil, &nodeError{role: role, id: id, op: "dial " + addr, err: err}
		}
		return &peer{role: role, id: id, addr: addr, mig: storagev1.NewMigrationServiceClient(cc),
			data: storagev1.NewStorageServiceClient(cc), node: storagev1.NewNodeServiceClient(cc)}, nil
	}
	j.mu.Lock()
	r := *j.rec
	j.mu.Unlock()
	if src, err = mk("source", r.Source, r.SourceAddr); err != nil {
		return nil, nil, err
	}
	if dst, err = mk("destination", r.Destination, r.DestinationAddr); err != nil {
		return nil, nil, err
	}
	return src, dst, nil
}

func protoRanges(rs slot.RangeSet) []*clusterv1.SlotRange {
	var out []*clusterv1.SlotRange
	for _, r := range rs.Ranges() {
		out = append(out, &clusterv1.SlotRange{Start: uint32(r.Start), End: uint32(r.End)})
	}
	return out
}

func (j *job) isCanceled() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.canceled
}

// run drives a new job from PREPARE to SUCCEEDED, or to FAILED/CANCELED
// with a rollback.
func (j *job) run() {
	ctx, span := j.m.tracer.Start(j.ctx, "migration "+j.id, trace.WithNewRoot(), trace.WithAttributes(
		attribute.String("migration.job", j.id), attribute.String("migration.ranges", j.ranges.String()),
		attribute.String("migration.source", j.rec.Source), attribute.String("migration.destination", j.rec.Destination)))
	defer span.End()
	pctx, pstop := context.WithCancel(ctx)
	var pw sync.WaitGroup
	pw.Go(func() { j.progressLoop(pctx) })
	err := j.execute(ctx)
	pstop()
	pw.Wait()
	switch {
	case err == nil:
	case j.m.abandoned.Load():
		// The term ended: the next leader rolls the job back or forward
		// from its record; nothing is written or undone here.
		j.log.WarnContext(ctx, "job stopped: this replica no longer leads; the next leader takes it over", "phase", j.phaseName(), "err", err)
	case j.m.shuttingDown():
		j.update(func(*record) {})
		j.mu.Lock()
		committing := j.rec.Committing
		j.mu.Unlock()
		if !committing {
			// Do not leave the source FROZEN (or MIGRATING) until the next
			// start: abort on the nodes now, on a context of its own since
			// the manager's has ended. What fails stays recorded as begun,
			// and the next start finishes the rollback.
			if rerr := j.shutdownRollback(); rerr != nil {
				j.log.WarnContext(ctx, "rollback at shutdown incomplete; the next start finishes it", "err", rerr)
			}
		}
		j.log.WarnContext(ctx, "job stopped by shutdown; the next start rolls it back or forward", "phase", j.phaseName())
	default:
		span.SetStatus(codes.Error, err.Error())
		j.fail(err)
	}
}

// enter starts a phase: persisted, logged, traced, then the test hooks.
func (j *job) enter(ctx context.Context, p migratorv1.Phase) (context.Context, trace.Span, error) {
	j.update(func(r *record) { r.Phase = p })
	ctx, span := j.m.tracer.Start(ctx, "phase "+phaseName(p))
	j.log.InfoContext(ctx, "migration phase", "phase", phaseName(p))
	if slices.Contains(j.m.cfg.PauseBeforePhase, p) {
		j.log.WarnContext(ctx, "pausing before the phase (testing aid --pause-before-phase)", "phase", phaseName(p), "timeout", j.m.cfg.PauseTimeout)
		t := time.NewTimer(j.m.cfg.PauseTimeout)
		select {
		case <-ctx.Done():
			t.Stop()
			span.End()
			return ctx, span, context.Cause(ctx)
		case <-t.C:
		}
	}
	if h := j.m.cfg.PhaseHook; h != nil {
		if err := h(ctx, j.id, p); err != nil {
			span.End()
			return ctx, span, err
		}
	}
	return ctx, span, nil
}

func endSpan(span trace.Span, err error) {
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

func (j *job) execute(ctx context.Context) (err error) {
	c := j.m.newConns()
	defer c.close()
	src, dst, err := j.peers(c)
	if err != nil {
		return err
	}
	if err := j.prepare(ctx, src, dst); err != nil {
		return err
	}
	snapSeq, err := j.snapshot(ctx, src, dst)
	if err != nil {
		return err
	}
	if err := j.verify(ctx, src, dst); err != nil {
		return err
	}
	ap, err := j.catchUp(ctx, src, dst, snapSeq)
	if err != nil {
		if ap != nil {
			ap.close()
		}
		return err
	}
	committed, err := j.handoff(ctx, src, dst, ap)
	ap.close() // not needed past the hand-off
	if !committed {
		return err
	}
	if err != nil {
		j.log.WarnContext(ctx, "hand-off step after the commit failed; rolling forward", "err", err)
	}
	return j.rollForward(ctx, c)
}

// PREPARE: destination IMPORTING, then source MIGRATING (change capture on).
func (j *job) prepare(ctx context.Context, src, dst *peer) (err error) {
	ctx, span, err := j.enter(ctx, migratorv1.Phase_PHASE_PREPARE)
	if err != nil {
		return err
	}
	defer func() { endSpan(span, err) }()
	j.update(func(r *record) { r.Prepared = time.Now().UTC() })
	rs := protoRanges(j.ranges)
	begin := func(ctx context.Context, p, peerNode *peer, role storagev1.MigrationRole, version uint64, mark func(*record, bool)) error {
		// The intent is on disk before the node hears of the job: a crash
		// after the call must find the record that says to abort it there.
		if err := j.persist(func(r *record) { mark(r, true) }); err != nil {
			return fmt.Errorf("writing the intent record (the job begins on %s %s) failed, so the node was not told of the job: %w", p.role, p.id, err)
		}
		cctx, cancel := context.WithTimeout(ctx, rpcTimeout)
		defer cancel()
		_, err := p.mig.BeginMigration(cctx, &storagev1.BeginMigrationRequest{
			JobId: j.id, Role: role, Ranges: rs, PeerNodeId: peerNode.id, TopologyVersion: version})
		if err != nil {
			if definitive(err) {
				j.update(func(r *record) { mark(r, false) })
			}
			return inRange(p.err("BeginMigration", err), j.ranges.String())
		}
		return nil
	}
	planned := func() uint64 {
		j.mu.Lock()
		defer j.mu.Unlock()
		return j.rec.PlannedVersion
	}
	// pkg/route's retry policy: a node that is briefly unreachable or
	// frozen is retried with backoff; a concurrent job's commit that bumps
	// the topology version between the plan and here (or reaches one of
	// our nodes a moment after the other) makes the job re-plan on the
	// newest topology (still disjoint from every unfinished job, the
	// source still owning the slots) or wait for the lagging node; all
	// within prepareTimeout.
	pctx, cancel := context.WithTimeoutCause(ctx, prepareTimeout,
		fmt.Errorf("the nodes did not agree on a topology version within %s", prepareTimeout))
	defer cancel()
	return route.Retry(pctx, j.m.cfg.Router.NewBackoffer(pctx), func(ctx context.Context) error {
		version := planned()
		if err := begin(ctx, dst, src, storagev1.MigrationRole_MIGRATION_ROLE_DESTINATION, version,
			func(r *record, v bool) { r.BegunDestination = v }); err != nil {
			return err
		}
		return begin(ctx, src, dst, storagev1.MigrationRole_MIGRATION_ROLE_SOURCE, version,
			func(r *record, v bool) { r.BegunSource = v })
	}, route.RetryStale(func(ctx context.Context, _ route.Class, err error) error {
		version := planned()
		j.log.InfoContext(ctx, "a node holds another topology version; preparing again", "planned_version", version, "err", err)
		if rerr := j.replan(ctx, version); rerr != nil {
			return fmt.Errorf("%w; re-planning: %v", err, rerr)
		}
		return nil
	}))
}

// prepareTimeout bounds PREPARE's retries.
const prepareTimeout = 30 * time.Second

// replan moves the job's plan to the newest topology the cluster knows
// when it is newer than planned: the source must still own every slot
// and both nodes still be in it (the migrator's own overlap check keeps
// other jobs off the slots).
func (j *job) replan(ctx context.Context, planned uint64) error {
	topo, err := j.m.cfg.Router.RefreshTo(ctx, planned+1)
	if topo == nil {
		return fmt.Errorf("no topology: %v", err)
	}
	if topo.Version() <= planned {
		return nil // a node lags behind the plan: wait for it
	}
	j.mu.Lock()
	src, dst := j.rec.Source, j.rec.Destination
	j.mu.Unlock()
	if _, ok := topo.Node(dst); !ok {
		return fmt.Errorf("destination %s is not in topology version %d", dst, topo.Version())
	}
	for s := range j.ranges.All() {
		if n, ok := topo.Owner(s); !ok || n.ID != src {
			return fmt.Errorf("slot %d is no longer owned by source %s in topology version %d", s, src, topo.Version())
		}
	}
	return j.persist(func(r *record) { r.PlannedVersion = topo.Version() })
}

// SNAPSHOT: P streams, each SnapshotScan -> Import over its sub-range,
// sharing one byte-rate limiter.
func (j *job) snapshot(ctx context.Context, src, dst *peer) (seq uint64, err error) {
	ctx, span, err := j.enter(ctx, migratorv1.Phase_PHASE_SNAPSHOT)
	if err != nil {
		return 0, err
	}
	defer func() { endSpan(span, err) }()
	os, err := src.mig.OpenSnapshot(ctx, &storagev1.OpenSnapshotRequest{JobId: j.id})
	if err != nil {
		return 0, inRange(src.err("OpenSnapshot", err), j.ranges.String())
	}
	seq = os.GetSnapshotSeq()
	// No count of the keys beforehand: it would read the whole range once
	// more. keys_total is estimated from how far the streams are through
	// their slots (tick), and exact once they are done.
	j.mu.Lock()
	subs := streamRanges(j.ranges, int(j.rec.Parallelism))
	j.streams = nil
	for i, sub := range subs {
		st := &streamState{index: uint32(i), ranges: sub, sent: slotSums{}}
		st.at.Store(-1)
		j.streams = append(j.streams, st)
	}
	streams := j.streams
	j.rec.SnapshotSeq, j.rec.KeysTotal = seq, 0
	j.persistLocked()
	j.mu.Unlock()
	span.SetAttributes(attribute.Int("migration.streams", len(subs)), attribute.Int64("migration.snapshot_seq", int64(seq)))

	g, gctx := errgroup.WithContext(ctx)
	for i, st := range streams {
		g.Go(func() error {
			err := j.copyStreamWhenFree(gctx, src, dst, i, st)
			if err != nil {
				msg := err.Error()
				st.err.Store(&msg)
				return inRange(err, st.ranges.String())
			}
			st.done.Store(true)
			return nil
		})
	}
	err = g.Wait() // every stream stopped and waited for
	j.update(func(r *record) {
		if err == nil {
			j.syncStreamsLocked() // r.Keys as the streams ended
			r.KeysTotal = r.Keys
		}
	})
	return seq, err
}

// stripeSlots is the most slots a stream copies before the next stream's
// turn (see streamRanges).
const stripeSlots = 16

// streamRanges deals the job's slots to p streams in stripes of a few
// slots (at least 4 stripes a stream where there are enough slots), not in
// p contiguous pieces: the streams then move through the key space side by
// side, so the destination's memtables hold keys of one narrow window and
// its L0 tables overlap little, as with one stream. With contiguous pieces
// every memtable spanned all p pieces and compaction grew with p.
func streamRanges(rs slot.RangeSet, p int) []slot.RangeSet {
	chunk := min(stripeSlots, max(1, rs.Len()/(4*max(p, 1))))
	return rs.Stripe(p, chunk)
}

// snapshotStreamPrefix starts the import stream id of each snapshot stream
// ("snap-0", ...); the changes go on stream "changes".
const snapshotStreamPrefix = "snap-"

type pending struct {
	seq         uint64
	keys, bytes uint64
	digests     []*storagev1.SlotDigest // the source's, of the batch
	slot        uint16                  // of its last entry
}

// slotSums adds up per-slot digests: the source's of the batches it sent,
// the destination's of the batches it applied.
type slotSums map[uint32]slotSum

type slotSum struct {
	count  uint64
	digest digest.Digest
}

func (s slotSums) add(ds []*storagev1.SlotDigest) error {
	for _, d := range ds {
		dg, err := digest.ParseDigest(d.GetDigest())
		if err != nil {
			return fmt.Errorf("digest of slot %d: %w", d.GetSlot(), err)
		}
		cur := s[d.GetSlot()]
		cur.count += d.GetCount()
		cur.digest = cur.digest.Combine(dg)
		s[d.GetSlot()] = cur
	}
	return nil
}

// merge adds o's sums to s.
func (s slotSums) merge(o slotSums) {
	for sl, d := range o {
		cur := s[sl]
		cur.count += d.count
		cur.digest = cur.digest.Combine(d.digest)
		s[sl] = cur
	}
}

// proto lists the sums as wire digests.
func (s slotSums) proto() []*storagev1.SlotDigest {
	out := make([]*storagev1.SlotDigest, 0, len(s))
	for sl, d := range s {
		out = append(out, &storagev1.SlotDigest{Slot: sl, Count: d.count, Digest: d.digest.Bytes()})
	}
	return out
}

// importSlotWait bounds how long a stream waits for the destination to
// free an import stream slot (other jobs' streams hold them).
const importSlotWait = time.Minute

// copyStreamWhenFree is copyStream for a destination that may be at its
// import stream limit because other jobs stream into it too (planning caps
// one job, not the sum): a stream refused before it copied anything waits
// with pkg/route's backoff for a slot, within importSlotWait. Any other
// error, or one after the stream copied a batch, fails the stream.
func (j *job) copyStreamWhenFree(ctx context.Context, src, dst *peer, i int, st *streamState) error {
	wctx, cancel := context.WithTimeout(ctx, importSlotWait)
	defer cancel()
	b := j.m.cfg.Router.NewBackoffer(wctx)
	for {
		err := j.copyStream(ctx, src, dst, i, st)
		c := route.Classify(err)
		// The limit's refusal asks to come back (RetryInfo); other
		// ResourceExhausted answers (a batch too big) do not.
		if err == nil || c.Kind != route.Busy || c.RetryAfter == 0 || st.batches.Load() > 0 {
			return err
		}
		d := b.Next(c)
		if !b.Fits(d) {
			return err
		}
		j.log.InfoContext(ctx, "destination at its import stream limit; waiting for a free stream", "stream", i, "retry_in", d, "err", err)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-wctx.Done():
			t.Stop()
			return err
		}
	}
}

// copyStream copies one sub-range: SnapshotScan from the source into an
// Import stream to the destination, importWindow batches in flight. A
// batch-size change restarts the scan after the last position sent.
func (j *job) copyStream(ctx context.Context, src, dst *peer, i int, st *streamState) (err error) {
	ctx, span := j.m.tracer.Start(ctx, fmt.Sprintf("stream %d", i),
		trace.WithAttributes(attribute.String("migration.stream_ranges", st.ranges.String())))
	defer func() { endSpan(span, err) }()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends both streams on every path
	streamID := fmt.Sprintf("%s%d", snapshotStreamPrefix, i)
	imp, err := dst.mig.Import(ctx)
	if err != nil {
		return dst.err("Import", err)
	}
	inflight := make(chan pending, importWindow)
	recvDone := make(chan error, 1)
	go func() {
		recvDone <- func() error {
			for {
				resp, err := imp.Recv()
				if err == io.EOF {
					if len(inflight) > 0 {
						return dst.err("Import", errors.New("stream ended before every batch was acknowledged"))
					}
					return nil
				}
				if err != nil {
					return dst.err("Import", err)
				}
				var p pending
				select {
				case p = <-inflight:
				default:
					return dst.err("Import", fmt.Errorf("acknowledgement of batch %d that was not sent", resp.GetSeq()))
				}
				if resp.GetSeq() != p.seq {
					return dst.err("Import", fmt.Errorf("acknowledged batch %d, expected %d", resp.GetSeq(), p.seq))
				}
				if err := st.sent.add(p.digests); err != nil {
					return src.err("SnapshotScan", err)
				}
				st.at.Store(int32(p.slot))
				st.keys.Add(p.keys)
				st.bytes.Add(p.bytes)
				st.batches.Add(1)
			}
		}()
	}()
	// stop ends both streams, waits for the receiver and returns err: the
	// error of whichever side failed first, not the other side's
	// "canceled" that the cut causes.
	stop := func(err error) error {
		cancel()
		<-recvDone
		return err
	}
	// sendErr is stop for a failed Send: the receiver's error explains it
	// better (Send only says io.EOF).
	sendErr := func(err error) error {
		cancel()
		if rerr := <-recvDone; rerr != nil && status.Code(rerr) != grpccodes.Canceled && !errors.Is(rerr, context.Canceled) {
			return rerr
		}
		return err
	}

	var lastPos []byte
	var seq uint64
	for {
		bsz := j.batch.Load()
		sctx, scancel := context.WithCancel(ctx)
		scan, err := src.mig.SnapshotScan(sctx, &storagev1.SnapshotScanRequest{
			JobId: j.id, Ranges: protoRanges(st.ranges), StartAfter: lastPos, BatchRecords: bsz, BatchBytes: batchBytes, Packed: true})
		if err != nil {
			scancel()
			return stop(src.err("SnapshotScan", err))
		}
		restart := false
		for {
			resp, err := scan.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				scancel()
				return stop(src.err("SnapshotScan", err))
			}
			// The batch goes on as the source packed it: counted, not
			// decoded or copied (pkg/kvpack).
			packed := resp.GetPacked()
			keys, err := kvpack.Count(packed)
			if err != nil {
				scancel()
				return stop(src.err("SnapshotScan", err))
			}
			if keys == 0 {
				continue
			}
			lp := resp.GetLastPosition()
			if len(lp) < slot.PrefixLen {
				scancel()
				return stop(src.err("SnapshotScan", fmt.Errorf("a batch of %d entries without its last position", keys)))
			}
			lastPos = lp
			n := uint64(len(packed))
			if err := j.wait(ctx, n); err != nil {
				scancel()
				return stop(err)
			}
			seq++
			select {
			case inflight <- pending{seq: seq, keys: uint64(keys), bytes: n, digests: resp.GetDigests(), slot: binary.BigEndian.Uint16(lp)}:
			case rerr := <-recvDone:
				scancel()
				if rerr == nil {
					rerr = dst.err("Import", errors.New("stream ended early"))
				}
				return rerr
			}
			if err := imp.Send(&storagev1.ImportRequest{JobId: j.id, StreamId: streamID, Seq: seq, Packed: packed}); err != nil {
				scancel()
				return sendErr(dst.err("Import", err))
			}
			if j.batch.Load() != bsz {
				restart = true
				break
			}
		}
		scancel()
		if !restart {
			break
		}
		j.log.DebugContext(ctx, "batch size changed; resuming the scan", "stream", i, "batch_records", j.batch.Load())
	}
	if err := imp.CloseSend(); err != nil {
		return sendErr(dst.err("Import", err))
	}
	select {
	case err := <-recvDone:
		return err
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// wait takes n bytes from the shared limiter, in burst-sized pieces. A
// rate change (UpdateMigration) wakes it up to wait again at the new rate.
func (j *job) wait(ctx context.Context, n uint64) error {
	for n > 0 {
		take := min(n, uint64(j.limiter.Burst()))
		changed := j.limitChanged()
		r := j.limiter.ReserveN(time.Now(), int(take))
		if !r.OK() {
			return fmt.Errorf("rate limiter refused %d bytes", take)
		}
		d := r.Delay()
		if d <= 0 {
			n -= take
			continue
		}
		t := time.NewTimer(d)
		select {
		case <-t.C:
			n -= take
		case <-changed:
			t.Stop()
			r.Cancel()
		case <-ctx.Done():
			t.Stop()
			r.Cancel()
			return context.Cause(ctx)
		}
	}
	return nil
}

// VERIFY: the snapshot's digest per slot, as the source computed it while
// scanning (the sums of the acknowledged batches), against the digest of
// what the destination's snapshot streams applied, as it computed it while
// applying them: no data is read again. With VERIFY_FULL both sides then
// also read and digest everything (the source's snapshot, the
// destination's imported data), which checks the disk too. Before any
// change is applied.
func (j *job) verify(ctx context.Context, src, dst *peer) (err error) {
	ctx, span, err := j.enter(ctx, migratorv1.Phase_PHASE_VERIFY)
	if err != nil {
		return err
	}
	defer func() { endSpan(span, err) }()
	sent := slotSums{}
	var copied uint64
	j.mu.Lock()
	for _, st := range j.streams {
		sent.merge(st.sent)
		copied += st.keys.Load()
	}
	full := j.rec.Verify == migratorv1.Verify_VERIFY_FULL
	j.mu.Unlock()
	var keys uint64
	for _, d := range sent {
		keys += d.count
	}
	if keys != copied {
		// Every batch carries its digests: a source that sends none (or
		// too few) cannot be verified this way.
		return inRange(src.err("SnapshotScan", fmt.Errorf("the snapshot's digests cover %d keys, the streams copied %d", keys, copied)), j.ranges.String())
	}
	st, err := dst.mig.GetImportState(ctx, &storagev1.GetImportStateRequest{JobId: j.id, AppliedDigests: true})
	if err != nil {
		return inRange(dst.err("GetImportState", err), j.ranges.String())
	}
	applied := slotSums{}
	for _, s := range st.GetStreams() {
		if strings.HasPrefix(s.GetStreamId(), snapshotStreamPrefix) {
			if err := applied.add(s.GetApplied()); err != nil {
				return inRange(dst.err("GetImportState", err), j.ranges.String())
			}
		}
	}
	if err := compareDigests(sent.proto(), applied.proto()); err != nil {
		return err
	}
	j.log.InfoContext(ctx, "snapshot verified from the streams' digests", "keys", keys, "slots", len(sent))
	if !full {
		return nil
	}
	rs := protoRanges(j.ranges)
	sd, err := src.mig.SnapshotDigest(ctx, &storagev1.SnapshotDigestRequest{JobId: j.id, Ranges: rs})
	if err != nil {
		return inRange(src.err("SnapshotDigest", err), j.ranges.String())
	}
	dd, err := dst.mig.GetImportState(ctx, &storagev1.GetImportStateRequest{JobId: j.id, DigestRanges: rs})
	if err != nil {
		return inRange(dst.err("GetImportState", err), j.ranges.String())
	}
	if err := compareDigests(sd.GetSlots(), dd.GetSlots()); err != nil {
		return err
	}
	if sd.GetCount() != dd.GetCount() || !bytes.Equal(sd.GetDigest(), dd.GetDigest()) {
		return inRange(fmt.Errorf("snapshot verification failed: source has %d keys, destination %d (digests differ)",
			sd.GetCount(), dd.GetCount()), j.ranges.String())
	}
	if sd.GetCount() != keys {
		return inRange(fmt.Errorf("snapshot verification failed: the snapshot holds %d keys, the streams sent %d", sd.GetCount(), keys), j.ranges.String())
	}
	j.log.InfoContext(ctx, "snapshot verified by reading it back on both nodes", "keys", sd.GetCount())
	return nil
}

// compareDigests names the first slot whose digest differs.
func compareDigests(a, b []*storagev1.SlotDigest) error {
	am := map[uint32]*storagev1.SlotDigest{}
	bm := map[uint32]*storagev1.SlotDigest{}
	var slots []uint32
	for _, d := range a {
		am[d.GetSlot()] = d
		slots = append(slots, d.GetSlot())
	}
	for _, d := range b {
		bm[d.GetSlot()] = d
		if _, ok := am[d.GetSlot()]; !ok {
			slots = append(slots, d.GetSlot())
		}
	}
	slices.Sort(slots)
	for _, s := range slots {
		x, y := am[s], bm[s]
		if x.GetCount() != y.GetCount() || !bytes.Equal(x.GetDigest(), y.GetDigest()) {
			return &rangeError{
				err: fmt.Errorf("snapshot verification failed at slot %d: source has %d keys, destination %d (digests differ)",
					s, x.GetCount(), y.GetCount()),
				rng: fmt.Sprint(s),
			}
		}
	}
	return nil
}

// applier sends captured changes on the destination's "changes" stream,
// one acknowledged batch at a time; the batch seq is the change seq of its
// last entry.
type applier struct {
	dst      *peer
	jobID    string
	stream   grpc.BidiStreamingClient[storagev1.ImportRequest, storagev1.ImportResponse]
	cancel   context.CancelFunc
	lastSent uint64
	sent     bool
}

func (a *applier) apply(entries []*storagev1.MigrationEntry) error {
	seq := entries[len(entries)-1].GetSeq()
	if err := a.stream.Send(&storagev1.ImportRequest{JobId: a.jobID, StreamId: "changes", Seq: seq, Entries: entries}); err != nil {
		if _, rerr := a.stream.Recv(); rerr != nil && rerr != io.EOF {
			err = rerr
		}
		return a.dst.err("Import changes", err)
	}
	resp, err := a.stream.Recv()
	if err != nil {
		return a.dst.err("Import changes", err)
	}
	if resp.GetSeq() != seq {
		return a.dst.err("Import changes", fmt.Errorf("acknowledged batch %d, expected %d", resp.GetSeq(), seq))
	}
	a.lastSent, a.sent = seq, true
	return nil
}

func (a *applier) close() {
	_ = a.stream.CloseSend()
	a.cancel()
}

func (j *job) readChanges(ctx context.Context, src *peer, after uint64) (*storagev1.ReadChangesResponse, error) {
	resp, err := src.mig.ReadChanges(ctx, j.changesRequest(after))
	if err != nil {
		return nil, inRange(src.err("ReadChanges", err), j.ranges.String())
	}
	return resp, nil
}

// changesRequest asks for the job's changes after seq, one batch.
func (j *job) changesRequest(after uint64) *storagev1.ReadChangesRequest {
	return &storagev1.ReadChangesRequest{JobId: j.id, AfterSeq: after, Limit: j.batch.Load(), MaxBytes: batchBytes}
}

// CATCH_UP: replay captured changes until the lag is under the threshold
// or the rounds are used up.
func (j *job) catchUp(ctx context.Context, src, dst *peer, applied uint64) (ap *applier, err error) {
	pctx, span, err := j.enter(ctx, migratorv1.Phase_PHASE_CATCH_UP)
	if err != nil {
		return nil, err
	}
	defer func() { endSpan(span, err) }()
	// The stream lives on into the hand-off: opened now, it costs nothing
	// during the write pause.
	sctx, cancel := context.WithCancel(ctx)
	stream, err := dst.mig.Import(sctx)
	if err != nil {
		cancel()
		return nil, inRange(dst.err("Import", err), j.ranges.String())
	}
	ap = &applier{dst: dst, jobID: j.id, stream: stream, cancel: cancel, lastSent: applied}
	j.mu.Lock()
	threshold, maxRounds := j.rec.LagThreshold, j.rec.MaxRounds
	j.mu.Unlock()
	for round := uint32(1); ; round++ {
		var target, lag uint64
		first := true
		for {
			resp, err := j.readChanges(pctx, src, applied)
			if err != nil {
				return ap, err
			}
			head := resp.GetHeadSeq()
			if first {
				target, first = head, false
			}
			ch := resp.GetChanges()
			if len(ch) > 0 {
				var n uint64
				for _, e := range ch {
					n += uint64(len(e.GetKey()) + len(e.GetValue()))
				}
				if err := j.wait(pctx, n); err != nil {
					return ap, err
				}
				if err := ap.apply(ch); err != nil {
					return ap, inRange(err, j.ranges.String())
				}
				applied = ap.lastSent
			}
			lag = 0
			if head > applied {
				lag = head - applied
			}
			j.mu.Lock()
			j.rec.ChangesApplied += uint64(len(ch))
			j.rec.Lag = lag
			j.mu.Unlock()
			if len(ch) == 0 || applied >= target {
				break
			}
		}
		j.update(func(r *record) { r.Rounds = round })
		j.log.InfoContext(pctx, "catch-up round done", "round", round, "applied_seq", applied, "lag", lag)
		if lag < threshold {
			return ap, nil
		}
		if round >= maxRounds {
			j.log.WarnContext(pctx, "catch-up rounds used up; handing off anyway", "lag", lag, "rounds", round)
			return ap, nil
		}
	}
}

// HANDOFF: freeze, drain the last changes, confirm them applied, persist
// the commit point, commit the new topology in etcd, then wait for the
// source to stop serving the slots and the destination to start. It reports whether
// the commit point was reached: after it, errors roll forward.
func (j *job) handoff(ctx context.Context, src, dst *peer, ap *applier) (committed bool, err error) {
	ctx, span, err := j.enter(ctx, migratorv1.Phase_PHASE_HANDOFF)
	if err != nil {
		return false, err
	}
	defer func() { endSpan(span, err) }()
	j.m.commitMu.Lock()
	defer j.m.commitMu.Unlock()
	topo, err := j.m.cfg.Router.Refresh(ctx)
	if err != nil || topo == nil {
		// Never commit on a cached topology: it may be older than what the
		// nodes hold.
		return false, fmt.Errorf("no fresh topology to commit on: %v", err)
	}
	for s := range j.ranges.All() {
		if n, ok := topo.Owner(s); !ok || n.ID != src.id {
			return false, inRange(fmt.Errorf("slot %d is no longer owned by source %s in topology version %d", s, src.id, topo.Version()), fmt.Sprint(s))
		}
	}
	next, err := topo.Reassign(j.ranges, dst.id)
	if err != nil {
		return false, err
	}
	nextBytes, err := proto.Marshal(next.Proto())
	if err != nil {
		return false, err
	}

	// The write pause starts here: nothing slow until the destination
	// serves the slots.
	t0 := time.Now()
	// From Freeze to the commit point, within HandoffTimeout: past it the
	// job rolls back and the source takes writes again. The change stream
	// is cut too, so a stuck destination cannot hold the pause.
	hctx, hcancel := context.WithTimeoutCause(ctx, j.m.cfg.HandoffTimeout,
		fmt.Errorf("hand-off did not reach its commit point within %s", j.m.cfg.HandoffTimeout))
	defer hcancel()
	stopCut := context.AfterFunc(hctx, ap.cancel)
	defer stopCut()
	timedOut := func(err error) error {
		if hctx.Err() != nil && ctx.Err() == nil {
			return inRange(fmt.Errorf("%w: %v", context.Cause(hctx), err), j.ranges.String())
		}
		return err
	}
	// steps times the parts of the pause, for the log.
	var steps []any
	lap := t0
	step := func(name string) {
		now := time.Now()
		steps = append(steps, name, now.Sub(lap).String())
		lap = now
	}
	// The freeze brings the first changes to drain with it.
	fr, err := src.mig.Freeze(hctx, &storagev1.FreezeRequest{JobId: j.id, Changes: j.changesRequest(ap.lastSent)})
	if err != nil {
		return false, timedOut(inRange(src.err("Freeze", err), j.ranges.String()))
	}
	step("freeze")
	// The source synced its disk before it froze the slots, with writes
	// still admitted: not part of the pause.
	synced := msDuration(fr.GetSyncedBeforeMs())
	final := fr.GetFinalSeq()
	applied := ap.lastSent
	var drained uint64
	got := fr.GetChanges()
	for applied < final {
		if len(got) == 0 {
			resp, err := j.readChanges(hctx, src, applied)
			if err != nil {
				return false, timedOut(err)
			}
			got = resp.GetChanges()
		}
		var ch []*storagev1.MigrationEntry
		for _, e := range got {
			if e.GetSeq() <= final {
				ch = append(ch, e)
			}
		}
		if len(ch) == 0 {
			return false, inRange(src.err("ReadChanges", fmt.Errorf("changes stop at %d, before the final sequence %d", applied, final)), j.ranges.String())
		}
		if err := ap.apply(ch); err != nil {
			return false, timedOut(inRange(err, j.ranges.String()))
		}
		applied = ap.lastSent
		drained += uint64(len(ch))
		got = nil
	}
	// Every change up to final is on the destination: the loop above ends
	// only once the destination has acknowledged a batch ending at or past
	// it, and it acknowledges a batch only after committing it.

	// Commit point.
	j.mu.Lock()
	if j.canceled || hctx.Err() != nil {
		j.mu.Unlock()
		if ctx.Err() != nil {
			return false, context.Cause(ctx)
		}
		if hctx.Err() != nil {
			return false, inRange(context.Cause(hctx), j.ranges.String())
		}
		return false, errCanceled
	}
	prev := *j.rec
	j.rec.ChangesApplied += drained
	j.rec.Lag = 0
	j.rec.Committing = true
	j.rec.NewTopology = nextBytes
	j.rec.CommittedVersion = next.Version()
	j.rec.EtcdExpect = topo.Version()
	step("drain")
	if err := j.persistLocked(); err != nil {
		// Not durably committed: a restart would roll the job back, so
		// push nothing and roll back now.
		*j.rec = prev
		j.mu.Unlock()
		return false, fmt.Errorf("saving the commit point: %w", err)
	}
	j.mu.Unlock()

	step("commit_point")
	// etcd decides: one transaction, then the nodes follow it (they watch
	// it; nothing is pushed to them).
	out, cerr := j.etcdCommit(hctx)
	if out == undecided && !deposed(cerr) {
		j.log.WarnContext(ctx, "etcd did not confirm the commit within the hand-off timeout; the job may be committed, waiting for etcd", "err", cerr)
		out, cerr = j.resolveCommit()
	}
	switch out {
	case notCommitted:
		j.revertCommitting()
		return false, timedOut(inRange(cerr, j.ranges.String()))
	case undecided:
		// Shutdown, or this replica no longer leads: Committing stays
		// in the record, and the next start (or leader) asks etcd.
		return false, cerr
	}
	j.mu.Lock()
	version := j.rec.CommittedVersion
	j.mu.Unlock()
	step("etcd_commit")
	if j.m.cfg.PauseAfterCommit {
		j.log.WarnContext(ctx, "pausing after the commit (testing aid --pause-after-commit)", "version", version, "timeout", j.m.cfg.PauseTimeout)
		t := time.NewTimer(j.m.cfg.PauseTimeout)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	// The commit carried the hand-off record (see etcdCommit): the
	// source, frozen, serves nothing of the slots. The marks of the steps
	// done in the pause are saved once it has ended, by the update below.
	j.note(func(r *record) { r.PushedSource = true })
	servedAt, serving, err := j.waitServing(ctx, dst)
	if err != nil {
		return true, err // rolled forward; its first update saves the marks
	}
	step("destination_serves")
	// The pause ends when the destination serves; its answer comes after
	// the disk sync that follows.
	pause := servedAt.Sub(t0) - synced
	j.update(func(r *record) {
		r.PushedDestination = true
		r.WritePauseMS = millis(pause)
		r.HandedOff = time.Now().UTC()
	})
	j.mu.Lock()
	version = j.rec.CommittedVersion
	j.mu.Unlock()
	j.log.InfoContext(ctx, "committed", append([]any{"version", version, "write_pause", pause.String(), "drained_changes", drained, "destination_served_before_reply", serving.String()}, append(steps, "source_synced_before_freeze", synced.String())...)...)
	return true, nil
}

// rollForward finishes a committed job: topology on every node, the job
// ended on both nodes, cleanup. It retries until it succeeds or the
// migrator shuts down.
func (j *job) rollForward(ctx context.Context, c *conns) error {
	for {
		err := j.commitSteps(ctx, c)
		if err == nil {
			return nil
		}
		if j.m.shuttingDown() {
			return errShutdown
		}
		j.log.WarnContext(ctx, "finishing the committed migration failed; retrying", "err", err, "retry_in", j.m.cfg.RollbackRetryInterval)
		if !j.m.sleep(j.m.cfg.RollbackRetryInterval) {
			return errShutdown
		}
	}
}

func (j *job) commitSteps(ctx context.Context, c *conns) error {
	j.mu.Lock()
	r := *j.rec
	j.mu.Unlock()
	if r.Phase == migratorv1.Phase_PHASE_SUCCEEDED {
		return nil
	}
	var tp clusterv1.Topology
	if err := proto.Unmarshal(r.NewTopology, &tp); err != nil {
		return fmt.Errorf("committed topology of job %s: %w", j.id, err)
	}
	next, err := topology.FromProto(&tp)
	if err != nil {
		return err
	}
	src, dst, err := j.peers(c)
	if err != nil {
		return err
	}
	if !r.PushedSource {
		if err := j.waitHandshake(ctx, src, next.Version()); err != nil {
			return err
		}
		j.update(func(r *record) { r.PushedSource = true })
	}
	if !r.PushedDestination {
		_, _, err := j.waitServing(ctx, dst)
		r.EndedDestination = err == nil
		if err != nil {
			return err
		}
		j.update(func(r *record) {
			r.PushedDestination = true
			if r.HandedOff.IsZero() {
				r.HandedOff = time.Now().UTC()
			}
		})
	}
	if !r.PushedAll {
		// Every other node watches etcd: nothing to push.
		j.update(func(r *record) { r.PushedAll = true })
	}
	_, _ = j.m.cfg.Router.RefreshTo(ctx, next.Version())
	end := func(p *peer, done bool, mark func(*record)) error {
		if done {
			return nil
		}
		cctx, cancel := context.WithTimeout(ctx, rpcTimeout)
		defer cancel()
		if _, err := p.mig.EndMigration(cctx, &storagev1.EndMigrationRequest{JobId: j.id,
			Outcome: storagev1.MigrationOutcome_MIGRATION_OUTCOME_COMMITTED}); err != nil {
			return p.err("EndMigration(COMMITTED)", err)
		}
		j.update(mark)
		return nil
	}
	if err := end(src, r.EndedSource, func(r *record) { r.EndedSource = true }); err != nil {
		return err
	}
	if err := end(dst, r.EndedDestination, func(r *record) { r.EndedDestination = true }); err != nil {
		return err
	}
	if r.Phase != migratorv1.Phase_PHASE_CLEANUP {
		cctx, span, err := j.enter(ctx, migratorv1.Phase_PHASE_CLEANUP)
		if err != nil {
			return err
		}
		defer span.End()
		ctx = cctx
		r.Phase = migratorv1.Phase_PHASE_CLEANUP
	}
	if !r.Cleaned {
		if r.CleanupStarted.IsZero() {
			j.update(func(r *record) { r.CleanupStarted = time.Now().UTC() })
		}
		resp, err := src.mig.DeleteSlots(ctx, &storagev1.DeleteSlotsRequest{Ranges: protoRanges(j.ranges),
			KeysPerSecond: j.m.cfg.CleanupKeysPerSecond})
		if err != nil {
			return inRange(src.err("DeleteSlots", err), j.ranges.String())
		}
		j.update(func(r *record) {
			r.Cleaned, r.CleanedKeys, r.CleanupEnded = true, resp.GetDeletedKeys(), time.Now().UTC()
		})
	}
	// The handshake has served its purpose once both nodes ended the job:
	// the destination serves, the source forgot the job.
	cctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	err = j.m.cfg.Topo.DeleteHandoff(cctx, j.id)
	cancel()
	if err != nil {
		return fmt.Errorf("removing the hand-off record: %w", err)
	}
	j.mu.Lock()
	j.rec.Phase = migratorv1.Phase_PHASE_SUCCEEDED
	j.persistLocked()
	j.mu.Unlock()
	j.closeEnded()
	p := j.proto()
	j.log.InfoContext(ctx, "migration succeeded", "cleaned_keys", p.GetCleanedKeys(),
		"time_to_handoff", p.GetTimeToHandoff().AsDuration().String(), "cleanup", p.GetCleanupDuration().AsDuration().String(),
		"write_pause_ms", p.GetWritePauseMs())
	return nil
}

// resumeCommitted rolls forward a job that was committed before a restart.
func (j *job) resumeCommitted() {
	ctx, span := j.m.tracer.Start(j.ctx, "migration "+j.id+" roll-forward", trace.WithNewRoot())
	defer span.End()
	c := j.m.newConns()
	defer c.close()
	if err := j.rollForward(ctx, c); err != nil {
		j.log.Warn("roll-forward stopped", "err", err)
	}
}

// fail records the first error, rolls the job back on both nodes, and ends
// it FAILED (or CANCELED). A node that cannot be reached is retried in the
// background until it answers.
func (j *job) fail(cause error) {
	var re *rangeError
	rng := ""
	if errors.As(cause, &re) {
		rng = re.rng
	}
	j.mu.Lock()
	canceled := j.canceled
	phase := j.rec.Phase
	if terminal(phase) {
		phase = j.rec.FailedPhase
	}
	msg := cause.Error()
	if canceled {
		msg, rng = "canceled by request during "+phaseName(phase), ""
	}
	if j.rec.Error == "" {
		j.rec.Error, j.rec.ErrorRange = msg, rng
	}
	if !terminal(j.rec.Phase) {
		j.rec.FailedPhase = j.rec.Phase
	}
	j.rec.RollbackPending = true
	if err := j.persistLocked(); deposed(err) || j.m.abandoned.Load() {
		// Deposed: the next leader rolls the job back from its record;
		// touching the nodes here could race it.
		j.mu.Unlock()
		j.log.Warn("job failed after this replica lost its leadership; the next leader rolls it back", "phase", phaseName(phase), "err", msg)
		return
	}
	j.mu.Unlock()
	if canceled {
		j.log.Warn("migration canceled; rolling back", "phase", phaseName(phase))
	} else {
		j.log.Error("migration failed; rolling back", "phase", phaseName(phase), "err", msg, "error_range", rng)
	}
	err := j.rollbackOnce()
	j.mu.Lock()
	if canceled {
		j.rec.Phase = migratorv1.Phase_PHASE_CANCELED
	} else {
		j.rec.Phase = migratorv1.Phase_PHASE_FAILED
	}
	j.rec.RollbackPending = err != nil
	j.persistLocked()
	j.mu.Unlock()
	j.closeEnded()
	if err == nil {
		j.log.Info("rolled back")
		return
	}
	j.log.Warn("rollback incomplete; retrying in the background", "err", err, "retry_in", j.m.cfg.RollbackRetryInterval)
	if j.m.sleep(j.m.cfg.RollbackRetryInterval) {
		j.retryRollback()
	}
}

// retryRollback retries the rollback until it succeeds or shutdown.
func (j *job) retryRollback() {
	for {
		err := j.rollbackOnce()
		if err == nil {
			j.update(func(r *record) { r.RollbackPending = false })
			j.closeEnded()
			j.log.Info("rolled back")
			return
		}
		j.log.Warn("rollback still incomplete; retrying", "err", err, "retry_in", j.m.cfg.RollbackRetryInterval)
		if !j.m.sleep(j.m.cfg.RollbackRetryInterval) {
			return
		}
	}
}

// rollbackOnce ends the job ABORTED on every node where it may have begun.
func (j *job) rollbackOnce() error {
	return j.abortNodes(func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(j.m.ctx, rpcTimeout)
	})
}

// shutdownRollback is rollbackOnce at shutdown: the manager's context has
// ended, so every call gets a short context of its own.
func (j *job) shutdownRollback() error {
	return j.abortNodes(func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), shutdownRollbackTimeout)
	})
}

// abortNodes ends the job ABORTED on the source (first: it may be FROZEN),
// then on the destination, each call on a context from callCtx.
func (j *job) abortNodes(callCtx func() (context.Context, context.CancelFunc)) error {
	c := j.m.newConns()
	defer c.close()
	src, dst, err := j.peers(c)
	if err != nil {
		return err
	}
	j.mu.Lock()
	r := *j.rec
	j.mu.Unlock()
	abort := func(p *peer, begun bool, mark func(*record)) error {
		if !begun {
			return nil
		}
		ctx, cancel := callCtx()
		defer cancel()
		resp, err := p.mig.EndMigration(ctx, &storagev1.EndMigrationRequest{JobId: j.id,
			Outcome: storagev1.MigrationOutcome_MIGRATION_OUTCOME_ABORTED})
		if err != nil {
			return p.err("EndMigration(ABORTED)", err)
		}
		j.update(mark)
		j.log.Info("job aborted on node", "role", p.role, "node", p.id, "deleted_keys", resp.GetDeletedKeys())
		return nil
	}
	// Both, whatever happens to the other one.
	e1 := abort(src, r.BegunSource, func(r *record) { r.BegunSource = false })
	e2 := abort(dst, r.BegunDestination, func(r *record) { r.BegunDestination = false })
	return errors.Join(e1, e2)
}

// millis is d in milliseconds, to the microsecond (the wire's unit).
func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// msDuration is the wire's milliseconds as a duration.
func msDuration(ms float64) time.Duration { return time.Duration(ms * float64(time.Millisecond)) }
