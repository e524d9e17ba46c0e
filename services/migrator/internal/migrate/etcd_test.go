package migrate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	migratorv1 "github.com/slotkv/slotkv/gen/slotkv/migrator/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/etcdtest"
	"github.com/slotkv/slotkv/pkg/route"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/testcluster"
)

// crashSim makes a manager behave as a process that died: from crash() on,
// no job record is saved and no new connection to a node opens.
type crashSim struct{ dead atomic.Bool }

func (c *crashSim) crash() { c.dead.Store(true) }

// noFence guards the records of a Manager that is alone on its etcd (no
// election): its writes always apply.
func noFence() (clientv3.Cmp, bool) {
	return clientv3.Compare(clientv3.CreateRevision("slotkv-test/no-such-key"), "=", 0), true
}

// openEtcdManager opens a Manager on the cluster's etcd control plane, as
// the migrator service does with --etcd-endpoints.
func openEtcdManager(t *testing.T, c *testcluster.Cluster, dir string, sim *crashSim, hook func(ctx context.Context, id string)) *Manager {
	t.Helper()
	dialer := func(addr string) (*grpc.ClientConn, error) {
		if sim != nil && sim.dead.Load() {
			return nil, errors.New("crashed")
		}
		return dial.New(addr, dial.Options{Token: c.Token})
	}
	rt, err := route.New(route.Options{Store: c.Store(), Dial: dialer, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Close() })
	m, err := Open(Config{
		Router: rt, Dial: dialer, Topo: c.Store(), Etcd: c.Etcd().Client(t), Fence: noFence,
		RollbackRetryInterval: 100 * time.Millisecond,
		ProgressInterval:      time.Second,
		HandoffTimeout:        30 * time.Second,
		CommitHook:            hook,
		Logger:                slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	if sim != nil {
		m.setPutHook(func(*record) error {
			if sim.dead.Load() {
				return errors.New("crashed")
			}
			return nil
		})
	}
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { _ = m.Close() }) })
	return m
}

// TestEtcdRestartAtCommitPoint: the migrator dies after its local commit
// point and before the etcd transaction. The next start decides from etcd
// and the nodes: it commits (on the stored version, re-planned when a
// disjoint change came in between) while the source still holds the job
// frozen, and rolls back when the nodes no longer hold it.
func TestEtcdRestartAtCommitPoint(t *testing.T) {
	tests := []struct {
		name        string
		concurrent  bool // a disjoint change is committed while the migrator is down
		abortNodes  bool // an operator aborted the job on the nodes meanwhile
		wantPhase   migratorv1.Phase
		wantVersion uint64 // in etcd at the end
	}{
		{"commit on restart", false, false, migratorv1.Phase_PHASE_SUCCEEDED, 2},
		{"re-planned on restart", true, false, migratorv1.Phase_PHASE_SUCCEEDED, 3},
		{"nodes aborted: roll back", false, true, migratorv1.Phase_PHASE_FAILED, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := etcdtest.Start(t)
			c := testcluster.Start(t, 3, testcluster.Options{Token: testToken, Etcd: e})
			c.Bootstrap(t)
			n1, n2 := c.Node(t, "n1"), c.Node(t, "n2")
			moved := slot.MustParseRangeSet("0-99")
			var keys []string
			for i := 0; len(keys) < 200; i++ {
				k := fmt.Sprintf("k%d", i)
				if moved.Contains(slot.OfString(k)) {
					keys = append(keys, k)
				}
			}
			for _, k := range keys {
				if _, err := n1.StorageClient().Put(t.Context(), &storagev1.PutRequest{Key: []byte(k), Value: []byte("v-" + k)}); err != nil {
					t.Fatal(err)
				}
			}
			dir := t.TempDir()
			sim := &crashSim{}
			reached := make(chan struct{})
			var once sync.Once
			m := openEtcdManager(t, c, dir, sim, func(ctx context.Context, _ string) {
				once.Do(func() {
					sim.crash()
					close(reached)
				})
				<-ctx.Done()
			})
			const id = "crash"
			if _, err := m.StartMigration(t.Context(), &migratorv1.StartMigrationRequest{JobId: id, SourceNodeId: "n1", DestinationNodeId: "n2", Ranges: moved.String()}); err != nil {
				t.Fatal(err)
			}
			select {
			case <-reached:
			case <-time.After(60 * time.Second):
				t.Fatalf("the job did not reach its etcd commit: %v", getJob(t, m, id))
			}
			_ = m.Close()

			st := c.Store()
			if tt.concurrent {
				cur, err := st.Load(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				c.SetTopology(t, testcluster.Move(t, cur, 15000, "n1"))
			}
			if tt.abortNodes {
				for _, n := range []*testcluster.Node{n1, n2} {
					if _, err := storagev1.NewMigrationServiceClient(n.Conn).EndMigration(t.Context(), &storagev1.EndMigrationRequest{JobId: id,
						Outcome: storagev1.MigrationOutcome_MIGRATION_OUTCOME_ABORTED}); err != nil {
						t.Fatal(err)
					}
				}
			}
			m2 := openEtcdManager(t, c, dir, nil, nil)
			final := waitEnded(t, m2, id)
			if final.GetPhase() != tt.wantPhase {
				t.Fatalf("job ended %s (%s), want %s", final.GetPhase(), final.GetError(), tt.wantPhase)
			}
			topo, err := st.Load(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if topo.Version() != tt.wantVersion {
				t.Fatalf("etcd holds version %d, want %d", topo.Version(), tt.wantVersion)
			}
			owner := "n1"
			if tt.wantPhase == migratorv1.Phase_PHASE_SUCCEEDED {
				owner = "n2"
			}
			for s := range moved.All() {
				if o, _ := topo.Owner(s); o.ID != owner {
					t.Fatalf("slot %d owned by %s, want %s", s, o.ID, owner)
				}
			}
			serving := c.Node(t, owner)
			deadline := time.Now().Add(30 * time.Second)
			for _, k := range keys {
				for {
					resp, err := serving.StorageClient().Get(t.Context(), &storagev1.GetRequest{Key: []byte(k)})
					if err == nil && string(resp.GetValue()) == "v-"+k {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("Get %s from %s: %v", k, owner, err)
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
			if _, ok, err := st.Handoff(t.Context(), id); err != nil || ok {
				t.Errorf("hand-off record at the end: %v, %v", ok, err)
			}
			checkNodesUntouched(t, c)
		})
	}
}
