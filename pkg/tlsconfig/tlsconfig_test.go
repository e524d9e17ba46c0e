package tlsconfig

import (
	"crypto/tls"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// handshake runs one TLS handshake between a server with sc and a client
// with cc dialing addr's host as serverName, and returns the client's and
// the server's errors.
func handshake(t *testing.T, sc, cc *tls.Config, serverName string) (clientErr, serverErr error) {
	t.Helper()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", sc)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	srvErr := make(chan error, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			srvErr <- err
			return
		}
		defer c.Close()
		err = c.(*tls.Conn).Handshake()
		if err == nil {
			_, err = c.Write([]byte("x"))
		}
		srvErr <- err
	}()
	cc = cc.Clone()
	cc.ServerName = serverName
	c, err := tls.Dial("tcp", lis.Addr().String(), cc)
	if err == nil {
		// Under TLS 1.3 a refused client certificate shows on the first read.
		_, err = io.ReadFull(c, make([]byte, 1))
		c.Close()
	}
	return err, <-srvErr
}

func TestServerAndClient(t *testing.T) {
	t.Parallel()
	dev, err := DevCerts(filepath.Join(t.TempDir(), "certs"), nil)
	if err != nil {
		t.Fatal(err)
	}
	other, err := DevCerts(filepath.Join(t.TempDir(), "other"), nil)
	if err != nil {
		t.Fatal(err)
	}
	plain := must(Server(dev.Node, dev.NodeKey, ""))
	mtls := must(Server(dev.Node, dev.NodeKey, dev.CA))

	tests := []struct {
		name       string
		server     *tls.Config
		client     *tls.Config
		serverName string
		ok         bool
	}{
		{"trusted CA, IP name", plain, must(Client(dev.CA, "", "")), "127.0.0.1", true},
		{"trusted CA, compose name", plain, must(Client(dev.CA, "", "")), "storage2", true},
		{"name not in the certificate", plain, must(Client(dev.CA, "", "")), "example.com", false},
		{"another CA", plain, must(Client(other.CA, "", "")), "127.0.0.1", false},
		{"system roots", plain, must(Client("", "", "")), "127.0.0.1", false},
		{"mTLS with the client certificate", mtls, must(Client(dev.CA, dev.Client, dev.ClientKey)), "127.0.0.1", true},
		{"mTLS with the node certificate", mtls, must(Client(dev.CA, dev.Node, dev.NodeKey)), "127.0.0.1", true},
		{"mTLS without a client certificate", mtls, must(Client(dev.CA, "", "")), "127.0.0.1", false},
		{"mTLS with another CA's client certificate", mtls, must(Client(dev.CA, other.Client, other.ClientKey)), "127.0.0.1", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cerr, serr := handshake(t, tt.server, tt.client, tt.serverName)
			if ok := cerr == nil && serr == nil; ok != tt.ok {
				t.Errorf("handshake ok = %v (client %v, server %v), want %v", ok, cerr, serr, tt.ok)
			}
		})
	}
}

func TestLoopback(t *testing.T) {
	t.Parallel()
	dev, err := DevCerts(t.TempDir(), []string{"only.example"})
	if err != nil {
		t.Fatal(err)
	}
	other, err := DevCerts(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	own := must(LoadKeyPair(dev.Node, dev.NodeKey))
	client := must(LoadKeyPair(dev.Client, dev.ClientKey))
	// The certificate names only.example; the loopback dials 127.0.0.1 and
	// still connects: it pins the certificate instead.
	if cerr, serr := handshake(t, must(Server(dev.Node, dev.NodeKey, dev.CA)), Loopback(own, nil), "127.0.0.1"); cerr != nil || serr != nil {
		t.Errorf("loopback to its own certificate: client %v, server %v", cerr, serr)
	}
	if cerr, serr := handshake(t, must(Server(dev.Node, dev.NodeKey, dev.CA)), Loopback(own, &client), "127.0.0.1"); cerr != nil || serr != nil {
		t.Errorf("loopback with a client certificate: client %v, server %v", cerr, serr)
	}
	// Another server (even one signed by a trusted CA) is refused.
	if cerr, _ := handshake(t, must(Server(other.Node, other.NodeKey, "")), Loopback(own, nil), "127.0.0.1"); cerr == nil {
		t.Error("loopback accepted another server's certificate")
	}
}

func TestErrorsNameFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dev, err := DevCerts(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.crt")
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]func() error{
		missing: func() error { _, err := Server(missing, dev.NodeKey, ""); return err },
		notPEM:  func() error { _, err := Server(dev.Node, dev.NodeKey, notPEM); return err },
		"CA " + missing: func() error {
			_, err := Client(missing, "", "")
			return err
		},
		"key": func() error { _, err := Client(dev.CA, dev.Client, ""); return err },
	} {
		err := f()
		if err == nil {
			t.Errorf("%s: no error", name)
			continue
		}
		want := strings.TrimPrefix(name, "CA ")
		if name == "key" {
			want = dev.Client
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	// Keys are private.
	for _, k := range []string{dev.CAKey, dev.NodeKey, dev.ClientKey} {
		if st, err := os.Stat(k); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, %v; want 0600", k, st.Mode().Perm(), err)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
