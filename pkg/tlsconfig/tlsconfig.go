// Package tlsconfig builds the TLS configurations of slotkv's servers and
// clients from PEM files, in one place, so that every service and client
// verifies the same way: TLS 1.2 at least, a server that asks for client
// certificates (mTLS) only when given the CA that signs them, and clients
// that verify the server against a given CA (or the system's roots).
//
// DevCerts makes a development CA and certificates signed by it (make
// certs, tests).
package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// Server is the configuration of a server presenting certFile/keyFile.
// With clientCAFile every client must present a certificate signed by one
// of its CAs (mTLS); without it clients are not asked for one. Errors name
// the file.
func Server(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	cert, err := LoadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if clientCAFile != "" {
		pool, err := LoadPool(clientCAFile)
		if err != nil {
			return nil, err
		}
		c.ClientCAs = pool
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return c, nil
}

// Client is the configuration of a client that verifies servers against the
// CAs in caFile (the system's roots when caFile is "") and, with
// certFile/keyFile, presents that certificate to servers that ask (mTLS).
// The server name to verify comes from the address dialed (gRPC and
// net/http set it), so a server certificate must name the host or IP the
// clients dial.
func Client(caFile, certFile, keyFile string) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pool, err := LoadPool(caFile)
		if err != nil {
			return nil, err
		}
		c.RootCAs = pool
	}
	if certFile != "" || keyFile != "" {
		cert, err := LoadKeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// Loopback is the configuration of a server's connection to itself (the
// REST gateway dials the service's own gRPC port): it trusts exactly the
// certificate the server presents, whatever CA signed it and whatever
// names it carries (the gateway dials 127.0.0.1, which a certificate made
// for a host name need not list), and presents clientCert when the server
// asks for one (mTLS), or the server's own certificate when clientCert is
// nil.
func Loopback(server tls.Certificate, clientCert *tls.Certificate) *tls.Config {
	own := server.Certificate[0]
	present := server
	if clientCert != nil {
		present = *clientCert
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{present},
		// Verification is the pin below, not the usual chain and name
		// check: the peer must be this very certificate.
		InsecureSkipVerify: true, //nolint:gosec // pinned in VerifyPeerCertificate
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 || string(raw[0]) != string(own) {
				return errors.New("tlsconfig: loopback peer is not this server's own certificate")
			}
			return nil
		},
	}
}

// LoadKeyPair loads a certificate and its key; the error names both files.
func LoadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	if certFile == "" || keyFile == "" {
		return tls.Certificate{}, fmt.Errorf("a certificate needs both its file and its key file (got %q and %q)", certFile, keyFile)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certificate %s with key %s: %w", certFile, keyFile, err)
	}
	return cert, nil
}

// LoadPool loads the PEM certificates of file into a pool; a file without
// one is an error naming it.
func LoadPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("CA file %s: no PEM certificate in it", file)
	}
	return pool, nil
}
