package downloader

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

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/slotkv/slotkv/gen"
	downloaderv1 "github.com/slotkv/slotkv/gen/slotkv/downloader/v1"
	"github.com/slotkv/slotkv/pkg/dataset"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/route"
	"github.com/slotkv/slotkv/pkg/server"
	"github.com/slotkv/slotkv/pkg/topostore"
	"github.com/slotkv/slotkv/services/downloader/internal/bulkload"
	"github.com/slotkv/slotkv/services/downloader/internal/grpcapi"
)

// ServiceName names the service in logs and traces.
const ServiceName = "slotkv-downloader"

// Options configures the downloader service. DefaultOptions gives the
// defaults; zero numeric fields also take them.
type Options struct {
	// Common: listen addresses (HTTPAddr "" turns REST, /healthz and
	// /readyz off), shutdown bound, token (required from callers, sent to
	// storage) and TLS (PeerTLS dials the storage nodes), set by the
	// shared flags (server.Flags).
	server.Common
	// DataDir holds the downloads (jobs/<id>/), and without etcd the job
	// store (db/) and the runtime settings; with etcd those are in etcd.
	DataDir string

	// AllowedPrefixes: manifest and data file URLs must start with one of
	// them (at a boundary: "http://127.0.0.1" allows
	// "http://127.0.0.1:8000/x" but not "http://127.0.0.1.evil/"). Empty
	// refuses every URL.
	AllowedPrefixes []string
	// AllowFileURLs enables file:// URLs (which still need an allowed
	// prefix such as "file:///srv/datasets/").
	AllowFileURLs    bool
	MaxManifestBytes int64 // cap on the manifest's size
	MaxFileBytes     int64 // cap on one data file's size
	MaxFiles         int   // cap on the files of a manifest

	MaxDownloads            int    // downloads at once over all jobs (runtime setting)
	MaxDownloadsPerNode     int    // downloads at once bound for one storage node (runtime setting)
	BandwidthBytesPerSecond uint64 // shared download bandwidth; 0 unlimited (runtime setting)

	IngestBatchRecords int           // records per Ingest batch
	IngestBatchBytes   int           // key+value bytes per Ingest batch at most
	IngestConcurrency  int           // ingest streams per job at once
	IngestWindow       int           // batches in flight per ingest stream
	NodeRetryTimeout   time.Duration // how long an unavailable node is retried before the file fails

	// HTTP client: retries (exponential backoff between RetryWaitMin and
	// RetryWaitMax on connection errors, 429 and 5xx), the time to the
	// response headers and the longest silence within a body.
	HTTPRetryMax     int
	HTTPRetryWaitMin time.Duration
	HTTPRetryWaitMax time.Duration
	HTTPTimeout      time.Duration
	HTTPStallTimeout time.Duration

	// Statfs returns the free bytes under path (tests fake a full disk);
	// nil means syscall.Statfs.
	Statfs func(path string) (free uint64, err error)

	// ProgressInterval between progress log lines (and saves) of a job.
	ProgressInterval time.Duration
	// MaxRunningJobs caps the bulk-load jobs running at once; StartJob and
	// ResumeJob beyond it get ResourceExhausted naming the limit.
	MaxRunningJobs int

	Logger         *slog.Logger
	TracerProvider trace.TracerProvider
	// MeterProvider receives the RPC metrics and the service's own; nil
	// means the global one (a no-op unless installed).
	MeterProvider metric.MeterProvider
	// MetricsHandler, when set, serves GET /metrics on the HTTP port.
	MetricsHandler http.Handler
	// OnListen is called with the bound addresses (httpAddr nil without HTTP).
	OnListen func(grpcAddr, httpAddr net.Addr)
}

// DefaultOptions returns the defaults.
func DefaultOptions() Options {
	c := bulkload.DefaultConfig()
	return Options{
		Common:              server.Common{GRPCAddr: "127.0.0.1:9094", HTTPAddr: "127.0.0.1:8084", ShutdownTimeout: 15 * time.Second},
		DataDir:             "./data/downloader",
		MaxManifestBytes:    dataset.DefaultMaxManifestBytes,
		MaxFileBytes:        dataset.DefaultMaxFileBytes,
		MaxFiles:            dataset.DefaultMaxFiles,
		MaxDownloads:        c.MaxDownloads,
		MaxDownloadsPerNode: c.MaxDownloadsPerNode,
		IngestBatchRecords:  c.IngestBatchRecords,
		IngestBatchBytes:    c.IngestBatchBytes,
		IngestConcurrency:   c.IngestConcurrency,
		IngestWindow:        c.IngestWindow,
		NodeRetryTimeout:    c.NodeRetryTimeout,
		HTTPRetryMax:        c.HTTPRetryMax,
		HTTPRetryWaitMin:    c.HTTPRetryWaitMin,
		HTTPRetryWaitMax:    c.HTTPRetryWaitMax,
		HTTPTimeout:         c.HTTPTimeout,
		HTTPStallTimeout:    c.HTTPStallTimeout,
		ProgressInterval:    c.ProgressInterval,
		MaxRunningJobs:      c.MaxRunningJobs,
	}
}

// Run serves the downloader until ctx ends. On shutdown running jobs stop
// where they are, keep their state and continue at the next start.
func Run(ctx context.Context, o Options) error {
	base := o.Logger
	if base == nil {
		base = slog.Default()
	}
	log := base.With("service", ServiceName)
	if !o.Etcd.Enabled() {
		return errors.New("downloader: --etcd-endpoints is required (the topology lives in etcd)")
	}
	if o.DataDir == "" {
		return errors.New("downloader: no data directory given (--data-dir)")
	}
	var (
		store *topostore.Store
		cli   *clientv3.Client
	)
	if o.Etcd.Enabled() {
		// The control plane's topology, watched.
		// Dial does not wait for etcd; the service is ready once the watch
		// has delivered a topology.
		c, st, err := o.Etcd.Dial(ctx, log)
		if err != nil {
			return fmt.Errorf("downloader: %w", err)
		}
		defer c.Close()
		store, cli = st, c
	}
	rt, err := route.New(route.Options{
		Store: store,
		Dial: func(addr string) (*grpc.ClientConn, error) {
			return dial.New(addr, dial.Options{Token: o.Tokens.Admin, TLS: o.PeerTLS, TracerProvider: o.TracerProvider, MeterProvider: o.MeterProvider})
		},
		Logger: log,
	})
	if err != nil {
		return fmt.Errorf("downloader: %w", err)
	}
	defer rt.Close()
	rctx, stopRouter := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { _ = rt.Run(rctx) })
	defer func() {
		stopRouter()
		wg.Wait()
	}()

	var replicated *bulkload.EtcdConfig
	if store != nil {
		// Replicas share the job records and settings in etcd; the
		// leader of the election runs the jobs (see replicate).
		replicated = &bulkload.EtcdConfig{Client: cli, JobsPrefix: store.Key(EtcdJobsPrefix), SettingsKey: store.Key(EtcdSettingsKey)}
	}
	m, err := bulkload.Open(bulkload.Config{
		DataDir:                 o.DataDir,
		Router:                  rt,
		AllowedPrefixes:         o.AllowedPrefixes,
		AllowFileURLs:           o.AllowFileURLs,
		MaxManifestBytes:        o.MaxManifestBytes,
		MaxFileBytes:            o.MaxFileBytes,
		MaxFiles:                o.MaxFiles,
		MaxDownloads:            o.MaxDownloads,
		MaxDownloadsPerNode:     o.MaxDownloadsPerNode,
		BandwidthBytesPerSecond: o.BandwidthBytesPerSecond,
		IngestBatchRecords:      o.IngestBatchRecords,
		IngestBatchBytes:        o.IngestBatchBytes,
		IngestConcurrency:       o.IngestConcurrency,
		IngestWindow:            o.IngestWindow,
		NodeRetryTimeout:        o.NodeRetryTimeout,
		HTTPRetryMax:            o.HTTPRetryMax,
		HTTPRetryWaitMin:        o.HTTPRetryWaitMin,
		HTTPRetryWaitMax:        o.HTTPRetryWaitMax,
		HTTPTimeout:             o.HTTPTimeout,
		HTTPStallTimeout:        o.HTTPStallTimeout,
		Statfs:                  o.Statfs,
		ProgressInterval:        o.ProgressInterval,
		MaxRunningJobs:          o.MaxRunningJobs,
		Logger:                  log,
		TracerProvider:          o.TracerProvider,
		MeterProvider:           o.MeterProvider,
		Etcd:                    replicated,
	})
	if err != nil {
		return fmt.Errorf("downloader: %w", err)
	}
	defer func() {
		if err := m.Close(); err != nil {
			log.Error("closing the job store failed", "err", err)
		}
	}()
	// Jobs stop as soon as shutdown begins, in parallel with the servers
	// draining, so watches end and nothing is half-written at exit.
	defer context.AfterFunc(ctx, m.Shutdown)()

	onListen := o.OnListen
	var serverOpts []grpc.ServerOption
	if replicated != nil {
		r := newReplica(cli, store, m, o, log)
		defer r.stop() // before the Manager closes (deferred earlier)
		serverOpts = append(serverOpts, grpc.ChainUnaryInterceptor(r.gate.Unary))
		onListen = func(g, h net.Addr) {
			r.campaign(ctx, o.AdvertisedGRPC(g))
			if o.OnListen != nil {
				o.OnListen(g, h)
			}
		}
	}

	svc := grpcapi.New(m)
	log.Info("starting", "topology", rt.Source(), "data_dir", o.DataDir, "replicated", replicated != nil,
		"allowed_prefixes", strings.Join(o.AllowedPrefixes, ","), "allow_file_urls", o.AllowFileURLs)
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
		OpenAPI:         gen.DownloaderOpenAPI,
		Logger:          base,
		ShutdownTimeout: o.ShutdownTimeout,
		Register:        svc.Register,
		Gateway: func(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error {
			return downloaderv1.RegisterBulkLoadServiceHandler(ctx, mux, conn)
		},
		Ready:         rt.CheckReady,
		OnListen:      onListen,
		ServerOptions: serverOpts,
	})
}
