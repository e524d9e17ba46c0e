// Package grpctest holds gRPC helpers for tests: a real server on loopback
// that a test can stop and start again on the same address, as a node that
// goes down and comes back.
package grpctest

import (
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"
)

// Server serves what register registers, on 127.0.0.1.
type Server struct {
	t        testing.TB
	register func(*grpc.Server)

	mu   sync.Mutex
	srv  *grpc.Server // nil while stopped
	addr string
}

// Start listens on 127.0.0.1:0 and serves; the server stops when the test
// ends.
func Start(t testing.TB, register func(*grpc.Server)) *Server {
	t.Helper()
	s := &Server{t: t, register: register}
	s.listen("127.0.0.1:0")
	t.Cleanup(s.Stop)
	return s
}

// Addr is the server's address, the same across restarts.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Stop stops the server, cutting its connections (a node going down).
func (s *Server) Stop() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		srv.Stop()
	}
}

// Restart serves again on the address it had.
func (s *Server) Restart() {
	s.t.Helper()
	s.listen(s.Addr())
}

func (s *Server) listen(addr string) {
	s.t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		s.t.Fatalf("grpctest: listen on %s: %v", addr, err)
	}
	srv := grpc.NewServer()
	s.register(srv)
	go func() { _ = srv.Serve(lis) }()
	s.mu.Lock()
	s.srv, s.addr = srv, lis.Addr().String()
	s.mu.Unlock()
}
