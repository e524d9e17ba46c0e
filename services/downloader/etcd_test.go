package downloader_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	downloaderv1 "github.com/slotkv/slotkv/gen/slotkv/downloader/v1"
	"github.com/slotkv/slotkv/pkg/etcdtest"
	"github.com/slotkv/slotkv/pkg/testcluster"
	"github.com/slotkv/slotkv/pkg/topology"
	"github.com/slotkv/slotkv/pkg/topostore"
)

func readyz(t *testing.T, httpAddr string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// With etcd the downloader takes no storage seeds: it is ready once etcd
// holds a topology (the watch delivers it), and a bulk load goes to the
// owners that topology names.
func TestEtcdTopology(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t)
	st, err := topostore.New(e.Client(t), topostore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// The nodes do not read etcd here: they are given the same topology.
	c := testcluster.Start(t, 3, testcluster.Options{Token: testToken})
	o := testOptions(t, c, t.TempDir())
	o.Etcd.Endpoints = e.Endpoints()
	s := startService(t, o)

	if code, body := readyz(t, s.http); code != http.StatusServiceUnavailable || !strings.Contains(body, "etcd") {
		t.Fatalf("/readyz before a bootstrap: %d %q, want 503 naming etcd", code, body)
	}
	ctx := ctxT(t)
	v1, err := topology.Even(1, c.TopologyNodes())
	if err != nil {
		t.Fatal(err)
	}
	c.SetTopology(t, v1)
	if _, _, err := st.Bootstrap(ctx, v1); err != nil {
		t.Fatal(err)
	}
	for code, body := readyz(t, s.http); code != http.StatusOK; code, body = readyz(t, s.http) {
		select {
		case <-ctx.Done():
			t.Fatalf("/readyz after the bootstrap: %d %q", code, body)
		case <-time.After(10 * time.Millisecond):
		}
	}

	ds := buildDataset(t, "etcd", 2000, 2)
	srv := serveDataset(t, ds)
	s.start(t, srv.manifestURL(), "etcd-1")
	j := s.waitState(t, "etcd-1", downloaderv1.State_STATE_SUCCEEDED)
	if j.GetIngest().GetDone() != 2000 {
		t.Fatalf("job ingest progress %v", j.GetIngest())
	}
	checkKeys(t, c, v1, ds.records)
}
