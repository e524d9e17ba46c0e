package topostore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/slotkv/slotkv/pkg/etcdtest"
	"github.com/slotkv/slotkv/pkg/faultproxy"
	"github.com/slotkv/slotkv/pkg/logtest"
	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/pkg/topology"
)

// topo is an even topology of version v over n nodes; n tells layouts apart.
func topo(t testing.TB, v uint64, n int) *topology.Topology {
	t.Helper()
	nodes := make([]topology.Node, n)
	for i := range nodes {
		nodes[i] = topology.Node{ID: fmt.Sprintf("n%d", i), GRPCAddress: fmt.Sprintf("127.0.0.1:%d", 7000+i)}
	}
	tp, err := topology.Even(v, nodes)
	if err != nil {
		t.Fatal(err)
	}
	return tp
}

func newStore(t testing.TB, cli *clientv3.Client, prefix string) *Store {
	t.Helper()
	s, err := New(cli, Options{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// next reads one topology from w, failing after a long wait (a hang, not a
// timing assertion).
func next(t testing.TB, w <-chan *topology.Topology) *topology.Topology {
	t.Helper()
	select {
	case tp, ok := <-w:
		if !ok {
			t.Fatal("watch closed early")
		}
		return tp
	case <-time.After(60 * time.Second):
		t.Fatal("no topology from the watch in 60s")
	}
	return nil
}

func TestNewRefusesBadOptions(t *testing.T) {
	t.Parallel()
	if _, err := New(nil, Options{}); !errors.Is(err, rpcerr.ErrInvalidArgument) || !strings.Contains(err.Error(), "client") {
		t.Fatalf("nil client: %v", err)
	}
	// No server is needed to refuse a prefix: the client dials lazily.
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"127.0.0.1:1"}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	for _, p := range []string{"slotkv/", "/slotkv", "x"} {
		if _, err := New(cli, Options{Prefix: p}); !errors.Is(err, rpcerr.ErrInvalidArgument) || !strings.Contains(err.Error(), "prefix") {
			t.Errorf("prefix %q: %v, want an error naming prefix", p, err)
		}
	}
	s, err := New(cli, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if s.TopologyKey() != "/slotkv/topology" || s.Key("jobs/m1") != "/slotkv/jobs/m1" {
		t.Fatalf("default keys %q %q", s.TopologyKey(), s.Key("jobs/m1"))
	}
}

func TestBootstrapTwice(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t)
	s := newStore(t, e.Client(t), "")
	ctx := context.Background()
	if _, err := s.Load(ctx); !errors.Is(err, ErrNotBootstrapped) || !errors.Is(err, rpcerr.ErrNoTopology) {
		t.Fatalf("Load before bootstrap: %v, want ErrNotBootstrapped", err)
	}
	first := topo(t, 1, 3)
	stored, created, err := s.Bootstrap(ctx, first)
	if err != nil || !created || !stored.Equal(first) {
		t.Fatalf("first bootstrap: created %v, err %v", created, err)
	}
	// The second call, with another topology, changes nothing and says so.
	stored, created, err = s.Bootstrap(ctx, topo(t, 7, 2))
	if err != nil {
		t.Fatal(err)
	}
	if created {
		t.Fatal("second bootstrap reports it wrote")
	}
	if !stored.Equal(first) {
		t.Fatalf("second bootstrap returned version %d, want the stored first one", stored.Version())
	}
	got, err := s.Load(ctx)
	if err != nil || !got.Equal(first) {
		t.Fatalf("Load after two bootstraps: %v, err %v", got.Proto(), err)
	}
}

// TestConcurrentBootstrapOneWrites: of racing bootstraps exactly one writes
// and all see its topology.
func TestConcurrentBootstrapOneWrites(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t)
	cli := e.Client(t)
	const n = 6
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		writers []int
		stored  = make([]*topology.Topology, n)
	)
	for i := range n {
		wg.Go(func() {
			s := newStore(t, cli, "")
			got, created, err := s.Bootstrap(context.Background(), topo(t, 1, i+1))
			if err != nil {
				t.Error(err)
				return
			}
			stored[i] = got
			if created {
				mu.Lock()
				writers = append(writers, i)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(writers) != 1 {
		t.Fatalf("%d bootstraps wrote (%v), want exactly 1", len(writers), writers)
	}
	want := topo(t, 1, writers[0]+1)
	for i, got := range stored {
		if got == nil || !got.Equal(want) {
			t.Fatalf("bootstrap %d got another topology than the one written by %d", i, writers[0])
		}
	}
}

func TestCommit(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t)
	cli := e.Client(t)
	for _, tc := range []struct {
		name      string
		bootstrap bool
		expect    uint64
		next      uint64
		extra     func(s *Store) []clientv3.Op
		wantErr   error
		errNames  string // a word the error must contain
	}{
		{name: "right version", bootstrap: true, expect: 1, next: 2,
			extra: func(s *Store) []clientv3.Op { return []clientv3.Op{clientv3.OpPut(s.Key("jobs/m1"), "committed")} }},
		{name: "version jump", bootstrap: true, expect: 1, next: 9},
		{name: "wrong version", bootstrap: true, expect: 4, next: 5,
			extra:   func(s *Store) []clientv3.Op { return []clientv3.Op{clientv3.OpPut(s.Key("jobs/m1"), "committed")} },
			wantErr: ErrStaleVersion, errNames: "stored version 1"},
		{name: "not bootstrapped", expect: 1, next: 2, wantErr: ErrNotBootstrapped},
		{name: "version not above", bootstrap: true, expect: 1, next: 1, wantErr: rpcerr.ErrInvalidArgument, errNames: "topology.version"},
		{name: "extra delete", bootstrap: true, expect: 1, next: 2,
			extra:   func(s *Store) []clientv3.Op { return []clientv3.Op{clientv3.OpDelete(s.Key("jobs/m1"))} },
			wantErr: rpcerr.ErrInvalidArgument, errNames: "extra[0]"},
		{name: "extra outside prefix", bootstrap: true, expect: 1, next: 2,
			extra: func(s *Store) []clientv3.Op {
				return []clientv3.Op{clientv3.OpPut(s.Key("ok"), "1"), clientv3.OpPut("/elsewhere/x", "1")}
			},
			wantErr: rpcerr.ErrInvalidArgument, errNames: "extra[1]"},
		{name: "extra on topology key", bootstrap: true, expect: 1, next: 2,
			extra:   func(s *Store) []clientv3.Op { return []clientv3.Op{clientv3.OpPut(s.TopologyKey(), "x")} },
			wantErr: rpcerr.ErrInvalidArgument, errNames: "topology itself"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// One etcd, a prefix per case: the prefix is what keeps clusters apart.
			s := newStore(t, cli, "/"+strings.ReplaceAll(tc.name, " ", "-")+"/")
			ctx := context.Background()
			first := topo(t, 1, 3)
			if tc.bootstrap {
				if _, _, err := s.Bootstrap(ctx, first); err != nil {
					t.Fatal(err)
				}
			}
			var extra []clientv3.Op
			if tc.extra != nil {
				extra = tc.extra(s)
			}
			nextTopo := topo(t, tc.next, 2)
			err := s.Commit(ctx, tc.expect, nextTopo, extra...)
			if tc.wantErr == nil && err != nil {
				t.Fatalf("Commit: %v", err)
			}
			if tc.wantErr != nil && (!errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.errNames)) {
				t.Fatalf("Commit: %v, want %v naming %q", err, tc.wantErr, tc.errNames)
			}
			// What is stored: the new topology and every extra record, or
			// neither.
			got, lerr := s.Load(ctx)
			switch {
			case !tc.bootstrap:
				if !errors.Is(lerr, ErrNotBootstrapped) {
					t.Fatalf("Load: %v, want ErrNotBootstrapped (a failed commit must not create the topology)", lerr)
				}
			case lerr != nil:
				t.Fatal(lerr)
			case err == nil && !got.Equal(nextTopo):
				t.Fatalf("stored version %d after the commit, want %d", got.Version(), tc.next)
			case err != nil && !got.Equal(first):
				t.Fatalf("stored version %d after a refused commit, want the first", got.Version())
			}
			for _, op := range extra {
				resp, gerr := cli.Get(ctx, string(op.KeyBytes()))
				if gerr != nil {
					t.Fatal(gerr)
				}
				written := len(resp.Kvs) == 1 && bytes.Equal(resp.Kvs[0].Value, op.ValueBytes())
				if written != (err == nil) {
					t.Fatalf("extra record %s written=%v with commit error %v", op.KeyBytes(), written, err)
				}
			}
		})
	}
}

// countingKV counts the requests a store makes to etcd.
type countingKV struct {
	clientv3.KV
	gets, txns atomic.Int64
}

func (k *countingKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	k.gets.Add(1)
	return k.KV.Get(ctx, key, opts...)
}

func (k *countingKV) Txn(ctx context.Context) clientv3.Txn {
	k.txns.Add(1)
	return k.KV.Txn(ctx)
}

// TestCommitOnSeenRevision: a commit on the version the store last saw
// compares that version's revision without reading the key first (one
// request to etcd), and still refuses what changed since, through another
// store: a newer version, or the same version stored again (which a read
// then compares, and commits on).
func TestCommitOnSeenRevision(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t)
	other := e.Client(t)
	for _, tc := range []struct {
		name string
		// meanwhile changes the stored topology through another store.
		meanwhile func(t *testing.T, s *Store)
		fence     func(s *Store) []clientv3.Cmp
		wantErr   error
		errNames  string
		gets      int64 // reads of the topology key the commit makes
	}{
		{name: "unchanged", gets: 0},
		{name: "another commit came first", wantErr: ErrStaleVersion, errNames: "stored version 2",
			meanwhile: func(t *testing.T, s *Store) {
				if err := s.Commit(context.Background(), 1, topo(t, 2, 5)); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "stored again at the same version", gets: 1,
			meanwhile: func(t *testing.T, s *Store) {
				b, err := encode(topo(t, 1, 4))
				if err != nil {
					t.Fatal(err)
				}
				if _, err := other.Put(context.Background(), s.TopologyKey(), string(b)); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "fence fails", wantErr: ErrFenced, errNames: "version 1 unchanged",
			fence: func(s *Store) []clientv3.Cmp {
				return []clientv3.Cmp{clientv3.Compare(clientv3.Value(s.Key("leader")), "=", "me")}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cli := e.Client(t)
			kv := &countingKV{KV: cli.KV}
			cli.KV = kv
			prefix := "/" + strings.ReplaceAll(tc.name, " ", "-") + "/"
			s := newStore(t, cli, prefix)
			ctx := context.Background()
			if _, _, err := s.Bootstrap(ctx, topo(t, 1, 3)); err != nil {
				t.Fatal(err)
			}
			if tc.meanwhile != nil {
				tc.meanwhile(t, newStore(t, other, prefix))
			}
			var fence []clientv3.Cmp
			if tc.fence != nil {
				fence = tc.fence(s)
			}
			gets := kv.gets.Load()
			want := topo(t, 2, 2)
			err := s.CommitIf(ctx, fence, 1, want, clientv3.OpPut(s.Key("jobs/m1"), "committed"))
			if tc.wantErr == nil && err != nil {
				t.Fatalf("CommitIf: %v", err)
			}
			if tc.wantErr != nil && (!errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.errNames)) {
				t.Fatalf("CommitIf: %v, want %v naming %q", err, tc.wantErr, tc.errNames)
			}
			if n := kv.gets.Load() - gets; tc.wantErr == nil && n != tc.gets {
				t.Errorf("the commit read the topology %d times, want %d", n, tc.gets)
			}
			got, err := s.Load(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if committed := got.Equal(want); committed != (tc.wantErr == nil) {
				t.Fatalf("stored version %d (the commit's: %v) after CommitIf returned %v", got.Version(), committed, err)
			}
			resp, err := other.Get(ctx, s.Key("jobs/m1"))
			if err != nil {
				t.Fatal(err)
			}
			if written := len(resp.Kvs) == 1; written != (tc.wantErr == nil) {
				t.Fatalf("job record written=%v after CommitIf returned %v", written, err)
			}
		})
	}
}

// TestConcurrentCommitsOneWins: commits racing from the same version; one
// wins, the others get ErrStaleVersion and leave no record behind.
func TestConcurrentCommitsOneWins(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t)
	cli := e.Client(t)
	s := newStore(t, cli, "")
	ctx := context.Background()
	if _, _, err := s.Bootstrap(ctx, topo(t, 1, 1)); err != nil {
		t.Fatal(err)
	}
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = s.Commit(ctx, 1, topo(t, 2, i+2), clientv3.OpPut(s.Key(fmt.Sprintf("jobs/j%d", i)), "committed"))
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("commits %d and %d both won", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, ErrStaleVersion):
			t.Fatalf("commit %d: %v, want ErrStaleVersion", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no commit won")
	}
	got, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(topo(t, 2, winner+2)) {
		t.Fatalf("stored topology is not the winner's (%d)", winner)
	}
	resp, err := cli.Get(ctx, s.Key("jobs/"), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Key) != s.Key(fmt.Sprintf("jobs/j%d", winner)) {
		t.Fatalf("job records %v, want only the winner's j%d", resp.Kvs, winner)
	}
}

// TestWatchDeliversEveryVersionInOrder: a watch started before the
// bootstrap sees it and every commit; one started later begins at the
// current version.
func TestWatchDeliversEveryVersionInOrder(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t)
	cli := e.Client(t)
	s := newStore(t, cli, "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	early := s.Watch(ctx)
	if _, _, err := s.Bootstrap(ctx, topo(t, 1, 2)); err != nil {
		t.Fatal(err)
	}
	const last = 20
	var late <-chan *topology.Topology
	for v := uint64(2); v <= last; v++ {
		if err := s.Commit(ctx, v-1, topo(t, v, int(v%5)+1)); err != nil {
			t.Fatal(err)
		}
		if v == 10 {
			late = s.Watch(ctx)
		}
	}
	for v := uint64(1); v <= last; v++ {
		got := next(t, early)
		if !got.Equal(topo(t, v, int(v%5)+1)) {
			t.Fatalf("early watch delivered version %d, want %d", got.Version(), v)
		}
	}
	// The late watch starts at whatever is current when it reads (10 or
	// later) and then goes up by one each time.
	v := next(t, late).Version()
	if v < 10 {
		t.Fatalf("late watch began at version %d, before the current 10", v)
	}
	for v < last {
		got := next(t, late)
		if got.Version() != v+1 {
			t.Fatalf("late watch delivered %d after %d", got.Version(), v)
		}
		v = got.Version()
	}
}

// TestWatchSurvivesEtcdRestart: etcd stopped under a watcher (commits fail
// meanwhile, naming etcd) and started again on the same data and ports; the
// watcher catches up with the commits made after, in order.
func TestWatchSurvivesEtcdRestart(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t)
	s := newStore(t, e.Client(t), "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, _, err := s.Bootstrap(ctx, topo(t, 1, 1)); err != nil {
		t.Fatal(err)
	}
	w := s.Watch(ctx)
	if v := next(t, w).Version(); v != 1 {
		t.Fatalf("first version %d", v)
	}
	for _, stop := range []struct {
		name string
		do   func() error
	}{
		{"sigterm", e.Stop},
		{"sigkill", func() error { e.Kill(); return nil }},
	} {
		if err := stop.do(); err != nil {
			t.Fatalf("%s: %v", stop.name, err)
		}
		// The client waits for etcd until the context ends: bound it.
		short, cancelShort := context.WithTimeout(ctx, 500*time.Millisecond)
		_, lerr := s.Load(short)
		cerr := s.Commit(short, 1, topo(t, 99, 2))
		cancelShort()
		for op, err := range map[string]error{"Load": lerr, "Commit": cerr} {
			if err == nil || !strings.Contains(err.Error(), "etcd") {
				t.Fatalf("%s: %s with etcd stopped: %v, want an error naming etcd", stop.name, op, err)
			}
		}
		e.Restart()
		cur, err := s.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for v := cur.Version() + 1; v <= cur.Version()+3; v++ {
			if err := s.Commit(ctx, v-1, topo(t, v, int(v%4)+1)); err != nil {
				t.Fatalf("%s: commit %d after restart: %v", stop.name, v, err)
			}
		}
		for v := cur.Version() + 1; v <= cur.Version()+3; v++ {
			if got := next(t, w); !got.Equal(topo(t, v, int(v%4)+1)) {
				t.Fatalf("%s: watch delivered %d after the restart, want %d", stop.name, got.Version(), v)
			}
		}
	}
}

// TestWatchResumesAfterCompaction: the watcher's connection is cut and held
// while versions are committed and etcd compacts past them; its watch then
// resumes at a compacted revision, so it reads the topology afresh and
// carries on from the latest version.
func TestWatchResumesAfterCompaction(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t)
	direct := newStore(t, e.Client(t), "")
	proxy, err := faultproxy.New(strings.TrimPrefix(e.Endpoint, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	wcli, err := clientv3.New(clientv3.Config{Endpoints: []string{proxy.Addr()}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { wcli.Close() })
	var logs logtest.Buffer
	watched, err := New(wcli, Options{Log: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, _, err := direct.Bootstrap(ctx, topo(t, 1, 1)); err != nil {
		t.Fatal(err)
	}
	w := watched.Watch(ctx)
	if v := next(t, w).Version(); v != 1 {
		t.Fatalf("first version %d", v)
	}
	proxy.Stall()
	proxy.Cut()
	for v := uint64(2); v <= 4; v++ {
		if err := direct.Commit(ctx, v-1, topo(t, v, int(v))); err != nil {
			t.Fatal(err)
		}
	}
	admin := e.Client(t)
	resp, err := admin.Get(ctx, direct.TopologyKey())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	proxy.Resume()
	if got := next(t, w); !got.Equal(topo(t, 4, 4)) {
		t.Fatalf("after the compaction the watch delivered %d, want the latest, 4", got.Version())
	}
	if !regexp.MustCompile(`compact_revision=[1-9]`).MatchString(logs.String()) {
		t.Fatalf("the watch did not resume through a compaction; log:\n%s", logs.String())
	}
	if err := direct.Commit(ctx, 4, topo(t, 5, 5)); err != nil {
		t.Fatal(err)
	}
	if got := next(t, w); !got.Equal(topo(t, 5, 5)) {
		t.Fatalf("after resuming the watch delivered %d, want 5", got.Version())
	}
}

// TestWatchCancellation: the channel closes once ctx is done, whatever the
// watcher is doing.
func TestWatchCancellation(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t)
	cli := e.Client(t)
	for _, tc := range []struct {
		name string
		// setup runs while the watch is running, before the cancel.
		setup func(t *testing.T, s *Store)
	}{
		{"waiting for a bootstrap", func(*testing.T, *Store) {}},
		{"idle after a version", func(t *testing.T, s *Store) {
			if _, _, err := s.Bootstrap(context.Background(), topo(t, 1, 1)); err != nil {
				t.Fatal(err)
			}
		}},
		{"blocked delivering to a reader that stopped", func(t *testing.T, s *Store) {
			if _, _, err := s.Bootstrap(context.Background(), topo(t, 1, 1)); err != nil {
				t.Fatal(err)
			}
			for v := uint64(2); v <= 5; v++ {
				if err := s.Commit(context.Background(), v-1, topo(t, v, 1)); err != nil {
					t.Fatal(err)
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newStore(t, cli, "/"+strings.ReplaceAll(tc.name, " ", "-")+"/")
			ctx, cancel := context.WithCancel(context.Background())
			w := s.Watch(ctx)
			tc.setup(t, s)
			cancel()
			closed := time.After(60 * time.Second)
			for {
				select {
				case _, ok := <-w:
					if !ok {
						return
					}
					// Versions already on their way may still come once.
				case <-closed:
					t.Fatal("watch channel still open 60s after cancel")
				}
			}
		})
	}
}

// TestWatchCancelWhileEtcdDown: a watcher retrying against a stopped etcd
// still ends on cancel.
func TestWatchCancelWhileEtcdDown(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t)
	s := newStore(t, e.Client(t), "")
	ctx, cancel := context.WithCancel(context.Background())
	if _, _, err := s.Bootstrap(ctx, topo(t, 1, 1)); err != nil {
		t.Fatal(err)
	}
	w := s.Watch(ctx)
	next(t, w)
	e.Kill()
	cancel()
	select {
	case _, ok := <-w:
		if ok {
			t.Fatal("a version came after cancel with etcd down")
		}
	case <-time.After(60 * time.Second):
		t.Fatal("watch channel still open 60s after cancel")
	}
}
