package downloader_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/slotkv/slotkv/gen"
	downloaderv1 "github.com/slotkv/slotkv/gen/slotkv/downloader/v1"
	"github.com/slotkv/slotkv/pkg/server"
	"github.com/slotkv/slotkv/pkg/telemetry"
	"github.com/slotkv/slotkv/pkg/testcluster"
)

// testMetrics: after a job, the downloader's /metrics has its bulk-load
// gauges: all bytes downloaded, all records ingested, state SUCCEEDED.
func testMetrics(t *testing.T, c *testcluster.Cluster) {
	tel, err := telemetry.Setup(context.Background(), telemetry.Config{ServiceName: "slotkv-downloader"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	ds := buildDataset(t, "metrics", 2000, 3)
	srv := serveDataset(t, ds)
	o := testOptions(t, c, t.TempDir())
	o.MeterProvider, o.MetricsHandler = tel.MeterProvider, tel.MetricsHandler()
	s := startService(t, o)
	s.start(t, srv.manifestURL(), "metrics-1")
	j := s.waitState(t, "metrics-1", downloaderv1.State_STATE_SUCCEEDED)
	if j.GetState() != downloaderv1.State_STATE_SUCCEEDED {
		t.Fatalf("job ended %s", j.GetState())
	}
	size := j.GetDownload().GetTotal() // the data files' sizes from the manifest

	req, err := http.NewRequestWithContext(ctxT(t), http.MethodGet, "http://"+s.http+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+o.Tokens.Admin) // /metrics is behind the admin token
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	got := map[string]float64{}
	for line := range strings.Lines(string(b)) {
		if strings.HasPrefix(line, "slotkv_bulkload_") && strings.Contains(line, `job_id="metrics-1"`) {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			got[line[:strings.IndexByte(line, '{')]] = v
		}
	}
	want := map[string]float64{
		"slotkv_bulkload_bytes_downloaded": float64(size),
		"slotkv_bulkload_records_ingested": 2000,
		"slotkv_bulkload_state":            float64(downloaderv1.State_STATE_SUCCEEDED),
	}
	for name, w := range want {
		if v, ok := got[name]; !ok || v != w {
			t.Errorf("%s = %v (present %v), want %v; all: %v", name, v, ok, w, got)
		}
	}

	// API docs: the service's generated OpenAPI document at /openapi.json,
	// served without a token although the service has both tokens.
	res, err := http.Get("http://" + s.http + server.OpenAPIPath)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := io.ReadAll(res.Body)
	_ = res.Body.Close()
	if err != nil || res.StatusCode != http.StatusOK || !bytes.Equal(doc, gen.DownloaderOpenAPI) {
		t.Errorf("GET /openapi.json = %d (%d bytes, %v), want 200 with the %d bytes of gen.DownloaderOpenAPI", res.StatusCode, len(doc), err, len(gen.DownloaderOpenAPI))
	}
}
