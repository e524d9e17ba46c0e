package server

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
)

func TestMainWritesListenFileAndExitCodes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "listen.json")
	g := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1234}
	code := Main(context.Background(), MainConfig{Name: "test", LogLevel: slog.LevelError, ListenFile: path}, func(env Env) error {
		if env.Ctx == nil || env.Logger == nil || env.TracerProvider == nil {
			t.Error("env not filled in")
		}
		env.OnListen(g, nil)
		return nil
	})
	if code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var got ListenAddrs
	if err := json.Unmarshal(b, &got); err != nil || got.GRPC != "127.0.0.1:1234" {
		t.Fatalf("listen file %s: %v", b, err)
	}
	if code := Main(context.Background(), MainConfig{Name: "test", LogLevel: slog.LevelError}, func(Env) error { return errors.New("boom") }); code != 1 {
		t.Fatalf("failing service: exit code %d, want 1", code)
	}
	// An unwritable listen file stops the service and fails the exit code.
	code = Main(context.Background(), MainConfig{Name: "test", LogLevel: slog.LevelError, ListenFile: filepath.Join(dir, "missing", "l.json")}, func(env Env) error {
		env.OnListen(g, nil)
		<-env.Ctx.Done()
		return nil
	})
	if code != 1 {
		t.Fatalf("unwritable listen file: exit code %d, want 1", code)
	}
}
