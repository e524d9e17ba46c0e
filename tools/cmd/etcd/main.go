// Command etcd is etcd's own server, built from go.etcd.io/etcd/server/v3 at
// the version pinned in tools/go.mod. That module has no main package (etcd's
// is in its repository's root module), so this one calls the same entry
// point: every flag, the version output and the behaviour are etcd's.
//
// One addition: `etcd healthcheck [--url URL] [--timeout D]` GETs the
// member's /health (default http://127.0.0.1:2379/health) and exits 0 when
// it answers 200 with {"health":"true"}, 1 otherwise. The slotkv/etcd image
// is FROM scratch (no shell, curl or etcdctl), so this is its container
// health check, like `BINARY healthcheck` of slotkv's own binaries
// (pkg/probe, which this module, built apart from the workspace, does not
// import). etcd answers 503 on /health while the member has no leader, so a
// healthy member is one of a cluster with quorum.
//
// `make etcd` builds it into bin/etcd; pkg/etcdtest starts it for tests.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		os.Exit(healthcheck(os.Args[2:]))
	}
	etcdmain.Main(os.Args)
}

// healthcheck is the subcommand: 0 healthy, 1 not healthy or unreachable,
// 2 usage error.
func healthcheck(args []string) int {
	fs := flag.NewFlagSet("etcd healthcheck", flag.ContinueOnError)
	url := fs.String("url", "http://127.0.0.1:2379/health", "the member's health endpoint")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "etcd healthcheck: unexpected arguments %q\n", fs.Args())
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := probe(ctx, *url); err != nil {
		// Docker keeps this in the container's health log.
		fmt.Fprintf(os.Stderr, "etcd healthcheck: not healthy: %v\n", err)
		return 1
	}
	return 0
}

func probe(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("--url %q: %w", url, err)
	}
	// No proxy: the probe checks this container's own port.
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	var h struct {
		Health string `json:"health"`
		Reason string `json:"reason"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &h) != nil || h.Health != "true" {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return nil
}
