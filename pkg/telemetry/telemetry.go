// Package telemetry sets up OpenTelemetry tracing, Prometheus-format
// metrics and trace-aware structured logging for slotkv services.
//
// Setup always builds an SDK TracerProvider, even when nothing is exported:
// spans then still get real trace and span ids, which the slog handler puts
// on every log line and which propagate to downstream services, so logs of
// one request can be joined across the cluster with or without Jaeger. The
// OTLP/gRPC exporter is added only when OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set (the exporter reads the rest of
// the standard OTEL_EXPORTER_OTLP_* variables itself: headers, insecure,
// timeout, ...).
//
// The TracerProvider is returned, not installed globally: pass it to
// pkg/dial and pkg/server explicitly so tests can run several services with
// separate providers in one process. Only the text-map propagator is set
// globally, because some libraries only ever consult the global one and W3C
// trace context is the same for every service anyway.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Config configures Setup.
type Config struct {
	// ServiceName is the service.name resource attribute ("storage",
	// "router", ...). OTEL_SERVICE_NAME, when set, overrides it so an
	// operator can tell several instances apart without a code change.
	ServiceName string
	// ServiceVersion is the service.version resource attribute.
	ServiceVersion string
	// SampleRatio is the fraction of new root traces that are sampled,
	// clamped to [0, 1]. It applies only to traces that start here: a span
	// whose parent (local or from an incoming request) was sampled is
	// always sampled, and one whose parent was not is never, so a trace is
	// either complete or absent. Note that the zero value samples no root
	// traces; mains usually take it from a flag defaulting to 1.
	SampleRatio float64
	// Exporter, when non-nil, is used instead of the environment-selected
	// OTLP exporter, and the environment is then not consulted (tests use
	// an in-memory exporter).
	Exporter sdktrace.SpanExporter
	// SpanProcessors are added to the provider in addition to the exporter
	// (e.g. tracetest.NewSpanRecorder()).
	SpanProcessors []sdktrace.SpanProcessor
}

// Telemetry holds what Setup built. Shut it down before the process exits
// so buffered spans are flushed.
type Telemetry struct {
	// TracerProvider is the SDK provider; pass it to dial.Options and
	// server.Options.
	TracerProvider *sdktrace.TracerProvider
	// Propagator is the W3C tracecontext + baggage propagator (also
	// installed as the global propagator).
	Propagator propagation.TextMapPropagator
	// Exporting reports whether spans leave the process (an exporter was
	// configured).
	Exporting bool
	// MeterProvider is the SDK meter provider; its metrics are exported
	// in Prometheus format by MetricsHandler. Pass it to dial.Options,
	// server.Options and the services' own instruments.
	MeterProvider *sdkmetric.MeterProvider
	// Registry is this Telemetry's own Prometheus registry (not the
	// global one, so several services in one process don't collide).
	Registry *prometheus.Registry
}

// MetricsHandler serves the registry in the Prometheus exposition format
// (mount it at /metrics).
func (t *Telemetry) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(t.Registry, promhttp.HandlerOpts{Registry: t.Registry})
}

// Env variables that turn the OTLP exporter on.
const (
	EnvOTLPEndpoint       = "OTEL_EXPORTER_OTLP_ENDPOINT"
	EnvOTLPTracesEndpoint = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
)

// Propagator returns the W3C tracecontext + baggage propagator every slotkv
// process uses.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// Sampler returns ParentBased(TraceIDRatioBased(ratio)), the ratio clamped
// to [0, 1].
func Sampler(ratio float64) sdktrace.Sampler {
	switch {
	case ratio >= 1:
		return sdktrace.ParentBased(sdktrace.AlwaysSample())
	case ratio <= 0 || ratio != ratio: // NaN counts as 0
		return sdktrace.ParentBased(sdktrace.NeverSample())
	default:
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))
	}
}

// Setup builds the tracer provider described by cfg and installs the global
// propagator. The context bounds the exporter's setup only.
func Setup(ctx context.Context, cfg Config) (*Telemetry, error) {
	if cfg.ServiceName == "" {
		return nil, errors.New("telemetry: ServiceName is required")
	}
	attrs := []resource.Option{
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithAttributes(semconv.ServiceName(cfg.ServiceName)),
	}
	if cfg.ServiceVersion != "" {
		attrs = append(attrs, resource.WithAttributes(semconv.ServiceVersion(cfg.ServiceVersion)))
	}
	// Environment last so OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES win.
	attrs = append(attrs, resource.WithFromEnv())
	res, err := resource.New(ctx, attrs...)
	if err != nil {
		// resource.New returns a usable resource along with partial errors
		// (e.g. an unreadable host name); only give up when there is none.
		if res == nil {
			return nil, fmt.Errorf("telemetry: resource: %w", err)
		}
	}

	exp := cfg.Exporter
	if exp == nil && otlpEnabled(os.LookupEnv) {
		// otlptracegrpc reads the endpoint, headers, TLS and timeout from
		// the standard environment variables. It connects lazily, so a
		// collector that is down does not block startup.
		exp, err = otlptracegrpc.New(ctx)
		if err != nil {
			return nil, fmt.Errorf("telemetry: OTLP exporter: %w", err)
		}
	}
	sampler := Sampler(cfg.SampleRatio)
	if exp == nil && len(cfg.SpanProcessors) == 0 {
		// Nothing would ever see a recorded span: start root spans
		// unsampled. They still get trace and span ids, so logs carry
		// trace_id and downstream services can join the trace, but no
		// span data is built on every RPC for nothing.
		sampler = sdktrace.ParentBased(sdktrace.NeverSample())
	}
	opts := []sdktrace.TracerProviderOption{
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sampler),
	}
	if exp != nil {
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	for _, sp := range cfg.SpanProcessors {
		opts = append(opts, sdktrace.WithSpanProcessor(sp))
	}

	// Metrics: a pull-based Prometheus exporter into a registry of our
	// own, plus the Go runtime and process collectors.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	promExp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, fmt.Errorf("telemetry: prometheus exporter: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithResource(res), sdkmetric.WithReader(promExp))

	prop := Propagator()
	otel.SetTextMapPropagator(prop)
	return &Telemetry{
		TracerProvider: sdktrace.NewTracerProvider(opts...),
		Propagator:     prop,
		Exporting:      exp != nil,
		MeterProvider:  mp,
		Registry:       reg,
	}, nil
}

// otlpEnabled reports whether the environment asks for OTLP export.
// OTEL_TRACES_EXPORTER=none turns it off even with an endpoint set, as the
// OpenTelemetry specification defines.
func otlpEnabled(lookup func(string) (string, bool)) bool {
	if v, _ := lookup("OTEL_TRACES_EXPORTER"); strings.EqualFold(strings.TrimSpace(v), "none") {
		return false
	}
	for _, k := range []string{EnvOTLPEndpoint, EnvOTLPTracesEndpoint} {
		if v, ok := lookup(k); ok && strings.TrimSpace(v) != "" {
			return true
		}
	}
	return false
}

// Tracer returns a named tracer from the provider, for spans of your own
// (a migration phase, a bulk-load file).
func (t *Telemetry) Tracer(name string, opts ...trace.TracerOption) trace.Tracer {
	return t.TracerProvider.Tracer(name, opts...)
}

// Shutdown flushes buffered spans and stops the exporter. Call it with a
// bounded context after the servers have stopped.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	var errs []error
	if t.TracerProvider != nil {
		errs = append(errs, t.TracerProvider.Shutdown(ctx))
	}
	if t.MeterProvider != nil {
		errs = append(errs, t.MeterProvider.Shutdown(ctx))
	}
	return errors.Join(errs...)
}
