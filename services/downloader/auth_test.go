package downloader_test

import (
	"net/http"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	downloaderv1 "github.com/slotkv/slotkv/gen/slotkv/downloader/v1"
	"github.com/slotkv/slotkv/pkg/auth"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/testcluster"
)

// TestTokens: every downloader RPC is an admin RPC: no token is
// Unauthenticated (401), the data token PermissionDenied (403), the admin
// token passes; health and the probes need none. The downloader reaches the
// storage nodes with its admin token.
func TestTokens(t *testing.T) {
	t.Parallel()
	const admin = testToken
	c := testcluster.Start(t, 1, testcluster.Options{Token: admin})
	c.Bootstrap(t)
	o := testOptions(t, c, t.TempDir())
	o.Tokens = auth.Tokens{Data: "data-tok", Admin: admin}
	m := startService(t, o)
	// Ready first (topology loaded, leading): the probes below check
	// that they need no token, not how soon the replica is ready.
	m.waitReady(t)
	tests := []struct {
		name  string
		token string
		want  codes.Code
		rest  int
	}{
		{"no token", "", codes.Unauthenticated, http.StatusUnauthorized},
		{"wrong token", "nope", codes.PermissionDenied, http.StatusForbidden},
		{"data token", "data-tok", codes.PermissionDenied, http.StatusForbidden},
		{"admin token", admin, codes.OK, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cc, err := dial.New(m.grpc, dial.Options{Token: tt.token})
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			_, err = downloaderv1.NewBulkLoadServiceClient(cc).ListJobs(ctxT(t), &downloaderv1.ListJobsRequest{})
			if status.Code(err) != tt.want {
				t.Errorf("ListJobs: %v, want %v", err, tt.want)
			}
			for path, want := range map[string]int{"/v1/bulkloads": tt.rest, "/healthz": http.StatusOK, "/readyz": http.StatusOK} {
				req, err := http.NewRequestWithContext(ctxT(t), http.MethodGet, "http://"+m.http+path, nil)
				if err != nil {
					t.Fatal(err)
				}
				auth.SetHeader(req.Header, tt.token)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != want {
					t.Errorf("GET %s: HTTP %d, want %d", path, resp.StatusCode, want)
				}
			}
		})
	}
}
