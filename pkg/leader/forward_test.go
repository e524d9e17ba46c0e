package leader

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/slotkv/slotkv/pkg/etcdtest"
)

// member is one replica: a gRPC server with a health service whose answer
// tells the replicas apart, behind its gate.
type member struct {
	addr   string
	gate   *Gate
	mu     sync.Mutex
	tokens []string // authorization metadata its handler saw
}

func (m *member) campaign(t *testing.T, cli *clientv3.Client, ctx context.Context) {
	t.Helper()
	err := m.gate.Campaign(ctx, cli, Options{Prefix: "/fw/", Role: "migrator", Value: m.addr, TTL: time.Second},
		func(ctx context.Context, _ Term) error { <-ctx.Done(); return nil })
	if err != nil {
		t.Fatal(err)
	}
}

func TestGate(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t)
	cli := e.Client(t)
	isWrite := func(m string) bool { return m == healthpb.Health_Check_FullMethodName }
	dial := func(addr string) (*grpc.ClientConn, error) {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err == nil {
			t.Cleanup(func() { cc.Close() })
		}
		return cc, err
	}
	newMember := func(status healthpb.HealthCheckResponse_ServingStatus) *member {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		m := &member{addr: lis.Addr().String(), gate: NewGate(GateOptions{Write: isWrite, Dial: dial, Wait: time.Second})}
		t.Cleanup(m.gate.Close)
		record := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			md, _ := metadata.FromIncomingContext(ctx)
			m.mu.Lock()
			m.tokens = append(m.tokens, md.Get("authorization")...)
			m.mu.Unlock()
			return h(ctx, req)
		}
		srv := grpc.NewServer(grpc.ChainUnaryInterceptor(m.gate.Unary, record))
		hs := health.NewServer()
		hs.SetServingStatus("svc", status)
		healthpb.RegisterHealthServer(srv, hs)
		go func() { _ = srv.Serve(lis) }()
		t.Cleanup(srv.Stop)
		return m
	}
	a := newMember(healthpb.HealthCheckResponse_SERVING)
	b := newMember(healthpb.HealthCheckResponse_NOT_SERVING)
	client := func(m *member) healthpb.HealthClient {
		cc, err := dial(m.addr)
		if err != nil {
			t.Fatal(err)
		}
		return healthpb.NewHealthClient(cc)
	}
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer tok")

	// No election yet: a write waits, then is Unavailable; a read is
	// answered.
	if _, err := client(b).Check(ctx, &healthpb.HealthCheckRequest{Service: "svc"}); status.Code(err) != codes.Unavailable {
		t.Fatalf("write with no leader: %v, want Unavailable", err)
	}
	if _, err := client(b).List(ctx, &healthpb.HealthListRequest{}); err != nil {
		t.Fatalf("read with no leader: %v", err)
	}

	runCtx, stop := context.WithCancel(context.Background())
	t.Cleanup(stop) // before the gates' Close, registered earlier
	a.campaign(t, cli, runCtx)
	for end := time.Now().Add(60 * time.Second); !a.gate.Elector().IsLeader(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("a did not lead within 60s")
		}
	}
	b.campaign(t, cli, runCtx)

	tests := []struct {
		name     string
		at       *member
		ctx      context.Context
		want     healthpb.HealthCheckResponse_ServingStatus
		wantCode codes.Code
	}{
		{"at the leader", a, ctx, healthpb.HealthCheckResponse_SERVING, codes.OK},
		{"at a follower: forwarded, the leader's answer", b, ctx, healthpb.HealthCheckResponse_SERVING, codes.OK},
		{"forwarded twice: refused naming the leader", b, metadata.AppendToOutgoingContext(ctx, forwardedKey, "c:1"), 0, codes.FailedPrecondition},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := client(tc.at).Check(tc.ctx, &healthpb.HealthCheckRequest{Service: "svc"})
			if status.Code(err) != tc.wantCode {
				t.Fatalf("Check: %v, want %v", err, tc.wantCode)
			}
			if err != nil {
				if !strings.Contains(err.Error(), a.addr) {
					t.Fatalf("refusal does not name the leader %s: %v", a.addr, err)
				}
				return
			}
			if resp.GetStatus() != tc.want {
				t.Fatalf("status %v, want %v", resp.GetStatus(), tc.want)
			}
		})
	}
	// The caller's token reached the leader with the forwarded call; the
	// follower's handler ran for no write.
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.tokens) != 2 || a.tokens[1] != "Bearer tok" {
		t.Fatalf("tokens seen by the leader: %q, want two calls with Bearer tok", a.tokens)
	}
	// A read at the follower is answered there.
	if _, err := client(b).List(ctx, &healthpb.HealthListRequest{}); err != nil {
		t.Fatalf("read at the follower: %v", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.tokens) != 2 { // the read before the election and this one
		t.Fatalf("follower's handler ran %d times, want 2 (reads only)", len(b.tokens))
	}
}
