package migrator_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/slotkv/slotkv/gen"
	migratorv1 "github.com/slotkv/slotkv/gen/slotkv/migrator/v1"
	"github.com/slotkv/slotkv/pkg/server"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/telemetry"
	"github.com/slotkv/slotkv/pkg/telemetry/metricstest"
	"github.com/slotkv/slotkv/services/migrator"
)

// scrapeGauge scrapes the migrator's /metrics and returns the value of the
// series name{job_id="id"}; ok is false when it is absent.
func scrapeGauge(t *testing.T, m *mig, name, id string) (v float64, ok bool) {
	t.Helper()
	return metricstest.Sample(metricstest.Scrape(t, m.http), name, `job_id="`+id+`"`)
}

// TestMetricsDuringMigration scrapes /metrics while a job throttled to
// 20 KiB/s runs: its key count grows between two scrapes, and once the
// limit is lifted its phase gauge reaches SUCCEEDED.
func TestMetricsDuringMigration(t *testing.T) {
	t.Parallel()
	tel, err := telemetry.Setup(context.Background(), telemetry.Config{ServiceName: "slotkv-migrator"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	c := startCluster(t, 2, "")
	moved := slot.MustParseRangeSet("0-499")
	keys := keysIn(moved, 2000, "m")
	load(t, c.Node(t, "n1"), keys, 1000)
	m := startMigrator(t, c, t.TempDir(), func(o *migrator.Options) {
		o.MeterProvider, o.MetricsHandler = tel.MeterProvider, tel.MetricsHandler()
	})
	mg := start(t, m, &migratorv1.StartMigrationRequest{Ranges: moved.String(), SourceNodeId: "n1", DestinationNodeId: "n2",
		Parallelism: 2, RateBytesPerSecond: 20 << 10, BatchRecords: 10})
	id := mg.GetId()
	watchUntil(t, m, id, func(mg *migratorv1.Migration) bool { return mg.GetKeys() > 0 })

	first, ok := scrapeGauge(t, m, "slotkv_migration_keys", id)
	if !ok {
		t.Fatal("no slotkv_migration_keys series for the job")
	}
	if p, _ := scrapeGauge(t, m, "slotkv_migration_phase", id); p != float64(migratorv1.Phase_PHASE_SNAPSHOT) {
		t.Errorf("phase gauge = %v during the throttled snapshot, want %d", p, migratorv1.Phase_PHASE_SNAPSHOT)
	}
	if _, ok := scrapeGauge(t, m, "slotkv_migration_bytes", id); !ok {
		t.Error("no slotkv_migration_bytes series for the job")
	}
	eventually(t, "slotkv_migration_keys to grow", func() error {
		if v, _ := scrapeGauge(t, m, "slotkv_migration_keys", id); v <= first {
			return fmt.Errorf("still %v (first scrape %v)", v, first)
		}
		return nil
	})

	unlimited := uint64(0)
	if _, err := m.client.UpdateMigration(testCtx(t), &migratorv1.UpdateMigrationRequest{JobId: id, RateBytesPerSecond: &unlimited}); err != nil {
		t.Fatal(err)
	}
	if final := waitEnd(t, m, id); final.GetPhase() != migratorv1.Phase_PHASE_SUCCEEDED {
		t.Fatalf("job ended %s: %s", final.GetPhase(), final.GetError())
	}
	if p, _ := scrapeGauge(t, m, "slotkv_migration_phase", id); p != float64(migratorv1.Phase_PHASE_SUCCEEDED) {
		t.Errorf("phase gauge = %v after the job, want %d", p, migratorv1.Phase_PHASE_SUCCEEDED)
	}
	if v, _ := scrapeGauge(t, m, "slotkv_migration_keys", id); v != float64(len(keys)) {
		t.Errorf("keys gauge = %v after the job, want %d", v, len(keys))
	}
	for _, name := range []string{"slotkv_migration_lag", "slotkv_migration_write_pause_ms"} {
		if _, ok := scrapeGauge(t, m, name, id); !ok {
			t.Errorf("no %s series for the job", name)
		}
	}
	for _, name := range []string{"slotkv_migration_time_to_handoff_seconds", "slotkv_migration_cleanup_seconds"} {
		if v, ok := scrapeGauge(t, m, name, id); !ok || v <= 0 {
			t.Errorf("%s = %v (present %v) after the job, want a positive time", name, v, ok)
		}
	}

	// API docs: the service's generated OpenAPI document at /openapi.json,
	// served without a token.
	resp, err := http.Get("http://" + m.http + server.OpenAPIPath)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(doc, gen.MigratorOpenAPI) {
		t.Errorf("GET /openapi.json = %d (%d bytes, %v), want 200 with the %d bytes of gen.MigratorOpenAPI", resp.StatusCode, len(doc), err, len(gen.MigratorOpenAPI))
	}
}

// eventually polls cond until it returns nil or the test timeout passes.
func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond) // poll interval
	}
}
