package ctl_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/slotkv/slotkv/cmd/slotkvctl/internal/ctl"
	migratorv1 "github.com/slotkv/slotkv/gen/slotkv/migrator/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/proctest"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/testcluster"
)

func TestParseBytes(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]uint64{"0": 0, "1000": 1000, "50MiB": 50 << 20, "10mb": 10e6, "1.5GiB": 3 << 29, "2k": 2000, "7 KiB": 7 << 10} {
		if got, err := ctl.ParseBytes(in); err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "abc", "-1", "MiB"} {
		if _, err := ctl.ParseBytes(in); err == nil {
			t.Errorf("ParseBytes(%q) accepted", in)
		}
	}
}

// TestMigrateCommand runs `slotkvctl migrate` against real storage nodes
// and a real migrator process, then lists the jobs.
func TestMigrateCommand(t *testing.T) {
	t.Parallel()
	c := testcluster.Start(t, 2, testcluster.Options{Token: "tok"})
	c.Bootstrap(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n1 := c.Node(t, "n1")
	rs := slot.MustParseRangeSet("0-100,200-300")
	req := &storagev1.BatchWriteRequest{}
	for i := 0; len(req.Mutations) < 300; i++ {
		k := fmt.Sprintf("cli-%d", i)
		if rs.Contains(slot.OfString(k)) {
			req.Mutations = append(req.Mutations, &storagev1.Mutation{Key: []byte(k), Value: bytes.Repeat([]byte("v"), 1000)})
		}
	}
	if _, err := n1.StorageClient().BatchWrite(ctx, req); err != nil {
		t.Fatal(err)
	}
	mp := proctest.Start(t, proctest.Bin(t, "slotkv-migrator"), "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--data-dir", t.TempDir(), "--etcd-endpoints", c.Etcd().Endpoint, "--token", "tok")

	var stdout, stderr bytes.Buffer
	code := ctl.Main(ctx, []string{"migrate", "--migrator", mp.GRPC, "--token", "tok", "--source", "n1", "--destination", "n2",
		"--ranges", "0-100,200-300", "--parallelism", "2", "--rate", "50MiB", "--batch", "100", "--job-id", "cli-job", "--verify", "full"}, &stdout, &stderr, noEnv)
	if code != 0 {
		t.Fatalf("migrate exit %d\nstderr:\n%s", code, stderr.String())
	}
	out := stderr.String()
	for _, want := range []string{"migration cli-job started", "%", "keys", "MB", "SUCCEEDED: 300 keys", "hand-off after", "cleaned up in"} {
		if !strings.Contains(out, want) {
			t.Errorf("stderr lacks %q:\n%s", want, out)
		}
	}

	// Without a terminal: plain lines, one per update, no bars drawn in
	// place.
	if strings.ContainsAny(out, "\r\x1b") || !strings.Contains(out, "\n[####################] 100% SUCCEEDED") {
		t.Errorf("plain progress: want lines without terminal controls ending at 100%%:\n%q", out)
	}
	// On a terminal: mpb bars, the job's and one per stream (rendered
	// into a buffer here, from the ended job's final state).
	cc, err := dial.New(mp.GRPC, dial.Options{Token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	var tty bytes.Buffer
	final, err := ctl.WatchProgress(ctx, migratorv1.NewMigratorServiceClient(cc), "cli-job", &tty, true)
	if err != nil || final.GetPhase() != migratorv1.Phase_PHASE_SUCCEEDED {
		t.Fatalf("WatchProgress on a terminal: %v, %v", final.GetPhase(), err)
	}
	t.Logf("terminal progress (last frames):\n%s", tail(tty.String(), 8))
	for _, want := range []string{"migration cli-job SUCCEEDED", "stream 0 ", "stream 1 ", "100 %", "keys 300/300"} {
		if !strings.Contains(tty.String(), want) {
			t.Errorf("terminal progress lacks %q:\n%s", want, tty.String())
		}
	}

	// --watch on an ended job prints its final state and exits 0.
	stderr.Reset()
	if code := ctl.Main(ctx, []string{"migrate", "--migrator", mp.GRPC, "--token", "tok", "--watch", "cli-job"}, &stdout, &stderr, noEnv); code != 0 {
		t.Fatalf("migrate --watch exit %d: %s", code, stderr.String())
	}
	// A bad --verify is a usage error.
	stderr.Reset()
	if code := ctl.Main(ctx, []string{"migrate", "--migrator", mp.GRPC, "--token", "tok", "--source", "n1", "--destination", "n2",
		"--ranges", "0-100", "--verify", "twice"}, &stdout, &stderr, noEnv); code != 2 || !strings.Contains(stderr.String(), "--verify") {
		t.Fatalf("migrate --verify twice: exit %d: %s", code, stderr.String())
	}
	// A refused job exits 1 with the reason.
	stderr.Reset()
	if code := ctl.Main(ctx, []string{"migrate", "--migrator", mp.GRPC, "--token", "tok", "--source", "n1", "--destination", "n2",
		"--ranges", "0-100"}, &stdout, &stderr, noEnv); code != 1 || !strings.Contains(stderr.String(), "does not own") {
		t.Fatalf("refused migrate: exit %d: %s", code, stderr.String())
	}

	stdout.Reset()
	if code := ctl.Main(ctx, []string{"migrations", "--migrator", mp.GRPC, "--token", "tok"}, &stdout, &stderr, noEnv); code != 0 {
		t.Fatalf("migrations exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "cli-job") || !strings.Contains(stdout.String(), "SUCCEEDED") {
		t.Errorf("migrations output:\n%s", stdout.String())
	}
}

func noEnv(string) (string, bool) { return "", false }
