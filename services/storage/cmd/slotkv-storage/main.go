// Command slotkv-storage runs one slotkv storage node. Every flag has an
// environment fallback (SLOTKV_...); run with -h for the list.
//
//	slotkv-storage --node-id n1 --data-dir ./.data/n1 --grpc-addr 127.0.0.1:7101 --http-addr 127.0.0.1:8101
//
// With --listen-file the node writes {"grpc":"host:port","http":"host:port"}
// there (atomically) once both listeners are bound, so scripts and tests can
// start it on port 0 and learn the real ports.
//
// `slotkv-storage healthcheck [--url URL]` exits 0 when a running service's
// /readyz answers 2xx, for container health checks (the image has no
// curl); the port comes from $SLOTKV_HTTP_ADDR or the --http-addr default.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/slotkv/slotkv/pkg/flagenv"
	"github.com/slotkv/slotkv/pkg/server"
	"github.com/slotkv/slotkv/pkg/version"
	"github.com/slotkv/slotkv/services/storage"
)

const serviceName = "slotkv-storage"

func main() {
	if code, ok := server.HealthcheckCommand(os.Args[1:], storage.DefaultOptions().HTTPAddr); ok {
		os.Exit(code)
	}
	ctx, stop := server.SignalContext()
	code := run(ctx, os.Args[1:], os.LookupEnv, os.Stderr)
	stop()
	os.Exit(code)
}

// config is what the command line and environment give.
type config struct {
	opts        storage.Options
	logLevel    slog.Level
	listenFile  string
	sampleRatio float64
	profiling   *server.Profiling
	showVersion bool
}

func parse(args []string, lookup func(string) (string, bool), out io.Writer) (config, error) {
	d := storage.DefaultOptions()
	fs := flag.NewFlagSet(serviceName, flag.ContinueOnError)
	prof := server.ProfilingFlags(fs)
	fs.SetOutput(out)
	var (
		nodeID     = flagenv.String(fs, "node-id", "SLOTKV_NODE_ID", "", "stable id of this node (required; recorded in the data directory on first start)")
		dataDir    = flagenv.String(fs, "data-dir", "SLOTKV_DATA_DIR", d.DataDir, "Badger data directory")
		grpcAddr   = flagenv.String(fs, "grpc-addr", "SLOTKV_GRPC_ADDR", d.GRPCAddr, "gRPC listen address (port 0 picks a free port)")
		httpAddr   = flagenv.String(fs, "http-addr", "SLOTKV_HTTP_ADDR", d.HTTPAddr, `REST/probe listen address ("" disables HTTP)`)
		advGRPC    = flagenv.String(fs, "advertise-grpc", "SLOTKV_ADVERTISE_GRPC", "", "gRPC address reported to others (default: the bound address)")
		advHTTP    = flagenv.String(fs, "advertise-http", "SLOTKV_ADVERTISE_HTTP", "", "HTTP address reported to others (default: the bound address)")
		token      = flagenv.String(fs, "token", "SLOTKV_TOKEN", "", "cluster token every RPC must carry (empty: open)")
		maxKey     = flagenv.Int(fs, "max-key-bytes", "SLOTKV_MAX_KEY_BYTES", d.MaxKeyBytes, "largest key accepted, in bytes")
		maxValue   = flagenv.Int(fs, "max-value-bytes", "SLOTKV_MAX_VALUE_BYTES", d.MaxValueBytes, "largest value accepted, in bytes")
		maxBatch   = flagenv.Int(fs, "max-batch", "SLOTKV_MAX_BATCH", d.MaxBatch, "most keys in one batch get or batch write, and records in one ingest batch")
		maxIngest  = flagenv.Int(fs, "max-ingest-bytes", "SLOTKV_MAX_INGEST_BYTES", d.MaxIngestBytes, "most key and value bytes in one ingest (bulk-load) batch")
		maxImport  = flagenv.Int(fs, "max-import-streams", "SLOTKV_MAX_IMPORT_STREAMS", d.MaxImportStreams, "most migration import streams accepted at once (one more gets ResourceExhausted)")
		syncWrites = flagenv.Bool(fs, "sync-writes", "SLOTKV_SYNC_WRITES", false, "fsync every write before acknowledging it")
		memtable   = flagenv.Int64(fs, "memtable-bytes", "SLOTKV_MEMTABLE_BYTES", 0, "Badger memtable size (0: 64 MiB)")
		blockCache = flagenv.Int64(fs, "block-cache-bytes", "SLOTKV_BLOCK_CACHE_BYTES", 0, "Badger block cache size (0: 256 MiB)")
		shutdown   = flagenv.Duration(fs, "shutdown-timeout", "SLOTKV_SHUTDOWN_TIMEOUT", 15*time.Second, "bound on graceful shutdown")
		listenFile = flagenv.String(fs, "listen-file", "SLOTKV_LISTEN_FILE", "", `write {"grpc":...,"http":...} here once listening`)
		sample     = flagenv.Float64(fs, "trace-sample-ratio", "SLOTKV_TRACE_SAMPLE_RATIO", 1, "fraction of new traces sampled (0-1)")
		showVer    = fs.Bool("version", false, "print the version and exit")
	)
	c := config{logLevel: slog.LevelInfo}
	flagenv.TextVar(fs, &c.logLevel, "log-level", "SLOTKV_LOG_LEVEL", slog.LevelInfo, "log level: debug, info, warn, error")
	if err := flagenv.ParseLookup(fs, args, lookup); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	c.opts = storage.Options{
		NodeID: *nodeID, DataDir: *dataDir,
		GRPCAddr: *grpcAddr, HTTPAddr: *httpAddr,
		AdvertiseGRPC: *advGRPC, AdvertiseHTTP: *advHTTP,
		Token:       *token,
		MaxKeyBytes: *maxKey, MaxValueBytes: *maxValue, MaxBatch: *maxBatch,
		MaxIngestBytes: *maxIngest, MaxImportStreams: *maxImport,
		SyncWrites:    *syncWrites,
		MemTableBytes: *memtable, BlockCacheBytes: *blockCache,
		ShutdownTimeout: *shutdown,
	}
	c.listenFile, c.sampleRatio, c.showVersion, c.profiling = *listenFile, *sample, *showVer, prof
	return c, nil
}

func run(ctx context.Context, args []string, lookup func(string) (string, bool), stderr io.Writer) int {
	c, err := parse(args, lookup, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", serviceName, err)
		return 2
	}
	if c.showVersion {
		fmt.Fprintln(stderr, serviceName, version.Version)
		return 0
	}
	cfg := server.MainConfig{Name: serviceName, LogLevel: c.logLevel, SampleRatio: c.sampleRatio, ListenFile: c.listenFile, Stderr: stderr, Profiling: c.profiling}
	return server.Main(ctx, cfg, func(env server.Env) error {
		o := c.opts
		o.Logger, o.TracerProvider, o.OnListen = env.Logger, env.TracerProvider, env.OnListen
		o.MeterProvider, o.MetricsHandler = env.MeterProvider, env.MetricsHandler
		env.Logger.Info("storage node", "node_id", o.NodeID, "data_dir", o.DataDir)
		return storage.Run(env.Ctx, o)
	})
}
