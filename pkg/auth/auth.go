// Package auth implements the slotkv cluster token: a shared secret that,
// when configured, every RPC between services carries and every server
// checks.
//
// On the wire the token travels as the gRPC metadata entry
// "authorization: Bearer <token>". The grpc-gateway forwards an HTTP
// "Authorization" header as exactly that metadata entry (its default
// behavior), so REST calls are checked by the same gRPC interceptors and
// need nothing of their own: a REST client simply sends
// "Authorization: Bearer <token>" (see SetHeader).
//
// Server side, use ServerOptions (or the two interceptors). Client side, use
// PerRPCCredentials (pkg/dial does this when Options.Token is set).
package auth

import (
	"context"
	"crypto/subtle"
	"net/http"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// MetadataKey is the gRPC metadata key carrying the token. gRPC metadata
// keys are lower case; the gateway maps the HTTP Authorization header to it.
const MetadataKey = "authorization"

// Scheme is the authorization scheme used for the cluster token.
const Scheme = "Bearer"

// exemptPrefixes lists the methods that never need the token. Health checks
// come from load balancers, orchestrators and the compose stack's probes,
// which do not know the secret; they reveal nothing but SERVING/NOT_SERVING.
var exemptPrefixes = []string{
	"/grpc.health.v1.Health/",
}

// Exempt reports whether the full gRPC method name (e.g.
// "/grpc.health.v1.Health/Check") may be called without the token.
func Exempt(fullMethod string) bool {
	for _, p := range exemptPrefixes {
		if strings.HasPrefix(fullMethod, p) {
			return true
		}
	}
	return false
}

// Check verifies the token carried by an incoming RPC's context. It returns
// nil when token is empty (an open cluster) or fullMethod is exempt, a
// codes.Unauthenticated status when the metadata carries no bearer token,
// and codes.PermissionDenied when it carries a different one. The error
// messages never include either token.
//
// Only the first authorization value is considered: that is the one the
// gateway puts first (the HTTP Authorization header), and looking at a single
// value keeps a caller from sending many guesses in one request.
func Check(ctx context.Context, token, fullMethod string) error {
	if token == "" || Exempt(fullMethod) {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get(MetadataKey)
	if len(vals) == 0 {
		return status.Error(codes.Unauthenticated, "missing cluster token: send metadata \"authorization: Bearer <token>\"")
	}
	got, ok := bearer(vals[0])
	if !ok {
		return status.Error(codes.Unauthenticated, "authorization metadata is not a Bearer token")
	}
	// ConstantTimeCompare leaks only the lengths, never how many leading
	// bytes matched, so the token cannot be guessed byte by byte.
	if subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
		return status.Error(codes.PermissionDenied, "wrong cluster token")
	}
	return nil
}

// bearer extracts the credentials of a "Bearer <token>" value. The scheme is
// case-insensitive (RFC 7235 section 2.1).
func bearer(v string) (string, bool) {
	scheme, rest, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok || !strings.EqualFold(scheme, Scheme) {
		return "", false
	}
	rest = strings.TrimSpace(rest)
	return rest, rest != ""
}

// UnaryServerInterceptor refuses unary RPCs without the right token. With an
// empty token it lets everything through.
func UnaryServerInterceptor(token string) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := Check(ctx, token, info.FullMethod); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor refuses streaming RPCs without the right token.
// With an empty token it lets everything through.
func StreamServerInterceptor(token string) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := Check(ss.Context(), token, info.FullMethod); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}

// ServerOptions returns the chained unary and stream interceptors as server
// options. They use grpc.ChainUnaryInterceptor/ChainStreamInterceptor so
// they compose with other interceptors instead of replacing them.
func ServerOptions(token string) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(UnaryServerInterceptor(token)),
		grpc.ChainStreamInterceptor(StreamServerInterceptor(token)),
	}
}

// PerRPCCredentials returns client credentials that attach the token to
// every RPC. Use it with grpc.WithPerRPCCredentials; it returns nil for an
// empty token, which callers should simply not install.
func PerRPCCredentials(token string) credentials.PerRPCCredentials {
	if token == "" {
		return nil
	}
	return tokenCreds{header: Scheme + " " + token}
}

type tokenCreds struct {
	header string
}

func (c tokenCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{MetadataKey: c.header}, nil
}

// RequireTransportSecurity is false on purpose: slotkv runs on plaintext
// loopback and private networks (make run, the compose stack) where TLS is
// optional, and gRPC would otherwise refuse to send the token at all over an
// insecure connection. The token guards against accidental or unauthorized
// callers; operators who need it confidential on the wire enable TLS.
func (tokenCreds) RequireTransportSecurity() bool { return false }

// SetHeader sets the HTTP Authorization header for a REST call to a slotkv
// gateway; it does nothing for an empty token.
func SetHeader(h http.Header, token string) {
	if token != "" {
		h.Set("Authorization", Scheme+" "+token)
	}
}
