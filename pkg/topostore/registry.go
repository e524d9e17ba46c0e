package topostore

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	"github.com/slotkv/slotkv/pkg/rpcerr"
)

// DefaultLeaseTTL is the lease of a node registration when Register is
// given none: a node that stops renewing it is listed dead this long after.
const DefaultLeaseTTL = 10 * time.Second

// NodeKey is the etcd key of node id's registration.
func (s *Store) NodeKey(id string) string { return s.prefix + "nodes/" + id }

// Register puts n under <prefix>nodes/<id>, attached to a lease of ttl that
// it keeps alive until ctx is done; then the lease is revoked (the node is
// listed dead at once) and the channel closed. When the lease is lost (etcd
// unreachable longer than ttl, or the key removed by an operator) it grants
// a new one and puts the record again, retrying with backoff, so a node that
// comes back from a partition is listed live again without a restart. The
// first registration must succeed within ctx's deadline or the error is
// returned. The returned channel carries each (re-)registration's lease id,
// for tests and logs; it is not required to be read.
func (s *Store) Register(ctx context.Context, n *clusterv1.Node, ttl time.Duration) (<-chan clientv3.LeaseID, error) {
	if n.GetId() == "" {
		return nil, rpcerr.InvalidField("node.id", "missing")
	}
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(n)
	if err != nil {
		return nil, fmt.Errorf("topostore: encode node %s: %w", n.GetId(), err)
	}
	key := s.NodeKey(n.GetId())
	lease, ka, err := s.grantAndPut(ctx, key, b, ttl)
	if err != nil {
		return nil, err
	}
	out := make(chan clientv3.LeaseID, 1)
	out <- lease
	go s.keepRegistered(ctx, key, b, ttl, lease, ka, out)
	return out, nil
}

func (s *Store) grantAndPut(ctx context.Context, key string, val []byte, ttl time.Duration) (clientv3.LeaseID, <-chan *clientv3.LeaseKeepAliveResponse, error) {
	secs := int64((ttl + time.Second - 1) / time.Second)
	g, err := s.cli.Grant(ctx, secs)
	if err != nil {
		return 0, nil, fmt.Errorf("topostore: etcd lease for %s: %w", key, err)
	}
	if _, err := s.cli.Put(ctx, key, string(val), clientv3.WithLease(g.ID)); err != nil {
		return 0, nil, fmt.Errorf("topostore: etcd put %s: %w", key, err)
	}
	ka, err := s.cli.KeepAlive(context.WithoutCancel(ctx), g.ID)
	if err != nil {
		return 0, nil, fmt.Errorf("topostore: etcd keep-alive of %s: %w", key, err)
	}
	return g.ID, ka, nil
}

func (s *Store) keepRegistered(ctx context.Context, key string, val []byte, ttl time.Duration, lease clientv3.LeaseID, ka <-chan *clientv3.LeaseKeepAliveResponse, out chan clientv3.LeaseID) {
	defer close(out)
	revoke := func() {
		// The node is going away: list it dead now, not a TTL later.
		rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if _, err := s.cli.Revoke(rctx, lease); err != nil {
			s.log.Warn("topostore: revoking the registration's lease", "key", key, "err", err)
		}
	}
	delay := retryMin
	for {
		select {
		case <-ctx.Done():
			revoke()
			return
		case _, ok := <-ka:
			if ok {
				continue
			}
		}
		// The keep-alive ended: the lease expired or etcd stayed away.
		s.log.Warn("topostore: registration lease lost, registering again", "key", key, "lease", lease)
		for {
			gctx, cancel := context.WithTimeout(ctx, getTimeout)
			l, k, err := s.grantAndPut(gctx, key, val, ttl)
			cancel()
			if err == nil {
				lease, ka, delay = l, k, retryMin
				select {
				case out <- l:
				default:
				}
				break
			}
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("topostore: etcd unreachable, registering again later", "key", key, "err", err, "retry_in", delay)
			select {
			case <-time.After(delay):
				delay = min(2*delay, retryMax)
			case <-ctx.Done():
				return
			}
		}
	}
}

// Nodes returns the registered (live) nodes, ordered by id.
func (s *Store) Nodes(ctx context.Context) ([]*clusterv1.Node, error) {
	prefix := s.prefix + "nodes/"
	resp, err := s.cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("topostore: etcd get %s*: %w", prefix, err)
	}
	var out []*clusterv1.Node
	var errs []error
	for _, kv := range resp.Kvs {
		var n clusterv1.Node
		if err := proto.Unmarshal(kv.Value, &n); err != nil {
			errs = append(errs, fmt.Errorf("topostore: %s at revision %d: %w", kv.Key, kv.ModRevision, err))
			continue
		}
		if id := strings.TrimPrefix(string(kv.Key), prefix); id != n.GetId() {
			errs = append(errs, fmt.Errorf("topostore: %s holds node %q", kv.Key, n.GetId()))
			continue
		}
		out = append(out, &n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetId() < out[j].GetId() })
	return out, errors.Join(errs...)
}
