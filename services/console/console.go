package console

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"

	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/server"
)

// ServiceName names the service in logs and traces.
const ServiceName = "slotkv-console"

// Defaults.
const (
	DefaultSampleInterval = time.Second
	DefaultHistory        = 300
	DefaultSessionTTL     = 12 * time.Hour
	// jobListInterval is how often the job lists are fetched again to find
	// jobs started elsewhere (slotkvctl, curl); a job's progress comes from
	// its watch stream in between.
	jobListInterval = 2 * time.Second
	// watchInterval is the interval asked of the watch streams.
	watchInterval = 500 * time.Millisecond
	// callTimeout bounds one unary call to a service.
	callTimeout = 10 * time.Second
	// etcdCallTimeout bounds one read of etcd (the node registrations, the
	// topology before the watch has one), so that etcd down shows as an
	// error within a few samples.
	etcdCallTimeout = 3 * time.Second
)

// Options configures the console. DefaultOptions gives the defaults.
type Options struct {
	// Common: listen addresses (gRPC serves health and reflection only;
	// HTTPAddr the pages), shutdown bound, tokens (the admin token opens
	// the pages through the login form and is sent to the services), TLS
	// (PeerTLS dials the services and scrapes the nodes' /metrics) and the
	// control plane (Etcd, required): the topology is watched in etcd and
	// the node list is the registrations there (live) and the topology's
	// nodes without one (dead).
	server.Common
	// Router, Migrator and Downloader are the services' gRPC addresses;
	// "" leaves that part of the console out.
	Router, Migrator, Downloader string
	// RouterHTTP, MigratorHTTP and DownloaderHTTP are the services' REST
	// addresses (host:port or a URL), for the links to their OpenAPI
	// documents; the storage nodes' come from the topology.
	RouterHTTP, MigratorHTTP, DownloaderHTTP string
	// SampleInterval between two samples of the cluster and its traffic.
	SampleInterval time.Duration
	// History is the number of traffic samples kept per node.
	History int
	// SessionTTL is how long a login lasts.
	SessionTTL time.Duration

	Logger         *slog.Logger
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	// MetricsHandler, when set, serves GET /metrics (admin token).
	MetricsHandler http.Handler
	// OnListen is called with the bound addresses.
	OnListen func(grpcAddr, httpAddr net.Addr)
}

// DefaultOptions returns the defaults.
func DefaultOptions() Options {
	return Options{
		Common:         server.Common{GRPCAddr: "127.0.0.1:9095", HTTPAddr: "127.0.0.1:8060", ShutdownTimeout: 15 * time.Second},
		SampleInterval: DefaultSampleInterval,
		History:        DefaultHistory,
		SessionTTL:     DefaultSessionTTL,
	}
}

// Console is a running console's state: connections, the hub of views,
// the sessions. Run builds one; tests build one with New and serve
// Handler themselves.
type Console struct {
	o        Options
	log      *slog.Logger
	hub      *hub
	sessions *sessions
	http     *http.Client // the nodes' /metrics

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
	etcd  *clientv3.Client // nil without Options.Etcd

	cluster    *clusterPoller
	migrations *tracker[migrationView]
	bulkloads  *tracker[bulkView]
	totals     *streamTotals
}

// New checks o and builds a console; Start its loops with Loop.
func New(o Options) (*Console, error) {
	if !o.Etcd.Enabled() {
		return nil, errors.New("console: --etcd-endpoints is required: the console finds the cluster (topology, nodes) in etcd")
	}
	if o.HTTPAddr == "" {
		return nil, errors.New("console: --http-addr is empty: the console is served over HTTP")
	}
	if o.SampleInterval <= 0 {
		o.SampleInterval = DefaultSampleInterval
	}
	if o.History <= 0 {
		o.History = DefaultHistory
	}
	if o.SessionTTL <= 0 {
		o.SessionTTL = DefaultSessionTTL
	}
	if o.TracerProvider == nil {
		o.TracerProvider = noop.NewTracerProvider()
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	c := &Console{
		o:        o,
		log:      log.With("service", ServiceName),
		hub:      newHub(),
		sessions: newSessions(o.SessionTTL),
		conns:    map[string]*grpc.ClientConn{},
		totals:   newStreamTotals(),
	}
	c.http = &http.Client{
		Timeout:   callTimeout,
		Transport: otelhttp.NewTransport(&http.Transport{TLSClientConfig: o.PeerTLS, MaxIdleConnsPerHost: 4}, otelhttp.WithTracerProvider(o.TracerProvider)),
	}
	// Dial does not wait for etcd: the cluster page says so while it does
	// not answer.
	cli, store, err := o.Etcd.Dial(context.Background(), c.log)
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	c.etcd = cli
	c.cluster = newClusterPoller(c, store)
	if o.Migrator != "" {
		c.migrations = newMigrationTracker(c)
	}
	if o.Downloader != "" {
		c.bulkloads = newBulkTracker(c)
	}
	return c, nil
}

// conn is the shared connection to a service at addr, with the admin token.
func (c *Console) conn(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cc, ok := c.conns[addr]; ok {
		return cc, nil
	}
	cc, err := dial.New(addr, dial.Options{Token: c.o.Tokens.Admin, TLS: c.o.PeerTLS, TracerProvider: c.o.TracerProvider, MeterProvider: c.o.MeterProvider})
	if err != nil {
		return nil, err
	}
	c.conns[addr] = cc
	return cc, nil
}

// Close closes the connections.
func (c *Console) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for a, cc := range c.conns {
		_ = cc.Close()
		delete(c.conns, a)
	}
	c.http.CloseIdleConnections()
	if c.etcd != nil {
		_ = c.etcd.Close()
		c.etcd = nil
	}
}

// etcdEndpoints names the control plane in messages.
func (c *Console) etcdEndpoints() string { return strings.Join(c.o.Etcd.Endpoints, ",") }

// Loop runs the background loops (cluster and traffic samples, job lists
// and watches) until ctx ends.
func (c *Console) Loop(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { c.cluster.run(ctx) })
	if c.migrations != nil {
		wg.Go(func() { c.migrations.run(ctx) })
	}
	if c.bulkloads != nil {
		wg.Go(func() { c.bulkloads.run(ctx) })
	}
	wg.Wait()
}

// Run serves the console until ctx ends.
func Run(ctx context.Context, o Options) error {
	c, err := New(o)
	if err != nil {
		return err
	}
	defer c.Close()
	o = c.o
	if err := server.CheckExposure(o.GRPCAddr, o.HTTPAddr, !o.Tokens.Open(), o.Insecure); err != nil {
		return fmt.Errorf("console: %w", err)
	}
	httpLis, err := net.Listen("tcp", o.HTTPAddr)
	if err != nil {
		return fmt.Errorf("console: listen HTTP on %s: %w", o.HTTPAddr, err)
	}
	// The gRPC port serves the standard health service and reflection, as
	// every slotkv service's does; the console has no API of its own there.
	gctx, stopGRPC := context.WithCancel(ctx)
	defer stopGRPC()
	gs, err := server.Start(gctx, server.Options{
		Name: ServiceName, GRPCAddr: o.GRPCAddr, Tokens: o.Tokens, Insecure: o.Insecure,
		TLS: o.TLS, ClientTLS: o.ClientTLS, TracerProvider: o.TracerProvider, MeterProvider: o.MeterProvider,
		Logger: o.Logger, ShutdownTimeout: o.ShutdownTimeout,
	})
	if err != nil {
		_ = httpLis.Close()
		return err
	}
	srv := &http.Server{
		Handler:           c.Handler(),
		TLSConfig:         o.TLS,
		ReadHeaderTimeout: server.ReadHeaderTimeout,
		IdleTimeout:       server.HTTPIdleTimeout,
		ErrorLog:          slog.NewLogLogger(c.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	loopCtx, stopLoops := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { c.Loop(loopCtx) })
	serveErr := make(chan error, 1)
	wg.Go(func() {
		var err error
		if o.TLS != nil {
			err = srv.ServeTLS(httpLis, "", "")
		} else {
			err = srv.Serve(httpLis)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			serveErr <- fmt.Errorf("console: serve HTTP on %s: %w", httpLis.Addr(), err)
		}
	})
	c.log.Info("listening", "http", httpLis.Addr().String(), "grpc", gs.GRPCAddr().String(),
		"router", o.Router, "migrator", o.Migrator, "downloader", o.Downloader,
		"etcd", c.etcdEndpoints(), "auth", !o.Tokens.Open())
	if o.OnListen != nil {
		o.OnListen(gs.GRPCAddr(), httpLis.Addr())
	}
	select {
	case <-ctx.Done():
	case err = <-serveErr:
	case <-gs.Done():
		// gs.Wait below reports why.
	}
	// Server-sent event streams never end on their own: stop the loops and
	// the hub first, so Shutdown does not wait for them.
	stopLoops()
	c.hub.close()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), max(o.ShutdownTimeout, time.Second))
	defer cancel()
	if serr := srv.Shutdown(sctx); serr != nil {
		_ = srv.Close()
	}
	stopGRPC()
	wg.Wait()
	return errors.Join(err, gs.Wait())
}

// scheme is the scheme of the services' HTTP ports.
func (c *Console) scheme() string {
	if c.o.PeerTLS != nil {
		return "https"
	}
	return "http"
}

// baseURL turns a REST address (host:port or a URL) into a URL without a
// trailing slash; "" stays "".
func (c *Console) baseURL(addr string) string {
	if addr == "" || strings.Contains(addr, "://") {
		return strings.TrimSuffix(addr, "/")
	}
	return c.scheme() + "://" + addr
}
