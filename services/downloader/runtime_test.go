package downloader_test

import (
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	downloaderv1 "github.com/slotkv/slotkv/gen/slotkv/downloader/v1"
	"github.com/slotkv/slotkv/pkg/testcluster"
)

// testSettingsSurviveRestart (issue 12): settings changed through the API
// are saved (in etcd, the downloader's only mode) and in force again after
// a restart of the service; a setting whose configured value (flag) changed
// meanwhile takes the new configured value.
func testSettingsSurviveRestart(t *testing.T, c *testcluster.Cluster) {
	dir := t.TempDir()
	o := testOptions(t, c, dir)
	o.MaxDownloads, o.MaxDownloadsPerNode, o.BandwidthBytesPerSecond = 4, 2, 0
	s := startService(t, o)
	want := &downloaderv1.Settings{MaxDownloads: 7, MaxDownloadsPerNode: 3, BandwidthBytesPerSecond: 1 << 20}
	ur, err := s.client.UpdateSettings(ctxT(t), &downloaderv1.UpdateSettingsRequest{
		MaxDownloads: proto.Uint32(7), MaxDownloadsPerNode: proto.Uint32(3), BandwidthBytesPerSecond: proto.Uint64(1 << 20)})
	if err != nil {
		t.Fatalf("UpdateSettings: %v", err)
	}
	if !proto.Equal(ur.GetSettings(), want) {
		t.Fatalf("UpdateSettings answered %v, want %v", ur.GetSettings(), want)
	}
	s.stop()

	s = startService(t, o)
	gr, err := s.client.GetSettings(ctxT(t), &downloaderv1.GetSettingsRequest{})
	if err != nil {
		t.Fatalf("GetSettings: %v", err)
	}
	if !proto.Equal(gr.GetSettings(), want) {
		t.Errorf("after a restart the settings are %v, want %v (set through the API before)", gr.GetSettings(), want)
	}
	s.stop()

	// The operator configures another max_downloads: that wins; the other
	// two saved settings stay.
	o.MaxDownloads = 5
	s = startService(t, o)
	gr, err = s.client.GetSettings(ctxT(t), &downloaderv1.GetSettingsRequest{})
	if err != nil {
		t.Fatalf("GetSettings: %v", err)
	}
	want2 := &downloaderv1.Settings{MaxDownloads: 5, MaxDownloadsPerNode: 3, BandwidthBytesPerSecond: 1 << 20}
	if !proto.Equal(gr.GetSettings(), want2) {
		t.Errorf("after a restart with --max-downloads changed, the settings are %v, want %v", gr.GetSettings(), want2)
	}
	s.stop()
}

// testRunningJobsCap (issue 12): with MaxRunningJobs 1, a second job (new
// or resumed) is refused with ResourceExhausted naming the limit until
// the running one is paused or canceled.
func testRunningJobsCap(t *testing.T, c *testcluster.Cluster) {
	ds := buildDataset(t, "jobcap", 200, 1)
	srv := serveDataset(t, ds)
	srv.hook = func(w http.ResponseWriter, r *http.Request, name string, n int) bool {
		halfThenWait(w, r, ds.files[name]) // no job finishes
		return true
	}
	o := testOptions(t, c, t.TempDir())
	o.MaxRunningJobs = 1
	s := startService(t, o)
	s.start(t, srv.manifestURL(), "jobcap-a")

	refused := func(what string, err error) {
		t.Helper()
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "1 bulk-load jobs are running") ||
			!strings.Contains(err.Error(), "MaxRunningJobs") {
			t.Errorf("%s beyond the cap: %v, want ResourceExhausted naming the limit", what, err)
		}
	}
	_, err := s.client.StartJob(ctxT(t), &downloaderv1.StartJobRequest{ManifestUrl: srv.manifestURL(), JobId: "jobcap-b"})
	refused("StartJob", err)
	if _, err := s.client.GetJob(ctxT(t), &downloaderv1.GetJobRequest{JobId: "jobcap-b"}); status.Code(err) != codes.NotFound {
		t.Errorf("a refused job was created: %v", err)
	}

	if _, err := s.client.PauseJob(ctxT(t), &downloaderv1.PauseJobRequest{JobId: "jobcap-a"}); err != nil {
		t.Fatalf("PauseJob: %v", err)
	}
	s.start(t, srv.manifestURL(), "jobcap-b") // a paused job does not count
	_, err = s.client.ResumeJob(ctxT(t), &downloaderv1.ResumeJobRequest{JobId: "jobcap-a"})
	refused("ResumeJob", err)
	if j := s.get(t, "jobcap-a"); j.GetState() != paused {
		t.Errorf("refused resume changed the job to %s", j.GetState())
	}

	if _, err := s.client.CancelJob(ctxT(t), &downloaderv1.CancelJobRequest{JobId: "jobcap-b"}); err != nil {
		t.Fatalf("CancelJob: %v", err)
	}
	if _, err := s.client.ResumeJob(ctxT(t), &downloaderv1.ResumeJobRequest{JobId: "jobcap-a"}); err != nil {
		t.Errorf("ResumeJob once the other job is canceled: %v", err)
	}
}
