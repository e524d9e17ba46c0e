// Command slotkv-downloader runs slotkv's bulk-load service: it loads
// datasets built by slotkv-dataset, fetched over HTTP(S), into the cluster.
//
// Every flag has an environment fallback (SLOTKV_*); see -h.
//
// `slotkv-downloader healthcheck [--url URL]` exits 0 when a running service's
// /readyz answers 2xx, for container health checks (the image has no
// curl); the port comes from $SLOTKV_HTTP_ADDR or the --http-addr default.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/slotkv/slotkv/pkg/flagenv"
	"github.com/slotkv/slotkv/pkg/server"
	"github.com/slotkv/slotkv/pkg/version"
	"github.com/slotkv/slotkv/services/downloader"
)

const serviceName = downloader.ServiceName

func main() {
	if code, ok := server.HealthcheckCommand(os.Args[1:], downloader.DefaultOptions().HTTPAddr); ok {
		os.Exit(code)
	}
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	def := downloader.DefaultOptions()
	fs := flag.NewFlagSet(serviceName, flag.ContinueOnError)
	var common server.Flags
	common.Register(fs, def.Common)
	var (
		dataDir      = flagenv.String(fs, "data-dir", "SLOTKV_DATA_DIR", def.DataDir, "directory of the downloads, and of the job store and runtime settings without --etcd-endpoints (with it they are in etcd, shared by the replicas)")
		prefixes     = flagenv.String(fs, "allowed-prefixes", "SLOTKV_ALLOWED_PREFIXES", "", "comma-separated URL prefixes manifests and data files may be fetched from (e.g. http://127.0.0.1,https://datasets.example.com/); none = every URL is refused")
		allowFile    = flagenv.Bool(fs, "allow-file-urls", "SLOTKV_ALLOW_FILE_URLS", false, "allow file:// URLs (still limited to --allowed-prefixes, e.g. file:///srv/datasets/)")
		maxManifest  = flagenv.Int64(fs, "max-manifest-bytes", "SLOTKV_MAX_MANIFEST_BYTES", def.MaxManifestBytes, "largest manifest accepted")
		maxFile      = flagenv.Int64(fs, "max-file-bytes", "SLOTKV_MAX_FILE_BYTES", def.MaxFileBytes, "largest data file accepted")
		maxFiles     = flagenv.Int(fs, "max-files", "SLOTKV_MAX_FILES", def.MaxFiles, "most data files in a manifest")
		maxDownloads = flagenv.Int(fs, "max-downloads", "SLOTKV_MAX_DOWNLOADS", def.MaxDownloads, "downloads at once over all jobs (changeable at runtime: UpdateSettings)")
		maxPerNode   = flagenv.Int(fs, "max-downloads-per-node", "SLOTKV_MAX_DOWNLOADS_PER_NODE", def.MaxDownloadsPerNode, "downloads at once whose records go to one storage node (changeable at runtime)")
		bandwidth    = flagenv.Uint64(fs, "bandwidth", "SLOTKV_BANDWIDTH", 0, "download bandwidth over all jobs in bytes per second, 0 = unlimited (changeable at runtime)")
		batchRecords = flagenv.Int(fs, "ingest-batch-records", "SLOTKV_INGEST_BATCH_RECORDS", def.IngestBatchRecords, "records per ingest batch")
		batchBytes   = flagenv.Int(fs, "ingest-batch-bytes", "SLOTKV_INGEST_BATCH_BYTES", def.IngestBatchBytes, "key and value bytes per ingest batch at most")
		ingestConc   = flagenv.Int(fs, "ingest-concurrency", "SLOTKV_INGEST_CONCURRENCY", def.IngestConcurrency, "parallel ingest streams per job")
		ingestWindow = flagenv.Int(fs, "ingest-window", "SLOTKV_INGEST_WINDOW", def.IngestWindow, "ingest batches in flight per stream")
		nodeRetry    = flagenv.Duration(fs, "node-retry-timeout", "SLOTKV_NODE_RETRY_TIMEOUT", def.NodeRetryTimeout, "how long an unavailable storage node is retried before the file fails")
		httpRetryMax = flagenv.Int(fs, "http-retry-max", "SLOTKV_HTTP_RETRY_MAX", def.HTTPRetryMax, "retries of a download request (connection errors, 429, 5xx)")
		httpWaitMin  = flagenv.Duration(fs, "http-retry-wait-min", "SLOTKV_HTTP_RETRY_WAIT_MIN", def.HTTPRetryWaitMin, "first backoff between download retries")
		httpWaitMax  = flagenv.Duration(fs, "http-retry-wait-max", "SLOTKV_HTTP_RETRY_WAIT_MAX", def.HTTPRetryWaitMax, "longest backoff between download retries")
		httpTimeout  = flagenv.Duration(fs, "http-timeout", "SLOTKV_HTTP_TIMEOUT", def.HTTPTimeout, "time to wait for a download's response headers")
		httpStall    = flagenv.Duration(fs, "http-stall-timeout", "SLOTKV_HTTP_STALL_TIMEOUT", def.HTTPStallTimeout, "a download receiving no byte for this long is cut and resumed")
		maxRunning   = flagenv.Int(fs, "max-running-jobs", "SLOTKV_MAX_RUNNING_JOBS", def.MaxRunningJobs, "most bulk-load jobs running at once; more are refused (ResourceExhausted) until one ends, is paused or canceled")
		progress     = flagenv.Duration(fs, "progress-interval", "SLOTKV_PROGRESS_INTERVAL", def.ProgressInterval, "period of progress log lines and progress saves of a running job")
	)
	if err := flagenv.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		if ee := (*flagenv.EnvError)(nil); errors.As(err, &ee) {
			fmt.Fprintf(os.Stderr, "%s: %v\n", serviceName, err)
		}
		return 2
	}
	if common.ShowVersion {
		fmt.Println(serviceName, version.Version)
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "%s: unexpected arguments %q\n", serviceName, fs.Args())
		return 2
	}

	if err := common.Finish(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", serviceName, err)
		return 2
	}

	ctx, stop := server.SignalContext()
	defer stop()
	return server.Main(ctx, common.MainConfig(serviceName, nil), func(env server.Env) error {
		o := def
		o.Common = common.Common
		o.DataDir = *dataDir
		o.AllowedPrefixes = flagenv.SplitList(*prefixes)
		o.AllowFileURLs = *allowFile
		o.MaxManifestBytes, o.MaxFileBytes, o.MaxFiles = *maxManifest, *maxFile, *maxFiles
		o.MaxDownloads, o.MaxDownloadsPerNode, o.BandwidthBytesPerSecond = *maxDownloads, *maxPerNode, *bandwidth
		o.IngestBatchRecords, o.IngestBatchBytes, o.IngestConcurrency, o.IngestWindow = *batchRecords, *batchBytes, *ingestConc, *ingestWindow
		o.NodeRetryTimeout = *nodeRetry
		o.HTTPRetryMax, o.HTTPRetryWaitMin, o.HTTPRetryWaitMax = *httpRetryMax, *httpWaitMin, *httpWaitMax
		o.HTTPTimeout, o.HTTPStallTimeout = *httpTimeout, *httpStall
		o.ProgressInterval = *progress
		o.MaxRunningJobs = *maxRunning
		o.Logger, o.TracerProvider, o.OnListen = env.Logger, env.TracerProvider, env.OnListen
		o.MeterProvider, o.MetricsHandler = env.MeterProvider, env.MetricsHandler
		env.Logger.Info("loading into", "etcd", strings.Join(common.Etcd.Endpoints, ","), "data_dir", *dataDir)
		return downloader.Run(env.Ctx, o)
	})
}
