package ctl_test

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestDevCerts: dev-certs writes a CA, a node certificate naming the given
// hosts and a client certificate; --key-perm opens the node and client keys
// (and the directory) for a container's user, never the CA key.
func TestDevCerts(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "certs")
	code, out, errOut := run(t, nil, "dev-certs", "--out", dir, "--hosts", "127.0.0.1,storage9", "--key-perm", "0644")
	if code != 0 || !strings.Contains(out, filepath.Join(dir, "node.crt")) {
		t.Fatalf("dev-certs: exit %d\n%s%s", code, out, errOut)
	}
	b, err := os.ReadFile(filepath.Join(dir, "node.crt"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatal("node.crt is not PEM")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cert.DNSNames, []string{"storage9"}) || len(cert.IPAddresses) != 1 || cert.IPAddresses[0].String() != "127.0.0.1" {
		t.Errorf("node certificate names %v %v, want storage9 and 127.0.0.1", cert.DNSNames, cert.IPAddresses)
	}
	for name, want := range map[string]os.FileMode{"node.key": 0o644, "client.key": 0o644, "ca.key": 0o600, ".": 0o755} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", name, st.Mode().Perm(), want)
		}
	}
	if code, _, errOut := run(t, nil, "dev-certs", "--out", dir, "--key-perm", "rw"); code != 2 || !strings.Contains(errOut, "--key-perm") {
		t.Errorf("bad --key-perm: exit %d %s", code, errOut)
	}
}
