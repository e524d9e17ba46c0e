package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"google.golang.org/grpc"

	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/services/storage/internal/store"
)

// ingestStats describes one Ingest stream for its closing log line.
type ingestStats struct {
	job, file string // from the first batch
	batches   uint64
	records   uint64
	bytes     uint64
}

// Ingest writes bulk-load batches (proto: NodeService.Ingest). Each batch
// goes through the same three steps as a data RPC: validate (fields named
// "batch", "records", "records[i].key", "records[i].value"), check that
// this node accepts writes to the slot of every record (the first that it
// does not ends the stream: SLOT_MOVED, SLOT_FROZEN, NO_TOPOLOGY, ...), then
// write it with store.Ingest, the BatchWrite write path. The batch is
// acknowledged only once all of it is written; a failing batch is never
// acknowledged, and batches acknowledged before stay written. A record
// carries its expiry (expires_at_ms); one already expired is skipped and
// counted in the acknowledgement's skipped, not in records or bytes. Writes are as
// durable as every other write of this node (--sync-writes).
//
// The next request is received while a batch is written, so the network
// and Badger overlap; at most one batch waits decoded besides the one being
// written.
//
// Ingest is a NodeService call and is not counted in rpc_counts, which
// counts the StorageService data RPCs a router sends; the stream's closing
// log line carries its totals instead.
func (s *NodeService) Ingest(stream grpc.BidiStreamingServer[storagev1.IngestRequest, storagev1.IngestResponse]) error {
	ctx := stream.Context()
	start := time.Now()
	var st ingestStats
	err := s.ingest(ctx, stream, &st)
	attrs := []slog.Attr{
		slog.String("job_id", st.job), slog.String("file", st.file),
		slog.Uint64("batches", st.batches), slog.Uint64("records", st.records), slog.Uint64("bytes", st.bytes),
		slog.Duration("duration", time.Since(start)),
	}
	if err != nil {
		attrs = append(attrs, slog.Any("err", err))
	}
	s.c.Logger.LogAttrs(ctx, slog.LevelInfo, "ingest stream ended", attrs...)
	return rpcerr.ToStatus(err)
}

type recvResult struct {
	req *storagev1.IngestRequest
	err error
}

func (s *NodeService) ingest(ctx context.Context, stream grpc.BidiStreamingServer[storagev1.IngestRequest, storagev1.IngestResponse], st *ingestStats) error {
	// One goroutine receives ahead while the loop below writes. It ends
	// after the first Recv error, or when the handler returns (done), at
	// the latest when gRPC cancels the stream after the handler returned.
	reqs := make(chan recvResult, 1)
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			req, err := stream.Recv()
			select {
			case reqs <- recvResult{req, err}:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()

	var (
		batch store.IngestBatch
		slots []uint16
	)
	for {
		var r recvResult
		select {
		case r = <-reqs:
		case <-ctx.Done():
			return ctx.Err()
		}
		if errors.Is(r.err, io.EOF) {
			return nil // the client has sent everything, and all of it is acknowledged
		}
		if r.err != nil {
			return r.err
		}
		req := r.req
		if st.batches == 0 {
			st.job, st.file = req.GetJobId(), req.GetFile()
		}
		res, err := s.ingestBatch(ctx, req, &batch, &slots, st.batches+1)
		if err != nil {
			return fmt.Errorf("ingest job %q file %q batch %d: %w", req.GetJobId(), req.GetFile(), req.GetBatch(), err)
		}
		if err := stream.Send(res); err != nil {
			return err
		}
		st.batches++
		st.records += res.GetRecords()
		st.bytes += res.GetBytes()
	}
}

// ingestBatch validates, checks and writes one batch and returns its
// acknowledgement. batch and slots are reused from batch to batch.
func (s *NodeService) ingestBatch(ctx context.Context, req *storagev1.IngestRequest, batch *store.IngestBatch, slots *[]uint16, want uint64) (*storagev1.IngestResponse, error) {
	lim := s.c.Limits
	if req.GetBatch() != want {
		return nil, rpcerr.InvalidField("batch", "got batch %d where batch %d was expected: batches are numbered from 1 in steps of 1", req.GetBatch(), want)
	}
	recs := req.GetRecords()
	if err := lim.checkBatch("records", len(recs)); err != nil {
		return nil, err
	}
	var keyBytes, total int
	for _, r := range recs {
		keyBytes += len(r.GetKey())
		total += len(r.GetKey()) + len(r.GetValue())
	}
	if total > lim.MaxIngestBytes {
		return nil, rpcerr.InvalidField("records", "%d records of %d key and value bytes, above the limit --max-ingest-bytes=%d", len(recs), total, lim.MaxIngestBytes)
	}
	// Validate and lay out every record before any is checked or written;
	// field names are built only on the error path. A record already
	// expired is validated, then skipped: writing it would delete the key,
	// which a bulk load of a fresh dataset must not do to a newer value.
	batch.Reset(len(recs), keyBytes)
	sl := (*slots)[:0]
	var idx []int // record index of each added record, once one is skipped
	var skipped, skippedBytes int
	now := store.NowMs()
	for i, r := range recs {
		k, v, exp := r.GetKey(), r.GetValue(), r.GetExpiresAtMs()
		if len(v) > lim.MaxValueBytes {
			return nil, lim.checkValue(fmt.Sprintf("records[%d].value", i), v)
		}
		if len(k) > lim.MaxKeyBytes {
			_, err := lim.checkKey(fmt.Sprintf("records[%d].key", i), k)
			return nil, err
		}
		if exp < 0 {
			return nil, checkExpiry(fmt.Sprintf("records[%d].expires_at_ms", i), exp)
		}
		if store.Expired(exp, now) {
			if _, err := lim.checkKey(fmt.Sprintf("records[%d].key", i), k); err != nil {
				return nil, err
			}
			if skipped == 0 {
				for j := range i {
					idx = append(idx, j)
				}
			}
			skipped++
			skippedBytes += len(k) + len(v)
			continue
		}
		slotOf, err := batch.AddExpiring(k, v, exp)
		if err != nil {
			_, err = lim.checkKey(fmt.Sprintf("records[%d].key", i), k)
			return nil, err
		}
		sl = append(sl, slotOf)
		if skipped > 0 {
			idx = append(idx, i)
		}
	}
	*slots = sl
	if err := ctx.Err(); err != nil {
		return nil, err // the client is gone: do not write what nobody waits for
	}
	start := time.Now()
	var txns int
	i, err := s.c.Node.Write(sl, func() (err error) {
		txns, err = s.c.Store.Ingest(batch)
		return err
	})
	if i >= 0 {
		if skipped > 0 {
			i = idx[i]
		}
		return nil, fmt.Errorf("records[%d]: %w", i, err)
	}
	if err != nil {
		if errors.Is(err, store.ErrBatchTooLarge) {
			err = rpcerr.InvalidField("records", "%v", err)
		}
		return nil, err
	}
	if s.c.Logger.Enabled(ctx, slog.LevelDebug) {
		s.c.Logger.DebugContext(ctx, "ingest batch written", "job_id", req.GetJobId(), "file", req.GetFile(),
			"batch", req.GetBatch(), "records", len(recs)-skipped, "skipped", skipped, "bytes", total-skippedBytes, "txns", txns, "duration", time.Since(start))
	}
	return &storagev1.IngestResponse{Batch: req.GetBatch(), Records: uint64(len(recs) - skipped), Bytes: uint64(total - skippedBytes), Skipped: uint64(skipped)}, nil
}
