package topostore

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/pkg/topology"
)

// DefaultPrefix is the key prefix when Options.Prefix is empty.
const DefaultPrefix = "/slotkv/"

// Sentinel errors. They wrap the rpcerr sentinels the gRPC layer maps, so a
// service returns them as they are.
var (
	// ErrStaleVersion: the stored topology is not the version the caller
	// expected (another commit came first); nothing was written.
	ErrStaleVersion = fmt.Errorf("topostore: the topology in etcd changed: %w", rpcerr.ErrStaleTopology)
	// ErrNotBootstrapped: etcd holds no topology yet.
	ErrNotBootstrapped = fmt.Errorf("topostore: no topology in etcd (bootstrap writes the first): %w", rpcerr.ErrNoTopology)
	// ErrFenced: a condition CommitIf was given (the committing replica's
	// leadership term, pkg/leader's Term.Fence) did not hold while the
	// topology was the expected version; nothing was written.
	ErrFenced = fmt.Errorf("topostore: the commit's fence does not hold (the committing replica no longer leads): %w", rpcerr.ErrConflict)
)

// Options tunes New.
type Options struct {
	// Prefix of every key (DefaultPrefix when empty). It must start and end
	// with "/".
	Prefix string
	// Log receives what Watch cannot return: etcd unreachable, a stored
	// value that does not decode. Discarded when nil.
	Log *slog.Logger
}

// Store reads and writes the topology record of one cluster in etcd. It is
// safe for concurrent use; it does not own the client.
type Store struct {
	cli    *clientv3.Client
	prefix string
	key    string // <prefix>topology
	log    *slog.Logger
	// seen is the latest topology this store read, watched or wrote: its
	// version and etcd mod revision. CommitIf compares that revision
	// instead of reading the key first when the caller expects that
	// version (see CommitIf).
	seen atomic.Pointer[seenTopology]
}

// seenTopology is a topology version and the mod revision it was stored
// at.
type seenTopology struct {
	version uint64
	rev     int64
}

// saw records that the topology of version v was stored at mod revision
// rev, unless a later revision is already known.
func (s *Store) saw(v uint64, rev int64) {
	for {
		cur := s.seen.Load()
		if cur != nil && cur.rev >= rev {
			return
		}
		if s.seen.CompareAndSwap(cur, &seenTopology{version: v, rev: rev}) {
			return
		}
	}
}

// revisionOf returns the mod revision of topology version v if it is the
// latest this store has seen.
func (s *Store) revisionOf(v uint64) (int64, bool) {
	if cur := s.seen.Load(); cur != nil && cur.version == v {
		return cur.rev, true
	}
	return 0, false
}

// New returns a store on cli.
func New(cli *clientv3.Client, o Options) (*Store, error) {
	if cli == nil {
		return nil, rpcerr.InvalidField("client", "missing etcd client")
	}
	prefix := o.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if !strings.HasPrefix(prefix, "/") || !strings.HasSuffix(prefix, "/") {
		return nil, rpcerr.InvalidField("prefix", "%q must start and end with /", prefix)
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Store{cli: cli, prefix: prefix, key: prefix + "topology", log: log}, nil
}

// Key returns the etcd key rel under the store's prefix, for the records
// Commit writes with the topology.
func (s *Store) Key(rel string) string { return s.prefix + rel }

// TopologyKey is the etcd key of the topology.
func (s *Store) TopologyKey() string { return s.key }

// Load returns the stored topology (a linearizable read), or
// ErrNotBootstrapped.
func (s *Store) Load(ctx context.Context) (*topology.Topology, error) {
	resp, err := s.cli.Get(ctx, s.key)
	if err != nil {
		return nil, fmt.Errorf("topostore: etcd get %s: %w", s.key, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, ErrNotBootstrapped
	}
	return s.decode(resp.Kvs[0].Value, resp.Kvs[0].ModRevision)
}

// Bootstrap writes t as the first topology if etcd holds none. It returns
// the stored topology and whether this call wrote it: a second call is a
// no-op that returns the topology already there and false.
func (s *Store) Bootstrap(ctx context.Context, t *topology.Topology) (stored *topology.Topology, created bool, err error) {
	if t == nil {
		return nil, false, rpcerr.InvalidField("topology", "missing")
	}
	b, err := encode(t)
	if err != nil {
		return nil, false, err
	}
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(s.key), "=", 0)).
		Then(clientv3.OpPut(s.key, string(b))).
		Else(clientv3.OpGet(s.key)).
		Commit()
	if err != nil {
		return nil, false, fmt.Errorf("topostore: etcd bootstrap txn on %s: %w", s.key, err)
	}
	if resp.Succeeded {
		s.saw(t.Version(), resp.Header.Revision)
		return t, true, nil
	}
	kvs := resp.Responses[0].GetResponseRange().GetKvs()
	if len(kvs) == 0 {
		// Deleted between the compare and the get of the same transaction
		// cannot happen: a transaction is one revision.
		return nil, false, fmt.Errorf("topostore: %s exists but read back empty", s.key)
	}
	stored, err = s.decode(kvs[0].Value, kvs[0].ModRevision)
	return stored, false, err
}

// Commit replaces the topology of version expect with next, and puts the
// extra records with it, in one etcd transaction. next must have a higher
// version than expect; each extra op must be a put under the store's prefix
// (e.g. a job's committed record) other than the topology key. When the
// stored topology is not version expect, or changes before the transaction,
// nothing is written and the error is ErrStaleVersion naming the stored
// version.
func (s *Store) Commit(ctx context.Context, expect uint64, next *topology.Topology, extra ...clientv3.Op) error {
	return s.CommitIf(ctx, nil, expect, next, extra...)
}

// CommitIf is Commit with more comparisons in the same transaction: the
// fence of the replica that commits (pkg/leader's Term.Fence), so that a
// deposed leader's commit changes nothing. When the topology is still
// version expect but a comparison of fence fails, the error is ErrFenced.
func (s *Store) CommitIf(ctx context.Context, fence []clientv3.Cmp, expect uint64, next *topology.Topology, extra ...clientv3.Op) error {
	if next == nil {
		return rpcerr.InvalidField("topology", "missing")
	}
	if next.Version() <= expect {
		return rpcerr.InvalidField("topology.version", "new version %d is not above the expected version %d", next.Version(), expect)
	}
	for i, op := range extra {
		f := fmt.Sprintf("extra[%d]", i)
		switch k := string(op.KeyBytes()); {
		case !op.IsPut():
			return rpcerr.InvalidField(f, "only puts are committed with the topology")
		case !strings.HasPrefix(k, s.prefix):
			return rpcerr.InvalidField(f, "key %q is not under the prefix %q", k, s.prefix)
		case k == s.key:
			return rpcerr.InvalidField(f, "key %q is the topology itself", k)
		}
	}
	b, err := encode(next)
	if err != nil {
		return err
	}
	// The topology this store last saw is very often the expected one (a
	// migrator reads it to plan the commit): then its revision is compared
	// without a read first, one etcd round trip fewer inside a hand-off's
	// write pause. If it is stale the comparison fails, and etcd's answer
	// says what is stored.
	if rev, ok := s.revisionOf(expect); ok {
		again, err := s.commitAt(ctx, fence, expect, rev, next, b, extra)
		if !again {
			return err
		}
		// Stored again at the same version since: read it and compare
		// what is there now.
	}
	cur, err := s.cli.Get(ctx, s.key)
	if err != nil {
		return fmt.Errorf("topostore: etcd get %s: %w", s.key, err)
	}
	if len(cur.Kvs) == 0 {
		return ErrNotBootstrapped
	}
	stored, err := s.decode(cur.Kvs[0].Value, cur.Kvs[0].ModRevision)
	if err != nil {
		return err
	}
	if stored.Version() != expect {
		return fmt.Errorf("%w: stored version %d, expected %d", ErrStaleVersion, stored.Version(), expect)
	}
	again, err := s.commitAt(ctx, fence, expect, cur.Kvs[0].ModRevision, next, b, extra)
	if again {
		return fmt.Errorf("%w: %s was stored again at version %d", ErrStaleVersion, s.key, expect)
	}
	return err
}

// commitAt is CommitIf's transaction: next (encoded b) and extra replace
// the topology if it is still at mod revision rev, where it was version
// expect. again reports a topology no longer at rev but still version
// expect (stored again, or rev was not its latest revision): nothing was
// written, and a fresh read decides.
func (s *Store) commitAt(ctx context.Context, fence []clientv3.Cmp, expect uint64, rev int64, next *topology.Topology, b []byte, extra []clientv3.Op) (again bool, err error) {
	// The mod revision identifies exactly the value read: comparing it is
	// comparing the version without a second key that could disagree.
	ops := append([]clientv3.Op{clientv3.OpPut(s.key, string(b))}, extra...)
	cmps := append([]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(s.key), "=", rev)}, fence...)
	resp, err := s.cli.Txn(ctx).
		If(cmps...).
		Then(ops...).
		Else(clientv3.OpGet(s.key)).
		Commit()
	if err != nil {
		return false, fmt.Errorf("topostore: etcd commit txn on %s (outcome unknown: Load tells): %w", s.key, err)
	}
	if resp.Succeeded {
		s.saw(next.Version(), resp.Header.Revision)
		return false, nil
	}
	kvs := resp.Responses[0].GetResponseRange().GetKvs()
	if len(kvs) == 0 {
		return false, fmt.Errorf("%w: %s was deleted, expected version %d", ErrStaleVersion, s.key, expect)
	}
	if len(fence) > 0 && kvs[0].ModRevision == rev {
		// The topology is the one compared: the fence failed.
		return false, fmt.Errorf("%w (topology version %d unchanged)", ErrFenced, expect)
	}
	now, err := s.decode(kvs[0].Value, kvs[0].ModRevision)
	if err != nil {
		return false, fmt.Errorf("%w: expected version %d, and the stored one: %w", ErrStaleVersion, expect, err)
	}
	if now.Version() == expect {
		return true, nil
	}
	return false, fmt.Errorf("%w: stored version %d, expected %d", ErrStaleVersion, now.Version(), expect)
}

// Watch delivers the current topology, waiting for a bootstrap when there is
// none, and then every later version in order. The channel is closed when
// ctx is done. Delivery blocks on a slow reader; it never drops a version
// the watch saw (see the package doc for resumption).
func (s *Store) Watch(ctx context.Context) <-chan *topology.Topology {
	out := make(chan *topology.Topology)
	go s.watch(ctx, out)
	return out
}

// Backoff between tries while etcd does not answer.
const (
	retryMin = 100 * time.Millisecond
	retryMax = 2 * time.Second
	// getTimeout bounds one read, so a watcher logs etcd being down instead
	// of waiting silently in the client's retries.
	getTimeout = 5 * time.Second
)

func (s *Store) watch(ctx context.Context, out chan<- *topology.Topology) {
	defer close(out)
	var last uint64 // version delivered last; 0 before the first
	deliver := func(t *topology.Topology, rev int64) bool {
		if t.Version() <= last {
			// An older or repeated version: the fresh read after a resume
			// may return what the watch already gave.
			if t.Version() < last {
				s.log.Warn("topostore: ignoring an older topology", "key", s.key, "version", t.Version(), "delivered", last, "revision", rev)
			}
			return true
		}
		select {
		case out <- t:
			last = t.Version()
			return true
		case <-ctx.Done():
			return false
		}
	}
	delay := retryMin
	sleep := func() bool {
		select {
		case <-time.After(delay):
			delay = min(2*delay, retryMax)
			return true
		case <-ctx.Done():
			return false
		}
	}
	for ctx.Err() == nil {
		// A fresh linearizable read: the start, and every resumption.
		gctx, cancel := context.WithTimeout(ctx, getTimeout)
		resp, err := s.cli.Get(gctx, s.key)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("topostore: etcd unreachable, retrying", "key", s.key, "err", err, "retry_in", delay)
			}
			if !sleep() {
				return
			}
			continue
		}
		delay = retryMin
		if len(resp.Kvs) > 0 {
			kv := resp.Kvs[0]
			if t, err := s.decode(kv.Value, kv.ModRevision); err != nil {
				s.log.Error("topostore: stored topology does not decode; keeping the last one", "err", err)
			} else if !deliver(t, kv.ModRevision) {
				return
			}
		}
		if !s.follow(ctx, resp.Header.Revision+1, deliver) {
			return
		}
		if !sleep() {
			return
		}
	}
}

// follow watches the topology key from revision rev and delivers each put.
// It returns false when ctx is done or delivery stopped, true when the watch
// ended and must be resumed from a fresh read.
func (s *Store) follow(ctx context.Context, rev int64, deliver func(*topology.Topology, int64) bool) bool {
	// The watch's own context, so that ending it here frees its stream.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for wr := range s.cli.Watch(wctx, s.key, clientv3.WithRev(rev)) {
		if err := wr.Err(); err != nil {
			s.log.Warn("topostore: watch ended, resuming from a fresh read", "key", s.key, "err", err, "compact_revision", wr.CompactRevision)
			return ctx.Err() == nil
		}
		for _, ev := range wr.Events {
			if ev.Type != clientv3.EventTypePut {
				s.log.Warn("topostore: topology key deleted; keeping the last one", "key", s.key, "revision", ev.Kv.ModRevision)
				continue
			}
			t, err := s.decode(ev.Kv.Value, ev.Kv.ModRevision)
			if err != nil {
				s.log.Error("topostore: stored topology does not decode; keeping the last one", "err", err)
				continue
			}
			if !deliver(t, ev.Kv.ModRevision) {
				return false
			}
		}
	}
	// The client closes the channel when wctx is done, or when it gives up
	// on the stream; the caller tells the two apart by ctx.
	return ctx.Err() == nil
}

func encode(t *topology.Topology) ([]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(t.Proto())
	if err != nil {
		return nil, fmt.Errorf("topostore: encode topology version %d: %w", t.Version(), err)
	}
	return b, nil
}

// decode parses and validates a stored value; errors name the key and the
// revision, so an operator can find the bad write. Every topology read or
// watched goes through it, so it records the revision (saw).
func (s *Store) decode(b []byte, rev int64) (*topology.Topology, error) {
	var p clusterv1.Topology
	if err := proto.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("topostore: %s at revision %d: %w", s.key, rev, err)
	}
	t, err := topology.FromProto(&p)
	if err != nil {
		return nil, fmt.Errorf("topostore: %s at revision %d: %w", s.key, rev, err)
	}
	s.saw(t.Version(), rev)
	return t, nil
}
