// Package auth implements slotkv's two bearer tokens: a data token that
// opens the router's key-value API, and an admin token that opens
// everything (migrations, bulk loads, topology, every storage node RPC,
// /metrics and pprof, and the data API too, since an admin may do
// anything). Each gRPC method is in one class (Policy): Exempt (health
// checks), Data or Admin. Both tokens empty is an open cluster.
//
// On the wire a token travels as the gRPC metadata entry
// "authorization: Bearer <token>". The grpc-gateway forwards an HTTP
// "Authorization" header as exactly that metadata entry (its default
// behavior), so REST calls are checked by the same gRPC interceptors and
// need nothing of their own: a REST client simply sends
// "Authorization: Bearer <token>" (see SetHeader).
//
// A call without a token gets Unauthenticated (REST 401); a call whose
// token does not open its method (a data token on an admin method, or an
// unknown token) gets PermissionDenied (REST 403).
//
// Server side, use ServerOptions (or the two interceptors). Client side, use
// PerRPCCredentials (pkg/dial does this when Options.Token is set).
package auth

import (
	"context"
	"crypto/subtle"
	"errors"
	"net/http"
	"slices"
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

// Class is what a method needs.
type Class int

const (
	// Exempt methods need no token: health checks come from load
	// balancers, orchestrators and the compose stack's probes, which do
	// not know the secret; they reveal nothing but SERVING/NOT_SERVING.
	Exempt Class = iota
	// Data methods take the data token or the admin token.
	Data
	// Admin methods take the admin token only.
	Admin
)

func (c Class) String() string {
	switch c {
	case Exempt:
		return "exempt"
	case Data:
		return "data"
	default:
		return "admin"
	}
}

// Tokens are a server's two tokens. Both empty means an open cluster: every
// call passes. Admin empty with Data set is refused by Validate (nobody
// could call an admin method). Data empty with Admin set means only the
// admin token opens the data API. The same value in both is the single
// cluster token of --token: whoever has it may do everything.
type Tokens struct {
	Data  string
	Admin string
}

// OneToken is the single cluster token of --token: data and admin alike.
func OneToken(token string) Tokens { return Tokens{Data: token, Admin: token} }

// Open reports whether no token is set.
func (t Tokens) Open() bool { return t.Data == "" && t.Admin == "" }

// Validate refuses a data token without an admin token: every admin method
// (topology, migrations, the storage nodes) would be closed to everyone.
func (t Tokens) Validate() error {
	if t.Data != "" && t.Admin == "" {
		return errors.New("a data token is set without an admin token: set --admin-token (or --token) too, or no admin RPC could be called")
	}
	return nil
}

// Policy says which class a full gRPC method name ("/pkg.Service/Method")
// is in.
type Policy func(fullMethod string) Class

// Prefixes of the method classes of DefaultPolicy.
const (
	// HealthPrefix: the standard health service, Exempt.
	HealthPrefix = "/grpc.health.v1.Health/"
	// ReflectionPrefix: server reflection (grpcurl), Data: it shows the
	// schema only, and a data client needs it to use grpcurl.
	ReflectionPrefix = "/grpc.reflection."
	// DataServicePrefix: the router's public key-value service, Data,
	// except DataAdminMethods.
	DataServicePrefix = "/slotkv.router.v1.KVService/"
)

// DataAdminMethods are the methods of the data service that stay Admin:
// the topology names every storage node's address, which is operators'
// business, not a data client's.
var DataAdminMethods = []string{DataServicePrefix + "GetTopology"}

// DefaultPolicy: health Exempt; reflection and the router's KV service
// (but GetTopology) Data; everything else (migrator, downloader, every
// storage node service, the router's GetTopology) Admin. Admin is the
// default, so a method added later is closed to the data token until it is
// deliberately classed as data.
func DefaultPolicy(fullMethod string) Class {
	switch {
	case strings.HasPrefix(fullMethod, HealthPrefix):
		return Exempt
	case strings.HasPrefix(fullMethod, ReflectionPrefix):
		return Data
	case slices.Contains(DataAdminMethods, fullMethod):
		return Admin
	case strings.HasPrefix(fullMethod, DataServicePrefix):
		return Data
	}
	return Admin
}

// IsExempt reports whether the full gRPC method name (e.g.
// "/grpc.health.v1.Health/Check") may be called without a token under
// DefaultPolicy.
func IsExempt(fullMethod string) bool { return DefaultPolicy(fullMethod) == Exempt }

// Check verifies the token carried by an incoming RPC's context against
// what class needs. It returns nil when tokens are open or class is
// Exempt, a codes.Unauthenticated status when the metadata carries no
// bearer token, and codes.PermissionDenied when the token does not open
// class (a data token on an admin method, or neither token). The error
// messages never include a token.
//
// Only the first authorization value is considered: that is the one the
// gateway puts first (the HTTP Authorization header), and looking at a single
// value keeps a caller from sending many guesses in one request.
func Check(ctx context.Context, tokens Tokens, class Class) error {
	if tokens.Open() || class == Exempt {
		return nil
	}
	// ValueFromIncomingContext reads the one key; FromIncomingContext
	// would copy every key of the call's metadata first (2% of a storage
	// node's CPU under a put load).
	vals := metadata.ValueFromIncomingContext(ctx, MetadataKey)
	if len(vals) == 0 {
		return status.Error(codes.Unauthenticated, "missing token: send metadata \"authorization: Bearer <token>\"")
	}
	got, ok := bearer(vals[0])
	if !ok {
		return status.Error(codes.Unauthenticated, "authorization metadata is not a Bearer token")
	}
	switch match(got, tokens) {
	case Admin:
		return nil
	case Data:
		if class == Data {
			return nil
		}
		return status.Error(codes.PermissionDenied, "the data token does not open this method: it needs the admin token")
	}
	return status.Error(codes.PermissionDenied, "wrong token")
}

// Match tells which token got is: Admin, Data, or Exempt for neither,
// compared in constant time (for protocols that carry a token themselves,
// such as RESP's AUTH).
func (t Tokens) Match(got string) Class { return match(got, t) }

// match tells which token got is: Admin, Data, or Exempt for neither.
// Both comparisons always run and ConstantTimeCompare leaks only the
// lengths, never how many leading bytes matched, so a token cannot be
// guessed byte by byte (nor which of the two was close).
func match(got string, tokens Tokens) Class {
	isAdmin := tokens.Admin != "" && subtle.ConstantTimeCompare([]byte(got), []byte(tokens.Admin)) == 1
	isData := tokens.Data != "" && subtle.ConstantTimeCompare([]byte(got), []byte(tokens.Data)) == 1
	switch {
	case isAdmin:
		return Admin
	case isData:
		return Data
	}
	return Exempt
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

// UnaryServerInterceptor refuses unary RPCs whose token does not open
// their method's class under policy (nil: DefaultPolicy). With open tokens
// it lets everything through.
func UnaryServerInterceptor(tokens Tokens, policy Policy) grpc.UnaryServerInterceptor {
	policy = orDefault(policy)
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := Check(ctx, tokens, policy(info.FullMethod)); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor is UnaryServerInterceptor for streaming RPCs.
func StreamServerInterceptor(tokens Tokens, policy Policy) grpc.StreamServerInterceptor {
	policy = orDefault(policy)
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := Check(ss.Context(), tokens, policy(info.FullMethod)); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}

func orDefault(p Policy) Policy {
	if p == nil {
		return DefaultPolicy
	}
	return p
}

// ServerOptions returns the chained unary and stream interceptors as server
// options. They use grpc.ChainUnaryInterceptor/ChainStreamInterceptor so
// they compose with other interceptors instead of replacing them.
func ServerOptions(tokens Tokens, policy Policy) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(UnaryServerInterceptor(tokens, policy)),
		grpc.ChainStreamInterceptor(StreamServerInterceptor(tokens, policy)),
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
