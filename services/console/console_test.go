package console

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/status"

	downloaderv1 "github.com/slotkv/slotkv/gen/slotkv/downloader/v1"
	migratorv1 "github.com/slotkv/slotkv/gen/slotkv/migrator/v1"
	"github.com/slotkv/slotkv/pkg/auth"
	"github.com/slotkv/slotkv/pkg/slot"
)

const (
	adminToken = "console-admin-secret"
	dataToken  = "console-data-secret"
)

// One stack for the tests of a token-protected cluster: starting one is
// the expensive part.
func TestConsole(t *testing.T) {
	t.Parallel()
	s := startStack(t, adminToken, auth.Tokens{Admin: adminToken, Data: dataToken})
	hc := s.client()

	t.Run("login", func(t *testing.T) {
		anon := s.client()
		for _, path := range []string{"/", "/migrations", "/bulkloads", "/traffic"} {
			resp, err := anon.Get(s.srv.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/login") {
				t.Errorf("GET %s without a session: %s to %q, want 303 to /login", path, resp.Status, resp.Header.Get("Location"))
			}
		}
		if code, body := s.post(anon, "/api/migrations", map[string]string{}); code != http.StatusUnauthorized {
			t.Errorf("API without a session: %d %v, want 401", code, body)
		}
		for _, tc := range []struct{ token, want string }{
			{"", "enter the admin token"},
			{"guess", "wrong token"},
			{dataToken, "that is the data token"},
		} {
			resp, err := anon.PostForm(s.srv.URL+"/login", map[string][]string{"token": {tc.token}})
			if err != nil {
				t.Fatal(err)
			}
			b := readAll(t, resp)
			if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(b, tc.want) {
				t.Errorf("login with %q: %s, want 401 saying %q:\n%s", tc.token, resp.Status, tc.want, b)
			}
			if len(resp.Cookies()) > 0 {
				t.Errorf("login with %q set cookies %v", tc.token, resp.Cookies())
			}
		}
		resp := s.login(hc, adminToken)
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/migrations" {
			t.Fatalf("login: %s to %q, want 303 to /migrations", resp.Status, resp.Header.Get("Location"))
		}
		ck := resp.Cookies()
		if len(ck) != 1 || ck[0].Name != sessionCookie || !ck[0].HttpOnly || ck[0].SameSite != http.SameSiteStrictMode {
			t.Fatalf("session cookie %v: want one HttpOnly SameSite=Strict %s", ck, sessionCookie)
		}
		if strings.Contains(ck[0].Value, adminToken) || strings.Contains(resp.Header.Get("Location"), adminToken) {
			t.Fatal("the token is in the cookie or the URL")
		}
		// A page with the session, whose body does not carry the token.
		r2, err := hc.Get(s.srv.URL + "/")
		if err != nil {
			t.Fatal(err)
		}
		if b := readAll(t, r2); r2.StatusCode != http.StatusOK || strings.Contains(b, adminToken) || !strings.Contains(b, `id="slotbar"`) {
			t.Fatalf("cluster page: %s (token shown: %v)", r2.Status, strings.Contains(b, adminToken))
		}
		if csp := r2.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
			t.Errorf("Content-Security-Policy %q", csp)
		}
		// Another site's form cannot act with the session.
		req, _ := http.NewRequest(http.MethodPost, s.srv.URL+"/api/migrations/x/cancel", strings.NewReader("{}"))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Origin", "http://evil.example")
		r3, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if r3.Body.Close(); r3.StatusCode != http.StatusForbidden {
			t.Errorf("cross-site POST: %s, want 403", r3.Status)
		}
	})

	t.Run("cluster", func(t *testing.T) {
		st := s.waitState(hc, "3 healthy nodes", func(st appState) bool {
			ok := 0
			for _, n := range st.Cluster.Nodes {
				if n.Health == "ok" {
					ok++
				}
			}
			return ok == 3
		})
		if st.Cluster.Version != 1 || st.Cluster.From != "etcd" || len(st.Cluster.Errors) != 0 || len(st.Cluster.Dead) != 0 {
			t.Errorf("topology v%d from %q, errors %v, dead %v: want v1 from etcd, no error, none dead", st.Cluster.Version, st.Cluster.From, st.Cluster.Errors, st.Cluster.Dead)
		}
		covered := 0
		for _, o := range st.Cluster.Owners {
			covered += int(o.End-o.Start) + 1
		}
		if covered != slot.Count {
			t.Errorf("owner spans cover %d slots, want %d: %v", covered, slot.Count, st.Cluster.Owners)
		}
		slots := 0
		for _, n := range st.Cluster.Nodes {
			slots += n.Slots
			if n.GRPC == "" || n.HTTP == "" || n.Color == "" || n.DiskBytes <= 0 {
				t.Errorf("node %+v: address, color or disk missing", n)
			}
		}
		if slots != slot.Count {
			t.Errorf("nodes own %d slots, want %d", slots, slot.Count)
		}
		links := map[string]string{}
		for _, l := range st.Cluster.Links {
			links[l.Name] = l.URL
		}
		for name, addr := range map[string]string{"router": s.router.HTTP, "migrator": s.migrator.HTTP, "downloader": s.downloader.HTTP, "storage n1": s.cluster.Nodes[0].Proc.HTTP} {
			if want := "http://" + addr + "/openapi.json"; links[name] != want {
				t.Errorf("link %s = %q, want %q", name, links[name], want)
			}
		}
		// The same view arrives on the event stream.
		ev := readEvents(t, hc, s.srv.URL+"/events", kindCluster, kindTraffic, kindMigrations, kindBulkloads)
		var cv clusterView
		if err := json.Unmarshal([]byte(ev[kindCluster]), &cv); err != nil || len(cv.Nodes) != 3 {
			t.Errorf("cluster event: %v, %d nodes", err, len(cv.Nodes))
		}
	})

	t.Run("traffic", func(t *testing.T) {
		s.load("traffic", 2000, 16)
		s.waitState(hc, "a request rate and a latency on every node", func(st appState) bool {
			if len(st.Traffic.Nodes) != 3 {
				return false
			}
			for _, n := range st.Traffic.Nodes {
				rate, lat := false, false
				for _, p := range n.Points {
					rate = rate || (p.Rate != nil && *p.Rate > 0)
					lat = lat || (p.LatencyMs != nil && *p.LatencyMs > 0)
				}
				if !rate || !lat {
					return false
				}
			}
			return true
		})
	})

	t.Run("migrations", func(t *testing.T) {
		api := s.migratorAPI()
		// A bad range: the page gets the migrator's own message.
		bad := map[string]string{"source": "n1", "destination": "n2", "ranges": "5000-100"}
		code, body := s.post(hc, "/api/migrations", bad)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := api.StartMigration(ctx, &migratorv1.StartMigrationRequest{SourceNodeId: "n1", DestinationNodeId: "n2", Ranges: "5000-100"})
		if err == nil {
			t.Fatal("the migrator took range 5000-100")
		}
		if want := status.Convert(err).Message(); code != http.StatusBadRequest || body["error"] != want || body["code"] != "InvalidArgument" {
			t.Errorf("bad range: %d %v, want 400 with the migrator's %q", code, body, want)
		}
		// Bad numbers are named before any call.
		for _, tc := range []struct{ field, value string }{{"parallelism", "two"}, {"rate", "fast"}} {
			in := map[string]string{"source": "n1", "destination": "n2", "ranges": "0-10", tc.field: tc.value}
			if code, body := s.post(hc, "/api/migrations", in); code != http.StatusBadRequest || !strings.HasPrefix(body["error"].(string), tc.field+": ") {
				t.Errorf("%s %q: %d %v, want 400 naming the field", tc.field, tc.value, code, body)
			}
		}

		// A slow job: change its rate, then cancel it.
		s.load("mig", 3000, 512)
		code, body = s.post(hc, "/api/migrations", map[string]string{"job_id": "slow", "source": "n3", "destination": "n1", "ranges": "11000-16383", "parallelism": "2", "rate": "20KiB"})
		if code != http.StatusOK || body["phase"] == nil {
			t.Fatalf("start: %d %v", code, body)
		}
		st := s.waitState(hc, "the slow job's streams", func(st appState) bool {
			j, ok := st.migration("slow")
			return ok && len(j.Streams) == 2 && j.Streams[0].Total > 0 && j.Streams[0].Keys > 0
		})
		j, _ := st.migration("slow")
		if j.Phase != "SNAPSHOT" || j.RateLimit != 20<<10 {
			t.Errorf("slow job: phase %s rate limit %d", j.Phase, j.RateLimit)
		}
		if code, body := s.post(hc, "/api/migrations/slow/rate", map[string]string{"rate": "10KiB"}); code != http.StatusOK || body["rate_limit"] != float64(10<<10) {
			t.Errorf("set rate: %d %v", code, body)
		}
		ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel2()
		got, err := api.GetMigration(ctx2, &migratorv1.GetMigrationRequest{JobId: "slow"})
		if err != nil || got.GetMigration().GetRateBytesPerSecond() != 10<<10 {
			t.Errorf("the migrator has rate %d (%v), want 10KiB", got.GetMigration().GetRateBytesPerSecond(), err)
		}
		if code, body := s.post(hc, "/api/migrations/slow/cancel", nil); code != http.StatusOK {
			t.Errorf("cancel: %d %v", code, body)
		}
		s.waitState(hc, "the slow job canceled", func(st appState) bool {
			j, ok := st.migration("slow")
			return ok && j.Phase == "CANCELED" && j.Ended
		})
		if code, body := s.post(hc, "/api/migrations/nosuchjob/cancel", nil); code != http.StatusNotFound {
			t.Errorf("cancel of an unknown job: %d %v, want 404", code, body)
		}

		// A job that finishes: the slot bar changes owner.
		if st := s.state(hc); st.owner(0) != "n1" {
			t.Fatalf("slot 0 is %q's before the move, want n1's", st.owner(0))
		}
		code, body = s.post(hc, "/api/migrations", map[string]string{"job_id": "move", "source": "n1", "destination": "n2", "ranges": "0-999", "parallelism": "2"})
		if code != http.StatusOK {
			t.Fatalf("start: %d %v", code, body)
		}
		st = s.waitState(hc, "the move done and slot 0 on n2", func(st appState) bool {
			j, ok := st.migration("move")
			return ok && j.Phase == "SUCCEEDED" && st.owner(0) == "n2"
		})
		j, _ = st.migration("move")
		if j.Percent != 100 || len(j.Streams) != 2 || j.Streams[0].Percent != 100 || j.WritePauseMs <= 0 {
			t.Errorf("finished job %+v: want 100%%, two streams at 100%%, a write pause", j)
		}
	})

	t.Run("bulkloads", func(t *testing.T) {
		url := s.dataset(5000)
		code, body := s.post(hc, "/api/bulkloads", map[string]string{"manifest_url": url, "job_id": "load"})
		if code != http.StatusOK {
			t.Fatalf("start: %d %v", code, body)
		}
		st := s.waitState(hc, "the bulk load done", func(st appState) bool {
			j, ok := st.bulkload("load")
			return ok && j.Ended
		})
		j, _ := st.bulkload("load")
		if j.State != "SUCCEEDED" || j.Ingest.Done != 5000 || j.Ingest.Percent != 100 || len(j.Files) < 2 {
			t.Fatalf("bulk load %+v: want SUCCEEDED, 5000 records, several files", j)
		}
		for _, f := range j.Files {
			if f.State != "SUCCEEDED" || f.Ingest.Percent != 100 || f.Download.Percent != 100 {
				t.Errorf("file %+v", f)
			}
		}
		// A job started elsewhere shows its files too once it ended, and
		// keeps them: the downloader lists jobs without their files, and
		// a later list must not replace the watched, complete view.
		dl := s.downloaderAPI()
		startDirect := func(id string) {
			t.Helper()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := dl.StartJob(ctx, &downloaderv1.StartJobRequest{ManifestUrl: url, JobId: id}); err != nil {
				t.Fatalf("StartJob %s at the downloader: %v", id, err)
			}
		}
		startDirect("direct")
		s.waitState(hc, "the direct bulk load done, with its files", func(st appState) bool {
			j, ok := st.bulkload("direct")
			return ok && j.Ended && len(j.Files) >= 2
		})
		// A job the console learns of from a list only: once it shows,
		// a list has come after the others ended.
		startDirect("later")
		s.waitState(hc, "the later bulk load done", func(st appState) bool {
			j, ok := st.bulkload("later")
			return ok && j.Ended
		})
		for _, id := range []string{"load", "direct"} {
			if j, ok := stateAt(t, hc, s.srv.URL).bulkload(id); !ok || len(j.Files) < 2 {
				t.Errorf("bulk load %s after a list: %d files, want the files its watch brought", id, len(j.Files))
			}
		}
		// Pause and resume from the console, on a job held back by the
		// downloader's bandwidth cap.
		setBandwidth := func(bps uint64) {
			t.Helper()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := dl.UpdateSettings(ctx, &downloaderv1.UpdateSettingsRequest{BandwidthBytesPerSecond: &bps}); err != nil {
				t.Fatal(err)
			}
		}
		setBandwidth(32 << 10)
		if code, body := s.post(hc, "/api/bulkloads", map[string]string{"manifest_url": s.dataset(3000), "job_id": "paced"}); code != http.StatusOK {
			t.Fatalf("start: %d %v", code, body)
		}
		if code, body := s.post(hc, "/api/bulkloads/paced/pause", nil); code != http.StatusOK || body["state"] != "PAUSED" {
			t.Fatalf("pause: %d %v", code, body)
		}
		s.waitState(hc, "the paced job paused", func(st appState) bool {
			j, ok := st.bulkload("paced")
			return ok && j.State == "PAUSED"
		})
		setBandwidth(0)
		if code, body := s.post(hc, "/api/bulkloads/paced/resume", nil); code != http.StatusOK || body["state"] == "PAUSED" {
			t.Fatalf("resume: %d %v", code, body)
		}
		s.waitState(hc, "the paced job done", func(st appState) bool {
			j, ok := st.bulkload("paced")
			return ok && j.State == "SUCCEEDED" && j.Ingest.Done == 3000
		})

		// The downloader's refusals come back as it wrote them.
		for _, tc := range []struct {
			path string
			body map[string]string
			code int
		}{
			{"/api/bulkloads", map[string]string{"manifest_url": "ftp://nowhere/manifest.json"}, http.StatusBadRequest},
			{"/api/bulkloads/nosuchjob/pause", nil, http.StatusNotFound},
			{"/api/bulkloads/load/explode", nil, http.StatusBadRequest},
		} {
			if code, body := s.post(hc, tc.path, tc.body); code != tc.code || body["error"] == "" {
				t.Errorf("POST %s %v: %d %v, want %d with a message", tc.path, tc.body, code, body, tc.code)
			}
		}
	})

	t.Run("logout", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, s.srv.URL+"/logout", nil)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		r2, err := hc.Get(s.srv.URL + "/api/state")
		if err != nil {
			t.Fatal(err)
		}
		if r2.Body.Close(); r2.StatusCode != http.StatusUnauthorized {
			t.Errorf("/api/state after logout: %s, want 401", r2.Status)
		}
	})
}

// An open cluster needs no login.
func TestOpenClusterNeedsNoLogin(t *testing.T) {
	t.Parallel()
	s := startStack(t, "", auth.Tokens{})
	hc := s.client()
	for _, path := range []string{"/", "/traffic", "/login"} {
		resp, err := hc.Get(s.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b := readAll(t, resp)
		want := http.StatusOK
		if path == "/login" {
			want = http.StatusSeeOther
		}
		if resp.StatusCode != want || strings.Contains(b, "Log out") {
			t.Errorf("GET %s: %s, want %d and no logout button", path, resp.Status, want)
		}
	}
	s.waitState(hc, "3 nodes", func(st appState) bool { return len(st.Cluster.Nodes) == 3 })
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	var sb strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			return sb.String()
		}
	}
}
