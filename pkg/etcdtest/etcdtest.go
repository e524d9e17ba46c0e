// Package etcdtest runs a real single-member etcd for tests: etcd's own
// server, built from the pinned go.etcd.io/etcd/server/v3 into bin/etcd by
// `make etcd` (make test builds it first), started as a process through
// pkg/proctest, with its data in t.TempDir() and stopped by its own pid in
// t.Cleanup.
//
// etcd cannot bind port 0 and report the port it got, so Start picks two
// free loopback ports (client and peer) with a listener, closes it, and
// passes them explicitly; if another process takes one in between, etcd
// fails to bind and Start tries again on new ports. A stopped etcd starts
// again on the same ports and data dir (Restart), so clients that hold its
// endpoint reconnect by themselves: that is what the "etcd down" tests need.
package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/slotkv/slotkv/pkg/proctest"
)

// RequireEnv, when set (make test sets it), turns a missing etcd binary
// into a test failure instead of a skip, so CI never skips these tests.
const RequireEnv = "SLOTKV_REQUIRE_ETCD"

// Bin returns the path of the etcd binary: $SLOTKV_BIN/etcd, else bin/etcd
// at the workspace root. When there is none the test is skipped, or fails
// when RequireEnv is set.
func Bin(t testing.TB) string {
	t.Helper()
	var tried []string
	if dir := os.Getenv("SLOTKV_BIN"); dir != "" {
		tried = append(tried, filepath.Join(dir, "etcd"))
	}
	if root, err := proctest.WorkspaceRoot(); err == nil {
		tried = append(tried, filepath.Join(root, "bin", "etcd"))
	}
	for _, p := range tried {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	msg := fmt.Sprintf("etcdtest: no etcd binary (looked at %s); run `make etcd` to build it", strings.Join(tried, ", "))
	if os.Getenv(RequireEnv) != "" {
		t.Fatalf("%s (%s is set, so this is not skipped)", msg, RequireEnv)
	}
	t.Skip(msg)
	return ""
}

// Options tunes Start.
type Options struct {
	// Args adds etcd flags, e.g. "--auto-compaction-mode=revision".
	Args []string
	// ReadyTimeout bounds each wait for etcd to answer a linearizable read
	// (default 60s: a loaded 2-core machine is slow to start it).
	ReadyTimeout time.Duration
}

// Etcd is a running (or stopped) single-member etcd.
type Etcd struct {
	// Endpoint is the client URL, http://127.0.0.1:PORT; it does not change
	// across Stop and Restart.
	Endpoint string
	// DataDir holds etcd's data; it survives Stop and Restart.
	DataDir string

	t    testing.TB
	bin  string
	o    Options
	peer string // peer URL

	mu   sync.Mutex
	proc *proctest.Proc
}

// Start starts etcd and waits until it serves linearizable reads.
func Start(t testing.TB) *Etcd {
	t.Helper()
	return StartWith(t, Options{})
}

// bindAttempts bounds the tries on fresh ports (Start) or on the same ports
// (Restart) when etcd finds one taken.
const bindAttempts = 5

// StartWith is Start with options.
func StartWith(t testing.TB, o Options) *Etcd {
	t.Helper()
	e := &Etcd{DataDir: filepath.Join(t.TempDir(), "etcd"), t: t, bin: Bin(t), o: o}
	var err error
	for range bindAttempts {
		ports, perr := freePorts(2)
		if perr != nil {
			t.Fatal(perr)
		}
		e.Endpoint = fmt.Sprintf("http://127.0.0.1:%d", ports[0])
		e.peer = fmt.Sprintf("http://127.0.0.1:%d", ports[1])
		if err = e.launch(); err == nil || !errors.Is(err, errBind) {
			break
		}
		// Nothing was written: a failed first start leaves a data dir that
		// names the old peer URL, which a start on new ports refuses.
		if rerr := os.RemoveAll(e.DataDir); rerr != nil {
			t.Fatal(rerr)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// Endpoints is []string{Endpoint}, for clientv3.Config.
func (e *Etcd) Endpoints() []string { return []string{e.Endpoint} }

// Client returns a client of this etcd, closed when the test ends. Its log
// is discarded: while etcd is stopped on purpose it would warn at each retry.
func (e *Etcd) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints(), Logger: zap.NewNop(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("etcdtest: client of %s: %v", e.Endpoint, err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Pid is the process id of the running etcd (of the last one when stopped).
func (e *Etcd) Pid() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.proc.Pid()
}

// Log returns what the running (or last) etcd process has written.
func (e *Etcd) Log() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.proc.Log()
}

// Stop stops etcd with SIGTERM and waits until it has exited; its data and
// ports are kept for Restart. Safe to call when it is already stopped. It
// returns nil for etcd's clean stop, which ends by raising SIGTERM again on
// itself once it has shut down (as its signal handler does). With watch
// streams open, etcd's graceful stop waits for them up to its request
// timeout (about 7 s) before it closes them; Kill is immediate.
func (e *Etcd) Stop() error {
	e.mu.Lock()
	p := e.proc
	e.mu.Unlock()
	err := p.Stop()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGTERM {
			return nil
		}
	}
	return err
}

// Kill stops etcd with SIGKILL (a crash) and waits until it has exited.
func (e *Etcd) Kill() {
	e.mu.Lock()
	p := e.proc
	e.mu.Unlock()
	p.Kill()
}

// Restart starts a stopped etcd again on the same data dir and ports and
// waits until it serves linearizable reads; it fails the test otherwise.
// Call it from the test goroutine. A port taken meanwhile by another
// process (a client's ephemeral port) is tried again a few times.
func (e *Etcd) Restart() {
	e.t.Helper()
	e.mu.Lock()
	p := e.proc
	e.mu.Unlock()
	select {
	case <-p.Done():
	default:
		e.t.Fatalf("etcdtest: Restart of etcd (pid %d) that is still running; Stop or Kill it first", p.Pid())
	}
	var err error
	for range bindAttempts {
		if err = e.launch(); err == nil || !errors.Is(err, errBind) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		e.t.Fatal(err)
	}
}

// launch starts one etcd process on e's ports and data dir and waits until a
// linearizable read succeeds, which needs the member to have elected itself.
func (e *Etcd) launch() error {
	cli, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints(), Logger: zap.NewNop()})
	if err != nil {
		return fmt.Errorf("etcdtest: client of %s: %w", e.Endpoint, err)
	}
	defer cli.Close()
	timeout := e.o.ReadyTimeout
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	args := append([]string{
		"--name", "default",
		"--data-dir", e.DataDir,
		"--listen-client-urls", e.Endpoint,
		"--advertise-client-urls", e.Endpoint,
		"--listen-peer-urls", e.peer,
		"--initial-advertise-peer-urls", e.peer,
		"--initial-cluster", "default=" + e.peer,
		"--initial-cluster-state", "new",
		// A cluster id of its own, so this member can never join another
		// test's etcd on a reused port.
		"--initial-cluster-token", fmt.Sprintf("etcdtest-%s-%d", e.peer, time.Now().UnixNano()),
		// Tests need no durability against a machine crash, and fsync on a
		// machine busy with parallel tests makes every write slow. A process
		// stop, even SIGKILL, loses nothing: the writes are in the page cache.
		"--unsafe-no-fsync",
	}, e.o.Args...)
	p, err := proctest.Launch(e.t, proctest.Options{
		ReadyTimeout: timeout,
		Ready: func(ctx context.Context) error {
			// What `etcdctl endpoint health` does: a linearizable read.
			_, err := cli.Get(ctx, "health")
			return err
		},
	}, e.bin, args...)
	if err != nil {
		if p != nil && strings.Contains(p.Log(), "address already in use") {
			return fmt.Errorf("etcdtest: %w: %w", errBind, err)
		}
		return fmt.Errorf("etcdtest: %w", err)
	}
	e.mu.Lock()
	e.proc = p
	e.mu.Unlock()
	return nil
}

// errBind marks a failed start where etcd found one of its ports taken.
var errBind = errors.New("a port of etcd was taken")

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("etcdtest: free port: %w", err)
		}
		// Held until all are picked, so the n ports differ.
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
