package server

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// probeTargets starts a ready server, a not-ready one and the URL of one
// that is down (started, then closed, so nothing listens on its port).
func probeTargets(t *testing.T) (ready, notReady, down string) {
	t.Helper()
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != ReadyzPath {
			http.NotFound(w, r)
			return
		}
		writeText(w, http.StatusOK, "ok")
	}))
	t.Cleanup(ok.Close)
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeText(w, http.StatusServiceUnavailable, "no topology loaded yet")
	}))
	t.Cleanup(bad.Close)
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	return ok.URL + ReadyzPath, bad.URL + ReadyzPath, gone.URL + ReadyzPath
}

func TestProbe(t *testing.T) {
	t.Parallel()
	ready, notReady, down := probeTargets(t)
	for _, tc := range []struct {
		name    string
		url     string
		wantErr string // "" = ready
	}{
		{"ready", ready, ""},
		{"not ready", notReady, "503 Service Unavailable: no topology loaded yet"},
		{"down", down, "connection refused"},
		{"bad URL", "://x", "probe URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Probe(context.Background(), tc.url)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Probe(%s) = %v, want nil", tc.url, err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Probe(%s) = %v, want an error containing %q", tc.url, err, tc.wantErr)
			}
		})
	}
}

func TestProbeURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ addr, want string }{
		{":8100", "http://127.0.0.1:8100/readyz"},
		{"0.0.0.0:8080", "http://127.0.0.1:8080/readyz"},
		{"[::]:8080", "http://127.0.0.1:8080/readyz"},
		{"10.0.0.5:8070", "http://10.0.0.5:8070/readyz"},
		{"[::1]:8070", "http://[::1]:8070/readyz"},
		{"", ""},            // HTTP turned off: nothing to probe
		{"127.0.0.1:0", ""}, // port picked at start: unknown here
		{"localhost", ""},   // no port
	} {
		got, err := ProbeURL(tc.addr)
		if tc.want == "" {
			if err == nil || !strings.Contains(err.Error(), "--url") {
				t.Errorf("ProbeURL(%q) = %q, %v; want an error pointing at --url", tc.addr, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ProbeURL(%q) = %q, %v; want %q", tc.addr, got, err, tc.want)
		}
	}
}

func TestHealthcheckCommand(t *testing.T) {
	t.Parallel()
	ready, notReady, down := probeTargets(t)
	readyAddr := strings.TrimSuffix(strings.TrimPrefix(ready, "http://"), ReadyzPath)
	for _, tc := range []struct {
		name       string
		args       []string
		env        map[string]string
		defAddr    string
		wantCode   int
		wantStderr string
	}{
		{name: "--url ready", args: []string{"--url", ready}, wantCode: 0},
		{name: "--url not ready", args: []string{"--url", notReady}, wantCode: 1, wantStderr: "not ready: GET " + notReady + ": 503"},
		{name: "--url down", args: []string{"--url", down}, wantCode: 1, wantStderr: "connection refused"},
		{name: "env URL", env: map[string]string{EnvHealthcheckURL: ready}, wantCode: 0},
		{name: "flag beats env", args: []string{"--url", notReady}, env: map[string]string{EnvHealthcheckURL: ready}, wantCode: 1},
		{name: "default address", defAddr: readyAddr, wantCode: 0},
		{name: "SLOTKV_HTTP_ADDR beats the default", defAddr: "127.0.0.1:1", env: map[string]string{EnvHTTPAddr: readyAddr}, wantCode: 0},
		{name: "HTTP off", defAddr: "", wantCode: 2, wantStderr: "give --url"},
		{name: "bad timeout", args: []string{"--url", ready, "--timeout", "soon"}, wantCode: 2},
		{name: "bad env timeout", args: []string{"--url", ready}, env: map[string]string{"SLOTKV_HEALTHCHECK_TIMEOUT": "soon"}, wantCode: 2, wantStderr: "SLOTKV_HEALTHCHECK_TIMEOUT"},
		{name: "extra argument", args: []string{"now"}, defAddr: readyAddr, wantCode: 2, wantStderr: "unexpected arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			lookup := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
			code := healthcheck(context.Background(), tc.args, tc.defAddr, lookup, &stderr)
			if code != tc.wantCode || !strings.Contains(stderr.String(), tc.wantStderr) {
				t.Fatalf("exit %d, stderr %q; want %d and stderr containing %q", code, stderr.String(), tc.wantCode, tc.wantStderr)
			}
		})
	}
}

func TestHealthcheckCommandOtherArgs(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{nil, {}, {"--node-id", "n1"}, {"--healthcheck"}} {
		if code, ok := HealthcheckCommand(args, ":8100"); ok {
			t.Errorf("HealthcheckCommand(%q) = %d, true; want the service to start", args, code)
		}
	}
}
