package tool

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/slotkv/slotkv/pkg/logtest"
)

// serveFixture is a directory with a dataset in ds/ and, next to the
// served directory, a file no request may reach.
func serveFixture(t *testing.T) (served, manifest string) {
	t.Helper()
	base := t.TempDir()
	served = filepath.Join(base, "served")
	if err := os.MkdirAll(filepath.Join(served, "ds"), 0o755); err != nil {
		t.Fatal(err)
	}
	manifest = `{"format_version":1,"files":[]}` + "\n"
	writeInput(t, filepath.Join(served, "ds"), "manifest.json", manifest)
	secret := writeInput(t, base, "secret.txt", "top secret\n")
	if err := os.Symlink(secret, filepath.Join(served, "ds", "escape.txt")); err != nil {
		t.Fatal(err)
	}
	return served, manifest
}

func TestFileServer(t *testing.T) {
	t.Parallel()
	dir, manifest := serveFixture(t)
	h, root, err := NewFileServer(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	srv := httptest.NewServer(h)
	defer srv.Close()

	for _, tc := range []struct {
		name       string
		method     string
		rawPath    string // sent as is on the request line
		header     map[string]string
		wantStatus int
		wantBody   string // exact, when not empty
		wantHeader map[string]string
	}{
		{name: "manifest", rawPath: "/ds/manifest.json", wantStatus: 200, wantBody: manifest,
			wantHeader: map[string]string{"Accept-Ranges": "bytes"}},
		{name: "range", rawPath: "/ds/manifest.json", header: map[string]string{"Range": "bytes=2-15"}, wantStatus: 206,
			wantBody: manifest[2:16], wantHeader: map[string]string{"Content-Range": "bytes 2-15/" + strconv.Itoa(len(manifest))}},
		{name: "open-ended range", rawPath: "/ds/manifest.json", header: map[string]string{"Range": "bytes=20-"}, wantStatus: 206,
			wantBody: manifest[20:]},
		{name: "range past the end", rawPath: "/ds/manifest.json", header: map[string]string{"Range": "bytes=9999-"}, wantStatus: 416},
		{name: "head", method: http.MethodHead, rawPath: "/ds/manifest.json", wantStatus: 200,
			wantHeader: map[string]string{"Content-Length": strconv.Itoa(len(manifest))}},
		{name: "missing file", rawPath: "/ds/part-00000.skv", wantStatus: 404},
		{name: "dotdot", rawPath: "/../secret.txt", wantStatus: 400},
		{name: "dotdot inside", rawPath: "/ds/../../secret.txt", wantStatus: 400},
		{name: "encoded dotdot", rawPath: "/%2e%2e/secret.txt", wantStatus: 400},
		// os.Root refuses to follow it; net/http answers its error with 500.
		{name: "symlink out of the dir", rawPath: "/ds/escape.txt", wantStatus: 500},
		{name: "post", method: http.MethodPost, rawPath: "/ds/manifest.json", wantStatus: 405},
		{name: "healthz", rawPath: "/healthz", wantStatus: 200, wantBody: "ok\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = http.MethodGet
			}
			req, err := http.NewRequest(method, srv.URL, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.URL.Opaque = tc.rawPath // keeps ".." that URL parsing would clean
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("%s %s: status %d, want %d; body %q", method, tc.rawPath, resp.StatusCode, tc.wantStatus, body)
			}
			if tc.wantBody != "" && string(body) != tc.wantBody {
				t.Errorf("body %q, want %q", body, tc.wantBody)
			}
			if bytes.Contains(body, []byte("top secret")) {
				t.Errorf("served a file outside the directory: %q", body)
			}
			for k, v := range tc.wantHeader {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
		})
	}
}

// TestServeCommand runs `serve` as the binary would, probes it with
// `healthcheck`, downloads a file, and stops it by cancelling its context
// (what SIGTERM does in main).
func TestServeCommand(t *testing.T) {
	t.Parallel()
	dir, manifest := serveFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	var stderr logtest.Buffer
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, []string{"serve", "--dir", dir, "--listen", "127.0.0.1:0"}, pw, &stderr)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("no listening line: %v; stderr:\n%s", err, stderr.String())
	}
	go io.Copy(io.Discard, pr)
	base := strings.TrimSpace(line[strings.Index(line, "http://"):])

	if code, _, errOut := run(t, "healthcheck", "--url", base+"/healthz"); code != 0 {
		t.Fatalf("healthcheck of a running server: exit %d: %s", code, errOut)
	}
	resp, err := http.Get(base + "/ds/manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != manifest {
		t.Fatalf("GET manifest: %d %q", resp.StatusCode, body)
	}

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("serve exited %d after shutdown; stderr:\n%s", code, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop after its context ended")
	}
	if code, _, errOut := run(t, "healthcheck", "--url", base+"/healthz", "--timeout", "2s"); code != 1 {
		t.Fatalf("healthcheck of a stopped server: exit %d, want 1: %s", code, errOut)
	}
}
