package server

import (
	"context"
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

// The healthcheck subcommand exists because slotkv images are FROM scratch:
// there is no shell, curl or wget for a container health check to run, so
// each binary probes its own /readyz:
//
//	healthcheck: {test: ["CMD", "/slotkv-storage", "healthcheck"]}
const (
	// HealthcheckArg is the first argument that selects the subcommand.
	HealthcheckArg = "healthcheck"
	// EnvHealthcheckURL overrides the probed URL, like --url.
	EnvHealthcheckURL = "SLOTKV_HEALTHCHECK_URL"
	// EnvHTTPAddr is the environment fallback of every service's
	// --http-addr. The healthcheck reads it too, so a container configured
	// by environment is probed where the service really listens.
	EnvHTTPAddr = "SLOTKV_HTTP_ADDR"
	// DefaultProbeTimeout bounds one probe. Docker's own health-check
	// timeout is 30s by default; a readiness answer takes milliseconds, so
	// anything slower is a failure worth reporting as such.
	DefaultProbeTimeout = 3 * time.Second
)

// Probe GETs url and returns nil when it answers 2xx. Any other answer is an
// error carrying the status and the start of the body (/readyz says what is
// not ready); a connection failure is returned as is.
func Probe(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("probe URL %q: %w", url, err)
	}
	// No proxy: a probe checks this host's own port, and a proxy taken
	// from the container's environment would check something else.
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
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

// ProbeURL is the URL the healthcheck probes by default: /readyz on the
// loopback address of httpAddr (a listen address such as ":8100",
// "0.0.0.0:8100" or "10.0.0.5:8100").
func ProbeURL(httpAddr string) (string, error) {
	host, port, err := net.SplitHostPort(httpAddr)
	if err != nil || port == "" || port == "0" {
		return "", fmt.Errorf("cannot probe HTTP listen address %q: give --url or $%s", httpAddr, EnvHealthcheckURL)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + ReadyzPath, nil
}

// HealthcheckCommand runs `BINARY healthcheck [--url URL] [--timeout D]`
// when args (os.Args[1:]) start with "healthcheck", and reports ok=true with
// the exit code: 0 ready, 1 not ready or unreachable, 2 usage error.
// Otherwise it returns ok=false and the main goes on. Mains call it first:
//
//	if code, ok := server.HealthcheckCommand(os.Args[1:], storage.DefaultOptions().HTTPAddr); ok {
//		os.Exit(code)
//	}
//
// defaultHTTPAddr is the service's --http-addr default; $SLOTKV_HTTP_ADDR
// wins over it as it does for the service. An address given to the service
// as a command-line flag is not visible here: pass --url then.
func HealthcheckCommand(args []string, defaultHTTPAddr string) (code int, ok bool) {
	if len(args) == 0 || args[0] != HealthcheckArg {
		return 0, false
	}
	return healthcheck(context.Background(), args[1:], defaultHTTPAddr, os.LookupEnv, os.Stderr), true
}

func healthcheck(ctx context.Context, args []string, defaultHTTPAddr string, lookup func(string) (string, bool), stderr io.Writer) int {
	name := "healthcheck"
	if len(os.Args) > 0 {
		name = filepath.Base(os.Args[0]) + " healthcheck"
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := flagenv.String(fs, "url", EnvHealthcheckURL, "", "URL to GET (default: http://127.0.0.1:PORT/readyz, PORT from $"+EnvHTTPAddr+" or the --http-addr default)")
	timeout := flagenv.Duration(fs, "timeout", "SLOTKV_HEALTHCHECK_TIMEOUT", DefaultProbeTimeout, "give up after this long")
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
		addr := defaultHTTPAddr
		if v, ok := lookup(EnvHTTPAddr); ok && v != "" {
			addr = v
		}
		var err error
		if target, err = ProbeURL(addr); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", name, err)
			return 2
		}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := Probe(ctx, target); err != nil {
		// Docker keeps this output in the container's health log
		// (docker inspect), which is where an operator looks.
		fmt.Fprintf(stderr, "%s: not ready: %v\n", name, err)
		return 1
	}
	return 0
}
