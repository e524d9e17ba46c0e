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

// testPolicy: the test service's unary EmptyCall is Data, its streaming
// call Admin (what the router's KV service and everything else are under
// DefaultPolicy).
func testPolicy(m string) Class {
	switch m {
	case "/grpc.testing.TestService/EmptyCall":
		return Data
	case "/grpc.health.v1.Health/Check":
		return Exempt
	}
	return Admin
}

// startServer serves the test and health services on a loopback port with
// the given tokens and returns the address.
func startServer(t *testing.T, tokens Tokens) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(ServerOptions(tokens, testPolicy)...)
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
	two := startServer(t, Tokens{Data: "data-tok", Admin: "admin-tok"})
	adminOnly := startServer(t, Tokens{Admin: "admin-tok"})
	one := startServer(t, OneToken("s3cret"))
	open := startServer(t, Tokens{})

	// unary is a Data method, stream an Admin one (testPolicy).
	tests := []struct {
		name  string
		addr  string
		token string
		call  call
		want  codes.Code
	}{
		{"no token on data", two, "", unary, codes.Unauthenticated},
		{"no token on admin", two, "", stream, codes.Unauthenticated},
		{"wrong token on data", two, "nope", unary, codes.PermissionDenied},
		{"wrong token on admin", two, "nope", stream, codes.PermissionDenied},
		{"prefix of the admin token", two, "admin-to", stream, codes.PermissionDenied},
		{"data token on data", two, "data-tok", unary, codes.OK},
		{"data token on admin", two, "data-tok", stream, codes.PermissionDenied},
		{"admin token on data", two, "admin-tok", unary, codes.OK},
		{"admin token on admin", two, "admin-tok", stream, codes.OK},
		{"health exempt without token", two, "", healthCheck, codes.OK},
		{"health exempt with wrong token", two, "nope", healthCheck, codes.OK},
		{"admin only: data method needs a token", adminOnly, "", unary, codes.Unauthenticated},
		{"admin only: admin token on data", adminOnly, "admin-tok", unary, codes.OK},
		{"one token on data", one, "s3cret", unary, codes.OK},
		{"one token on admin", one, "s3cret", stream, codes.OK},
		{"one token, wrong", one, "nope", stream, codes.PermissionDenied},
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

func TestDefaultPolicy(t *testing.T) {
	t.Parallel()
	for m, want := range map[string]Class{
		"/grpc.health.v1.Health/Check":                                   Exempt,
		"/grpc.health.v1.Health/Watch":                                   Exempt,
		"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      Data,
		"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": Data,
		"/slotkv.router.v1.KVService/Get":                                Data,
		"/slotkv.router.v1.KVService/Scan":                               Data,
		"/slotkv.router.v1.KVService/GetTopology":                        Admin,
		"/slotkv.storage.v1.StorageService/Get":                          Admin,
		"/slotkv.storage.v1.NodeService/GetTopology":                     Admin,
		"/slotkv.migrator.v1.MigratorService/StartMigration":             Admin,
		"/slotkv.downloader.v1.BulkLoadService/StartBulkLoad":            Admin,
		"/slotkv.router.v1.KVServiceX/Get":                               Admin,
		"/slotkv.router.v2.KVService/Get":                                Admin,
		"":                                                               Admin,
	} {
		if got := DefaultPolicy(m); got != want {
			t.Errorf("DefaultPolicy(%q) = %v, want %v", m, got, want)
		}
	}
}

func TestTokensValidate(t *testing.T) {
	t.Parallel()
	if err := (Tokens{Data: "d"}).Validate(); err == nil || !strings.Contains(err.Error(), "--admin-token") {
		t.Errorf("data token without admin token: %v, want an error naming --admin-token", err)
	}
	for _, ok := range []Tokens{{}, {Admin: "a"}, {Data: "d", Admin: "a"}, OneToken("t")} {
		if err := ok.Validate(); err != nil {
			t.Errorf("%+v: %v", ok, err)
		}
	}
}

func TestCheckHTTP(t *testing.T) {
	t.Parallel()
	tokens := Tokens{Data: "d", Admin: "a"}
	tests := []struct {
		name   string
		header string
		class  Class
		want   int
	}{
		{"no header", "", Admin, http.StatusUnauthorized},
		{"not bearer", "Basic YTpi", Admin, http.StatusUnauthorized},
		{"wrong", "Bearer x", Data, http.StatusForbidden},
		{"data on data", "Bearer d", Data, 0},
		{"data on admin", "Bearer d", Admin, http.StatusForbidden},
		{"admin on admin", "Bearer a", Admin, 0},
		{"admin on data", "Bearer a", Data, 0},
		{"exempt", "", Exempt, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := http.Header{}
			if tt.header != "" {
				h.Set("Authorization", tt.header)
			}
			if got := CheckHTTP(h, tokens, tt.class); got != tt.want {
				t.Errorf("CheckHTTP = %d, want %d", got, tt.want)
			}
		})
	}
	if got := CheckHTTP(http.Header{}, Tokens{}, Admin); got != 0 {
		t.Errorf("open tokens: %d, want 0", got)
	}
}

func TestRawMetadata(t *testing.T) {
	t.Parallel()
	addr := startServer(t, OneToken("s3cret"))
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
	err := Check(ctx, Tokens{Data: "d-s3cret", Admin: "s3cret"}, Admin)
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
