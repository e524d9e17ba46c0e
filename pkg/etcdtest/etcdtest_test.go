package etcdtest

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"
)

// TestStopRestartKeepsData runs the life a control-plane test needs: a
// write, etcd stopped (gracefully, then crashed) so that reads fail, and
// started again on the same ports and data, where the client that was open
// all along reads the write back.
func TestStopRestartKeepsData(t *testing.T) {
	t.Parallel()
	e := Start(t)
	cli := e.Client(t)
	ctx := context.Background()
	if _, err := cli.Put(ctx, "k", "v1"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		stop func(t *testing.T)
	}{
		{"sigterm", func(t *testing.T) {
			if err := e.Stop(); err != nil {
				t.Fatalf("etcd's exit after SIGTERM: %v", err)
			}
		}},
		{"sigkill", func(*testing.T) { e.Kill() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pid := e.Pid()
			tc.stop(t)
			if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
				t.Fatalf("etcd pid %d still exists after stop (kill -0: %v)", pid, err)
			}
			short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			_, err := cli.Get(short, "k")
			cancel()
			if err == nil {
				t.Fatal("a read succeeded while etcd was stopped")
			}
			e.Restart()
			if e.Pid() == pid {
				t.Fatalf("restarted etcd has the old pid %d", pid)
			}
			resp, err := cli.Get(ctx, "k")
			if err != nil {
				t.Fatalf("read after restart: %v", err)
			}
			if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v1" {
				t.Fatalf("after restart k = %v, want v1", resp.Kvs)
			}
		})
	}
}

// TestTwoInstancesAreSeparate: parallel tests each get their own cluster.
func TestTwoInstancesAreSeparate(t *testing.T) {
	t.Parallel()
	a, b := Start(t), Start(t)
	if a.Endpoint == b.Endpoint || a.DataDir == b.DataDir {
		t.Fatalf("two etcds share %s / %s", a.Endpoint, a.DataDir)
	}
	ctx := context.Background()
	if _, err := a.Client(t).Put(ctx, "only-in-a", "1"); err != nil {
		t.Fatal(err)
	}
	resp, err := b.Client(t).Get(ctx, "only-in-a")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 0 {
		t.Fatalf("b sees a's key: %v", resp.Kvs)
	}
}
