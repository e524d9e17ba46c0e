package server

import (
	"flag"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"

	"github.com/slotkv/slotkv/pkg/auth"
	"github.com/slotkv/slotkv/pkg/flagenv"
)

// pprof answers on the HTTP port of every server, behind the cluster token
// when one is set, and open when the cluster is open.
func TestPprof(t *testing.T) {
	t.Parallel()
	closed := start(t, Options{Tokens: auth.Tokens{Data: "q7-data", Admin: "q7-secret"}})
	open := start(t, Options{})
	tests := []struct {
		name  string
		h     *harness
		path  string
		token string
		want  int
	}{
		{"index with token", closed, PprofPath, "q7-secret", http.StatusOK},
		{"index without token", closed, PprofPath, "", http.StatusUnauthorized},
		{"index wrong token", closed, PprofPath, "bad", http.StatusForbidden},
		{"index with the data token", closed, PprofPath, "q7-data", http.StatusForbidden},
		{"profile with the data token", closed, PprofPath + "profile?seconds=1", "q7-data", http.StatusForbidden},
		{"cmdline with token", closed, PprofPath + "cmdline", "q7-secret", http.StatusOK},
		{"cmdline without token", closed, PprofPath + "cmdline", "", http.StatusUnauthorized},
		{"symbol with token", closed, PprofPath + "symbol", "q7-secret", http.StatusOK},
		{"mutex with token", closed, PprofPath + "mutex?debug=1", "q7-secret", http.StatusOK},
		{"block with token", closed, PprofPath + "block?debug=1", "q7-secret", http.StatusOK},
		{"block without token", closed, PprofPath + "block?debug=1", "", http.StatusUnauthorized},
		{"goroutine with token", closed, PprofPath + "goroutine?debug=1", "q7-secret", http.StatusOK},
		{"heap without token", closed, PprofPath + "heap", "", http.StatusUnauthorized},
		{"profile with token", closed, PprofPath + "profile?seconds=1", "q7-secret", http.StatusOK},
		{"profile without token", closed, PprofPath + "profile?seconds=1", "", http.StatusUnauthorized},
		{"trace with token", closed, PprofPath + "trace?seconds=0.05", "q7-secret", http.StatusOK},
		{"trace without token", closed, PprofPath + "trace?seconds=0.05", "", http.StatusUnauthorized},
		{"open cluster index", open, PprofPath, "", http.StatusOK},
		{"open cluster mutex", open, PprofPath + "mutex?debug=1", "", http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, body := get(t, http.DefaultClient, tt.h.url(tt.path), tt.token)
			if code != tt.want {
				t.Fatalf("GET %s = %d %q, want %d", tt.path, code, body, tt.want)
			}
			if code != http.StatusOK && strings.Contains(body, "q7-secret") {
				t.Errorf("refusal echoes the token: %q", body)
			}
		})
	}
}

// A 401 says which scheme to use.
func TestPprofChallenge(t *testing.T) {
	t.Parallel()
	h := start(t, Options{Tokens: auth.OneToken("tok")})
	resp, err := http.Get(h.url(PprofPath))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if got := resp.Header.Get("WWW-Authenticate"); resp.StatusCode != http.StatusUnauthorized || got != "Bearer" {
		t.Fatalf("GET without token: %d, WWW-Authenticate %q; want 401 and Bearer", resp.StatusCode, got)
	}
}

func TestProfilingFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    Profiling
		wantErr bool
	}{
		{"defaults off", nil, nil, Profiling{}, false},
		{"flags", []string{"--mutex-profile-fraction", "5", "--block-profile-rate", "1000"}, nil, Profiling{5, 1000}, false},
		{"env", nil, map[string]string{EnvMutexProfileFraction: "7", EnvBlockProfileRate: "10"}, Profiling{7, 10}, false},
		{"flag beats env", []string{"--mutex-profile-fraction", "2"}, map[string]string{EnvMutexProfileFraction: "7"}, Profiling{MutexProfileFraction: 2}, false},
		{"negative flag", []string{"--block-profile-rate", "-1"}, nil, Profiling{}, true},
		{"bad env", nil, map[string]string{EnvMutexProfileFraction: "lots"}, Profiling{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			p := ProfilingFlags(fs)
			err := flagenv.ParseLookup(fs, tt.args, func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok })
			if (err != nil) != tt.wantErr {
				t.Fatalf("parse: %v, want error %v", err, tt.wantErr)
			}
			if err == nil && *p != tt.want {
				t.Fatalf("got %+v, want %+v", *p, tt.want)
			}
		})
	}
}

func TestProfilingFromEnv(t *testing.T) {
	t.Parallel()
	env := map[string]string{EnvMutexProfileFraction: "3", EnvBlockProfileRate: ""}
	p, err := ProfilingFromEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil || p != (Profiling{MutexProfileFraction: 3}) {
		t.Fatalf("got %+v, %v; want mutex 3, block 0", p, err)
	}
	env[EnvBlockProfileRate] = "-4"
	_, err = ProfilingFromEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err == nil || !strings.Contains(err.Error(), EnvBlockProfileRate) {
		t.Fatalf("negative rate: %v, want an error naming %s", err, EnvBlockProfileRate)
	}
}

// Apply sets the runtime's mutex fraction, and a zero leaves it alone.
func TestProfilingApply(t *testing.T) {
	prev := runtime.SetMutexProfileFraction(-1)
	t.Cleanup(func() { runtime.SetMutexProfileFraction(prev) })
	Profiling{MutexProfileFraction: 9}.Apply()
	if got := runtime.SetMutexProfileFraction(-1); got != 9 {
		t.Fatalf("mutex fraction %d after Apply, want 9", got)
	}
	Profiling{}.Apply()
	if got := runtime.SetMutexProfileFraction(-1); got != 9 {
		t.Fatalf("mutex fraction %d after a zero Apply, want 9 kept", got)
	}
}
