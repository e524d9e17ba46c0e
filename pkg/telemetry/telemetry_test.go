package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

func setup(t *testing.T, cfg Config) *Telemetry {
	t.Helper()
	if cfg.ServiceName == "" {
		cfg.ServiceName = "test"
	}
	tel, err := Setup(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	return tel
}

func TestLogCarriesTraceIDs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		ratio   float64
		record  bool // a span processor is configured
		sampled bool
	}{
		{"sampled", 1, true, true},
		// Unsampled spans still get ids, so logs can be correlated even
		// when the trace itself is not kept.
		{"unsampled", 0, true, false},
		// Nothing records or exports: spans are not sampled at all.
		{"nothing records", 1, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := Config{SampleRatio: tt.ratio}
			if tt.record {
				cfg.SpanProcessors = []sdktrace.SpanProcessor{tracetest.NewSpanRecorder()}
			}
			tel := setup(t, cfg)
			ctx, span := tel.Tracer("test").Start(context.Background(), "op")
			defer span.End()
			sc := span.SpanContext()
			if sc.IsSampled() != tt.sampled {
				t.Fatalf("sampled = %v, want %v", sc.IsSampled(), tt.sampled)
			}

			var buf bytes.Buffer
			log := NewLogger(&buf, slog.LevelInfo, true)
			log.With("component", "x").InfoContext(ctx, "hello", "k", "v")
			var line map[string]any
			if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
				t.Fatalf("decode %q: %v", buf.String(), err)
			}
			if line[TraceIDKey] != sc.TraceID().String() || line[SpanIDKey] != sc.SpanID().String() {
				t.Errorf("log line %v lacks trace %s span %s", line, sc.TraceID(), sc.SpanID())
			}
			if line["component"] != "x" || line["k"] != "v" {
				t.Errorf("log line %v lost attributes", line)
			}
		})
	}
}

func TestLogWithoutSpan(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := NewLogger(&buf, slog.LevelInfo, false)
	log.InfoContext(context.Background(), "no span")
	log.Debug("filtered out")
	out := buf.String()
	if strings.Contains(out, TraceIDKey) || strings.Contains(out, "filtered out") {
		t.Errorf("unexpected output %q", out)
	}
	if !strings.Contains(out, "no span") {
		t.Errorf("missing line in %q", out)
	}
}

func TestSlogHandlerNotDoubleWrapped(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	h := SlogHandler(SlogHandler(slog.NewTextHandler(&buf, nil)))
	tel := setup(t, Config{SampleRatio: 1})
	ctx, span := tel.Tracer("test").Start(context.Background(), "op")
	defer span.End()
	slog.New(h).InfoContext(ctx, "once")
	if n := strings.Count(buf.String(), TraceIDKey+"="); n != 1 {
		t.Errorf("trace_id appears %d times in %q", n, buf.String())
	}
}

func TestSamplerFollowsParent(t *testing.T) {
	t.Parallel()
	traceID, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	spanID, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	tests := []struct {
		name        string
		ratio       float64
		traceparent string // incoming W3C header; "" = new root
		wantSampled bool
	}{
		{"ratio 0 root", 0, "", false},
		{"ratio 1 root", 1, "", true},
		{"ratio 0 sampled parent", 0, "00-" + traceID.String() + "-" + spanID.String() + "-01", true},
		{"ratio 1 unsampled parent", 1, "00-" + traceID.String() + "-" + spanID.String() + "-00", false},
		{"ratio 0.5 sampled parent", 0.5, "00-" + traceID.String() + "-" + spanID.String() + "-01", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := tracetest.NewSpanRecorder()
			tel := setup(t, Config{SampleRatio: tt.ratio, SpanProcessors: []sdktrace.SpanProcessor{rec}})
			ctx := context.Background()
			if tt.traceparent != "" {
				ctx = tel.Propagator.Extract(ctx, propagation.MapCarrier{"traceparent": tt.traceparent})
			}
			_, span := tel.Tracer("test").Start(ctx, "child")
			sc := span.SpanContext()
			span.End()
			if sc.IsSampled() != tt.wantSampled {
				t.Errorf("sampled = %v, want %v", sc.IsSampled(), tt.wantSampled)
			}
			if tt.traceparent != "" && sc.TraceID() != traceID {
				t.Errorf("trace id %s, want parent's %s", sc.TraceID(), traceID)
			}
			if got := len(rec.Ended()); (got == 1) != tt.wantSampled {
				t.Errorf("recorded %d spans, sampled=%v", got, tt.wantSampled)
			}
			// The decision travels on: the outgoing header carries it.
			out := propagation.MapCarrier{}
			tel.Propagator.Inject(trace.ContextWithSpanContext(context.Background(), sc), out)
			wantFlag := "-00"
			if tt.wantSampled {
				wantFlag = "-01"
			}
			if !strings.HasSuffix(out["traceparent"], wantFlag) {
				t.Errorf("outgoing traceparent %q, want flags %s", out["traceparent"], wantFlag)
			}
		})
	}
}

func TestResource(t *testing.T) {
	t.Parallel()
	rec := tracetest.NewSpanRecorder()
	tel := setup(t, Config{ServiceName: "storage", ServiceVersion: "1.2.3", SampleRatio: 1, SpanProcessors: []sdktrace.SpanProcessor{rec}})
	_, span := tel.Tracer("test").Start(context.Background(), "op")
	span.End()
	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("recorded %d spans", len(spans))
	}
	attrs := map[string]string{}
	for _, kv := range spans[0].Resource().Attributes() {
		attrs[string(kv.Key)] = kv.Value.Emit()
	}
	if attrs[string(semconv.ServiceNameKey)] != "storage" || attrs[string(semconv.ServiceVersionKey)] != "1.2.3" {
		t.Errorf("resource attributes %v", attrs)
	}
	if tel.Exporting && !otlpEnabled(os.LookupEnv) {
		t.Error("Exporting without an exporter configured")
	}
}

func TestSetupRequiresName(t *testing.T) {
	t.Parallel()
	if _, err := Setup(context.Background(), Config{}); err == nil {
		t.Error("Setup without ServiceName succeeded")
	}
}

func TestOTLPEnabled(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		want bool
	}{
		{"nothing", nil, false},
		{"endpoint", map[string]string{EnvOTLPEndpoint: "http://jaeger:4317"}, true},
		{"traces endpoint", map[string]string{EnvOTLPTracesEndpoint: "http://jaeger:4317"}, true},
		{"empty endpoint", map[string]string{EnvOTLPEndpoint: " "}, false},
		{"exporter none", map[string]string{EnvOTLPEndpoint: "http://jaeger:4317", "OTEL_TRACES_EXPORTER": "none"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := otlpEnabled(func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok })
			if got != tt.want {
				t.Errorf("otlpEnabled = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSetupWithOTLPEndpoint(t *testing.T) {
	// Not parallel: t.Setenv. The exporter connects lazily, so Setup
	// succeeds with nothing listening and Shutdown returns promptly with a
	// bounded context.
	t.Setenv(EnvOTLPEndpoint, "http://127.0.0.1:1")
	tel, err := Setup(context.Background(), Config{ServiceName: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if !tel.Exporting {
		t.Error("Exporting = false with an endpoint set")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 0)
	defer cancel()
	_ = tel.Shutdown(ctx) // may report the deadline; must not hang
}
