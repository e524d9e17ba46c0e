package leader

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/slotkv/slotkv/pkg/etcdtest"
)

// replica is one elector running in the background, reporting its terms.
type replica struct {
	e      *Elector
	terms  chan Term
	ended  chan Term
	cancel context.CancelFunc
	done   chan struct{}
}

func start(t *testing.T, cli *clientv3.Client, value string) *replica {
	t.Helper()
	e, err := New(cli, Options{Prefix: "/el/", Role: "migrator", Value: value, TTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{e: e, terms: make(chan Term, 8), ended: make(chan Term, 8), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		_ = e.Run(ctx, func(ctx context.Context, tm Term) error {
			r.terms <- tm
			<-ctx.Done()
			r.ended <- tm
			return nil
		})
	}()
	t.Cleanup(func() { cancel(); <-r.done })
	return r
}

func recv(t *testing.T, ch <-chan Term, what string) Term {
	t.Helper()
	select {
	case tm := <-ch:
		return tm
	case <-time.After(60 * time.Second):
		t.Fatalf("%s: nothing in 60s", what)
	}
	return Term{}
}

func TestNewRefusesBadOptions(t *testing.T) {
	e := etcdtest.Start(t)
	cli := e.Client(t)
	for _, tc := range []struct {
		name string
		o    Options
	}{
		{"no prefix slash", Options{Prefix: "x", Role: "m", Value: "a"}},
		{"no role", Options{Prefix: "/p/", Value: "a"}},
		{"role with slash", Options{Prefix: "/p/", Role: "a/b", Value: "a"}},
		{"no value", Options{Prefix: "/p/", Role: "m"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(cli, tc.o); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// TestFailover: the first replica leads, the second waits; when the
// leader's process goes (its Run ends) the second leads; a write fenced by
// the first term fails once it is over, one fenced by the second lands.
func TestFailover(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t)
	cli := e.Client(t)
	a := start(t, cli, "a:1")
	ta := recv(t, a.terms, "a's term")
	b := start(t, cli, "b:1")
	ctx := context.Background()
	if l, err := a.e.Leader(ctx); err != nil || l != "a:1" {
		t.Fatalf("Leader = %q, %v; want a:1", l, err)
	}
	if !a.e.IsLeader() || b.e.IsLeader() {
		t.Fatalf("IsLeader: a %v, b %v", a.e.IsLeader(), b.e.IsLeader())
	}
	fenced := func(tm Term, val string) bool {
		resp, err := cli.Txn(ctx).If(tm.Fence()).Then(clientv3.OpPut("/el/jobs/j", val)).Commit()
		if err != nil {
			t.Fatal(err)
		}
		return resp.Succeeded
	}
	if !fenced(ta, "from a") {
		t.Fatal("the leader's fenced write failed")
	}

	a.cancel()
	<-a.done
	tb := recv(t, b.terms, "b's term after a left")
	if tb.Rev == ta.Rev {
		t.Fatal("b's term has a's revision")
	}
	if fenced(ta, "stale a") {
		t.Fatal("a write fenced by the ended term landed")
	}
	if !fenced(tb, "from b") {
		t.Fatal("the new leader's fenced write failed")
	}
	if l, err := b.e.Leader(ctx); err != nil || l != "b:1" {
		t.Fatalf("Leader = %q, %v; want b:1", l, err)
	}
}

// TestTermEndsWithTheLease: the session's lease revoked under the leader
// (as when etcd expires it) cancels the term's context; the replica
// campaigns again and leads a new term.
func TestTermEndsWithTheLease(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t)
	cli := e.Client(t)
	a := start(t, cli, "a:1")
	first := recv(t, a.terms, "first term")
	if _, err := cli.Revoke(context.Background(), first.Lease); err != nil {
		t.Fatal(err)
	}
	if ended := recv(t, a.ended, "end of the first term"); ended.Rev != first.Rev {
		t.Fatalf("ended term %d, want %d", ended.Rev, first.Rev)
	}
	if second := recv(t, a.terms, "second term"); second.Rev == first.Rev {
		t.Fatal("second term reuses the first's revision")
	}
}

func TestNoLeader(t *testing.T) {
	t.Parallel()
	e := etcdtest.Start(t)
	el, err := New(e.Client(t), Options{Prefix: "/el/", Role: "downloader", Value: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := el.Leader(context.Background()); !errors.Is(err, ErrNoLeader) {
		t.Fatalf("Leader with no campaign: %v, want ErrNoLeader", err)
	}
}
