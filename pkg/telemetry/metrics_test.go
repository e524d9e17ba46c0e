package telemetry

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
)

func scrape(t *testing.T, tel *Telemetry) string {
	t.Helper()
	rec := httptest.NewRecorder()
	tel.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("/metrics: %d", rec.Code)
	}
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

// Two Telemetry values in one process have separate registries: a metric
// recorded through one does not show up in the other, and neither panics
// on duplicate registration.
func TestMetricsSeparateRegistries(t *testing.T) {
	t.Parallel()
	a := setup(t, Config{ServiceName: "storage", ServiceVersion: "1.2.3"})
	b := setup(t, Config{ServiceName: "router"})
	c, err := a.MeterProvider.Meter("test").Int64Counter("slotkv.test.things")
	if err != nil {
		t.Fatal(err)
	}
	c.Add(context.Background(), 3)

	sa, sb := scrape(t, a), scrape(t, b)
	if !strings.Contains(sa, "slotkv_test_things_total") {
		t.Errorf("counter missing from a:\n%s", sa)
	}
	if strings.Contains(sb, "slotkv_test_things") {
		t.Errorf("counter leaked into b:\n%s", sb)
	}
	if !strings.Contains(sa, `service_name="storage"`) || !strings.Contains(sa, `service_version="1.2.3"`) {
		t.Errorf("target_info lacks service attributes:\n%s", sa)
	}
	if !strings.Contains(sb, "go_goroutines") {
		t.Errorf("runtime metrics missing:\n%s", sb)
	}
}
