// Command otlpsink is an OTLP/gRPC trace receiver with a JSON read API: the
// trace backend of `make test-compose`, which runs it in Jaeger's place
// (Jaeger's image cannot be pulled where CI runs) so the test can check that
// every container's spans arrive, joined into traces, at the address the
// stack configures (http://jaeger:4317).
//
//	otlpsink --grpc-addr :4317 --http-addr :16686
//
//	GET /api/spans?trace_id=HEX&service=NAME&name=SPAN   received spans as JSON (filters optional)
//	GET /healthz
//	otlpsink healthcheck [--url URL]                      probes /healthz (for the container's health check)
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
	"syscall"
	"time"

	"github.com/slotkv/slotkv/pkg/otlpsink"
	"github.com/slotkv/slotkv/pkg/probe"
)

// defaultHTTPAddr is where the span API listens, and what `otlpsink
// healthcheck` probes unless given --url.
const defaultHTTPAddr = ":16686"

func main() {
	if code, ok := probe.Command(os.Args[1:], probe.Target{Addr: defaultHTTPAddr, Path: "/healthz"}); ok {
		os.Exit(code)
	}
	grpcAddr := flag.String("grpc-addr", ":4317", "OTLP/gRPC listen address")
	httpAddr := flag.String("http-addr", defaultHTTPAddr, "JSON read API listen address")
	flag.Parse()

	gl, err := net.Listen("tcp", *grpcAddr)
	if err != nil {
		log.Fatalf("otlpsink: listen %s: %v", *grpcAddr, err)
	}
	sink, stop := otlpsink.Serve(gl)
	defer stop()

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /api/spans", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		out := []otlpsink.Span{}
		for _, sp := range sink.Spans() {
			if (q.Get("trace_id") == "" || sp.TraceID == q.Get("trace_id")) &&
				(q.Get("service") == "" || sp.Service == q.Get("service")) &&
				(q.Get("name") == "" || sp.Name == q.Get("name")) {
				out = append(out, sp)
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	})
	hs := &http.Server{Addr: *httpAddr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	go func() {
		<-ctx.Done()
		sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		_ = hs.Shutdown(sctx)
	}()
	log.Printf("otlpsink: OTLP/gRPC on %s, spans at http://%s/api/spans", gl.Addr(), *httpAddr)
	if err := hs.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatalf("otlpsink: %v", err)
	}
}
