// Package router is slotkv's public key-value service: it serves KVService
// over gRPC and REST and routes every key to the storage node that owns its
// slot, following topology changes (the etcd watch with --etcd-endpoints,
// else polls of the storage nodes; SLOT_MOVED either way), frozen slots and
// node restarts with bounded retries.
package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/slotkv/slotkv/gen"
	routerv1 "github.com/slotkv/slotkv/gen/slotkv/router/v1"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/limits"
	"github.com/slotkv/slotkv/pkg/route"
	"github.com/slotkv/slotkv/pkg/server"
	"github.com/slotkv/slotkv/services/router/internal/kv"
)

// ServiceName names the router in logs and traces.
const ServiceName = "slotkv-router"

// Options configures the router.
type Options struct {
	// Common: listen addresses (HTTPAddr "" turns REST and /healthz,
	// /readyz off), shutdown bound, token (required from callers and sent
	// to the storage nodes; "" leaves the router open) and TLS (PeerTLS
	// dials the storage nodes), set by the shared flags (server.Flags).
	server.Common
	// NamingFile, instead of the topology in etcd (Common.Etcd), routes by the layouts of a naming
	// file: one `address N/M [weight]` per line, N/M = partition N of M =
	// slots [N*16384/M, (N+1)*16384/M). Several layouts (values of M) may
	// be listed at once; reads go to one complete layout chosen in
	// proportion to its capacity, writes to every instance of every
	// complete layout. The file is reloaded when it changes.
	NamingFile string
	// NamingPoll is how often the naming file is checked for changes
	// (250ms when 0).
	NamingPoll time.Duration
	// Balancer picks the instance of a partition for reads in naming mode:
	// "rr", "random", "hash" (consistent hash of the first key) or
	// "latency" (default).
	Balancer string
	// HedgeDelay > 0 sends a backup read to another instance of the
	// partition when the first has not answered within it (naming mode,
	// partitions with several instances). HedgeMaxRatio caps backups as a
	// fraction of reads (0.1 when 0).
	HedgeDelay    time.Duration
	HedgeMaxRatio float64

	// CallTimeout is the deadline of a call whose caller set none.
	CallTimeout time.Duration
	// MaxRetries: in topology mode, the backoff rounds a read with
	// allow_partial gives an unavailable node before reporting it failed
	// (SLOT_MOVED, frozen slots and the unavailable nodes of other calls
	// are retried until the call's deadline); in naming-file mode, retries
	// of a read on other instances.
	MaxRetries int
	// MaxKeyBytes and MaxValueBytes are checked on every key and value
	// before anything is forwarded, so an oversized one is refused
	// (InvalidArgument naming the field) without crossing the cluster.
	// Zero means the shared default (pkg/limits), the storage nodes'
	// default; set them to the storage nodes' --max-key-bytes and
	// --max-value-bytes when those are changed.
	MaxKeyBytes, MaxValueBytes int

	// RESPAddr, when set, serves the Redis protocol in proxy mode (one
	// server owning every slot, pkg/resp) on this address; topology mode
	// only. OnListenRESP is called with the bound address before OnListen.
	RESPAddr     string
	OnListenRESP func(net.Addr)

	Logger         *slog.Logger
	TracerProvider trace.TracerProvider
	// MeterProvider receives the RPC metrics and the service's own; nil
	// means the global one (a no-op unless installed).
	MeterProvider metric.MeterProvider
	// MetricsHandler, when set, serves GET /metrics on the HTTP port.
	MetricsHandler http.Handler
	// OnListen is called once both ports are bound, with the bound addresses
	// (httpAddr nil when HTTP is off).
	OnListen func(grpcAddr, httpAddr net.Addr)
}

// DefaultOptions returns the defaults the binary starts from.
func DefaultOptions() Options {
	return Options{
		Balancer:      kv.BalancerLatency,
		HedgeMaxRatio: 0.1,
		// Loopback: beyond it only with a token or --insecure.
		Common:      server.Common{GRPCAddr: "127.0.0.1:9090", HTTPAddr: "127.0.0.1:8080"},
		CallTimeout: route.DefaultCallTimeout,
		MaxRetries:  route.DefaultMaxRetries,
	}
}

// Run serves the router until ctx ends, then shuts down gracefully. It is
// ready (/readyz, gRPC health) once it holds a topology: the first the etcd
// watch delivers (Common.Etcd, required without NamingFile); with NamingFile, once the file has at
// least one complete layout.
func Run(ctx context.Context, o Options) error {
	base := o.Logger
	if base == nil {
		base = slog.Default()
	}
	// pkg/server adds service=<Name> to its own lines.
	log := base.With("service", ServiceName)
	if err := (limits.KV{MaxKeyBytes: o.MaxKeyBytes, MaxValueBytes: o.MaxValueBytes}).Validate(); err != nil {
		return fmt.Errorf("router: %w", err)
	}
	dialer := func(addr string) (*grpc.ClientConn, error) {
		return dial.New(addr, dial.Options{Token: o.Tokens.Admin, TLS: o.PeerTLS, TracerProvider: o.TracerProvider, MeterProvider: o.MeterProvider})
	}
	obs, err := kv.NewObserver(o.TracerProvider, o.MeterProvider)
	if err != nil {
		return err
	}
	var (
		svc   *kv.Service
		ready func(context.Context) error
	)
	if o.NamingFile != "" {
		bal, err := kv.NewBalancer(o.Balancer)
		if err != nil {
			return fmt.Errorf("router: --balancer: %w", err)
		}
		if o.HedgeDelay < 0 || o.HedgeMaxRatio < 0 {
			return fmt.Errorf("router: --hedge-delay %s and --hedge-max-ratio %g must not be negative", o.HedgeDelay, o.HedgeMaxRatio)
		}
		n, err := kv.OpenNaming(kv.NamingOptions{
			Path: o.NamingFile, Poll: o.NamingPoll, Dial: dialer, Balancer: bal,
			HedgeDelay: o.HedgeDelay, HedgeMaxRatio: o.HedgeMaxRatio,
			MaxRetries: o.MaxRetries, CallTimeout: o.CallTimeout, Logger: log, Observer: obs,
		})
		if err != nil {
			return fmt.Errorf("router: %w", err)
		}
		defer n.Close()
		if o.Etcd.Enabled() {
			log.Info("routing by naming file: the topology in etcd is not used", "etcd", o.Etcd.Endpoints)
		}
		svc = kv.NewNamed(n)
		ready = func(context.Context) error { return n.Ready() }
		log.Info("routing by naming file", "path", o.NamingFile, "balancer", o.Balancer,
			"hedge_delay", o.HedgeDelay, "hedge_max_ratio", o.HedgeMaxRatio)
	} else {
		if !o.Etcd.Enabled() {
			return errors.New("router: --etcd-endpoints is required (the topology lives in etcd), or --naming-file")
		}
		// The control plane's topology, watched. Dial does not wait for
		// etcd; the router is ready once the watch has delivered a
		// topology.
		cli, store, err := o.Etcd.Dial(ctx, log)
		if err != nil {
			return fmt.Errorf("router: %w", err)
		}
		defer cli.Close()
		rt, err := route.New(route.Options{
			Store:       store,
			Dial:        dialer,
			CallTimeout: o.CallTimeout,
			MaxRetries:  o.MaxRetries,
			Logger:      log,
		})
		if err != nil {
			return fmt.Errorf("router: %w", err)
		}
		defer rt.Close()

		rctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { _ = rt.Run(rctx) })
		defer func() {
			cancel()
			wg.Wait()
		}()
		svc = kv.New(rt, obs)
		ready = rt.CheckReady
	}

	lim := limits.KV{MaxKeyBytes: o.MaxKeyBytes, MaxValueBytes: o.MaxValueBytes}.WithDefaults()
	svc.SetLimits(lim)
	if o.RESPAddr != "" {
		stop, err := serveRESP(ctx, o, svc, lim, log)
		if err != nil {
			return err
		}
		defer stop()
	}

	return server.Run(ctx, server.Options{
		Name:            ServiceName,
		GRPCAddr:        o.GRPCAddr,
		HTTPAddr:        o.HTTPAddr,
		Tokens:          o.Tokens,
		Insecure:        o.Insecure,
		TLS:             o.TLS,
		ClientTLS:       o.ClientTLS,
		TracerProvider:  o.TracerProvider,
		MeterProvider:   o.MeterProvider,
		MetricsHandler:  o.MetricsHandler,
		OpenAPI:         gen.RouterOpenAPI,
		Logger:          base,
		ShutdownTimeout: o.ShutdownTimeout,
		// A maximal key and value fit one message and one REST body, also
		// with limits raised above the shared defaults.
		MaxRecvMsgSize: max(dial.MaxMsgSize, lim.MaxValueBytes+lim.MaxKeyBytes+(1<<20)),
		MaxBodyBytes:   server.BodyBytesFor(lim.MaxValueBytes),
		Register:       func(s *grpc.Server) { svc.Register(s) },
		Gateway: func(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error {
			return routerv1.RegisterKVServiceHandler(ctx, mux, conn)
		},
		Ready:    ready,
		OnListen: o.OnListen,
	})
}
