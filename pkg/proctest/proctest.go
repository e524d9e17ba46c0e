// Package proctest starts slotkv binaries as real processes for tests: each
// listens on 127.0.0.1:0, reports the ports the kernel gave it through a
// listen file, keeps its data where the test says (t.TempDir()), and is
// stopped by its own pid in t.Cleanup.
//
// Binaries come from $SLOTKV_BIN (the Makefile builds them into bin/ before
// `make test`) or, when that is unset, are built once per test process from
// the workspace with `go build`.
package proctest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Packages maps each slotkv binary to its main package, relative to the
// workspace root.
var Packages = map[string]string{
	"slotkv-storage":    "./services/storage/cmd/slotkv-storage",
	"slotkv-router":     "./services/router/cmd/slotkv-router",
	"slotkv-downloader": "./services/downloader/cmd/slotkv-downloader",
	"slotkv-migrator":   "./services/migrator/cmd/slotkv-migrator",
	"slotkv-console":    "./services/console/cmd/slotkv-console",
	"slotkvctl":         "./cmd/slotkvctl",
	"slotkv-dataset":    "./cmd/slotkv-dataset",
	"faulthttp":         "./e2e/cmd/faulthttp",
}

var (
	buildMu  sync.Mutex
	built    = map[string]string{}
	buildDir string
)

// Bin returns the path of binary name, building it if needed.
func Bin(t testing.TB, name string) string {
	t.Helper()
	if dir := os.Getenv("SLOTKV_BIN"); dir != "" {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := built[name]; ok {
		return p
	}
	pkg, ok := Packages[name]
	if !ok {
		t.Fatalf("proctest: unknown binary %q", name)
	}
	root, err := WorkspaceRoot()
	if err != nil {
		t.Fatal(err)
	}
	if buildDir == "" {
		// Shared by every test of this process; removed with the OS temp dir.
		if buildDir, err = os.MkdirTemp("", "slotkv-bin-"); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(buildDir, name)
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("proctest: go build %s: %v\n%s", pkg, err, b)
	}
	built[name] = out
	return out
}

// WorkspaceRoot finds the directory holding go.work, from the working
// directory upwards.
func WorkspaceRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("proctest: no go.work above the working directory")
		}
		dir = parent
	}
}

// Proc is a running slotkv process.
type Proc struct {
	Name    string
	GRPC    string // bound gRPC address, from the listen file
	HTTP    string // bound HTTP address, "" when the process has none
	RESP    string // bound RESP address, "" when the process has none
	LogPath string

	t    testing.TB
	cmd  *exec.Cmd
	done chan struct{}
	err  error // exit error, set before done closes
}

// Options tunes Start.
type Options struct {
	// Env adds environment variables (KEY=VALUE).
	Env []string
	// ReadyTimeout bounds the wait for the listen file (default 60s).
	ReadyTimeout time.Duration
	// Ready, when set, is for a binary that is not slotkv's (etcd): the
	// process gets no --listen-file, and it is ready once Ready returns nil.
	// Ready is called again every 20ms until then, each call bounded by ctx.
	Ready func(ctx context.Context) error
}

// Start runs bin with args plus `--listen-file`, waits until the process has
// bound its ports, and stops it by pid when the test ends.
func Start(t testing.TB, bin string, args ...string) *Proc {
	t.Helper()
	return StartWith(t, Options{}, bin, args...)
}

// StartWith is Start with options.
func StartWith(t testing.TB, o Options, bin string, args ...string) *Proc {
	t.Helper()
	p, err := Launch(t, o, bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Launch is StartWith returning an error instead of failing the test, for a
// caller that can try again (etcd on ports another process took meanwhile).
// On an error after the process started, the Proc is returned with it: the
// process is gone, the tail of its log has been logged, and Log still reads
// what it wrote.
func Launch(t testing.TB, o Options, bin string, args ...string) (*Proc, error) {
	t.Helper()
	dir := t.TempDir()
	listen := filepath.Join(dir, "listen.json")
	p := &Proc{Name: filepath.Base(bin), LogPath: filepath.Join(dir, "process.log"), t: t, done: make(chan struct{})}
	logf, err := os.Create(p.LogPath)
	if err != nil {
		return nil, err
	}
	if o.Ready == nil {
		args = append(args, "--listen-file", listen)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.Env = append(os.Environ(), o.Env...)
	// Own process group, so a signal to the test runner's group (Ctrl-C)
	// does not race with our own stop.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("proctest: start %s: %v", bin, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			p.dumpLog(80)
		}
	})
	timeout := o.ReadyTimeout
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	if o.Ready != nil {
		err = p.waitReady(o.Ready, timeout)
	} else {
		err = p.waitListen(listen, timeout)
	}
	if err != nil {
		p.Kill()
		p.dumpLog(80)
		return p, fmt.Errorf("proctest: %s (pid %d): %v", p.Name, p.Pid(), err)
	}
	return p, nil
}

func (p *Proc) waitReady(ready func(context.Context) error, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		// One try may not take the whole budget: a call stuck on a process
		// that is still starting would hide that it exited meanwhile.
		try, cancelTry := context.WithTimeout(ctx, time.Second)
		err := ready(try)
		cancelTry()
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("exited before it was ready: %v (last check: %v)", p.err, err)
		case <-ctx.Done():
			return fmt.Errorf("not ready after %s: %v", timeout, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (p *Proc) waitListen(path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if b, err := os.ReadFile(path); err == nil {
			var addrs struct{ GRPC, HTTP, RESP string }
			if err := json.Unmarshal(b, &addrs); err != nil {
				return fmt.Errorf("listen file %s: %w", path, err)
			}
			p.GRPC, p.HTTP, p.RESP = addrs.GRPC, addrs.HTTP, addrs.RESP
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("exited before listening: %v", p.err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no listen file after %s", timeout)
		}
	}
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Stop sends SIGTERM to the process and waits for it, SIGKILL after 15s.
// It returns the exit error (nil for a clean exit). Safe to call twice.
func (p *Proc) Stop() error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	_ = syscall.Kill(p.Pid(), syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.Kill()
	}
	return p.err
}

// Kill sends SIGKILL (a crash) and waits for the process to be gone.
func (p *Proc) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(p.Pid(), syscall.SIGKILL)
	<-p.done
}

// Log returns what the process has written so far.
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

func (p *Proc) dumpLog(n int) {
	f, err := os.Open(p.LogPath)
	if err != nil {
		return
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	p.t.Logf("--- last lines of %s (pid %d) ---\n%s", p.Name, p.Pid(), strings.Join(lines, "\n"))
}
