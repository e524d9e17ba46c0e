package server

import (
	"bytes"
	"flag"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/flagenv"
	"github.com/slotkv/slotkv/pkg/tlsconfig"
)

func parseFlags(t *testing.T, args ...string) (Flags, error) {
	t.Helper()
	fs := flag.NewFlagSet("svc", flag.ContinueOnError)
	fs.SetOutput(&bytes.Buffer{})
	var f Flags
	f.Register(fs, Common{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0"})
	if err := flagenv.ParseLookup(fs, args, func(string) (string, bool) { return "", false }); err != nil {
		return f, err
	}
	return f, f.Finish()
}

// TestTLSFlags: a server started from --tls-cert, --tls-key and
// --tls-client-ca serves gRPC and REST (through its own gateway's mTLS
// loopback) to clients built from the client flags, and refuses a
// plaintext client, a client without a certificate and a client trusting
// another CA.
func TestTLSFlags(t *testing.T) {
	t.Parallel()
	dev, err := tlsconfig.DevCerts(filepath.Join(t.TempDir(), "dev"), nil)
	if err != nil {
		t.Fatal(err)
	}
	other, err := tlsconfig.DevCerts(filepath.Join(t.TempDir(), "other"), nil)
	if err != nil {
		t.Fatal(err)
	}
	f, err := parseFlags(t, "--tls-cert", dev.Node, "--tls-key", dev.NodeKey, "--tls-client-ca", dev.CA, "--tls-ca", dev.CA)
	if err != nil {
		t.Fatal(err)
	}
	if f.TLS == nil || f.ClientTLS == nil || f.PeerTLS == nil || len(f.PeerTLS.Certificates) != 1 {
		t.Fatalf("TLS %v, loopback %v, peer %v: want all three, the peer with the node certificate", f.TLS, f.ClientTLS, f.PeerTLS)
	}
	h := start(t, Options{TLS: f.TLS, ClientTLS: f.ClientTLS})

	client := func(t *testing.T, args ...string) *ClientFlags {
		fs := flag.NewFlagSet("ctl", flag.ContinueOnError)
		var c ClientFlags
		c.Register(fs)
		if err := flagenv.ParseLookup(fs, args, func(string) (string, bool) { return "", false }); err != nil {
			t.Fatal(err)
		}
		if err := c.Finish(); err != nil {
			t.Fatal(err)
		}
		return &c
	}
	tests := []struct {
		name string
		args []string
		ok   bool
	}{
		{"trusted CA and client certificate", []string{"--tls-ca", dev.CA, "--tls-client-cert", dev.Client, "--tls-client-key", dev.ClientKey}, true},
		{"plaintext", nil, false},
		{"no client certificate", []string{"--tls-ca", dev.CA}, false},
		{"another CA", []string{"--tls-ca", other.CA, "--tls-client-cert", dev.Client, "--tls-client-key", dev.ClientKey}, false},
		{"another CA's client certificate", []string{"--tls-ca", dev.CA, "--tls-client-cert", other.Client, "--tls-client-key", other.ClientKey}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t) // its own: a parallel subtest may start long after the parent
			c := client(t, tt.args...)
			_, err := testgrpc.NewTestServiceClient(h.conn(t, dial.Options{TLS: c.TLS})).EmptyCall(ctx, &testgrpc.Empty{})
			if (err == nil) != tt.ok {
				t.Errorf("gRPC: %v, want ok %v", err, tt.ok)
			}
			if err != nil && status.Code(err) != codes.Unavailable {
				t.Errorf("gRPC refused with %v, want Unavailable (no connection)", status.Code(err))
			}
			scheme := "https://"
			if c.TLS == nil {
				scheme = "http://"
			}
			hc := &http.Client{Transport: &http.Transport{TLSClientConfig: c.TLS}}
			defer hc.CloseIdleConnections()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+h.srv.HTTPAddr().String()+"/v1/empty", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := hc.Do(req)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					err = &httpStatusError{resp.StatusCode}
				}
			}
			if (err == nil) != tt.ok {
				t.Errorf("REST: %v, want ok %v", err, tt.ok)
			}
		})
	}
}

type httpStatusError struct{ code int }

func (e *httpStatusError) Error() string { return http.StatusText(e.code) }

func TestTLSFlagErrors(t *testing.T) {
	t.Parallel()
	dev, err := tlsconfig.DevCerts(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing.pem")
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"cert without key", []string{"--tls-cert", dev.Node}, []string{"--tls-cert", "--tls-key"}},
		{"client CA without cert", []string{"--tls-client-ca", dev.CA}, []string{"--tls-client-ca", "--tls-cert"}},
		{"missing cert", []string{"--tls-cert", missing, "--tls-key", dev.NodeKey}, []string{"--tls-cert", missing}},
		{"missing client CA", []string{"--tls-cert", dev.Node, "--tls-key", dev.NodeKey, "--tls-client-ca", missing}, []string{"--tls-client-ca", missing}},
		{"missing CA", []string{"--tls-ca", missing}, []string{"--tls-ca", missing}},
		{"client cert without key", []string{"--tls-ca", dev.CA, "--tls-client-cert", dev.Client}, []string{"--tls-client-cert", "--tls-client-key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := parseFlags(t, tt.args...)
			if err == nil {
				t.Fatal("no error")
			}
			for _, s := range tt.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not name %s", err, s)
				}
			}
		})
	}
	// Without TLS flags everything stays plaintext.
	f, err := parseFlags(t)
	if err != nil || f.TLS != nil || f.ClientTLS != nil || f.PeerTLS != nil {
		t.Errorf("no TLS flags: %v, TLS %v %v %v", err, f.TLS, f.ClientTLS, f.PeerTLS)
	}
	// --tls-ca alone: a plaintext server that dials its peers over TLS.
	f, err = parseFlags(t, "--tls-ca", dev.CA)
	if err != nil || f.TLS != nil || f.PeerTLS == nil || f.PeerTLS.RootCAs == nil {
		t.Errorf("--tls-ca alone: %v, TLS %v, peer %v", err, f.TLS, f.PeerTLS)
	}
}
