package kv

import (
	"context"
	"fmt"
	"time"
	"unicode/utf8"

	routerv1 "github.com/slotkv/slotkv/gen/slotkv/router/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/pkg/slot"
)

// MaxKeys caps the keys (entries) of one multi-key call.
const MaxKeys = 10000

func invalid(field, format string, args ...any) error {
	return rpcerr.ToStatus(rpcerr.InvalidField(field, format, args...))
}

// checkKeyAt is checkKey for element i of a repeated field; the field name
// ("keys[3]") is formatted only for a key that is refused.
func (s *Service) checkKeyAt(field string, i int, key string) error {
	if key != "" && len(key) <= s.lim.MaxKeyBytes {
		return nil
	}
	return s.checkKey(fmt.Sprintf("%s[%d]", field, i), key)
}

// oneWrite is the call of a single-key write in naming mode.
func oneWrite(key []byte, m *storagev1.Mutation) *subReq {
	return &subReq{kind: opWrite, keys: [][]byte{key}, muts: []*storagev1.Mutation{m},
		slots: []uint16{slot.Of(key)}, rename: func(int, string) string { return "key" }}
}

// namingGet is Get in naming mode: a one-key read of one complete layout.
func (s *Service) namingGet(ctx context.Context, key []byte) (*routerv1.GetResponse, error) {
	q := &subReq{kind: opGet, keys: [][]byte{key}, slots: []uint16{slot.Of(key)},
		rename: func(int, string) string { return "key" }}
	items, where, _, err := s.b.get(ctx, q, false)
	if err != nil {
		return nil, err
	}
	it := items[0]
	if it == nil || !it.GetFound() {
		return nil, rpcerr.ToStatus(fmt.Errorf("%w: key %q", rpcerr.ErrNotFound, key))
	}
	return getResponse(key, it.GetValue(), it.GetExpiresAtMs(), uint32(q.slots[0]), where[0])
}

// setData sets an entry's value: text when it is valid UTF-8, value
// otherwise.
func setData(e *routerv1.Entry, v []byte) {
	if utf8.Valid(v) {
		e.Data = &routerv1.Entry_Text{Text: string(v)}
	} else {
		e.Data = &routerv1.Entry_Value{Value: v}
	}
}

func failuresProto(fs []failure) []*routerv1.PartitionFailure {
	out := make([]*routerv1.PartitionFailure, len(fs))
	for i, f := range fs {
		out[i] = f.proto()
	}
	return out
}

// MultiGet reads many keys: one BatchGet per partition, answers in request
// order. A key listed several times is read once and answered once per
// occurrence.
func (s *Service) MultiGet(ctx context.Context, req *routerv1.MultiGetRequest) (*routerv1.MultiGetResponse, error) {
	keys, err := s.keysOf(req.GetKeys(), req.GetMixedKeys())
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return &routerv1.MultiGetResponse{}, nil
	}
	mixed := len(req.GetMixedKeys()) > 0
	q, uniq, first := distinctGets(keys)
	q.rename = func(pos int, _ string) string { return keyField(mixed, first[pos]) }
	items, where, failed, err := s.b.get(ctx, q, req.GetAllowPartial())
	if err != nil {
		return nil, err
	}
	now := time.Now().UnixMilli()
	out := &routerv1.MultiGetResponse{Entries: make([]*routerv1.Entry, len(keys)), Failed: failuresProto(failed)}
	slab := make([]routerv1.Entry, len(keys))
	for i, k := range keys {
		u := uniq[i]
		e := &slab[i]
		e.Key, e.KeyBytes = keyFields(k)
		e.Slot, e.Partition = uint32(q.slots[u]), where[u]
		if it := items[u]; it != nil && it.GetFound() && live(it.GetExpiresAtMs(), now) {
			e.Found = true
			e.ExpiresAtMs, e.TtlMs = it.GetExpiresAtMs(), ttlLeft(it.GetExpiresAtMs(), now)
			setData(e, it.GetValue())
		}
		out.Entries[i] = e
	}
	return out, nil
}

// MultiPut writes many keys: one BatchWrite per partition, atomic per
// partition, not across partitions. A key listed several times takes its
// last value.
func (s *Service) MultiPut(ctx context.Context, req *routerv1.MultiPutRequest) (*routerv1.MultiPutResponse, error) {
	es := req.GetEntries()
	if len(es) > MaxKeys {
		return nil, invalid("entries", "%d entries, at most %d per call", len(es), MaxKeys)
	}
	if len(es) == 0 {
		return &routerv1.MultiPutResponse{}, nil
	}
	q := &subReq{kind: opWrite, keys: make([][]byte, len(es)), muts: make([]*storagev1.Mutation, len(es)), slots: make([]uint16, len(es))}
	slab := make([]storagev1.Mutation, len(es))
	now := time.Now()
	for i, e := range es {
		var (
			key []byte
			err error
		)
		if k := e.GetKey(); k != "" && len(e.GetKeyBytes()) == 0 && len(k) <= s.lim.MaxKeyBytes {
			key = []byte(k) // the common case, without formatting a prefix
		} else if key, err = s.keyOf(fmt.Sprintf("entries[%d].", i), k, e.GetKeyBytes()); err != nil {
			return nil, err
		}
		var exp int64
		if e.GetTtlMs() != 0 || e.GetExpiresAtMs() != 0 {
			if exp, err = expiryOf(fmt.Sprintf("entries[%d].", i), e.GetTtlMs(), e.GetExpiresAtMs(), now); err != nil {
				return nil, err
			}
		}
		var v []byte
		field := "text"
		switch d := e.GetData().(type) {
		case *routerv1.KeyValue_Text:
			v = []byte(d.Text)
		case *routerv1.KeyValue_Value:
			v, field = d.Value, "value"
			if v == nil {
				v = []byte{}
			}
		default:
			return nil, invalid(fmt.Sprintf("entries[%d].text", i), "the value is missing: set text (a UTF-8 string) or value (base64 bytes)")
		}
		if len(v) > s.lim.MaxValueBytes {
			return nil, s.checkValue(fmt.Sprintf("entries[%d].%s", i, field), v)
		}
		q.keys[i] = key
		q.slots[i] = slot.Of(key)
		slab[i] = storagev1.Mutation{Key: key, Value: v, ExpiresAtMs: exp}
		q.muts[i] = &slab[i]
	}
	q.rename = func(pos int, suffix string) string {
		switch suffix {
		case ".value":
			if _, ok := es[pos].GetData().(*routerv1.KeyValue_Text); ok {
				return fmt.Sprintf("entries[%d].text", pos)
			}
			return fmt.Sprintf("entries[%d].value", pos)
		case ".key":
			if len(es[pos].GetKeyBytes()) > 0 {
				return fmt.Sprintf("entries[%d].key_bytes", pos)
			}
			return fmt.Sprintf("entries[%d].key", pos)
		}
		return fmt.Sprintf("entries[%d]", pos)
	}
	if _, err := s.b.write(ctx, q); err != nil {
		return nil, err
	}
	return &routerv1.MultiPutResponse{Written: uint32(len(es))}, nil
}

// MultiDelete removes many keys: one BatchWrite per partition. Deleting an
// absent key succeeds; deleted counts the keys asked for.
func (s *Service) MultiDelete(ctx context.Context, req *routerv1.MultiDeleteRequest) (*routerv1.MultiDeleteResponse, error) {
	keys, err := s.keysOf(req.GetKeys(), req.GetMixedKeys())
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return &routerv1.MultiDeleteResponse{}, nil
	}
	mixed := len(req.GetMixedKeys()) > 0
	q := &subReq{kind: opWrite, keys: keys, muts: make([]*storagev1.Mutation, len(keys)), slots: make([]uint16, len(keys))}
	slab := make([]storagev1.Mutation, len(keys))
	for i, k := range keys {
		q.slots[i] = slot.Of(k)
		slab[i] = storagev1.Mutation{Key: k, Delete: true}
		q.muts[i] = &slab[i]
	}
	q.rename = func(pos int, _ string) string { return keyField(mixed, pos) }
	if _, err := s.b.write(ctx, q); err != nil {
		return nil, err
	}
	return &routerv1.MultiDeleteResponse{Deleted: uint32(len(keys))}, nil
}

// Scan lists keys of every partition as one stream ordered by (slot, key):
// each partition returns up to limit entries from the position, the pages
// are merged (k-way, container/heap) and cut at limit. next_cursor resumes
// right after the last entry returned.
func (s *Service) Scan(ctx context.Context, req *routerv1.ScanRequest) (*routerv1.ScanResponse, error) {
	limit := req.GetLimit()
	switch {
	case limit == 0:
		limit = DefaultScanLimit
	case limit > MaxScanLimit:
		return nil, invalid("limit", "%d is above the maximum of %d", limit, MaxScanLimit)
	}
	var start *storagev1.ScanPosition
	switch {
	case req.GetCursor() != "":
		p, err := decodeCursor(req.GetCursor())
		if err != nil {
			return nil, rpcerr.ToStatus(err)
		}
		start = p
	case req.GetStartKey() != "" && len(req.GetStartKeyBytes()) > 0:
		return nil, invalid("start_key_bytes", "set one of start_key and start_key_bytes, not both")
	case req.GetStartKey() != "":
		start = &storagev1.ScanPosition{Slot: uint32(slot.OfString(req.GetStartKey())), Key: []byte(req.GetStartKey())}
	case len(req.GetStartKeyBytes()) > 0:
		start = &storagev1.ScanPosition{Slot: uint32(slot.Of(req.GetStartKeyBytes())), Key: req.GetStartKeyBytes()}
	}
	prefix := []byte(req.GetPrefix())
	if len(req.GetPrefixBytes()) > 0 {
		if len(prefix) > 0 {
			return nil, invalid("prefix_bytes", "set one of prefix and prefix_bytes, not both")
		}
		prefix = req.GetPrefixBytes()
	}
	q := &subReq{kind: opScan, scan: &storagev1.ScanRequest{
		Prefix: prefix, Start: start, Limit: limit, KeysOnly: req.GetKeysOnly(),
	}}
	parts, failed, err := s.b.scan(ctx, q, req.GetAllowPartial())
	if err != nil {
		return nil, err
	}
	pages := make([]*storagev1.ScanResponse, len(parts))
	for i, p := range parts {
		pages[i] = p.scan
	}
	items, from, more := mergePages(pages, int(limit))
	// Entries that expired by the router's clock since the node read them
	// are left out; the cursor still follows the last entry merged, so the
	// next page starts after them.
	now := time.Now().UnixMilli()
	out := &routerv1.ScanResponse{Entries: make([]*routerv1.Entry, 0, len(items)), Failed: failuresProto(failed)}
	slab := make([]routerv1.Entry, len(items))
	for i, kv := range items {
		exp := kv.GetExpiresAtMs()
		if !live(exp, now) {
			continue
		}
		e := &slab[i]
		e.Key, e.KeyBytes = keyFields(kv.GetKey())
		e.Slot, e.Found, e.Partition = kv.GetSlot(), true, parts[from[i]].name
		e.ExpiresAtMs, e.TtlMs = exp, ttlLeft(exp, now)
		if !req.GetKeysOnly() {
			setData(e, kv.GetValue())
		}
		out.Entries = append(out.Entries, e)
	}
	switch {
	case (more || len(failed) > 0) && len(items) > 0:
		// With a failed partition the scan is not complete even when the
		// others ran out: keep a cursor so the caller can go on.
		last := items[len(items)-1]
		out.NextCursor = encodeCursor(uint16(last.GetSlot()), last.GetKey())
	case len(failed) > 0:
		out.NextCursor = req.GetCursor()
	}
	return out, nil
}

// Count counts the keys of every partition.
func (s *Service) Count(ctx context.Context, req *routerv1.CountRequest) (*routerv1.CountResponse, error) {
	n, failed, err := s.b.count(ctx, req.GetAllowPartial())
	if err != nil {
		return nil, err
	}
	return &routerv1.CountResponse{Count: n, Failed: failuresProto(failed)}, nil
}

// distinctGets is a read of each distinct key once: uniq[i] is the
// position in q of keys[i], first[u] the first position of q's key u.
func distinctGets(keys [][]byte) (q *subReq, uniq, first []int) {
	q = &subReq{kind: opGet}
	seen := make(map[string]int, len(keys))
	uniq = make([]int, len(keys))
	for i, k := range keys {
		u, ok := seen[string(k)]
		if !ok {
			u = len(q.keys)
			seen[string(k)] = u
			q.keys = append(q.keys, k)
			q.slots = append(q.slots, slot.Of(k))
			first = append(first, i)
		}
		uniq[i] = u
	}
	return q, uniq, first
}
