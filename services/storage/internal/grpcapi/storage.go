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
	v, exp, _, err := s.c.Store.GetWithExpiry(req.GetKey())
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
	return &storagev1.GetResponse{Value: v, Slot: uint32(sl), ExpiresAtMs: exp}, nil
}

// Put writes one key.
func (s *StorageService) Put(_ context.Context, req *storagev1.PutRequest) (*storagev1.PutResponse, error) {
	sl, err := s.c.Limits.checkKey("key", req.GetKey())
	if err == nil {
		err = s.c.Limits.checkValue("value", req.GetValue())
	}
	if err == nil {
		err = checkExpiry("expires_at_ms", req.GetExpiresAtMs())
	}
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	_, err = s.c.Node.Write([]uint16{sl}, func() error {
		_, err := s.c.Store.PutExpiring(req.GetKey(), req.GetValue(), req.GetExpiresAtMs())
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
	var existed bool
	_, err = s.c.Node.Write([]uint16{sl}, func() (err error) {
		_, existed, err = s.c.Store.Delete(req.GetKey())
		return err
	})
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	return &storagev1.DeleteResponse{Slot: uint32(sl), Existed: existed}, nil
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
		p.Key, p.Value, p.Found, p.Slot, p.ExpiresAtMs = it.Key, it.Value, it.Found, uint32(it.Slot), it.ExpiresAt
		out[i] = p
	}
	return &storagev1.BatchGetResponse{Items: out}, nil
}

// BatchWrite applies puts and deletes atomically; with if_all_absent
// (MSETNX) only when no put's key exists, checked in the same transaction.
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
		if err := checkMutationExpiry(fmt.Sprintf("mutations[%d]", i), m.GetDelete(), m.GetExpiresAtMs()); err != nil {
			return nil, rpcerr.ToStatus(err)
		}
		slots[i] = sl
		muts[i] = store.Mutation{Key: m.GetKey(), Value: m.GetValue(), Delete: m.GetDelete(), ExpiresAt: m.GetExpiresAtMs()}
	}
	var res store.BatchResult
	_, err := s.c.Node.Write(slots, func() (err error) {
		res, err = s.c.Store.WriteBatch(muts, req.GetIfAllAbsent())
		return err
	})
	if err != nil {
		if errors.Is(err, store.ErrBatchTooLarge) {
			err = rpcerr.InvalidField("mutations", "%v", err)
		}
		return nil, rpcerr.ToStatus(err)
	}
	return &storagev1.BatchWriteResponse{Applied: res.Applied, Deleted: uint32(res.Deleted)}, nil
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
	if err := s.c.Node.CheckRanges(rs); err != nil {
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
	if err := s.c.Node.CheckRanges(rs); err != nil { // again after reading, as in Get
		return nil, rpcerr.ToStatus(err)
	}
	out := &storagev1.ScanResponse{Items: make([]*storagev1.KeyValue, len(res.Items))}
	slab := make([]storagev1.KeyValue, len(res.Items))
	for i, kv := range res.Items {
		p := &slab[i]
		p.Key, p.Value, p.Slot, p.ExpiresAtMs = kv.Key, kv.Value, uint32(kv.Slot), kv.ExpiresAt
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
	if err := s.c.Node.CheckRanges(rs); err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	if len(rs) == 0 {
		return &storagev1.CountResponse{}, nil
	}
	n, err := s.c.Store.Count(ctx, rs)
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	if err := s.c.Node.CheckRanges(rs); err != nil { // again after reading, as in Get
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
	if err := s.c.Node.CheckRanges(rs); err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	if len(rs) == 0 {
		return &storagev1.DigestResponse{Digest: store.Digest{}.Bytes()}, nil
	}
	res, err := s.c.Store.Digest(ctx, rs, req.GetPerSlot())
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	if err := s.c.Node.CheckRanges(rs); err != nil { // again after reading, as in Get
		return nil, rpcerr.ToStatus(err)
	}
	out := &storagev1.DigestResponse{Count: res.Count, Digest: res.Digest.Bytes()}
	for _, sd := range res.Slots {
		out.Slots = append(out.Slots, &storagev1.SlotDigest{Slot: uint32(sd.Slot), Count: sd.Count, Digest: sd.Digest.Bytes()})
	}
	return out, nil
}

// checkExpiry refuses a negative expiry in field (0 means none).
func checkExpiry(field string, exp int64) error {
	if exp < 0 {
		return rpcerr.InvalidField(field, "%d is negative: an expiry is an absolute time in Unix milliseconds, or 0 for none", exp)
	}
	return nil
}

// checkMutationExpiry checks the expiry of a put or delete at field
// ("mutations[3]"): a delete carries none.
func checkMutationExpiry(field string, del bool, exp int64) error {
	if del && exp != 0 {
		return rpcerr.InvalidField(field+".expires_at_ms", "a delete carries no expiry")
	}
	return checkExpiry(field+".expires_at_ms", exp)
}

// updateOps maps the wire ops to the store's.
var updateOps = map[storagev1.UpdateOp]store.UpdateOp{
	storagev1.UpdateOp_UPDATE_OP_SET:     store.OpSet,
	storagev1.UpdateOp_UPDATE_OP_INCR_BY: store.OpIncrBy,
	storagev1.UpdateOp_UPDATE_OP_APPEND:  store.OpAppend,
	storagev1.UpdateOp_UPDATE_OP_EXPIRE:  store.OpExpire,
	storagev1.UpdateOp_UPDATE_OP_PERSIST: store.OpPersist,
	storagev1.UpdateOp_UPDATE_OP_GET_DEL: store.OpGetDel,
	storagev1.UpdateOp_UPDATE_OP_GET_EX:  store.OpGetEx,
}

// updateRequest validates an Update and converts it for the store.
func (s *StorageService) updateRequest(req *storagev1.UpdateRequest) (store.Update, error) {
	op, ok := updateOps[req.GetOp()]
	if !ok {
		return store.Update{}, rpcerr.InvalidField("op", "%v is not an update op", req.GetOp())
	}
	u := store.Update{
		Op: op, Value: req.GetValue(), Delta: req.GetDelta(), ExpiresAt: req.GetExpiresAtMs(),
		KeepTTL: req.GetKeepTtl(), Persist: req.GetPersist(), ReturnOld: req.GetReturnOld(),
		MaxValueBytes: s.c.Limits.MaxValueBytes,
	}
	switch c := req.GetCondition(); c {
	case storagev1.WriteCondition_WRITE_CONDITION_UNSPECIFIED:
	case storagev1.WriteCondition_WRITE_CONDITION_IF_ABSENT:
		u.Cond = store.IfAbsent
	case storagev1.WriteCondition_WRITE_CONDITION_IF_PRESENT:
		u.Cond = store.IfPresent
	default:
		return store.Update{}, rpcerr.InvalidField("condition", "%v is not a write condition", c)
	}
	switch c := req.GetExpireCondition(); c {
	case storagev1.ExpireCondition_EXPIRE_CONDITION_UNSPECIFIED:
	case storagev1.ExpireCondition_EXPIRE_CONDITION_NO_EXPIRY:
		u.ExpCnd = store.ExpireNoExpiry
	case storagev1.ExpireCondition_EXPIRE_CONDITION_HAS_EXPIRY:
		u.ExpCnd = store.ExpireHasExpiry
	case storagev1.ExpireCondition_EXPIRE_CONDITION_GREATER:
		u.ExpCnd = store.ExpireGreater
	case storagev1.ExpireCondition_EXPIRE_CONDITION_LESS:
		u.ExpCnd = store.ExpireLess
	default:
		return store.Update{}, rpcerr.InvalidField("expire_condition", "%v is not an expire condition", c)
	}
	// Fields an op does not read are refused, so a caller's mix-up (NX on
	// an INCRBY, a TTL on an APPEND) is an error, not silently ignored.
	bad := func(field string) error {
		return rpcerr.InvalidField(field, "is not used by %v", req.GetOp())
	}
	switch {
	case len(u.Value) > 0 && op != store.OpSet && op != store.OpAppend:
		return store.Update{}, bad("value")
	case u.Delta != 0 && op != store.OpIncrBy:
		return store.Update{}, bad("delta")
	case u.Cond != store.Always && op != store.OpSet:
		return store.Update{}, bad("condition")
	case u.ExpCnd != store.ExpireAlways && op != store.OpExpire:
		return store.Update{}, bad("expire_condition")
	case u.ExpiresAt != 0 && op != store.OpSet && op != store.OpExpire && op != store.OpGetEx:
		return store.Update{}, bad("expires_at_ms")
	case u.KeepTTL && op != store.OpSet:
		return store.Update{}, bad("keep_ttl")
	case u.Persist && op != store.OpGetEx:
		return store.Update{}, bad("persist")
	case u.ReturnOld && op != store.OpSet:
		return store.Update{}, bad("return_old")
	case u.KeepTTL && u.ExpiresAt != 0:
		return store.Update{}, rpcerr.InvalidField("keep_ttl", "keep_ttl and expires_at_ms exclude each other")
	case u.Persist && u.ExpiresAt != 0:
		return store.Update{}, rpcerr.InvalidField("persist", "persist and expires_at_ms exclude each other")
	case op == store.OpSet:
		if err := checkExpiry("expires_at_ms", u.ExpiresAt); err != nil {
			return store.Update{}, err
		}
		if err := s.c.Limits.checkValue("value", u.Value); err != nil {
			return store.Update{}, err
		}
	case op == store.OpAppend:
		if err := s.c.Limits.checkValue("value", u.Value); err != nil {
			return store.Update{}, err
		}
	}
	return u, nil
}

// Update applies one read-modify-write to one key atomically, under the
// same ownership and write-gate rules as Put (and captured like it while
// the key's slot migrates).
func (s *StorageService) Update(_ context.Context, req *storagev1.UpdateRequest) (*storagev1.UpdateResponse, error) {
	sl, err := s.c.Limits.checkKey("key", req.GetKey())
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	u, err := s.updateRequest(req)
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	var res store.UpdateResult
	_, err = s.c.Node.Write([]uint16{sl}, func() (err error) {
		res, err = s.c.Store.Update(req.GetKey(), u)
		return err
	})
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	return &storagev1.UpdateResponse{
		Slot: uint32(sl), Applied: res.Applied, OldFound: res.OldFound, OldValue: res.OldValue,
		NewInt: res.NewInt, NewLength: res.NewLen, ExpiresAtMs: res.ExpiresAt,
	}, nil
}

// FlushSlots deletes every key of ranges, which this node must accept
// writes to (owned or migrating; a frozen slot answers SLOT_FROZEN), in
// batches of store.DefaultDeleteBatch keys. Each batch holds the write
// gate and re-checks the ranges under it, and goes through the write path,
// so the deletes of a migrating slot are captured for its migration; a
// state change between two batches stops the flush with the error of the
// slot it affects (the keys deleted so far stay deleted).
func (s *StorageService) FlushSlots(ctx context.Context, req *storagev1.FlushSlotsRequest) (*storagev1.FlushSlotsResponse, error) {
	rs, err := ranges(s.c.Node, "ranges", req.GetRanges())
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	if err := s.c.Node.CheckRanges(rs); err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	if len(rs) == 0 { // serves nothing
		return &storagev1.FlushSlotsResponse{}, nil
	}
	n, err := s.c.Store.DeleteSlots(ctx, rs, store.DeleteOptions{
		Captured: true,
		Guard: func() (func(), error) {
			return s.c.Node.EndWrite, s.c.Node.Guard(func() error { return s.c.Node.CheckRanges(rs) })
		},
	})
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	return &storagev1.FlushSlotsResponse{DeletedKeys: n}, nil
}
