package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/slotkv/slotkv/pkg/auth"
	"github.com/slotkv/slotkv/pkg/dial"
)

// Probe paths served next to the gateway. They are not traced: probes hit
// them every few seconds and would bury real traffic.
const (
	HealthzPath = "/healthz"
	ReadyzPath  = "/readyz"
	// MetricsPath serves Options.MetricsHandler; untraced for the same
	// reason (Prometheus scrapes it every few seconds).
	MetricsPath = "/metrics"
	// OpenAPIPath serves Options.OpenAPI.
	OpenAPIPath = "/openapi.json"
)

// GatewayMarshaler is the JSON marshaler the gateway uses for every media
// type: proto field names (snake_case, as written in the .proto files and
// the OpenAPI spec) and unpopulated fields emitted so clients see zeros and
// empty lists instead of missing keys. Unknown input fields are refused
// (400, `unknown field "bogus"`): a misspelt field ("ttl_secs" for
// "ttl_seconds", "txt" for "text") would otherwise be dropped silently and
// the call would do something other than asked.
func GatewayMarshaler() runtime.Marshaler {
	return &runtime.JSONPb{
		MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true},
		UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
	}
}

// newHTTPServer builds the HTTP server: probes plus the gateway, and the
// gateway's loopback connection to grpcAddr (returned so shutdown can close
// it).
func newHTTPServer(ctx context.Context, o Options, log *slog.Logger, prop propagation.TextMapPropagator, grpcAddr net.Addr, ready *readiness) (*http.Server, *grpc.ClientConn, error) {
	target := loopback(grpcAddr)
	// No token here on purpose: the REST caller's own Authorization header
	// is forwarded as gRPC metadata and checked by the gRPC interceptor. A
	// token on this connection would authorize every REST caller.
	conn, err := dial.New(target, dial.Options{
		TLS:            o.ClientTLS,
		TracerProvider: o.TracerProvider,
		Propagator:     prop,
		MeterProvider:  o.MeterProvider,
		MaxMsgSize:     o.MaxRecvMsgSize,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("gateway connection to %s: %w", target, err)
	}

	muxOpts := append([]runtime.ServeMuxOption{
		runtime.WithMarshalerOption(runtime.MIMEWildcard, GatewayMarshaler()),
		runtime.WithMiddlewares(routeMiddleware, utf8Middleware),
		// 413 for bodies over MaxBodyBytes (limits.go).
		runtime.WithErrorHandler(gatewayErrorHandler),
	}, o.GatewayOptions...)
	gw := runtime.NewServeMux(muxOpts...)
	if o.Gateway != nil {
		if err := o.Gateway(ctx, gw, conn); err != nil {
			_ = conn.Close()
			return nil, nil, fmt.Errorf("register gateway handlers: %w", err)
		}
	}

	mux := http.NewServeMux()
	mux.HandleFunc(HealthzPath, func(w http.ResponseWriter, _ *http.Request) {
		writeText(w, http.StatusOK, "ok")
	})
	mux.HandleFunc(ReadyzPath, func(w http.ResponseWriter, r *http.Request) {
		if err := ready.Check(r.Context()); err != nil {
			writeText(w, http.StatusServiceUnavailable, err.Error())
			return
		}
		writeText(w, http.StatusOK, "ok")
	})
	if o.MetricsHandler != nil {
		mux.Handle("GET "+MetricsPath, auth.RequireHTTP(o.Tokens, auth.Admin, o.MetricsHandler))
	}
	registerPprof(mux, o.Tokens)
	if doc := o.OpenAPI; doc != nil {
		// Public on purpose (see Options.OpenAPI). GET also answers HEAD.
		mux.HandleFunc("GET "+OpenAPIPath, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(doc)
		})
	}
	// The gateway owns every other path; its generated routes live under
	// /v1/, and its own 404/405 handling answers the rest in JSON. Its
	// request bodies are capped at MaxBodyBytes, and paths the mux would
	// clean by redirecting go to it as sent (limits.go).
	gwh := limitBody(gw, o.maxBodyBytes())
	mux.Handle("/", gwh)

	tp := o.TracerProvider
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	otelOpts := []otelhttp.Option{
		otelhttp.WithTracerProvider(tp),
		otelhttp.WithPropagators(prop),
		otelhttp.WithFilter(func(r *http.Request) bool {
			// A profile request lasts as long as the profile: a span of
			// it says nothing about the service.
			return r.URL.Path != HealthzPath && r.URL.Path != ReadyzPath && r.URL.Path != MetricsPath &&
				!strings.HasPrefix(r.URL.Path, PprofPath)
		}),
		otelhttp.WithSpanNameFormatter(spanName),
	}
	if o.MeterProvider != nil {
		otelOpts = append(otelOpts, otelhttp.WithMeterProvider(o.MeterProvider))
	}
	handler := withRouteHolder(otelhttp.NewHandler(routePaths(mux, gwh), o.Name, otelOpts...))

	srv := &http.Server{
		Handler:           handler,
		TLSConfig:         o.TLS,
		ReadHeaderTimeout: ReadHeaderTimeout,
		IdleTimeout:       HTTPIdleTimeout, // no ReadTimeout: see HTTPIdleTimeout
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	return srv, conn, nil
}

// loopback turns a listener address into one the gateway can dial: a
// wildcard bind (0.0.0.0 or [::], which accepts IPv4 too) is reached
// through 127.0.0.1.
func loopback(addr net.Addr) string {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return addr.String()
	}
	if tcp.IP == nil || tcp.IP.IsUnspecified() {
		return net.JoinHostPort("127.0.0.1", fmt.Sprint(tcp.Port))
	}
	return tcp.String()
}

func writeText(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, body+"\n")
}

// Span naming. otelhttp names the span before routing and renames it
// afterwards through the formatter, but the gateway's route template
// ("/v1/kv/{key}") is only known inside the gateway. withRouteHolder puts a
// holder in the request context, routeMiddleware (a gateway middleware)
// fills it in, and spanName reads it, giving "GET /v1/kv/{key}": low
// cardinality, unlike the raw path.

type routeHolderKey struct{}

type routeHolder struct{ route string }

func withRouteHolder(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := context.WithValue(r.Context(), routeHolderKey{}, &routeHolder{})
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

func routeMiddleware(next runtime.HandlerFunc) runtime.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, params map[string]string) {
		if pat, ok := runtime.HTTPPattern(r.Context()); ok {
			// The mux puts the matched Pattern in the context before the
			// middlewares run (the generated handlers add the template
			// string only later). Its String form spells a single-segment
			// variable "{key=*}"; write it "{key}" as in the .proto.
			route := strings.ReplaceAll(pat.String(), "=*}", "}")
			if h, ok := r.Context().Value(routeHolderKey{}).(*routeHolder); ok {
				h.route = route
			}
			span := trace.SpanFromContext(r.Context())
			span.SetName(r.Method + " " + route)
			span.SetAttributes(semconv.HTTPRoute(route))
		}
		next(w, r, params)
	}
}

func spanName(_ string, r *http.Request) string {
	if h, ok := r.Context().Value(routeHolderKey{}).(*routeHolder); ok && h.route != "" {
		return r.Method + " " + h.route
	}
	return r.Method
}
