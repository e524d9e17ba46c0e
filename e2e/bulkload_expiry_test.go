package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	downloaderv1 "github.com/slotkv/slotkv/gen/slotkv/downloader/v1"
	routerv1 "github.com/slotkv/slotkv/gen/slotkv/router/v1"
	"github.com/slotkv/slotkv/pkg/dataset"
)

// TestBulkLoadBinaryKeysAndExpiry goes the whole public path of a binary,
// expiring dataset: JSONL lines with key_b64 and expires_at_ms, built by
// slotkv-dataset, loaded by the downloader, read through the router (gRPC
// mixed_keys and REST /v1/kv-b64/) with each key's bytes and expiry; a
// record already expired is never served, one expiring soon is gone once
// its time has passed.
func TestBulkLoadBinaryKeysAndExpiry(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3, "expiry-secret")
	now := time.Now().UnixMilli()
	later := now + time.Hour.Milliseconds()
	soon := now + 2000

	type rec struct {
		key   []byte
		value string
		exp   int64
	}
	var recs []rec
	for i := range 300 {
		r := rec{key: []byte{0xfe, byte(i), 0x00, byte(i >> 8), 0xff}, value: fmt.Sprintf("bin-%d", i)}
		if i%2 == 1 {
			r.exp = later + int64(i)
		}
		recs = append(recs, r)
	}
	recs = append(recs,
		rec{key: []byte("text/expiring"), value: "t", exp: later},
		rec{key: []byte("text/expired"), value: "gone", exp: now - 1000},
		rec{key: []byte{0x80, 'x'}, value: "soon", exp: soon},
	)
	var in strings.Builder
	for _, r := range recs {
		line := fmt.Sprintf(`{"key_b64":%q,"value":%q`, base64.StdEncoding.EncodeToString(r.key), r.value)
		if r.exp != 0 {
			line += fmt.Sprintf(`,"expires_at_ms":%d`, r.exp)
		}
		in.WriteString(line + "}\n")
	}
	work := t.TempDir()
	input, dir := filepath.Join(work, "input.jsonl"), filepath.Join(work, "dataset")
	if err := os.WriteFile(input, []byte(in.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := runTool(t, "slotkv-dataset", "build", "--input", input, "--out", dir, "--target-file-size", "4KiB"); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	if m := readManifest(t, dir); m.FormatVersion != dataset.FormatVersion || m.Records != uint64(len(recs)) {
		t.Fatalf("dataset: version %d, %d records, want %d and %d", m.FormatVersion, m.Records, dataset.FormatVersion, len(recs))
	}
	fs := serveDataset(t, dir)
	l := startLoader(t, c)
	if job := l.run(t, "binary-expiry", fs.url+"/"+dataset.ManifestName); job.GetState() != downloaderv1.State_STATE_SUCCEEDED {
		t.Fatalf("job %s: %v", job.GetState(), job.GetError())
	}

	kv := routerv1.NewKVServiceClient(c.conn(c.router.GRPC))
	mixed := make([]*routerv1.Key, len(recs))
	for i, r := range recs {
		mixed[i] = &routerv1.Key{Form: &routerv1.Key_KeyBytes{KeyBytes: r.key}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := kv.MultiGet(ctx, &routerv1.MultiGetRequest{MixedKeys: mixed})
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range resp.GetEntries() {
		r := recs[i]
		got := e.GetKeyBytes()
		if len(got) == 0 {
			got = []byte(e.GetKey())
		}
		switch {
		case !bytes.Equal(got, r.key):
			t.Fatalf("entry %d answers key %q, want %q", i, got, r.key)
		case r.exp == soon:
			// Maybe already gone on a slow machine; waited for below.
		case r.exp != 0 && r.exp <= now:
			if e.GetFound() {
				t.Fatalf("key %q expired before the load but is served: %v", r.key, e)
			}
		case !e.GetFound() || e.GetText() != r.value || e.GetExpiresAtMs() != r.exp:
			t.Fatalf("key %q: found %v text %q expires_at_ms %d, want %q expiring at %d", r.key, e.GetFound(), e.GetText(), e.GetExpiresAtMs(), r.value, r.exp)
		}
	}

	// REST, by the base64url path.
	r := recs[1]
	code, m := c.rest("GET", "/v1/kv-b64/"+base64.RawURLEncoding.EncodeToString(r.key), nil)
	if code != http.StatusOK || m["text"] != r.value || m["expires_at_ms"] != fmt.Sprint(r.exp) || m["key_bytes"] != base64.StdEncoding.EncodeToString(r.key) {
		t.Fatalf("GET /v1/kv-b64/ of %q: %d %v, want %q expiring at %d", r.key, code, m, r.value, r.exp)
	}

	// The record expiring soon disappears (polled; no time asserted).
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := kv.Get(ctx, &routerv1.GetRequest{KeyBytes: []byte{0x80, 'x'}})
		if status.Code(err) == codes.NotFound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the record expiring at %d is still served 30s later: %v", soon, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
