package otlpsink_test

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/slotkv/slotkv/pkg/otlpsink"
)

// Spans sent by the OpenTelemetry SDK's own OTLP/gRPC exporter arrive with
// their service, parentage and attributes.
func TestReceivesSDKExport(t *testing.T) {
	t.Parallel()
	sink := otlpsink.Start(t)
	ctx := context.Background()
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(mustExporter(t, sink)),
		sdktrace.WithResource(resource.NewSchemaless(semconv.ServiceName("unit"))))
	tr := tp.Tracer("test")
	ctx, parent := tr.Start(ctx, "parent")
	_, child := tr.Start(ctx, "child")
	child.SetAttributes(attribute.Int("n", 7), attribute.Bool("b", true))
	child.End()
	parent.End()
	if err := tp.Shutdown(ctx); err != nil { // flushes
		t.Fatal(err)
	}
	spans := sink.WaitFor(t, 10*time.Second, func(s []otlpsink.Span) bool { return len(s) == 2 }, "2 spans")
	p, c := otlpsink.Find(spans, "unit", "parent"), otlpsink.Find(spans, "unit", "child")
	if len(p) != 1 || len(c) != 1 {
		t.Fatalf("spans:\n%s", otlpsink.Dump(spans))
	}
	if p[0].ParentID != "" || c[0].ParentID != p[0].SpanID || c[0].TraceID != p[0].TraceID {
		t.Errorf("parentage wrong:\n%s", otlpsink.Dump(spans))
	}
	if kids := otlpsink.Children(spans, p[0]); len(kids) != 1 || kids[0].Name != "child" {
		t.Errorf("children of parent: %v", kids)
	}
	if c[0].Attrs["n"] != "7" || c[0].Attrs["b"] != "true" {
		t.Errorf("child attributes %v", c[0].Attrs)
	}
	if got := sink.Trace(p[0].TraceID); len(got) != 2 {
		t.Errorf("trace has %d spans, want 2", len(got))
	}

	// Discarding: spans are counted, not kept.
	sink.Discard()
	if len(sink.Spans()) != 0 {
		t.Fatal("Discard kept the spans received before")
	}
	tp2 := sdktrace.NewTracerProvider(sdktrace.WithSyncer(mustExporter(t, sink)))
	_, sp := tp2.Tracer("test").Start(context.Background(), "dropped")
	sp.End()
	if err := tp2.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n, kept := sink.Received(), len(sink.Spans()); n != 3 || kept != 0 {
		t.Errorf("after Discard: received %d (want 3), kept %d (want 0)", n, kept)
	}
}

func mustExporter(t *testing.T, sink *otlpsink.Sink) *otlptrace.Exporter {
	t.Helper()
	exp, err := otlptracegrpc.New(context.Background(), otlptracegrpc.WithEndpoint(sink.Addr()), otlptracegrpc.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	return exp
}
