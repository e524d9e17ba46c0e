package server

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/slotkv/slotkv/gen"
	"github.com/slotkv/slotkv/pkg/auth"
)

// GET /openapi.json serves the document given in Options.OpenAPI, byte for
// byte, without a token even when the server has both tokens; a server
// given none leaves the path to the gateway (404). Each service's
// generated document is served whole and is the Swagger 2.0 description
// of that service's REST paths.
func TestOpenAPI(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		doc      []byte
		wantPath string // a REST path the document must describe
	}{
		{"storage", gen.StorageOpenAPI, "/v1/node"},
		{"router", gen.RouterOpenAPI, "/v1/kv/{key}"},
		{"migrator", gen.MigratorOpenAPI, "/v1/migrations"},
		{"downloader", gen.DownloaderOpenAPI, "/v1/bulkloads"},
		{"none", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := start(t, Options{Name: tc.name, OpenAPI: tc.doc, Tokens: auth.Tokens{Data: "data-tok", Admin: "admin-tok"}})
			resp, err := http.Get(h.url(OpenAPIPath))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if tc.doc == nil {
				if resp.StatusCode != http.StatusNotFound {
					t.Fatalf("GET %s without a document = %d, want 404", OpenAPIPath, resp.StatusCode)
				}
				return
			}
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("GET %s = %d %q, want 200 application/json", OpenAPIPath, resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			var doc struct {
				Swagger string         `json:"swagger"`
				Paths   map[string]any `json:"paths"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
				t.Fatalf("GET %s: not JSON: %v", OpenAPIPath, err)
			}
			if doc.Swagger != "2.0" {
				t.Errorf("swagger = %q, want 2.0", doc.Swagger)
			}
			if _, ok := doc.Paths[tc.wantPath]; !ok {
				t.Errorf("document lacks path %s; has %d paths", tc.wantPath, len(doc.Paths))
			}
			// The whole document, as generated.
			code, body := get(t, http.DefaultClient, h.url(OpenAPIPath), "")
			if code != http.StatusOK || body != string(tc.doc) {
				t.Errorf("GET %s = %d, body of %d bytes differs from the %d of the document", OpenAPIPath, code, len(body), len(tc.doc))
			}
		})
	}
}
