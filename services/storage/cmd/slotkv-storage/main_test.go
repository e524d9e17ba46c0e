package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/auth"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/etcdtest"
	"github.com/slotkv/slotkv/pkg/logtest"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestParse(t *testing.T) {
	t.Parallel()
	c, err := parse([]string{"--node-id", "flag-id", "--max-value-bytes", "1000"}, env(map[string]string{
		"SLOTKV_NODE_ID":               "env-id", // the flag wins
		"SLOTKV_DATA_DIR":              "/srv/data",
		"SLOTKV_GRPC_ADDR":             "127.0.0.1:7",
		"SLOTKV_HTTP_ADDR":             "",
		"SLOTKV_TOKEN":                 "tok",
		"SLOTKV_MAX_KEY_BYTES":         "99",
		"SLOTKV_LOG_LEVEL":             "debug",
		"SLOTKV_LISTEN_FILE":           "/tmp/l.json",
		"SLOTKV_HELD_KEYS_BYTES":       "-1",
		"SLOTKV_VALUE_THRESHOLD":       "1048576",
		"SLOTKV_VALUE_LOG_GC_INTERVAL": "-1s",
		"SLOTKV_WRITEBACK_INTERVAL":    "250ms",
	}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	o := c.opts
	if o.NodeID != "flag-id" || o.DataDir != "/srv/data" || o.GRPCAddr != "127.0.0.1:7" || o.HTTPAddr != "127.0.0.1:8100" ||
		o.Tokens != auth.OneToken("tok") || o.MaxKeyBytes != 99 || o.MaxValueBytes != 1000 || c.flags.ListenFile != "/tmp/l.json" || c.flags.LogLevel.String() != "DEBUG" ||
		o.HeldKeysBytes != -1 || o.ValueThreshold != 1<<20 || o.ValueLogGCInterval != -time.Second || o.WritebackInterval != 250*time.Millisecond {
		t.Errorf("parsed %+v (listen %q, level %v)", o, c.flags.ListenFile, c.flags.LogLevel)
	}

	_, err = parse(nil, env(map[string]string{"SLOTKV_MAX_VALUE_BYTES": "lots"}), &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "SLOTKV_MAX_VALUE_BYTES") {
		t.Errorf("bad env value: err = %v, want one naming the variable", err)
	}
	// An open node beyond loopback only with --insecure (or a token).
	if _, err := parse([]string{"--grpc-addr", "0.0.0.0:7100"}, env(nil), &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "--insecure") {
		t.Errorf("open node on 0.0.0.0: err = %v, want one naming --insecure", err)
	}
	if c, err := parse([]string{"--grpc-addr", "0.0.0.0:7100"}, env(map[string]string{"SLOTKV_INSECURE": "1"}), &bytes.Buffer{}); err != nil || !c.opts.Insecure {
		t.Errorf("open node on 0.0.0.0 with SLOTKV_INSECURE: %v (insecure %v)", err, c.opts.Insecure)
	}
	if _, err := parse([]string{"extra"}, env(nil), &bytes.Buffer{}); err == nil {
		t.Error("positional argument accepted")
	}
}

func TestParseEtcd(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantTTL time.Duration
		wantErr string
	}{
		{"default lease", []string{"--etcd-endpoints", "127.0.0.1:2379"}, nil, 10 * time.Second, ""},
		{"lease from the environment", nil, map[string]string{"SLOTKV_ETCD_ENDPOINTS": "127.0.0.1:2379", "SLOTKV_ETCD_LEASE_TTL": "3s"}, 3 * time.Second, ""},
		{"lease below a second", []string{"--etcd-lease-ttl", "500ms"}, nil, 0, "--etcd-lease-ttl"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parse(tt.args, env(tt.env), &bytes.Buffer{})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !c.opts.Etcd.Enabled() || c.opts.Etcd.Endpoints[0] != "127.0.0.1:2379" || c.opts.EtcdLeaseTTL != tt.wantTTL {
				t.Errorf("etcd %v, lease %v; want 127.0.0.1:2379 and %v", c.opts.Etcd.Endpoints, c.opts.EtcdLeaseTTL, tt.wantTTL)
			}
		})
	}
}

// TestRun runs the command in process: it starts on port 0, writes the
// listen file, serves, stops cleanly on cancel, and refuses to reuse the
// data directory under another node id or without its control plane
// (--etcd-endpoints).
func TestRun(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	listen := filepath.Join(dir, "listen.json")
	base := []string{"--node-id", "cmd-node", "--data-dir", filepath.Join(dir, "data"),
		"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--listen-file", listen,
		"--memtable-bytes", "4194304", "--block-cache-bytes", "4194304"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var noEtcd logtest.Buffer
	if code := run(ctx, base, env(nil), &noEtcd); code != 1 || !strings.Contains(noEtcd.String(), "--etcd-endpoints") {
		t.Errorf("start without --etcd-endpoints: exit %d, log:\n%s", code, noEtcd.String())
	}

	args := append(slices.Clone(base), "--etcd-endpoints", etcdtest.Start(t).Endpoint)
	var logs logtest.Buffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, env(nil), &logs) }()

	var addrs struct{ GRPC, HTTP string }
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, err := os.ReadFile(listen); err == nil {
			if err := json.Unmarshal(b, &addrs); err != nil {
				t.Fatal(err)
			}
			break
		}
		select {
		case code := <-done:
			t.Fatalf("exited with %d before listening:\n%s", code, logs.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no listen file:\n%s", logs.String())
		}
	}
	conn, err := dial.New(addrs.GRPC, dial.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	info, err := storagev1.NewNodeServiceClient(conn).GetNodeInfo(ctx, &storagev1.GetNodeInfoRequest{})
	if err != nil || info.GetNode().GetId() != "cmd-node" || info.GetNode().GetGrpcAddress() != addrs.GRPC || info.GetNode().GetHttpAddress() != addrs.HTTP {
		t.Fatalf("GetNodeInfo = %v, %v; want the listen-file addresses", info, err)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit code %d after cancel:\n%s", code, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("did not stop within 30s of cancel")
	}
	// Every log line is JSON.
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if !json.Valid([]byte(line)) {
			t.Errorf("log line is not JSON: %s", line)
		}
	}

	var logs2 logtest.Buffer
	args[1] = "someone-else"
	if code := run(context.Background(), args, env(nil), &logs2); code != 1 || !strings.Contains(logs2.String(), "cmd-node") {
		t.Errorf("restart with another id: exit %d, log:\n%s", code, logs2.String())
	}
}
