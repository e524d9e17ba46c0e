// Command slotkv-console serves slotkv's web console (see package
// console): the slot map, the nodes, live migrations and bulk loads and the
// traffic of each node, on --http-addr.
//
// Every flag has an environment fallback (SLOTKV_*); see -h.
//
// `slotkv-console healthcheck [--url URL]` exits 0 when a running console's
// /readyz answers 2xx, for container health checks.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/slotkv/slotkv/pkg/flagenv"
	"github.com/slotkv/slotkv/pkg/server"
	"github.com/slotkv/slotkv/pkg/version"
	"github.com/slotkv/slotkv/services/console"
)

const serviceName = console.ServiceName

func main() {
	if code, ok := server.HealthcheckCommand(os.Args[1:], console.DefaultOptions().HTTPAddr); ok {
		os.Exit(code)
	}
	ctx, stop := server.SignalContext()
	code := run(ctx, os.Args[1:], os.LookupEnv, os.Stderr)
	stop()
	os.Exit(code)
}

type config struct {
	opts  console.Options
	flags server.Flags // the shared flags; opts.Common comes from them
}

func parse(args []string, lookup func(string) (string, bool), out io.Writer) (config, error) {
	d := console.DefaultOptions()
	fs := flag.NewFlagSet(serviceName, flag.ContinueOnError)
	fs.SetOutput(out)
	var c config
	c.flags.Register(fs, d.Common)
	var (
		router         = flagenv.String(fs, "router", "SLOTKV_ROUTER", "", "router gRPC address (its topology, without --etcd-endpoints)")
		migrator       = flagenv.String(fs, "migrator", "SLOTKV_MIGRATOR", "", "migrator gRPC address (the migrations page; empty leaves it out)")
		downloader     = flagenv.String(fs, "downloader", "SLOTKV_DOWNLOADER", "", "downloader gRPC address (the bulk loads page; empty leaves it out)")
		routerHTTP     = flagenv.String(fs, "router-http", "SLOTKV_CONSOLE_ROUTER_HTTP", "", "router REST address (host:port or URL), for the link to its OpenAPI document")
		migratorHTTP   = flagenv.String(fs, "migrator-http", "SLOTKV_CONSOLE_MIGRATOR_HTTP", "", "migrator REST address, for the link to its OpenAPI document")
		downloaderHTTP = flagenv.String(fs, "downloader-http", "SLOTKV_CONSOLE_DOWNLOADER_HTTP", "", "downloader REST address, for the link to its OpenAPI document")
		interval       = flagenv.Duration(fs, "sample-interval", "SLOTKV_SAMPLE_INTERVAL", d.SampleInterval, "period of the cluster and traffic samples")
		history        = flagenv.Int(fs, "history", "SLOTKV_HISTORY", d.History, "traffic samples kept per node")
		ttl            = flagenv.Duration(fs, "session-ttl", "SLOTKV_SESSION_TTL", d.SessionTTL, "how long a login lasts")
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
	switch {
	case *interval <= 0:
		return c, fmt.Errorf("--sample-interval %v must be positive", *interval)
	case *history <= 0:
		return c, fmt.Errorf("--history %d must be positive", *history)
	case *ttl <= 0:
		return c, fmt.Errorf("--session-ttl %v must be positive", *ttl)
	}
	o := d
	o.Common = c.flags.Common
	o.Router, o.Migrator, o.Downloader = *router, *migrator, *downloader
	o.RouterHTTP, o.MigratorHTTP, o.DownloaderHTTP = *routerHTTP, *migratorHTTP, *downloaderHTTP
	o.SampleInterval, o.History, o.SessionTTL = *interval, *history, *ttl
	c.opts = o
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
		o.MeterProvider, o.MetricsHandler = env.MeterProvider, env.MetricsHandler
		return console.Run(env.Ctx, o)
	})
}
