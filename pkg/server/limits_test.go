package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/limits"
)

// bodyRoutes adds, next to gatewayRoutes, what the generated code of a
// route with a body and one with a multi-segment path variable does:
// POST /v1/echo decodes its body into a SimpleRequest with the gateway's
// marshaler and calls UnaryCall; PUT /v1/keys/{key=**} answers the key it
// matched as {"key": ...}.
func bodyRoutes(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error {
	if err := gatewayRoutes(ctx, mux, conn); err != nil {
		return err
	}
	client := testgrpc.NewTestServiceClient(conn)
	err := mux.HandlePath(http.MethodPost, "/v1/echo", func(w http.ResponseWriter, r *http.Request, _ map[string]string) {
		inbound, outbound := runtime.MarshalerForRequest(mux, r)
		var req testgrpc.SimpleRequest
		if err := inbound.NewDecoder(r.Body).Decode(&req); err != nil && !errors.Is(err, io.EOF) {
			runtime.HTTPError(r.Context(), mux, outbound, w, r, status.Errorf(codes.InvalidArgument, "%v", err))
			return
		}
		resp, err := client.UnaryCall(r.Context(), &req)
		if err != nil {
			runtime.HTTPError(r.Context(), mux, outbound, w, r, err)
			return
		}
		runtime.ForwardResponseMessage(r.Context(), mux, outbound, w, r, resp)
	})
	if err != nil {
		return err
	}
	return mux.HandlePath(http.MethodPut, "/v1/keys/{key=**}", func(w http.ResponseWriter, _ *http.Request, p map[string]string) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"key": p["key"]})
	})
}

// rawHTTP sends one HTTP/1.1 request over a plain TCP connection, with the
// path exactly as given (no client-side cleaning) and the body either with
// a Content-Length or chunked, and reads the answer. The body is written
// from another goroutine: a server that answers before reading it all
// must not block the test.
func rawHTTP(t *testing.T, addr net.Addr, method, path string, body []byte, chunked bool) (int, http.Header, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	// A failsafe so a broken server fails the test instead of hanging it.
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	var head strings.Builder
	fmt.Fprintf(&head, "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n", method, path, addr)
	if chunked {
		head.WriteString("Transfer-Encoding: chunked\r\n\r\n")
	} else {
		fmt.Fprintf(&head, "Content-Length: %d\r\n\r\n", len(body))
	}
	go func() {
		w := bufio.NewWriter(conn)
		_, _ = w.WriteString(head.String())
		if chunked {
			for b := body; len(b) > 0; {
				n := min(len(b), 32<<10)
				fmt.Fprintf(w, "%x\r\n", n)
				_, _ = w.Write(b[:n])
				_, _ = w.WriteString("\r\n")
				b = b[n:]
			}
			_, _ = w.WriteString("0\r\n\r\n")
		} else {
			_, _ = w.Write(body)
		}
		_ = w.Flush() // errors: the server closed early, which is allowed
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", method, path, err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

// padded is the JSON object obj preceded by whitespace to n bytes: the
// decoder has to read all of it to find the object.
func padded(obj string, n int64) []byte {
	return append(bytes.Repeat([]byte(" "), int(n)-len(obj)), obj...)
}

func TestRequestBodyLimit(t *testing.T) {
	t.Parallel()
	const limit = 1 << 10
	small := start(t, Options{MaxBodyBytes: limit, Gateway: bodyRoutes})
	def := start(t, Options{Gateway: bodyRoutes})
	// A maximal value as base64 JSON: the default limit must let it in.
	maxValue := []byte(`{"payload":{"body":"` +
		base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xff}, limits.DefaultMaxValueBytes)) + `"}}`)
	tests := []struct {
		name     string
		h        *harness
		limit    int64
		body     []byte
		chunked  bool
		wantCode int
	}{
		{"small body", small, limit, []byte(`{"response_size":1}`), false, http.StatusOK},
		{"at the limit", small, limit, padded(`{}`, limit), false, http.StatusOK},
		{"at the limit, chunked", small, limit, padded(`{}`, limit), true, http.StatusOK},
		{"over the limit by Content-Length", small, limit, padded(`{}`, limit+1), false, http.StatusRequestEntityTooLarge},
		{"over the limit, chunked", small, limit, padded(`{}`, limit+1), true, http.StatusRequestEntityTooLarge},
		{"far over the limit, chunked", small, limit, padded(`{}`, 256<<10), true, http.StatusRequestEntityTooLarge},
		{"default: maximal value as base64", def, DefaultMaxBodyBytes, maxValue, false, http.StatusOK},
		{"default: maximal value as base64, chunked", def, DefaultMaxBodyBytes, maxValue, true, http.StatusOK},
		{"default: over the limit by Content-Length", def, DefaultMaxBodyBytes, padded(`{}`, DefaultMaxBodyBytes+1), false, http.StatusRequestEntityTooLarge},
		{"default: over the limit, chunked", def, DefaultMaxBodyBytes, padded(`{}`, DefaultMaxBodyBytes+1), true, http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, _, body := rawHTTP(t, tt.h.srv.HTTPAddr(), http.MethodPost, "/v1/echo", tt.body, tt.chunked)
			if code != tt.wantCode {
				if len(body) > 300 {
					body = body[:300]
				}
				t.Fatalf("POST %d bytes = %d %q, want %d", len(tt.body), code, body, tt.wantCode)
			}
			if code != http.StatusRequestEntityTooLarge {
				return
			}
			var m struct {
				Message string `json:"message"`
			}
			if err := json.Unmarshal([]byte(body), &m); err != nil {
				t.Fatalf("413 body %q is not the gateway's JSON error: %v", body, err)
			}
			want := fmt.Sprintf("the limit is %d bytes", tt.limit)
			if !strings.Contains(m.Message, "request body too large") || !strings.Contains(m.Message, want) {
				t.Errorf("413 message %q, want it to say the body is too large and %q", m.Message, want)
			}
		})
	}
}

func TestUnknownJSONFields(t *testing.T) {
	t.Parallel()
	h := start(t, Options{Gateway: bodyRoutes})
	tests := []struct {
		name      string
		body      string
		wantCode  int
		wantField string // named in the message of a 400
	}{
		{"known fields", `{"response_size":1,"fill_username":true}`, http.StatusOK, ""},
		{"unknown top-level field", `{"response_size":1,"bogus":1}`, http.StatusBadRequest, "bogus"},
		{"unknown nested field", `{"payload":{"body":"","nope":true}}`, http.StatusBadRequest, "nope"},
		{"misspelt field", `{"response_sise":1}`, http.StatusBadRequest, "response_sise"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, _, body := rawHTTP(t, h.srv.HTTPAddr(), http.MethodPost, "/v1/echo", []byte(tt.body), false)
			if code != tt.wantCode {
				t.Fatalf("POST %s = %d %q, want %d", tt.body, code, body, tt.wantCode)
			}
			if tt.wantField == "" {
				return
			}
			var m struct {
				Code    codes.Code `json:"code"`
				Message string     `json:"message"`
			}
			if err := json.Unmarshal([]byte(body), &m); err != nil {
				t.Fatalf("body %q: %v", body, err)
			}
			if want := fmt.Sprintf("unknown field %q", tt.wantField); m.Code != codes.InvalidArgument || !strings.Contains(m.Message, want) {
				t.Errorf("answer %+v, want InvalidArgument with %q", m, want)
			}
		})
	}
}

// TestRawPaths sends paths that net/http's ServeMux would clean with a
// redirect: the gateway gets them as sent, so a key keeps its "//", "." and
// ".." and no request lands on another route.
func TestRawPaths(t *testing.T) {
	t.Parallel()
	h := start(t, Options{Gateway: bodyRoutes})
	tests := []struct {
		name     string
		method   string
		path     string
		wantCode int
		wantKey  string // the key the route matched, for 200 answers of /v1/keys/
		wantBody string // else a substring of the answer
	}{
		{"plain key", http.MethodPut, "/v1/keys/x/y", http.StatusOK, "x/y", ""},
		{"double slash", http.MethodPut, "/v1/keys/x//y", http.StatusOK, "x//y", ""},
		{"trailing double slash", http.MethodPut, "/v1/keys/x//", http.StatusOK, "x//", ""},
		{"dot", http.MethodPut, "/v1/keys/x/./y", http.StatusOK, "x/./y", ""},
		{"dot-dot stays in the key", http.MethodPut, "/v1/keys/x/../../y", http.StatusOK, "x/../../y", ""},
		{"dot-dot towards the probes", http.MethodPut, "/v1/keys/../../healthz", http.StatusOK, "../../healthz", ""},
		{"dot-dot out of a probe", http.MethodGet, "/healthz/../v1/empty", http.StatusNotFound, "", `"code"`},
		{"dot-dot out of pprof", http.MethodGet, "/debug/pprof/../../v1/empty", http.StatusNotFound, "", `"code"`},
		{"clean probe path", http.MethodGet, "/healthz", http.StatusOK, "", "ok"},
		{"clean gateway path", http.MethodGet, "/v1/empty", http.StatusOK, "", "{}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var body []byte
			if tt.method == http.MethodPut {
				body = []byte(`{}`)
			}
			code, hdr, got := rawHTTP(t, h.srv.HTTPAddr(), tt.method, tt.path, body, false)
			if code != tt.wantCode {
				t.Fatalf("%s %s = %d %q (Location %q), want %d", tt.method, tt.path, code, got, hdr.Get("Location"), tt.wantCode)
			}
			if tt.wantKey != "" {
				var m map[string]string
				if err := json.Unmarshal([]byte(got), &m); err != nil || m["key"] != tt.wantKey {
					t.Fatalf("%s %s matched key %q (%q, %v), want %q", tt.method, tt.path, m["key"], got, err, tt.wantKey)
				}
			} else if !strings.Contains(got, tt.wantBody) {
				t.Fatalf("%s %s = %q, want it to contain %q", tt.method, tt.path, got, tt.wantBody)
			}
		})
	}
}

func TestMaxRecvMsgSize(t *testing.T) {
	t.Parallel()
	small := start(t, Options{MaxRecvMsgSize: 1 << 10})
	def := start(t, Options{})
	tests := []struct {
		name     string
		h        *harness
		payload  int
		wantCode codes.Code
	}{
		{"under the limit", small, 512, codes.OK},
		{"over the limit", small, 2 << 10, codes.ResourceExhausted},
		// Above grpc-go's own default of 4 MiB: the explicit default
		// (dial.MaxMsgSize) admits a maximal value with room to spare.
		{"default: maximal value", def, limits.DefaultMaxValueBytes + limits.DefaultMaxKeyBytes, codes.OK},
		{"default: over the limit", def, dial.MaxMsgSize, codes.ResourceExhausted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := testgrpc.NewTestServiceClient(tt.h.conn(t, dial.Options{MaxMsgSize: 2 * dial.MaxMsgSize}))
			_, err := c.UnaryCall(testCtx(t), &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: make([]byte, tt.payload)}})
			if status.Code(err) != tt.wantCode {
				t.Fatalf("UnaryCall with a %d-byte payload: %v, want %v", tt.payload, err, tt.wantCode)
			}
		})
	}
}

// TestMaxConcurrentStreams opens streams on one connection with a raw
// HTTP/2 client that, like an abusive one, ignores the server's
// SETTINGS_MAX_CONCURRENT_STREAMS: the server advertises the cap, keeps
// cap streams open, refuses the next one (RST_STREAM REFUSED_STREAM), and
// accepts a new one again once one of the first has ended.
func TestMaxConcurrentStreams(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		set  uint32 // Options.MaxConcurrentStreams
		want uint32
	}{
		{"configured", 4, 4},
		{"default", 0, DefaultMaxConcurrentStreams},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := start(t, Options{MaxConcurrentStreams: tt.set})
			c := newH2Client(t, h.srv.GRPCAddr())
			if got := c.serverMaxStreams; got != tt.want {
				t.Fatalf("server advertised SETTINGS_MAX_CONCURRENT_STREAMS %d, want %d", got, tt.want)
			}
			// cap open streams: EmptyCall headers without a message, so
			// each handler waits for its request.
			for i := range tt.want {
				c.openStream(t, 2*i+1, false)
			}
			over := 2*tt.want + 1
			c.openStream(t, over, false)
			if f := c.nextStreamEnd(t); f.stream != over || f.rst != http2.ErrCodeRefusedStream {
				t.Fatalf("after %d open streams, stream %d ended with %+v, want stream %d refused", tt.want, f.stream, f, over)
			}
			// End stream 1; the server handles frames in order, so the next
			// stream finds a free place and completes.
			c.resetStream(t, 1)
			next := over + 2
			c.openStream(t, next, true)
			if f := c.nextStreamEnd(t); f.stream != next || f.rst != 0 || f.grpcStatus != "0" {
				t.Fatalf("stream %d in the freed place ended with %+v, want grpc-status 0", next, f)
			}
		})
	}
}

// h2Client is a minimal HTTP/2 client for TestMaxConcurrentStreams.
type h2Client struct {
	conn             net.Conn
	fr               *http2.Framer
	enc              *hpack.Encoder
	buf              bytes.Buffer
	serverMaxStreams uint32
}

func newH2Client(t *testing.T, addr net.Addr) *h2Client {
	t.Helper()
	conn, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second)) // failsafe against a hang
	c := &h2Client{conn: conn, fr: http2.NewFramer(conn, conn)}
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.enc = hpack.NewEncoder(&c.buf)
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := c.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the server's settings: %v", err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
			c.serverMaxStreams, _ = sf.Value(http2.SettingMaxConcurrentStreams)
			if err := c.fr.WriteSettingsAck(); err != nil {
				t.Fatal(err)
			}
			return c
		}
	}
}

// openStream sends the headers of an EmptyCall on stream id; with
// complete, also its (empty) request message and the end of the stream.
func (c *h2Client) openStream(t *testing.T, id uint32, complete bool) {
	t.Helper()
	c.buf.Reset()
	for _, hf := range [][2]string{
		{":method", "POST"}, {":scheme", "http"}, {":authority", "localhost"},
		{":path", "/grpc.testing.TestService/EmptyCall"},
		{"content-type", "application/grpc"}, {"te", "trailers"},
	} {
		_ = c.enc.WriteField(hpack.HeaderField{Name: hf[0], Value: hf[1]})
	}
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.buf.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	if complete {
		// gRPC framing: not compressed, length 0 (an empty message).
		if err := c.fr.WriteData(id, true, []byte{0, 0, 0, 0, 0}); err != nil {
			t.Fatal(err)
		}
	}
}

func (c *h2Client) resetStream(t *testing.T, id uint32) {
	t.Helper()
	if err := c.fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
		t.Fatal(err)
	}
}

type streamEnd struct {
	stream     uint32
	rst        http2.ErrCode // 0 when ended by trailers
	grpcStatus string
}

// nextStreamEnd reads frames until a stream ends: a RST_STREAM, or
// headers (trailers) that end the stream. Pings are answered.
func (c *h2Client) nextStreamEnd(t *testing.T) streamEnd {
	t.Helper()
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading frames: %v", err)
		}
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			return streamEnd{stream: f.StreamID, rst: f.ErrCode}
		case *http2.MetaHeadersFrame:
			if f.StreamEnded() {
				return streamEnd{stream: f.StreamID, grpcStatus: headerValue(f, "grpc-status")}
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				_ = c.fr.WritePing(true, f.Data)
			}
		case *http2.GoAwayFrame:
			t.Fatalf("server sent GOAWAY %v", f.ErrCode)
		}
	}
}

func headerValue(f *http2.MetaHeadersFrame, name string) string {
	for _, hf := range f.RegularFields() {
		if hf.Name == name {
			return hf.Value
		}
	}
	return ""
}

// TestKeepaliveMatchesDial: pkg/dial's clients ping every
// dial.KeepaliveTime, also without an active RPC; the server must accept
// that, or it closes their connections with ENHANCE_YOUR_CALM
// ("too_many_pings").
func TestKeepaliveMatchesDial(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		ok   bool
	}{
		{"client ping interval is not below the enforced minimum", dial.KeepaliveTime >= KeepaliveMinTime},
		{"server pings idle connections less often than it reaps them", KeepalivePingTime < MaxConnectionIdle},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !tt.ok {
				t.Fatalf("dial.KeepaliveTime %v, KeepaliveMinTime %v, KeepalivePingTime %v, MaxConnectionIdle %v",
					dial.KeepaliveTime, KeepaliveMinTime, KeepalivePingTime, MaxConnectionIdle)
			}
		})
	}
}

func TestBodyBytesFor(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		maxValueBytes int
		want          int64
	}{
		{"default value limit", limits.DefaultMaxValueBytes, DefaultMaxBodyBytes},
		{"lowered value limit keeps the default", 1 << 10, DefaultMaxBodyBytes},
		{"unset", 0, DefaultMaxBodyBytes},
		{"raised value limit", 32 << 20, 65 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := BodyBytesFor(tt.maxValueBytes)
			if got != tt.want {
				t.Fatalf("BodyBytesFor(%d) = %d, want %d", tt.maxValueBytes, got, tt.want)
			}
			// A value of that size fits as base64 JSON and as text of
			// escaped pairs, with a maximal key beside it.
			v := int64(max(tt.maxValueBytes, limits.DefaultMaxValueBytes))
			if b64 := (v+2)/3*4 + 6*limits.MaxKeyBytesLimit + 64; got < b64 || got < 2*v+64 {
				t.Fatalf("BodyBytesFor(%d) = %d is too small for a %d-byte value", tt.maxValueBytes, got, v)
			}
		})
	}
}
