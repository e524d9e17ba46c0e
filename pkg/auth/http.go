package auth

import (
	"net/http"
)

// CheckHTTP is Check for a plain HTTP request that does not go through the
// gateway (and so not through the gRPC interceptors), such as /metrics and
// the pprof endpoints: it looks at the first Authorization header the same
// way Check looks at the first authorization metadata value. It returns 0
// when the request may proceed (open tokens, Exempt, or a token that opens
// class), otherwise the HTTP status to answer: 401 without a bearer token,
// 403 with one that does not open class, as the gateway maps
// Unauthenticated and PermissionDenied.
func CheckHTTP(h http.Header, tokens Tokens, class Class) int {
	if tokens.Open() || class == Exempt {
		return 0
	}
	vals := h.Values("Authorization")
	if len(vals) == 0 {
		return http.StatusUnauthorized
	}
	got, ok := bearer(vals[0])
	if !ok {
		return http.StatusUnauthorized
	}
	switch m := match(got, tokens); {
	case m == Admin, m == Data && class == Data:
		return 0
	}
	return http.StatusForbidden
}

// RequireHTTP wraps next so that it runs only for requests carrying a token
// that opens class (see CheckHTTP); with open tokens it returns next
// unchanged. Refusals never echo a token.
func RequireHTTP(tokens Tokens, class Class, next http.Handler) http.Handler {
	if tokens.Open() || class == Exempt {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch CheckHTTP(r.Header, tokens, class) {
		case 0:
			next.ServeHTTP(w, r)
		case http.StatusUnauthorized:
			w.Header().Set("WWW-Authenticate", Scheme)
			http.Error(w, "missing token: send \"Authorization: Bearer <token>\"", http.StatusUnauthorized)
		default:
			http.Error(w, "this path needs the "+class.String()+" token", http.StatusForbidden)
		}
	})
}
