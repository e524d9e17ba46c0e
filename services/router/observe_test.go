package router_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/slotkv/slotkv/gen"
	routerv1 "github.com/slotkv/slotkv/gen/slotkv/router/v1"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/faultproxy"
	"github.com/slotkv/slotkv/pkg/server"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/telemetry"
	"github.com/slotkv/slotkv/pkg/telemetry/metricstest"
	"github.com/slotkv/slotkv/pkg/testcluster"
	"github.com/slotkv/slotkv/services/router"
)

// observed returns router options that record every span and serve the
// router's metrics, and the recorder.
func observed(t *testing.T, o router.Options) (router.Options, *tracetest.SpanRecorder) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tel, err := telemetry.Setup(context.Background(), telemetry.Config{ServiceName: "router", SampleRatio: 1,
		SpanProcessors: []sdktrace.SpanProcessor{rec}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	o.TracerProvider, o.MeterProvider, o.MetricsHandler = tel.TracerProvider, tel.MeterProvider, tel.MetricsHandler()
	return o, rec
}

func attrOf(s sdktrace.ReadOnlySpan, k attribute.Key) attribute.Value {
	for _, kv := range s.Attributes() {
		if kv.Key == k {
			return kv.Value
		}
	}
	return attribute.Value{}
}

// spansOf returns the ended spans of trace id named name.
func spansOf(rec *tracetest.SpanRecorder, id trace.TraceID, name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.SpanContext().TraceID() == id && s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

// serverSpan waits for the router's server span of method and returns it.
func serverSpan(t *testing.T, rec *tracetest.SpanRecorder, method string) sdktrace.ReadOnlySpan {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var found []sdktrace.ReadOnlySpan
		for _, s := range rec.Ended() {
			if s.Name() == method && s.SpanKind() == trace.SpanKindServer {
				found = append(found, s)
			}
		}
		if len(found) == 1 {
			return found[0]
		}
		if len(found) > 1 || time.Now().After(deadline) {
			t.Fatalf("%d server spans %s, want 1", len(found), method)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A multi-get over three nodes is one trace: the router's server span has
// one partition span per node (partition, op, key count as attributes),
// each above the gRPC client span of its storage call; the calls are
// counted per partition.
func TestTracePartitionsOfAMultiGet(t *testing.T) {
	t.Parallel()
	o, rec := observed(t, router.Options{})
	_, topo, r := setup(t, 3, o)
	keys := []string{keyOn(t, topo, "n1", "a"), keyOn(t, topo, "n2", "b"), keyOn(t, topo, "n2", "c"), keyOn(t, topo, "n3", "d")}
	if _, err := r.KV.MultiGet(ctxT(t), &routerv1.MultiGetRequest{Keys: keys}); err != nil {
		t.Fatal(err)
	}
	root := serverSpan(t, rec, "slotkv.router.v1.KVService/MultiGet")
	id := root.SpanContext().TraceID()
	for node, n := range map[string]int64{"n1": 1, "n2": 2, "n3": 1} {
		ps := spansOf(rec, id, "partition "+node)
		if len(ps) != 1 {
			t.Fatalf("%d spans for partition %s, want 1", len(ps), node)
		}
		p := ps[0]
		if p.Parent().SpanID() != root.SpanContext().SpanID() {
			t.Errorf("partition %s span's parent is not the server span", node)
		}
		if got := attrOf(p, "slotkv.partition").AsString(); got != node {
			t.Errorf("partition %s: slotkv.partition = %q", node, got)
		}
		if got := attrOf(p, "slotkv.op").AsString(); got != "multi-get" {
			t.Errorf("partition %s: slotkv.op = %q", node, got)
		}
		if got := attrOf(p, "slotkv.keys").AsInt64(); got != n {
			t.Errorf("partition %s: slotkv.keys = %d, want %d", node, got, n)
		}
		if got := attrOf(p, "slotkv.outcome").AsString(); got != "ok" {
			t.Errorf("partition %s: outcome %q", node, got)
		}
		var client []sdktrace.ReadOnlySpan
		for _, c := range spansOf(rec, id, "slotkv.storage.v1.StorageService/BatchGet") {
			if c.Parent().SpanID() == p.SpanContext().SpanID() && c.SpanKind() == trace.SpanKindClient {
				client = append(client, c)
			}
		}
		if len(client) != 1 {
			t.Errorf("partition %s: %d BatchGet client spans under it, want 1", node, len(client))
		}
	}
	m := metricstest.Scrape(t, r.HTTP)
	for _, node := range []string{"n1", "n2", "n3"} {
		if !has(m, "slotkv_router_partition_calls_total", `slotkv_partition="`+node+`"`, `slotkv_op="multi-get"`, `slotkv_outcome="ok"`) {
			t.Errorf("no ok multi-get calls counted for %s:\n%s", node, metricstest.Grep(m, "slotkv_router"))
		}
	}
	if !has(m, "slotkv_router_partition_duration_seconds_count", `slotkv_partition="n2"`) {
		t.Errorf("no latency histogram for n2:\n%s", metricstest.Grep(m, "slotkv_router"))
	}

	// API docs: the service's generated OpenAPI document at /openapi.json,
	// served without a token.
	resp, err := http.Get("http://" + r.HTTP + server.OpenAPIPath)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(doc, gen.RouterOpenAPI) {
		t.Errorf("GET /openapi.json = %d (%d bytes, %v), want 200 with the %d bytes of gen.RouterOpenAPI", resp.StatusCode, len(doc), err, len(gen.RouterOpenAPI))
	}
}

// A write that meets SLOT_MOVED shows both attempts: the first on the old
// owner with outcome retry, the second on the new owner. The router reads
// etcd through a proxy that delays etcd's answers, so the nodes install
// the new topology (from their own watches) well before the router's
// watch delivers it: the router still routes by the old one.
func TestTraceRetryAfterSlotMoved(t *testing.T) {
	t.Parallel()
	o, rec := observed(t, router.Options{})
	c := testcluster.Start(t, 2, testcluster.Options{})
	v1 := c.Bootstrap(t)
	px, err := faultproxy.New(strings.TrimPrefix(c.Etcd().Endpoint, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = px.Close() })
	o.Etcd.Endpoints = []string{px.Addr()}
	r := startRouter(t, o)
	waitReady(t, r)
	px.SetDelay(time.Second)
	key := keyOn(t, v1, "n1", "moving")
	c.SetTopology(t, testcluster.Move(t, v1, slot.OfString(key), "n2"))
	if _, err := r.KV.Put(ctxT(t), &routerv1.PutRequest{Key: key, Data: &routerv1.PutRequest_Text{Text: "v"}}); err != nil {
		t.Fatal(err)
	}
	id := serverSpan(t, rec, "slotkv.router.v1.KVService/Put").SpanContext().TraceID()
	first, second := spansOf(rec, id, "partition n1"), spansOf(rec, id, "partition n2")
	if len(first) != 1 || len(second) != 1 {
		t.Fatalf("%d spans on n1 and %d on n2, want 1 and 1", len(first), len(second))
	}
	if a, o := attrOf(first[0], "slotkv.attempt").AsInt64(), attrOf(first[0], "slotkv.outcome").AsString(); a != 1 || o != "retry" {
		t.Errorf("first attempt: attempt %d outcome %q, want 1 retry", a, o)
	}
	if a, o := attrOf(second[0], "slotkv.attempt").AsInt64(), attrOf(second[0], "slotkv.outcome").AsString(); a != 2 || o != "ok" {
		t.Errorf("second attempt: attempt %d outcome %q, want 2 ok", a, o)
	}
	m := metricstest.Scrape(t, r.HTTP)
	if !has(m, "slotkv_router_partition_retries_total", `slotkv_partition="n2"`, `slotkv_op="put"`) {
		t.Errorf("retry not counted:\n%s", metricstest.Grep(m, "slotkv_router"))
	}
	if !has(m, "slotkv_router_partition_calls_total", `slotkv_partition="n1"`, `slotkv_outcome="retry"`) {
		t.Errorf("retry outcome not counted:\n%s", metricstest.Grep(m, "slotkv_router"))
	}
}

// In naming mode a read whose first replica is slow gets a backup request:
// the trace holds a partition span marked as a hedge, and the hedge is
// counted.
func TestTraceHedge(t *testing.T) {
	t.Parallel()
	slow, fast := namingCluster(t, 1), namingCluster(t, 1)
	px, err := faultproxy.New(slow.Nodes[0].Proc.GRPC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = px.Close() })
	path := filepath.Join(t.TempDir(), "naming.txt")
	// The slow replica has all the weight, so the first attempt goes to it.
	writeFile(t, path, px.Addr()+" 0/1 1000\n"+fast.Nodes[0].Proc.GRPC+" 0/1 1\n")
	o, rec := observed(t, router.Options{NamingFile: path, HedgeDelay: 20 * time.Millisecond, HedgeMaxRatio: 1, Balancer: "random"})
	r := startRouter(t, o)
	waitReady(t, r)
	multiPut(t, r, map[string]string{"h": "1"})
	px.SetDelay(500 * time.Millisecond)
	// The balancer is random: with these weights the first attempt goes
	// to the slow replica 999 times in 1000, so a few reads make sure one
	// was hedged.
	// A client that sends the test's trace context along.
	cc, err := dial.New(r.GRPC, dial.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	kv := routerv1.NewKVServiceClient(cc)
	var ps []sdktrace.ReadOnlySpan
	for try := 0; try < 5; try++ {
		ctx, span := o.TracerProvider.Tracer("test").Start(ctxT(t), "read")
		if _, err := kv.Get(ctx, &routerv1.GetRequest{Key: "h"}); err != nil {
			t.Fatal(err)
		}
		span.End()
		id := span.SpanContext().TraceID()
		// The losing attempt ends when the call cancels it, just after
		// the answer.
		deadline := time.Now().Add(5 * time.Second)
		for ps = spansOf(rec, id, "partition 0/1"); len(ps) < 2 && time.Now().Before(deadline); ps = spansOf(rec, id, "partition 0/1") {
			time.Sleep(10 * time.Millisecond)
		}
		if len(ps) == 2 {
			break
		}
	}
	var hedges, canceled int
	for _, p := range ps {
		if attrOf(p, "slotkv.hedge").AsBool() {
			hedges++
			if got := attrOf(p, "slotkv.address").AsString(); got != fast.Nodes[0].Proc.GRPC {
				t.Errorf("hedge went to %s, want the fast replica %s", got, fast.Nodes[0].Proc.GRPC)
			}
		}
		if attrOf(p, "slotkv.outcome").AsString() == "canceled" {
			canceled++
		}
	}
	if len(ps) != 2 || hedges != 1 || canceled != 1 {
		t.Fatalf("%d partition spans, %d hedges, %d canceled; want 2, 1, 1", len(ps), hedges, canceled)
	}
	m := metricstest.Scrape(t, r.HTTP)
	if !has(m, "slotkv_router_partition_hedges_total", `slotkv_partition="0/1"`) {
		t.Errorf("hedge not counted:\n%s", metricstest.Grep(m, "slotkv_router"))
	}
}

// has reports whether the metrics text has a sample of name with labels.
func has(text, name string, labels ...string) bool {
	_, ok := metricstest.Sample(text, name, labels...)
	return ok
}
