package store

import (
	"bytes"
	"context"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/slotkv/slotkv/pkg/slot"
)

// Scan limits.
const (
	// DefaultScanLimit is the limit of a scan that gives none.
	DefaultScanLimit = 1000
	// MaxScanLimit is the largest limit a scan accepts.
	MaxScanLimit = 10000
	// MaxScanBytes bounds one scan result (keys, values and per-item framing),
	// so a page of large values stays below gRPC's default 4 MiB message
	// limit. A scan always returns at least one item, whatever its size.
	MaxScanBytes = 4<<20 - 64<<10
	// itemOverhead approximates the protobuf framing of one scanned item.
	itemOverhead = 20
)

// Position is a place in storage order: the first key of Slot that is >= Key.
type Position struct {
	Slot uint16
	Key  []byte
}

// ScanOptions selects what Scan returns.
type ScanOptions struct {
	// Ranges to scan; they may be unsorted or overlap (they are merged).
	Ranges []slot.Range
	// Prefix keeps only keys starting with it.
	Prefix []byte
	// Start, when set, skips everything before it (inclusive start).
	Start *Position
	// Limit is the maximum number of items; 0 means DefaultScanLimit.
	Limit int
	// KeysOnly leaves values out (and does not read them).
	KeysOnly bool
	// MaxBytes overrides MaxScanBytes when positive (tests).
	MaxBytes int
}

// KV is one scanned entry.
type KV struct {
	Slot      uint16
	Key       []byte
	Value     []byte // nil with KeysOnly
	ExpiresAt int64  // Unix ms; 0: never
}

// ScanResult is one page of a scan.
type ScanResult struct {
	Items []KV
	// Next is where to continue: the last returned key + "\x00" in its slot.
	// Nil when the scan is complete.
	Next *Position
}

// normalize validates and merges ranges into storage order.
func normalize(ranges []slot.Range) ([]slot.Range, error) {
	if len(ranges) == 0 {
		return nil, fmt.Errorf("%w: no slot ranges given", ErrBadScan)
	}
	rs, err := slot.NewRangeSet(ranges...)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadScan, err)
	}
	return rs.Ranges(), nil
}

// walk calls visit for every entry of ranges (sorted, disjoint) in storage
// order that is at or after start (a storage key, or nil), whose user key
// has prefix, that f does not hide (dropped) and that has not expired at
// now, until visit returns false. With
// a prefix it seeks to the prefix in each slot, jumping straight over slots
// that hold nothing. Expiry costs nothing for entries without one, and a
// metadata check for the rest but those in their last second (expiry.go).
func walk(it *badger.Iterator, f dropFilter, ranges []slot.Range, prefix, start []byte, now int64, visit func(*badger.Item) bool) {
	fn := func(item *badger.Item) bool {
		if f.hides(item) {
			return true
		}
		// A header that does not read is the caller's error to meet
		// when it reads the value; the entry is passed on.
		if dead, err := itemExpired(item, now); dead && err == nil {
			return true
		}
		return visit(item)
	}
	seek := make([]byte, 0, slot.PrefixLen+len(prefix))
	if len(prefix) == 0 {
		for _, r := range ranges {
			lo, hi := r.KeyBounds()
			from := lo[:]
			if start != nil && bytes.Compare(start, from) > 0 {
				from = start
			}
			if bytes.Compare(from, hi[:]) >= 0 {
				continue
			}
			for it.Seek(from); it.Valid(); it.Next() {
				item := it.Item()
				if bytes.Compare(item.Key(), hi[:]) >= 0 {
					break
				}
				if !fn(item) {
					return
				}
			}
		}
		return
	}
	var startSlot uint16
	if start != nil {
		startSlot, _, _ = slot.SplitKey(start)
	}
	for _, r := range ranges {
		s := int(r.Start)
		if start != nil {
			s = max(s, int(startSlot))
		}
		for s <= int(r.End) {
			seek = slot.AppendKey(seek[:0], uint16(s), prefix)
			from := seek
			if start != nil && s == int(startSlot) && bytes.Compare(start, from) > 0 {
				from = start
			}
			it.Seek(from)
			if !it.Valid() {
				return // nothing at all after this point
			}
			k := it.Item().Key()
			if k[0] == SystemPrefix {
				return // past every slot
			}
			ks := int(k[0])<<8 | int(k[1])
			if ks > s {
				s = ks // skip empty slots in one step
				continue
			}
			for ; it.Valid(); it.Next() {
				item := it.Item()
				if !bytes.HasPrefix(item.Key(), seek) {
					break
				}
				if !fn(item) {
					return
				}
			}
			s++
		}
	}
}

func startKey(p *Position) ([]byte, error) {
	if p == nil {
		return nil, nil
	}
	if p.Slot > slot.MaxSlot {
		return nil, fmt.Errorf("%w: start slot %d out of range 0-%d", ErrBadScan, p.Slot, slot.MaxSlot)
	}
	return slot.AppendKey(nil, p.Slot, p.Key), nil
}

// Scan returns one page of the entries of o.Ranges in storage order.
func (s *Store) Scan(o ScanOptions) (ScanResult, error) {
	ranges, err := normalize(o.Ranges)
	if err != nil {
		return ScanResult{}, err
	}
	limit := o.Limit
	switch {
	case limit < 0 || limit > MaxScanLimit:
		return ScanResult{}, fmt.Errorf("%w: limit %d is out of 0-%d", ErrBadScan, limit, MaxScanLimit)
	case limit == 0:
		limit = DefaultScanLimit
	}
	budget := o.MaxBytes
	if budget <= 0 {
		budget = MaxScanBytes
	}
	start, err := startKey(o.Start)
	if err != nil {
		return ScanResult{}, err
	}

	// Keys and values are copied into one arena and sliced out at the end:
	// two allocations per page instead of two per item.
	type span struct {
		slot            uint16
		kFrom, kTo, vTo int
		exp             int64
	}
	var (
		arena []byte
		spans = make([]span, 0, min(limit, 256))
		size  int
		more  bool
		verr  error
	)
	err = s.db.View(func(txn *badger.Txn) error {
		io := iteratorOptions()
		io.PrefetchSize = min(limit, io.PrefetchSize)
		it := txn.NewIterator(io)
		defer it.Close()
		walk(it, s.dropFilter(txn), ranges, o.Prefix, start, NowMs(), func(item *badger.Item) bool {
			n := len(item.Key()) + itemOverhead
			if !o.KeysOnly {
				n += int(item.ValueSize())
			}
			if len(spans) == limit || (len(spans) > 0 && size+n > budget) {
				more = true
				return false
			}
			size += n
			k := item.Key()
			sp := span{slot: uint16(k[0])<<8 | uint16(k[1]), kFrom: len(arena)}
			arena = append(arena, k[slot.PrefixLen:]...)
			sp.kTo = len(arena)
			if o.KeysOnly {
				sp.exp, verr = itemExpiry(item)
			} else {
				verr = userValue(item, func(v []byte, exp int64) error {
					arena = append(arena, v...)
					sp.exp = exp
					return nil
				})
			}
			if verr != nil {
				return false
			}
			sp.vTo = len(arena)
			spans = append(spans, sp)
			return true
		})
		return verr
	})
	if err != nil {
		return ScanResult{}, mapErr("scan", err)
	}
	res := ScanResult{Items: make([]KV, len(spans))}
	for i, sp := range spans {
		kv := KV{Slot: sp.slot, Key: arena[sp.kFrom:sp.kTo:sp.kTo], ExpiresAt: sp.exp}
		if !o.KeysOnly {
			kv.Value = arena[sp.kTo:sp.vTo:sp.vTo]
		}
		res.Items[i] = kv
	}
	if more {
		last := res.Items[len(res.Items)-1]
		next := make([]byte, len(last.Key)+1)
		copy(next, last.Key)
		res.Next = &Position{Slot: last.Slot, Key: next}
	}
	return res, nil
}

// Count returns the number of keys in ranges that have not expired,
// walking keys only (but for the headers of keys in their last second).
func (s *Store) Count(ctx context.Context, ranges []slot.Range) (uint64, error) {
	ranges, err := normalize(ranges)
	if err != nil {
		return 0, err
	}
	var n uint64
	err = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(iteratorOptions())
		defer it.Close()
		walk(it, s.dropFilter(txn), ranges, nil, nil, NowMs(), func(*badger.Item) bool {
			n++
			return n%ctxCheckEvery != 0 || ctx.Err() == nil
		})
		return ctx.Err()
	})
	if err != nil {
		return 0, mapErr("count", err)
	}
	return n, nil
}

// KeyCount returns the number of user keys in the store.
func (s *Store) KeyCount(ctx context.Context) (uint64, error) {
	return s.Count(ctx, []slot.Range{{Start: 0, End: slot.MaxSlot}})
}

// SlotDigest is the digest of one slot.
type SlotDigest struct {
	Slot   uint16
	Count  uint64
	Digest Digest
}

// DigestResult is the digest of a range set.
type DigestResult struct {
	Count  uint64
	Digest Digest
	// Slots holds one digest per non-empty slot, in slot order, when asked.
	Slots []SlotDigest
}

// Digest counts and digests the entries of ranges from one snapshot.
func (s *Store) Digest(ctx context.Context, ranges []slot.Range, perSlot bool) (DigestResult, error) {
	ranges, err := normalize(ranges)
	if err != nil {
		return DigestResult{}, err
	}
	var res DigestResult
	err = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(iteratorOptions())
		defer it.Close()
		res, err = digestWalk(ctx, it, s.dropFilter(txn), ranges, perSlot, NowMs())
		return err
	})
	if err != nil {
		return DigestResult{}, mapErr("digest", err)
	}
	return res, nil
}

// digestWalk digests the entries of ranges (normalized) read through it.
// ctxCheckEvery is how many entries a long walk (count, digest) reads
// between two looks at its context: a canceled call stops promptly without
// paying for the check per entry.
const ctxCheckEvery = 1024

func digestWalk(ctx context.Context, it *badger.Iterator, f dropFilter, ranges []slot.Range, perSlot bool, now int64) (DigestResult, error) {
	var (
		res  DigestResult
		cur  *SlotDigest
		verr error
	)
	h := NewHasher()
	walk(it, f, ranges, nil, nil, now, func(item *badger.Item) bool {
		k := item.Key()
		sl := uint16(k[0])<<8 | uint16(k[1])
		d := &res.Digest
		if perSlot {
			if cur == nil || cur.Slot != sl {
				res.Slots = append(res.Slots, SlotDigest{Slot: sl})
				cur = &res.Slots[len(res.Slots)-1]
			}
			cur.Count++
			d = &cur.Digest
		}
		verr = userValue(item, func(v []byte, exp int64) error {
			h.AddExpiring(d, k[slot.PrefixLen:], v, exp)
			return nil
		})
		res.Count++
		if verr == nil && res.Count%ctxCheckEvery == 0 {
			verr = ctx.Err()
		}
		return verr == nil
	})
	if verr != nil {
		return DigestResult{}, mapErr("digest", verr)
	}
	if perSlot {
		for _, sd := range res.Slots {
			res.Digest = res.Digest.Combine(sd.Digest)
		}
	}
	return res, nil
}
