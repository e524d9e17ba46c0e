package server

import (
	"context"
	"net/http"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/slotkv/slotkv/pkg/auth"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/telemetry"
)

// GET /metrics serves the Prometheus text of the server's MeterProvider,
// which otelgrpc feeds: after one RPC an rpc_server_* series for it is
// there. The endpoint needs the admin token (401 without a token, 403
// with the data token) and is untraced, like /healthz.
func TestMetrics(t *testing.T) {
	t.Parallel()
	tel, err := telemetry.Setup(context.Background(), telemetry.Config{ServiceName: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	h := start(t, Options{Tokens: auth.Tokens{Data: "data-tok", Admin: "tok"}, TracerProvider: tp, MeterProvider: tel.MeterProvider, MetricsHandler: tel.MetricsHandler()})
	ctx := testCtx(t)

	cc := h.conn(t, dial.Options{Token: "tok"})
	if _, err := testgrpc.NewTestServiceClient(cc).EmptyCall(ctx, &testgrpc.Empty{}); err != nil {
		t.Fatal(err)
	}

	for tok, want := range map[string]int{"": http.StatusUnauthorized, "data-tok": http.StatusForbidden, "bad": http.StatusForbidden} {
		if code, body := get(t, http.DefaultClient, h.url(MetricsPath), tok); code != want {
			t.Errorf("GET /metrics with token %q = %d %q, want %d", tok, code, body, want)
		}
	}
	code, body := get(t, http.DefaultClient, h.url(MetricsPath), "tok")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics = %d %q", code, body)
	}
	found := false
	for line := range strings.Lines(body) {
		if strings.HasPrefix(line, "rpc_server_") && strings.Contains(line, "EmptyCall") {
			found = true
			t.Logf("RPC metric: %s", strings.TrimSpace(line))
			break
		}
	}
	if !found {
		t.Errorf("no rpc_server_* series for EmptyCall in /metrics:\n%s", body)
	}
	for _, s := range rec.Started() {
		if strings.Contains(s.Name(), MetricsPath) || s.Name() == "GET" {
			t.Errorf("/metrics traced: span %q", s.Name())
		}
	}

	// Without a MetricsHandler the path belongs to the gateway (404).
	h2 := start(t, Options{})
	if code, _ := get(t, http.DefaultClient, h2.url(MetricsPath), ""); code != http.StatusNotFound {
		t.Errorf("GET /metrics without handler = %d, want 404", code)
	}
}
