package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/slotkv/slotkv/pkg/slot"
)

// A drop empties slot ranges in one small transaction, whatever they hold:
// the range delete Badger lacks (RocksDB's DeleteRange, which Kvrocks' slot
// migration cleans up with). It writes one record per range; the record's
// Badger version, D, is the drop's commit timestamp. From then on every
// read treats an entry of the slot whose version is below D as absent,
// and a write after the drop (version above D) is read as usual. Reads
// decide that per entry from an array of the slots' D (dropFilter); a
// read transaction older than a drop (readTs below D) still sees what it
// saw before, as Badger's snapshots do.
//
// The entries stay on disk until the purge, a background loop, writes a
// tombstone for each: in transactions that read what they delete, so
// Badger's conflict detection fails a batch that a write of one of its
// keys committed into meanwhile (the slots came back to the node), and
// the batch is read again. Once a range's entries are purged its record
// is deleted; the in-memory D stays (until the store is reopened): it
// hides only entries that now have tombstones over them, so a read that
// began before the tombstones never sees the old entries come back. (A
// read that loads the table after a later drop of the same slot replaced
// D, and whose transaction began before the first drop's purge ended,
// would see them: that takes a read spanning a migration of the slot
// back to the node and out again.) Records of ranges dropped again
// are purged each with its own D: the later one deletes the rest.
type drops struct {
	// mu serializes the changes of the records and the table.
	mu sync.Mutex
	// table holds each slot's D (0: none); nil while no slot has one. A
	// new table replaces it on each change (copy on write): reads load
	// it once per read.
	table atomic.Pointer[dropTable]
	// kick wakes the purge loop.
	kick chan struct{}
	// kps paces the purge (keys per second; 0: as fast as batches go): the
	// rate the last drop asked for.
	kps atomic.Uint64
	// purged counts the entries purged since the store opened.
	purged atomic.Uint64
	// held stops the purge before its next batch (for tests).
	held atomic.Bool
}

// dropTable maps each slot to the version its last drop committed at.
type dropTable [slot.Count]uint64

// dropRecordPrefix is the system name prefix of the drop records: one per
// dropped range, "drop/" and the range's first and last slot, two bytes
// each, an empty value.
const dropRecordPrefix = "drop/"

func dropKey(r slot.Range) []byte {
	from, to := slot.Prefix(r.Start), slot.Prefix(r.End)
	return systemKey(dropRecordPrefix + string(from[:]) + string(to[:]))
}

// dropRecord is one drop record read back: its range and version.
type dropRecord struct {
	r slot.Range
	d uint64
}

// eachDropRecord calls fn for every drop record, in key order, until fn
// returns false.
func (s *Store) eachDropRecord(fn func(dropRecord) bool) error {
	prefix := systemKey(dropRecordPrefix)
	return s.db.View(func(txn *badger.Txn) error {
		o := iteratorOptions()
		o.Prefix = prefix
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
			k := it.Item().Key()[len(prefix):]
			if len(k) != 2*slot.PrefixLen {
				return fmt.Errorf("%w: drop record %q: want two two-byte slots", ErrFormat, it.Item().Key())
			}
			r := slot.Range{Start: uint16(k[0])<<8 | uint16(k[1]), End: uint16(k[2])<<8 | uint16(k[3])}
			if err := r.Validate(); err != nil {
				return fmt.Errorf("%w: drop record %q: %v", ErrFormat, it.Item().Key(), err)
			}
			if !fn(dropRecord{r: r, d: it.Item().Version()}) {
				return nil
			}
		}
		return nil
	})
}

// purgeBatch is the keys one purge transaction reads (and deletes, when
// they are all dropped entries).
const purgeBatch = DefaultDeleteBatch

// dropFilter is the drops one read sees: those committed at or below its
// read timestamp. The zero filter hides nothing. A value, not a pointer:
// a read takes one without allocating.
type dropFilter struct {
	t      *dropTable
	readTs uint64
}

// dropFilter returns the filter of a read in txn (the zero filter when no
// slot has a drop).
func (s *Store) dropFilter(txn *badger.Txn) dropFilter {
	t := s.drops.table.Load()
	if t == nil {
		return dropFilter{}
	}
	return dropFilter{t: t, readTs: txn.ReadTs()}
}

// hides reports whether item, an entry of user data, was dropped.
func (f dropFilter) hides(item *badger.Item) bool {
	if f.t == nil {
		return false
	}
	k := item.Key()
	if len(k) < slot.PrefixLen || k[0] == SystemPrefix {
		return false
	}
	d := f.t[int(k[0])<<8|int(k[1])]
	return d != 0 && d <= f.readTs && item.Version() < d
}

// loadDrops reads the drop records into the table at open.
func (s *Store) loadDrops() error {
	s.drops.kick = make(chan struct{}, 1)
	var t dropTable
	n := 0
	err := s.eachDropRecord(func(rec dropRecord) bool {
		for sl := int(rec.r.Start); sl <= int(rec.r.End); sl++ {
			t[sl] = max(t[sl], rec.d)
		}
		n++
		return true
	})
	if err != nil {
		return fmt.Errorf("store: load drop records: %w", err)
	}
	if n > 0 {
		s.drops.table.Store(&t)
	}
	return nil
}

// dropSlots drops ranges (normalized) under o.Guard, and returns the keys
// they held: counted from o.Keys when given, else read (keys only) before
// the drop. The drop is synced before it returns: the callers record the
// slots as empty next, and an import into them trusts that.
func (s *Store) dropSlots(ctx context.Context, ranges []slot.Range, o DeleteOptions) (uint64, error) {
	var n uint64
	if o.Keys != nil {
		n = o.Keys.countIn(ranges)
	} else {
		var err error
		if n, err = s.Count(ctx, ranges); err != nil {
			return 0, err
		}
	}
	if err := s.commitDrop(ranges, o.Guard); err != nil {
		return 0, err
	}
	s.drops.kps.Store(o.KeysPerSecond)
	select {
	case s.drops.kick <- struct{}{}:
	default:
	}
	if err := s.SyncSystem(); err != nil {
		return 0, err
	}
	return n, nil
}

// commitDrop writes the drop records of ranges and publishes their
// version in the table, under guard (when set).
func (s *Store) commitDrop(ranges []slot.Range, guard func() (func(), error)) error {
	s.drops.mu.Lock()
	defer s.drops.mu.Unlock()
	if guard != nil {
		release, err := guard()
		if err != nil {
			return err
		}
		defer release()
	}
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	for _, r := range ranges {
		if err := txn.Set(dropKey(r), nil); err != nil {
			return mapErr("drop slots", err)
		}
	}
	if err := txn.Commit(); err != nil {
		return mapErr("drop slots commit", err)
	}
	// The records' version is the drop's: read it back (Badger does not
	// return a commit's timestamp).
	var d uint64
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(dropKey(ranges[0]))
		if err != nil {
			return err
		}
		d = item.Version()
		return nil
	})
	if err != nil {
		return mapErr("drop slots: read the drop's version", err)
	}
	t := new(dropTable)
	if cur := s.drops.table.Load(); cur != nil {
		*t = *cur
	}
	for _, r := range ranges {
		for sl := int(r.Start); sl <= int(r.End); sl++ {
			t[sl] = d
		}
	}
	s.drops.table.Store(t)
	return nil
}

// purgeLoop purges dropped entries at open and whenever a drop asks, and
// a second after a pass that failed, until ctx ends.
func (s *Store) purgeLoop(ctx context.Context) {
	for {
		var retry <-chan time.Time // nil: no retry, the next drop wakes it
		if err := s.purge(ctx); err != nil && ctx.Err() == nil {
			if s.opts.Logger != nil {
				s.opts.Logger.Warn("purge of dropped slots failed; it retries in a second", "err", err)
			}
			retry = time.After(time.Second)
		}
		select {
		case <-ctx.Done():
			return
		case <-s.drops.kick:
		case <-retry:
		}
	}
}

// purge deletes the dropped entries of every range whose record is on
// disk, and then the record, one record after the other.
func (s *Store) purge(ctx context.Context) error {
	for {
		var rec dropRecord
		found := false
		if err := s.eachDropRecord(func(r dropRecord) bool { rec, found = r, true; return false }); err != nil {
			return err
		}
		if !found {
			return nil
		}
		lo, hi := rec.r.KeyBounds()
		start := time.Now()
		var n uint64
		for next := bytes.Clone(lo[:]); next != nil; {
			if err := ctx.Err(); err != nil {
				return err
			}
			if s.drops.held.Load() {
				return nil
			}
			var deleted int
			var err error
			next, deleted, err = s.purgeBatch(next, hi[:], rec.d)
			if errors.Is(err, badger.ErrConflict) {
				continue // a write of a key read committed meanwhile: read again
			}
			if err != nil {
				return fmt.Errorf("purge of dropped slots %s: %w", rec.r, err)
			}
			s.drops.purged.Add(uint64(deleted))
			n += uint64(deleted)
			if err := pace(ctx, start, n, s.drops.kps.Load()); err != nil {
				return err
			}
		}
		if err := s.clearDrop(rec); err != nil {
			return fmt.Errorf("purge of dropped slots %s: %w", rec.r, err)
		}
		if log := s.opts.Logger; log != nil {
			log.Info("dropped slots purged", "slots", rec.r.String(), "keys", n,
				"took", time.Since(start).Round(time.Millisecond))
		}
	}
}

// purgeBatch reads up to purgeBatch keys of [from, to) in one read-write
// transaction, deletes those below version d and commits; it returns where
// the next batch starts (nil at to) and the keys deleted. The reads take
// part in conflict detection: a write of one of them committed after the
// batch read it fails the commit with badger.ErrConflict.
func (s *Store) purgeBatch(from, to []byte, d uint64) (next []byte, deleted int, err error) {
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	var (
		dead  [][]byte
		arena keyArena
	)
	func() {
		it := txn.NewIterator(iteratorOptions())
		defer it.Close()
		read := 0
		for it.Seek(from); it.Valid(); it.Next() {
			item := it.Item() // a read of the key, for conflict detection
			k := item.Key()
			if bytes.Compare(k, to) >= 0 {
				return
			}
			if read == purgeBatch {
				next = item.KeyCopy(nil)
				return
			}
			read++
			if item.Version() < d {
				dead = append(dead, arena.copy(k))
			}
		}
	}()
	if len(dead) == 0 {
		return next, 0, nil
	}
	for _, k := range dead {
		if err := txn.Delete(k); err != nil {
			return nil, 0, mapErr("purge", err)
		}
	}
	if err := txn.Commit(); err != nil {
		if errors.Is(err, badger.ErrConflict) {
			return from, 0, err
		}
		return nil, 0, mapErr("purge commit", err)
	}
	return next, len(dead), nil
}

// clearDrop deletes the record rec once its entries are purged, unless
// the range was dropped again since (the record is then the new drop's).
// The table keeps rec's D (see drops).
func (s *Store) clearDrop(rec dropRecord) error {
	s.drops.mu.Lock()
	defer s.drops.mu.Unlock()
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	item, err := txn.Get(dropKey(rec.r))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return mapErr("clear drop record", err)
	}
	if item.Version() != rec.d {
		return nil
	}
	if err := txn.Delete(dropKey(rec.r)); err != nil {
		return mapErr("clear drop record", err)
	}
	return mapErr("clear drop record commit", txn.Commit())
}

// PurgeStats is the state of the purge of dropped slots.
type PurgeStats struct {
	// PendingSlots is the slots whose dropped entries are still on disk.
	PendingSlots int64
	// PurgedKeys is the dropped entries deleted since the store opened.
	PurgedKeys uint64
}

// PurgeState returns the state of the purge of dropped slots.
func (s *Store) PurgeState() (PurgeStats, error) {
	st := PurgeStats{PurgedKeys: s.drops.purged.Load()}
	var pending [slot.Count]bool
	err := s.eachDropRecord(func(rec dropRecord) bool {
		for sl := int(rec.r.Start); sl <= int(rec.r.End); sl++ {
			if !pending[sl] {
				pending[sl] = true
				st.PendingSlots++
			}
		}
		return true
	})
	return st, mapErr("purge state", err)
}

// countIn returns the keys of l that lie in ranges.
func (l *KeyList) countIn(ranges []slot.Range) uint64 {
	var in [slot.Count]bool
	for _, r := range ranges {
		for s := int(r.Start); s <= int(r.End); s++ {
			in[s] = true
		}
	}
	var n uint64
	for _, k := range l.keys {
		if in[slotOfStorageKey(k)] {
			n++
		}
	}
	return n
}
