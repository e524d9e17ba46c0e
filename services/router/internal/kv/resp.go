package kv

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/resp"
	"github.com/slotkv/slotkv/pkg/route"
	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/pkg/slot"
)

// RESPBackend is the router's backend for the Redis protocol in proxy
// mode: single-key commands go through route.Do (SLOT_MOVED, frozen slots
// and restarts retried as for the gRPC API), MGET/EXISTS and MSET through
// the same per-node fan-out as MultiGet and MultiPut, DEL per slot in
// parallel (each slot's keys one BatchWrite on its owner, for the deleted
// count), SCAN through the merged scan with the router's cursor. It needs
// topology mode: a naming file's layouts have no single owner per slot to
// send Update to.
func (s *Service) RESPBackend() (resp.Backend, error) {
	if s.r == nil {
		return nil, errors.New("the Redis protocol (--resp-addr) needs topology mode (--etcd-endpoints), not a naming file")
	}
	return &respProxy{s: s}, nil
}

type respProxy struct{ s *Service }

func isNotFound(err error) bool { return errors.Is(rpcerr.FromStatus(err), rpcerr.ErrNotFound) }

func (p *respProxy) Get(ctx context.Context, key []byte) (resp.Value, error) {
	var got *storagev1.GetResponse
	_, err := p.s.do(ctx, string(key), "get", func(ctx context.Context, _ route.Attempt, c storagev1.StorageServiceClient) error {
		var err error
		got, err = c.Get(ctx, &storagev1.GetRequest{Key: key})
		return err
	})
	switch {
	case isNotFound(err):
		return resp.Value{}, nil
	case err != nil:
		return resp.Value{}, err
	case !live(got.GetExpiresAtMs(), time.Now().UnixMilli()):
		return resp.Value{}, nil
	}
	return resp.Value{Data: got.GetValue(), Found: true, ExpiresAtMs: got.GetExpiresAtMs()}, nil
}

func (p *respProxy) Set(ctx context.Context, key, value []byte, expiresAtMs int64) error {
	_, err := p.s.do(ctx, string(key), "put", func(ctx context.Context, _ route.Attempt, c storagev1.StorageServiceClient) error {
		_, err := c.Put(ctx, &storagev1.PutRequest{Key: key, Value: value, ExpiresAtMs: expiresAtMs})
		return err
	})
	return err
}

// Update runs on the key's owner: the read-modify-write is atomic there,
// never a read and a write from the router.
func (p *respProxy) Update(ctx context.Context, req *storagev1.UpdateRequest) (*storagev1.UpdateResponse, error) {
	var out *storagev1.UpdateResponse
	_, err := p.s.do(ctx, string(req.GetKey()), "update", func(ctx context.Context, _ route.Attempt, c storagev1.StorageServiceClient) error {
		var err error
		out, err = c.Update(ctx, req)
		return err
	})
	return out, err
}

// MGet reads each distinct key once, one BatchGet per node.
func (p *respProxy) MGet(ctx context.Context, keys [][]byte) ([]resp.Value, error) {
	q, uniq, first := distinctGets(keys)
	q.rename = func(pos int, _ string) string { return fmt.Sprintf("keys[%d]", first[pos]) }
	items, _, _, err := p.s.b.get(ctx, q, false)
	if err != nil {
		return nil, err
	}
	now := time.Now().UnixMilli()
	out := make([]resp.Value, len(keys))
	for i := range keys {
		if it := items[uniq[i]]; it != nil && it.GetFound() && live(it.GetExpiresAtMs(), now) {
			out[i] = resp.Value{Data: it.GetValue(), Found: true, ExpiresAtMs: it.GetExpiresAtMs()}
		}
	}
	return out, nil
}

// MSet writes through the per-node fan-out (atomic per node, not across
// nodes, as MultiPut). MSETNX (ifAllAbsent) has its keys in one slot
// (pkg/resp checks): one conditional BatchWrite on the owner.
func (p *respProxy) MSet(ctx context.Context, pairs []resp.Pair, ifAllAbsent bool) (bool, error) {
	muts := make([]*storagev1.Mutation, len(pairs))
	for i, kv := range pairs {
		muts[i] = &storagev1.Mutation{Key: kv.Key, Value: kv.Value}
	}
	if ifAllAbsent {
		var applied bool
		_, err := p.s.do(ctx, string(pairs[0].Key), "msetnx", func(ctx context.Context, _ route.Attempt, c storagev1.StorageServiceClient) error {
			r, err := c.BatchWrite(ctx, &storagev1.BatchWriteRequest{Mutations: muts, IfAllAbsent: true})
			applied = r.GetApplied()
			return err
		})
		return applied, err
	}
	q := &subReq{kind: opWrite, keys: make([][]byte, len(pairs)), muts: muts, slots: make([]uint16, len(pairs))}
	for i, kv := range pairs {
		q.keys[i], q.slots[i] = kv.Key, slot.Of(kv.Key)
	}
	q.rename = func(pos int, _ string) string { return fmt.Sprintf("keys[%d]", pos) }
	_, err := p.s.b.write(ctx, q)
	return err == nil, err
}

// respParallel bounds the slots one DEL works on at once.
const respParallel = 16

// Del deletes each slot's keys with one BatchWrite on the slot's owner
// (through route.Do, so each is retried on its own), slots in parallel,
// and adds up the keys that existed.
func (p *respProxy) Del(ctx context.Context, keys [][]byte) (int64, error) {
	bySlot := map[uint16][][]byte{}
	var order []uint16
	for _, k := range keys {
		s := slot.Of(k)
		if _, ok := bySlot[s]; !ok {
			order = append(order, s)
		}
		bySlot[s] = append(bySlot[s], k)
	}
	var (
		mu       sync.Mutex
		total    int64
		firstErr error
		wg       sync.WaitGroup
		sem      = make(chan struct{}, respParallel)
	)
	for _, s := range order {
		ks := bySlot[s]
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			muts := make([]*storagev1.Mutation, len(ks))
			for i, k := range ks {
				muts[i] = &storagev1.Mutation{Key: k, Delete: true}
			}
			var n uint32
			_, err := p.s.do(ctx, string(ks[0]), "delete", func(ctx context.Context, _ route.Attempt, c storagev1.StorageServiceClient) error {
				r, err := c.BatchWrite(ctx, &storagev1.BatchWriteRequest{Mutations: muts})
				n = r.GetDeleted()
				return err
			})
			mu.Lock()
			defer mu.Unlock()
			total += int64(n)
			if err != nil && firstErr == nil {
				firstErr = err
			}
		})
	}
	wg.Wait()
	return total, firstErr
}

// Scan is one page of the router's merged scan over every partition; the
// cursor is the router's own scan cursor.
func (p *respProxy) Scan(ctx context.Context, cursor, prefix []byte, count int) ([][]byte, []byte, error) {
	q := &subReq{kind: opScan, scan: &storagev1.ScanRequest{Prefix: prefix, Limit: uint32(count), KeysOnly: true}}
	if len(cursor) > 0 {
		pos, err := decodeCursor(string(cursor))
		if err != nil {
			return nil, nil, err
		}
		q.scan.Start = pos
	}
	parts, _, err := p.s.b.scan(ctx, q, false)
	if err != nil {
		return nil, nil, err
	}
	pages := make([]*storagev1.ScanResponse, len(parts))
	for i, pt := range parts {
		pages[i] = pt.scan
	}
	items, _, more := mergePages(pages, count)
	keys := make([][]byte, len(items))
	for i, kv := range items {
		keys[i] = kv.GetKey()
	}
	var next []byte
	if more && len(items) > 0 {
		last := items[len(items)-1]
		next = []byte(encodeCursor(uint16(last.GetSlot()), last.GetKey()))
	}
	return keys, next, nil
}

func (p *respProxy) DBSize(ctx context.Context) (int64, error) {
	n, _, err := p.s.b.count(ctx, false)
	return int64(n), err
}

// FlushAll asks every node to empty the slots the topology gives it. A
// node that answers SLOT_MOVED or frozen (a migration moved slots in
// between) makes the round start again with the newest topology;
// FlushSlots is idempotent.
func (p *respProxy) FlushAll(ctx context.Context) error {
	r := p.s.r
	var last error
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			lo, _ := r.Backoff()
			select {
			case <-ctx.Done():
				return errors.Join(ctx.Err(), last)
			case <-time.After(route.Jitter(lo << min(attempt, 6))):
			}
		}
		t, err := r.Refresh(ctx)
		if t == nil {
			return err
		}
		last = nil
		for _, nd := range t.Nodes() {
			var rs []*clusterv1.SlotRange
			for _, sr := range t.RangesOf(nd.ID) {
				rs = append(rs, &clusterv1.SlotRange{Start: uint32(sr.Start), End: uint32(sr.End)})
			}
			if len(rs) == 0 {
				continue
			}
			cc, err := r.Conn(nd.GRPCAddress)
			if err == nil {
				_, err = storagev1.NewStorageServiceClient(cc).FlushSlots(ctx, &storagev1.FlushSlotsRequest{Ranges: rs})
			}
			if err != nil {
				err = route.Annotate(err, nd)
				if !route.Classify(err).Retryable() {
					return err
				}
				last = err
			}
		}
		if last == nil {
			return nil
		}
	}
}
