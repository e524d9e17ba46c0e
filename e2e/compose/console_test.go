//go:build compose

package compose

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestConsole checks the web console container through its published
// port, as a browser reaches it: with a token the pages send a visitor to
// the login form and the API refuses one without a session; after logging
// in with the admin token (none on an open stack) the cluster page answers
// and /api/state shows every storage node healthy, as the console sees
// them from inside the network.
func TestConsole(t *testing.T) {
	s := newStack(t)
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	// Its own client: the session cookie must stay with it.
	c := &http.Client{Transport: s.client.Transport, Timeout: s.client.Timeout, Jar: jar}
	base := s.url(s.consoleHTTP, "")

	// get answers the status, the final path (after redirects) and the body.
	get := func(path string) (int, string, []byte) {
		t.Helper()
		resp, err := c.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s%s: %v", s.consoleHTTP, path, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("GET %s%s: %v", s.consoleHTTP, path, err)
		}
		return resp.StatusCode, resp.Request.URL.Path, b
	}

	if s.adminToken != "" {
		if code, at, _ := get("/"); code != http.StatusOK || at != "/login" {
			t.Fatalf("GET / without a session: HTTP %d at %s, want the login form (200 at /login)", code, at)
		}
		if code, _, body := get("/api/state"); code != http.StatusUnauthorized {
			t.Fatalf("GET /api/state without a session: HTTP %d %s, want 401", code, body)
		}
		if s.dataToken != s.adminToken {
			if code, body := login(t, c, base, s.dataToken); code != http.StatusUnauthorized || !strings.Contains(body, "data token") {
				t.Errorf("login with the data token: HTTP %d, want 401 naming the data token; page:\n%s", code, body)
			}
		}
		if code, body := login(t, c, base, s.adminToken); code != http.StatusOK {
			t.Fatalf("login with the admin token: HTTP %d\n%s", code, body)
		}
	}

	code, at, body := get("/")
	if code != http.StatusOK || at != "/" || !strings.Contains(string(body), "<h1>Cluster") {
		t.Fatalf("GET /: HTTP %d at %s, want the cluster page; body:\n%.500s", code, at, body)
	}

	// The console samples the cluster every second; its first view may
	// predate a node's first answer.
	want := []string{"n1", "n2", "n3"}
	waitFor(t, "every storage node healthy on the console", time.Minute, func() (bool, string, error) {
		code, _, body := get("/api/state")
		if code != http.StatusOK {
			return false, "", fmt.Errorf("GET /api/state: HTTP %d %s", code, body)
		}
		var st struct {
			Cluster struct {
				Version uint64 `json:"version"`
				Nodes   []struct {
					ID     string `json:"id"`
					Health string `json:"health"`
					Error  string `json:"error"`
				} `json:"nodes"`
				Errors []string `json:"errors"`
			} `json:"cluster"`
		}
		if err := json.Unmarshal(body, &st); err != nil {
			return false, "", fmt.Errorf("GET /api/state: decoding %s: %w", body, err)
		}
		var healthy, status []string
		for _, n := range st.Cluster.Nodes {
			if n.Health == "ok" {
				healthy = append(healthy, n.ID)
			}
			status = append(status, fmt.Sprintf("%s %s %s", n.ID, n.Health, n.Error))
		}
		slices.Sort(healthy)
		return slices.Equal(healthy, want) && st.Cluster.Version > 0,
			fmt.Sprintf("topology version %d, nodes %q, errors %q", st.Cluster.Version, status, st.Cluster.Errors), nil
	})
}

// login posts token to the console's login form and answers the status
// and page it ends on (the form again, 401, when refused).
func login(t *testing.T, c *http.Client, base, token string) (int, string) {
	t.Helper()
	resp, err := c.PostForm(base+"/login", url.Values{"token": {token}, "next": {"/"}})
	if err != nil {
		t.Fatalf("POST /login: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("POST /login: %v", err)
	}
	return resp.StatusCode, string(b)
}
