// Package dial opens gRPC client connections the way every slotkv service
// and client should: one place decides tracing, the cluster token,
// transport security, keepalive, connection backoff and message-size
// limits, so a service cannot forget one of them on some code path.
package dial

import (
	"context"
	"crypto/tls"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/slotkv/slotkv/pkg/auth"
	"github.com/slotkv/slotkv/pkg/telemetry"
)

// MaxMsgSize is the default limit, in bytes, for one gRPC message in either
// direction, on clients (here) and servers (pkg/server). gRPC's own default
// of 4 MiB receive is too small for migration and ingest batches and large
// multi-gets; 64 MiB still bounds the memory one message can take.
const MaxMsgSize = 64 << 20

// Keepalive settings for client connections. Pings every KeepaliveTime on
// an idle connection detect a dead peer (a killed node, a dropped NAT entry)
// within KeepaliveTime+KeepaliveTimeout instead of at the next RPC's
// deadline. Servers (pkg/server) permit pings this frequent; a server whose
// enforcement minimum were longer would close the connection with
// "too_many_pings".
const (
	KeepaliveTime    = 30 * time.Second
	KeepaliveTimeout = 10 * time.Second
)

// Connection backoff: after a failed connection attempt gRPC waits
// ConnectBaseDelay, then up to ConnectMaxDelay (×1.6 each time, ±20%)
// before the next. gRPC's own maximum of 120 s would leave a connection to
// a node that was down for a minute failing with the last attempt's
// "connection refused" for up to two minutes after the node is back.
// Besides, a call that fails on a connection in TRANSIENT_FAILURE resets
// its backoff (at most once per ConnectResetInterval), so a retry after a
// backoff of the caller (pkg/route) finds the connection made again as soon
// as the node answers, whatever the connect backoff had grown to.
const (
	ConnectBaseDelay     = 100 * time.Millisecond
	ConnectMaxDelay      = 5 * time.Second
	ConnectResetInterval = 100 * time.Millisecond
	// MinConnectTimeout is gRPC's default: the time one connection
	// attempt is given.
	MinConnectTimeout = 20 * time.Second
)

// Options configures New. The zero value is a plaintext, untraced-but-
// propagating connection without a token.
type Options struct {
	// Token is the bearer token sent with every RPC ("" sends none): a
	// service's admin token towards the storage nodes, a client's data or
	// admin token.
	Token string
	// TLS enables transport security with this configuration; nil means
	// plaintext.
	TLS *tls.Config
	// TracerProvider creates the client spans. Nil means a no-op provider:
	// no client spans, but the caller's trace context is still propagated
	// so the server's spans join the caller's trace.
	TracerProvider trace.TracerProvider
	// Propagator injects the trace context; nil means W3C tracecontext +
	// baggage (telemetry.Propagator).
	Propagator propagation.TextMapPropagator
	// MeterProvider receives otelgrpc's RPC metrics; nil means the global
	// provider (a no-op unless the process installed one).
	MeterProvider metric.MeterProvider
	// MaxMsgSize overrides MaxMsgSize for both directions when > 0.
	MaxMsgSize int
	// DialOptions are appended last, so they can add to or override the
	// defaults (e.g. a service config for load balancing).
	DialOptions []grpc.DialOption
}

// New creates a client connection to target with grpc.NewClient. Like
// grpc.NewClient it does not connect: the connection is made on the first
// RPC (or cc.Connect), so New only fails for a malformed target or options.
func New(target string, o Options) (*grpc.ClientConn, error) {
	cc, err := grpc.NewClient(target, DialOptions(o)...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", target, err)
	}
	return cc, nil
}

// DialOptions returns the options New uses, for callers that must call
// grpc.NewClient themselves (e.g. with a custom resolver).
func DialOptions(o Options) []grpc.DialOption {
	creds := insecure.NewCredentials()
	if o.TLS != nil {
		creds = credentials.NewTLS(o.TLS)
	}
	maxMsg := o.MaxMsgSize
	if maxMsg <= 0 {
		maxMsg = MaxMsgSize
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		// A stats handler, not interceptors: it sees every attempt
		// (retries, hedges) and the real wire status, and otelgrpc has
		// deprecated its interceptors.
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(OtelOptions(o.TracerProvider, o.Propagator, o.MeterProvider)...)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                KeepaliveTime,
			Timeout:             KeepaliveTimeout,
			PermitWithoutStream: true,
		}),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(maxMsg),
			grpc.MaxCallSendMsgSize(maxMsg),
		),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  ConnectBaseDelay,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   ConnectMaxDelay,
			},
			MinConnectTimeout: MinConnectTimeout,
		}),
	}
	r := &resetter{last: map[*grpc.ClientConn]time.Time{}}
	opts = append(opts, grpc.WithChainUnaryInterceptor(r.unary), grpc.WithChainStreamInterceptor(r.stream))
	if o.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(auth.PerRPCCredentials(o.Token)))
	}
	return append(opts, o.DialOptions...)
}

// OtelOptions returns the otelgrpc options shared by slotkv clients and
// servers: explicit providers and propagator (never the globals for
// tracing), and no spans for health checks and server reflection, which
// probes and tools call constantly and which would drown real traffic.
func OtelOptions(tp trace.TracerProvider, prop propagation.TextMapPropagator, mp metric.MeterProvider) []otelgrpc.Option {
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	if prop == nil {
		prop = telemetry.Propagator()
	}
	opts := []otelgrpc.Option{
		otelgrpc.WithTracerProvider(tp),
		otelgrpc.WithPropagators(prop),
		otelgrpc.WithFilter(filters.None(
			filters.HealthCheck(),
			filters.ServicePrefix("grpc.reflection."),
		)),
	}
	if mp != nil {
		opts = append(opts, otelgrpc.WithMeterProvider(mp))
	}
	return opts
}

// resetter resets the connect backoff of a connection when a call on it
// fails with Unavailable while it is in TRANSIENT_FAILURE: the call failed
// fast with the error of the last connection attempt, and the caller is
// about to retry, so the next attempt to connect should not wait for a
// backoff that grew while the node was down. At most once per
// ConnectResetInterval per connection, so callers failing on a node that
// is still down do not turn into a flood of connection attempts.
type resetter struct {
	mu   sync.Mutex
	last map[*grpc.ClientConn]time.Time
}

func (r *resetter) failed(cc *grpc.ClientConn, err error) {
	if cc == nil || status.Code(err) != codes.Unavailable || cc.GetState() != connectivity.TransientFailure {
		return
	}
	now := time.Now()
	r.mu.Lock()
	if now.Sub(r.last[cc]) < ConnectResetInterval {
		r.mu.Unlock()
		return
	}
	if len(r.last) >= 16 {
		// Options shared by many connections: forget the stale entries.
		for c, t := range r.last {
			if now.Sub(t) >= ConnectResetInterval {
				delete(r.last, c)
			}
		}
	}
	r.last[cc] = now
	r.mu.Unlock()
	cc.ResetConnectBackoff()
}

func (r *resetter) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	err := invoker(ctx, method, req, reply, cc, opts...)
	if err != nil {
		r.failed(cc, err)
	}
	return err
}

func (r *resetter) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		r.failed(cc, err)
	}
	return s, err
}
