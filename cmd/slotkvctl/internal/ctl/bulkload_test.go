package ctl_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/slotkv/slotkv/cmd/slotkvctl/internal/ctl"
	downloaderv1 "github.com/slotkv/slotkv/gen/slotkv/downloader/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/proctest"
	"github.com/slotkv/slotkv/pkg/testcluster"
)

// buildDataset writes a dataset of n records of about 100 bytes with the
// real slotkv-dataset tool, in files of about fileSize, and returns its
// directory.
func buildDataset(t *testing.T, n int, fileSize string) string {
	t.Helper()
	work := t.TempDir()
	input, dir := filepath.Join(work, "input.jsonl"), filepath.Join(work, "dataset")
	bin := proctest.Bin(t, "slotkv-dataset")
	for _, args := range [][]string{
		{"gen", "--records", strconv.Itoa(n), "--value-size", "100", "--out", input},
		{"build", "--input", input, "--out", dir, "--target-file-size", fileSize},
	} {
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("slotkv-dataset %s: %v\n%s", args[0], err, out)
		}
	}
	return dir
}

// TestBulkLoadCommands runs every `slotkvctl bulkload` command against a
// real downloader process loading real datasets into real storage nodes.
// The downloader's bandwidth is capped so a job runs long enough to be
// paused and canceled.
func TestBulkLoadCommands(t *testing.T) {
	t.Parallel()
	c := testcluster.Start(t, 2, testcluster.Options{Token: "tok"})
	c.Bootstrap(t)
	dir := buildDataset(t, 2000, "64KiB")
	manifest := "file://" + filepath.Join(dir, "manifest.json")
	dl := proctest.Start(t, proctest.Bin(t, "slotkv-downloader"), "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--data-dir", t.TempDir(), "--etcd-endpoints", c.Etcd().Endpoint, "--token", "tok",
		"--allow-file-urls", "--allowed-prefixes", "file://"+dir+"/", "--bandwidth", "100000")
	lookup := env("SLOTKV_DOWNLOADER", dl.GRPC, "SLOTKV_TOKEN", "tok")

	// start --watch: plain progress (no terminal here), a line per file
	// that ends, exit 0, every record in the cluster.
	code, out, errOut := run(t, lookup, "bulkload", "start", "--manifest", manifest, "--job-id", "bl-1", "--watch")
	if code != 0 {
		t.Fatalf("bulkload start --watch: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	for _, want := range []string{"bulk load bl-1 started: ", "%", "DOWNLOADING", "file ", "SUCCEEDED: ", "2000/2000 keys ingested"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("start --watch stderr lacks %q:\n%s", want, errOut)
		}
	}
	t.Logf("start --watch, stderr:\n%s", errOut)
	if strings.ContainsAny(errOut, "\r\x1b") {
		t.Errorf("plain progress has terminal controls:\n%q", errOut)
	}
	if got := clusterKeys(t, c); got != 2000 {
		t.Errorf("cluster holds %d keys after the load, want 2000", got)
	}

	// On a terminal: a bar for the job and one per file (rendered into a
	// buffer here, from the ended job's final state).
	cc, err := dial.New(dl.GRPC, dial.Options{Token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	var tty bytes.Buffer
	final, err := ctl.WatchBulkLoad(context.Background(), downloaderv1.NewBulkLoadServiceClient(cc), "bl-1", &tty, true)
	if err != nil || final.GetState() != downloaderv1.State_STATE_SUCCEEDED {
		t.Fatalf("WatchBulkLoad on a terminal: %v, %v", final.GetState(), err)
	}
	t.Logf("terminal progress (last frames):\n%s", tail(tty.String(), 8))
	for _, want := range []string{"bulk load bl-1 SUCCEEDED", "part-00000.skv SUCCEEDED", "100 %", "files 4/4  0.2/0.2 MB  2000/2000 keys"} {
		if !strings.Contains(tty.String(), want) {
			t.Errorf("terminal progress lacks %q:\n%s", want, tty.String())
		}
	}

	// watch of an ended job: its final state, exit 0; the job first or last.
	for _, args := range [][]string{{"bulkload", "watch", "bl-1"}, {"bulkload", "watch", "--downloader", dl.GRPC, "bl-1"}} {
		if code, out, errOut := run(t, lookup, args...); code != 0 || !strings.Contains(errOut, "bl-1 SUCCEEDED") {
			t.Errorf("%v: exit %d\n%s%s", args, code, out, errOut)
		}
	}

	// start, pause, list, resume, watch to the end.
	code, out, errOut = run(t, lookup, "bulkload", "start", "--manifest", manifest, "--job-id", "bl-2")
	if code != 0 || !strings.Contains(out, "bulk load bl-2 started: "+manifest) {
		t.Fatalf("bulkload start: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut = run(t, lookup, "bulkload", "pause", "bl-2"); code != 0 || !strings.Contains(out, "bulk load bl-2 PAUSED") {
		t.Fatalf("bulkload pause: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = run(t, lookup, "bulkload", "list")
	if code != 0 || !lineWith(out, "bl-2", "PAUSED") || !lineWith(out, "bl-1", "SUCCEEDED") {
		t.Fatalf("bulkload list: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut = run(t, lookup, "bulkload", "resume", "bl-2"); code != 0 || strings.Contains(out, "PAUSED") {
		t.Fatalf("bulkload resume: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut = run(t, lookup, "bulkload", "watch", "bl-2", "--json"); code != 0 {
		t.Fatalf("bulkload watch after resume: exit %d\n%s%s", code, out, errOut)
	}
	var finalJSON struct {
		ID    string `json:"id"`
		State string `json:"state"`
	}
	if err := json.Unmarshal([]byte(out), &finalJSON); err != nil || finalJSON.ID != "bl-2" || finalJSON.State != "STATE_SUCCEEDED" {
		t.Errorf("watch --json printed %+v (%v):\n%s", finalJSON, err, out)
	}

	// start, cancel; watching a canceled job exits 1 with its state.
	if code, out, errOut = run(t, lookup, "bulkload", "start", "--manifest", manifest, "--job-id", "bl-3"); code != 0 {
		t.Fatalf("bulkload start bl-3: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut = run(t, lookup, "bulkload", "cancel", "bl-3"); code != 0 || !strings.Contains(out, "bulk load bl-3 CANCELED") {
		t.Fatalf("bulkload cancel: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut = run(t, lookup, "bulkload", "watch", "bl-3"); code != 1 || !strings.Contains(errOut, "bulk load bl-3 CANCELED") {
		t.Errorf("watch of a canceled job: exit %d\n%s", code, errOut)
	}

	// list --json lists the three jobs.
	code, out, _ = run(t, lookup, "bulkload", "list", "--json")
	var list struct {
		Jobs []struct {
			ID string `json:"id"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal([]byte(out), &list); code != 0 || err != nil || len(list.Jobs) != 3 {
		t.Errorf("list --json: exit %d, %v, %d jobs:\n%s", code, err, len(list.Jobs), out)
	}

	// Errors: usage (exit 2, naming what is missing) and refusals by the
	// service (exit 1, with its reason).
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"bulkload"}, 2, "Usage"},
		{[]string{"bulkload", "frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"bulkload", "start"}, 2, "--manifest is required"},
		{[]string{"bulkload", "pause"}, 2, "job id is required"},
		{[]string{"bulkload", "watch", "a", "b"}, 2, "unexpected arguments"},
		{[]string{"bulkload", "pause", "no-such-job"}, 1, "NotFound"},
		{[]string{"bulkload", "start", "--manifest", manifest, "--job-id", "bl-1"}, 1, "bl-1"},
		{[]string{"bulkload", "start", "--manifest", "file:///etc/passwd"}, 1, "InvalidArgument"},
	} {
		code, _, errOut := run(t, lookup, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d (want %d), stderr lacks %q:\n%s", tc.args, code, tc.code, tc.want, errOut)
		}
	}
	if code, _, errOut := run(t, env(), "bulkload", "list"); code != 2 || !strings.Contains(errOut, "--downloader") {
		t.Errorf("list without --downloader: exit %d %s", code, errOut)
	}
}

// lineWith reports whether one line of out holds every word.
func lineWith(out string, words ...string) bool {
next:
	for line := range strings.Lines(out) {
		for _, w := range words {
			if !strings.Contains(line, w) {
				continue next
			}
		}
		return true
	}
	return false
}

// clusterKeys sums the nodes' key counts.
func clusterKeys(t *testing.T, c *testcluster.Cluster) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var n uint64
	for _, nd := range c.Nodes {
		info, err := nd.NodeClient().GetNodeInfo(ctx, &storagev1.GetNodeInfoRequest{})
		if err != nil {
			t.Fatal(err)
		}
		n += info.GetKeyCount()
	}
	return n
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
