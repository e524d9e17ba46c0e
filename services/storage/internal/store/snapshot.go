package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"sync"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/slotkv/slotkv/pkg/kvpack"
	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/pkg/slot"
)

// ErrSnapshotClosed: the snapshot was released (its job ended).
var ErrSnapshotClosed = fmt.Errorf("%w: snapshot released", rpcerr.ErrConflict)

// Snapshot is a consistent read view of the whole store pinned at one change
// sequence of a job's change log: it holds every change up to Seq and none
// after. It is one Badger read-only transaction shared by any number of
// concurrent scans and digests (Badger allows several iterators on a
// read-only transaction). Close releases it once the last user is done.
type Snapshot struct {
	txn *badger.Txn
	seq uint64
	// drops hides what was dropped before the snapshot (drop.go).
	drops dropFilter

	mu     sync.Mutex
	refs   int
	closed bool

	// record is what the scans read, for HeldKeys.
	record scanRecord
}

// OpenSnapshot opens a snapshot of the store at the head of l. It holds
// l's lock while it reads the head and opens the read view, and every
// captured write commits and advances the head under that lock, so the view
// holds exactly the changes up to the returned Seq.
func (s *Store) OpenSnapshot(l *ChangeLog) (*Snapshot, error) {
	if err := s.Ready(); err != nil {
		return nil, err
	}
	l.mu.Lock()
	sn := &Snapshot{txn: s.db.NewTransaction(false), seq: l.head.Load()}
	l.mu.Unlock()
	sn.drops = s.dropFilter(sn.txn)
	sn.record.limit = s.opts.heldKeysLimit()
	// What the snapshot holds must survive an OS crash: the migrator treats
	// every change up to Seq as copied by the snapshot.
	if err := s.sync(); err != nil {
		sn.txn.Discard()
		return nil, mapErr("sync before snapshot", err)
	}
	return sn, nil
}

// Seq is the change sequence the snapshot holds every change up to.
func (sn *Snapshot) Seq() uint64 { return sn.seq }

func (sn *Snapshot) acquire() error {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	if sn.closed {
		return ErrSnapshotClosed
	}
	sn.refs++
	return nil
}

func (sn *Snapshot) release() {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	sn.refs--
	if sn.closed && sn.refs == 0 {
		sn.txn.Discard()
	}
}

// Closed reports whether Close was called.
func (sn *Snapshot) Closed() bool {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	return sn.closed
}

// Close releases the snapshot: at once when no scan uses it, otherwise when
// the last one ends (running scans stop at their next batch).
func (sn *Snapshot) Close() {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	if sn.closed {
		return
	}
	sn.closed = true
	if sn.refs == 0 {
		sn.txn.Discard()
	}
}

// SnapshotBatch is one batch of a snapshot scan.
type SnapshotBatch struct {
	Items []KV
	// Packed is Items in packed form (pkg/kvpack); the items alias it.
	Packed []byte
	// Last is the storage key of the last item: resume after it.
	Last []byte
	// Digests are the count and digest of Items per slot, in slot order,
	// computed as the scan read them (see Digest): summed over the batches
	// of a scan they are the snapshot's digest, with no second read.
	Digests []SlotDigest
}

// Scan walks the snapshot's entries of ranges in storage order, starting
// after the storage key startAfter (nil: at the first), and hands them to
// emit in batches of at most maxRecords entries and, past the first entry,
// maxBytes of keys and values, each with its per-slot digests. The batch is
// only valid during emit. An emit
// error stops the scan and is returned; so does Close of the snapshot.
// The keys of every batch, and the interval the scan covered, are recorded
// before they are handed out (see HeldKeys).
func (sn *Snapshot) Scan(ranges []slot.Range, startAfter []byte, maxRecords, maxBytes int, emit func(SnapshotBatch) error) error {
	ranges, err := normalize(ranges)
	if err != nil {
		return err
	}
	if err := sn.acquire(); err != nil {
		return err
	}
	defer sn.release()
	var start []byte
	if startAfter != nil {
		start = append(bytes.Clone(startAfter), 0) // the first key after it
	}
	it := sn.txn.NewIterator(iteratorOptions())
	defer it.Close()

	var (
		items []KV
		digs  []SlotDigest
		arena []byte // the batch in packed form (pkg/kvpack)
		size  int
		last  []byte
		ferr  error
		h     = NewHasher()
		// dead are the keys of the expired entries walked since the last
		// batch: not handed out, but recorded, since they are on disk
		// until deleted; lastDead is the last of them. seen and recorded
		// count the entries walked and recorded; recordedTo is the last
		// key recorded.
		dead           [][]byte
		seen, recorded int
		lastDead       []byte
		recordedTo     []byte
	)
	flush := func() bool {
		if len(items) == 0 && len(dead) == 0 {
			return true
		}
		if sn.Closed() {
			ferr = ErrSnapshotClosed
			return false
		}
		sn.record.add(items, dead)
		recorded += len(items) + len(dead)
		// The last entry walked: the last item or the last expired
		// entry, whichever came later (the walk is in key order).
		to := last
		if bytes.Compare(lastDead, to) > 0 {
			to = lastDead
		}
		recordedTo = append(recordedTo[:0], to...)
		dead = dead[:0]
		if len(items) == 0 {
			return true
		}
		if ferr = emit(SnapshotBatch{Items: items, Packed: arena, Last: last, Digests: digs}); ferr != nil {
			return false
		}
		items, digs, arena, size = items[:0], digs[:0], arena[:0], 0
		return true
	}
	now := NowMs()
	// Every entry is walked (now 0): an expired one is recorded, not
	// handed out.
	walk(it, sn.drops, ranges, nil, start, 0, func(item *badger.Item) bool {
		k := item.Key()
		if expired, err := itemExpired(item, now); expired && err == nil {
			dead = append(dead, bytes.Clone(k))
			lastDead = append(lastDead[:0], k...)
			seen++
			return len(dead) < maxRecords || flush()
		}
		n := len(k) + int(item.ValueSize())
		if len(items) >= maxRecords || (len(items) > 0 && size+n > maxBytes) {
			if !flush() {
				return false
			}
		}
		if arena == nil {
			arena = make([]byte, 0, maxBytes+maxBytes/8)
		}
		// The batch is laid out packed as it is read: Packed is the arena,
		// and each item's key and value alias it. Earlier slices stay valid
		// when append moves the arena: they keep the old array, which
		// nothing writes to until the batch is emitted. An expiring
		// entry is preceded by its kvpack expiry marker.
		userKey := k[slot.PrefixLen:]
		var exp int64
		if exp, ferr = itemExpiry(item); ferr != nil {
			return false
		}
		if exp != 0 {
			arena = kvpack.AppendMarker(arena, exp)
		}
		arena = binary.AppendUvarint(arena, uint64(len(userKey)))
		kFrom := len(arena)
		arena = append(arena, userKey...)
		kEnd := len(arena)
		var vFrom int
		if ferr = userValue(item, func(v []byte, _ int64) error {
			arena = binary.AppendUvarint(arena, uint64(len(v)))
			vFrom = len(arena)
			arena = append(arena, v...)
			return nil
		}); ferr != nil {
			return false
		}
		kv := KV{
			Slot:      slotOfStorageKey(k),
			Key:       arena[kFrom:kEnd:kEnd],
			Value:     arena[vFrom:len(arena):len(arena)],
			ExpiresAt: exp,
		}
		items = append(items, kv)
		seen++
		if len(digs) == 0 || digs[len(digs)-1].Slot != kv.Slot {
			digs = append(digs, SlotDigest{Slot: kv.Slot})
		}
		d := &digs[len(digs)-1]
		d.Count++
		h.AddExpiring(&d.Digest, kv.Key, kv.Value, exp)
		last = append(last[:0], k...)
		size += n
		return true
	})
	walked := ferr == nil
	if walked {
		flush()
	}
	// The scan covered the ranges (from start) up to the last key it
	// recorded, or to their end when it walked them all and recorded
	// every entry it walked (the last batch's emit may still have failed:
	// its keys are recorded).
	switch {
	case walked && recorded == seen:
		sn.record.cover(ranges, start, nil)
	case recordedTo != nil:
		sn.record.cover(ranges, start, append(recordedTo, 0))
	}
	return ferr
}

// Digest counts and digests the snapshot's entries of ranges, per slot.
func (sn *Snapshot) Digest(ctx context.Context, ranges []slot.Range) (DigestResult, error) {
	ranges, err := normalize(ranges)
	if err != nil {
		return DigestResult{}, err
	}
	if err := sn.acquire(); err != nil {
		return DigestResult{}, err
	}
	defer sn.release()
	it := sn.txn.NewIterator(iteratorOptions())
	defer it.Close()
	return digestWalk(ctx, it, sn.drops, ranges, true, NowMs())
}
