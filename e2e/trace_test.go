package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	downloaderv1 "github.com/slotkv/slotkv/gen/slotkv/downloader/v1"
	migratorv1 "github.com/slotkv/slotkv/gen/slotkv/migrator/v1"
	"github.com/slotkv/slotkv/pkg/dataset"
	"github.com/slotkv/slotkv/pkg/otlpsink"
)

const (
	routerService     = "slotkv-router"
	storageService    = "slotkv-storage"
	migratorService   = "slotkv-migrator"
	downloaderService = "slotkv-downloader"
)

// child returns the one span of spans under parent that is of service, has
// kind and whose name starts with prefix, failing the test otherwise.
func child(t *testing.T, spans []otlpsink.Span, parent otlpsink.Span, service string, kind tracepb.Span_SpanKind, prefix string) otlpsink.Span {
	t.Helper()
	var found []otlpsink.Span
	for _, sp := range otlpsink.Children(spans, parent) {
		if sp.Service == service && sp.Kind == kind && strings.HasPrefix(sp.Name, prefix) {
			found = append(found, sp)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d %s spans %q (%s) under %s, want 1; the trace:\n%s", len(found), service, prefix, kind, parent, otlpsink.Dump(spans))
	}
	return found[0]
}

// One REST put through the router is one trace across both services, as
// an OTLP backend (Jaeger) receives it from the processes' exporters:
//
//	router   SERVER  PUT /v1/kv/...          (the gateway's HTTP span, child of the caller's)
//	router   CLIENT  .../KVService/Put       (the gateway's loopback gRPC call)
//	router   SERVER  .../KVService/Put
//	router   INTERNAL partition nX           (the call to the owning node)
//	router   CLIENT  .../StorageService/Put
//	storage  SERVER  .../StorageService/Put
//
// A migration is one trace too: the migrator's root span, a span per
// phase, a span per snapshot stream, and the storage nodes' server spans
// of the calls the job made. So is a bulk load: the downloader's job span,
// a span per file with its download, verify and ingest spans, and the
// storage nodes' ingest spans under them.
func TestTracesAcrossServices(t *testing.T) {
	t.Parallel()
	sink := otlpsink.Start(t)
	c := startClusterEnv(t, 3, "trace-secret", sink.Env())

	t.Run("REST put", func(t *testing.T) {
		traceID, callerSpan := randomHex(16), randomHex(8)
		req, err := http.NewRequest(http.MethodPut, "http://"+c.router.HTTP+"/v1/kv/traced", strings.NewReader(`{"text":"hello"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+c.Token)
		req.Header.Set("traceparent", "00-"+traceID+"-"+callerSpan+"-01")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("PUT: %s", resp.Status)
		}
		spans := sink.WaitFor(t, 30*time.Second, func(all []otlpsink.Span) bool {
			n := 0
			for _, sp := range all {
				if sp.TraceID == traceID && sp.Service == storageService && sp.Name == "slotkv.storage.v1.StorageService/Put" {
					n++
				}
			}
			return n == 1 && len(otlpsink.Find(otlpsink.InTrace(all, traceID), routerService, "")) >= 5
		}, "the router's and the storage node's spans of the put")
		spans = otlpsink.InTrace(spans, traceID)

		var gw []otlpsink.Span
		for _, sp := range spans {
			if sp.Service == routerService && sp.Kind == tracepb.Span_SPAN_KIND_SERVER && sp.ParentID == callerSpan {
				gw = append(gw, sp)
			}
		}
		if len(gw) != 1 || !strings.HasPrefix(gw[0].Name, "PUT /v1/kv/") {
			t.Fatalf("want one router HTTP server span PUT /v1/kv/... under the caller's span; the trace:\n%s", otlpsink.Dump(spans))
		}
		loop := child(t, spans, gw[0], routerService, tracepb.Span_SPAN_KIND_CLIENT, "slotkv.router.v1.KVService/Put")
		srv := child(t, spans, loop, routerService, tracepb.Span_SPAN_KIND_SERVER, "slotkv.router.v1.KVService/Put")
		part := child(t, spans, srv, routerService, tracepb.Span_SPAN_KIND_INTERNAL, "partition ")
		if part.Attrs["slotkv.partition"] == "" || part.Attrs["slotkv.op"] != "put" || part.Attrs["slotkv.attempt"] != "1" {
			t.Errorf("partition span attributes %v", part.Attrs)
		}
		call := child(t, spans, part, routerService, tracepb.Span_SPAN_KIND_CLIENT, "slotkv.storage.v1.StorageService/Put")
		child(t, spans, call, storageService, tracepb.Span_SPAN_KIND_SERVER, "slotkv.storage.v1.StorageService/Put")
	})

	t.Run("migration", func(t *testing.T) {
		c.loadKeys(t, "traced", 2000, 0)
		m := startMoverEnv(t, c, sink.Env())
		m.begin(t, &migratorv1.StartMigrationRequest{JobId: "traced", Ranges: "0-300",
			SourceNodeId: "n1", DestinationNodeId: "n2", Parallelism: 2})
		if job := m.wait(t, "traced", over); job.GetPhase() != migratorv1.Phase_PHASE_SUCCEEDED {
			t.Fatalf("migration %v: %s", job.GetPhase(), job.GetError())
		}
		phases := []string{"PREPARE", "SNAPSHOT", "VERIFY", "CATCH_UP", "HANDOFF", "CLEANUP"}
		var root otlpsink.Span
		spans := sink.WaitFor(t, 30*time.Second, func(all []otlpsink.Span) bool {
			roots := otlpsink.Find(all, migratorService, "migration traced")
			if len(roots) != 1 {
				return false
			}
			root = roots[0]
			tr := otlpsink.InTrace(all, root.TraceID)
			for _, p := range phases {
				if len(otlpsink.Find(tr, migratorService, "phase "+p)) != 1 {
					return false
				}
			}
			// Every process exports on its own schedule: wait for the
			// storage nodes' side of both streams too.
			return len(otlpsink.Find(tr, migratorService, "stream 1")) == 1 &&
				len(otlpsink.Find(tr, storageService, "slotkv.storage.v1.MigrationService/SnapshotScan")) >= 2 &&
				len(otlpsink.Find(tr, storageService, "slotkv.storage.v1.MigrationService/Import")) >= 2
		}, "the migration's root, phase and stream spans, and the storage nodes' scan and import spans")
		spans = otlpsink.InTrace(spans, root.TraceID)
		if root.ParentID != "" {
			t.Errorf("migration span has a parent %s: a job is a trace of its own", root.ParentID)
		}
		byPhase := map[string]otlpsink.Span{}
		for _, p := range phases {
			byPhase[p] = child(t, spans, root, migratorService, tracepb.Span_SPAN_KIND_INTERNAL, "phase "+p)
		}
		for i := range 2 {
			st := child(t, spans, byPhase["SNAPSHOT"], migratorService, tracepb.Span_SPAN_KIND_INTERNAL, fmt.Sprintf("stream %d", i))
			if st.Attrs["migration.stream_ranges"] == "" {
				t.Errorf("stream %d has no ranges attribute: %v", i, st.Attrs)
			}
			// The stream's scan of the source and import into the
			// destination reach the storage nodes in the same trace.
			scan := child(t, spans, st, migratorService, tracepb.Span_SPAN_KIND_CLIENT, "slotkv.storage.v1.MigrationService/SnapshotScan")
			child(t, spans, scan, storageService, tracepb.Span_SPAN_KIND_SERVER, "slotkv.storage.v1.MigrationService/SnapshotScan")
			imp := child(t, spans, st, migratorService, tracepb.Span_SPAN_KIND_CLIENT, "slotkv.storage.v1.MigrationService/Import")
			child(t, spans, imp, storageService, tracepb.Span_SPAN_KIND_SERVER, "slotkv.storage.v1.MigrationService/Import")
		}
	})

	t.Run("bulk load", func(t *testing.T) {
		dir, _ := buildDataset(t, 3000, 32, "48KiB")
		man := readManifest(t, dir)
		if len(man.Files) < 2 {
			t.Fatalf("dataset of %d files, want several", len(man.Files))
		}
		fs := serveDataset(t, dir)
		l := startLoaderEnv(t, c, sink.Env())
		if job := l.run(t, "traced", fs.url+"/"+dataset.ManifestName); job.GetState() != downloaderv1.State_STATE_SUCCEEDED {
			t.Fatalf("job %s: %s", job.GetState(), job.GetError())
		}
		var root otlpsink.Span
		spans := sink.WaitFor(t, 30*time.Second, func(all []otlpsink.Span) bool {
			roots := otlpsink.Find(all, downloaderService, "bulkload job")
			if len(roots) != 1 {
				return false
			}
			root = roots[0]
			tr := otlpsink.InTrace(all, root.TraceID)
			return len(otlpsink.Find(tr, downloaderService, "ingest")) == len(man.Files) &&
				len(otlpsink.Find(tr, storageService, "slotkv.storage.v1.NodeService/Ingest")) >= len(man.Files)
		}, "the bulk load's job, file and ingest spans, and the storage nodes' ingest spans")
		spans = otlpsink.InTrace(spans, root.TraceID)
		child(t, spans, root, downloaderService, tracepb.Span_SPAN_KIND_INTERNAL, "manifest")
		ingests := map[string]bool{} // span ids of the files' ingest spans
		for _, f := range man.Files {
			fsp := child(t, spans, root, downloaderService, tracepb.Span_SPAN_KIND_INTERNAL, "file "+f.Name)
			child(t, spans, fsp, downloaderService, tracepb.Span_SPAN_KIND_INTERNAL, "download")
			child(t, spans, fsp, downloaderService, tracepb.Span_SPAN_KIND_INTERNAL, "verify")
			ingests[child(t, spans, fsp, downloaderService, tracepb.Span_SPAN_KIND_INTERNAL, "ingest").SpanID] = true
		}
		// Every storage node's Ingest span hangs, through the downloader's
		// client span, under one file's ingest span.
		for _, sp := range otlpsink.Find(spans, storageService, "slotkv.storage.v1.NodeService/Ingest") {
			if !underAny(spans, sp, ingests) {
				t.Errorf("storage span %s is not under a file's ingest span; the trace:\n%s", sp, otlpsink.Dump(spans))
			}
		}
	})
}

// underAny reports whether one of sp's ancestors in spans has a span id
// in ids.
func underAny(spans []otlpsink.Span, sp otlpsink.Span, ids map[string]bool) bool {
	byID := map[string]otlpsink.Span{}
	for _, s := range spans {
		byID[s.SpanID] = s
	}
	for p, ok := byID[sp.ParentID]; ok; p, ok = byID[p.ParentID] {
		if ids[p.SpanID] {
			return true
		}
	}
	return false
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
