// Package server is the one way a slotkv service starts: one gRPC port and
// one optional HTTP port, wired the same way in every service so that
// health checks, reflection, tracing, the tokens, panic recovery,
// REST and graceful shutdown cannot differ between them.
//
// The gRPC server has the otelgrpc stats handler (health checks and
// reflection are not traced), a panic-recovery interceptor, the token
// interceptors from pkg/auth (data and admin tokens, Options.Policy), the
// standard health service (SERVING while Options.Ready passes, NOT_SERVING
// during shutdown) and server reflection for grpcurl.
//
// The HTTP server serves /healthz (liveness), /readyz (readiness), /metrics
// (Prometheus, when Options.MetricsHandler is set), net/http/pprof under
// /debug/pprof/ (behind the admin token, see PprofPath) and the
// grpc-gateway REST API (everything else, /v1/... by convention), traced
// with otelhttp. The gateway reaches the service through a loopback gRPC
// connection to the service's own port, built with pkg/dial but without the
// token: the REST caller's "Authorization: Bearer" header is forwarded as
// gRPC metadata and checked by the same interceptor as a direct gRPC call,
// so REST cannot bypass the token.
//
// Typical main:
//
//	ctx, stop := server.SignalContext()
//	defer stop()
//	err := server.Run(ctx, server.Options{Name: "storage", GRPCAddr: *grpcAddr, ...})
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	goruntime "runtime"
	"sync"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/reflection"

	"github.com/slotkv/slotkv/pkg/auth"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/telemetry"
)

// Defaults for zero Options fields.
const (
	DefaultShutdownTimeout = 15 * time.Second
	DefaultReadyInterval   = time.Second
	// ReadyCheckTimeout bounds one call of Options.Ready, so a hung
	// dependency turns into "not ready" instead of a hung probe.
	ReadyCheckTimeout = 5 * time.Second
	// ReadHeaderTimeout bounds how long a client may take to send HTTP
	// request headers (slowloris protection).
	ReadHeaderTimeout = 10 * time.Second
)

// Options configures a service. Name and GRPCAddr are required.
type Options struct {
	Name     string // service name for logs
	GRPCAddr string // e.g. "127.0.0.1:0"; port 0 picks a free port
	HTTPAddr string // "" disables HTTP (gateway, /healthz, /readyz)
	// Tokens are the data and admin tokens (both "" = open); Policy says
	// which methods need which (nil = auth.DefaultPolicy). /metrics and
	// pprof need the admin token.
	Tokens auth.Tokens
	Policy auth.Policy
	// Insecure lets an open cluster (no token) listen beyond loopback;
	// without it Start refuses (see CheckExposure).
	Insecure bool

	// TLS, when set, serves both ports over TLS.
	TLS *tls.Config
	// ClientTLS is used by the gateway's loopback connection to the gRPC
	// port; required when TLS and Gateway are both set. Its ServerName (or
	// the certificate's IP SANs) must match the loopback address
	// (127.0.0.1 when GRPCAddr binds all interfaces).
	ClientTLS *tls.Config

	// TracerProvider makes the server spans (gRPC and HTTP) and the
	// gateway's client spans; nil means no spans (the trace context is
	// still propagated). Propagator nil means W3C tracecontext + baggage.
	TracerProvider trace.TracerProvider
	Propagator     propagation.TextMapPropagator
	// MeterProvider receives otelgrpc/otelhttp metrics (RPC counts and
	// latencies); nil = global (a no-op unless someone installed one).
	MeterProvider metric.MeterProvider
	// MetricsHandler, when set, is served at GET /metrics on the HTTP port
	// (typically telemetry.Telemetry.MetricsHandler()). It is not traced,
	// and needs the admin token (the metrics describe the cluster's load
	// and layout).
	MetricsHandler http.Handler
	// OpenAPI, when set, is the service's OpenAPI document (typically one
	// of gen's *OpenAPI), served at GET /openapi.json on the HTTP port
	// without a token: it describes the API's shape, which the public
	// .proto files and the repository already show, and no data, so
	// hiding it would only keep tools (and the console) from reading it.
	OpenAPI []byte

	// Logger receives the server's logs; nil means slog.Default().
	Logger *slog.Logger

	// Register registers the service implementations on the gRPC server.
	Register func(s *grpc.Server)
	// Gateway registers grpc-gateway handlers on mux, typically
	// pb.RegisterXHandler(ctx, mux, conn). conn is the loopback connection;
	// the server closes it. ctx lives until shutdown has finished.
	Gateway func(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error
	// GatewayOptions are extra mux options (marshalers, header matchers),
	// applied after the defaults so they can override them.
	GatewayOptions []runtime.ServeMuxOption

	// Ready is the readiness check behind /readyz and the health status;
	// nil means always ready. It is polled every ReadyInterval (default
	// DefaultReadyInterval) for the health service and called on every
	// /readyz request.
	Ready         func(ctx context.Context) error
	ReadyInterval time.Duration

	// OnListen is called once both listeners are bound, with their actual
	// addresses (httpAddr is nil when HTTP is disabled).
	OnListen func(grpcAddr, httpAddr net.Addr)

	// ShutdownTimeout bounds graceful shutdown; after it, remaining RPCs
	// and HTTP connections are cut. Zero means DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// MaxRecvMsgSize bounds one received gRPC message (and what the gateway
	// may send or receive); zero means dial.MaxMsgSize. The server may send
	// messages up to the same size; a larger message is refused with
	// ResourceExhausted.
	MaxRecvMsgSize int
	// MaxBodyBytes bounds one REST request body; a larger one is answered
	// 413. Zero means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// MaxConcurrentStreams bounds the concurrent RPCs of one gRPC
	// connection; zero means DefaultMaxConcurrentStreams.
	MaxConcurrentStreams uint32

	// ServerOptions are appended to the gRPC server options; interceptors
	// added with grpc.ChainUnaryInterceptor here run after recovery and
	// auth.
	ServerOptions []grpc.ServerOption
}

// Server is a started service. Use Run unless you need the addresses
// without OnListen or want to wait separately.
type Server struct {
	grpcAddr net.Addr
	httpAddr net.Addr
	done     chan struct{}
	err      error
}

// GRPCAddr is the bound gRPC address.
func (s *Server) GRPCAddr() net.Addr { return s.grpcAddr }

// HTTPAddr is the bound HTTP address, nil when HTTP is disabled.
func (s *Server) HTTPAddr() net.Addr { return s.httpAddr }

// Done is closed once the server has shut down.
func (s *Server) Done() <-chan struct{} { return s.done }

// Wait blocks until the server has shut down and returns Run's result.
func (s *Server) Wait() error {
	<-s.done
	return s.err
}

// Run starts the service and blocks until ctx is done, then shuts down
// gracefully: readiness and health go NOT_SERVING, the HTTP server drains,
// then gRPC GracefulStop, cut short by Stop after ShutdownTimeout. It
// returns nil after a shutdown requested through ctx, or the error that
// stopped a listener or prevented startup (a port that cannot be bound is
// named in the error).
func Run(ctx context.Context, o Options) error {
	s, err := Start(ctx, o)
	if err != nil {
		return err
	}
	return s.Wait()
}

// Start binds both listeners, starts serving and returns; the server shuts
// down when ctx is done (see Run). On error nothing is left running.
func Start(ctx context.Context, o Options) (*Server, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("service", o.Name)
	shutdownTimeout := o.ShutdownTimeout
	if shutdownTimeout <= 0 {
		shutdownTimeout = DefaultShutdownTimeout
	}
	prop := o.Propagator
	if prop == nil {
		prop = telemetry.Propagator()
	}

	grpcLis, err := net.Listen("tcp", o.GRPCAddr)
	if err != nil {
		return nil, fmt.Errorf("%s: listen gRPC on %s: %w", o.Name, o.GRPCAddr, err)
	}
	var httpLis net.Listener
	if o.HTTPAddr != "" {
		httpLis, err = net.Listen("tcp", o.HTTPAddr)
		if err != nil {
			_ = grpcLis.Close()
			return nil, fmt.Errorf("%s: listen HTTP on %s: %w", o.Name, o.HTTPAddr, err)
		}
	}
	closeListeners := func() {
		_ = grpcLis.Close()
		if httpLis != nil {
			_ = httpLis.Close()
		}
	}

	gs := newGRPCServer(o, log, prop)
	ready := newReadiness(o.Ready, o.ReadyInterval, log)
	ready.register(gs)
	reflection.Register(gs)
	if o.Register != nil {
		o.Register(gs)
	}
	ready.watchServices(gs)

	// The gateway's context must outlive the start of shutdown: in-flight
	// REST calls still use it while the HTTP server drains.
	gwCtx, gwCancel := context.WithCancel(context.WithoutCancel(ctx))
	var (
		httpSrv *http.Server
		gwConn  *grpc.ClientConn
	)
	if httpLis != nil {
		httpSrv, gwConn, err = newHTTPServer(gwCtx, o, log, prop, grpcLis.Addr(), ready)
		if err != nil {
			gwCancel()
			gs.Stop()
			closeListeners()
			return nil, fmt.Errorf("%s: %w", o.Name, err)
		}
	}

	s := &Server{grpcAddr: grpcLis.Addr(), done: make(chan struct{})}
	if httpLis != nil {
		s.httpAddr = httpLis.Addr()
	}

	// serveErr receives the first unexpected listener failure.
	serveErr := make(chan error, 2)
	var serving sync.WaitGroup
	serving.Go(func() {
		if err := gs.Serve(grpcLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			serveErr <- fmt.Errorf("%s: serve gRPC on %s: %w", o.Name, s.grpcAddr, err)
		}
	})
	if httpSrv != nil {
		serving.Go(func() {
			var err error
			if o.TLS != nil {
				err = httpSrv.ServeTLS(httpLis, "", "") // certificates come from TLSConfig
			} else {
				err = httpSrv.Serve(httpLis)
			}
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("%s: serve HTTP on %s: %w", o.Name, s.httpAddr, err)
			}
		})
	}
	ready.start()

	httpAttr := "disabled"
	if s.httpAddr != nil {
		httpAttr = s.httpAddr.String()
	}
	log.Info("listening", "grpc", s.grpcAddr.String(), "http", httpAttr, "tls", o.TLS != nil, "auth", !o.Tokens.Open())
	if o.OnListen != nil {
		o.OnListen(s.grpcAddr, s.httpAddr)
	}

	go func() {
		defer close(s.done)
		var err error
		select {
		case <-ctx.Done():
			log.Info("shutting down", "timeout", shutdownTimeout)
		case err = <-serveErr:
			log.Error("listener failed, shutting down", "err", err)
		}
		ready.shutdown() // NOT_SERVING before anything stops accepting

		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
		defer cancel()
		// HTTP first: in-flight REST calls still need the gRPC server.
		if httpSrv != nil {
			if err := httpSrv.Shutdown(sctx); err != nil {
				log.Warn("HTTP shutdown timed out, closing connections", "err", err)
				_ = httpSrv.Close()
			}
			_ = gwConn.Close()
		}
		gwCancel()
		stopGRPC(sctx, gs, log)
		serving.Wait()
		ready.wait()
		log.Info("stopped")
		s.err = err
	}()
	return s, nil
}

// stopGRPC stops gs gracefully, falling back to a hard Stop when ctx ends
// first (long-lived streams such as progress watches never finish on their
// own).
func stopGRPC(ctx context.Context, gs *grpc.Server, log *slog.Logger) {
	stopped := make(chan struct{})
	go func() {
		gs.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-ctx.Done():
		log.Warn("gRPC graceful stop timed out, cancelling remaining RPCs")
		gs.Stop()
		<-stopped
	}
}

func (o *Options) validate() error {
	switch {
	case o.Name == "":
		return errors.New("server: Options.Name is required")
	case o.GRPCAddr == "":
		return fmt.Errorf("%s: Options.GRPCAddr is required", o.Name)
	case o.TLS != nil && o.HTTPAddr != "" && o.Gateway != nil && o.ClientTLS == nil:
		return fmt.Errorf("%s: Options.ClientTLS is required for the gateway's loopback connection when TLS is set", o.Name)
	}
	// Here and not only in Flags.Finish, so a service started from code
	// cannot skip it either.
	if err := o.Tokens.Validate(); err != nil {
		return fmt.Errorf("%s: %w", o.Name, err)
	}
	if err := CheckExposure(o.GRPCAddr, o.HTTPAddr, !o.Tokens.Open(), o.Insecure); err != nil {
		return fmt.Errorf("%s: %w", o.Name, err)
	}
	return nil
}

func newGRPCServer(o Options, log *slog.Logger, prop propagation.TextMapPropagator) *grpc.Server {
	opts := []grpc.ServerOption{
		grpc.StatsHandler(otelgrpc.NewServerHandler(dial.OtelOptions(o.TracerProvider, prop, o.MeterProvider)...)),
		// Recovery outermost, so a panic anywhere below (auth included)
		// becomes codes.Internal instead of killing the process.
		grpc.ChainUnaryInterceptor(RecoveryUnaryInterceptor(log), auth.UnaryServerInterceptor(o.Tokens, o.Policy)),
		grpc.ChainStreamInterceptor(RecoveryStreamInterceptor(log), auth.StreamServerInterceptor(o.Tokens, o.Policy)),
	}
	// Message sizes, streams per connection, keepalive (limits.go).
	opts = append(opts, grpcLimitOptions(o)...)
	// Stream workers: by default grpc-go starts a goroutine per RPC,
	// whose stack then grows through the handler chain (otelgrpc, auth,
	// the handler, the client call below it): runtime.newstack was 7% of
	// the router's CPU and 15% of a node's under 5,000 puts/s. Workers keep
	// their grown stacks from one RPC to the next; an RPC that finds them
	// all busy (long streams hold one each) gets its own goroutine, as
	// without them.
	opts = append(opts, grpc.NumStreamWorkers(streamWorkers()))
	if o.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(o.TLS)))
	}
	return grpc.NewServer(append(opts, o.ServerOptions...)...)
}

// streamWorkers is how many stream workers a server keeps: enough for the
// RPCs in flight at once under a busy unary load (each worker holds its
// RPC until the answer, including the calls it makes), a few per CPU.
func streamWorkers() uint32 {
	return uint32(max(16, 4*goruntime.GOMAXPROCS(0)))
}
