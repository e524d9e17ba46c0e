package server

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slotkv/slotkv/pkg/auth"
	"github.com/slotkv/slotkv/pkg/flagenv"
)

func TestIsLoopback(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]bool{
		"127.0.0.1:7000": true, "127.1.2.3:0": true, "[::1]:7000": true, "localhost:80": true, "LOCALHOST:80": true,
		":7000": false, "0.0.0.0:7000": false, "[::]:7000": false, "10.0.0.5:7000": false, "storage1:7100": false, "nonsense": false,
	} {
		if got := IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestCheckExposure(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name           string
		grpc, http     string
		token          bool
		insecure       bool
		wantErr        bool
		wantInErrorMsg string
	}{
		{name: "loopback open", grpc: "127.0.0.1:0", http: "127.0.0.1:0"},
		{name: "loopback, no HTTP", grpc: "127.0.0.1:0"},
		{name: "wildcard gRPC open", grpc: ":7000", http: "127.0.0.1:0", wantErr: true, wantInErrorMsg: `--grpc-addr ":7000"`},
		{name: "wildcard HTTP open", grpc: "127.0.0.1:0", http: "0.0.0.0:8080", wantErr: true, wantInErrorMsg: `--http-addr "0.0.0.0:8080"`},
		{name: "wildcard with a token", grpc: ":7000", http: ":8080", token: true},
		{name: "wildcard, insecure", grpc: ":7000", http: ":8080", insecure: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := CheckExposure(tt.grpc, tt.http, tt.token, tt.insecure)
			if (err != nil) != tt.wantErr {
				t.Fatalf("CheckExposure = %v, want error %v", err, tt.wantErr)
			}
			if err == nil {
				return
			}
			if !errors.Is(err, ErrExposed) {
				t.Errorf("error %v is not ErrExposed", err)
			}
			for _, s := range []string{tt.wantInErrorMsg, "--insecure", "SLOTKV_INSECURE", "--token"} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not name %s", err, s)
				}
			}
		})
	}
}

// TestStartRefusesExposedOpenCluster: Start itself checks, so a service
// started from code (not from the flags) cannot skip the check.
func TestStartRefusesExposedOpenCluster(t *testing.T) {
	t.Parallel()
	_, err := Start(context.Background(), Options{Name: "svc", GRPCAddr: "0.0.0.0:0", Logger: slog.New(slog.DiscardHandler)})
	if !errors.Is(err, ErrExposed) {
		t.Fatalf("Start on 0.0.0.0 without a token = %v, want ErrExposed", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := Start(ctx, Options{Name: "svc", GRPCAddr: "0.0.0.0:0", Insecure: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("Start on 0.0.0.0 with Insecure: %v", err)
	}
	cancel()
	if err := s.Wait(); err != nil {
		t.Fatal(err)
	}
}

func TestFlags(t *testing.T) {
	t.Parallel()
	parse := func(args []string, env map[string]string) (Flags, error) {
		fs := flag.NewFlagSet("svc", flag.ContinueOnError)
		fs.SetOutput(&bytes.Buffer{})
		var f Flags
		f.Register(fs, Common{GRPCAddr: "127.0.0.1:7000", HTTPAddr: "127.0.0.1:8000"})
		if err := flagenv.ParseLookup(fs, args, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
			return f, err
		}
		return f, f.Finish()
	}

	f, err := parse(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if f.GRPCAddr != "127.0.0.1:7000" || f.HTTPAddr != "127.0.0.1:8000" || f.ShutdownTimeout != DefaultShutdownTimeout ||
		f.SampleRatio != 1 || f.LogLevel != slog.LevelInfo || !f.Tokens.Open() || f.Insecure || f.Profiling == nil {
		t.Errorf("defaults: %+v", f)
	}

	f, err = parse([]string{"--grpc-addr", "127.0.0.1:1", "--shutdown-timeout", "3s", "--log-level", "debug"}, map[string]string{
		"SLOTKV_GRPC_ADDR": "127.0.0.1:2", // the flag wins
		"SLOTKV_HTTP_ADDR": "0.0.0.0:3", "SLOTKV_TOKEN": "tok", "SLOTKV_LISTEN_FILE": "/tmp/x.json",
		"SLOTKV_TRACE_SAMPLE_RATIO": "0.5", "SLOTKV_MUTEX_PROFILE_FRACTION": "5",
	})
	if err != nil {
		t.Fatal(err)
	}
	if f.GRPCAddr != "127.0.0.1:1" || f.HTTPAddr != "0.0.0.0:3" || f.Tokens != auth.OneToken("tok") || f.ListenFile != "/tmp/x.json" ||
		f.ShutdownTimeout != 3*time.Second || f.SampleRatio != 0.5 || f.LogLevel != slog.LevelDebug || f.Profiling.MutexProfileFraction != 5 {
		t.Errorf("flags and environment: %+v", f)
	}
	mc := f.MainConfig("svc", nil)
	if mc.Name != "svc" || mc.ListenFile != "/tmp/x.json" || mc.SampleRatio != 0.5 || mc.Profiling != f.Profiling {
		t.Errorf("MainConfig = %+v", mc)
	}

	if _, err := parse([]string{"--http-addr", ":8000"}, nil); !errors.Is(err, ErrExposed) {
		t.Errorf("open cluster on :8000: %v, want ErrExposed", err)
	}
	if _, err := parse([]string{"--http-addr", ":8000"}, map[string]string{"SLOTKV_INSECURE": "true"}); err != nil {
		t.Errorf("open cluster on :8000 with SLOTKV_INSECURE: %v", err)
	}
	if _, err := parse([]string{"--trace-sample-ratio", "2"}, nil); err == nil || !strings.Contains(err.Error(), "--trace-sample-ratio") {
		t.Errorf("sample ratio 2: %v, want an error naming the flag", err)
	}
}

func TestFlagsTokens(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	adminFile := write("admin", "admin-from-file\n")
	dataFile := write("data", "data-from-file\r\n")
	emptyFile := write("empty", "\n")
	missing := filepath.Join(dir, "missing")

	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    auth.Tokens
		wantErr []string // substrings of the error
	}{
		{name: "none", want: auth.Tokens{}},
		{name: "--token sets both", args: []string{"--token", "t"}, want: auth.OneToken("t")},
		{name: "two tokens", args: []string{"--data-token", "d", "--admin-token", "a"}, want: auth.Tokens{Data: "d", Admin: "a"}},
		{name: "admin overrides --token", args: []string{"--token", "t", "--admin-token", "a"}, want: auth.Tokens{Data: "t", Admin: "a"}},
		{name: "admin only", args: []string{"--admin-token", "a"}, want: auth.Tokens{Admin: "a"}},
		{name: "environment", env: map[string]string{"SLOTKV_DATA_TOKEN": "d", "SLOTKV_ADMIN_TOKEN": "a"}, want: auth.Tokens{Data: "d", Admin: "a"}},
		{name: "files, newline trimmed", args: []string{"--data-token-file", dataFile, "--admin-token-file", adminFile}, want: auth.Tokens{Data: "data-from-file", Admin: "admin-from-file"}},
		{name: "files from the environment", env: map[string]string{"SLOTKV_ADMIN_TOKEN_FILE": adminFile}, want: auth.Tokens{Admin: "admin-from-file"}},
		{name: "unreadable file", args: []string{"--admin-token-file", missing}, wantErr: []string{"--admin-token-file", missing}},
		{name: "empty file", args: []string{"--data-token-file", emptyFile, "--admin-token", "a"}, wantErr: []string{"--data-token-file", emptyFile, "empty"}},
		{name: "token and file", args: []string{"--admin-token", "a", "--admin-token-file", adminFile}, wantErr: []string{"--admin-token", "--admin-token-file"}},
		{name: "data without admin", args: []string{"--data-token", "d"}, wantErr: []string{"--admin-token"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fs := flag.NewFlagSet("svc", flag.ContinueOnError)
			fs.SetOutput(&bytes.Buffer{})
			var f Flags
			f.Register(fs, Common{GRPCAddr: "127.0.0.1:0"})
			err := flagenv.ParseLookup(fs, tt.args, func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok })
			if err == nil {
				err = f.Finish()
			}
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("no error, tokens %+v", f.Tokens)
				}
				for _, s := range tt.wantErr {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not name %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if f.Tokens != tt.want {
				t.Errorf("tokens = %+v, want %+v", f.Tokens, tt.want)
			}
		})
	}
}
