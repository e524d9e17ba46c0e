//go:build compose

package compose

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/slotkv/slotkv/pkg/slot"
)

// The tests run one after another on one stack: a migration under a bulk
// load is covered by the process-level e2e tests; here each path is
// checked on its own so a failure points at one thing.

func TestKV(t *testing.T) {
	s := newStack(t)

	// REST: put, get, delete, then the key is gone.
	key := fmt.Sprintf("compose/rest/%d", time.Now().UnixNano())
	var put kvEntry
	s.mustCall(t, http.MethodPut, s.routerHTTP, "/v1/kv/"+key, map[string]string{"text": "world"}, &put)
	if put.NodeID == "" {
		t.Errorf("PUT %s: no node_id in the answer %+v", key, put)
	}
	var got kvEntry
	s.mustCall(t, http.MethodGet, s.routerHTTP, "/v1/kv/"+key, nil, &got)
	if got.Text != "world" || got.NodeID != put.NodeID || got.Slot != uint32(slot.OfString(key)) {
		t.Errorf("GET %s = %+v, want text world from %s, slot %d", key, got, put.NodeID, slot.OfString(key))
	}
	s.mustCall(t, http.MethodDelete, s.routerHTTP, "/v1/kv/"+key, nil, nil)
	var apiErr *apiError
	if err := s.call(http.MethodGet, s.routerHTTP, "/v1/kv/"+key, nil, nil); !errors.As(err, &apiErr) || apiErr.status != http.StatusNotFound {
		t.Errorf("GET %s after DELETE: %v, want HTTP 404", key, err)
	}

	// gRPC through grpcurl (server reflection), read back over both APIs.
	gkey := fmt.Sprintf("compose/grpc/%d", time.Now().UnixNano())
	var gput struct {
		NodeID string `json:"nodeId"`
	}
	s.grpcurl(t, "slotkv.router.v1.KVService/Put", map[string]string{"key": gkey, "text": "hi"}, &gput)
	var gget struct {
		Text   string `json:"text"`
		NodeID string `json:"nodeId"`
	}
	s.grpcurl(t, "slotkv.router.v1.KVService/Get", map[string]string{"key": gkey}, &gget)
	if gget.Text != "hi" || gget.NodeID != gput.NodeID {
		t.Errorf("grpcurl Get %s = %+v, want text hi from %s", gkey, gget, gput.NodeID)
	}
	s.mustCall(t, http.MethodGet, s.routerHTTP, "/v1/kv/"+gkey, nil, &got)
	if got.Text != "hi" {
		t.Errorf("REST GET of the key written with grpcurl = %+v", got)
	}
}

func TestMigration(t *testing.T) {
	s := newStack(t)
	const source, destination, slots = "n1", "n2", 100

	// The first 100 slots of the source's first range.
	top := s.topology(t)
	src := top.rangesOf(source)
	if len(src) == 0 || len(top.rangesOf(destination)) == 0 {
		t.Fatalf("topology %+v: want slots on both %s and %s", top, source, destination)
	}
	move := slotRange{Start: src[0].Start, End: min(src[0].End, src[0].Start+slots-1)}
	ranges := fmt.Sprintf("%d-%d", move.Start, move.End)

	// Keys in those slots, written before the migration.
	keys := s.putKeysIn(t, "compose/mig", move, 300)

	type migration struct {
		ID    string `json:"id"`
		Phase string `json:"phase"`
		Keys  string `json:"keys"`
		Error string `json:"error"`
	}
	var started struct {
		Migration migration `json:"migration"`
	}
	s.mustCall(t, http.MethodPost, s.migratorHTTP, "/v1/migrations",
		map[string]any{"source_node_id": source, "destination_node_id": destination, "ranges": ranges}, &started)
	id := started.Migration.ID
	t.Logf("migration %s: slots %s from %s to %s", id, ranges, source, destination)

	waitFor(t, "migration "+id, 2*time.Minute, func() (bool, string, error) {
		var got struct {
			Migration migration `json:"migration"`
		}
		if err := s.call(http.MethodGet, s.migratorHTTP, "/v1/migrations/"+id, nil, &got); err != nil {
			return false, "", err
		}
		m := got.Migration
		switch m.Phase {
		case "PHASE_FAILED", "PHASE_CANCELED":
			t.Fatalf("migration %s ended %s: %s", id, m.Phase, m.Error)
		}
		return m.Phase == "PHASE_SUCCEEDED", fmt.Sprintf("%s, %s keys", m.Phase, m.Keys), nil
	})

	top = s.topology(t)
	if !covers(top.rangesOf(destination), move) || overlaps(top.rangesOf(source), move) {
		t.Fatalf("topology after the migration (version %s): %s has %v, %s has %v; want %s on %s only",
			top.Version, source, top.rangesOf(source), destination, top.rangesOf(destination), ranges, destination)
	}
	got := s.multiGet(t, keys)
	for _, k := range keys {
		if got[k] != "v-"+k {
			t.Errorf("key %s after the migration = %q, want %q", k, got[k], "v-"+k)
		}
	}
	var one kvEntry
	s.mustCall(t, http.MethodGet, s.routerHTTP, "/v1/kv/"+keys[0], nil, &one)
	if one.NodeID != destination {
		t.Errorf("key %s is served by %s after the migration, want %s", keys[0], one.NodeID, destination)
	}
}

// putKeysIn writes n keys named prefix/i whose slots are in r through the
// router's REST API, each with the value "v-" + key, and returns them.
func (s *stack) putKeysIn(t *testing.T, prefix string, r slotRange, n int) []string {
	t.Helper()
	var entries []map[string]string
	var keys []string
	for i := 0; len(keys) < n; i++ {
		k := fmt.Sprintf("%s/%d", prefix, i)
		if sl := uint32(slot.OfString(k)); sl >= r.Start && sl <= r.End {
			keys = append(keys, k)
			entries = append(entries, map[string]string{"key": k, "text": "v-" + k})
		}
	}
	s.mustCall(t, http.MethodPost, s.routerHTTP, "/v1/kv:multiPut", map[string]any{"entries": entries}, nil)
	return keys
}

func covers(rs []slotRange, r slotRange) bool {
	for _, x := range rs {
		if x.Start <= r.Start && r.End <= x.End {
			return true
		}
	}
	return false
}

func overlaps(rs []slotRange, r slotRange) bool {
	for _, x := range rs {
		if x.Start <= r.End && r.Start <= x.End {
			return true
		}
	}
	return false
}

func TestBulkLoad(t *testing.T) {
	s := newStack(t)
	// gen is deterministic: the same flags give the same records here, in
	// the tools container, and with bin/slotkv-dataset on this host.
	name := fmt.Sprintf("compose-test-%d", time.Now().UnixNano())
	gen := []string{"gen", "--records", "3000", "--value-size", "48", "--seed", "42", "--key-prefix", name}

	// Build the dataset in the stack's datasets volume, which the dataset
	// service serves at http://dataset:8000/.
	s.composeRun(t, "dataset", append([]string{"/slotkv-dataset"}, append(gen, "--out", "/data/"+name+".jsonl")...)...)
	s.composeRun(t, "dataset", "/slotkv-dataset", "build", "--input", "/data/"+name+".jsonl", "--out", "/data/"+name, "--target-file-size", "64KiB")

	type progress struct {
		Done  string `json:"done"`
		Total string `json:"total"`
	}
	type job struct {
		ID        string   `json:"id"`
		State     string   `json:"state"`
		Error     string   `json:"error"`
		FileCount int      `json:"file_count"`
		Ingest    progress `json:"ingest"`
	}
	var started struct {
		Job job `json:"job"`
	}
	manifest := "http://dataset:8000/" + name + "/manifest.json"
	s.mustCall(t, http.MethodPost, s.downloaderHTTP, "/v1/bulkloads", map[string]string{"manifest_url": manifest}, &started)
	id := started.Job.ID
	t.Logf("bulk load %s of %s", id, manifest)

	var last job
	waitFor(t, "bulk load "+id, 2*time.Minute, func() (bool, string, error) {
		var got struct {
			Job job `json:"job"`
		}
		if err := s.call(http.MethodGet, s.downloaderHTTP, "/v1/bulkloads/"+id, nil, &got); err != nil {
			return false, "", err
		}
		last = got.Job
		switch last.State {
		case "STATE_FAILED", "STATE_CANCELED", "STATE_PAUSED":
			t.Fatalf("bulk load %s ended %s: %s", id, last.State, last.Error)
		}
		return last.State == "STATE_SUCCEEDED", fmt.Sprintf("%s, ingested %s/%s", last.State, last.Ingest.Done, last.Ingest.Total), nil
	})
	if last.Ingest.Done != "3000" || last.FileCount < 2 {
		t.Errorf("bulk load %s: ingested %s records from %d files, want 3000 from several", id, last.Ingest.Done, last.FileCount)
	}

	// The same records, generated on this host; every 50th is read back.
	stdout, err := s.run(t, filepath.Join(s.bin, "slotkv-dataset"), append(gen, "--out", "-")...)
	if err != nil {
		t.Fatalf("slotkv-dataset gen on the host: %v", err)
	}
	want := map[string]string{}
	var keys []string
	sc := bufio.NewScanner(bytes.NewReader(stdout))
	for i := 0; sc.Scan(); i++ {
		var rec struct{ Key, Value string }
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("gen output line %d: %v", i+1, err)
		}
		if i%50 == 0 || i == 2999 {
			want[rec.Key] = rec.Value
			keys = append(keys, rec.Key)
		}
	}
	got := s.multiGet(t, keys)
	for _, k := range keys {
		if got[k] != want[k] {
			t.Errorf("bulk-loaded key %s = %q, want %q", k, got[k], want[k])
		}
	}
}
