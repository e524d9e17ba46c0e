package store

import (
	"bytes"
	"cmp"
	"context"
	"time"

	"github.com/slotkv/slotkv/pkg/slot"
)

// DefaultDeleteBatch is the number of keys DeleteSlots deletes per
// transaction: small enough that one commit never holds up the writes to
// other slots noticeably (see BenchmarkCleanupWriteStall).
const DefaultDeleteBatch = 512

// deleteReadBatches is how many batches one read transaction of
// DeleteSlots collects before it is replaced by a fresh one: a long
// cleanup must not pin old versions that compactions could drop.
const deleteReadBatches = 64

// DeleteOptions tunes DeleteSlots.
type DeleteOptions struct {
	// BatchKeys is the keys per transaction of a Captured deletion; 0
	// means DefaultDeleteBatch.
	BatchKeys int
	// KeysPerSecond paces a Captured deletion, or the purge of a drop; 0
	// means as fast as batches go.
	KeysPerSecond uint64
	// Guard, when set, runs before each batch is written (before the drop
	// is); an error stops the deletion before the batch. release (never
	// nil on success) runs once the batch is committed, so a caller can
	// hold a lock across it.
	Guard func() (release func(), err error)
	// Captured deletes through the write path of every data write, so
	// the deletes of a MIGRATING slot are captured for its migration
	// (FlushSlots on served slots). Otherwise the slots are dropped
	// (drop.go): the cleanup of slots no longer served.
	Captured bool
	// Keys, when set, are the keys the ranges hold (HeldKeys, taken when
	// the slots stopped taking writes): a drop counts them instead of
	// reading the ranges. A key outside the ranges is not counted.
	Keys *KeyList
}

// DeleteSlots deletes every key of ranges and returns the keys deleted.
//
// Slots no longer served are dropped (drop.go): one transaction of one
// record per range, after which no read sees what they held, whatever
// their size; a background purge deletes the entries after it, paced
// by KeysPerSecond. Badger's DropPrefix would remove them in one call,
// but it blocks every write to the database while it runs
// (BenchmarkCleanupWriteStall), and a tombstone per key through Badger's
// one write goroutine made the cleanup the longest step of a migration
// after the copy.
//
// A Captured deletion (FlushSlots of served slots, whose deletes a
// migration must see key by key) deletes with ordinary tombstones in
// transactions of BatchKeys keys: other slots' writes only share the
// write channel with one small batch at a time. It returns the keys
// deleted (committed), also when it stops early (ctx, Guard, an error).
// One goroutine reads the keys ahead, batch by batch, from a read
// transaction renewed every deleteReadBatches batches, while this one
// writes them.
func (s *Store) DeleteSlots(ctx context.Context, ranges []slot.Range, o DeleteOptions) (uint64, error) {
	ranges, err := normalize(ranges)
	if err != nil || len(ranges) == 0 {
		return 0, err
	}
	if !o.Captured {
		return s.dropSlots(ctx, ranges, o)
	}
	batch := o.BatchKeys
	if batch <= 0 {
		batch = DefaultDeleteBatch
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	batches := make(chan [][]byte, 2)
	collected := make(chan error, 1)
	go func() { collected <- s.collectRanges(ctx, ranges, batch, batches) }()

	var deleted uint64
	start := time.Now()
	err = func() error {
		for keys := range batches {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := s.deleteCaptured(keys, o.Guard); err != nil {
				return err
			}
			deleted += uint64(len(keys))
			if err := pace(ctx, start, deleted, o.KeysPerSecond); err != nil {
				return err
			}
		}
		return nil
	}()
	cancel()
	for range batches { // let the reader see the cancel and stop
	}
	collectErr := <-collected
	// The reader's error is its own: it had returned before the loop saw
	// batches closed, and the cancel above only ends a reader that the
	// loop left early, with an error of its own.
	return deleted, cmp.Or(err, collectErr)
}

// pace sleeps until deleting n keys since start keeps to kps keys a
// second (0: no pace).
func pace(ctx context.Context, start time.Time, n, kps uint64) error {
	if kps == 0 {
		return nil
	}
	want := time.Duration(float64(n) / float64(kps) * float64(time.Second))
	d := want - time.Since(start)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// collectRanges sends the keys of ranges to out in batches of n and closes
// it. Each read transaction collects deleteReadBatches batches at most.
func (s *Store) collectRanges(ctx context.Context, ranges []slot.Range, n int, out chan<- [][]byte) error {
	defer close(out)
	for _, r := range ranges {
		lo, hi := r.KeyBounds()
		for from := bytes.Clone(lo[:]); from != nil; {
			var err error
			if from, err = s.collectRun(ctx, from, hi[:], n, out); err != nil {
				return err
			}
		}
	}
	return nil
}

// collectRun sends the keys in [from, to) from one read transaction, up
// to deleteReadBatches batches of n, and returns where the next run
// starts: nil once it reached to.
func (s *Store) collectRun(ctx context.Context, from, to []byte, n int, out chan<- [][]byte) ([]byte, error) {
	txn := s.db.NewTransaction(false)
	defer txn.Discard()
	it := txn.NewIterator(iteratorOptions())
	defer it.Close()
	f := s.dropFilter(txn)
	it.Seek(from)
	for range deleteReadBatches {
		keys := make([][]byte, 0, n)
		var arena keyArena // the batch's keys
		for ; it.Valid() && len(keys) < n; it.Next() {
			k := it.Item().Key()
			if bytes.Compare(k, to) >= 0 {
				break
			}
			if f.hides(it.Item()) {
				continue // dropped: gone already
			}
			keys = append(keys, arena.copy(k))
		}
		if len(keys) > 0 {
			select {
			case out <- keys:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if len(keys) < n {
			return nil, nil
		}
	}
	if !it.Valid() || bytes.Compare(it.Item().Key(), to) >= 0 {
		return nil, nil
	}
	return it.Item().KeyCopy(nil), nil
}

// keyArena copies keys into shared 64 KiB blocks: one allocation for
// most batches of keys instead of one per key. A copy stays valid while
// it is referenced; a full block is left to its copies, not reused.
type keyArena struct{ buf []byte }

// copy returns a copy of k, capped so an append to it cannot reach the
// next key.
func (a *keyArena) copy(k []byte) []byte {
	if len(a.buf)+len(k) > cap(a.buf) {
		a.buf = make([]byte, 0, max(64<<10, len(k)))
	}
	at := len(a.buf)
	a.buf = append(a.buf, k...)
	return a.buf[at:len(a.buf):len(a.buf)]
}

// deleteCaptured deletes keys in one transaction through the write path
// of data writes (so a migrating slot's deletes are captured), under guard
// (when set), released when the deletion returns or panics.
func (s *Store) deleteCaptured(keys [][]byte, guard func() (func(), error)) error {
	if guard != nil {
		release, err := guard()
		if err != nil {
			return err
		}
		defer release()
	}
	_, err := s.write(writeOp{op: "flush", n: len(keys), entry: func(i int) entry { return entry{key: keys[i], del: true} }})
	return err
}
