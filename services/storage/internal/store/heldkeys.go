package store

import (
	"bytes"
	"fmt"
	"slices"
	"sync"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/slotkv/slotkv/pkg/slot"
)

// The keys a source's handed-off slots hold, known without reading them.
//
// After a hand-off the source deletes every key of the slots it gave away.
// Finding those keys means reading every block of the slots again, values
// included, which costs about as much as the snapshot scan that copied
// them. But the snapshot's scans already read every key: a Snapshot
// records the keys its scans hand out, and the key intervals those scans
// covered. At the end of the job, HeldKeys replays the change log (every
// write to the slots since the job began, in commit order) over them, which
// gives the keys the slots hold now, and DeleteSlots deletes exactly those.
//
// The list is used only when it is exact: the scans covered every key
// interval of the slots. It is not kept when a scan stopped early and its
// interval was never scanned again, when the record went over its memory
// cap (Options.HeldKeysBytes), or across a restart (a snapshot does not
// survive one); DeleteSlots then reads the keys as before. Exactness
// matters beyond disk space: a cleanup that succeeds marks its slots
// empty, and a destination of those slots later skips its read for
// leftovers (package migration), so a key missed here would come back.

// DefaultHeldKeysBytes caps the memory one snapshot spends recording the
// keys its scans read: about 2 million keys of 8 bytes.
const DefaultHeldKeysBytes = 64 << 20

// keyOverhead is the memory a recorded key costs beyond its bytes: its
// slice header.
const keyOverhead = 24

// keySpan is the storage-key interval [lo, hi).
type keySpan struct{ lo, hi []byte }

// scanRecord is what the scans of one snapshot read: their keys (storage
// keys, expired ones included: they are on disk until deleted) and the
// intervals they covered. Concurrent scans share it, taking it once per
// batch.
type scanRecord struct {
	mu      sync.Mutex
	limit   int // bytes; <= 0: record nothing
	size    int
	over    bool
	keys    [][]byte
	arena   []byte
	covered []keySpan
}

// add records the keys of a batch, and those of the expired entries
// walked with it (storage keys), before the batch is handed out.
func (r *scanRecord) add(items []KV, dead [][]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, kv := range items {
		if !r.grow(slot.PrefixLen + len(kv.Key)) {
			return
		}
		at := len(r.arena)
		r.arena = slot.AppendKey(r.arena, kv.Slot, kv.Key)
		r.keys = append(r.keys, r.arena[at:len(r.arena):len(r.arena)])
	}
	for _, k := range dead {
		if !r.grow(len(k)) {
			return
		}
		at := len(r.arena)
		r.arena = append(r.arena, k...)
		r.keys = append(r.keys, r.arena[at:len(r.arena):len(r.arena)])
	}
}

// grow makes room in the arena for a key of n bytes, and reports false
// (dropping everything recorded) when the record goes over its cap.
func (r *scanRecord) grow(n int) bool {
	if r.over {
		return false
	}
	if r.size += n + keyOverhead; r.size > r.limit {
		r.over = true
		r.keys, r.arena, r.covered = nil, nil, nil
		return false
	}
	if len(r.arena)+n > cap(r.arena) {
		r.arena = make([]byte, 0, max(256<<10, n))
	}
	return true
}

// cover records that a scan of ranges (normalized) starting at start (nil:
// at each range's first key) handed out, and recorded, every key before
// end (nil: every key of the ranges).
func (r *scanRecord) cover(ranges []slot.Range, start, end []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.over {
		return
	}
	for _, rg := range ranges {
		lo, hi := rg.KeyBounds()
		from, to := lo[:], hi[:]
		if start != nil && bytes.Compare(start, from) > 0 {
			from = start
		}
		if end != nil && bytes.Compare(end, to) < 0 {
			to = end
		}
		if bytes.Compare(from, to) < 0 {
			r.covered = append(r.covered, keySpan{lo: bytes.Clone(from), hi: bytes.Clone(to)})
		}
	}
}

// coverage merges the covered intervals and reports whether they cover
// every key of ranges (normalized), and whether any two overlapped (a key
// may then have been recorded twice).
func (r *scanRecord) coverage(ranges []slot.Range) (whole, overlapped bool) {
	spans := slices.Clone(r.covered)
	slices.SortFunc(spans, func(a, b keySpan) int { return bytes.Compare(a.lo, b.lo) })
	var merged []keySpan
	for _, s := range spans {
		if k := len(merged); k > 0 && bytes.Compare(s.lo, merged[k-1].hi) <= 0 {
			if bytes.Compare(s.lo, merged[k-1].hi) < 0 {
				overlapped = true
			}
			if bytes.Compare(s.hi, merged[k-1].hi) > 0 {
				merged[k-1].hi = s.hi
			}
			continue
		}
		merged = append(merged, s)
	}
	for _, rg := range ranges {
		lo, hi := rg.KeyBounds()
		i, found := slices.BinarySearchFunc(merged, lo[:], func(s keySpan, k []byte) int {
			if bytes.Compare(s.hi, k) <= 0 {
				return -1
			}
			if bytes.Compare(s.lo, k) > 0 {
				return 1
			}
			return 0
		})
		if !found || bytes.Compare(merged[i].hi, hi[:]) < 0 {
			return false, overlapped
		}
	}
	return true, overlapped
}

// KeyList is the keys handed-off slots hold on their source, for
// DeleteSlots (DeleteOptions.Keys): storage keys, each once.
type KeyList struct {
	keys [][]byte
}

// Len is the number of keys.
func (l *KeyList) Len() int { return len(l.keys) }

// dedupe sorts the list and drops repeated keys.
func (l *KeyList) dedupe() {
	slices.SortFunc(l.keys, bytes.Compare)
	l.keys = slices.CompactFunc(l.keys, bytes.Equal)
}

// HeldKeys returns the keys the slots of ranges hold once the source job of
// l, whose snapshot is sn, has frozen at change final: the keys sn's scans
// read, with every change of l after sn's sequence, up to final, applied
// in order. ok is false when the list would not be exact (see above): the
// scans did not cover every key of ranges, or went over the memory cap.
// The caller makes sure nothing writes to the slots any more (they are
// frozen, or no longer this node's).
func (s *Store) HeldKeys(sn *Snapshot, l *ChangeLog, ranges []slot.Range, final uint64) (list *KeyList, ok bool, err error) {
	ranges, err = normalize(ranges)
	if err != nil {
		return nil, false, err
	}
	r := &sn.record
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.over || r.limit <= 0 {
		return nil, false, nil
	}
	whole, overlapped := r.coverage(ranges)
	if !whole {
		return nil, false, nil
	}
	// The last change of each key after the snapshot: a put keeps (or
	// adds) the key, a delete drops it.
	deleted := map[string]bool{}
	if err := s.changedKeys(l, sn.Seq(), final, func(key []byte, del bool) {
		deleted[string(key)] = del
	}); err != nil {
		return nil, false, err
	}
	list = &KeyList{keys: make([][]byte, 0, len(r.keys)+len(deleted))}
	for _, k := range r.keys {
		if len(deleted) > 0 {
			if _, changed := deleted[string(k)]; changed {
				continue
			}
		}
		list.keys = append(list.keys, k)
	}
	for k, del := range deleted {
		if !del {
			list.keys = append(list.keys, []byte(k))
		}
	}
	if overlapped {
		// A scan was repeated over keys another had recorded: each key
		// goes in once.
		list.dedupe()
	}
	return list, true, nil
}

// changedKeys calls fn with the storage key of every change of l after
// seq `after` up to `to`, in order, and whether it deletes the key.
func (s *Store) changedKeys(l *ChangeLog, after, to uint64, fn func(key []byte, del bool)) error {
	if to <= after {
		return nil
	}
	err := s.db.View(func(txn *badger.Txn) error {
		return eachChange(txn, l, after, 0, func(seq uint64, item *badger.Item) (bool, error) {
			if seq > to {
				return false, nil
			}
			return true, item.Value(func(v []byte) error {
				c, err := decodeChange(seq, v)
				if err != nil {
					return err
				}
				fn(slot.AppendKey(nil, c.Slot, c.Key), c.Delete)
				return nil
			})
		})
	})
	if err != nil {
		return fmt.Errorf("store: change log of job %s: %w", l.job, mapErr("read changes", err))
	}
	return nil
}
