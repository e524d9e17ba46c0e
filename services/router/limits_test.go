package router_test

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	routerv1 "github.com/slotkv/slotkv/gen/slotkv/router/v1"
	"github.com/slotkv/slotkv/pkg/limits"
	"github.com/slotkv/slotkv/pkg/server"
	"github.com/slotkv/slotkv/pkg/testcluster"
	"github.com/slotkv/slotkv/services/router"
)

// TestSizeLimitsBeforeForwarding sends keys and values just over the
// shared limits (pkg/limits, the storage node's defaults): the router
// refuses each with InvalidArgument naming the field and the limit, and no
// storage call is made. Values at the limit still go through.
func TestSizeLimitsBeforeForwarding(t *testing.T) {
	t.Parallel()
	c, _, r := setup(t, 1, router.Options{})
	node := c.Nodes[0]
	bigKey := strings.Repeat("k", limits.DefaultMaxKeyBytes+1)
	bigValue := strings.Repeat("v", limits.DefaultMaxValueBytes+1)
	keyLimit := fmt.Sprintf("--max-key-bytes=%d", limits.DefaultMaxKeyBytes)
	valueLimit := fmt.Sprintf("--max-value-bytes=%d", limits.DefaultMaxValueBytes)

	tests := []struct {
		name      string
		call      func() error
		wantField string
		wantLimit string
	}{
		{"put text", func() error {
			_, err := r.KV.Put(ctxT(t), &routerv1.PutRequest{Key: "a", Data: &routerv1.PutRequest_Text{Text: bigValue}})
			return err
		}, "text", valueLimit},
		{"put bytes", func() error {
			_, err := r.KV.Put(ctxT(t), &routerv1.PutRequest{Key: "a", Data: &routerv1.PutRequest_Value{Value: []byte(bigValue)}})
			return err
		}, "value", valueLimit},
		{"put key", func() error {
			_, err := r.KV.Put(ctxT(t), &routerv1.PutRequest{Key: bigKey, Data: &routerv1.PutRequest_Text{Text: "x"}})
			return err
		}, "key", keyLimit},
		{"get key", func() error {
			_, err := r.KV.Get(ctxT(t), &routerv1.GetRequest{Key: bigKey})
			return err
		}, "key", keyLimit},
		{"delete key", func() error {
			_, err := r.KV.Delete(ctxT(t), &routerv1.DeleteRequest{Key: bigKey})
			return err
		}, "key", keyLimit},
		{"multi-get key", func() error {
			_, err := r.KV.MultiGet(ctxT(t), &routerv1.MultiGetRequest{Keys: []string{"a", bigKey}})
			return err
		}, "keys[1]", keyLimit},
		{"multi-put key", func() error {
			_, err := r.KV.MultiPut(ctxT(t), &routerv1.MultiPutRequest{Entries: []*routerv1.KeyValue{textKV(bigKey, "x")}})
			return err
		}, "entries[0].key", keyLimit},
		{"multi-put text", func() error {
			_, err := r.KV.MultiPut(ctxT(t), &routerv1.MultiPutRequest{Entries: []*routerv1.KeyValue{textKV("a", "x"), textKV("b", bigValue)}})
			return err
		}, "entries[1].text", valueLimit},
		{"multi-put bytes", func() error {
			_, err := r.KV.MultiPut(ctxT(t), &routerv1.MultiPutRequest{Entries: []*routerv1.KeyValue{
				{Key: "a", Data: &routerv1.KeyValue_Value{Value: []byte(bigValue)}},
			}})
			return err
		}, "entries[0].value", valueLimit},
		{"multi-delete key", func() error {
			_, err := r.KV.MultiDelete(ctxT(t), &routerv1.MultiDeleteRequest{Keys: []string{"a", "b", bigKey}})
			return err
		}, "keys[2]", keyLimit},
	}
	// Subtests run in sequence: the storage call counts are compared
	// around each.
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := storageCalls(t, node)
			err := tt.call()
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("err = %v, want InvalidArgument", err)
			}
			if f := badField(err); f != tt.wantField {
				t.Errorf("field violation on %q, want %q (%v)", f, tt.wantField, err)
			}
			if msg := status.Convert(err).Message(); !strings.Contains(msg, tt.wantField) || !strings.Contains(msg, tt.wantLimit) {
				t.Errorf("message %q does not name %q and %q", msg, tt.wantField, tt.wantLimit)
			}
			if after := storageCalls(t, node); after != before {
				t.Errorf("storage node got %d data calls for a refused request, want 0", after-before)
			}
		})
	}

	t.Run("at the limits", func(t *testing.T) {
		key := strings.Repeat("k", limits.DefaultMaxKeyBytes)
		value := bigValue[:limits.DefaultMaxValueBytes]
		if _, err := r.KV.Put(ctxT(t), &routerv1.PutRequest{Key: key, Data: &routerv1.PutRequest_Text{Text: value}}); err != nil {
			t.Fatalf("Put of a %d-byte key and %d-byte value: %v", len(key), len(value), err)
		}
		got, err := r.KV.Get(ctxT(t), &routerv1.GetRequest{Key: key}, grpc.MaxCallRecvMsgSize(8<<20))
		if err != nil || len(got.GetText()) != len(value) {
			t.Fatalf("Get = %d bytes, %v; want %d bytes", len(got.GetText()), err, len(value))
		}
	})
}

// TestConfiguredSizeLimits: router.Options raises or lowers the limits
// (to follow storage nodes started with other --max-key-bytes and
// --max-value-bytes).
func TestConfiguredSizeLimits(t *testing.T) {
	t.Parallel()
	_, _, r := setup(t, 1, router.Options{MaxKeyBytes: 8, MaxValueBytes: 16})
	tests := []struct {
		name      string
		key, text string
		wantField string // "" = accepted
	}{
		{"both at the limits", "12345678", "0123456789abcdef", ""},
		{"key over", "123456789", "x", "key"},
		{"value over", "k", "0123456789abcdefg", "text"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := r.KV.Put(ctxT(t), &routerv1.PutRequest{Key: tt.key, Data: &routerv1.PutRequest_Text{Text: tt.text}})
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("Put: %v", err)
				}
				return
			}
			if status.Code(err) != codes.InvalidArgument || badField(err) != tt.wantField {
				t.Fatalf("Put = %v, want InvalidArgument on %q", err, tt.wantField)
			}
		})
	}
}

// storageCalls sums the data calls node n has served.
func storageCalls(t *testing.T, n *testcluster.Node) uint64 {
	t.Helper()
	var sum uint64
	for _, m := range []string{"Get", "Put", "Delete", "BatchGet", "BatchWrite"} {
		sum += rpcCount(t, n, m)
	}
	return sum
}

// rawHTTP sends one HTTP/1.1 request over a plain TCP connection, the path
// exactly as given (a net/http client would clean it), the body with a
// Content-Length or chunked, and decodes the JSON answer. The body is
// written from another goroutine: the server may answer before reading
// it all.
func rawHTTP(t *testing.T, addr, method, path string, body []byte, chunked bool) (int, map[string]any) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second)) // failsafe against a hang
	head := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n", method, path, addr)
	if chunked {
		head += "Transfer-Encoding: chunked\r\n\r\n"
	} else {
		head += fmt.Sprintf("Content-Length: %d\r\n\r\n", len(body))
	}
	go func() {
		w := bufio.NewWriter(conn)
		_, _ = w.WriteString(head)
		if chunked {
			for b := body; len(b) > 0; {
				n := min(len(b), 64<<10)
				fmt.Fprintf(w, "%x\r\n", n)
				_, _ = w.Write(b[:n])
				_, _ = w.WriteString("\r\n")
				b = b[n:]
			}
			_, _ = w.WriteString("0\r\n\r\n")
		} else {
			_, _ = w.Write(body)
		}
		_ = w.Flush() // an error means the server closed early, which it may
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", method, path, err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s %s: %d %.200q is not JSON: %v", method, path, resp.StatusCode, b, err)
	}
	return resp.StatusCode, m
}

// TestRESTBodies: REST bodies are capped (413 past server.DefaultMaxBodyBytes,
// while a maximal value fits as base64 or text) and unknown JSON fields
// are refused with 400 naming the field.
func TestRESTBodies(t *testing.T) {
	t.Parallel()
	_, _, r := setup(t, 1, router.Options{})
	maxB64 := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xfe}, limits.DefaultMaxValueBytes))
	maxText := strings.Repeat("t", limits.DefaultMaxValueBytes)
	over := append(bytes.Repeat([]byte(" "), server.DefaultMaxBodyBytes-len(`{"text":"x"}`)+1), `{"text":"x"}`...)
	tests := []struct {
		name     string
		path     string
		body     []byte
		chunked  bool
		wantCode int
		wantMsg  string // substring of the error message
	}{
		{"maximal value as base64", "/v1/kv/max-b64", []byte(`{"value":"` + maxB64 + `"}`), false, http.StatusOK, ""},
		{"maximal value as text, chunked", "/v1/kv/max-text", []byte(`{"text":"` + maxText + `"}`), true, http.StatusOK, ""},
		{"value over the limit", "/v1/kv/too-big", []byte(`{"text":"` + maxText + `t"}`), false, http.StatusBadRequest,
			fmt.Sprintf("--max-value-bytes=%d", limits.DefaultMaxValueBytes)},
		{"body over the limit", "/v1/kv/huge", over, false, http.StatusRequestEntityTooLarge, "request body too large"},
		{"body over the limit, chunked", "/v1/kv/huge", over, true, http.StatusRequestEntityTooLarge, "request body too large"},
		{"unknown field", "/v1/kv/u", []byte(`{"text":"x","bogus":1}`), false, http.StatusBadRequest, `unknown field "bogus"`},
		{"unknown nested field", "/v1/kv:multiPut", []byte(`{"entries":[{"key":"a","text":"1","ttl":3}]}`), false, http.StatusBadRequest, `unknown field "ttl"`},
		{"known fields", "/v1/kv:multiPut", []byte(`{"entries":[{"key":"a","text":"1"}]}`), false, http.StatusOK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, m := rawHTTP(t, r.HTTP, http.MethodPost, tt.path, tt.body, tt.chunked)
			if code != tt.wantCode {
				t.Fatalf("POST %s (%d bytes) = %d %v, want %d", tt.path, len(tt.body), code, m, tt.wantCode)
			}
			if msg, _ := m["message"].(string); !strings.Contains(msg, tt.wantMsg) {
				t.Fatalf("POST %s: message %q, want it to contain %q", tt.path, msg, tt.wantMsg)
			}
		})
	}
}

// TestRESTRawPaths: keys are taken from REST paths as sent. net/http's
// ServeMux would answer "//", "/./" and "/../" with a redirect to the
// cleaned path (another key, or another route); the router stores them as
// given.
func TestRESTRawPaths(t *testing.T) {
	t.Parallel()
	_, _, r := setup(t, 1, router.Options{})
	tests := []struct {
		name    string
		path    string
		wantKey string
	}{
		{"double slash", "/v1/kv/x//y", "x//y"},
		{"leading double slash", "/v1/kv//lead", "/lead"},
		{"dot", "/v1/kv/x/./y", "x/./y"},
		{"dot-dot", "/v1/kv/x/../../y", "x/../../y"},
		{"dot-dot towards another route", "/v1/kv/../topology", "../topology"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			value := "value of " + tt.name
			code, m := rawHTTP(t, r.HTTP, http.MethodPut, tt.path, []byte(`{"text":"`+value+`"}`), false)
			if code != http.StatusOK || m["key"] != tt.wantKey {
				t.Fatalf("PUT %s = %d %v, want 200 with key %q", tt.path, code, m, tt.wantKey)
			}
			got, err := r.KV.Get(ctxT(t), &routerv1.GetRequest{Key: tt.wantKey})
			if err != nil || got.GetText() != value {
				t.Fatalf("gRPC Get %q = %v, %v; want %q", tt.wantKey, got, err, value)
			}
			code, m = rawHTTP(t, r.HTTP, http.MethodGet, tt.path, nil, false)
			if code != http.StatusOK || m["key"] != tt.wantKey || m["text"] != value {
				t.Fatalf("GET %s = %d %v, want key %q text %q", tt.path, code, m, tt.wantKey, value)
			}
		})
	}
	// The cleaned forms were never written.
	for _, k := range []string{"x/y", "y", "topology", "lead"} {
		if _, err := r.KV.Get(ctxT(t), &routerv1.GetRequest{Key: k}); status.Code(err) != codes.NotFound {
			t.Errorf("Get %q (a cleaned form) = %v, want NotFound", k, err)
		}
	}
}
