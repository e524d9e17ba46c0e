package jobstore

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/slotkv/slotkv/pkg/etcdtest"
	"github.com/slotkv/slotkv/pkg/leader"
)

// TestEtcdPutLoad: records round-trip in id order; a second store on the
// same prefix (another replica) reads what the first wrote.
func TestEtcdPutLoad(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t)
	s, err := OpenEtcd[rec](e.Client(t), "/slotkv/jobs/test/", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []rec{{"b", "running"}, {"a", "done"}, {"b", "failed"}} {
		if err := s.Put(r.ID, &r); err != nil {
			t.Fatal(err)
		}
	}
	other, err := OpenEtcd[rec](e.Client(t), "/slotkv/jobs/test/", nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := other.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || *got[0] != (rec{"a", "done"}) || *got[1] != (rec{"b", "failed"}) {
		t.Fatalf("Load = %v", got)
	}
	r, ok, err := other.Get(context.Background(), "b")
	if err != nil || !ok || r.State != "failed" {
		t.Fatalf("Get(b) = %v, %v, %v", r, ok, err)
	}
	if _, ok, err := other.Get(context.Background(), "zz"); err != nil || ok {
		t.Fatalf("Get(zz) = %v, %v; want absent", ok, err)
	}
	// A record that does not decode names its key.
	if _, err := e.Client(t).Put(context.Background(), "/slotkv/jobs/test/c", "{"); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Load(); err == nil {
		t.Fatal("Load decoded a broken record")
	}
	if _, err := OpenEtcd[rec](e.Client(t), "no-slash", nil); err == nil {
		t.Fatal("a prefix without slashes was accepted")
	}
}

// TestEtcdFence: writes land only while the writer's term lasts. A
// replica that is not leader, or whose term ended under it, gets
// ErrNotLeader and leaves the stored record as the new leader wrote it.
func TestEtcdFence(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t)
	cli := e.Client(t)
	type replica struct {
		term atomic.Pointer[leader.Term]
		st   *Etcd[rec]
	}
	newReplica := func(value string) (*replica, context.CancelFunc, chan struct{}) {
		r := &replica{}
		st, err := OpenEtcd[rec](cli, "/slotkv/jobs/m/", func() (clientv3.Cmp, bool) {
			tm := r.term.Load()
			if tm == nil {
				return clientv3.Cmp{}, false
			}
			return tm.Fence(), true
		})
		if err != nil {
			t.Fatal(err)
		}
		r.st = st
		el, err := leader.New(cli, leader.Options{Prefix: "/slotkv/", Role: "m", Value: value, TTL: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = el.Run(ctx, func(ctx context.Context, tm leader.Term) error {
				r.term.Store(&tm)
				<-ctx.Done()
				// r.term is left set on purpose: a deposed leader that
				// has not noticed yet still tries with its old term.
				return nil
			})
		}()
		t.Cleanup(func() { cancel(); <-done })
		return r, cancel, done
	}
	wait := func(r *replica) leader.Term {
		for end := time.Now().Add(60 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
			if tm := r.term.Load(); tm != nil {
				return *tm
			}
		}
		t.Fatal("no term in 60s")
		return leader.Term{}
	}
	a, stopA, doneA := newReplica("a")
	first := wait(a)
	b, _, _ := newReplica("b")
	if err := b.st.Put("j", &rec{"j", "from b"}); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("follower's Put: %v, want ErrNotLeader", err)
	}
	if err := a.st.Put("j", &rec{"j", "from a"}); err != nil {
		t.Fatalf("leader's Put: %v", err)
	}
	stopA()
	<-doneA
	for wait(b).Rev == first.Rev {
		time.Sleep(10 * time.Millisecond)
	}
	if err := b.st.Put("j", &rec{"j", "from b"}); err != nil {
		t.Fatalf("new leader's Put: %v", err)
	}
	if err := a.st.Put("j", &rec{"j", "stale a"}); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("deposed leader's Put: %v, want ErrNotLeader", err)
	}
	got, err := b.st.Load()
	if err != nil || len(got) != 1 || got[0].State != "from b" {
		t.Fatalf("stored %v, %v; want the new leader's record", got, err)
	}
}
