package probe

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/slotkv/slotkv/pkg/tlsconfig"
)

// TestRunTLS: with the service's certificate and key in the environment the
// probe speaks HTTPS to a server requiring client certificates (mTLS),
// presenting and trusting exactly that certificate.
func TestRunTLS(t *testing.T) {
	t.Parallel()
	dev, err := tlsconfig.DevCerts(t.TempDir(), []string{"not-loopback.example"})
	if err != nil {
		t.Fatal(err)
	}
	other, err := tlsconfig.DevCerts(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	conf, err := tlsconfig.Server(dev.Node, dev.NodeKey, dev.CA)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	srv.TLS = conf
	srv.StartTLS()
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "https://")

	target := Target{Addr: "127.0.0.1:1", AddrEnv: "ADDR", Path: readyz, CertEnv: "CERT", KeyEnv: "KEY"}
	for _, tc := range []struct {
		name string
		env  map[string]string
		want int
	}{
		{"own certificate", map[string]string{"ADDR": addr, "CERT": dev.Node, "KEY": dev.NodeKey}, 0},
		{"plaintext", map[string]string{"ADDR": addr}, 1},
		{"another certificate", map[string]string{"ADDR": addr, "CERT": other.Node, "KEY": other.NodeKey}, 1},
		{"unreadable certificate", map[string]string{"ADDR": addr, "CERT": dev.Node + ".missing", "KEY": dev.NodeKey}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stderr bytes.Buffer
			lookup := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
			if code := Run(context.Background(), nil, target, lookup, &stderr); code != tc.want {
				t.Errorf("exit %d, want %d: %s", code, tc.want, stderr.String())
			}
		})
	}
}
