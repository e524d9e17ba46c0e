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
	opts  storage.Options
	flags server.Flags // the shared flags; opts.Common comes from them
}

func parse(args []string, lookup func(string) (string, bool), out io.Writer) (config, error) {
	d := storage.DefaultOptions()
	fs := flag.NewFlagSet(serviceName, flag.ContinueOnError)
	fs.SetOutput(out)
	var c config
	c.flags.Register(fs, d.Common)
	var (
		nodeID     = flagenv.String(fs, "node-id", "SLOTKV_NODE_ID", "", "stable id of this node (required; recorded in the data directory on first start)")
		dataDir    = flagenv.String(fs, "data-dir", "SLOTKV_DATA_DIR", d.DataDir, "Badger data directory")
		respAddr   = flagenv.String(fs, "resp-addr", "SLOTKV_RESP_ADDR", "", "serve the Redis protocol (cluster mode: -MOVED, -TRYAGAIN, CLUSTER SLOTS) for this node's slots on this address; empty = off")
		advRESP    = flagenv.String(fs, "advertise-resp", "SLOTKV_ADVERTISE_RESP", "", "RESP address reported to others and to Redis cluster clients (default: the bound address)")
		maxKey     = flagenv.Int(fs, "max-key-bytes", "SLOTKV_MAX_KEY_BYTES", d.MaxKeyBytes, "largest key accepted, in bytes")
		maxValue   = flagenv.Int(fs, "max-value-bytes", "SLOTKV_MAX_VALUE_BYTES", d.MaxValueBytes, "largest value accepted, in bytes")
		maxBatch   = flagenv.Int(fs, "max-batch", "SLOTKV_MAX_BATCH", d.MaxBatch, "most keys in one batch get or batch write, and records in one ingest batch")
		maxIngest  = flagenv.Int(fs, "max-ingest-bytes", "SLOTKV_MAX_INGEST_BYTES", d.MaxIngestBytes, "most key and value bytes in one ingest (bulk-load) batch")
		maxImport  = flagenv.Int(fs, "max-import-streams", "SLOTKV_MAX_IMPORT_STREAMS", d.MaxImportStreams, "most migration import streams accepted at once (one more gets ResourceExhausted)")
		syncWrites = flagenv.Bool(fs, "sync-writes", "SLOTKV_SYNC_WRITES", false, "fsync every write before acknowledging it")
		memtable   = flagenv.Int64(fs, "memtable-bytes", "SLOTKV_MEMTABLE_BYTES", 0, "Badger memtable size (0: 64 MiB)")
		blockCache = flagenv.Int64(fs, "block-cache-bytes", "SLOTKV_BLOCK_CACHE_BYTES", 0, "Badger block cache size (0: 256 MiB)")
		valueThres = flagenv.Int64(fs, "value-threshold", "SLOTKV_VALUE_THRESHOLD", 0, "values of this many bytes and more live in Badger's value log, with a pointer in the LSM tree (0: 256; 1048576 keeps every value in the tree)")
		vlogGC     = flagenv.Duration(fs, "value-log-gc-interval", "SLOTKV_VALUE_LOG_GC_INTERVAL", 0, "how often the value log's garbage (overwritten, deleted, migrated-away values) is collected (0: 5m; negative: never)")
		writeback  = flagenv.Duration(fs, "writeback-interval", "SLOTKV_WRITEBACK_INTERVAL", 0, "how often the dirty pages of Badger's logs are handed to the disk in the background, so that a sync (a migration's hand-off, --sync-writes) has little left to write (0: 100ms; negative: never)")
		heldKeys   = flagenv.Int(fs, "held-keys-bytes", "SLOTKV_HELD_KEYS_BYTES", 0, "memory one migration's snapshot may spend recording the keys it sends, so that the cleanup after the hand-off need not read them again (0: 64 MiB; negative: never, the cleanup reads them)")
		leaseTTL   = flagenv.Duration(fs, "etcd-lease-ttl", "SLOTKV_ETCD_LEASE_TTL", d.EtcdLeaseTTL, "lease of this node's registration in etcd: a node that stops renewing it is listed dead this long after (with --etcd-endpoints)")
	)
	if err := flagenv.ParseLookup(fs, args, lookup); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if err := c.flags.Finish(); err != nil {
		return c, err
	}
	c.opts = d
	c.opts.Common = c.flags.Common
	c.opts.NodeID, c.opts.DataDir = *nodeID, *dataDir
	c.opts.RESPAddr, c.opts.AdvertiseRESP = *respAddr, *advRESP
	c.opts.MaxKeyBytes, c.opts.MaxValueBytes, c.opts.MaxBatch = *maxKey, *maxValue, *maxBatch
	c.opts.MaxIngestBytes, c.opts.MaxImportStreams = *maxIngest, *maxImport
	c.opts.SyncWrites = *syncWrites
	c.opts.MemTableBytes, c.opts.BlockCacheBytes = *memtable, *blockCache
	c.opts.HeldKeysBytes = *heldKeys
	c.opts.ValueThreshold, c.opts.ValueLogGCInterval, c.opts.WritebackInterval = *valueThres, *vlogGC, *writeback
	if *leaseTTL < time.Second {
		return c, fmt.Errorf("--etcd-lease-ttl %v must be at least 1s", *leaseTTL)
	}
	c.opts.EtcdLeaseTTL = *leaseTTL
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
	if c.flags.ShowVersion {
		fmt.Fprintln(stderr, serviceName, version.Version)
		return 0
	}
	return server.Main(ctx, c.flags.MainConfig(serviceName, stderr), func(env server.Env) error {
		o := c.opts
		o.Logger, o.TracerProvider, o.OnListen = env.Logger, env.TracerProvider, env.OnListen
		o.OnListenRESP = env.OnListenRESP
		o.MeterProvider, o.MetricsHandler = env.MeterProvider, env.MetricsHandler
		env.Logger.Info("storage node", "node_id", o.NodeID, "data_dir", o.DataDir)
		return storage.Run(env.Ctx, o)
	})
}
