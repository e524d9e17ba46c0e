// Command faulthttp serves a directory over HTTP (Range requests included,
// as a dataset host does) and injects faults on demand, so end-to-end tests
// can break a bulk load's downloads the way real networks do and count what
// was served.
//
//	faulthttp --dir DATASET --addr 127.0.0.1:0 --listen-file addr.json
//
// Control endpoints (not served from the directory):
//
//	POST /_fault/errors?count=N[&code=500]   the next N file requests answer code
//	POST /_fault/cut?file=NAME&after=BYTES   the next request for NAME sends BYTES then drops the connection
//	POST /_fault/reset                       clear every fault
//	GET  /_stats                             per file: requests, range requests, bytes sent
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// FileStats is what /_stats reports for one file.
type FileStats struct {
	Requests      int   `json:"requests"`
	RangeRequests int   `json:"range_requests"`
	Bytes         int64 `json:"bytes"`
	Failed        int   `json:"failed"` // answered with an injected error or cut
}

type server struct {
	dir string

	mu      sync.Mutex
	errors  int // injected error answers left
	errCode int
	cuts    map[string]int64 // file -> bytes to send before dropping
	stats   map[string]*FileStats
}

func main() {
	dir := flag.String("dir", ".", "directory to serve")
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	listenFile := flag.String("listen-file", "", `write {"http":"host:port"} here once listening`)
	flag.Parse()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("faulthttp: listen %s: %v", *addr, err)
	}
	if *listenFile != "" {
		b, _ := json.Marshal(map[string]string{"http": ln.Addr().String()})
		tmp := *listenFile + ".tmp"
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			log.Fatal(err)
		}
		if err := os.Rename(tmp, *listenFile); err != nil {
			log.Fatal(err)
		}
	}
	s := &server{dir: *dir, errCode: http.StatusInternalServerError, cuts: map[string]int64{}, stats: map[string]*FileStats{}}
	srv := &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Printf("faulthttp: serving %s on http://%s", *dir, ln.Addr())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /_fault/errors", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("count"))
		if err != nil || n < 0 {
			http.Error(w, "count: want a number >= 0", http.StatusBadRequest)
			return
		}
		code := http.StatusInternalServerError
		if c := r.URL.Query().Get("code"); c != "" {
			if code, err = strconv.Atoi(c); err != nil || code < 400 || code > 599 {
				http.Error(w, "code: want 400-599", http.StatusBadRequest)
				return
			}
		}
		s.mu.Lock()
		s.errors, s.errCode = n, code
		s.mu.Unlock()
	})
	mux.HandleFunc("POST /_fault/cut", func(w http.ResponseWriter, r *http.Request) {
		file := r.URL.Query().Get("file")
		after, err := strconv.ParseInt(r.URL.Query().Get("after"), 10, 64)
		if file == "" || err != nil || after < 0 {
			http.Error(w, "want file=NAME&after=BYTES", http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.cuts[file] = after
		s.mu.Unlock()
	})
	mux.HandleFunc("POST /_fault/reset", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.errors, s.cuts = 0, map[string]int64{}
		s.mu.Unlock()
	})
	mux.HandleFunc("GET /_stats", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s.stats)
	})
	mux.HandleFunc("GET /", s.serveFile)
	return mux
}

func (s *server) serveFile(w http.ResponseWriter, r *http.Request) {
	name := filepath.Base(filepath.Clean("/" + r.URL.Path))
	s.mu.Lock()
	st := s.stats[name]
	if st == nil {
		st = &FileStats{}
		s.stats[name] = st
	}
	st.Requests++
	if r.Header.Get("Range") != "" {
		st.RangeRequests++
	}
	inject := s.errors > 0
	if inject {
		s.errors--
		st.Failed++
	}
	code := s.errCode
	cut, doCut := s.cuts[name]
	if doCut && !inject {
		delete(s.cuts, name)
		st.Failed++
	}
	s.mu.Unlock()

	if inject {
		http.Error(w, fmt.Sprintf("injected fault %d", code), code)
		return
	}
	cw := &countingWriter{ResponseWriter: w, s: s, name: name, limit: -1}
	if doCut {
		cw.limit = cut
	}
	http.ServeFile(cw, r, filepath.Join(s.dir, name))
	if cw.cut {
		// Drop the connection mid-body, as a network failure does.
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				c.Close()
			}
		}
	}
}

// countingWriter counts body bytes and, with a limit, stops writing there.
type countingWriter struct {
	http.ResponseWriter
	s     *server
	name  string
	limit int64 // -1: none
	sent  int64
	cut   bool
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.cut {
		return 0, errors.New("connection cut")
	}
	if c.limit >= 0 && c.sent+int64(len(p)) > c.limit {
		p = p[:c.limit-c.sent]
		c.cut = true
	}
	n, err := c.ResponseWriter.Write(p)
	c.sent += int64(n)
	c.s.mu.Lock()
	c.s.stats[c.name].Bytes += int64(n)
	c.s.mu.Unlock()
	if c.cut {
		if f, ok := c.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		return n, errors.New("connection cut")
	}
	return n, err
}

// Flush lets http.ServeFile's writes reach the client as they happen.
func (c *countingWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
