package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	downloaderv1 "github.com/slotkv/slotkv/gen/slotkv/downloader/v1"
	routerv1 "github.com/slotkv/slotkv/gen/slotkv/router/v1"
	"github.com/slotkv/slotkv/pkg/auth"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/etcdtest"
	"github.com/slotkv/slotkv/pkg/proctest"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/testcluster"
	"github.com/slotkv/slotkv/pkg/tlsconfig"
)

// TestTLSStack runs the whole local stack on mutual TLS with two tokens:
// three storage nodes, the router, the migrator and the downloader serve
// both ports over TLS, require client certificates signed by the test's
// CA, and dial the storage nodes over TLS with their own certificate;
// slotkvctl bootstraps the nodes and runs a migration over TLS. A put and
// get work (gRPC and REST), a migration succeeds and its keys stay
// readable; a plaintext client, a client without a certificate and a
// client trusting another CA are refused.
func TestTLSStack(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dev, err := tlsconfig.DevCerts(filepath.Join(dir, "certs"), nil)
	if err != nil {
		t.Fatal(err)
	}
	other, err := tlsconfig.DevCerts(filepath.Join(dir, "other"), nil)
	if err != nil {
		t.Fatal(err)
	}
	const dataToken, adminToken = "tls-data", "tls-admin"
	tlsArgs := []string{"--tls-cert", dev.Node, "--tls-key", dev.NodeKey, "--tls-client-ca", dev.CA, "--tls-ca", dev.CA}
	serverArgs := append([]string{"--data-token", dataToken, "--admin-token", adminToken}, tlsArgs...)
	clientTLS, err := tlsconfig.Client(dev.CA, dev.Client, dev.ClientKey)
	if err != nil {
		t.Fatal(err)
	}

	c := testcluster.Start(t, 3, testcluster.Options{Token: adminToken, Args: serverArgs, TLS: clientTLS, Etcd: etcdtest.Start(t)})
	storage := strings.Join(c.Addrs(), ",")
	ctlTLS := []string{"--tls-ca", dev.CA, "--tls-client-cert", dev.Client, "--tls-client-key", dev.ClientKey, "--admin-token", adminToken}
	tlsCtl(t, append(append([]string{"bootstrap", "--storage", storage}, c.EtcdArgs()...), ctlTLS...)...)

	start := func(bin string, extra ...string) *proctest.Proc {
		// The topology and the nodes come from etcd (no --storage).
		args := append(append([]string{"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"}, c.EtcdArgs()...), serverArgs...)
		p := proctest.Start(t, proctest.Bin(t, bin), append(args, extra...)...)
		waitReadyTLS(t, p, clientTLS)
		return p
	}
	router := start("slotkv-router")
	migrator := start("slotkv-migrator")
	downloader := start("slotkv-downloader", "--data-dir", filepath.Join(dir, "downloader"))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	kvConn := func(t *testing.T, tlsConf *tls.Config) routerv1.KVServiceClient {
		cc, err := dial.New(router.GRPC, dial.Options{Token: dataToken, TLS: tlsConf})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cc.Close() })
		return routerv1.NewKVServiceClient(cc)
	}
	kv := kvConn(t, clientTLS)

	// Keys in slots 0-99 (n1's under the even split), to be migrated.
	keys := map[string]string{}
	for i := 0; len(keys) < 20; i++ {
		k := fmt.Sprintf("tls-%d", i)
		if slot.OfString(k) < 100 {
			keys[k] = "v-" + k
		}
	}
	for k, v := range keys {
		if _, err := kv.Put(ctx, &routerv1.PutRequest{Key: k, Data: &routerv1.PutRequest_Text{Text: v}}); err != nil {
			t.Fatalf("Put %s over TLS: %v", k, err)
		}
	}

	https := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS}}
	defer https.CloseIdleConnections()
	restGet := func(client *http.Client, scheme, key string) (int, string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+router.HTTP+"/v1/kv/"+key, nil)
		if err != nil {
			return 0, "", err
		}
		auth.SetHeader(req.Header, dataToken)
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	for k, v := range keys {
		if code, body, err := restGet(https, "https", k); err != nil || code != http.StatusOK || !strings.Contains(body, v) {
			t.Fatalf("REST GET %s over TLS: %d %q %v", k, code, body, err)
		}
		break
	}

	// A migration of slots 0-99 from n1 to n2, started and watched with
	// slotkvctl over TLS; the migrator talks to both nodes over mTLS.
	out := tlsCtl(t, append([]string{"migrate", "--migrator", migrator.GRPC, "--source", "n1", "--destination", "n2", "--ranges", "0-99"}, ctlTLS...)...)
	if !strings.Contains(out, "SUCCEEDED") {
		t.Fatalf("migration over TLS did not succeed:\n%s", out)
	}
	info := tlsCtl(t, append(append([]string{"topology"}, c.EtcdArgs()...), ctlTLS...)...)
	t.Logf("topology after the migration:\n%s", info)
	for k, v := range keys {
		resp, err := kv.Get(ctx, &routerv1.GetRequest{Key: k})
		if err != nil || resp.GetText() != v {
			t.Fatalf("Get %s after the migration: %v %v", k, resp, err)
		}
	}

	// The downloader is ready (it reached the storage nodes over TLS) and
	// answers over TLS with the admin token.
	dcc, err := dial.New(downloader.GRPC, dial.Options{Token: adminToken, TLS: clientTLS})
	if err != nil {
		t.Fatal(err)
	}
	defer dcc.Close()
	if _, err := downloaderv1.NewBulkLoadServiceClient(dcc).ListJobs(ctx, &downloaderv1.ListJobsRequest{}); err != nil {
		t.Fatalf("downloader ListJobs over TLS: %v", err)
	}

	// The container health check (`BINARY healthcheck`) probes a TLS
	// service with the service's own certificate, as the compose stack
	// runs it: configured through the environment.
	hc := exec.CommandContext(ctx, proctest.Bin(t, "slotkv-router"), "healthcheck")
	hc.Env = append(hc.Environ(), "SLOTKV_HTTP_ADDR="+router.HTTP, "SLOTKV_TLS_CERT="+dev.Node, "SLOTKV_TLS_KEY="+dev.NodeKey)
	if out, err := hc.CombinedOutput(); err != nil {
		t.Errorf("slotkv-router healthcheck over TLS: %v\n%s", err, out)
	}

	// Refused: plaintext, no client certificate, another CA.
	noCert, err := tlsconfig.Client(dev.CA, "", "")
	if err != nil {
		t.Fatal(err)
	}
	otherCA, err := tlsconfig.Client(other.CA, dev.Client, dev.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	otherCert, err := tlsconfig.Client(dev.CA, other.Client, other.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		tls  *tls.Config
	}{
		{"plaintext", nil},
		{"no client certificate", noCert},
		{"client trusting another CA", otherCA},
		{"client certificate of another CA", otherCert},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
			defer ccancel()
			_, err := kvConn(t, tc.tls).Get(cctx, &routerv1.GetRequest{Key: "tls-0"})
			if status.Code(err) != codes.Unavailable {
				t.Errorf("gRPC Get: %v, want Unavailable (no connection)", err)
			}
			scheme, client := "https", &http.Client{Transport: &http.Transport{TLSClientConfig: tc.tls}}
			if tc.tls == nil {
				scheme = "http"
			}
			defer client.CloseIdleConnections()
			if code, body, err := restGet(client, scheme, "tls-0"); err == nil && code == http.StatusOK {
				t.Errorf("REST GET answered %d %q", code, body)
			}
		})
	}
	// The CLI without TLS cannot reach a TLS node either.
	cmd := exec.CommandContext(ctx, proctest.Bin(t, "slotkvctl"), "info", "--storage", c.Addrs()[0], "--admin-token", adminToken, "--timeout", "5s")
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("slotkvctl info in plaintext against a TLS node succeeded:\n%s", out)
	}
}

// tlsCtl runs slotkvctl and returns its output, failing the test when it
// fails.
func tlsCtl(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, proctest.Bin(t, "slotkvctl"), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("slotkvctl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// waitReadyTLS polls the process's /readyz over HTTPS until it answers 200.
func waitReadyTLS(t *testing.T, p *proctest.Proc, conf *tls.Config) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: conf}, Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := client.Get("https://" + p.HTTP + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready over TLS after 60s: %v", p.Name, err)
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
}
