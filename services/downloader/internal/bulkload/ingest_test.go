package bulkload

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/dataset"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/etcdtest"
	"github.com/slotkv/slotkv/pkg/grpctest"
	"github.com/slotkv/slotkv/pkg/route"
	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/topology"
	"github.com/slotkv/slotkv/pkg/topostore"
)

// fakeNode is a storage node over real gRPC on 127.0.0.1 that can be
// stopped and started again on the same address. It takes Ingest batches
// as a node holding topo would (the router reads the topology from a real
// etcd, see topoStore; GetTopology only tells that the node answers): a batch with a key of a slot it does not own ends the stream with
// SLOT_MOVED, others are stored and acknowledged.
type fakeNode struct {
	storagev1.UnimplementedNodeServiceServer
	*grpctest.Server // stop and restart on the same address
	t                *testing.T
	id               string
	topo             atomic.Pointer[topology.Topology]
	// before, when set, runs at each batch, before the batch is checked
	// against the topology held (it may change it).
	before atomic.Pointer[func()]

	mu   sync.Mutex
	keys map[string]string
}

func startFake(t *testing.T, id string) *fakeNode {
	t.Helper()
	n := &fakeNode{t: t, id: id, keys: map[string]string{}}
	n.Server = grpctest.Start(t, func(srv *grpc.Server) { storagev1.RegisterNodeServiceServer(srv, n) })
	return n
}

func (n *fakeNode) node() topology.Node { return topology.Node{ID: n.id, GRPCAddress: n.Addr()} }

func (n *fakeNode) stored() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.keys)
}

func (n *fakeNode) GetTopology(context.Context, *storagev1.GetTopologyRequest) (*storagev1.GetTopologyResponse, error) {
	return &storagev1.GetTopologyResponse{Topology: n.topo.Load().Proto()}, nil
}

func (n *fakeNode) Ingest(stream grpc.BidiStreamingServer[storagev1.IngestRequest, storagev1.IngestResponse]) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if f := n.before.Load(); f != nil {
			(*f)()
		}
		t := n.topo.Load()
		for _, r := range req.GetRecords() {
			s := slot.Of(r.GetKey())
			if o, _ := t.Owner(s); o.ID != n.id {
				return rpcerr.ToStatus(&rpcerr.SlotMovedError{Slot: s, OwnerID: o.ID, OwnerAddress: o.GRPCAddress, Version: t.Version()})
			}
		}
		var size uint64
		n.mu.Lock()
		for _, r := range req.GetRecords() {
			n.keys[string(r.GetKey())] = string(r.GetValue())
			size += uint64(len(r.GetKey()) + len(r.GetValue()))
		}
		n.mu.Unlock()
		if err := stream.Send(&storagev1.IngestResponse{Batch: req.GetBatch(), Records: uint64(len(req.GetRecords())), Bytes: size}); err != nil {
			return err
		}
	}
}

// writeDataset writes a dataset of n records in one file under a new
// directory and returns its manifest's file:// URL.
func writeDataset(t *testing.T, n int) string {
	t.Helper()
	type rec struct{ key, value string }
	recs := make([]rec, n)
	for i := range recs {
		recs[i] = rec{fmt.Sprintf("key-%05d", i), fmt.Sprintf("value-%d", i)}
	}
	slices.SortFunc(recs, func(a, b rec) int {
		return cmp.Or(cmp.Compare(slot.OfString(a.key), slot.OfString(b.key)), strings.Compare(a.key, b.key))
	})
	var buf bytes.Buffer
	w := dataset.NewWriter(&buf, dataset.WriterOptions{BlockSize: 4 << 10})
	for _, r := range recs {
		if err := w.Write(dataset.Record{Slot: slot.OfString(r.key), Key: []byte(r.key), Value: []byte(r.value)}); err != nil {
			t.Fatal(err)
		}
	}
	info, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	const name = "part-00000.skv"
	if err := os.WriteFile(filepath.Join(dir, name), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	m := &dataset.Manifest{FormatVersion: dataset.FormatVersion, SlotCount: slot.Count, Records: uint64(n), Files: []dataset.File{info.File(name)}}
	if err := m.Validate(dataset.Limits{}); err != nil {
		t.Fatal(err)
	}
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, dataset.ManifestName), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return "file://" + filepath.Join(dir, dataset.ManifestName)
}

func testManager(t *testing.T, r *route.Router, nodeRetryTimeout time.Duration) *Manager {
	t.Helper()
	m, err := Open(Config{
		DataDir:            t.TempDir(),
		Router:             r,
		AllowFileURLs:      true,
		AllowedPrefixes:    []string{"file:///"},
		IngestBatchRecords: 50,
		NodeRetryTimeout:   nodeRetryTimeout,
		NodeRetryMin:       5 * time.Millisecond,
		NodeRetryMax:       20 * time.Millisecond,
		ProgressInterval:   time.Second,
		Logger:             slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// topoStore returns a topology store on a fresh real etcd holding topo.
func topoStore(t *testing.T, topo *topology.Topology) *topostore.Store {
	t.Helper()
	st, err := topostore.New(etcdtest.Start(t).Client(t), topostore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, created, err := st.Bootstrap(t.Context(), topo); err != nil || !created {
		t.Fatalf("bootstrap v%d in etcd: created %v, %v", topo.Version(), created, err)
	}
	return st
}

// testRouter returns a Router on st holding its topology, not watching:
// it reads etcd again on SLOT_MOVED.
func testRouter(t *testing.T, st *topostore.Store, dialer route.DialFunc) *route.Router {
	t.Helper()
	r, err := route.New(route.Options{Store: st, Dial: dialer, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	if _, err := r.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	return r
}

func waitEnded(t *testing.T, m *Manager, id string) *JobStatus {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		st, err := m.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		if st.State.Ended() {
			return st
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
	t.Fatalf("job %s did not end within 30s", id)
	return nil
}

// TestResumeAfterNodeRestart: a storage node down longer than
// NodeRetryTimeout fails the job; it comes back on the same address with
// the connection's connect backoff grown long (30s here, as after a long
// outage), and the resumed job succeeds within the same NodeRetryTimeout
// that failed it: the first failed attempt resets the connection's
// backoff (pkg/dial), so the retry after NodeRetryMin connects. Without
// the reset (a bare connection with the same backoff) the resumed job
// fails again with the stale "connection refused".
func TestResumeAfterNodeRestart(t *testing.T) {
	t.Parallel()
	longBackoff := grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 30 * time.Second, Multiplier: 1, MaxDelay: 30 * time.Second},
		MinConnectTimeout: 20 * time.Second,
	})
	tests := []struct {
		name   string
		dialer route.DialFunc
		want   State
	}{
		{"pkg/dial", func(addr string) (*grpc.ClientConn, error) {
			return dial.New(addr, dial.Options{DialOptions: []grpc.DialOption{longBackoff}})
		}, StateSucceeded},
		{"without the reset", func(addr string) (*grpc.ClientConn, error) {
			return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), longBackoff)
		}, StateFailed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n := startFake(t, "n1")
			topo, err := topology.Even(1, []topology.Node{n.node()})
			if err != nil {
				t.Fatal(err)
			}
			n.topo.Store(topo)
			r := testRouter(t, topoStore(t, topo), tc.dialer)
			m := testManager(t, r, time.Second)
			u := writeDataset(t, 300)

			n.Stop()
			if _, err := m.Start(t.Context(), u, "down"); err != nil {
				t.Fatal(err)
			}
			if st := waitEnded(t, m, "down"); st.State != StateFailed || !strings.Contains(st.Error, "unavailable") {
				t.Fatalf("job with its node down: %s %q, want FAILED naming the unavailable node", st.State, st.Error)
			}
			n.Restart()
			if _, err := m.Resume(t.Context(), "down"); err != nil {
				t.Fatal(err)
			}
			st := waitEnded(t, m, "down")
			if st.State != tc.want {
				t.Fatalf("resumed job: %s %q, want %s", st.State, st.Error, tc.want)
			}
			if tc.want == StateSucceeded && n.stored() != 300 {
				t.Fatalf("node holds %d records, want 300", n.stored())
			}
		})
	}
}

// TestIngestMovedUntilTheOwnerLearns: the records' slots moved from n1 to
// n2; n1 was told, n2 not yet, and answers SLOT_MOVED (naming n1, an older
// version) for a while. The ingest backs off and asks n2 again, more times
// than the 20 SLOT_MOVED rounds it used to give up after, and succeeds
// once n2 learns the topology.
func TestIngestMovedUntilTheOwnerLearns(t *testing.T) {
	t.Parallel()
	n1, n2 := startFake(t, "n1"), startFake(t, "n2")
	nodes := []topology.Node{n1.node(), n2.node()}
	all := slot.Range{Start: 0, End: slot.MaxSlot}
	v1, err := topology.New(1, nodes, map[string][]slot.Range{"n1": {all}})
	if err != nil {
		t.Fatal(err)
	}
	v2, err := topology.New(2, nodes, map[string][]slot.Range{"n2": {all}})
	if err != nil {
		t.Fatal(err)
	}
	n1.topo.Store(v1)
	n2.topo.Store(v1)
	st := topoStore(t, v1)
	r := testRouter(t, st, func(addr string) (*grpc.ClientConn, error) { return dial.New(addr, dial.Options{}) })
	m := testManager(t, r, 10*time.Second)
	const behind = 30 // batches n2 receives on v1; it is told at the last
	var onV1 atomic.Int64
	learn := func() {
		if n2.topo.Load().Version() == 1 && onV1.Add(1) == behind {
			n2.topo.Store(v2) // the migrator reaches n2
		}
	}
	n2.before.Store(&learn)
	// The commit: v2 in etcd, and the source installs it before n2 does.
	if err := st.Commit(t.Context(), 1, v2); err != nil {
		t.Fatalf("commit v2: %v", err)
	}
	n1.topo.Store(v2)

	if _, err := m.Start(t.Context(), writeDataset(t, 300), "moved"); err != nil {
		t.Fatal(err)
	}
	if st := waitEnded(t, m, "moved"); st.State != StateSucceeded {
		t.Fatalf("job: %s %q, want SUCCEEDED", st.State, st.Error)
	}
	if n2.stored() != 300 || n1.stored() != 0 {
		t.Fatalf("n1 holds %d records and n2 %d, want 0 and 300", n1.stored(), n2.stored())
	}
	if got := onV1.Load(); got != behind {
		t.Fatalf("n2 got %d batches before it learned the topology, want %d", got, behind)
	}
}

// TestResumeTakesAWholeUnrecordedDownload (issue 12): a file whose whole,
// correct download is on disk under its final name but whose verification
// was not saved (a crash between the rename and the save) is re-hashed on
// resume and ingested without being fetched again.
func TestResumeTakesAWholeUnrecordedDownload(t *testing.T) {
	t.Parallel()
	n := startFake(t, "n1")
	topo, err := topology.Even(1, []topology.Node{n.node()})
	if err != nil {
		t.Fatal(err)
	}
	n.topo.Store(topo)
	r := testRouter(t, topoStore(t, topo), func(addr string) (*grpc.ClientConn, error) { return dial.New(addr, dial.Options{}) })
	m := testManager(t, r, time.Second)
	n.Stop() // the ingest fails; the download is kept
	if _, err := m.Start(t.Context(), writeDataset(t, 300), "unrecorded"); err != nil {
		t.Fatal(err)
	}
	if st := waitEnded(t, m, "unrecorded"); st.State != StateFailed || st.Files[0].Attempts != 1 {
		t.Fatalf("job with its node down: %s %q, attempts %d", st.State, st.Error, st.Files[0].Attempts)
	}
	j, _ := m.job("unrecorded")
	j.mu.Lock()
	j.rec.Files[0].Verified = false // as if the process died before saving it
	j.saveLocked()
	j.mu.Unlock()
	n.Restart()
	// Reachable again through the manager's own connection before the
	// resume (not a condition of the test: its retry window is short).
	cc, err := r.Conn(n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		_, err := storagev1.NewNodeServiceClient(cc).GetTopology(ctx, &storagev1.GetTopologyRequest{})
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node not reachable after its restart: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
	if _, err := m.Resume(t.Context(), "unrecorded"); err != nil {
		t.Fatal(err)
	}
	st := waitEnded(t, m, "unrecorded")
	if st.State != StateSucceeded || n.stored() != 300 {
		t.Fatalf("resumed job: %s %q, node holds %d", st.State, st.Error, n.stored())
	}
	if a := st.Files[0].Attempts; a != 1 {
		t.Errorf("the file was read from its source %d times, want 1 (the whole copy on disk is re-hashed and kept)", a)
	}
}
