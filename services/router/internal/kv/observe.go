package kv

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tnoop "go.opentelemetry.io/otel/trace/noop"
	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/slotkv/slotkv/pkg/fanout"
)

// Span attribute keys of a partition call.
const (
	AttrPartition = attribute.Key("slotkv.partition") // node id, or "N/M" in naming mode
	AttrOp        = attribute.Key("slotkv.op")
	AttrKeys      = attribute.Key("slotkv.keys")
	AttrAttempt   = attribute.Key("slotkv.attempt") // 1 for the first call of a key set
	AttrHedge     = attribute.Key("slotkv.hedge")   // a backup request
	AttrAddress   = attribute.Key("slotkv.address")
	AttrOutcome   = attribute.Key("slotkv.outcome")
)

// Outcomes of a partition call (the outcome attribute of the metrics).
const (
	outcomeOK       = "ok"
	outcomeRetry    = "retry"    // answered SLOT_MOVED, frozen or unavailable: redone elsewhere or later
	outcomeError    = "error"    // failed, or no answer within the deadline
	outcomeRejected = "rejected" // the node refused the request itself (invalid, unauthorized, ...)
	outcomeCanceled = "canceled" // cut off: another attempt won, or the call ended
)

// Observer turns every call the router makes to one partition into a span
// ("partition n1", under the router's server span and above the gRPC
// client span otelgrpc adds) and into metrics per partition: calls by
// outcome, latency, hedges and retries. Fan-out, hedging and retries are
// the router's whole job, so a trace has to show each of them: one span per
// partition of a multi-get, a second span for a hedge or a retry.
type Observer struct {
	tracer   trace.Tracer
	calls    metric.Int64Counter
	duration metric.Float64Histogram
	hedges   metric.Int64Counter
	retries  metric.Int64Counter

	// Every call of a partition and op shares its span name and metric
	// attribute sets, built once: observing is on the path of every
	// request, and building them per call cost most of its allocations.
	mu     sync.RWMutex
	labels map[labelKey]*labels
}

type labelKey struct{ partition, op string }

// labels are the span name and metric options of one partition and op.
type labels struct {
	span      string
	base      metric.MeasurementOption            // partition, op
	byOutcome map[string]metric.MeasurementOption // partition, op, outcome
}

var outcomes = []string{outcomeOK, outcomeRetry, outcomeRejected, outcomeError, outcomeCanceled}

// labelsOf returns the labels of partition and op, building them the first
// time. The map grows with the partitions the router has called (node ids,
// or N/M in naming mode) times a few ops: the metrics' own cardinality.
func (o *Observer) labelsOf(partition, op string) *labels {
	k := labelKey{partition, op}
	o.mu.RLock()
	l := o.labels[k]
	o.mu.RUnlock()
	if l != nil {
		return l
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if l = o.labels[k]; l != nil {
		return l
	}
	p, q := AttrPartition.String(partition), AttrOp.String(op)
	l = &labels{span: "partition " + partition, base: metric.WithAttributeSet(attribute.NewSet(p, q)),
		byOutcome: make(map[string]metric.MeasurementOption, len(outcomes))}
	for _, oc := range outcomes {
		l.byOutcome[oc] = metric.WithAttributeSet(attribute.NewSet(p, q, AttrOutcome.String(oc)))
	}
	o.labels[k] = l
	return l
}

// NewObserver builds the Observer's tracer and instruments (nil providers
// mean no-ops).
func NewObserver(tp trace.TracerProvider, mp metric.MeterProvider) (*Observer, error) {
	if tp == nil {
		tp = tnoop.NewTracerProvider()
	}
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	const scope = "github.com/slotkv/slotkv/services/router"
	m := mp.Meter(scope)
	o := &Observer{tracer: tp.Tracer(scope), labels: map[labelKey]*labels{}}
	var errs [4]error
	o.calls, errs[0] = m.Int64Counter("slotkv.router.partition.calls",
		metric.WithDescription("Calls the router made to a storage partition, by operation and outcome (ok, retry, rejected, error, canceled)."))
	o.duration, errs[1] = m.Float64Histogram("slotkv.router.partition.duration", metric.WithUnit("s"),
		metric.WithDescription("Latency of the router's calls to a storage partition."),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
	o.hedges, errs[2] = m.Int64Counter("slotkv.router.partition.hedges",
		metric.WithDescription("Backup requests (hedges) the router sent to a partition."))
	o.retries, errs[3] = m.Int64Counter("slotkv.router.partition.retries",
		metric.WithDescription("Calls the router made to a partition again after a retryable answer or a failed attempt."))
	if err := errors.Join(errs[:]...); err != nil {
		return nil, fmt.Errorf("router metrics: %w", err)
	}
	return o, nil
}

// call is one partition call in progress.
type call struct {
	o      *Observer
	span   trace.Span
	start  time.Time
	labels *labels
	ended  bool
}

// start begins a call to partition (its address addr) for op over keys
// keys (0 for scans and counts). attempt counts the calls made for the
// same keys, from 1; hedge marks a backup request.
func (o *Observer) start(ctx context.Context, partition, addr, op string, keys, attempt int, hedge bool) (context.Context, *call) {
	l := o.labelsOf(partition, op)
	ctx, span := o.tracer.Start(ctx, l.span, trace.WithSpanKind(trace.SpanKindInternal))
	if span.IsRecording() { // unsampled spans need no attributes
		span.SetAttributes(AttrPartition.String(partition), AttrOp.String(op), AttrAddress.String(addr),
			AttrKeys.Int(keys), AttrAttempt.Int(attempt), AttrHedge.Bool(hedge))
	}
	if hedge {
		o.hedges.Add(ctx, 1, l.base)
	} else if attempt > 1 {
		o.retries.Add(ctx, 1, l.base)
	}
	return ctx, &call{o: o, span: span, start: time.Now(), labels: l}
}

// end records the call's outcome: err is its error (nil for a success) and
// retry tells that the error is one the router redoes (elsewhere or later).
func (c *call) end(ctx context.Context, err error, retry bool) {
	c.ended = true
	outcome := outcomeOf(ctx, err, retry)
	c.o.duration.Record(ctx, time.Since(c.start).Seconds(), c.labels.base)
	c.o.calls.Add(ctx, 1, c.labels.byOutcome[outcome])
	if !c.span.IsRecording() {
		c.span.End()
		return
	}
	c.span.SetAttributes(AttrOutcome.String(outcome))
	if err != nil {
		c.span.RecordError(err)
		if outcome == outcomeError {
			c.span.SetStatus(codes.Error, err.Error())
		}
	}
	c.span.End()
}

// errAbandoned is the outcome of a call whose code never reached end: its
// sub-channel panicked (fanout recovers the panic and fails the sub-call).
var errAbandoned = errors.New("partition call panicked")

// abandon ends the call as failed unless end already ran; callers defer it
// right after start, so a panic cannot leave the span open or the call
// uncounted.
func (c *call) abandon(ctx context.Context) {
	if !c.ended {
		c.end(ctx, errAbandoned, false)
	}
}

// outcomeOf classifies a finished call. A cut-off call (context canceled:
// a hedge that lost, a fail limit reached, the client gone) is canceled; a
// deadline that ran out is an error, as the partition did not answer in
// time. NotFound is a definite answer (the key is absent), and requests the
// node refused on their merits are rejected: neither says the partition is
// unwell, so neither counts as an error.
func outcomeOf(ctx context.Context, err error, retry bool) string {
	switch {
	case err == nil:
		return outcomeOK
	case errors.Is(ctx.Err(), context.Canceled):
		return outcomeCanceled
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return outcomeError
	case retry:
		return outcomeRetry
	}
	switch status.Code(err) {
	case grpccodes.NotFound:
		return outcomeOK
	case grpccodes.InvalidArgument, grpccodes.OutOfRange, grpccodes.AlreadyExists, grpccodes.FailedPrecondition,
		grpccodes.PermissionDenied, grpccodes.Unauthenticated:
		return outcomeRejected
	}
	return outcomeError
}

// roundKey carries the round of a topology-mode fan-out call (1 for the
// first, 2 when keys are redone after SLOT_MOVED or unavailable answers).
type roundKey struct{}

func withRound(ctx context.Context, n int) context.Context {
	return context.WithValue(ctx, roundKey{}, n)
}

// attemptOf is the attempt number and hedge flag of a sub-call: from the
// fan-out round in topology mode, from the Selective channel in naming
// mode.
func attemptOf(ctx context.Context) (int, bool) {
	if a, ok := fanout.AttemptFromContext(ctx); ok {
		return a.Number, a.Backup
	}
	if n, ok := ctx.Value(roundKey{}).(int); ok {
		return n, false
	}
	return 1, false
}
