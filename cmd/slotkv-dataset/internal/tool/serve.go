package tool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/slotkv/slotkv/pkg/flagenv"
	"github.com/slotkv/slotkv/pkg/probe"
)

// DefaultServeAddr is where `serve` listens unless told otherwise.
const DefaultServeAddr = ":8000"

// NewFileServer returns the HTTP handler of `serve`: GET and HEAD of the
// files under dir (with Range requests, which the downloader uses to resume
// a cut download, and directory listings), and GET /healthz. A request path
// with a ".." element is refused with 400 before any lookup, and lookups go
// through an os.Root, so a symlink inside dir cannot lead out of it either.
// Close the returned io.Closer when done.
func NewFileServer(dir string) (http.Handler, io.Closer, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("--dir: %w", err)
	}
	files := http.FileServerFS(root.FS())
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		// Checked here, before http.ServeMux would redirect /a/../b to
		// /b: a client asking for ".." is confused or probing, and a clear
		// refusal is better for both than a silent rewrite.
		if hasDotDot(r.URL.Path) {
			http.Error(w, "path leaves the dataset directory", http.StatusBadRequest)
			return
		}
		if r.URL.Path == "/healthz" {
			// The directory can vanish under a running server (a volume
			// unmounted): then every file would 404, so say so here.
			if _, err := root.Stat("."); err != nil {
				http.Error(w, "dataset directory: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
			io.WriteString(w, "ok\n")
			return
		}
		files.ServeHTTP(w, r)
	})
	return h, root, nil
}

func hasDotDot(p string) bool {
	for elem := range strings.SplitSeq(p, "/") {
		if elem == ".." {
			return true
		}
	}
	return false
}

// logRequests logs one line per request, so a bulk load's downloads
// (ranges included) can be followed from the server's side. Health checks
// are left out: a container runtime probes every few seconds.
func logRequests(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			next.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		attrs := []any{"method", r.Method, "path", r.URL.Path, "status", rec.status, "bytes", rec.bytes,
			"duration_ms", float64(time.Since(start).Microseconds()) / 1000, "remote", r.RemoteAddr}
		if rg := r.Header.Get("Range"); rg != "" {
			attrs = append(attrs, "range", rg)
		}
		log.Info("request", attrs...)
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	n, err := s.ResponseWriter.Write(b)
	s.bytes += int64(n)
	return n, err
}

// ServeOptions configures Serve.
type ServeOptions struct {
	Dir             string
	Addr            string
	ShutdownTimeout time.Duration
	Logger          *slog.Logger
	OnListen        func(net.Addr) // called once the port is bound
}

// Serve serves o.Dir over HTTP on o.Addr until ctx ends, then shuts down
// gracefully: in-flight downloads get o.ShutdownTimeout to finish.
func Serve(ctx context.Context, o ServeOptions) error {
	h, root, err := NewFileServer(o.Dir)
	if err != nil {
		return err
	}
	defer root.Close()
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	srv := &http.Server{
		Handler: logRequests(o.Logger, h),
		// No write timeout: a data file may take minutes to send.
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(o.Logger.Handler(), slog.LevelWarn),
	}
	if o.OnListen != nil {
		o.OnListen(ln.Addr())
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	o.Logger.Info("shutting down", "timeout", o.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), o.ShutdownTimeout)
	defer cancel()
	err = srv.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("serve", stderr)
	dir := flagenv.String(fs, "dir", "SLOTKV_DATASET_DIR", "", "directory to serve (datasets in subdirectories: DIR/NAME/manifest.json)")
	addr := flagenv.String(fs, "listen", "SLOTKV_DATASET_LISTEN", DefaultServeAddr, "HTTP listen address")
	shutdown := flagenv.Duration(fs, "shutdown-timeout", "SLOTKV_SHUTDOWN_TIMEOUT", 10*time.Second, "how long in-flight downloads may finish after SIGTERM")
	if code := parseFlags(fs, args, stderr); code >= 0 {
		return code
	}
	if *dir == "" {
		fmt.Fprintln(stderr, "slotkv-dataset serve: --dir is required")
		fs.Usage()
		return 2
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	err := Serve(ctx, ServeOptions{
		Dir: *dir, Addr: *addr, ShutdownTimeout: *shutdown, Logger: log,
		OnListen: func(a net.Addr) { fmt.Fprintf(stdout, "serving %s on http://%s\n", *dir, a) },
	})
	if err != nil {
		fmt.Fprintf(stderr, "slotkv-dataset serve: %v\n", err)
		return 1
	}
	return 0
}

// runHealthcheck probes a running `serve` (its /healthz) for container
// health checks: the image has no shell or curl.
func runHealthcheck(ctx context.Context, args []string, stderr io.Writer) int {
	return probe.Run(ctx, args, probe.Target{Addr: DefaultServeAddr, AddrEnv: "SLOTKV_DATASET_LISTEN", Path: "/healthz"}, os.LookupEnv, stderr)
}
