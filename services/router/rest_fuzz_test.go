package router_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	routerv1 "github.com/slotkv/slotkv/gen/slotkv/router/v1"
	"github.com/slotkv/slotkv/pkg/server"
	"github.com/slotkv/slotkv/pkg/testcluster"
	"github.com/slotkv/slotkv/services/router"
)

// fuzzRouter starts one storage node and a router on it, in this process
// (the router) and a child (the node), once per fuzzing process: every
// input then costs a few loopback HTTP calls. It returns the REST base URL.
func fuzzRouter(f *testing.F) string {
	f.Helper()
	c := testcluster.Start(f, 1, testcluster.Options{})
	c.Bootstrap(f)
	var o router.Options
	// Assigned, not in a literal: these fields are promoted from an
	// embedded struct.
	o.Etcd.Endpoints = c.Etcd().Endpoints()
	o.GRPCAddr, o.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	addrs := make(chan string, 1)
	o.OnListen = func(_, h net.Addr) { addrs <- h.String() }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- router.Run(ctx, o) }()
	f.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			f.Errorf("router.Run: %v", err)
		}
	})
	var base string
	select {
	case h := <-addrs:
		base = "http://" + h
	case err := <-done:
		f.Fatalf("router.Run returned before listening: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
		if time.Now().After(deadline) {
			f.Fatalf("router not ready after 30s (last: %v)", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// noRedirect is a client that shows redirects instead of following them.
var noRedirect = &http.Client{
	Timeout:       30 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// restCall sends one request and returns the status and the JSON answer;
// every answer of the gateway, errors included, must be a JSON object.
func restCall(t *testing.T, method, u string, body []byte) (int, map[string]any, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if resp.StatusCode < 300 || resp.StatusCode >= 400 {
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s %s %q: %d answered %q, not a JSON object", method, u, body, resp.StatusCode, b)
		}
	}
	return resp.StatusCode, m, b
}

// restRoutes are the routes of the router's REST API the fuzz input picks
// from: the body-carrying ones, and, so that the key reaches a path
// parameter or a query value too, GET and DELETE of a key and a scan by
// prefix. A path ending in "/" takes the key path-escaped, one ending in
// "=" query-escaped; under /v1/kv-b64/ and for prefix_bytes the key is
// base64url-encoded first.
var restRoutes = []struct{ method, path string }{
	{"PUT", "/v1/kv/"},
	{"POST", "/v1/kv/"},
	{"POST", "/v1/kv:multiGet"},
	{"POST", "/v1/kv:multiPut"},
	{"POST", "/v1/kv:multiDelete"},
	{"GET", "/v1/kv/"},
	{"DELETE", "/v1/kv/"},
	{"GET", "/v1/scan?limit=3&prefix="},
	{"PUT", "/v1/kv-b64/"},
	{"GET", "/v1/kv-b64/"},
	{"DELETE", "/v1/kv-b64/"},
	{"GET", "/v1/scan?limit=3&prefix_bytes="},
}

// FuzzRESTBody sends arbitrary JSON bodies (and keys) to the router's REST
// KV API through the real gateway, router and storage node. Whatever the
// body, the answer is 2xx or 4xx with a JSON body, never a 5xx: bad input
// is the caller's fault and must say so, and a panic would come back as
// 500. A PUT or multiPut that succeeds is read back: same keys, same
// bytes, the body read by the gateway's own marshaler.
func FuzzRESTBody(f *testing.F) {
	seeds := []struct {
		route uint8
		key   string
		body  string
	}{
		{0, "hello", `{"text":"world"}`},
		{0, "blob", `{"value":"//4AAQ=="}`},
		{1, "user/42/name", `{"text":"ada"}`},
		{0, "k", `{"text":"a","value":"AA=="}`},
		{0, "k", `{}`},
		{0, "k", `{"value":"not base64!"}`},
		{0, "k", `{"text":5}`},
		{0, "k", `{"key":"other","text":"x"}`},
		{0, "k", `{"unknown":1,"text":"x"}`},
		{0, "k", `not json`},
		{0, "k", `[]`},
		{0, "k", `null`},
		{0, "", `{"text":"x"}`},
		{0, "\xff", `{"text":"x"}`},
		{0, "k", `{"text":"\ud800"}`},
		{0, "a/../b", `{"text":"x"}`},
		{2, "", `{"keys":["a","b","a"]}`},
		{2, "", `{"keys":[""]}`},
		{2, "", `{"keys":[],"allow_partial":true}`},
		{2, "", `{"keys":"a"}`},
		{3, "", `{"entries":[{"key":"a","text":"1"},{"key":"b","value":"AQI="}]}`},
		{3, "", `{"entries":[{"key":"a"}]}`},
		{3, "", `{"entries":[{"key":"","text":"x"}]}`},
		{3, "", `{"entries":[null]}`},
		{3, "", `{"entries":[{"key":"d","text":"1"},{"key":"e"},{"key":"d","value":"-_8="}]}`},
		{4, "", `{"keys":["a","zz"]}`},
		{4, "", `{"keys":[null]}`},
		{5, "\xff", ``},
		{6, "a\xffb", ``},
		{7, "\xfe", ``},
		{7, "user/", ``},
		{8, "\x00\xff", `{"value":"AQ=="}`},
		{8, "\xff", `{"text":"x","ttl_ms":60000}`},
		{8, "k", `{"text":"x","expires_at_ms":"1"}`},
		{8, "k", `{"key":"k","text":"x"}`},
		{0, "", `{"key_bytes":"AP8=","text":"x"}`},
		{0, "k", `{"text":"x","ttl_ms":-1}`},
		{0, "k", `{"text":"x","ttl_ms":1,"expires_at_ms":1}`},
		{9, "\xfe\xff", ``},
		{9, "!", ``},
		{10, "\xfe", ``},
		{11, "\xf0", ``},
		{2, "", `{"mixed_keys":[{"key":"a"},{"key_bytes":"/w=="}]}`},
		{2, "", `{"mixed_keys":[{"key":"a","key_bytes":"/w=="}]}`},
		{3, "", `{"entries":[{"key_bytes":"AP8=","text":"1","ttl_ms":"60000"},{"key":"b","value":"AQI=","expires_at_ms":"1"}]}`},
		{3, "", `{"entries":[{"key_bytes":"!!","text":"1"}]}`},
		{4, "", `{"mixed_keys":[{"key_bytes":"AP8="}],"keys":["a"]}`},
	}
	for _, s := range seeds {
		f.Add(s.route, s.key, []byte(s.body))
	}
	base := fuzzRouter(f)
	f.Fuzz(func(t *testing.T, route uint8, key string, body []byte) {
		r := restRoutes[int(route)%len(restRoutes)]
		u := base + r.path
		keyed := strings.HasSuffix(r.path, "/")
		b64 := strings.Contains(r.path, "kv-b64") || strings.HasSuffix(r.path, "prefix_bytes=")
		if b64 {
			key = base64.RawURLEncoding.EncodeToString([]byte(key))
		}
		if keyed {
			u += url.PathEscape(key)
		}
		if strings.HasSuffix(r.path, "=") {
			u += url.QueryEscape(key)
		}
		code, m, _ := restCall(t, r.method, u, body)
		if code >= 300 && code < 400 {
			// net/http's mux redirects unclean paths ("a/../b") before
			// the API sees them; nothing else may redirect.
			if p := r.path + key; keyed && path.Clean(p) != strings.TrimSuffix(p, "/") {
				return
			}
			t.Fatalf("%s %s %q: %d, a redirect", r.method, u, body, code)
		}
		if code >= 500 || code < 200 {
			t.Fatalf("%s %s %q: %d %v, want 2xx or 4xx", r.method, u, body, code, m)
		}
		if code >= 300 {
			return
		}
		switch {
		case keyed && (r.method == "PUT" || r.method == "POST"):
			checkPutReadBack(t, base, u, body, m)
		case r.path == "/v1/kv:multiPut":
			checkMultiPutReadBack(t, base, body)
		}
	})
}

// gatewayDecode reads a request body as the generated gateway handlers
// do: the first JSON value through the gateway's marshaler, an empty body
// being the empty message.
func gatewayDecode(body []byte, msg proto.Message) error {
	err := server.GatewayMarshaler().NewDecoder(bytes.NewReader(body)).Decode(msg)
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// putValue is the value a PutRequest or KeyValue carries: its text or its
// bytes (empty when it has neither).
func putValue(text *string, value []byte) []byte {
	if text != nil {
		return []byte(*text)
	}
	return value
}

// expiring reports whether a write set an expiry: its key may be gone
// (a past expires_at_ms removes it at once) by the time it is read back.
func expiring(ttl, at int64) bool { return ttl != 0 || at != 0 }

// checkPutReadBack: after PUT/POST /v1/kv/{key} answered 2xx, a GET of
// the key the answer names answers that key and the bytes the body
// carried, as the gateway's own marshaler reads the body. A key written
// with an expiry may be absent instead.
func checkPutReadBack(t *testing.T, base, u string, body []byte, m map[string]any) {
	t.Helper()
	var req routerv1.PutRequest
	if err := gatewayDecode(body, &req); err != nil {
		t.Fatalf("PUT %s %q succeeded, but the gateway marshaler refuses the body: %v", u, body, err)
	}
	var put routerv1.PutResponse
	if raw, err := json.Marshal(m); err != nil || server.GatewayMarshaler().Unmarshal(raw, &put) != nil {
		t.Fatalf("PUT %s %q answered %v, not a PutResponse", u, body, m)
	}
	var text *string
	if x, ok := req.GetData().(*routerv1.PutRequest_Text); ok {
		text = &x.Text
	}
	want := putValue(text, req.GetValue())
	key := answerKey(put.GetKey(), put.GetKeyBytes())
	gu := base + "/v1/kv-b64/" + base64.RawURLEncoding.EncodeToString(key)
	gcode, g, graw := restCall(t, "GET", gu, nil)
	if gcode == http.StatusNotFound && expiring(req.GetTtlMs(), req.GetExpiresAtMs()) {
		return
	}
	var got routerv1.GetResponse
	if gcode != http.StatusOK || server.GatewayMarshaler().Unmarshal(graw, &got) != nil || !bytes.Equal(answerKey(got.GetKey(), got.GetKeyBytes()), key) {
		t.Fatalf("PUT %s %q answered %v; GET %s: %d %v", u, body, m, gu, gcode, g)
	}
	var gtext *string
	if x, ok := got.GetData().(*routerv1.GetResponse_Text); ok {
		gtext = &x.Text
	}
	if gv := putValue(gtext, got.GetValue()); !bytes.Equal(gv, want) {
		t.Fatalf("PUT %s %q, GET answered %v: value %q, want %q", u, body, g, gv, want)
	}
}

// checkMultiPutReadBack: after a multiPut answered 2xx, a multiGet of its
// keys finds each with the value of its last entry (a key listed several
// times takes its last value, as MultiPut documents).
func checkMultiPutReadBack(t *testing.T, base string, body []byte) {
	t.Helper()
	var req routerv1.MultiPutRequest
	if err := gatewayDecode(body, &req); err != nil {
		t.Fatalf("multiPut %q succeeded, but the gateway marshaler refuses the body: %v", body, err)
	}
	want := map[string][]byte{}
	mayExpire := map[string]bool{}
	var keys []string
	var mixed []*routerv1.Key
	for _, e := range req.GetEntries() {
		var text *string
		if x, ok := e.GetData().(*routerv1.KeyValue_Text); ok {
			text = &x.Text
		}
		k := string(answerKey(e.GetKey(), e.GetKeyBytes()))
		if _, dup := want[k]; !dup {
			keys = append(keys, k)
			mixed = append(mixed, &routerv1.Key{Form: &routerv1.Key_KeyBytes{KeyBytes: []byte(k)}})
		}
		want[k] = putValue(text, e.GetValue())
		mayExpire[k] = expiring(e.GetTtlMs(), e.GetExpiresAtMs())
	}
	if len(keys) == 0 {
		return
	}
	getBody, err := server.GatewayMarshaler().Marshal(&routerv1.MultiGetRequest{MixedKeys: mixed})
	if err != nil {
		t.Fatal(err)
	}
	code, m, raw := restCall(t, "POST", base+"/v1/kv:multiGet", getBody)
	var got routerv1.MultiGetResponse
	if code != http.StatusOK || server.GatewayMarshaler().Unmarshal(raw, &got) != nil || len(got.GetEntries()) != len(keys) {
		t.Fatalf("multiPut %q, then multiGet of %q: %d %v", body, keys, code, m)
	}
	for i, e := range got.GetEntries() {
		var text *string
		if x, ok := e.GetData().(*routerv1.Entry_Text); ok {
			text = &x.Text
		}
		if !e.GetFound() && mayExpire[keys[i]] {
			continue
		}
		if string(answerKey(e.GetKey(), e.GetKeyBytes())) != keys[i] || !e.GetFound() || !bytes.Equal(putValue(text, e.GetValue()), want[keys[i]]) {
			t.Fatalf("multiPut %q, then multiGet entry %d = %v, want key %q value %q", body, i, e, keys[i], want[keys[i]])
		}
	}
}
