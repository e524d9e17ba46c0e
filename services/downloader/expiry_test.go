package downloader_test

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"testing"
	"time"

	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/dataset"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/testcluster"
)

// TestBulkLoadBinaryKeysAndExpiry loads a dataset whose keys are not
// UTF-8 (one also a file's first key, so the manifest carries it in
// base64) and whose records carry expiries: every key reaches its node
// with its bytes and its expiry, and a record already expired when it is
// ingested is not written.
func TestBulkLoadBinaryKeysAndExpiry(t *testing.T) {
	t.Parallel()
	c := testcluster.Start(t, 2, testcluster.Options{Token: testToken})
	topo := c.Bootstrap(t)
	s := startService(t, testOptions(t, c, t.TempDir()))
	s.waitReady(t)

	now := time.Now().UnixMilli()
	later := now + time.Hour.Milliseconds()
	type rec struct {
		key   []byte
		value string
		exp   int64
	}
	var recs []rec
	for i := range 600 {
		k := []byte{0xff, byte(i), 0x00, byte(i >> 8)}
		r := rec{key: k, value: fmt.Sprintf("v%d", i)}
		switch i % 3 {
		case 1:
			r.exp = later + int64(i)
		case 2:
			if i%30 == 2 {
				r.exp = now - 1000 // expired before the load
			}
		}
		recs = append(recs, r)
	}
	recs = append(recs, rec{key: []byte("plain"), value: "p", exp: later})
	slices.SortFunc(recs, func(a, b rec) int {
		return cmp.Or(cmp.Compare(slot.Of(a.key), slot.Of(b.key)), bytes.Compare(a.key, b.key))
	})

	ds := &testDataset{files: map[string][]byte{}, perFile: map[string][]kv{},
		manifest: &dataset.Manifest{FormatVersion: dataset.FormatVersion, SlotCount: slot.Count}}
	for f, part := range [][]rec{recs[:len(recs)/2], recs[len(recs)/2:]} {
		var buf bytes.Buffer
		w := dataset.NewWriter(&buf, dataset.WriterOptions{BlockSize: 1 << 10})
		for _, r := range part {
			if err := w.Write(dataset.Record{Slot: slot.Of(r.key), Key: r.key, Value: []byte(r.value), ExpiresAtMs: r.exp}); err != nil {
				t.Fatal(err)
			}
		}
		info, err := w.Close()
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("part-%05d.skv", f)
		ds.files[name] = buf.Bytes()
		ds.manifest.Files = append(ds.manifest.Files, info.File(name))
		ds.manifest.Records += info.Keys
	}
	ds.setManifest(t)
	if !bytes.Contains(ds.files[dataset.ManifestName], []byte(`"first_key_b64"`)) {
		t.Fatalf("the manifest carries no binary key:\n%s", ds.files[dataset.ManifestName])
	}
	srv := serveDataset(t, ds)
	s.start(t, srv.manifestURL(), "binary")
	s.waitState(t, "binary", succeeded)

	byNode := map[string][]rec{}
	for _, r := range recs {
		n, ok := topo.Owner(slot.Of(r.key))
		if !ok {
			t.Fatalf("slot of %q has no owner", r.key)
		}
		byNode[n.ID] = append(byNode[n.ID], r)
	}
	for id, rs := range byNode {
		req := &storagev1.BatchGetRequest{}
		for _, r := range rs {
			req.Keys = append(req.Keys, r.key)
		}
		resp, err := c.Node(t, id).StorageClient().BatchGet(ctxT(t), req)
		if err != nil {
			t.Fatalf("BatchGet on %s: %v", id, err)
		}
		for i, it := range resp.GetItems() {
			r := rs[i]
			expired := r.exp != 0 && r.exp <= now
			switch {
			case expired && it.GetFound():
				t.Fatalf("node %s: key %q expired before the load (at %d) but is there", id, r.key, r.exp)
			case !expired && (!it.GetFound() || string(it.GetValue()) != r.value || it.GetExpiresAtMs() != r.exp):
				t.Fatalf("node %s: key %q: found %v value %q expires_at_ms %d, want %q expiring at %d",
					id, r.key, it.GetFound(), it.GetValue(), it.GetExpiresAtMs(), r.value, r.exp)
			}
		}
	}
}
