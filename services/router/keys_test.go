package router_test

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	routerv1 "github.com/slotkv/slotkv/gen/slotkv/router/v1"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/services/router"
)

// answerKey is the key an answer names: key_bytes when set, else key.
func answerKey(key string, keyBytes []byte) []byte {
	if len(keyBytes) > 0 {
		return keyBytes
	}
	return []byte(key)
}

// TestBinaryKeys writes and reads keys that are not UTF-8 (and keys that
// are) through every public path: gRPC key_bytes, REST /v1/kv-b64/ and
// the key_bytes JSON fields, mixed_keys, and a scan by a binary prefix.
// Answers name a key as key when it is UTF-8 and as key_bytes otherwise.
func TestBinaryKeys(t *testing.T) {
	t.Parallel()
	_, _, r := setup(t, 3, router.Options{})
	ctx := ctxT(t)
	restBase := "http://" + r.HTTP

	tests := []struct {
		name string
		key  []byte
	}{
		{"nul and ff", []byte{0x00, 0xff}},
		{"lone ff", []byte{0xff}},
		{"invalid utf-8 inside text", []byte("bin/\xc3\x28/x")},
		{"slash and high bytes", []byte("\xfe/\xfd/")},
		{"hash tag", []byte("{tag}\x80\x81")},
		{"utf-8 as bytes", []byte("plain/ключ")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			utf := utf8.Valid(tc.key)
			value := append([]byte("v-"), tc.key...)

			// gRPC: put and get by key_bytes.
			put, err := r.KV.Put(ctx, &routerv1.PutRequest{KeyBytes: tc.key, Data: &routerv1.PutRequest_Value{Value: value}})
			if err != nil {
				t.Fatalf("Put(key_bytes %q): %v", tc.key, err)
			}
			if got := answerKey(put.GetKey(), put.GetKeyBytes()); !bytes.Equal(got, tc.key) || put.GetSlot() != uint32(slot.Of(tc.key)) {
				t.Fatalf("Put answered key %q slot %d, want %q slot %d", got, put.GetSlot(), tc.key, slot.Of(tc.key))
			}
			get, err := r.KV.Get(ctx, &routerv1.GetRequest{KeyBytes: tc.key})
			if err != nil {
				t.Fatalf("Get(key_bytes %q): %v", tc.key, err)
			}
			if utf {
				if get.GetKey() != string(tc.key) || len(get.GetKeyBytes()) != 0 {
					t.Fatalf("Get of a UTF-8 key answered key %q key_bytes %q, want key only", get.GetKey(), get.GetKeyBytes())
				}
			} else if get.GetKey() != "" || !bytes.Equal(get.GetKeyBytes(), tc.key) {
				t.Fatalf("Get of a binary key answered key %q key_bytes %q, want key_bytes only", get.GetKey(), get.GetKeyBytes())
			}
			gotValue := get.GetValue()
			if x, ok := get.GetData().(*routerv1.GetResponse_Text); ok {
				gotValue = []byte(x.Text)
			}
			if !bytes.Equal(gotValue, value) {
				t.Fatalf("Get value %q, want %q", gotValue, value)
			}

			// REST: the base64url path, padded and not, and the base64 JSON
			// field of the answer.
			b64url := base64.RawURLEncoding.EncodeToString(tc.key)
			for _, p := range []string{b64url, base64.URLEncoding.EncodeToString(tc.key)} {
				code, m := rest(t, "GET", restBase+"/v1/kv-b64/"+p, "", "")
				if code != http.StatusOK {
					t.Fatalf("GET /v1/kv-b64/%s: %d %v", p, code, m)
				}
				if !utf && m["key_bytes"] != base64.StdEncoding.EncodeToString(tc.key) {
					t.Fatalf("GET /v1/kv-b64/%s answered %v, want key_bytes %s", p, m, base64.StdEncoding.EncodeToString(tc.key))
				}
			}
			code, m := rest(t, "PUT", restBase+"/v1/kv-b64/"+b64url, `{"text":"rest"}`, "")
			if code != http.StatusOK {
				t.Fatalf("PUT /v1/kv-b64/%s: %d %v", b64url, code, m)
			}
			if get, err = r.KV.Get(ctx, &routerv1.GetRequest{KeyBytes: tc.key}); err != nil || get.GetText() != "rest" {
				t.Fatalf("Get after the REST PUT: %v %v, want text rest", get, err)
			}
			if utf {
				// The readable path reaches the same key.
				code, m := rest(t, "GET", restBase+"/v1/kv/"+url.PathEscape(string(tc.key)), "", "")
				if code != http.StatusOK || m["text"] != "rest" {
					t.Fatalf("GET /v1/kv/%s: %d %v", tc.key, code, m)
				}
			}
			if code, m = rest(t, "DELETE", restBase+"/v1/kv-b64/"+b64url, "", ""); code != http.StatusOK {
				t.Fatalf("DELETE /v1/kv-b64/%s: %d %v", b64url, code, m)
			}
			if _, err := r.KV.Get(ctx, &routerv1.GetRequest{KeyBytes: tc.key}); status.Code(err) != codes.NotFound {
				t.Fatalf("Get after DELETE: %v, want NotFound", err)
			}
		})
	}

	// Multi-key calls over REST: key_bytes entries, mixed_keys in request
	// order, a scan by a binary prefix, and a mixed delete.
	prefix := []byte{0xf0, 0x00}
	keys := [][]byte{append(bytes.Clone(prefix), 0x01), append(bytes.Clone(prefix), 0xff, 0xfe), append(bytes.Clone(prefix), 'a')}
	var entries []string
	for i, k := range keys {
		entries = append(entries, fmt.Sprintf(`{"key_bytes":%q,"text":"m%d"}`, base64.StdEncoding.EncodeToString(k), i))
	}
	entries = append(entries, `{"key":"mixed/text","text":"t"}`)
	if code, m := rest(t, "POST", restBase+"/v1/kv:multiPut", `{"entries":[`+strings.Join(entries, ",")+`]}`, ""); code != http.StatusOK || m["written"] != float64(4) {
		t.Fatalf("multiPut with key_bytes: %d %v", code, m)
	}
	mixed := fmt.Sprintf(`{"mixed_keys":[{"key_bytes":%q},{"key":"mixed/text"},{"key_bytes":"AA"},{"key_bytes":%q}]}`,
		base64.URLEncoding.EncodeToString(keys[1]), base64.RawStdEncoding.EncodeToString(keys[0]))
	code, m := rest(t, "POST", restBase+"/v1/kv:multiGet", mixed, "")
	if code != http.StatusOK {
		t.Fatalf("multiGet mixed_keys: %d %v", code, m)
	}
	es, _ := m["entries"].([]any)
	want := []struct {
		key, keyBytes, text string
		found               bool
	}{
		{"", base64.StdEncoding.EncodeToString(keys[1]), "m1", true},
		{"mixed/text", "", "t", true},
		{"\x00", "", "", false}, // "AA" is the byte 0: valid UTF-8, answered as key
		{"", base64.StdEncoding.EncodeToString(keys[0]), "m0", true},
	}
	if len(es) != len(want) {
		t.Fatalf("multiGet answered %d entries, want %d: %v", len(es), len(want), m)
	}
	for i, w := range want {
		e, _ := es[i].(map[string]any)
		if e["key"] != w.key || e["key_bytes"] != w.keyBytes || e["found"] != w.found || (w.found && e["text"] != w.text) {
			t.Fatalf("multiGet entry %d = %v, want %+v", i, e, w)
		}
	}

	scan, err := r.KV.Scan(ctx, &routerv1.ScanRequest{PrefixBytes: prefix})
	if err != nil {
		t.Fatal(err)
	}
	var got [][]byte
	for _, e := range scan.GetEntries() {
		got = append(got, answerKey(e.GetKey(), e.GetKeyBytes()))
	}
	if len(got) != len(keys) {
		t.Fatalf("scan of prefix %q found %q, want the %d keys %q", prefix, got, len(keys), keys)
	}
	for _, k := range keys {
		if !containsKey(got, k) {
			t.Fatalf("scan of prefix %q found %q, missing %q", prefix, got, k)
		}
	}
	q := url.Values{"prefix_bytes": {base64.RawURLEncoding.EncodeToString(prefix)}}
	if code, m := rest(t, "GET", restBase+"/v1/scan?"+q.Encode(), "", ""); code != http.StatusOK || len(m["entries"].([]any)) != len(keys) {
		t.Fatalf("GET /v1/scan?%s: %d %v, want %d entries", q.Encode(), code, m, len(keys))
	}

	if _, err := r.KV.MultiDelete(ctx, &routerv1.MultiDeleteRequest{MixedKeys: []*routerv1.Key{
		{Form: &routerv1.Key_KeyBytes{KeyBytes: keys[0]}}, {Form: &routerv1.Key_Key{Key: "mixed/text"}},
	}}); err != nil {
		t.Fatal(err)
	}
	mg, err := r.KV.MultiGet(ctx, &routerv1.MultiGetRequest{MixedKeys: []*routerv1.Key{
		{Form: &routerv1.Key_KeyBytes{KeyBytes: keys[0]}}, {Form: &routerv1.Key_Key{Key: "mixed/text"}}, {Form: &routerv1.Key_KeyBytes{KeyBytes: keys[2]}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if f := []bool{mg.GetEntries()[0].GetFound(), mg.GetEntries()[1].GetFound(), mg.GetEntries()[2].GetFound()}; f[0] || f[1] || !f[2] {
		t.Fatalf("after the mixed delete, found = %v, want [false false true]", f)
	}
}

func containsKey(keys [][]byte, k []byte) bool {
	for _, x := range keys {
		if bytes.Equal(x, k) {
			return true
		}
	}
	return false
}

// TestKeyAndExpiryInputErrors: malformed keys and expiries are 400 over
// REST and InvalidArgument over gRPC, naming the field.
func TestKeyAndExpiryInputErrors(t *testing.T) {
	t.Parallel()
	_, _, r := setup(t, 1, router.Options{})
	ctx := ctxT(t)
	restBase := "http://" + r.HTTP

	restTests := []struct {
		name, method, path, body, field string
	}{
		{"bad base64 in the path", "GET", "/v1/kv-b64/!!!", "", "key_bytes"},
		{"bad base64 in a PUT path", "PUT", "/v1/kv-b64/%25%25", `{"text":"x"}`, "key_bytes"},
		{"bad base64 in a DELETE path", "DELETE", "/v1/kv-b64/a$b", "", "key_bytes"},
		{"bad base64 in an entry", "POST", "/v1/kv:multiPut", `{"entries":[{"key_bytes":"!!","text":"x"}]}`, "key_bytes"},
		{"bad base64 in mixed_keys", "POST", "/v1/kv:multiGet", `{"mixed_keys":[{"key_bytes":"@@"}]}`, "key_bytes"},
		{"bad base64 prefix", "GET", "/v1/scan?prefix_bytes=!!!", "", "prefix_bytes"},
		{"key and key_bytes", "PUT", "/v1/kv-b64/AA", `{"key":"x","text":"y"}`, "key_bytes"},
		{"key and key_bytes in an entry", "POST", "/v1/kv:multiPut", `{"entries":[{"key":"a","text":"1"},{"key":"b","key_bytes":"AA==","text":"1"}]}`, "entries[1].key_bytes"},
		{"keys and mixed_keys", "POST", "/v1/kv:multiGet", `{"keys":["a"],"mixed_keys":[{"key":"b"}]}`, "mixed_keys"},
		{"empty mixed key", "POST", "/v1/kv:multiDelete", `{"mixed_keys":[{"key":"a"},{}]}`, "mixed_keys[1].key"},
		{"prefix and prefix_bytes", "GET", "/v1/scan?prefix=a&prefix_bytes=YQ", "", "prefix_bytes"},
		{"negative ttl", "PUT", "/v1/kv/x", `{"text":"y","ttl_ms":-1}`, "ttl_ms"},
		{"ttl and expiry", "PUT", "/v1/kv/x", `{"text":"y","ttl_ms":5,"expires_at_ms":5}`, "ttl_ms"},
		{"expiry after 9999", "PUT", "/v1/kv/x", `{"text":"y","expires_at_ms":"999999999999999999"}`, "expires_at_ms"},
		{"negative expiry in an entry", "POST", "/v1/kv:multiPut", `{"entries":[{"key":"a","text":"1","expires_at_ms":-5}]}`, "entries[0].expires_at_ms"},
		{"ttl not a number", "PUT", "/v1/kv/x", `{"text":"y","ttl_ms":"soon"}`, "ttl_ms"},
	}
	for _, tc := range restTests {
		t.Run("REST/"+tc.name, func(t *testing.T) {
			code, m := rest(t, tc.method, restBase+tc.path, tc.body, "")
			msg, _ := m["message"].(string)
			// A body protojson cannot read is refused by the gateway with
			// the field's JSON name ("field keyBytes"); the router's own
			// checks use the proto name.
			if code != http.StatusBadRequest || !strings.Contains(msg, tc.field) && !strings.Contains(msg, "field "+jsonName(tc.field)) {
				t.Fatalf("%s %s %s: %d %v, want 400 naming %s", tc.method, tc.path, tc.body, code, m, tc.field)
			}
		})
	}

	grpcTests := []struct {
		name  string
		call  func() error
		field string
	}{
		{"no key", func() error { _, err := r.KV.Get(ctx, &routerv1.GetRequest{}); return err }, "key"},
		{"both key forms", func() error {
			_, err := r.KV.Delete(ctx, &routerv1.DeleteRequest{Key: "a", KeyBytes: []byte{0xff}})
			return err
		}, "key_bytes"},
		{"key_bytes too long", func() error {
			_, err := r.KV.Get(ctx, &routerv1.GetRequest{KeyBytes: bytes.Repeat([]byte{0xff}, 16<<10+1)})
			return err
		}, "key_bytes"},
		{"negative ttl", func() error {
			_, err := r.KV.Put(ctx, &routerv1.PutRequest{KeyBytes: []byte{1}, Data: &routerv1.PutRequest_Text{}, TtlMs: -1})
			return err
		}, "ttl_ms"},
		{"ttl overflowing", func() error {
			_, err := r.KV.Put(ctx, &routerv1.PutRequest{Key: "a", Data: &routerv1.PutRequest_Text{}, TtlMs: 1<<63 - 1})
			return err
		}, "ttl_ms"},
		{"empty mixed key", func() error {
			_, err := r.KV.MultiGet(ctx, &routerv1.MultiGetRequest{MixedKeys: []*routerv1.Key{{Form: &routerv1.Key_KeyBytes{}}}})
			return err
		}, "mixed_keys[0].key"},
		{"start keys in both forms", func() error {
			_, err := r.KV.Scan(ctx, &routerv1.ScanRequest{StartKey: "a", StartKeyBytes: []byte{0xff}})
			return err
		}, "start_key_bytes"},
		{"entry ttl and expiry", func() error {
			_, err := r.KV.MultiPut(ctx, &routerv1.MultiPutRequest{Entries: []*routerv1.KeyValue{
				{KeyBytes: []byte{0xff}, Data: &routerv1.KeyValue_Text{}, TtlMs: 1, ExpiresAtMs: 1}}})
			return err
		}, "entries[0].ttl_ms"},
	}
	for _, tc := range grpcTests {
		t.Run("gRPC/"+tc.name, func(t *testing.T) {
			err := tc.call()
			if status.Code(err) != codes.InvalidArgument || badField(err) != tc.field {
				t.Fatalf("got %v (field %q), want InvalidArgument naming %s", err, badField(err), tc.field)
			}
		})
	}
}

// TestExpiry sets expiries through gRPC and REST (ttl_ms and
// expires_at_ms, single and multi-key puts), reads them back from Get,
// MultiGet and Scan, and waits (polling) until the expired keys are gone
// from every read while the others stay.
func TestExpiry(t *testing.T) {
	t.Parallel()
	_, _, r := setup(t, 3, router.Options{})
	ctx := ctxT(t)
	restBase := "http://" + r.HTTP
	const ttl = 1500
	binKey := []byte("ttl/\xff\x00")

	start := time.Now().UnixMilli()
	put, err := r.KV.Put(ctx, &routerv1.PutRequest{Key: "ttl/grpc", Data: &routerv1.PutRequest_Text{Text: "a"}, TtlMs: ttl})
	if err != nil {
		t.Fatal(err)
	}
	if put.GetExpiresAtMs() < start+ttl {
		t.Fatalf("Put with ttl_ms %d answered expires_at_ms %d, want at least %d", ttl, put.GetExpiresAtMs(), start+ttl)
	}
	if code, m := rest(t, "PUT", restBase+"/v1/kv/ttl/rest", fmt.Sprintf(`{"text":"b","ttl_ms":%d}`, ttl), ""); code != http.StatusOK || m["expires_at_ms"] == "0" {
		t.Fatalf("REST PUT with ttl_ms: %d %v", code, m)
	}
	at := time.Now().UnixMilli() + ttl
	if code, m := rest(t, "PUT", restBase+"/v1/kv-b64/"+base64.RawURLEncoding.EncodeToString(binKey), fmt.Sprintf(`{"value":"AA==","expires_at_ms":"%d"}`, at), ""); code != http.StatusOK || m["expires_at_ms"] != fmt.Sprint(at) {
		t.Fatalf("REST PUT with expires_at_ms %d: %d %v", at, code, m)
	}
	if _, err := r.KV.MultiPut(ctx, &routerv1.MultiPutRequest{Entries: []*routerv1.KeyValue{
		{Key: "ttl/multi", Data: &routerv1.KeyValue_Text{Text: "c"}, TtlMs: ttl},
		{Key: "ttl/keep", Data: &routerv1.KeyValue_Text{Text: "d"}},
		{Key: "ttl/persisted", Data: &routerv1.KeyValue_Text{Text: "e"}, TtlMs: ttl},
	}}); err != nil {
		t.Fatal(err)
	}
	// A write without an expiry removes the one the key had.
	if _, err := r.KV.Put(ctx, &routerv1.PutRequest{Key: "ttl/persisted", Data: &routerv1.PutRequest_Text{Text: "f"}}); err != nil {
		t.Fatal(err)
	}
	// A write with an expiry already past removes the key.
	if _, err := r.KV.Put(ctx, &routerv1.PutRequest{Key: "ttl/past", Data: &routerv1.PutRequest_Text{Text: "g"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.KV.Put(ctx, &routerv1.PutRequest{Key: "ttl/past", Data: &routerv1.PutRequest_Text{Text: "h"}, ExpiresAtMs: start - 1000}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.KV.Get(ctx, &routerv1.GetRequest{Key: "ttl/past"}); status.Code(err) != codes.NotFound {
		t.Fatalf("Get of a key written with a past expiry: %v, want NotFound", err)
	}

	expiring := map[string]bool{"ttl/grpc": true, "ttl/rest": true, string(binKey): true, "ttl/multi": true, "ttl/keep": false, "ttl/persisted": false}
	mixed := []*routerv1.Key{}
	for k := range expiring {
		mixed = append(mixed, &routerv1.Key{Form: &routerv1.Key_KeyBytes{KeyBytes: []byte(k)}})
	}

	// Read back before the expiry: every read answers it. A slow machine
	// may already be past it; then the keys are gone, checked below.
	if g, err := r.KV.Get(ctx, &routerv1.GetRequest{Key: "ttl/grpc"}); err == nil {
		if g.GetExpiresAtMs() != put.GetExpiresAtMs() || g.GetTtlMs() < 1 || g.GetTtlMs() > ttl {
			t.Fatalf("Get answered expires_at_ms %d ttl_ms %d, want %d and 1..%d", g.GetExpiresAtMs(), g.GetTtlMs(), put.GetExpiresAtMs(), ttl)
		}
	}
	if code, m := rest(t, "GET", restBase+"/v1/kv/ttl/rest", "", ""); code == http.StatusOK && (m["expires_at_ms"] == "0" || m["ttl_ms"] == "0") {
		t.Fatalf("REST GET of a key with a ttl: %v, want its expiry", m)
	}
	mg, err := r.KV.MultiGet(ctx, &routerv1.MultiGetRequest{MixedKeys: mixed})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range mg.GetEntries() {
		k := string(answerKey(e.GetKey(), e.GetKeyBytes()))
		if e.GetFound() && (e.GetExpiresAtMs() != 0) != expiring[k] {
			t.Fatalf("MultiGet %q: expires_at_ms %d, want an expiry: %v", k, e.GetExpiresAtMs(), expiring[k])
		}
		if !e.GetFound() && !expiring[k] {
			t.Fatalf("MultiGet %q: not found", k)
		}
	}
	sc, err := r.KV.Scan(ctx, &routerv1.ScanRequest{Prefix: "ttl/", KeysOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range sc.GetEntries() {
		k := string(answerKey(e.GetKey(), e.GetKeyBytes()))
		if (e.GetExpiresAtMs() != 0) != expiring[k] {
			t.Fatalf("Scan %q: expires_at_ms %d, want an expiry: %v", k, e.GetExpiresAtMs(), expiring[k])
		}
	}

	// Wait until every expiring key is gone from every read.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var present []string
		for k, exp := range expiring {
			_, err := r.KV.Get(ctx, &routerv1.GetRequest{KeyBytes: []byte(k)})
			switch {
			case err == nil && exp:
				present = append(present, "get "+k)
			case err != nil && (!exp || status.Code(err) != codes.NotFound):
				t.Fatalf("Get %q: %v", k, err)
			}
		}
		mg, err := r.KV.MultiGet(ctx, &routerv1.MultiGetRequest{MixedKeys: mixed})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range mg.GetEntries() {
			k := string(answerKey(e.GetKey(), e.GetKeyBytes()))
			if e.GetFound() == expiring[k] && expiring[k] {
				present = append(present, "multiGet "+k)
			} else if !e.GetFound() && !expiring[k] {
				t.Fatalf("MultiGet %q: not found", k)
			}
		}
		sc, err := r.KV.Scan(ctx, &routerv1.ScanRequest{Prefix: "ttl/"})
		if err != nil {
			t.Fatal(err)
		}
		var scanned []string
		for _, e := range sc.GetEntries() {
			k := string(answerKey(e.GetKey(), e.GetKeyBytes()))
			scanned = append(scanned, k)
			if expiring[k] {
				present = append(present, "scan "+k)
			}
		}
		if len(present) == 0 {
			if len(scanned) != 2 {
				t.Fatalf("after the expiry, scan of ttl/ lists %q, want ttl/keep and ttl/persisted", scanned)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("30s after writing them with a %d ms ttl, still present: %q", ttl, present)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// jsonName is protojson's JSON name of a proto field name: key_bytes is
// keyBytes.
func jsonName(field string) string {
	parts := strings.Split(field, "_")
	for i := 1; i < len(parts); i++ {
		if parts[i] != "" {
			parts[i] = strings.ToUpper(parts[i][:1]) + parts[i][1:]
		}
	}
	return strings.Join(parts, "")
}
