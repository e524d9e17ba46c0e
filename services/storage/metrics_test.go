package storage_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/slotkv/slotkv/gen"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/server"
	"github.com/slotkv/slotkv/pkg/telemetry"
	"github.com/slotkv/slotkv/pkg/telemetry/metricstest"
)

// /metrics has the node's Badger size by part, the slots it serves and
// the purge of dropped slots, next to otelgrpc's RPC metrics; the value
// log grows with the data.
func TestMetrics(t *testing.T) {
	t.Parallel()
	tel, err := telemetry.Setup(context.Background(), telemetry.Config{ServiceName: "storage"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	o := testOptions(t, "n1")
	o.MeterProvider, o.MetricsHandler = tel.MeterProvider, tel.MetricsHandler()
	n := startNode(t, o)

	m := metricstest.Scrape(t, n.httpAddr)
	if v, ok := metricstest.Sample(m, "slotkv_storage_slots"); !ok || v != 0 {
		t.Fatalf("slots before any topology = %v (found %v), want 0", v, ok)
	}
	for _, name := range []string{"slotkv_storage_badger_vlog_files_rewritten_total", "slotkv_storage_purge_pending_slots", "slotkv_storage_purge_keys_total"} {
		if v, ok := metricstest.Sample(m, name); !ok || v != 0 {
			t.Fatalf("%s on a new node = %v (found %v), want 0", name, v, ok)
		}
	}
	size := func(m string) float64 {
		lsm, ok1 := metricstest.Sample(m, "slotkv_storage_badger_size_bytes", `part="lsm"`)
		vlog, ok2 := metricstest.Sample(m, "slotkv_storage_badger_size_bytes", `part="vlog"`)
		if !ok1 || !ok2 {
			t.Fatalf("badger size by part missing:\n%s", m)
		}
		return lsm + vlog
	}
	before := size(m)

	n.ownAll(t)
	// Random values, so compression cannot shrink them: 4 MiB in all.
	val := make([]byte, 64<<10)
	for i := range 64 {
		_, _ = rand.Read(val)
		if _, err := n.data.Put(ctxT(t), &storagev1.PutRequest{Key: []byte(fmt.Sprint("k", i)), Value: val}); err != nil {
			t.Fatal(err)
		}
	}
	m = metricstest.Scrape(t, n.httpAddr)
	if v, _ := metricstest.Sample(m, "slotkv_storage_slots"); v != 16384 {
		t.Errorf("slots after owning all = %v, want 16384", v)
	}
	// Half of it at least: the memtable log is preallocated, so some of
	// the bytes land on blocks that counted before.
	if after := size(m); after < before+2<<20 {
		t.Errorf("badger size %v after writing 4 MiB, was %v", after, before)
	}
	if !strings.Contains(m, `rpc_server_call_duration_seconds_count{`) || !strings.Contains(m, `rpc_method="slotkv.storage.v1.StorageService/Put"`) {
		t.Errorf("no otelgrpc server metrics for Put:\n%s", m)
	}

	// API docs: the service's generated OpenAPI document at /openapi.json,
	// served without a token.
	resp, err := http.Get("http://" + n.httpAddr + server.OpenAPIPath)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(doc, gen.StorageOpenAPI) {
		t.Errorf("GET /openapi.json = %d (%d bytes, %v), want 200 with the %d bytes of gen.StorageOpenAPI", resp.StatusCode, len(doc), err, len(gen.StorageOpenAPI))
	}
}
