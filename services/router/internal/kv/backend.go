package kv

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/fanout"
)

// backend serves the keyed batch calls, scans and counts of one routing
// mode: the live topology (one partition per node) or a naming file
// (layouts of N/M partitions).
type backend interface {
	// get reads q.keys (unique). items[p] is nil when the partition of key
	// p failed (allowed only with partial); where[p] names the partition
	// that answered key p, or the one that failed.
	get(ctx context.Context, q *subReq, partial bool) (items []*storagev1.Item, where []string, failed []failure, err error)
	// write applies q.muts (atomically per partition). where[p] names the
	// partition(s) that took mutation p.
	write(ctx context.Context, q *subReq) (where []string, err error)
	// scan asks every partition for one page of q.scan (prefix, start,
	// limit, keys_only) over its slots; pages are the partitions' answers.
	scan(ctx context.Context, q *subReq, partial bool) (pages []*subResp, failed []failure, err error)
	// count sums the partitions' key counts.
	count(ctx context.Context, partial bool) (n uint64, failed []failure, err error)
}

// withDeadline gives ctx the call timeout when it has no deadline.
func withDeadline(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok || d <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, d)
}

// ctxStatus is the status of an ended context.
func ctxStatus(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return status.FromContextError(err).Err()
	}
	return status.Error(codes.Canceled, "call cancelled")
}

// round is what one fan-out call gave, partition by partition.
type round struct {
	ok     []*subResp // answered
	retry  []*subResp // retryable failures (topology mode)
	failed []failure  // failed for good (or cut off by the deadline)
	// failedIdx are the sub-channel indexes of failed, aligned.
	failedIdx []int
}

// collect sorts the outcome of a Parallel call into a round. lastRetry
// gives the previous retryable answer of a partition, reported instead of
// a bare DeadlineExceeded when the deadline cut the partition off. A
// sub-call cancelled because the call already failed (fail limit) is left
// out: the call reports the failure that ended it.
func collect(ctx context.Context, resp *subResp, rep *fanout.Report, lastRetry map[string]error) round {
	var r round
	answered := map[string]bool{}
	if resp != nil {
		for _, p := range resp.parts {
			answered[p.name] = true
			if p.retry != nil {
				r.retry = append(r.retry, p)
			} else {
				r.ok = append(r.ok, p)
			}
		}
	}
	if rep == nil {
		return r
	}
	for _, s := range rep.Subs {
		if s.Skipped || answered[s.Name] {
			continue
		}
		err := s.Err
		if s.Canceled || err == nil {
			// Cut off, or answered but dropped because the call ended
			// (deadline): only the deadline makes this a failure of its own.
			if ctx.Err() == nil {
				continue
			}
			if last := lastRetry[s.Name]; last != nil {
				err = last
			} else {
				err = ctxStatus(ctx)
			}
		}
		r.failed = append(r.failed, failure{partition: s.Name, err: err})
		r.failedIdx = append(r.failedIdx, s.Index)
	}
	return r
}
