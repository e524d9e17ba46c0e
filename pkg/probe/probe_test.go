package probe

import (
	"bytes"
	"context"
	"io"
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
		if r.URL.Path != readyz {
			http.NotFound(w, r)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(ok.Close)
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "no topology loaded yet\n")
	}))
	t.Cleanup(bad.Close)
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	return ok.URL + readyz, bad.URL + readyz, gone.URL + readyz
}

const readyz = "/readyz"

func TestGet(t *testing.T) {
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
			err := Get(context.Background(), tc.url)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Get(%s) = %v, want nil", tc.url, err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Get(%s) = %v, want an error containing %q", tc.url, err, tc.wantErr)
			}
		})
	}
}

func TestURL(t *testing.T) {
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
		got, err := URL(tc.addr, readyz)
		if tc.want == "" {
			if err == nil || !strings.Contains(err.Error(), "--url") {
				t.Errorf("URL(%q) = %q, %v; want an error pointing at --url", tc.addr, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("URL(%q) = %q, %v; want %q", tc.addr, got, err, tc.want)
		}
	}
}

func TestRun(t *testing.T) {
	t.Parallel()
	ready, notReady, down := probeTargets(t)
	readyAddr := strings.TrimSuffix(strings.TrimPrefix(ready, "http://"), readyz)
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
		{name: "env URL", env: map[string]string{EnvURL: ready}, wantCode: 0},
		{name: "flag beats env", args: []string{"--url", notReady}, env: map[string]string{EnvURL: ready}, wantCode: 1},
		{name: "default address", defAddr: readyAddr, wantCode: 0},
		{name: "SLOTKV_HTTP_ADDR beats the default", defAddr: "127.0.0.1:1", env: map[string]string{"SLOTKV_HTTP_ADDR": readyAddr}, wantCode: 0},
		{name: "HTTP off", defAddr: "", wantCode: 2, wantStderr: "give --url"},
		{name: "bad timeout", args: []string{"--url", ready, "--timeout", "soon"}, wantCode: 2},
		{name: "bad env timeout", args: []string{"--url", ready}, env: map[string]string{"SLOTKV_HEALTHCHECK_TIMEOUT": "soon"}, wantCode: 2, wantStderr: "SLOTKV_HEALTHCHECK_TIMEOUT"},
		{name: "extra argument", args: []string{"now"}, defAddr: readyAddr, wantCode: 2, wantStderr: "unexpected arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			lookup := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
			code := Run(context.Background(), tc.args, Target{Addr: tc.defAddr, AddrEnv: "SLOTKV_HTTP_ADDR", Path: readyz}, lookup, &stderr)
			if code != tc.wantCode || !strings.Contains(stderr.String(), tc.wantStderr) {
				t.Fatalf("exit %d, stderr %q; want %d and stderr containing %q", code, stderr.String(), tc.wantCode, tc.wantStderr)
			}
		})
	}
}

func TestCommandOtherArgs(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{nil, {}, {"--node-id", "n1"}, {"--healthcheck"}} {
		if code, ok := Command(args, Target{Addr: ":8100", AddrEnv: "SLOTKV_HTTP_ADDR", Path: readyz}); ok {
			t.Errorf("Command(%q) = %d, true; want the service to start", args, code)
		}
	}
}
