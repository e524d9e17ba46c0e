package grpctest_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/slotkv/slotkv/pkg/grpctest"
)

// TestRestart: a stopped server refuses calls; restarted, it answers on the
// same address again.
func TestRestart(t *testing.T) {
	s := grpctest.Start(t, func(srv *grpc.Server) { healthpb.RegisterHealthServer(srv, health.NewServer()) })
	addr := s.Addr()
	check := func() error {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	if err := check(); err != nil {
		t.Fatalf("serving: %v", err)
	}
	s.Stop()
	if err := check(); err == nil {
		t.Fatal("a stopped server answered")
	}
	s.Restart()
	if s.Addr() != addr {
		t.Fatalf("restarted on %s, want %s", s.Addr(), addr)
	}
	if err := check(); err != nil {
		t.Fatalf("after the restart: %v", err)
	}
}
