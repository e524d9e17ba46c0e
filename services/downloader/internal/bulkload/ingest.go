package bulkload

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/dataset"
	"github.com/slotkv/slotkv/pkg/route"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/topology"
)

type ingestRec struct {
	idx        uint64 // index of the record in the file, from 0
	slot       uint16
	key, value []byte
	expiresAt  int64 // Unix milliseconds; 0 = never
}

type ingestBatch struct {
	seq   uint64
	recs  []ingestRec
	bytes int
}

// nodeStream is the ingest of one file into one storage node: records
// waiting for a batch, batches sent and not yet acknowledged (in order),
// and the stream.
type nodeStream struct {
	node         topology.Node
	pending      []ingestRec
	pendingBytes int
	queue        []*ingestBatch
	stream       grpc.BidiStreamingClient[storagev1.IngestRequest, storagev1.IngestResponse]
	cancel       context.CancelFunc
	recvDone     chan struct{}
	gen          int
	seq          uint64
	downSince    time.Time // first failure since the last acknowledgement
	retryAt      time.Time // do not reopen before
	// backoff paces the retries of this node (route's policy, no deadline:
	// NodeRetryTimeout bounds them); reset by an acknowledgement.
	backoff *route.Backoffer
}

type ingestEvent struct {
	node string
	gen  int
	resp *storagev1.IngestResponse
	err  error
}

// ingester feeds one data file to the storage nodes owning its records'
// slots now. One goroutine (run) owns all of its state; one goroutine per
// open stream receives acknowledgements into events.
type ingester struct {
	j   *job
	i   int
	ctx context.Context
	// sctx is the context of the ingest streams: not canceled with ctx, so
	// that a stopping ingest can wait for the acknowledgements of what it
	// has sent (drain); canceled drainTimeout after ctx at the latest.
	sctx   context.Context
	file   fileRecord
	skip   cursor // records acknowledged by an earlier ingest
	jobID  string
	nodes  map[string]*nodeStream
	events chan ingestEvent
	done   chan struct{}
	next   uint64 // index of the next record to read
	// movedSince is the first SLOT_MOVED answer since the last
	// acknowledgement (zero when none).
	movedSince time.Time
	wake       *time.Timer
	last       ingestRec // last record read (for the last_key check)
}

// ingest loads file i (downloaded and verified) into the cluster, starting
// after the file's checkpoint.
func (j *job) ingest(ctx context.Context, i int) (err error) {
	m := j.m
	j.mu.Lock()
	f := *j.rec.Files[i]
	f.Nodes = nil
	j.mu.Unlock()

	ctx, span := m.tracer.Start(ctx, "ingest", trace.WithAttributes(
		attribute.String("file", f.Name), attribute.Int64("keys", int64(f.Keys)), attribute.Int64("checkpoint", int64(f.Checkpoint))))
	defer func() {
		if err != nil && ctx.Err() == nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}()

	path, err := localPath(j.dir(), f.Name)
	if err != nil {
		return fileErr(f.Name, "%v", err)
	}
	in, err := os.Open(path)
	if err != nil {
		return fileErr(f.Name, "open downloaded file: %v", err)
	}
	defer in.Close()
	rd, err := dataset.NewReader(bufio.NewReaderSize(in, 1<<20))
	if err != nil {
		return fileErr(f.Name, "%v", err)
	}
	rng, err := dataset.File{Name: f.Name, Slots: f.Slots}.SlotRange()
	if err != nil {
		return fileErr(f.Name, "%v", err)
	}

	var acked spans
	j.setFile(i, func(fr *fileRecord, rt *fileRT) {
		fr.State = StateIngesting
		acked = fr.ackedSet()
		fr.setAcked(acked)
		rt.ing.reset()
	})

	// The streams outlive ctx by up to drainTimeout: a stopping ingest
	// waits for the acknowledgements of the batches it has sent, so the
	// file's count is what the nodes committed (drain).
	sctx, scancel := context.WithCancel(context.WithoutCancel(ctx))
	defer scancel()
	stopTimer := context.AfterFunc(ctx, func() { time.AfterFunc(m.drainTimeout(), scancel) })
	defer stopTimer()
	ig := &ingester{
		j: j, i: i, ctx: ctx, sctx: sctx, file: f, jobID: j.id(),
		skip:   cursor{s: acked},
		nodes:  map[string]*nodeStream{},
		events: make(chan ingestEvent, 64),
		done:   make(chan struct{}),
	}
	defer ig.close()
	defer ig.drain()

	// Skip the prefix an earlier ingest had acknowledged.
	for ig.next < acked.prefix() {
		rec, err := rd.Next()
		if err != nil {
			return ig.readErr(err)
		}
		if err := ig.check(rec, rng); err != nil {
			return err
		}
		ig.next++
	}
	if n := acked.count(); n > 0 {
		span.AddEvent("skipping acknowledged records", trace.WithAttributes(attribute.Int64("records", int64(n))))
	}
	return ig.run(rd, rng)
}

func (ig *ingester) readErr(err error) error {
	if errors.Is(err, io.EOF) {
		return fileErr(ig.file.Name, "key count mismatch: manifest %d keys, file has %d", ig.file.Keys, ig.next)
	}
	return fileErr(ig.file.Name, "record %d: %v", ig.next, err)
}

func (ig *ingester) check(rec dataset.Record, rng slot.Range) error {
	f := ig.file
	if s := slot.Of(rec.Key); s != rec.Slot {
		return fileErr(f.Name, "record %d: slot %d does not match its key's slot %d", ig.next, rec.Slot, s)
	}
	if !rng.Contains(rec.Slot) {
		return fileErr(f.Name, "record %d: slot %d outside the file's slots %s", ig.next, rec.Slot, f.Slots)
	}
	if ig.next == 0 && string(rec.Key) != f.First {
		return fileErr(f.Name, "first key %q differs from the manifest's first_key %q", rec.Key, f.First)
	}
	if ig.next >= f.Keys {
		return fileErr(f.Name, "key count mismatch: manifest %d keys, file has more", f.Keys)
	}
	if ig.next == f.Keys-1 && string(rec.Key) != f.Last {
		return fileErr(f.Name, "last key %q differs from the manifest's last_key %q", rec.Key, f.Last)
	}
	return nil
}

func (ig *ingester) run(rd *dataset.Reader, rng slot.Range) error {
	m := ig.j.m
	batchRecs, batchBytes := m.opts.IngestBatchRecords, m.opts.IngestBatchBytes
	full := func(ns *nodeStream) bool {
		return len(ns.pending) >= batchRecs || ns.pendingBytes >= batchBytes
	}
	eof := false
	for {
		if ig.ctx.Err() != nil {
			return context.Cause(ig.ctx)
		}
		// Send what is ready.
		now := time.Now()
		for _, ns := range ig.sortedView() {
			for len(ns.pending) > 0 && (full(ns) || eof) && len(ns.queue) < m.opts.IngestWindow && !now.Before(ns.retryAt) {
				if err := ig.send(ns); err != nil {
					return err
				}
			}
		}
		// Read more unless a node's batch is full and cannot be sent.
		blocked := slices.ContainsFunc(ig.sortedView(), full)
		if !eof && !blocked {
			for range batchRecs {
				rec, err := rd.Next()
				if errors.Is(err, io.EOF) {
					if ig.next != ig.file.Keys {
						return fileErr(ig.file.Name, "key count mismatch: manifest %d keys, file has %d", ig.file.Keys, ig.next)
					}
					eof = true
					break
				}
				if err != nil {
					return ig.readErr(err)
				}
				if err := ig.check(rec, rng); err != nil {
					return err
				}
				if ig.skip.has(ig.next) {
					ig.next++ // acknowledged by an earlier ingest
					continue
				}
				r := ingestRec{idx: ig.next, slot: rec.Slot, key: slices.Clone(rec.Key), value: slices.Clone(rec.Value), expiresAt: rec.ExpiresAtMs}
				ig.next++
				ns, err := ig.dispatch(r)
				if err != nil {
					return err
				}
				if full(ns) {
					break
				}
			}
			// Drain acknowledgements that have arrived without blocking.
			for {
				select {
				case ev := <-ig.events:
					if err := ig.handle(ev); err != nil {
						return err
					}
					continue
				default:
				}
				break
			}
			continue
		}
		if eof && ig.empty() {
			return ig.finish()
		}
		// Wait for an acknowledgement, a failure or a retry time.
		var wake <-chan time.Time
		if at, ok := ig.nextRetry(); ok {
			if ig.wake == nil {
				ig.wake = time.NewTimer(time.Until(at))
			} else {
				ig.wake.Reset(time.Until(at))
			}
			wake = ig.wake.C
		}
		select {
		case ev := <-ig.events:
			if err := ig.handle(ev); err != nil {
				return err
			}
		case <-wake:
		case <-ig.ctx.Done():
			return context.Cause(ig.ctx)
		}
	}
}

// sortedView returns the node streams by node id (deterministic order).
func (ig *ingester) sortedView() []*nodeStream {
	out := make([]*nodeStream, 0, len(ig.nodes))
	for _, ns := range ig.nodes {
		out = append(out, ns)
	}
	slices.SortFunc(out, func(a, b *nodeStream) int { return cmp.Compare(a.node.ID, b.node.ID) })
	return out
}

func (ig *ingester) empty() bool {
	for _, ns := range ig.nodes {
		if len(ns.pending) > 0 || len(ns.queue) > 0 {
			return false
		}
	}
	return true
}

func (ig *ingester) nextRetry() (time.Time, bool) {
	var at time.Time
	for _, ns := range ig.nodes {
		if len(ns.pending) > 0 && !ns.retryAt.IsZero() && time.Now().Before(ns.retryAt) && (at.IsZero() || ns.retryAt.Before(at)) {
			at = ns.retryAt
		}
	}
	return at, !at.IsZero()
}

// dispatch queues r for the node owning its slot now.
func (ig *ingester) dispatch(r ingestRec) (*nodeStream, error) {
	rt := ig.j.m.rt
	t := rt.Topology()
	node, ok := nodeOf(t, r.slot)
	if !ok {
		var err error
		t, err = ig.j.m.topology(ig.ctx, t)
		if err != nil {
			return nil, fileErr(ig.file.Name, "slot %d: %v", r.slot, err)
		}
		if node, ok = nodeOf(t, r.slot); !ok {
			return nil, fileErr(ig.file.Name, "slot %d has no owner in topology version %d", r.slot, t.Version())
		}
	}
	ns := ig.nodes[node.ID]
	if ns == nil {
		ns = &nodeStream{node: node}
		ig.nodes[node.ID] = ns
		ig.j.setFile(ig.i, func(fr *fileRecord, _ *fileRT) {
			if !slices.Contains(fr.Nodes, node.ID) {
				fr.Nodes = append(fr.Nodes, node.ID)
				slices.Sort(fr.Nodes)
			}
		})
	} else if ns.node.GRPCAddress != node.GRPCAddress && ns.stream == nil {
		ns.node = node // the node moved to a new address
	}
	ns.pending = append(ns.pending, r)
	ns.pendingBytes += len(r.key) + len(r.value)
	return ns, nil
}

func nodeOf(t *topology.Topology, s uint16) (topology.Node, bool) {
	if t == nil {
		return topology.Node{}, false
	}
	return t.Owner(s)
}

// send cuts a batch from ns.pending and sends it, opening the stream when
// needed.
func (ig *ingester) send(ns *nodeStream) error {
	m := ig.j.m
	if ns.stream == nil {
		if err := ig.open(ns); err != nil {
			return ig.failure(ns, err)
		}
	}
	n, size := 0, 0
	for n < len(ns.pending) && n < m.opts.IngestBatchRecords && (n == 0 || size+len(ns.pending[n].key)+len(ns.pending[n].value) <= m.opts.IngestBatchBytes) {
		size += len(ns.pending[n].key) + len(ns.pending[n].value)
		n++
	}
	b := &ingestBatch{recs: slices.Clone(ns.pending[:n]), bytes: size}
	ns.pending = slices.Delete(ns.pending, 0, n)
	ns.pendingBytes -= size
	ns.seq++
	b.seq = ns.seq
	req := &storagev1.IngestRequest{JobId: ig.jobID, File: ig.file.Name, Batch: b.seq, Records: make([]*storagev1.IngestRecord, len(b.recs))}
	for k, r := range b.recs {
		// The node skips a record already expired (counted, not written).
		req.Records[k] = &storagev1.IngestRecord{Key: r.key, Value: r.value, ExpiresAtMs: r.expiresAt}
	}
	ns.queue = append(ns.queue, b)
	if err := ns.stream.Send(req); err != nil && !errors.Is(err, io.EOF) {
		// io.EOF: the stream ended; Recv reports why. Anything else is
		// ours (e.g. a message over the size limit).
		if st, ok := status.FromError(err); ok && st.Code() == grpccodes.Unavailable {
			return nil
		}
		return fileErr(ig.file.Name, "ingest batch %d to node %s (%s): %v", b.seq, ns.node.ID, ns.node.GRPCAddress, err)
	}
	return nil
}

func (ig *ingester) open(ns *nodeStream) error {
	m := ig.j.m
	cc, err := m.rt.Conn(ns.node.GRPCAddress)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ig.sctx)
	stream, err := storagev1.NewNodeServiceClient(cc).Ingest(ctx)
	if err != nil {
		cancel()
		return err
	}
	ns.gen++
	ns.stream, ns.cancel, ns.seq = stream, cancel, 0
	ns.recvDone = make(chan struct{})
	gen, id, done := ns.gen, ns.node.ID, ns.recvDone
	go func() {
		defer close(done)
		for {
			resp, err := stream.Recv()
			select {
			case ig.events <- ingestEvent{node: id, gen: gen, resp: resp, err: err}:
			case <-ig.done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return nil
}

// closeStream drops ns's stream (after a failure).
func (ns *nodeStream) closeStream() {
	if ns.cancel != nil {
		ns.cancel()
	}
	ns.stream, ns.cancel = nil, nil
	ns.gen++ // events of the old stream are ignored from now on
}

func (ig *ingester) handle(ev ingestEvent) error {
	ns := ig.nodes[ev.node]
	if ns == nil || ev.gen != ns.gen {
		return nil
	}
	if ev.err != nil {
		if errors.Is(ev.err, io.EOF) && len(ns.queue) == 0 {
			ns.closeStream()
			return nil
		}
		if errors.Is(ev.err, io.EOF) {
			ev.err = fmt.Errorf("stream ended with %d batches unacknowledged", len(ns.queue))
		}
		return ig.failure(ns, ev.err)
	}
	if !ig.ack(ns, ev.resp) {
		ns.closeStream()
		return ig.failure(ns, fmt.Errorf("unexpected acknowledgement of batch %d", ev.resp.GetBatch()))
	}
	ns.downSince, ns.retryAt = time.Time{}, time.Time{}
	if ns.backoff != nil {
		ns.backoff.Reset()
	}
	ig.movedSince = time.Time{}
	return nil
}

// ack records the acknowledgement resp of ns's oldest batch in flight: its
// records are committed on the node. False when resp acknowledges another
// batch.
func (ig *ingester) ack(ns *nodeStream, resp *storagev1.IngestResponse) bool {
	if len(ns.queue) == 0 || ns.queue[0].seq != resp.GetBatch() {
		return false
	}
	b := ns.queue[0]
	ns.queue = ns.queue[1:]
	idx := make([]uint64, len(b.recs))
	for k, r := range b.recs {
		idx[k] = r.idx
	}
	bytes := resp.GetBytes()
	if bytes == 0 {
		bytes = uint64(b.bytes)
	}
	ig.j.acked(ig.i, ns.node.ID, idx, bytes)
	return true
}

// drain ends an ingest that stops before the end of its file (its job
// paused, canceled, failed or shut down, or the file failed): nothing more
// is sent, and the batches already sent are waited for, up to
// drainTimeout, so that each is either acknowledged and counted or known
// not to be written (a node writes a stream's batches in order and stops
// at the first that fails). The file's and the job's counts are then
// exactly what the nodes committed. Only a batch whose acknowledgement is
// lost with its connection (a node crash) can be committed uncounted; the
// next ingest of the file sends it again.
func (ig *ingester) drain() {
	open := 0
	for _, ns := range ig.nodes {
		switch {
		case ns.stream == nil:
		case len(ns.queue) == 0:
			ns.closeStream()
		default:
			_ = ns.stream.CloseSend()
			open++
		}
	}
	if open == 0 {
		return
	}
	t := time.NewTimer(ig.j.m.drainTimeout())
	defer t.Stop()
	for open > 0 {
		select {
		case ev := <-ig.events:
			ns := ig.nodes[ev.node]
			if ns == nil || ev.gen != ns.gen {
				continue
			}
			if ev.err != nil || !ig.ack(ns, ev.resp) || len(ns.queue) == 0 {
				// Ended (what is unacknowledged was not written), or
				// nothing left to wait for on this stream.
				ns.closeStream()
				open--
			}
		case <-ig.sctx.Done():
			return
		case <-t.C:
			ig.j.m.log.WarnContext(ig.ctx, "stopping ingest: batches still unacknowledged after the drain timeout; they may be written without being counted",
				"job_id", ig.jobID, "file", ig.file.Name, "timeout", ig.j.m.drainTimeout())
			return
		}
	}
}

// failure handles the end of ns's stream, by route's classification of
// the error and with ns's route.Backoffer computing the delays (retryAt:
// the ingest loop cannot sleep): SLOT_MOVED re-routes the unacknowledged
// records by a refreshed topology (at once when it changed, after a
// backoff when the cluster has nothing newer yet, e.g. a migration's
// destination not told yet), for up to NodeRetryTimeout without an
// acknowledgement; an unavailable node, a frozen slot, a busy node or one
// without a topology is retried with backoff for NodeRetryTimeout;
// anything else fails the file.
func (ig *ingester) failure(ns *nodeStream, err error) error {
	m := ig.j.m
	ns.closeStream()
	if ig.ctx.Err() != nil {
		return context.Cause(ig.ctx)
	}
	if ns.backoff == nil {
		ns.backoff = route.NewBackoffer(context.Background(), m.opts.NodeRetryMin, m.opts.NodeRetryMax)
	}
	c := route.Classify(err)
	now := time.Now()
	switch c.Kind {
	case route.Moved:
		if ig.movedSince.IsZero() {
			ig.movedSince = now
		}
		if now.Sub(ig.movedSince) > m.opts.NodeRetryTimeout {
			return fileErr(ig.file.Name, "ingest to node %s (%s): slot %d still moved after %s of topology refreshes without an acknowledgement: %v",
				ns.node.ID, ns.node.GRPCAddress, c.Slot, m.opts.NodeRetryTimeout, err)
		}
		m.log.InfoContext(ig.ctx, "slot moved during ingest; re-routing", "job_id", ig.jobID, "file", ig.file.Name,
			"node", ns.node.ID, "slot", c.Slot, "owner", c.OwnerID, "records", ig.unacked(ns))
		cur := m.rt.Topology()
		rctx, cancel := context.WithTimeout(ig.ctx, m.rt.CallTimeout())
		t := m.rt.FollowMoved(rctx, cur, c)
		cancel()
		if t == nil || cur == nil || t.Version() <= cur.Version() {
			// No newer topology yet: give the cluster a moment.
			ns.retryAt = now.Add(ns.backoff.Next(c))
		}
		return ig.reroute(ns)
	case route.Frozen, route.NodeUnavailable, route.Busy, route.NoTopology:
		if ns.downSince.IsZero() {
			ns.downSince = now
		}
		if now.Sub(ns.downSince) > m.opts.NodeRetryTimeout {
			return fileErr(ig.file.Name, "ingest to node %s (%s): unavailable for %s: %v",
				ns.node.ID, ns.node.GRPCAddress, m.opts.NodeRetryTimeout, err)
		}
		delay := ns.backoff.Next(c)
		ns.retryAt = now.Add(delay)
		m.log.WarnContext(ig.ctx, "ingest stream failed; retrying", "job_id", ig.jobID, "file", ig.file.Name,
			"node", ns.node.ID, "address", ns.node.GRPCAddress, "class", c.Kind.String(), "retry_in", delay, "err", err)
		if c.Kind != route.Frozen {
			m.rt.TriggerRefresh() // the node may have been replaced
		}
		return ig.reroute(ns)
	default:
		return fileErr(ig.file.Name, "ingest to node %s (%s): %v", ns.node.ID, ns.node.GRPCAddress, err)
	}
}

func (ig *ingester) unacked(ns *nodeStream) int {
	n := len(ns.pending)
	for _, b := range ns.queue {
		n += len(b.recs)
	}
	return n
}

// reroute sends every unacknowledged record of ns again to the node owning
// its slot in the current topology (possibly ns's node again, after
// ns.retryAt).
func (ig *ingester) reroute(ns *nodeStream) error {
	var recs []ingestRec
	for _, b := range ns.queue {
		recs = append(recs, b.recs...)
	}
	recs = append(recs, ns.pending...)
	ns.queue, ns.pending, ns.pendingBytes = nil, nil, 0
	slices.SortFunc(recs, func(a, b ingestRec) int { return cmp.Compare(a.idx, b.idx) })
	for _, r := range recs {
		if _, err := ig.dispatch(r); err != nil {
			return err
		}
	}
	return nil
}

// finish closes every stream once all records are acknowledged.
func (ig *ingester) finish() error {
	for _, ns := range ig.nodes {
		if ns.stream != nil {
			_ = ns.stream.CloseSend()
		}
	}
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	for _, ns := range ig.nodes {
		if ns.recvDone == nil {
			continue
		}
	wait:
		for {
			select {
			case <-ns.recvDone:
				break wait
			case <-ig.events: // io.EOF of the closed streams
			case <-t.C:
				break wait
			}
		}
	}
	return nil
}

func (ig *ingester) close() {
	close(ig.done)
	for _, ns := range ig.nodes {
		if ns.cancel != nil {
			ns.cancel()
		}
	}
	if ig.wake != nil {
		ig.wake.Stop()
	}
}
