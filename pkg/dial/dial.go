// Package dial opens gRPC client connections the way every slotkv service
// and client should: one place decides tracing, the cluster token,
// transport security, keepalive and message-size limits, so a service
// cannot forget one of them on some code path.
package dial

import (
	"crypto/tls"
	"fmt"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

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

// Options configures New. The zero value is a plaintext, untraced-but-
// propagating connection without a token.
type Options struct {
	// Token is the cluster token sent with every RPC; "" sends none.
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
	}
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
