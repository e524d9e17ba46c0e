package server

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/limits"
)

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
