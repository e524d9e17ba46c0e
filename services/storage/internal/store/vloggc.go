package store

import (
	"context"
	"errors"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// ValueLogGC is what one collection of the value log did.
type ValueLogGC struct {
	// Rewritten is the value-log files rewritten: the live values of each
	// copied to the head of the log, and the file deleted.
	Rewritten int
	// Before and After are the value log's bytes on disk around the pass.
	Before, After int64
	// Took is how long the pass ran.
	Took time.Duration
}

// GCValueLog collects the value log's garbage: the values that were
// overwritten, deleted (a migration's cleanup, a DEL) or expired. Badger
// learns which files hold garbage from its compactions; this rewrites,
// one after the other, every file that is at least half garbage, until
// none is or ctx ends. Writes and reads go on meanwhile. Badger runs one
// collection at a time: a call while another runs returns with nothing
// rewritten. The store runs it every ValueLogGCInterval by itself.
//
// A rewrite keeps every version the LSM tree still holds, and the tree
// keeps every version an open read transaction can see, so a snapshot (a
// migration's read view, held across many scans) reads on. Badger deletes
// a rewritten file once no iterator is open; a point read that looked up a
// value's place just before its file went is read again (view).
func (s *Store) GCValueLog(ctx context.Context) (ValueLogGC, error) {
	if s.opts.InMemory {
		return ValueLogGC{}, nil // no value log: every value is in the tree
	}
	start := time.Now()
	var g ValueLogGC
	_, g.Before, _ = s.Size()
	var err error
	for ctx.Err() == nil {
		if err = s.collectOne(); err != nil {
			break
		}
		g.Rewritten++
		s.vlogRewritten.Add(1)
	}
	_, g.After, _ = s.Size()
	g.Took = time.Since(start)
	switch {
	case err == nil, errors.Is(err, badger.ErrNoRewrite), errors.Is(err, badger.ErrRejected):
		// Done (or ctx ended), nothing more to rewrite, or another
		// collection is running or the store is closing.
		return g, nil
	default:
		return g, mapErr("value log gc", err)
	}
}

// collectOne rewrites one value-log file; gcEpoch is odd while it runs.
//
// Badger v4.9.6's rewrite starts by reading the newest version of the
// memtables (DB.MaxVersion, to pin compactions' discard point, badger PR
// #2310) under a lock its write goroutine does not take when it raises
// that version: the race detector reports the pair when a collection runs
// during writes. It is one aligned 64-bit word, read whole on the 64-bit
// platforms slotkv builds for; a stale read pins the discard point lower,
// so compactions keep more versions, never fewer.
func (s *Store) collectOne() error {
	s.gcEpoch.Add(1)
	defer s.gcEpoch.Add(1)
	return s.db.RunValueLogGC(valueLogGCRatio)
}

// maxReadAttempts bounds the reads of view and write that find a value's
// file gone: each one means another collection ran during the read.
const maxReadAttempts = 3

// lostToCollection reports whether a read that began at collection epoch
// e0 and failed with err may have lost its value-log file to a collection
// (Badger then fails the read with a plain "file not found"): a
// collection was running when it began, or one ran since.
func (s *Store) lostToCollection(e0 uint64, err error) bool {
	if err == nil || errors.Is(err, badger.ErrKeyNotFound) || errors.Is(err, badger.ErrConflict) ||
		errors.Is(err, badger.ErrDBClosed) {
		return false
	}
	return e0%2 == 1 || s.gcEpoch.Load() != e0
}

// view runs fn, a point read, in a read-only transaction, and runs it again
// in a fresh one when it failed because a collection moved a value it was
// reading (lostToCollection). fn must only read and set its results.
func (s *Store) view(fn func(txn *badger.Txn) error) error {
	for attempt := 1; ; attempt++ {
		e0 := s.gcEpoch.Load()
		err := s.db.View(fn)
		if attempt == maxReadAttempts || !s.lostToCollection(e0, err) {
			return err
		}
	}
}

// ValueLogFilesRewritten is the value-log files collections have rewritten
// since the store was opened (a metric).
func (s *Store) ValueLogFilesRewritten() uint64 { return s.vlogRewritten.Load() }

// collectValueLog runs GCValueLog once and logs what it did: the store's
// background pass, every ValueLogGCInterval (store.go). A pass under way
// when ctx ends stops after its current file.
func (s *Store) collectValueLog(ctx context.Context) {
	g, err := s.GCValueLog(ctx)
	switch log := s.opts.Logger; {
	case log == nil:
	case err != nil:
		log.Warn("value log collection failed; the next one retries", "err", err, "files_rewritten", g.Rewritten)
	case g.Rewritten > 0:
		log.Info("value log collected", "files_rewritten", g.Rewritten, "vlog_bytes_before", g.Before,
			"vlog_bytes_after", g.After, "took", g.Took.Round(time.Millisecond))
	}
}
