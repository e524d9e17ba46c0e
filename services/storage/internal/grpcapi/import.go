package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/services/storage/internal/migration"
)

// importPipeline is how many batches of one import stream wait between two
// of its stages (see Import).
const importPipeline = 8

// importItem is one batch of an import stream on its way through Import's
// stages.
type importItem struct {
	req     *storagev1.ImportRequest
	batch   *migration.ImportBatch
	group   *commitGroup // the transaction it commits in
	applied bool
}

// commitGroup is one transaction of import batches; done closes once it
// committed or failed (err).
type commitGroup struct {
	done chan struct{}
	err  error
}

// Import applies batches of entries to the job's IMPORTING slots. The
// stream takes one of the node's import stream slots for its lifetime
// (ResourceExhausted when none is free); the first bad batch ends it.
//
// Three stages run at once, so a stream never waits for Badger before
// taking its next batch: a reader receives, validates and digests batches;
// a committer commits them, grouping the batches that queued up while the
// previous transaction was written into the next transaction (each group
// with the progress record of its last batch, so every batch commits
// atomically with a record that counts it); and this goroutine
// acknowledges each batch, in order, once its transaction has committed.
func (s *MigrationService) Import(stream grpc.BidiStreamingServer[storagev1.ImportRequest, storagev1.ImportResponse]) error {
	release, err := s.c.Migration.AcquireImportStream()
	if err != nil {
		s.c.Logger.WarnContext(stream.Context(), "import stream refused", "err", err)
		return migStatus(err)
	}
	defer release()
	// Canceled with the first failure of any stage: the others stop. The
	// reader may be blocked in Recv then; it is not waited for, since
	// returning is what ends the stream (and its Recv).
	ctx, cancel := context.WithCancelCause(stream.Context())
	defer cancel(nil)
	prepared := make(chan *importItem, importPipeline)
	acks := make(chan *importItem, importPipeline)
	go s.readImports(ctx, cancel, stream, prepared)
	go s.commitImports(ctx, cancel, prepared, acks)
	for it := range acks {
		select {
		case <-it.group.done:
		case <-ctx.Done():
			return importCause(ctx)
		}
		if err := it.group.err; err != nil {
			return s.importFailed(ctx, it.req, err)
		}
		if err := stream.Send(&storagev1.ImportResponse{StreamId: it.req.GetStreamId(), Seq: it.req.GetSeq(), Applied: it.applied}); err != nil {
			return err
		}
	}
	// The committer ended: the reader met the end of the stream, or a
	// stage failed.
	return importCause(ctx)
}

// importCause is the status Import ends with once ctx was canceled (nil
// when it was not).
func importCause(ctx context.Context) error {
	err := context.Cause(ctx)
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.FromContextError(err).Err()
}

// readImports receives, validates and prepares the stream's batches into
// prepared, which it closes at the end of the stream or on a failure.
func (s *MigrationService) readImports(ctx context.Context, fail context.CancelCauseFunc,
	stream grpc.BidiStreamingServer[storagev1.ImportRequest, storagev1.ImportResponse], prepared chan<- *importItem) {
	defer close(prepared)
	var entries []migration.ImportEntry
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			fail(err)
			return
		}
		entries, err = s.importEntries(req, entries[:0])
		var b *migration.ImportBatch
		if err == nil {
			b, err = s.c.Migration.PrepareImport(req.GetJobId(), req.GetSeq(), entries)
		}
		if err != nil {
			fail(s.importFailed(ctx, req, err))
			return
		}
		select {
		case prepared <- &importItem{req: req, batch: b}:
		case <-ctx.Done():
			return
		}
	}
}

// commitImports commits the prepared batches in order: each transaction
// takes the next batch and whatever else has queued up behind it (same job
// and stream, within the store's group limits), and every batch goes on to
// acks with its transaction. It closes acks when prepared is drained or on
// a failure.
func (s *MigrationService) commitImports(ctx context.Context, fail context.CancelCauseFunc, prepared <-chan *importItem, acks chan<- *importItem) {
	defer close(acks)
	maxBytes, maxEntries := s.c.Migration.ImportGroupLimits()
	cm := s.c.Migration.NewImportCommitter()
	defer cm.Idle()
	var next *importItem // taken from prepared, for the next group
	for {
		first := next
		next = nil
		if first == nil {
			if len(prepared) == 0 {
				// Nothing queued: no transaction stays open while the
				// stream waits (store.Committer).
				cm.Idle()
			}
			select {
			case it, ok := <-prepared:
				if !ok {
					return
				}
				first = it
			case <-ctx.Done():
				return
			}
		}
		group := []*importItem{first}
		bytes, entries := first.batch.Bytes(), first.batch.Len()
	fill:
		for {
			select {
			case it, ok := <-prepared:
				if !ok {
					break fill
				}
				if it.req.GetJobId() != first.req.GetJobId() || it.req.GetStreamId() != first.req.GetStreamId() ||
					bytes+it.batch.Bytes() > maxBytes || entries+it.batch.Len() > maxEntries {
					next = it
					break fill
				}
				group = append(group, it)
				bytes, entries = bytes+it.batch.Bytes(), entries+it.batch.Len()
			default:
				break fill
			}
		}
		batches := make([]*migration.ImportBatch, len(group))
		for i, it := range group {
			batches[i] = it.batch
		}
		g := &commitGroup{done: make(chan struct{})}
		applied, err := s.c.Migration.CommitImport(first.req.GetJobId(), first.req.GetStreamId(), batches, cm, func(err error) {
			g.err = err
			close(g.done)
		})
		if err != nil {
			fail(s.importFailed(ctx, first.req, err))
			return
		}
		for i, it := range group {
			it.group, it.applied = g, applied[i]
			select {
			case acks <- it:
			case <-ctx.Done():
				return
			}
		}
	}
}

// importFailed logs a refused or failed batch and returns its status.
func (s *MigrationService) importFailed(ctx context.Context, req *storagev1.ImportRequest, err error) error {
	s.c.Logger.WarnContext(ctx, "import batch refused", "job_id", req.GetJobId(), "stream_id", req.GetStreamId(),
		"seq", req.GetSeq(), "err", err)
	return migStatus(fmt.Errorf("import job %q stream %q batch %d: %w", req.GetJobId(), req.GetStreamId(), req.GetSeq(), err))
}
