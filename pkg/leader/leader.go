package leader

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// DefaultTTL is the session TTL when Options.TTL is zero: how long a dead
// leader keeps its term before the next replica takes over.
const DefaultTTL = 5 * time.Second

// ErrNoLeader: no replica holds the role now.
var ErrNoLeader = errors.New("leader: no replica is leader")

// Options tunes New.
type Options struct {
	// Prefix is the cluster's key prefix in etcd ("/slotkv/"); it must end
	// with "/".
	Prefix string
	// Role names the election ("migrator", "downloader").
	Role string
	// Value identifies this replica to the others: its advertised gRPC
	// address, where followers forward writes.
	Value string
	// TTL of the session (DefaultTTL when zero), rounded up to seconds.
	TTL time.Duration
	// Log receives campaign and term events; discarded when nil.
	Log *slog.Logger
}

// Elector campaigns for one role on behalf of one replica.
type Elector struct {
	cli    *clientv3.Client
	o      Options
	key    string // <prefix>election/<role>
	log    *slog.Logger
	leader atomic.Bool
}

// New returns an elector on cli (which it does not own).
func New(cli *clientv3.Client, o Options) (*Elector, error) {
	switch {
	case cli == nil:
		return nil, errors.New("leader: missing etcd client")
	case !strings.HasPrefix(o.Prefix, "/") || !strings.HasSuffix(o.Prefix, "/"):
		return nil, fmt.Errorf("leader: prefix %q must start and end with /", o.Prefix)
	case o.Role == "" || strings.Contains(o.Role, "/"):
		return nil, fmt.Errorf("leader: role %q must be a non-empty name without /", o.Role)
	case o.Value == "":
		return nil, errors.New("leader: missing value (the replica's address)")
	}
	if o.TTL <= 0 {
		o.TTL = DefaultTTL
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Elector{cli: cli, o: o, key: o.Prefix + "election/" + o.Role, log: log.With("role", o.Role)}, nil
}

// Term is one leadership of this replica.
type Term struct {
	// Key and Rev are the election key this replica holds and its create
	// revision: unique to the term.
	Key string
	Rev int64
	// Lease is the session's lease; records written with it disappear
	// with the term.
	Lease clientv3.LeaseID
}

// Fence is the comparison that holds while the term lasts: guard a
// transaction with it and a deposed leader's write changes nothing.
func (t Term) Fence() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(t.Key), "=", t.Rev)
}

// IsLeader reports whether this replica holds a term now (as far as it
// knows: the term can end under it, see Run).
func (e *Elector) IsLeader() bool { return e.leader.Load() }

// Leader returns the current leader's value (a linearizable read), or
// ErrNoLeader.
func (e *Elector) Leader(ctx context.Context) (string, error) {
	resp, err := e.cli.Get(ctx, e.key+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return "", fmt.Errorf("leader: etcd get %s: %w", e.key, err)
	}
	if len(resp.Kvs) == 0 {
		return "", ErrNoLeader
	}
	return string(resp.Kvs[0].Value), nil
}

// retryDelay between campaigns after a failure (etcd unreachable) or a
// term that ended.
const retryDelay = 500 * time.Millisecond

// Run campaigns until ctx ends. Each time this replica wins, lead runs with
// a context that is canceled when the session's lease is lost or ctx ends;
// when lead returns the replica resigns (so a follower takes over at once)
// and campaigns again. Run returns ctx's error.
func (e *Elector) Run(ctx context.Context, lead func(ctx context.Context, t Term) error) error {
	for ctx.Err() == nil {
		if err := e.term(ctx, lead); err != nil && ctx.Err() == nil {
			e.log.Warn("leader: campaign failed, retrying", "err", err, "retry_in", retryDelay)
		}
		select {
		case <-time.After(retryDelay):
		case <-ctx.Done():
		}
	}
	return ctx.Err()
}

// term holds one session: campaign, lead, resign.
func (e *Elector) term(ctx context.Context, lead func(ctx context.Context, t Term) error) error {
	sess, err := concurrency.NewSession(e.cli, concurrency.WithTTL(int((e.o.TTL+time.Second-1)/time.Second)), concurrency.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("session: %w", err)
	}
	defer sess.Close() // revokes the lease: the key goes at once
	el := concurrency.NewElection(sess, e.key)
	// Campaign returns when this replica leads, or fails when the session
	// ends (lease lost) or ctx does.
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-sess.Done():
			cancel()
		case <-cctx.Done():
		}
	}()
	if err := el.Campaign(cctx, e.o.Value); err != nil {
		return fmt.Errorf("campaign: %w", err)
	}
	t := Term{Key: el.Key(), Rev: el.Rev(), Lease: sess.Lease()}
	e.leader.Store(true)
	defer e.leader.Store(false)
	e.log.Info("leader: this replica leads", "value", e.o.Value, "key", t.Key, "revision", t.Rev)
	err = lead(cctx, t)
	switch {
	case ctx.Err() != nil:
		e.log.Info("leader: term over, the replica is stopping", "key", t.Key)
	case isDone(sess):
		e.log.Warn("leader: term lost (session expired)", "key", t.Key)
	default:
		e.log.Info("leader: term over", "key", t.Key, "err", err)
	}
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer rcancel()
	_ = el.Resign(rctx)
	return err
}

func isDone(s *concurrency.Session) bool {
	select {
	case <-s.Done():
		return true
	default:
		return false
	}
}
