// Package otlpsink is an OTLP/gRPC trace receiver for tests: a real gRPC
// server on a loopback port that accepts the spans the services' OTLP
// exporters send (the same protocol Jaeger and the OpenTelemetry Collector
// receive on 4317) and keeps them, so a test can start slotkv processes with
// Env and check what reaches a tracing backend: which services took part in
// a trace and how their spans are parented.
package otlpsink

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
)

// Span is one received span, flattened.
type Span struct {
	Service  string                    `json:"service"`   // service.name of the resource that sent it
	TraceID  string                    `json:"trace_id"`  // hex
	SpanID   string                    `json:"span_id"`   // hex
	ParentID string                    `json:"parent_id"` // hex; "" for a root span
	Name     string                    `json:"name"`
	Kind     tracepb.Span_SpanKind     `json:"kind"`
	Attrs    map[string]string         `json:"attributes"` // values as strings
	Status   tracepb.Status_StatusCode `json:"status"`
	Start    time.Time                 `json:"start"`
	End      time.Time                 `json:"end"`
}

// String is a one-line description for test failures.
func (s Span) String() string {
	return fmt.Sprintf("%s %q span=%s parent=%s kind=%s", s.Service, s.Name, s.SpanID, s.ParentID, s.Kind)
}

// Sink receives spans over OTLP/gRPC.
type Sink struct {
	collectortrace.UnimplementedTraceServiceServer
	addr string

	mu       sync.Mutex
	spans    []Span
	received int           // spans received, kept or not
	discard  bool          // count spans without keeping them
	changed  chan struct{} // closed and replaced on every Export
}

// Start runs a Sink on 127.0.0.1:0 and stops it when the test ends.
func Start(t testing.TB) *Sink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, stop := Serve(ln)
	t.Cleanup(stop)
	return s
}

// Serve runs a Sink on ln until stop is called (e2e/cmd/otlpsink runs one
// in a container of the compose stack in Jaeger's place).
func Serve(ln net.Listener) (s *Sink, stop func()) {
	s = &Sink{addr: ln.Addr().String(), changed: make(chan struct{})}
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, s)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	return s, func() {
		srv.Stop()
		<-done
	}
}

// Addr is the receiver's host:port.
func (s *Sink) Addr() string { return s.addr }

// Env is the environment that points a slotkv process's exporter here, with
// a short batch delay so spans arrive soon after they end.
func (s *Sink) Env() []string {
	return []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + s.addr,
		"OTEL_EXPORTER_OTLP_INSECURE=true",
		"OTEL_BSP_SCHEDULE_DELAY=100",
	}
}

// Export implements the OTLP TraceService.
func (s *Sink) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	var got []Span
	for _, rs := range req.GetResourceSpans() {
		service := attrs(rs.GetResource().GetAttributes())["service.name"]
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				got = append(got, Span{
					Service:  service,
					TraceID:  hex.EncodeToString(sp.GetTraceId()),
					SpanID:   hex.EncodeToString(sp.GetSpanId()),
					ParentID: hex.EncodeToString(sp.GetParentSpanId()),
					Name:     sp.GetName(),
					Kind:     sp.GetKind(),
					Attrs:    attrs(sp.GetAttributes()),
					Status:   sp.GetStatus().GetCode(),
					Start:    time.Unix(0, int64(sp.GetStartTimeUnixNano())),
					End:      time.Unix(0, int64(sp.GetEndTimeUnixNano())),
				})
			}
		}
	}
	s.mu.Lock()
	s.received += len(got)
	if !s.discard {
		s.spans = append(s.spans, got...)
	}
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func attrs(kvs []*commonpb.KeyValue) map[string]string {
	out := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		v := kv.GetValue()
		switch x := v.GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			out[kv.GetKey()] = x.StringValue
		case *commonpb.AnyValue_IntValue:
			out[kv.GetKey()] = fmt.Sprint(x.IntValue)
		case *commonpb.AnyValue_BoolValue:
			out[kv.GetKey()] = fmt.Sprint(x.BoolValue)
		case *commonpb.AnyValue_DoubleValue:
			out[kv.GetKey()] = fmt.Sprint(x.DoubleValue)
		default:
			out[kv.GetKey()] = v.String()
		}
	}
	return out
}

// Discard makes the sink count the spans it receives without keeping them,
// for benchmarks that export for a long time.
func (s *Sink) Discard() {
	s.mu.Lock()
	s.discard, s.spans = true, nil
	s.mu.Unlock()
}

// Received is how many spans arrived, kept or not.
func (s *Sink) Received() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.received
}

// Spans returns every span received so far.
func (s *Sink) Spans() []Span {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.spans)
}

// Trace returns the spans of one trace.
func (s *Sink) Trace(traceID string) []Span { return InTrace(s.Spans(), traceID) }

// InTrace returns the spans of spans that belong to one trace.
func InTrace(spans []Span, traceID string) []Span {
	var out []Span
	for _, sp := range spans {
		if sp.TraceID == traceID {
			out = append(out, sp)
		}
	}
	return out
}

// WaitFor waits until cond holds for the spans received, and returns them;
// after timeout it fails the test with describe's account of what is
// missing.
func (s *Sink) WaitFor(t testing.TB, timeout time.Duration, cond func([]Span) bool, describe string) []Span {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		spans, changed := slices.Clone(s.spans), s.changed
		s.mu.Unlock()
		if cond(spans) {
			return spans
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("otlpsink: after %s, still waiting for %s; %d spans received:\n%s", timeout, describe, len(spans), Dump(spans))
		}
	}
}

// Dump lists spans one per line.
func Dump(spans []Span) string {
	var b strings.Builder
	for _, sp := range spans {
		fmt.Fprintf(&b, "  trace=%s %s\n", sp.TraceID, sp)
	}
	return b.String()
}

// Find returns the spans of spans that match the service and the name (""
// matches any).
func Find(spans []Span, service, name string) []Span {
	var out []Span
	for _, sp := range spans {
		if (service == "" || sp.Service == service) && (name == "" || sp.Name == name) {
			out = append(out, sp)
		}
	}
	return out
}

// Children returns the spans whose parent is parent.
func Children(spans []Span, parent Span) []Span {
	var out []Span
	for _, sp := range spans {
		if sp.ParentID == parent.SpanID && sp.TraceID == parent.TraceID {
			out = append(out, sp)
		}
	}
	return out
}
