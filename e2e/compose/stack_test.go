//go:build compose

// Package compose checks the container stack (docker-compose.yml) from the
// outside, through its published ports, the way an operator uses it. It
// needs a running stack, so it is behind the "compose" build tag and run by
// `make test-compose` (deployments/compose/test.sh), which starts the stack,
// sets the variables below and tears everything down afterwards:
//
//	SLOTKV_TEST_ROUTER_HTTP, SLOTKV_TEST_ROUTER_GRPC     router REST and gRPC, host:port
//	SLOTKV_TEST_ROUTER_RESP   the router's RESP (Redis protocol, proxy mode)
//	SLOTKV_TEST_MIGRATOR_HTTP, SLOTKV_TEST_MIGRATOR2_HTTP, SLOTKV_TEST_DOWNLOADER_HTTP
//	SLOTKV_TEST_CONSOLE_HTTP  the web console
//	SLOTKV_TEST_STORAGE_RESP  the nodes' RESP (cluster mode) on the host, by the address
//	                  they advertise: storage1:6379=host:port,... (deployments/compose/test.yml)
//	SLOTKV_TEST_TRACES_HTTP   the trace receiver's span API (e2e/cmd/otlpsink as "jaeger")
//	SLOTKV_COMPOSE    the compose command ("docker-compose" or "docker compose");
//	                  COMPOSE_PROJECT_NAME and COMPOSE_FILE select the stack
//	SLOTKV_BIN        directory of grpcurl and slotkv-dataset on this host
//	SLOTKV_TOKEN      the stack's cluster token, if it has one; SLOTKV_DATA_TOKEN
//	                  and SLOTKV_ADMIN_TOKEN, where the stack splits it
//	SLOTKV_TEST_TLS_DIR  the certificates of a stack on TLS (deployments/compose/tls.yml):
//	                  REST over HTTPS and gRPC over TLS with its ca.crt and client.crt
package compose

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slotkv/slotkv/pkg/tlsconfig"
)

// stack is the running compose stack under test.
type stack struct {
	routerHTTP, routerGRPC, migratorHTTP, downloaderHTTP string
	migrator2HTTP                                        string // the second migrator replica
	routerRESP, consoleHTTP                              string
	tracesHTTP                                           string
	compose                                              []string
	bin                                                  string
	token                                                string
	// dataToken and adminToken are the stack's two tokens, each token
	// where it has only the one ("" for an open stack).
	dataToken, adminToken string
	client                *http.Client
	// scheme is the services' REST scheme, https on a TLS stack; tls the
	// client configuration of gRPC calls (nil: plaintext), grpcurlTLS
	// grpcurl's flags for it.
	scheme     string
	tls        *tls.Config
	grpcurlTLS []string
}

func newStack(t *testing.T) *stack {
	t.Helper()
	need := func(name string) string {
		v := os.Getenv(name)
		if v == "" {
			t.Fatalf("$%s is not set: run `make test-compose`, which starts the stack and sets it", name)
		}
		return v
	}
	s := &stack{
		routerHTTP:     need("SLOTKV_TEST_ROUTER_HTTP"),
		routerGRPC:     need("SLOTKV_TEST_ROUTER_GRPC"),
		migratorHTTP:   need("SLOTKV_TEST_MIGRATOR_HTTP"),
		migrator2HTTP:  need("SLOTKV_TEST_MIGRATOR2_HTTP"),
		downloaderHTTP: need("SLOTKV_TEST_DOWNLOADER_HTTP"),
		routerRESP:     need("SLOTKV_TEST_ROUTER_RESP"),
		consoleHTTP:    need("SLOTKV_TEST_CONSOLE_HTTP"),
		tracesHTTP:     need("SLOTKV_TEST_TRACES_HTTP"),
		compose:        strings.Fields(need("SLOTKV_COMPOSE")),
		bin:            need("SLOTKV_BIN"),
		token:          os.Getenv("SLOTKV_TOKEN"),
		client:         &http.Client{Timeout: 30 * time.Second},
		scheme:         "http",
		grpcurlTLS:     []string{"-plaintext"},
	}
	s.dataToken, s.adminToken = cmp.Or(os.Getenv("SLOTKV_DATA_TOKEN"), s.token), cmp.Or(os.Getenv("SLOTKV_ADMIN_TOKEN"), s.token)
	if dir := os.Getenv("SLOTKV_TEST_TLS_DIR"); dir != "" {
		ca, cert, key := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
		conf, err := tlsconfig.Client(ca, cert, key)
		if err != nil {
			t.Fatalf("$SLOTKV_TEST_TLS_DIR: %v", err)
		}
		s.scheme, s.tls = "https", conf
		s.client.Transport = &http.Transport{TLSClientConfig: conf}
		s.grpcurlTLS = []string{"-cacert", ca, "-cert", cert, "-key", key}
	}
	return s
}

// url is path on a service's published port; the trace receiver (not a
// slotkv service) speaks plain HTTP on a TLS stack too.
func (s *stack) url(hostport, path string) string {
	scheme := s.scheme
	if hostport == s.tracesHTTP {
		scheme = "http"
	}
	return scheme + "://" + hostport + path
}

// apiError is a non-2xx answer of a REST call.
type apiError struct {
	status int
	body   string
}

func (e *apiError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.status, e.body) }

// call sends a REST request to s.url(hostport, path) with in as its JSON body
// (nil for none) and decodes a 2xx answer into out (nil to ignore it).
func (s *stack) call(method, hostport, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.url(hostport, path), body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return &apiError{status: resp.StatusCode, body: strings.TrimSpace(string(b))}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: decoding %s: %w", method, path, b, err)
	}
	return nil
}

// mustCall is call that fails the test on error.
func (s *stack) mustCall(t *testing.T, method, hostport, path string, in, out any) {
	t.Helper()
	if err := s.call(method, hostport, path, in, out); err != nil {
		t.Fatalf("%s %s%s: %v", method, hostport, path, err)
	}
}

// grpcurl runs bin/grpcurl against the router's gRPC port (plaintext, or
// TLS with the client certificate; server reflection) and decodes its JSON
// output into out.
func (s *stack) grpcurl(t *testing.T, method string, in, out any) {
	t.Helper()
	req, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	args := append(append([]string(nil), s.grpcurlTLS...), "-d", string(req))
	if s.token != "" {
		args = append(args, "-H", "authorization: Bearer "+s.token)
	}
	args = append(args, s.routerGRPC, method)
	stdout, err := s.run(t, filepath.Join(s.bin, "grpcurl"), args...)
	if err != nil {
		t.Fatalf("grpcurl %s: %v", method, err)
	}
	if err := json.Unmarshal(stdout, out); err != nil {
		t.Fatalf("grpcurl %s: decoding %s: %v", method, stdout, err)
	}
}

// composeRun runs a one-shot command in a new container of service (with
// its volumes, without starting its dependencies) and returns its output.
func (s *stack) composeRun(t *testing.T, service string, command ...string) []byte {
	t.Helper()
	args := append(append(s.compose[1:], "run", "--rm", "--no-deps", "-T", service), command...)
	out, err := s.run(t, s.compose[0], args...)
	if err != nil {
		t.Fatalf("%s run %s %s: %v", strings.Join(s.compose, " "), service, strings.Join(command, " "), err)
	}
	return out
}

// run runs a program with a deadline and returns its standard output; the
// error carries its standard error.
func (s *stack) run(t *testing.T, name string, args ...string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%w\nstderr:\n%s", err, stderr.Bytes())
	}
	return stdout.Bytes(), nil
}

// waitFor polls check every interval until it reports done, or fails the
// test at the deadline with the last status and error it saw. check fails
// the test itself for a state that cannot improve (a failed job).
func waitFor(t *testing.T, what string, timeout time.Duration, check func() (done bool, status string, err error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		done, status, err := check()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not done after %v; last status %q, last error: %v", what, timeout, status, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// Router REST shapes (proto field names; 64-bit integers are strings).
type (
	kvEntry struct {
		Key    string `json:"key"`
		Text   string `json:"text"`
		Found  bool   `json:"found"`
		Slot   uint32 `json:"slot"`
		NodeID string `json:"node_id"`
	}
	slotRange struct {
		Start uint32 `json:"start"`
		End   uint32 `json:"end"`
	}
	topology struct {
		Version string `json:"version"`
		Nodes   []struct {
			ID          string `json:"id"`
			RESPAddress string `json:"resp_address"`
		} `json:"nodes"`
		Assignments []struct {
			NodeID string      `json:"node_id"`
			Ranges []slotRange `json:"ranges"`
		} `json:"assignments"`
	}
)

// topology returns the router's topology, refreshed from the nodes.
func (s *stack) topology(t *testing.T) topology {
	t.Helper()
	var out struct {
		Topology topology `json:"topology"`
	}
	s.mustCall(t, http.MethodGet, s.routerHTTP, "/v1/topology?refresh=true", nil, &out)
	return out.Topology
}

// rangesOf returns the slot ranges node owns in top.
func (top topology) rangesOf(node string) []slotRange {
	for _, a := range top.Assignments {
		if a.NodeID == node {
			return a.Ranges
		}
	}
	return nil
}

// multiGet reads keys through the router and returns their values by key;
// a key that is absent fails the test.
func (s *stack) multiGet(t *testing.T, keys []string) map[string]string {
	t.Helper()
	var out struct {
		Entries []kvEntry `json:"entries"`
	}
	s.mustCall(t, http.MethodPost, s.routerHTTP, "/v1/kv:multiGet", map[string]any{"keys": keys}, &out)
	if len(out.Entries) != len(keys) {
		t.Fatalf("multiGet of %d keys answered %d entries", len(keys), len(out.Entries))
	}
	got := make(map[string]string, len(keys))
	for _, e := range out.Entries {
		if !e.Found {
			t.Fatalf("key %q (slot %d) not found through the router", e.Key, e.Slot)
		}
		got[e.Key] = e.Text
	}
	return got
}
