package store

import (
	"bytes"
	"cmp"
	"context"
	"sync"
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
	// BatchKeys is the keys per transaction; 0 means DefaultDeleteBatch.
	BatchKeys int
	// KeysPerSecond paces the deletion; 0 means as fast as batches go.
	KeysPerSecond uint64
	// Guard, when set, runs before each batch is written; an error stops
	// the deletion before the batch. release (never nil on success) runs
	// once the batch is committed, so a caller can hold a lock across it.
	Guard func() (release func(), err error)
	// Captured deletes through the write path of every data write, so
	// the deletes of a MIGRATING slot are captured for its migration
	// (FlushSlots on served slots); cleanup of slots no longer served
	// deletes directly.
	Captured bool
	// Keys, when set, are the keys the ranges hold (HeldKeys, taken when
	// the slots stopped taking writes): they are deleted without reading
	// the ranges. A key outside the ranges is skipped.
	Keys *KeyList
}

// DeleteSlots deletes every key of ranges, in transactions of BatchKeys
// keys deleted with ordinary tombstones: unlike Badger's DropPrefix, which
// blocks every write to the database while it flushes and compacts, other
// slots' writes only share the write channel with one small batch at a
// time. It returns the keys deleted (committed), also when it stops early
// (ctx, Guard, an error).
//
// The work is a pipeline, so a cleanup takes about as long as its commits
// do: one goroutine reads the keys ahead, batch by batch, from a read
// transaction renewed every deleteReadBatches batches, while this one
// writes them. A direct (not Captured) batch is queued without waiting for
// its commit; its Guard's release runs when the commit is done. Unpaced,
// the batches go through a Committer: the next batch is built while
// Badger writes the previous one, and no more than one is in Badger at a
// time, so they commit in order and never pile up.
func (s *Store) DeleteSlots(ctx context.Context, ranges []slot.Range, o DeleteOptions) (uint64, error) {
	ranges, err := normalize(ranges)
	if err != nil {
		return 0, err
	}
	batch := o.BatchKeys
	if batch <= 0 {
		batch = DefaultDeleteBatch
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	batches := make(chan [][]byte, 2)
	collected := make(chan error, 1)
	if o.Keys != nil {
		go func() { collected <- sendKeys(ctx, o.Keys, ranges, batch, batches) }()
	} else {
		go func() { collected <- s.collectRanges(ctx, ranges, batch, batches) }()
	}

	var c commits
	var queued uint64
	// Unpaced direct batches open each transaction ahead (committer.go);
	// a paced one waits between batches, with no transaction open.
	var cm *Committer
	if !o.Captured && o.KeysPerSecond == 0 {
		cm = s.NewCommitter()
		defer cm.Idle()
	}
	start := time.Now()
	err = func() error {
		for keys := range batches {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := c.err(); err != nil {
				return err
			}
			if o.Captured {
				if err := s.deleteCaptured(keys, o.Guard); err != nil {
					return err
				}
				c.done(len(keys), nil)
			} else if err := s.queueDelete(keys, o.Guard, cm, &c); err != nil {
				return err
			}
			queued += uint64(len(keys))
			if err := pace(ctx, start, queued, o.KeysPerSecond); err != nil {
				return err
			}
		}
		return nil
	}()
	cancel()
	for range batches { // let the reader see the cancel and stop
	}
	collectErr := <-collected
	c.wg.Wait()
	// The reader's error is its own: it had returned before the loop saw
	// batches closed, and the cancel above only ends a reader that the
	// loop left early, with an error of its own.
	return c.total(), cmp.Or(err, c.err(), collectErr)
}

// commits tracks the queued delete transactions of one DeleteSlots.
type commits struct {
	wg      sync.WaitGroup
	mu      sync.Mutex
	deleted uint64
	first   error
}

// done counts n keys deleted, or keeps the first error.
func (c *commits) done(n int, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		if c.first == nil {
			c.first = err
		}
		return
	}
	c.deleted += uint64(n)
}

func (c *commits) total() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.deleted
}

func (c *commits) err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.first
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

// sendKeys sends the keys of l that lie in ranges to out in batches of n,
// and closes it.
func sendKeys(ctx context.Context, l *KeyList, ranges []slot.Range, n int, out chan<- [][]byte) error {
	defer close(out)
	var in [slot.Count]bool
	for _, r := range ranges {
		for s := int(r.Start); s <= int(r.End); s++ {
			in[s] = true
		}
	}
	send := func(keys [][]byte) error {
		select {
		case out <- keys:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	keys := make([][]byte, 0, n)
	for _, k := range l.keys {
		if !in[slotOfStorageKey(k)] {
			continue
		}
		if keys = append(keys, k); len(keys) == n {
			if err := send(keys); err != nil {
				return err
			}
			keys = make([][]byte, 0, n)
		}
	}
	if len(keys) > 0 {
		return send(keys)
	}
	return nil
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
	it.Seek(from)
	for range deleteReadBatches {
		keys := make([][]byte, 0, n)
		var arena []byte // the batch's keys, one allocation for most batches
		for ; it.Valid() && len(keys) < n; it.Next() {
			k := it.Item().Key()
			if bytes.Compare(k, to) >= 0 {
				break
			}
			if len(arena)+len(k) > cap(arena) {
				arena = make([]byte, 0, max(64<<10, len(k)))
			}
			at := len(arena)
			arena = append(arena, k...)
			keys = append(keys, arena[at:len(arena):len(arena)])
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

// queueDelete deletes keys in one transaction under guard (when set) and
// returns once the commit is queued; the guard is released, and c told,
// when the commit is done, or here when the transaction is not queued.
func (s *Store) queueDelete(keys [][]byte, guard func() (func(), error), cm *Committer, c *commits) error {
	release := func() {}
	if guard != nil {
		var err error
		if release, err = guard(); err != nil {
			return err
		}
	}
	queued := false
	txn := cm.begin(s.db)
	defer func() {
		if !queued {
			txn.Discard()
			release()
		}
	}()
	for _, k := range keys {
		if err := txn.Delete(k); err != nil {
			return mapErr("delete", err)
		}
	}
	c.wg.Add(1)
	queued = true // CommitWith discards the transaction itself
	cm.commit(txn, func(err error) {
		defer c.wg.Done()
		defer release()
		c.done(len(keys), mapErr("delete commit", err))
	})
	return nil
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
