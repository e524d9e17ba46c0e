package console

import (
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"sync"
	"time"

	"github.com/slotkv/slotkv/pkg/auth"
)

// sessionCookie names the cookie holding a session id.
const sessionCookie = "slotkv_console_session"

// maxSessions bounds the sessions kept; past it the oldest is dropped (a
// login loop cannot grow the console's memory).
const maxSessions = 10000

// sessions are the logged-in browsers: a random id (the cookie) to its
// expiry. The token itself stays on the server.
type sessions struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[string]time.Time
}

func newSessions(ttl time.Duration) *sessions {
	return &sessions{ttl: ttl, m: map[string]time.Time{}}
}

// open starts a session and returns its id.
func (s *sessions) open() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand panics instead)
	id := base64.RawURLEncoding.EncodeToString(b)
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, exp := range s.m {
		if now.After(exp) {
			delete(s.m, k)
		}
	}
	if len(s.m) >= maxSessions {
		var oldest string
		var at time.Time
		for k, exp := range s.m {
			if oldest == "" || exp.Before(at) {
				oldest, at = k, exp
			}
		}
		delete(s.m, oldest)
	}
	s.m[id] = now.Add(s.ttl)
	return id
}

// valid reports whether id is a live session.
func (s *sessions) valid(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.m[id]
	if ok && time.Now().After(exp) {
		delete(s.m, id)
		return false
	}
	return ok
}

func (s *sessions) end(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, id)
}

// authRequired: the console has a token, so its pages need a session.
func (c *Console) authRequired() bool { return !c.o.Tokens.Open() }

// loggedIn reports whether r carries a live session (or none is needed).
func (c *Console) loggedIn(r *http.Request) bool {
	if !c.authRequired() {
		return true
	}
	ck, err := r.Cookie(sessionCookie)
	return err == nil && c.sessions.valid(ck.Value)
}

// checkToken tells whether token is the admin token, in constant time
// (pkg/auth's check): "" when it is, else what to tell the user.
func (c *Console) checkToken(token string) string {
	if token == "" {
		return "enter the admin token"
	}
	h := http.Header{}
	auth.SetHeader(h, token)
	switch auth.CheckHTTP(h, c.o.Tokens, auth.Admin) {
	case 0:
		return ""
	case http.StatusForbidden:
		if auth.CheckHTTP(h, c.o.Tokens, auth.Data) == 0 {
			return "that is the data token: the console needs the admin token"
		}
	}
	return "wrong token"
}

func (c *Console) setSession(w http.ResponseWriter, id string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: id, Path: "/", MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: c.o.TLS != nil,
	})
}
