package jobstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Records is where a service keeps its job records: its own Badger
// directory (Store, from Open) or etcd, shared by its replicas (Etcd, from
// OpenEtcd).
type Records[T any] interface {
	// Put saves the record of job id, replacing the previous one.
	Put(id string, r *T) error
	// Load returns every record, in job id order.
	Load() ([]*T, error)
	// Close releases what the store holds.
	Close() error
}

var (
	_ Records[struct{}] = (*Store[struct{}])(nil)
	_ Records[struct{}] = (*Etcd[struct{}])(nil)
)

// ErrNotLeader: this replica may not write job records now (it does not
// lead, or its term ended before the write); nothing was written.
var ErrNotLeader = errors.New("jobstore: not the leader: job records are written by the leading replica only")

// Fence returns the etcd comparison that holds while this replica may
// write (pkg/leader's Term.Fence), and false when it may not write at all.
type Fence func() (clientv3.Cmp, bool)

// opTimeout bounds each etcd call of Put and Load, which take no context
// (the Badger store's signature).
const opTimeout = 10 * time.Second

// Etcd keeps records as JSON under <prefix><id> in etcd. Every Put is one
// transaction guarded by the fence, so a replica that lost its leadership
// while writing changes nothing: only the current leader's records land.
type Etcd[T any] struct {
	cli    *clientv3.Client
	prefix string
	fence  Fence
}

// OpenEtcd returns a store under prefix (e.g. "/slotkv/jobs/migrations/",
// ending with "/") on cli, which it does not own. fence nil writes
// unguarded.
func OpenEtcd[T any](cli *clientv3.Client, prefix string, fence Fence) (*Etcd[T], error) {
	if cli == nil {
		return nil, errors.New("jobstore: missing etcd client")
	}
	if !strings.HasPrefix(prefix, "/") || !strings.HasSuffix(prefix, "/") {
		return nil, fmt.Errorf("jobstore: prefix %q must start and end with /", prefix)
	}
	return &Etcd[T]{cli: cli, prefix: prefix, fence: fence}, nil
}

// Key is the etcd key of job id's record.
func (s *Etcd[T]) Key(id string) string { return s.prefix + id }

// Close does nothing: the client is the caller's.
func (s *Etcd[T]) Close() error { return nil }

// Put saves the record of job id if the fence holds; ErrNotLeader
// otherwise.
func (s *Etcd[T]) Put(id string, r *T) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("job record %s: %w", id, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	put := clientv3.OpPut(s.Key(id), string(b))
	if s.fence == nil {
		if _, err := s.cli.Do(ctx, put); err != nil {
			return fmt.Errorf("job record %s: etcd put: %w", id, err)
		}
		return nil
	}
	cmp, ok := s.fence()
	if !ok {
		return fmt.Errorf("%w (job %s)", ErrNotLeader, id)
	}
	resp, err := s.cli.Txn(ctx).If(cmp).Then(put).Commit()
	if err != nil {
		return fmt.Errorf("job record %s: etcd txn: %w", id, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("%w: the term ended before job %s was saved", ErrNotLeader, id)
	}
	return nil
}

// Load returns every record, in job id order (a linearizable read).
func (s *Etcd[T]) Load() ([]*T, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("job records %s: etcd get: %w", s.prefix, err)
	}
	out := make([]*T, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		r := new(T)
		if err := json.Unmarshal(kv.Value, r); err != nil {
			return nil, fmt.Errorf("job record %s: %w", kv.Key, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// Get returns job id's record, and false when there is none.
func (s *Etcd[T]) Get(ctx context.Context, id string) (*T, bool, error) {
	resp, err := s.cli.Get(ctx, s.Key(id))
	if err != nil {
		return nil, false, fmt.Errorf("job record %s: etcd get: %w", id, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, false, nil
	}
	r := new(T)
	if err := json.Unmarshal(resp.Kvs[0].Value, r); err != nil {
		return nil, false, fmt.Errorf("job record %s: %w", resp.Kvs[0].Key, err)
	}
	return r, true, nil
}
