package server

import (
	"context"
	"errors"
	"io"
	"net/http"
	"path"
	"strings"
	"sync/atomic"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/limits"
)

// Resource limits every service gets (issue 12: bad input and resource
// abuse). Options fields override the first two.
const (
	// DefaultMaxBodyBytes caps a REST request body. A maximal value
	// (limits.DefaultMaxValueBytes) must fit: as base64 "value" it is 4/3
	// of its size, as JSON "text" up to twice its size when every byte is
	// an escaped pair (\n, \"); the rest is room for a maximal key and the
	// JSON around them. A larger body is answered 413 before it is read
	// into memory.
	DefaultMaxBodyBytes = 2*limits.DefaultMaxValueBytes + 1<<20
	// DefaultMaxConcurrentStreams caps the concurrent RPCs (HTTP/2
	// streams) of one gRPC connection; a client opening more has them
	// refused (REFUSED_STREAM), and grpc-go clients queue them until a
	// stream ends. One connection carries a router's calls to a storage
	// node and every REST call of the gateway, so the cap is well above
	// what either has in flight.
	DefaultMaxConcurrentStreams = 1000

	// KeepaliveMinTime is the shortest interval between client pings the
	// server accepts, with or without an active RPC; a client pinging more
	// often is disconnected (GOAWAY ENHANCE_YOUR_CALM, "too_many_pings").
	// It must stay below dial.KeepaliveTime, the interval pkg/dial's
	// clients ping at, also on idle connections.
	KeepaliveMinTime = dial.KeepaliveTime / 3
	// KeepalivePingTime and KeepalivePingTimeout: the server pings a
	// connection quiet for KeepalivePingTime and closes it when the answer
	// does not come within KeepalivePingTimeout, so the connections of dead
	// clients are reclaimed.
	KeepalivePingTime    = time.Minute
	KeepalivePingTimeout = 20 * time.Second
	// MaxConnectionIdle closes (GOAWAY) a connection that has had no RPC
	// for this long: live clients that stopped calling give their
	// connection back, and grpc-go clients reconnect on their next call.
	// Long streams (watches, imports) keep their connection busy.
	MaxConnectionIdle = 15 * time.Minute

	// HTTPIdleTimeout closes a keep-alive HTTP connection with no request
	// for this long. There is deliberately no ReadTimeout: once a request
	// body has been read, net/http keeps watching the connection for the
	// client going away, and a read deadline firing there cancels the
	// request's context, which would cut the REST watch streams
	// (/v1/migrations/{id}:watch, /v1/bulkloads/{id}:watch) after
	// ReadTimeout. Slow request headers are bounded by ReadHeaderTimeout,
	// body size by MaxBodyBytes.
	HTTPIdleTimeout = 2 * time.Minute
)

// BodyBytesFor is the REST body limit for a service whose values may be
// up to maxValueBytes (a storage node or router started with a raised
// --max-value-bytes): room for such a value as base64 or escaped text, as
// DefaultMaxBodyBytes has for the default, and never below it. The 1 MiB
// on top also covers the largest key Badger allows, escaped.
func BodyBytesFor(maxValueBytes int) int64 {
	return max(DefaultMaxBodyBytes, 2*int64(maxValueBytes)+1<<20)
}

func (o *Options) maxBodyBytes() int64 {
	if o.MaxBodyBytes > 0 {
		return o.MaxBodyBytes
	}
	return DefaultMaxBodyBytes
}

// grpcLimitOptions are the gRPC server's resource limits: message sizes,
// concurrent streams per connection and keepalive enforcement.
func grpcLimitOptions(o Options) []grpc.ServerOption {
	maxMsg := o.MaxRecvMsgSize
	if maxMsg <= 0 {
		maxMsg = dial.MaxMsgSize
	}
	streams := o.MaxConcurrentStreams
	if streams == 0 {
		streams = DefaultMaxConcurrentStreams
	}
	return []grpc.ServerOption{
		// An oversized message is refused with ResourceExhausted before
		// it is decoded.
		grpc.MaxRecvMsgSize(maxMsg),
		grpc.MaxSendMsgSize(maxMsg),
		grpc.MaxConcurrentStreams(streams),
		// Allow the client pings pkg/dial sends (every dial.KeepaliveTime,
		// also on idle connections); stricter enforcement would make the
		// server close those connections with "too_many_pings".
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             KeepaliveMinTime,
			PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: MaxConnectionIdle,
			Time:              KeepalivePingTime,
			Timeout:           KeepalivePingTimeout,
		}),
	}
}

// Request bodies. limitBody reads every gateway request body through
// http.MaxBytesReader and records, in the request context, whether the
// limit was hit: the generated gateway code turns the decoder's error into
// InvalidArgument with only its text, so gatewayErrorHandler looks at the
// record to answer 413 instead of 400.

type bodyLimitKey struct{}

type bodyLimit struct {
	limit int64
	hit   atomic.Bool
}

type limitedBody struct {
	io.ReadCloser
	bl *bodyLimit
}

func (b *limitedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	var mbe *http.MaxBytesError
	if err != nil && errors.As(err, &mbe) {
		b.bl.hit.Store(true)
	}
	return n, err
}

// bodyTooLarge is the error of a request whose body is over limit bytes.
func bodyTooLarge(limit int64) error {
	return &runtime.HTTPStatusError{
		HTTPStatus: http.StatusRequestEntityTooLarge,
		Err:        status.Errorf(codes.InvalidArgument, "request body too large: the limit is %d bytes", limit),
	}
}

// limitBody caps the request bodies of gw's routes at limit bytes. A body
// announced larger (Content-Length) is refused at once, without reading
// it; one that turns out larger while read fails the read, and the call
// is answered 413 by gatewayErrorHandler.
func limitBody(gw *runtime.ServeMux, limit int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > limit {
			_, outbound := runtime.MarshalerForRequest(gw, r)
			// The unread body is not drained: net/http closes the
			// connection after the answer.
			w.Header().Set("Connection", "close")
			runtime.HTTPError(r.Context(), gw, outbound, w, r, bodyTooLarge(limit))
			return
		}
		bl := &bodyLimit{limit: limit}
		r.Body = &limitedBody{ReadCloser: http.MaxBytesReader(w, r.Body, limit), bl: bl}
		gw.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), bodyLimitKey{}, bl)))
	})
}

// gatewayErrorHandler is the gateway's error handler: the default one,
// except that a call whose body went over the limit is answered 413
// whatever error the body's decoder turned it into.
func gatewayErrorHandler(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	if bl, ok := r.Context().Value(bodyLimitKey{}).(*bodyLimit); ok && bl.hit.Load() {
		err = bodyTooLarge(bl.limit)
	}
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
}

// Paths. net/http's ServeMux answers a request whose path is not clean
// ("//", "/./", "/../") with a redirect to the cleaned path; for REST that
// would turn the key "x//y" into "x/y", and "/v1/kv/x/../../y" into another
// route. The gateway matches the path as sent, so routePaths sends
// unclean paths straight to it: PUT /v1/kv/x//y stores the key "x//y".

// routePaths serves clean paths through mux (probes, metrics, pprof, and
// the gateway for the rest) and any other path through gw.
func routePaths(mux *http.ServeMux, gw http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isClean(r.URL.Path) || !isClean(r.URL.EscapedPath()) {
			gw.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func isClean(p string) bool { return p == "" || cleanPath(p) == p }

// cleanPath is the canonical form net/http's ServeMux redirects to: rooted,
// without ".", ".." or empty elements, a trailing slash kept.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if strings.HasSuffix(p, "/") && np != "/" {
		np += "/"
	}
	return np
}
