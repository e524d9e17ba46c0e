package store

import (
	"bytes"
	"context"
	"time"

	"github.com/slotkv/slotkv/pkg/slot"
)

// DefaultDeleteBatch is the number of keys DeleteSlots deletes per
// transaction: small enough that one commit never holds up the writes to
// other slots noticeably (see BenchmarkCleanupWriteStall).
const DefaultDeleteBatch = 512

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
}

// DeleteSlots deletes every key of ranges, in transactions of BatchKeys
// keys, each read from a fresh view and deleted with ordinary tombstones:
// unlike Badger's DropPrefix, which blocks every write to the database
// while it flushes and compacts, other slots' writes only share the write
// channel with one small batch at a time. It returns the keys deleted, also
// when it stops early (ctx, Guard, an error).
func (s *Store) DeleteSlots(ctx context.Context, ranges []slot.Range, o DeleteOptions) (uint64, error) {
	ranges, err := normalize(ranges)
	if err != nil {
		return 0, err
	}
	batch := o.BatchKeys
	if batch <= 0 {
		batch = DefaultDeleteBatch
	}
	var deleted uint64
	start := time.Now()
	for _, r := range ranges {
		lo, hi := r.KeyBounds()
		from := bytes.Clone(lo[:])
		for {
			if err := ctx.Err(); err != nil {
				return deleted, err
			}
			keys, err := s.collectKeys(nil, from, hi[:], batch)
			if err != nil {
				return deleted, err
			}
			if len(keys) == 0 {
				break
			}
			if err := s.deleteGuarded(keys, o.Guard, o.Captured); err != nil {
				return deleted, err
			}
			deleted += uint64(len(keys))
			from = append(keys[len(keys)-1], 0)
			if o.KeysPerSecond > 0 {
				want := time.Duration(float64(deleted) / float64(o.KeysPerSecond) * float64(time.Second))
				if d := want - time.Since(start); d > 0 {
					t := time.NewTimer(d)
					select {
					case <-ctx.Done():
						t.Stop()
						return deleted, ctx.Err()
					case <-t.C:
					}
				}
			}
			if len(keys) < batch {
				break
			}
		}
	}
	return deleted, nil
}

// deleteGuarded deletes keys in one transaction under guard (when set),
// released when the deletion returns or panics.
func (s *Store) deleteGuarded(keys [][]byte, guard func() (func(), error), captured bool) error {
	if guard != nil {
		release, err := guard()
		if err != nil {
			return err
		}
		defer release()
	}
	if !captured {
		return s.deleteKeys(keys)
	}
	_, err := s.write(writeOp{op: "flush", n: len(keys), entry: func(i int) entry { return entry{key: keys[i], del: true} }})
	return err
}
