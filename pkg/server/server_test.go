package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/slotkv/slotkv/pkg/auth"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/logtest"
)

// Special UnaryCall response sizes that make the test service misbehave.
const (
	sizePanic = -1 // panic in the handler
	sizeBlock = -2 // signal entered, then wait for release (or the RPC's end)
)

type testService struct {
	testgrpc.UnimplementedTestServiceServer
	entered chan struct{}
	release chan struct{}
}

func newTestService() *testService {
	return &testService{entered: make(chan struct{}, 16), release: make(chan struct{})}
}

func (s *testService) EmptyCall(context.Context, *testgrpc.Empty) (*testgrpc.Empty, error) {
	return &testgrpc.Empty{}, nil
}

func (s *testService) UnaryCall(ctx context.Context, in *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	switch in.GetResponseSize() {
	case sizePanic:
		panic("boom")
	case sizeBlock:
		s.entered <- struct{}{}
		select {
		case <-s.release:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	return &testgrpc.SimpleResponse{}, nil
}

func (s *testService) StreamingOutputCall(*testgrpc.StreamingOutputCallRequest, grpc.ServerStreamingServer[testgrpc.StreamingOutputCallResponse]) error {
	panic("stream boom")
}

// gatewayRoutes does by hand what generated *.pb.gw.go code does, so the
// tests exercise the real gateway path without generated code:
// GET /v1/empty and /v1/items/{id} -> EmptyCall, GET /v1/unary -> UnaryCall.
func gatewayRoutes(_ context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error {
	client := testgrpc.NewTestServiceClient(conn)
	routes := []struct {
		path, method string
		call         func(ctx context.Context, opts ...grpc.CallOption) (proto.Message, error)
	}{
		{"/v1/empty", "/grpc.testing.TestService/EmptyCall", func(ctx context.Context, opts ...grpc.CallOption) (proto.Message, error) {
			return client.EmptyCall(ctx, &testgrpc.Empty{}, opts...)
		}},
		{"/v1/items/{id}", "/grpc.testing.TestService/EmptyCall", func(ctx context.Context, opts ...grpc.CallOption) (proto.Message, error) {
			return client.EmptyCall(ctx, &testgrpc.Empty{}, opts...)
		}},
		{"/v1/unary", "/grpc.testing.TestService/UnaryCall", func(ctx context.Context, opts ...grpc.CallOption) (proto.Message, error) {
			return client.UnaryCall(ctx, &testgrpc.SimpleRequest{}, opts...)
		}},
	}
	for _, rt := range routes {
		err := mux.HandlePath(http.MethodGet, rt.path, func(w http.ResponseWriter, r *http.Request, _ map[string]string) {
			_, outbound := runtime.MarshalerForRequest(mux, r)
			ctx, err := runtime.AnnotateContext(r.Context(), mux, r, rt.method, runtime.WithHTTPPathPattern(rt.path))
			if err != nil {
				runtime.HTTPError(ctx, mux, outbound, w, r, err)
				return
			}
			var md runtime.ServerMetadata
			resp, err := rt.call(ctx, grpc.Header(&md.HeaderMD), grpc.Trailer(&md.TrailerMD))
			ctx = runtime.NewServerMetadataContext(ctx, md)
			if err != nil {
				runtime.HTTPError(ctx, mux, outbound, w, r, err)
				return
			}
			runtime.ForwardResponseMessage(ctx, mux, outbound, w, r, resp)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

type harness struct {
	srv    *Server
	svc    *testService
	logs   *logtest.Buffer
	cancel context.CancelFunc
}

// start runs a server with the test service and gateway on loopback ports;
// o's zero fields get test defaults. The server is stopped at cleanup.
func start(t *testing.T, o Options) *harness {
	t.Helper()
	h := &harness{svc: newTestService(), logs: &logtest.Buffer{}}
	if o.Name == "" {
		o.Name = "test"
	}
	if o.GRPCAddr == "" {
		o.GRPCAddr = "127.0.0.1:0"
	}
	if o.HTTPAddr == "" {
		o.HTTPAddr = "127.0.0.1:0"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if o.Register == nil {
		o.Register = func(s *grpc.Server) { testgrpc.RegisterTestServiceServer(s, h.svc) }
	}
	if o.Gateway == nil {
		o.Gateway = gatewayRoutes
	}
	if o.ReadyInterval == 0 {
		o.ReadyInterval = 10 * time.Millisecond
	}
	var onListen atomic.Bool
	userOnListen := o.OnListen
	o.OnListen = func(g, hh net.Addr) {
		onListen.Store(true)
		if userOnListen != nil {
			userOnListen(g, hh)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := Start(ctx, o)
	if err != nil {
		cancel()
		t.Fatalf("Start: %v", err)
	}
	if !onListen.Load() {
		t.Error("OnListen was not called before Start returned")
	}
	h.srv, h.cancel = srv, cancel
	t.Cleanup(func() {
		cancel()
		if err := srv.Wait(); err != nil {
			t.Errorf("Wait: %v", err)
		}
	})
	return h
}

func (h *harness) conn(t *testing.T, o dial.Options) *grpc.ClientConn {
	t.Helper()
	cc, err := dial.New(h.srv.GRPCAddr().String(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func (h *harness) url(path string) string {
	return "http://" + h.srv.HTTPAddr().String() + path
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond until it returns nil or the deadline passes.
func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(5 * time.Millisecond) // poll interval, not a stand-in for a condition
	}
}

func get(t *testing.T, client *http.Client, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(testCtx(t), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func healthStatus(ctx context.Context, cc *grpc.ClientConn, service string) (healthpb.HealthCheckResponse_ServingStatus, error) {
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	return resp.GetStatus(), err
}

func TestHealthAndReflection(t *testing.T) {
	t.Parallel()
	h := start(t, Options{Tokens: auth.OneToken("tok")})
	ctx := testCtx(t)

	t.Run("health serving without token", func(t *testing.T) {
		cc := h.conn(t, dial.Options{})
		for _, svc := range []string{"", "grpc.testing.TestService"} {
			eventually(t, "health of "+svc, func() error {
				st, err := healthStatus(ctx, cc, svc)
				if err != nil {
					return err
				}
				if st != healthpb.HealthCheckResponse_SERVING {
					return fmt.Errorf("status %v", st)
				}
				return nil
			})
		}
	})

	t.Run("reflection lists services", func(t *testing.T) {
		tests := []struct {
			name  string
			token string
			want  codes.Code
		}{
			{"without token", "", codes.Unauthenticated},
			{"with token", "tok", codes.OK},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				services, err := listServices(ctx, h.conn(t, dial.Options{Token: tt.token}))
				if got := status.Code(err); got != tt.want {
					t.Fatalf("code = %v (%v), want %v", got, err, tt.want)
				}
				if tt.want != codes.OK {
					return
				}
				for _, want := range []string{"grpc.testing.TestService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
					if !contains(services, want) {
						t.Errorf("services %v lack %s", services, want)
					}
				}
			})
		}
	})
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func listServices(ctx context.Context, cc *grpc.ClientConn) ([]string, error) {
	stream, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
	if err != nil {
		return nil, err
	}
	// A refused stream shows up as io.EOF on Send; Recv returns the status.
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	}); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	resp, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	_ = stream.CloseSend()
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	return names, nil
}

func TestReadiness(t *testing.T) {
	t.Parallel()
	var readyErr atomic.Pointer[error]
	notYet := errors.New("database still opening")
	readyErr.Store(&notYet)
	h := start(t, Options{Ready: func(context.Context) error { return *readyErr.Load() }})
	cc := h.conn(t, dial.Options{})
	ctx := testCtx(t)

	steps := []struct {
		name       string
		err        error
		wantCode   int
		wantBody   string
		wantHealth healthpb.HealthCheckResponse_ServingStatus
	}{
		{"not ready", notYet, http.StatusServiceUnavailable, "database still opening", healthpb.HealthCheckResponse_NOT_SERVING},
		{"ready", nil, http.StatusOK, "ok", healthpb.HealthCheckResponse_SERVING},
		{"not ready again", notYet, http.StatusServiceUnavailable, "database still opening", healthpb.HealthCheckResponse_NOT_SERVING},
	}
	// Steps share one server and run in order.
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			readyErr.Store(&st.err)
			code, body := get(t, http.DefaultClient, h.url(ReadyzPath), "")
			if code != st.wantCode || !strings.Contains(body, st.wantBody) {
				t.Errorf("/readyz = %d %q, want %d %q", code, body, st.wantCode, st.wantBody)
			}
			eventually(t, "health status", func() error {
				got, err := healthStatus(ctx, cc, "")
				if err != nil {
					return err
				}
				if got != st.wantHealth {
					return fmt.Errorf("status %v, want %v", got, st.wantHealth)
				}
				return nil
			})
			// Liveness does not depend on readiness.
			if code, body := get(t, http.DefaultClient, h.url(HealthzPath), ""); code != http.StatusOK || strings.TrimSpace(body) != "ok" {
				t.Errorf("/healthz = %d %q", code, body)
			}
		})
	}
}

func TestPanicRecovery(t *testing.T) {
	t.Parallel()
	h := start(t, Options{})
	client := testgrpc.NewTestServiceClient(h.conn(t, dial.Options{}))
	ctx := testCtx(t)
	tests := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"unary panic", func() error {
			_, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseSize: sizePanic})
			return err
		}, codes.Internal},
		{"stream panic", func() error {
			st, err := client.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{})
			if err != nil {
				return err
			}
			_, err = st.Recv()
			return err
		}, codes.Internal},
		{"still serving", func() error {
			_, err := client.EmptyCall(ctx, &testgrpc.Empty{})
			return err
		}, codes.OK},
	}
	for _, tt := range tests { // in order: the last one checks the server survived
		t.Run(tt.name, func(t *testing.T) {
			if got := status.Code(tt.call()); got != tt.want {
				t.Errorf("code = %v, want %v", got, tt.want)
			}
		})
	}
	for _, want := range []string{"panic in RPC handler", "boom", "stream boom", "goroutine"} {
		if !strings.Contains(h.logs.String(), want) {
			t.Errorf("logs lack %q", want)
		}
	}
}

func TestAuth(t *testing.T) {
	t.Parallel()
	tokens := auth.Tokens{Data: "dtok", Admin: "tok"}
	// The test service is Admin under the default policy; dataPolicy makes
	// it a data service.
	h := start(t, Options{Tokens: tokens})
	dataPolicy := func(m string) auth.Class {
		if strings.HasPrefix(m, "/grpc.testing.TestService/") {
			return auth.Data
		}
		return auth.DefaultPolicy(m)
	}
	hd := start(t, Options{Tokens: tokens, Policy: dataPolicy})

	grpcTests := []struct {
		name  string
		h     *harness
		token string
		want  codes.Code
	}{
		{"grpc no token", h, "", codes.Unauthenticated},
		{"grpc wrong token", h, "bad", codes.PermissionDenied},
		{"grpc data token on admin", h, "dtok", codes.PermissionDenied},
		{"grpc admin token", h, "tok", codes.OK},
		{"grpc data policy, no token", hd, "", codes.Unauthenticated},
		{"grpc data policy, data token", hd, "dtok", codes.OK},
		{"grpc data policy, admin token", hd, "tok", codes.OK},
	}
	for _, tt := range grpcTests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t) // its own: a parallel subtest may start long after the parent
			_, err := testgrpc.NewTestServiceClient(tt.h.conn(t, dial.Options{Token: tt.token})).EmptyCall(ctx, &testgrpc.Empty{})
			if got := status.Code(err); got != tt.want {
				t.Errorf("code = %v (%v), want %v", got, err, tt.want)
			}
		})
	}

	// REST goes through the gateway's token-less loopback connection, so
	// only the caller's own Authorization header can authorize it.
	restTests := []struct {
		name  string
		path  string
		token string
		want  int
	}{
		{"rest no token", "/v1/empty", "", http.StatusUnauthorized},
		{"rest wrong token", "/v1/empty", "bad", http.StatusForbidden},
		{"rest data token on admin", "/v1/empty", "dtok", http.StatusForbidden},
		{"rest admin token", "/v1/empty", "tok", http.StatusOK},
		{"healthz open", HealthzPath, "", http.StatusOK},
		{"readyz open", ReadyzPath, "", http.StatusOK},
	}
	for _, tt := range restTests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if code, body := get(t, http.DefaultClient, h.url(tt.path), tt.token); code != tt.want {
				t.Errorf("GET %s = %d %q, want %d", tt.path, code, body, tt.want)
			}
		})
	}
}

func TestGatewayJSON(t *testing.T) {
	t.Parallel()
	h := start(t, Options{})
	tests := []struct {
		name     string
		path     string
		wantCode int
		wantKeys []string
	}{
		// Proto names (oauth_scope, not oauthScope) and unpopulated fields.
		{"proto names and zero fields", "/v1/unary", http.StatusOK, []string{"oauth_scope", "username", "payload"}},
		{"unknown route", "/v1/nope", http.StatusNotFound, []string{"code", "message", "details"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, body := get(t, http.DefaultClient, h.url(tt.path), "")
			if code != tt.wantCode {
				t.Fatalf("GET %s = %d %q, want %d", tt.path, code, body, tt.wantCode)
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(body), &m); err != nil {
				t.Fatalf("body %q: %v", body, err)
			}
			for _, k := range tt.wantKeys {
				if _, ok := m[k]; !ok {
					t.Errorf("body %q lacks key %q", body, k)
				}
			}
		})
	}
}

func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		release  bool          // let the in-flight RPC finish
		timeout  time.Duration // ShutdownTimeout
		wantCode func(codes.Code) bool
	}{
		{"in-flight RPC completes", true, time.Minute, func(c codes.Code) bool { return c == codes.OK }},
		{"stuck RPC cut at timeout", false, 50 * time.Millisecond, func(c codes.Code) bool { return c != codes.OK }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			svc := newTestService()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			srv, err := Start(ctx, Options{
				Name: "test", GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
				Logger:          slog.New(slog.NewTextHandler(io.Discard, nil)),
				Register:        func(s *grpc.Server) { testgrpc.RegisterTestServiceServer(s, svc) },
				ShutdownTimeout: tt.timeout,
			})
			if err != nil {
				t.Fatal(err)
			}
			cc, err := dial.New(srv.GRPCAddr().String(), dial.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = cc.Close() }()

			rpcErr := make(chan error, 1)
			go func() {
				_, err := testgrpc.NewTestServiceClient(cc).UnaryCall(testCtx(t), &testgrpc.SimpleRequest{ResponseSize: sizeBlock})
				rpcErr <- err
			}()
			<-svc.entered
			cancel()
			if tt.release {
				close(svc.release)
			}
			if err := srv.Wait(); err != nil {
				t.Errorf("Wait = %v, want nil", err)
			}
			if got := status.Code(<-rpcErr); !tt.wantCode(got) {
				t.Errorf("in-flight RPC code = %v", got)
			}
			// Both ports are released.
			for _, addr := range []net.Addr{srv.GRPCAddr(), srv.HTTPAddr()} {
				l, err := net.Listen("tcp", addr.String())
				if err != nil {
					t.Errorf("port %s not released: %v", addr, err)
					continue
				}
				_ = l.Close()
			}
		})
	}
}

func TestRunReturnsAfterCancel(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan net.Addr, 2)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			Name: "test", GRPCAddr: "127.0.0.1:0",
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			OnListen: func(g, h net.Addr) {
				addrs <- g
				if h != nil {
					t.Errorf("HTTP address %v with HTTP disabled", h)
				}
			},
		})
	}()
	addr := <-addrs
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	l, err := net.Listen("tcp", addr.String())
	if err != nil {
		t.Fatalf("port %s not released: %v", addr, err)
	}
	_ = l.Close()
}

func TestListenErrors(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Cleanup, not defer: the parallel subtests run after this function
	// returns.
	t.Cleanup(func() { _ = busy.Close() })
	busyAddr := busy.Addr().String()

	tests := []struct {
		name     string
		grpcAddr string
		httpAddr string
		want     []string
	}{
		{"grpc port busy", busyAddr, "", []string{"gRPC", busyAddr}},
		{"http port busy", "127.0.0.1:0", busyAddr, []string{"HTTP", busyAddr}},
		{"bad address", "127.0.0.1:notaport", "", []string{"127.0.0.1:notaport"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := Run(context.Background(), Options{
				Name: "test", GRPCAddr: tt.grpcAddr, HTTPAddr: tt.httpAddr,
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			})
			if err == nil {
				t.Fatal("Run succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		o    Options
	}{
		{"no name", Options{GRPCAddr: "127.0.0.1:0"}},
		{"no grpc address", Options{Name: "x"}},
		{"tls gateway without client tls", Options{Name: "x", GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", TLS: &tls.Config{}, Gateway: gatewayRoutes}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := Start(context.Background(), tt.o); err == nil {
				t.Error("Start succeeded")
			}
		})
	}
}

func TestTracing(t *testing.T) {
	t.Parallel()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	h := start(t, Options{TracerProvider: tp, Tokens: auth.OneToken("tok")})
	ctx := testCtx(t)
	cc := h.conn(t, dial.Options{Token: "tok"}) // client side untraced: only server spans recorded

	// Health checks start no span at all. otelgrpc starts server spans
	// before the handler runs, so once Check has returned any span would
	// already be in Started().
	for range 3 {
		if _, err := healthStatus(ctx, cc, ""); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range rec.Started() {
		if strings.Contains(s.Name(), "grpc.health") {
			t.Errorf("health check traced: span %q", s.Name())
		}
	}
	if code, _ := get(t, http.DefaultClient, h.url(ReadyzPath), ""); code != http.StatusOK {
		t.Fatalf("/readyz = %d", code)
	}

	t.Run("gRPC server span", func(t *testing.T) {
		if _, err := testgrpc.NewTestServiceClient(cc).EmptyCall(ctx, &testgrpc.Empty{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "server span", func() error {
			for _, s := range rec.Ended() {
				if s.SpanKind() == trace.SpanKindServer && s.Name() == "grpc.testing.TestService/EmptyCall" {
					return nil
				}
			}
			return fmt.Errorf("no server span among %v", spanNames(rec.Ended()))
		})
	})

	t.Run("REST call is one trace", func(t *testing.T) {
		if code, body := get(t, http.DefaultClient, h.url("/v1/unary"), "tok"); code != http.StatusOK {
			t.Fatalf("GET /v1/unary = %d %q", code, body)
		}
		// HTTP server span -> gateway's gRPC client span -> gRPC server span.
		want := []struct {
			name string
			kind trace.SpanKind
		}{
			{"GET /v1/unary", trace.SpanKindServer},
			{"grpc.testing.TestService/UnaryCall", trace.SpanKindClient},
			{"grpc.testing.TestService/UnaryCall", trace.SpanKindServer},
		}
		eventually(t, "REST spans", func() error {
			var traceID trace.TraceID
			for _, w := range want {
				var found sdktrace.ReadOnlySpan
				for _, s := range rec.Ended() {
					if s.Name() == w.name && s.SpanKind() == w.kind {
						found = s
					}
				}
				if found == nil {
					return fmt.Errorf("no %v span %q among %v", w.kind, w.name, spanNames(rec.Ended()))
				}
				if !traceID.IsValid() {
					traceID = found.SpanContext().TraceID()
				} else if found.SpanContext().TraceID() != traceID {
					return fmt.Errorf("span %q in trace %s, want %s", w.name, found.SpanContext().TraceID(), traceID)
				}
			}
			return nil
		})
		for _, s := range rec.Ended() {
			if strings.Contains(s.Name(), "healthz") || strings.Contains(s.Name(), "readyz") || strings.Contains(s.Name(), "grpc.health") {
				t.Errorf("probe traced: span %q", s.Name())
			}
		}
	})
}

func TestHTTPSpanNames(t *testing.T) {
	t.Parallel()
	tests := []struct {
		path string
		want string
	}{
		// Route templates, not raw paths: span names stay low-cardinality.
		{"/v1/items/42", "GET /v1/items/{id}"},
		{"/v1/empty", "GET /v1/empty"},
		{"/v1/nope", "GET"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			t.Parallel()
			rec := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
			h := start(t, Options{TracerProvider: tp})
			_, _ = get(t, http.DefaultClient, h.url(tt.path), "")
			eventually(t, "HTTP span", func() error {
				for _, s := range rec.Ended() {
					if s.SpanKind() == trace.SpanKindServer && !strings.HasPrefix(s.Name(), "grpc.") {
						if s.Name() != tt.want {
							return fmt.Errorf("span name %q, want %q", s.Name(), tt.want)
						}
						return nil
					}
				}
				return fmt.Errorf("no HTTP server span among %v", spanNames(rec.Ended()))
			})
		})
	}
}

func spanNames(spans []sdktrace.ReadOnlySpan) []string {
	var names []string
	for _, s := range spans {
		names = append(names, s.SpanKind().String()+":"+s.Name())
	}
	return names
}

func TestTLS(t *testing.T) {
	t.Parallel()
	cert, pool := selfSigned(t)
	serverTLS := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	clientTLS := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	h := start(t, Options{Tokens: auth.OneToken("tok"), TLS: serverTLS, ClientTLS: clientTLS})
	ctx := testCtx(t)

	t.Run("gRPC", func(t *testing.T) {
		cc := h.conn(t, dial.Options{Token: "tok", TLS: clientTLS})
		if _, err := testgrpc.NewTestServiceClient(cc).EmptyCall(ctx, &testgrpc.Empty{}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("REST through the TLS loopback", func(t *testing.T) {
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS}}
		defer client.CloseIdleConnections()
		url := "https://" + h.srv.HTTPAddr().String() + "/v1/empty"
		if code, body := get(t, client, url, "tok"); code != http.StatusOK {
			t.Fatalf("GET %s = %d %q", url, code, body)
		}
	})
}

// selfSigned returns a certificate for 127.0.0.1 and localhost and a pool
// trusting it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "slotkv-test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

func TestLoopback(t *testing.T) {
	t.Parallel()
	tests := []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.IPv4zero, Port: 7000}, "127.0.0.1:7000"},
		{&net.TCPAddr{IP: net.IPv6unspecified, Port: 7000}, "127.0.0.1:7000"},
		{&net.TCPAddr{Port: 7000}, "127.0.0.1:7000"},
		{&net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 7000}, "10.0.0.1:7000"},
		{&net.TCPAddr{IP: net.IPv6loopback, Port: 7000}, "[::1]:7000"},
	}
	for _, tt := range tests {
		t.Run(tt.addr.String(), func(t *testing.T) {
			t.Parallel()
			if got := loopback(tt.addr); got != tt.want {
				t.Errorf("loopback(%v) = %q, want %q", tt.addr, got, tt.want)
			}
		})
	}
}

// TestRPCsBeyondStreamWorkers: a server keeps streamWorkers() goroutines
// for its RPCs; with every one of them held by an RPC that does not end
// (as a long stream holds one), more such RPCs still start, and a short
// one is still answered, each on a goroutine of its own. Then all end.
func TestRPCsBeyondStreamWorkers(t *testing.T) {
	t.Parallel()
	h := start(t, Options{})
	cc := h.conn(t, dial.Options{})
	client := testgrpc.NewTestServiceClient(cc)
	ctx := testCtx(t)

	held := int(streamWorkers()) + 8
	errs := make(chan error, held)
	for range held {
		go func() {
			_, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseSize: sizeBlock})
			errs <- err
		}()
	}
	for i := range held {
		select {
		case <-h.svc.entered:
		case <-ctx.Done():
			t.Fatalf("%d of %d blocking RPCs started (stream workers: %d): %v", i, held, streamWorkers(), ctx.Err())
		}
	}
	if _, err := client.EmptyCall(ctx, &testgrpc.Empty{}); err != nil {
		t.Fatalf("an RPC while %d RPCs hold the %d workers: %v", held, streamWorkers(), err)
	}
	close(h.svc.release)
	for range held {
		if err := <-errs; err != nil {
			t.Fatalf("a released RPC: %v", err)
		}
	}
}
