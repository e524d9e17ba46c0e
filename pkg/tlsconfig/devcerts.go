package tlsconfig

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// DevHosts are the names the development certificates carry by default:
// loopback (make run, tests) and the service names of docker-compose.yml.
var DevHosts = []string{
	"127.0.0.1", "::1", "localhost",
	"storage1", "storage2", "storage3", "router", "migrator", "migrator2", "downloader",
}

// DevFiles are the paths DevCerts wrote.
type DevFiles struct {
	CA, CAKey string // the development CA: trust it with --tls-ca and --tls-client-ca
	// Node is the certificate every service serves with (--tls-cert,
	// --tls-key); it is also valid as a client certificate, so a service
	// presents it to the storage nodes under mTLS.
	Node, NodeKey string
	// Client is a client-only certificate, for slotkvctl, curl and tests
	// (--tls-client-cert, --tls-client-key).
	Client, ClientKey string
}

// DevCerts writes into dir (created 0700) a new development CA
// (ca.crt, ca.key), a certificate for the services (node.crt, node.key)
// naming hosts (DevHosts when empty; IPs become IP SANs), and a client
// certificate (client.crt, client.key), all ECDSA P-256, valid for a year.
// Keys are written 0600. They are for development and tests: the CA key
// lies next to the certificates.
func DevCerts(dir string, hosts []string) (DevFiles, error) {
	if len(hosts) == 0 {
		hosts = DevHosts
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return DevFiles{}, fmt.Errorf("certificate directory: %w", err)
	}
	f := DevFiles{
		CA: filepath.Join(dir, "ca.crt"), CAKey: filepath.Join(dir, "ca.key"),
		Node: filepath.Join(dir, "node.crt"), NodeKey: filepath.Join(dir, "node.key"),
		Client: filepath.Join(dir, "client.crt"), ClientKey: filepath.Join(dir, "client.key"),
	}
	now := time.Now()
	// An hour back: a clock slightly behind on another machine (a
	// container) still accepts a certificate made just now.
	notBefore, notAfter := now.Add(-time.Hour), now.Add(365*24*time.Hour)

	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return DevFiles{}, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "slotkv development CA", Organization: []string{"slotkv"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return DevFiles{}, fmt.Errorf("CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return DevFiles{}, err
	}
	if err := writePEM(f.CA, "CERTIFICATE", caDER, 0o644); err != nil {
		return DevFiles{}, err
	}
	if err := writeKey(f.CAKey, caKey); err != nil {
		return DevFiles{}, err
	}

	leaf := func(certFile, keyFile, cn string, usages []x509.ExtKeyUsage, hosts []string) error {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		tmpl := &x509.Certificate{
			SerialNumber: serial(),
			Subject:      pkix.Name{CommonName: cn, Organization: []string{"slotkv"}},
			NotBefore:    notBefore,
			NotAfter:     notAfter,
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  usages,
		}
		for _, h := range hosts {
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return fmt.Errorf("certificate %s: %w", cn, err)
		}
		if err := writePEM(certFile, "CERTIFICATE", der, 0o644); err != nil {
			return err
		}
		return writeKey(keyFile, key)
	}
	if err := leaf(f.Node, f.NodeKey, "slotkv node", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, hosts); err != nil {
		return DevFiles{}, err
	}
	if err := leaf(f.Client, f.ClientKey, "slotkv client", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil); err != nil {
		return DevFiles{}, err
	}
	return f, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	return n
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(path, "PRIVATE KEY", der, 0o600)
}

func writePEM(path, typ string, der []byte, perm os.FileMode) error {
	b := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if err := os.WriteFile(path, b, perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// WriteFile keeps the mode of a file that exists (a second make certs).
	return os.Chmod(path, perm)
}
