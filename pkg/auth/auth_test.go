package auth

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

type testService struct {
	testgrpc.UnimplementedTestServiceServer
}

func (testService) EmptyCall(context.Context, *testgrpc.Empty) (*testgrpc.Empty, error) {
	return &testgrpc.Empty{}, nil
}

func (testService) StreamingOutputCall(_ *testgrpc.StreamingOutputCallRequest, s grpc.ServerStreamingServer[testgrpc.StreamingOutputCallResponse]) error {
	return s.Send(&testgrpc.StreamingOutputCallResponse{})
}

// startServer serves the test and health services on a loopback port with
// the given cluster token and returns the address.
func startServer(t *testing.T, token string) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(ServerOptions(token)...)
	testgrpc.RegisterTestServiceServer(s, testService{})
	healthpb.RegisterHealthServer(s, health.NewServer())
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

func dial(t *testing.T, addr, token string) *grpc.ClientConn {
	t.Helper()
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(PerRPCCredentials(token)))
	}
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

type call func(ctx context.Context, cc *grpc.ClientConn) error

func unary(ctx context.Context, cc *grpc.ClientConn) error {
	_, err := testgrpc.NewTestServiceClient(cc).EmptyCall(ctx, &testgrpc.Empty{})
	return err
}

func stream(ctx context.Context, cc *grpc.ClientConn) error {
	st, err := testgrpc.NewTestServiceClient(cc).StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{})
	if err != nil {
		return err
	}
	_, err = st.Recv()
	return err
}

func healthCheck(ctx context.Context, cc *grpc.ClientConn) error {
	_, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

func TestServerInterceptors(t *testing.T) {
	t.Parallel()
	secured := startServer(t, "s3cret")
	open := startServer(t, "")

	tests := []struct {
		name  string
		addr  string
		token string
		call  call
		want  codes.Code
	}{
		{"no token unary", secured, "", unary, codes.Unauthenticated},
		{"no token stream", secured, "", stream, codes.Unauthenticated},
		{"wrong token unary", secured, "nope", unary, codes.PermissionDenied},
		{"wrong token stream", secured, "nope", stream, codes.PermissionDenied},
		{"prefix of token", secured, "s3cre", unary, codes.PermissionDenied},
		{"right token unary", secured, "s3cret", unary, codes.OK},
		{"right token stream", secured, "s3cret", stream, codes.OK},
		{"health exempt without token", secured, "", healthCheck, codes.OK},
		{"health exempt with wrong token", secured, "nope", healthCheck, codes.OK},
		{"open server no token", open, "", unary, codes.OK},
		{"open server stream", open, "", stream, codes.OK},
		{"open server any token", open, "whatever", unary, codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			err := tt.call(ctx, dial(t, tt.addr, tt.token))
			if got := status.Code(err); got != tt.want {
				t.Errorf("code = %v (%v), want %v", got, err, tt.want)
			}
		})
	}
}

func TestRawMetadata(t *testing.T) {
	t.Parallel()
	addr := startServer(t, "s3cret")
	cc := dial(t, addr, "")
	tests := []struct {
		name  string
		value string
		want  codes.Code
	}{
		{"basic scheme", "Basic czNjcmV0", codes.Unauthenticated},
		{"bare token", "s3cret", codes.Unauthenticated},
		{"empty bearer", "Bearer ", codes.Unauthenticated},
		{"lower-case scheme", "bearer s3cret", codes.OK},
		{"extra spaces", "Bearer   s3cret ", codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			ctx = metadata.AppendToOutgoingContext(ctx, MetadataKey, tt.value)
			if got := status.Code(unary(ctx, cc)); got != tt.want {
				t.Errorf("code = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCheckErrorHidesToken(t *testing.T) {
	t.Parallel()
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs(MetadataKey, "Bearer guess"))
	err := Check(ctx, "s3cret", "/slotkv.Admin/SetTopology")
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("code = %v, want PermissionDenied", status.Code(err))
	}
	for _, secret := range []string{"s3cret", "guess"} {
		if msg := err.Error(); strings.Contains(msg, secret) {
			t.Errorf("error %q leaks %q", msg, secret)
		}
	}
}

func TestHelpers(t *testing.T) {
	t.Parallel()
	if PerRPCCredentials("") != nil {
		t.Error("PerRPCCredentials(\"\") should be nil")
	}
	c := PerRPCCredentials("tok")
	if c.RequireTransportSecurity() {
		t.Error("RequireTransportSecurity should be false")
	}
	md, err := c.GetRequestMetadata(context.Background())
	if err != nil || md[MetadataKey] != "Bearer tok" {
		t.Errorf("GetRequestMetadata = %v, %v", md, err)
	}
	h := http.Header{}
	SetHeader(h, "")
	if h.Get("Authorization") != "" {
		t.Error("SetHeader with empty token set a header")
	}
	SetHeader(h, "tok")
	if got := h.Get("Authorization"); got != "Bearer tok" {
		t.Errorf("Authorization = %q", got)
	}
}
