// Command slotkv-router serves slotkv's public key-value API (gRPC and REST)
// and routes each key to the storage node owning its slot.
//
// Every flag has an environment fallback (SLOTKV_*); see -h.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/slotkv/slotkv/pkg/flagenv"
	"github.com/slotkv/slotkv/pkg/server"
	"github.com/slotkv/slotkv/pkg/telemetry"
	"github.com/slotkv/slotkv/pkg/version"
	"github.com/slotkv/slotkv/services/router"
)

const serviceName = "slotkv-router"

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	def := router.DefaultOptions()
	fs := flag.NewFlagSet(serviceName, flag.ContinueOnError)
	storage := flagenv.String(fs, "storage", "SLOTKV_STORAGE", "", "seed storage node gRPC addresses, comma-separated (required)")
	grpcAddr := flagenv.String(fs, "grpc-addr", "SLOTKV_GRPC_ADDR", def.GRPCAddr, "gRPC listen address")
	httpAddr := flagenv.String(fs, "http-addr", "SLOTKV_HTTP_ADDR", def.HTTPAddr, "HTTP (REST, /healthz, /readyz) listen address; empty turns it off")
	token := flagenv.String(fs, "token", "SLOTKV_TOKEN", "", "cluster token, required from callers and sent to storage nodes")
	listenFile := flagenv.String(fs, "listen-file", "SLOTKV_LISTEN_FILE", "", "write the bound addresses as JSON {\"grpc\":..., \"http\":...} to this file once listening")
	refresh := flagenv.Duration(fs, "refresh-interval", "SLOTKV_REFRESH_INTERVAL", def.RefreshInterval, "period of topology refreshes")
	callTimeout := flagenv.Duration(fs, "call-timeout", "SLOTKV_CALL_TIMEOUT", def.CallTimeout, "deadline of a call whose caller set none (retries included)")
	maxRetries := flagenv.Int(fs, "max-retries", "SLOTKV_MAX_RETRIES", def.MaxRetries, "SLOT_MOVED answers one call follows at most")
	shutdownTimeout := flagenv.Duration(fs, "shutdown-timeout", "SLOTKV_SHUTDOWN_TIMEOUT", 15*time.Second, "graceful shutdown limit")
	sampleRatio := flagenv.Float64(fs, "trace-sample-ratio", "SLOTKV_TRACE_SAMPLE_RATIO", 1, "fraction of new traces sampled")
	var level slog.Level
	flagenv.TextVar(fs, &level, "log-level", "SLOTKV_LOG_LEVEL", slog.LevelInfo, "log level (debug, info, warn, error)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := flagenv.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		if ee := (*flagenv.EnvError)(nil); errors.As(err, &ee) {
			fmt.Fprintf(os.Stderr, "%s: %v\n", serviceName, err)
		}
		return 2
	}
	if *showVersion {
		fmt.Println(serviceName, version.Version)
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "%s: unexpected arguments %q\n", serviceName, fs.Args())
		return 2
	}

	// No service attribute here: pkg/server and router.Run add it.
	log := telemetry.NewLogger(os.Stderr, level, true)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	tel, err := telemetry.Setup(ctx, telemetry.Config{ServiceName: serviceName, ServiceVersion: version.Version, SampleRatio: *sampleRatio})
	if err != nil {
		log.Error("telemetry setup failed", "err", err)
		return 1
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tel.Shutdown(sctx)
	}()

	o := def
	o.GRPCAddr, o.HTTPAddr = *grpcAddr, *httpAddr
	o.Storage = strings.Split(*storage, ",")
	o.Token = *token
	o.RefreshInterval, o.CallTimeout, o.MaxRetries = *refresh, *callTimeout, *maxRetries
	o.ShutdownTimeout = *shutdownTimeout
	o.Logger = log
	o.TracerProvider = tel.TracerProvider
	listenErr := make(chan error, 1)
	o.OnListen = func(g, h net.Addr) {
		if *listenFile == "" {
			return
		}
		if err := server.WriteListenFile(*listenFile, g, h); err != nil {
			listenErr <- err
			stop()
		}
	}
	log.Info("starting", "service", serviceName, "version", version.Version, "storage", *storage)
	err = router.Run(ctx, o)
	select {
	case lerr := <-listenErr:
		log.Error("writing the listen file failed", "err", lerr)
		return 1
	default:
	}
	if err != nil {
		log.Error("router failed", "err", err)
		return 1
	}
	return 0
}
