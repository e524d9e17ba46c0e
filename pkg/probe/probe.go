// Package probe is the `healthcheck` subcommand of slotkv's binaries. The
// images are FROM scratch: there is no shell, curl or wget for a container
// health check to run, so each binary probes its own HTTP port:
//
//	healthcheck: {test: ["CMD", "/slotkv-storage", "healthcheck"]}
//
// It depends on the standard library and pkg/flagenv only, so a small tool
// (slotkv-dataset) can have the same subcommand without gRPC and
// OpenTelemetry in its binary.
package probe

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/slotkv/slotkv/pkg/flagenv"
)

const (
	// Arg is the first argument that selects the subcommand.
	Arg = "healthcheck"
	// EnvURL overrides the probed URL, like --url.
	EnvURL = "SLOTKV_HEALTHCHECK_URL"
	// DefaultTimeout bounds one probe. Docker's own health-check
	// timeout is 30s by default; a readiness answer takes milliseconds, so
	// anything slower is a failure worth reporting as such.
	DefaultTimeout = 3 * time.Second
)

// Target is what a binary's healthcheck probes by default: Path on the
// loopback address of its HTTP listen address, which is AddrEnv's value
// when set (the service reads the same variable, so a container configured
// by environment is probed where it really listens) and Addr otherwise.
type Target struct {
	Addr    string // the listen flag's default, e.g. ":8100"
	AddrEnv string // the listen flag's environment fallback, e.g. "SLOTKV_HTTP_ADDR"
	Path    string // e.g. "/readyz"
	// CertEnv and KeyEnv name the variables of the service's TLS
	// certificate and key (e.g. SLOTKV_TLS_CERT, SLOTKV_TLS_KEY). When both
	// are set the probe speaks HTTPS: it trusts exactly that certificate
	// (the one the service presents, whatever names it carries) and
	// presents it as its client certificate, so a service that requires
	// client certificates (mTLS) accepts its own probe.
	CertEnv, KeyEnv string
}

// Get GETs url and returns nil when it answers 2xx. Any other answer is an
// error carrying the status and the start of the body (/readyz says what is
// not ready); a connection failure is returned as is.
func Get(ctx context.Context, url string) error { return GetTLS(ctx, url, nil) }

// GetTLS is Get with a TLS configuration for an https URL.
func GetTLS(ctx context.Context, url string, conf *tls.Config) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("probe URL %q: %w", url, err)
	}
	// No proxy: a probe checks this host's own port, and a proxy taken
	// from the container's environment would check something else.
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true, TLSClientConfig: conf}}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// URL is path on the loopback address of httpAddr (a listen address such
// as ":8100", "0.0.0.0:8100" or "10.0.0.5:8100").
func URL(httpAddr, path string) (string, error) {
	host, port, err := net.SplitHostPort(httpAddr)
	if err != nil || port == "" || port == "0" {
		return "", fmt.Errorf("cannot probe HTTP listen address %q: give --url or $%s", httpAddr, EnvURL)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + path, nil
}

// Command runs `BINARY healthcheck [--url URL] [--timeout D]` when args
// (os.Args[1:]) start with "healthcheck", and reports ok=true with the exit
// code: 0 ready, 1 not ready or unreachable, 2 usage error. Otherwise it
// returns ok=false and the main goes on. An address given to the service
// as a command-line flag is not visible here: pass --url then.
func Command(args []string, t Target) (code int, ok bool) {
	if len(args) == 0 || args[0] != Arg {
		return 0, false
	}
	return Run(context.Background(), args[1:], t, os.LookupEnv, os.Stderr), true
}

// Run is the subcommand on its arguments (after "healthcheck").
func Run(ctx context.Context, args []string, t Target, lookup func(string) (string, bool), stderr io.Writer) int {
	name := "healthcheck"
	if len(os.Args) > 0 {
		name = filepath.Base(os.Args[0]) + " healthcheck"
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := flagenv.String(fs, "url", EnvURL, "", "URL to GET (default: http://127.0.0.1:PORT"+t.Path+", PORT from $"+t.AddrEnv+" or "+t.Addr+")")
	timeout := flagenv.Duration(fs, "timeout", "SLOTKV_HEALTHCHECK_TIMEOUT", DefaultTimeout, "give up after this long")
	if err := flagenv.ParseLookup(fs, args, lookup); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected arguments %q\n", name, fs.Args())
		return 2
	}
	target := *url
	if target == "" {
		addr := t.Addr
		if v, ok := lookup(t.AddrEnv); ok && v != "" && t.AddrEnv != "" {
			addr = v
		}
		var err error
		if target, err = URL(addr, t.Path); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", name, err)
			return 2
		}
	}
	conf, err := ownTLS(t, lookup)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 2
	}
	if conf != nil && *url == "" {
		target = "https://" + strings.TrimPrefix(target, "http://")
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := GetTLS(ctx, target, conf); err != nil {
		// Docker keeps this output in the container's health log
		// (docker inspect), which is where an operator looks.
		fmt.Fprintf(stderr, "%s: not ready: %v\n", name, err)
		return 1
	}
	return 0
}

// ownTLS is the probe's TLS configuration when the service serves TLS
// (t.CertEnv and t.KeyEnv set): it presents the service's certificate and
// accepts only that certificate from the server, which is the service
// itself. Nil without TLS.
func ownTLS(t Target, lookup func(string) (string, bool)) (*tls.Config, error) {
	if t.CertEnv == "" || t.KeyEnv == "" {
		return nil, nil
	}
	certFile, _ := lookup(t.CertEnv)
	keyFile, _ := lookup(t.KeyEnv)
	if certFile == "" || keyFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("$%s/$%s (%s, %s): %w", t.CertEnv, t.KeyEnv, certFile, keyFile, err)
	}
	own := cert.Certificate[0]
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		// The pin below replaces chain and name verification: the probe
		// dials 127.0.0.1, which the certificate need not name.
		InsecureSkipVerify: true, //nolint:gosec // pinned in VerifyPeerCertificate
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 || !bytes.Equal(raw[0], own) {
				return errors.New("the server's certificate is not $" + t.CertEnv)
			}
			return nil
		},
	}, nil
}
