package resp

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"testing"
	"time"
)

// TestStartTLS: a server started with a TLS configuration speaks RESP over
// TLS only, and stop ends it.
func TestStartTLS(t *testing.T) {
	t.Parallel()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "resp-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Backend: &mapBackend{m: map[string][]byte{}}})
	if err != nil {
		t.Fatal(err)
	}
	bound, stop, err := s.Start(context.Background(), "127.0.0.1:0",
		&tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	tc, err := tls.Dial("tcp", bound.String(), &tls.Config{RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, c: tc}
	c.rd = newReader(tc)
	if got := c.do("SET", "k", "v"); got != "+OK\r\n" {
		t.Fatalf("SET over TLS: %q", got)
	}
	if got := c.do("GET", "k"); got != "$1\r\nv\r\n" {
		t.Fatalf("GET over TLS: %q", got)
	}
	tc.Close()
	// Plaintext is refused: the handshake fails, nothing is answered.
	pc := dialRaw(t, bound.String())
	pc.send(cmdFrame("PING"))
	_ = pc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, _ := io.ReadAll(pc.rd); bytes.Contains(got, []byte("PONG")) {
		t.Fatalf("a plaintext client got an answer from the TLS listener: %q", got)
	}
	stop()
	if _, err := net.DialTimeout("tcp", bound.String(), time.Second); err == nil {
		t.Fatal("still listening after stop")
	}
}
