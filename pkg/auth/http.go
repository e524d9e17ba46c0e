package auth

import (
	"crypto/subtle"
	"net/http"
)

// CheckHTTP is Check for a plain HTTP request that does not go through the
// gateway (and so not through the gRPC interceptors), such as the pprof
// endpoints: it looks at the first Authorization header the same way Check
// looks at the first authorization metadata value. It returns 0 when the
// request may proceed (token empty, or the right bearer token), otherwise
// the HTTP status to answer: 401 without a bearer token, 403 with a
// different one, as the gateway maps Unauthenticated and PermissionDenied.
func CheckHTTP(h http.Header, token string) int {
	if token == "" {
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
	if subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
		return http.StatusForbidden
	}
	return 0
}

// RequireHTTP wraps next so that it runs only for requests carrying the
// token (see CheckHTTP); with an empty token it returns next unchanged.
// Refusals never echo either token.
func RequireHTTP(token string, next http.Handler) http.Handler {
	if token == "" {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch CheckHTTP(r.Header, token) {
		case 0:
			next.ServeHTTP(w, r)
		case http.StatusUnauthorized:
			w.Header().Set("WWW-Authenticate", Scheme)
			http.Error(w, "missing cluster token: send \"Authorization: Bearer <token>\"", http.StatusUnauthorized)
		default:
			http.Error(w, "wrong cluster token", http.StatusForbidden)
		}
	})
}
