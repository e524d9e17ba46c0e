package grpcapi

import (
	"context"
	"errors"
	"fmt"

	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/services/storage/internal/store"
)

// StorageService implements storagev1.StorageServiceServer.
type StorageService struct {
	storagev1.UnimplementedStorageServiceServer
	c Config
}

// NewStorageService returns the data service.
func NewStorageService(c Config) *StorageService {
	return &StorageService{c: c.withDefaults()}
}

// Get reads one key.
func (s *StorageService) Get(_ context.Context, req *storagev1.GetRequest) (*storagev1.GetResponse, error) {
	sl, err := s.c.Limits.checkKey("key", req.GetKey())
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	if err := s.c.Node.CheckRead(sl); err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	v, _, err := s.c.Store.Get(req.GetKey())
	// Check again after reading: a read that passed the check while the
	// slot was frozen and then stalled through the hand-off and the
	// cleanup must not answer from the emptied slot; the caller is sent to
	// the new owner instead.
	if rerr := s.c.Node.CheckRead(sl); rerr != nil {
		return nil, rpcerr.ToStatus(rerr)
	}
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	return &storagev1.GetResponse{Value: v, Slot: uint32(sl)}, nil
}

// Put writes one key.
func (s *StorageService) Put(_ context.Context, req *storagev1.PutRequest) (*storagev1.PutResponse, error) {
	sl, err := s.c.Limits.checkKey("key", req.GetKey())
	if err == nil {
		err = s.c.Limits.checkValue("value", req.GetValue())
	}
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	_, err = s.c.Node.Write([]uint16{sl}, func() error {
		_, err := s.c.Store.Put(req.GetKey(), req.GetValue())
		return err
	})
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	return &storagev1.PutResponse{Slot: uint32(sl)}, nil
}

// Delete removes one key.
func (s *StorageService) Delete(_ context.Context, req *storagev1.DeleteRequest) (*storagev1.DeleteResponse, error) {
	sl, err := s.c.Limits.checkKey("key", req.GetKey())
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	_, err = s.c.Node.Write([]uint16{sl}, func() error {
		_, err := s.c.Store.Delete(req.GetKey())
		return err
	})
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	return &storagev1.DeleteResponse{Slot: uint32(sl)}, nil
}

// BatchGet reads several keys from one snapshot.
func (s *StorageService) BatchGet(_ context.Context, req *storagev1.BatchGetRequest) (*storagev1.BatchGetResponse, error) {
	keys := req.GetKeys()
	if err := s.c.Limits.checkBatch("keys", len(keys)); err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	slots := make([]uint16, len(keys))
	for i, k := range keys {
		sl, err := s.c.Limits.checkKey(fmt.Sprintf("keys[%d]", i), k)
		if err != nil {
			return nil, rpcerr.ToStatus(err)
		}
		slots[i] = sl
	}
	for _, sl := range slots {
		if err := s.c.Node.CheckRead(sl); err != nil {
			return nil, rpcerr.ToStatus(err)
		}
	}
	items, err := s.c.Store.BatchGet(keys)
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	for _, sl := range slots { // again after reading, as in Get
		if err := s.c.Node.CheckRead(sl); err != nil {
			return nil, rpcerr.ToStatus(err)
		}
	}
	out := make([]*storagev1.Item, len(items))
	slab := make([]storagev1.Item, len(items)) // one allocation for all items
	for i, it := range items {
		p := &slab[i]
		p.Key, p.Value, p.Found, p.Slot = it.Key, it.Value, it.Found, uint32(it.Slot)
		out[i] = p
	}
	return &storagev1.BatchGetResponse{Items: out}, nil
}

// BatchWrite applies puts and deletes atomically.
func (s *StorageService) BatchWrite(_ context.Context, req *storagev1.BatchWriteRequest) (*storagev1.BatchWriteResponse, error) {
	ms := req.GetMutations()
	if err := s.c.Limits.checkBatch("mutations", len(ms)); err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	slots := make([]uint16, len(ms))
	muts := make([]store.Mutation, len(ms))
	for i, m := range ms {
		sl, err := s.c.Limits.checkKey(fmt.Sprintf("mutations[%d].key", i), m.GetKey())
		if err != nil {
			return nil, rpcerr.ToStatus(err)
		}
		if m.GetDelete() && len(m.GetValue()) > 0 {
			return nil, rpcerr.ToStatus(rpcerr.InvalidField(fmt.Sprintf("mutations[%d].value", i), "a delete carries no value"))
		}
		if err := s.c.Limits.checkValue(fmt.Sprintf("mutations[%d].value", i), m.GetValue()); err != nil {
			return nil, rpcerr.ToStatus(err)
		}
		slots[i] = sl
		muts[i] = store.Mutation{Key: m.GetKey(), Value: m.GetValue(), Delete: m.GetDelete()}
	}
	_, err := s.c.Node.Write(slots, func() error { return s.c.Store.BatchWrite(muts) })
	if err != nil {
		if errors.Is(err, store.ErrBatchTooLarge) {
			err = rpcerr.InvalidField("mutations", "%v", err)
		}
		return nil, rpcerr.ToStatus(err)
	}
	return &storagev1.BatchWriteResponse{}, nil
}

// Scan returns one page of a slot-ordered scan.
func (s *StorageService) Scan(_ context.Context, req *storagev1.ScanRequest) (*storagev1.ScanResponse, error) {
	rs, err := ranges(s.c.Node, "ranges", req.GetRanges())
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	if req.GetLimit() > store.MaxScanLimit {
		return nil, rpcerr.ToStatus(rpcerr.InvalidField("limit", "%d is above the maximum of %d", req.GetLimit(), store.MaxScanLimit))
	}
	var start *store.Position
	if p := req.GetStart(); p != nil {
		if p.GetSlot() > slot.MaxSlot {
			return nil, rpcerr.ToStatus(rpcerr.InvalidField("start.slot", "slot %d is out of 0-%d", p.GetSlot(), slot.MaxSlot))
		}
		start = &store.Position{Slot: uint16(p.GetSlot()), Key: p.GetKey()}
	}
	if err := s.c.Node.CheckRanges(rs, false); err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	if len(rs) == 0 { // serves nothing
		return &storagev1.ScanResponse{}, nil
	}
	res, err := s.c.Store.Scan(store.ScanOptions{
		Ranges:   rs,
		Prefix:   req.GetPrefix(),
		Start:    start,
		Limit:    int(req.GetLimit()),
		KeysOnly: req.GetKeysOnly(),
	})
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	if err := s.c.Node.CheckRanges(rs, false); err != nil { // again after reading, as in Get
		return nil, rpcerr.ToStatus(err)
	}
	out := &storagev1.ScanResponse{Items: make([]*storagev1.KeyValue, len(res.Items))}
	slab := make([]storagev1.KeyValue, len(res.Items))
	for i, kv := range res.Items {
		p := &slab[i]
		p.Key, p.Value, p.Slot = kv.Key, kv.Value, uint32(kv.Slot)
		out.Items[i] = p
	}
	if res.Next != nil {
		out.Next = &storagev1.ScanPosition{Slot: uint32(res.Next.Slot), Key: res.Next.Key}
	}
	return out, nil
}

// Count counts the keys of slot ranges.
func (s *StorageService) Count(ctx context.Context, req *storagev1.CountRequest) (*storagev1.CountResponse, error) {
	rs, err := ranges(s.c.Node, "ranges", req.GetRanges())
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	if err := s.c.Node.CheckRanges(rs, false); err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	if len(rs) == 0 {
		return &storagev1.CountResponse{}, nil
	}
	n, err := s.c.Store.Count(ctx, rs)
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	if err := s.c.Node.CheckRanges(rs, false); err != nil { // again after reading, as in Get
		return nil, rpcerr.ToStatus(err)
	}
	return &storagev1.CountResponse{Count: n}, nil
}

// Digest counts and digests the entries of slot ranges.
func (s *StorageService) Digest(ctx context.Context, req *storagev1.DigestRequest) (*storagev1.DigestResponse, error) {
	rs, err := ranges(s.c.Node, "ranges", req.GetRanges())
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	if err := s.c.Node.CheckRanges(rs, false); err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	if len(rs) == 0 {
		return &storagev1.DigestResponse{Digest: store.Digest{}.Bytes()}, nil
	}
	res, err := s.c.Store.Digest(ctx, rs, req.GetPerSlot())
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	if err := s.c.Node.CheckRanges(rs, false); err != nil { // again after reading, as in Get
		return nil, rpcerr.ToStatus(err)
	}
	out := &storagev1.DigestResponse{Count: res.Count, Digest: res.Digest.Bytes()}
	for _, sd := range res.Slots {
		out.Slots = append(out.Slots, &storagev1.SlotDigest{Slot: uint32(sd.Slot), Count: sd.Count, Digest: sd.Digest.Bytes()})
	}
	return out, nil
}
