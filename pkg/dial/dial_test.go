package dial

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/slotkv/slotkv/pkg/auth"
)

// testService records the incoming metadata of the last call and answers
// UnaryCall with a payload of the requested size.
type testService struct {
	testgrpc.UnimplementedTestServiceServer
	mu sync.Mutex
	md metadata.MD
}

func (s *testService) EmptyCall(ctx context.Context, _ *testgrpc.Empty) (*testgrpc.Empty, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	s.mu.Lock()
	s.md = md
	s.mu.Unlock()
	return &testgrpc.Empty{}, nil
}

func (s *testService) UnaryCall(_ context.Context, in *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return &testgrpc.SimpleResponse{Payload: &testgrpc.Payload{Body: make([]byte, in.GetResponseSize())}}, nil
}

func (s *testService) lastMD() metadata.MD {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.md
}

func startServer(t *testing.T, token string) (string, *testService) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	svc := &testService{}
	s := grpc.NewServer(append(auth.ServerOptions(auth.OneToken(token), nil), grpc.MaxRecvMsgSize(MaxMsgSize), grpc.MaxSendMsgSize(MaxMsgSize))...)
	testgrpc.RegisterTestServiceServer(s, svc)
	healthpb.RegisterHealthServer(s, health.NewServer())
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String(), svc
}

func newConn(t *testing.T, addr string, o Options) *grpc.ClientConn {
	t.Helper()
	cc, err := New(addr, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func ctxTimeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestToken(t *testing.T) {
	t.Parallel()
	addr, _ := startServer(t, "s3cret")
	tests := []struct {
		name  string
		token string
		want  codes.Code
	}{
		{"none", "", codes.Unauthenticated},
		{"wrong", "x", codes.PermissionDenied},
		{"right", "s3cret", codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cc := newConn(t, addr, Options{Token: tt.token})
			_, err := testgrpc.NewTestServiceClient(cc).EmptyCall(ctxTimeout(t), &testgrpc.Empty{})
			if got := status.Code(err); got != tt.want {
				t.Errorf("code = %v (%v), want %v", got, err, tt.want)
			}
		})
	}
}

func TestTracing(t *testing.T) {
	t.Parallel()
	addr, _ := startServer(t, "")
	tests := []struct {
		name      string
		call      func(ctx context.Context, cc *grpc.ClientConn) error
		wantSpans int
	}{
		{"traced call", func(ctx context.Context, cc *grpc.ClientConn) error {
			_, err := testgrpc.NewTestServiceClient(cc).EmptyCall(ctx, &testgrpc.Empty{})
			return err
		}, 1},
		{"health not traced", func(ctx context.Context, cc *grpc.ClientConn) error {
			_, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
			return err
		}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
			cc := newConn(t, addr, Options{TracerProvider: tp})
			if err := tt.call(ctxTimeout(t), cc); err != nil {
				t.Fatal(err)
			}
			spans := rec.Ended()
			if len(spans) != tt.wantSpans {
				t.Fatalf("recorded %d spans, want %d", len(spans), tt.wantSpans)
			}
			for _, s := range spans {
				if s.SpanKind() != trace.SpanKindClient {
					t.Errorf("span %q kind %v, want client", s.Name(), s.SpanKind())
				}
			}
		})
	}

	t.Run("propagates without a provider", func(t *testing.T) {
		// No TracerProvider: no client span, but the caller's trace
		// context still reaches the server.
		t.Parallel()
		tp := sdktrace.NewTracerProvider()
		ctx, span := tp.Tracer("test").Start(ctxTimeout(t), "caller")
		defer span.End()
		// Its own server, so the recorded metadata is this call's.
		addr, svc := startServer(t, "")
		cc := newConn(t, addr, Options{})
		if _, err := testgrpc.NewTestServiceClient(cc).EmptyCall(ctx, &testgrpc.Empty{}); err != nil {
			t.Fatal(err)
		}
		want := span.SpanContext().TraceID().String()
		tps := svc.lastMD().Get("traceparent")
		if len(tps) != 1 || !strings.Contains(tps[0], want) {
			t.Fatalf("traceparent %v does not carry trace %s", tps, want)
		}
	})
}

func TestMaxMsgSize(t *testing.T) {
	t.Parallel()
	addr, _ := startServer(t, "")
	tests := []struct {
		name string
		max  int
		size int32
		want codes.Code
	}{
		// 5 MiB is over gRPC's 4 MiB default receive limit.
		{"default allows 5MiB", 0, 5 << 20, codes.OK},
		{"override refuses 5MiB", 1 << 20, 5 << 20, codes.ResourceExhausted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cc := newConn(t, addr, Options{MaxMsgSize: tt.max})
			_, err := testgrpc.NewTestServiceClient(cc).UnaryCall(ctxTimeout(t), &testgrpc.SimpleRequest{ResponseSize: tt.size})
			if got := status.Code(err); got != tt.want {
				t.Errorf("code = %v (%v), want %v", got, err, tt.want)
			}
		})
	}
}
