package kv

import (
	"context"
	"errors"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestOutcomeOf(t *testing.T) {
	t.Parallel()
	live := context.Background()
	canceled, cancel := context.WithCancel(live)
	cancel()
	expired, cancel2 := context.WithDeadline(live, time.Now().Add(-time.Second))
	defer cancel2()
	unavailable := status.Error(codes.Unavailable, "node down")
	tests := []struct {
		name  string
		ctx   context.Context
		err   error
		retry bool
		want  string
	}{
		{"success", live, nil, false, outcomeOK},
		{"absent key is an answer", live, status.Error(codes.NotFound, "no such key"), false, outcomeOK},
		{"invalid request", live, status.Error(codes.InvalidArgument, "key too long"), false, outcomeRejected},
		{"wrong token", live, status.Error(codes.PermissionDenied, "bad token"), false, outcomeRejected},
		{"retryable answer", live, unavailable, true, outcomeRetry},
		{"unavailable for good", live, unavailable, false, outcomeError},
		{"internal error", live, status.Error(codes.Internal, "disk"), false, outcomeError},
		{"cut off by the caller", canceled, status.Error(codes.Canceled, "canceled"), true, outcomeCanceled},
		{"deadline ran out", expired, status.Error(codes.DeadlineExceeded, "late"), true, outcomeError},
		{"panicked sub-call", live, errAbandoned, false, outcomeError},
		{"plain error", live, errors.New("dial failed"), false, outcomeError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := outcomeOf(tt.ctx, tt.err, tt.retry); got != tt.want {
				t.Errorf("outcomeOf(%v, retry=%v) = %s, want %s", tt.err, tt.retry, got, tt.want)
			}
		})
	}
}

// A sub-call that panics still ends its span and is counted, as an error.
func TestAbandonAfterPanic(t *testing.T) {
	t.Parallel()
	obs, err := NewObserver(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var oc *call
	func() {
		defer func() { _ = recover() }()
		var ctx context.Context
		ctx, oc = obs.start(context.Background(), "n1", "addr", "get", 1, 1, false)
		defer oc.abandon(ctx)
		panic("sub-channel bug")
	}()
	if !oc.ended {
		t.Fatal("the call was not ended after the panic")
	}
}

// BenchmarkObserve: what observing one partition call costs the router
// (metrics recorded in an SDK meter provider, spans not sampled).
func BenchmarkObserve(b *testing.B) {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	obs, err := NewObserver(nil, mp)
	if err != nil {
		b.Fatal(err)
	}
	parts := []string{"n1", "n2", "n3"}
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		cctx, oc := obs.start(ctx, parts[i%3], "127.0.0.1:7101", "get", 1, 1, false)
		oc.end(cctx, nil, false)
	}
}
