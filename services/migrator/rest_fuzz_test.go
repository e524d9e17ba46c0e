package migrator_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	migratorv1 "github.com/slotkv/slotkv/gen/slotkv/migrator/v1"
	"github.com/slotkv/slotkv/pkg/etcdtest"
	"github.com/slotkv/slotkv/pkg/server"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/testcluster"
	"github.com/slotkv/slotkv/services/migrator"
)

// fuzzMigrator starts two empty storage nodes (n1 owning slots 0-8191,
// n2 the rest) and a migrator on them, once per fuzzing process, and
// returns the migrator's REST base URL. The nodes are empty so that a
// body that does start a migration finishes it in moments.
func fuzzMigrator(f *testing.F) string {
	f.Helper()
	c := testcluster.Start(f, 2, testcluster.Options{Etcd: etcdtest.Start(f)})
	c.Bootstrap(f)
	o := migrator.DefaultOptions()
	o.GRPCAddr, o.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	o.DataDir = f.TempDir()
	o.Etcd = server.Etcd{Endpoints: c.Etcd().Endpoints(), DialTimeout: 2 * time.Second}
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	addrs := make(chan string, 1)
	o.OnListen = func(_, h net.Addr) { addrs <- h.String() }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- migrator.Run(ctx, o) }()
	f.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				f.Errorf("migrator.Run: %v", err)
			}
		case <-time.After(time.Minute):
			f.Error("migrator did not stop")
		}
	})
	select {
	case h := <-addrs:
		return "http://" + h
	case err := <-done:
		f.Fatalf("migrator.Run returned before listening: %v", err)
	}
	return ""
}

// migratorCall sends one request and returns the status and the JSON
// object answered; an answer that is not one fails the test.
func migratorCall(t *testing.T, method, u string, body []byte) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	req.Header.Set("Content-Type", "application/json")
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s %s %q: %d answered %q, not a JSON object", method, u, body, resp.StatusCode, b)
	}
	return resp.StatusCode, m
}

// FuzzCreateMigrationBody posts arbitrary bodies to POST /v1/migrations
// (and, when route is odd, PATCH /v1/migrations/{job_id} with the fuzz
// string as the id) through the real gateway and migrator. Whatever the
// body, the answer is 2xx or 4xx with a JSON body, never a 5xx (a bad
// range string, an unknown node or a conflicting job is the caller's
// mistake; a panic would come back as 500). A migration that is created
// moves the slots the request named, and can be fetched by its id.
func FuzzCreateMigrationBody(f *testing.F) {
	seeds := []struct {
		route uint8
		id    string
		body  string
	}{
		{0, "", `{"ranges":"0-10","source_node_id":"n1","destination_node_id":"n2"}`},
		{0, "", `{"job_id":"j1","ranges":"16000-16010,16383","source_node_id":"n2","destination_node_id":"n1","parallelism":3,"batch_records":1,"verify":"VERIFY_DIGEST"}`},
		{0, "", `{"ranges":"0-16383","source_node_id":"n1","destination_node_id":"n2"}`},
		{0, "", `{"ranges":"10-0","source_node_id":"n1","destination_node_id":"n2"}`},
		{0, "", `{"ranges":"0-10,5","source_node_id":"n1","destination_node_id":"n2"}`},
		{0, "", `{"ranges":"","source_node_id":"n1","destination_node_id":"n2"}`},
		{0, "", `{"ranges":"1","source_node_id":"n1","destination_node_id":"n1"}`},
		{0, "", `{"ranges":"1","source_node_id":"nope","destination_node_id":"n2"}`},
		{0, "", `{"ranges":"1","source_node_id":"n1","destination_node_id":"n2","verify":"NOPE"}`},
		{0, "", `{"ranges":"1","source_node_id":"n1","destination_node_id":"n2","verify":99}`},
		{0, "", `{"ranges":"1","source_node_id":"n1","destination_node_id":"n2","parallelism":4294967295,"rate_bytes_per_second":"18446744073709551615"}`},
		{0, "", `{"job_id":"../../x","ranges":"2","source_node_id":"n1","destination_node_id":"n2"}`},
		{0, "", `{"job_id":"` + string(bytes.Repeat([]byte("j"), 5000)) + `","ranges":"3","source_node_id":"n1","destination_node_id":"n2"}`},
		{0, "", `{"ranges":5}`},
		{0, "", `{"ranges":"20-21","RANGES":"zz","source_node_id":"n1","destination_node_id":"n2"} trailing`},
		{0, "", `[]`},
		{0, "", `{`},
		{0, "", ``},
		{1, "j1", `{"rate_bytes_per_second":1000}`},
		{1, "j1", `{"batch_records":0}`},
		{1, "no-such-job", `{"batch_records":5}`},
		{1, "\xff", `{}`},
	}
	for _, s := range seeds {
		f.Add(s.route, s.id, []byte(s.body))
	}
	base := fuzzMigrator(f)
	f.Fuzz(func(t *testing.T, route uint8, id string, body []byte) {
		method, u := "POST", base+"/v1/migrations"
		if route%2 == 1 {
			method, u = "PATCH", u+"/"+url.PathEscape(id)
		}
		code, m := migratorCall(t, method, u, body)
		if code < 200 || code >= 300 && code < 400 || code >= 500 {
			t.Fatalf("%s %s %q: %d %v, want 2xx or 4xx", method, u, body, code, m)
		}
		if method != "POST" || code >= 300 {
			return
		}
		// The body as the generated handler reads it: the first JSON value,
		// through the gateway's marshaler.
		var req migratorv1.StartMigrationRequest
		if err := server.GatewayMarshaler().NewDecoder(bytes.NewReader(body)).Decode(&req); err != nil && !errors.Is(err, io.EOF) {
			t.Fatalf("POST %q created a migration %v, but the gateway marshaler refuses the body: %v", body, m, err)
		}
		want, err := slot.ParseRangeSet(req.GetRanges())
		if err != nil {
			t.Fatalf("POST %q created a migration %v of ranges that do not parse: %v", body, m, err)
		}
		jobID := stringField(m, "id")
		got, err := slot.ParseRangeSet(stringField(m, "ranges"))
		if jobID == "" || err != nil || !got.Equal(want) {
			t.Fatalf("POST %q answered %v: want an id and ranges %v", body, m, want)
		}
		gcode, g := migratorCall(t, "GET", base+"/v1/migrations/"+url.PathEscape(jobID), nil)
		if gcode != http.StatusOK || stringField(g, "id") != jobID {
			t.Fatalf("GET of created migration %q: %d %v", jobID, gcode, g)
		}
	})
}

// stringField returns m[name], looking inside a "migration" wrapper if
// the answer has one.
func stringField(m map[string]any, name string) string {
	if inner, ok := m["migration"].(map[string]any); ok {
		m = inner
	}
	s, _ := m[name].(string)
	return s
}
