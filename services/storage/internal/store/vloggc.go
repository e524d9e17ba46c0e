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
func (s *Store) GCValueLog(ctx context.Context) (ValueLogGC, error) {
	if s.opts.InMemory {
		return ValueLogGC{}, nil // no value log: every value is in the tree
	}
	start := time.Now()
	var g ValueLogGC
	_, g.Before, _ = s.Size()
	var err error
	for ctx.Err() == nil {
		if err = s.db.RunValueLogGC(valueLogGCRatio); err != nil {
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

// ValueLogFilesRewritten is the value-log files collections have rewritten
// since the store was opened (a metric).
func (s *Store) ValueLogFilesRewritten() uint64 { return s.vlogRewritten.Load() }

// collectValueLog runs GCValueLog every interval until stop is closed, then
// closes done. A pass under way when stop closes ends after its current
// file.
func (s *Store) collectValueLog(every time.Duration, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-stop; cancel() }()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
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
}
