package storage_test

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/auth"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/services/storage/internal/store/storetest"
)

// rest sends a JSON request to the node's gateway and returns the status
// code and decoded body.
func rest(t *testing.T, n *testNode, method, path, body, token string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxT(t), method, "http://"+n.httpAddr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if len(raw) > 0 && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s %s: body %q: %v", method, path, raw, err)
		}
	}
	return resp.StatusCode, out
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestREST(t *testing.T) {
	t.Parallel()
	n := startNode(t, testOptions(t, "rest"))
	topoJSON := `{"topology":{"version":1,"nodes":[{"id":"rest","grpc_address":"` + n.grpcAddr + `"}],"assignments":[{"node_id":"rest","ranges":[{"start":0,"end":16383}]}]}}`

	// Before a topology: 400 (FailedPrecondition) for data.
	code, _ := rest(t, n, http.MethodPost, "/v1/data:get", `{"key":"`+b64("foo")+`"}`, "")
	if code != http.StatusBadRequest {
		t.Errorf("get without topology: HTTP %d, want 400", code)
	}
	// The topology is read-only here: it comes from etcd.
	code, body := rest(t, n, http.MethodPut, "/v1/topology", topoJSON, "")
	if code < 400 {
		t.Fatalf("PUT /v1/topology: HTTP %d %v, want a refusal", code, body)
	}
	if resp, err := n.admin.GetTopology(ctxT(t), &storagev1.GetTopologyRequest{}); err != nil || resp.GetTopology() != nil {
		t.Fatalf("GetTopology after the refused PUT = %v, %v; want none", resp, err)
	}
	n.setTopology(t, topo(1, map[string]string{"rest": n.grpcAddr, "other": "10.9.9.9:7100"},
		map[string][][2]uint32{"rest": {{0, 8191}}, "other": {{8192, 16383}}}))
	code, body = rest(t, n, http.MethodGet, "/v1/topology", "", "")
	if code != http.StatusOK || body["topology"] == nil {
		t.Fatalf("GET /v1/topology: HTTP %d %v", code, body)
	}

	key := "hello" // slot 866, owned here
	code, body = rest(t, n, http.MethodPost, "/v1/data:put", `{"key":"`+b64(key)+`","value":"`+b64("world")+`"}`, "")
	if code != http.StatusOK || body["slot"] != float64(866) {
		t.Fatalf("put: HTTP %d %v", code, body)
	}
	code, body = rest(t, n, http.MethodPost, "/v1/data:get", `{"key":"`+b64(key)+`"}`, "")
	if code != http.StatusOK || body["value"] != b64("world") {
		t.Fatalf("get: HTTP %d %v", code, body)
	}
	code, body = rest(t, n, http.MethodPost, "/v1/data:scan", `{"limit":10}`, "")
	if items, _ := body["items"].([]any); code != http.StatusOK || len(items) != 1 {
		t.Fatalf("scan: HTTP %d %v", code, body)
	}

	code, body = rest(t, n, http.MethodGet, "/v1/node", "", "")
	node, _ := body["node"].(map[string]any)
	if code != http.StatusOK || node["id"] != "rest" || node["grpc_address"] != n.grpcAddr || body["key_count"] != "1" {
		t.Fatalf("GET /v1/node: HTTP %d %v", code, body)
	}

	errorCases := []struct {
		name, method, path, body string
		want                     int
	}{
		{"not found", http.MethodPost, "/v1/data:get", `{"key":"` + b64(string(storetest.KeyInSlot(7, "absent"))) + `"}`, http.StatusNotFound},
		{"empty key", http.MethodPost, "/v1/data:put", `{"value":"` + b64("v") + `"}`, http.StatusBadRequest},
		{"slot moved", http.MethodPost, "/v1/data:get", `{"key":"` + b64("foo") + `"}`, http.StatusBadRequest}, // slot 12182
		{"bad range", http.MethodPost, "/v1/data:count", `{"ranges":[{"start":9,"end":1}]}`, http.StatusBadRequest},
		{"malformed json", http.MethodPost, "/v1/data:get", `{"key":`, http.StatusBadRequest},
	}
	for _, tt := range errorCases {
		t.Run(tt.name, func(t *testing.T) {
			code, body := rest(t, n, tt.method, tt.path, tt.body, "")
			if code != tt.want {
				t.Errorf("HTTP %d %v, want %d", code, body, tt.want)
			}
		})
	}
}

// TestToken: every storage node RPC is an admin RPC (only other services
// and operators call a node), so the data token opens none of them; health
// checks and the probes need no token.
func TestToken(t *testing.T) {
	t.Parallel()
	o := testOptions(t, "secure")
	o.Tokens = auth.Tokens{Data: "data-s3cret", Admin: "s3cret"}
	n := startNode(t, o) // its client carries the admin token
	n.ownAll(t)
	ctx := ctxT(t)
	if _, err := n.data.Put(ctx, &storagev1.PutRequest{Key: []byte("k"), Value: []byte("v")}); err != nil {
		t.Fatalf("Put with the admin token: %v", err)
	}

	for _, tc := range []struct {
		name  string
		token string
		want  codes.Code
		rest  int
	}{
		{"no token", "", codes.Unauthenticated, http.StatusUnauthorized},
		{"wrong token", "guess", codes.PermissionDenied, http.StatusForbidden},
		{"data token", "data-s3cret", codes.PermissionDenied, http.StatusForbidden},
		{"admin token", "s3cret", codes.OK, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// Its own deadline: a parallel subtest may wait long for a
			// slot under -parallel, past a deadline taken in the parent.
			ctx := ctxT(t)
			conn, err := dial.New(n.grpcAddr, dial.Options{Token: tc.token})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_, err = storagev1.NewStorageServiceClient(conn).Get(ctx, &storagev1.GetRequest{Key: []byte("k")})
			wantStatus(t, err, tc.want)
			_, err = storagev1.NewNodeServiceClient(conn).GetNodeInfo(ctx, &storagev1.GetNodeInfoRequest{})
			wantStatus(t, err, tc.want)
			// Health checks are exempt: probes do not know the secret.
			hc, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
			if err != nil || hc.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("health check = %v, %v", hc, err)
			}

			code, body := rest(t, n, http.MethodPost, "/v1/data:get", `{"key":"`+b64("k")+`"}`, tc.token)
			if code != tc.rest || (code == http.StatusOK && body["value"] != b64("v")) {
				t.Errorf("REST data:get: HTTP %d %v, want %d", code, body, tc.rest)
			}
			for _, path := range []string{"/healthz", "/readyz"} {
				if code, _ := rest(t, n, http.MethodGet, path, "", tc.token); code != http.StatusOK {
					t.Errorf("%s: HTTP %d, want 200", path, code)
				}
			}
		})
	}
}
