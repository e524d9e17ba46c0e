package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/slotkv/slotkv/pkg/telemetry"
	"github.com/slotkv/slotkv/pkg/version"
)

// MainConfig is what every service binary's main takes from its flags
// before it builds its own Options.
type MainConfig struct {
	Name        string     // service name, e.g. "slotkv-router"
	LogLevel    slog.Level // --log-level
	SampleRatio float64    // --trace-sample-ratio
	ListenFile  string     // --listen-file: where to write the bound addresses
	Stderr      io.Writer  // where logs go; os.Stderr when nil
	// Profiling: --mutex-profile-fraction and --block-profile-rate (see
	// ProfilingFlags); nil reads the same SLOTKV_ variables from the
	// environment, so a service that does not define the flags still
	// honours them.
	Profiling *Profiling
}

// Env is what Main hands the service: put Logger, TracerProvider,
// MeterProvider, MetricsHandler and OnListen into the service's Options and
// run it with Ctx.
type Env struct {
	Ctx            context.Context // ends with Main's ctx, or when the listen file cannot be written
	Logger         *slog.Logger    // JSON, with trace ids
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider              // the service's own metrics and otelgrpc's
	MetricsHandler http.Handler                      // Prometheus text of MeterProvider, for GET /metrics
	OnListen       func(grpcAddr, httpAddr net.Addr) // writes the listen file
	// OnListenRESP records a RESP listener's address for the listen file;
	// a service with one calls it before OnListen.
	OnListenRESP func(net.Addr)
}

// Main is the common body of a slotkv binary's main: JSON logs carrying
// trace ids on stderr, telemetry set up from the environment and flushed at
// exit, and the listen file written once both ports are bound (if that
// fails the service is stopped: whoever waits for the file would wait
// forever). ctx ends the service; mains pass SignalContext() so SIGINT and
// SIGTERM shut it down gracefully. run starts the service and blocks until
// Env.Ctx ends. Main returns the exit code.
func Main(ctx context.Context, cfg MainConfig, run func(Env) error) int {
	stderr := cfg.Stderr
	if stderr == nil {
		stderr = os.Stderr
	}
	log := telemetry.NewLogger(stderr, cfg.LogLevel, true)
	prof, err := profilingOf(cfg)
	if err != nil {
		log.Error("bad profiling settings", "err", err)
		return 2
	}
	// Before the service starts, so the profiles cover all of its life.
	prof.Apply()
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	tel, err := telemetry.Setup(ctx, telemetry.Config{ServiceName: cfg.Name, ServiceVersion: version.Version, SampleRatio: cfg.SampleRatio})
	if err != nil {
		log.Error("telemetry setup failed", "err", err)
		return 1
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tel.Shutdown(sctx); err != nil {
			log.Warn("telemetry shutdown", "err", err)
		}
	}()
	listenErr := make(chan error, 1)
	var respAddr atomic.Pointer[string]
	env := Env{Ctx: ctx, Logger: log, TracerProvider: tel.TracerProvider, MeterProvider: tel.MeterProvider, MetricsHandler: tel.MetricsHandler(), OnListen: func(g, h net.Addr) {
		if cfg.ListenFile == "" {
			return
		}
		v := ListenAddrs{GRPC: g.String()}
		if h != nil {
			v.HTTP = h.String()
		}
		if r := respAddr.Load(); r != nil {
			v.RESP = *r
		}
		if err := WriteListenAddrs(cfg.ListenFile, v); err != nil {
			listenErr <- err
			stop()
		}
	}, OnListenRESP: func(a net.Addr) {
		s := a.String()
		respAddr.Store(&s)
	}}
	log.Info("starting", "service", cfg.Name, "version", version.Version, "exporting_traces", tel.Exporting)
	err = run(env)
	select {
	case lerr := <-listenErr:
		err = errors.Join(err, lerr)
	default:
	}
	if err != nil {
		log.Error("service failed", "service", cfg.Name, "err", err)
		return 1
	}
	log.Info("stopped cleanly", "service", cfg.Name)
	return 0
}

// profilingOf is the flags' profiling settings, or the environment's when
// the service has no such flags.
func profilingOf(cfg MainConfig) (Profiling, error) {
	if cfg.Profiling != nil {
		return *cfg.Profiling, nil
	}
	return ProfilingFromEnv(os.LookupEnv)
}
