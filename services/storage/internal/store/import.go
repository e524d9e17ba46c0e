package store

import (
	"encoding/binary"
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/slotkv/slotkv/pkg/slot"
)

// MaxStreamIDBytes bounds an import stream id.
const MaxStreamIDBytes = 128

// ImportProgress is what one import stream of a job has applied.
type ImportProgress struct {
	Stream  string
	LastSeq uint64 // last applied batch sequence
	Entries uint64 // entries applied by the stream
}

func importKey(job, stream string) []byte {
	return append(jobPrefix(importSpace, job), stream...)
}

func decodeProgress(stream string, v []byte) (ImportProgress, error) {
	if len(v) != 16 {
		return ImportProgress{}, fmt.Errorf("import progress of stream %q: corrupt record", stream)
	}
	return ImportProgress{Stream: stream, LastSeq: binary.BigEndian.Uint64(v), Entries: binary.BigEndian.Uint64(v[8:])}, nil
}

// StreamProgress returns what job's import stream has applied (zero when
// it has applied nothing).
func (s *Store) StreamProgress(job, stream string) (ImportProgress, error) {
	if err := CheckJobID(job); err != nil {
		return ImportProgress{}, err
	}
	p := ImportProgress{Stream: stream}
	err := s.view(func(txn *badger.Txn) error {
		it, err := txn.Get(importKey(job, stream))
		if err != nil {
			return err
		}
		v, err := it.ValueCopy(nil)
		if err != nil {
			return err
		}
		p, err = decodeProgress(stream, v)
		return err
	})
	if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
		return p, mapErr("import progress", err)
	}
	return p, nil
}

// CommitImport commits import batches of job, in order, together with the
// stream's new progress record p (last batch sequence, entries applied):
// the puts and deletes of every batch (user keys) and the record in one
// transaction, so no batch is ever stored without a record that counts it.
// It does not wait for the commit: it returns once the transaction is
// queued for Badger's writer, and done gets the commit's outcome (on
// another goroutine, or on this one when Badger refuses the transaction
// before queueing it). Transactions queued one after the other commit in
// that order, so a stream keeps several in flight and the record always
// names the last batch committed with it. The caller keeps the stream's
// progress: the record is written, never read, so pipelined transactions
// cannot conflict. A set too big for one transaction fails at once with
// ErrBatchTooLarge (it cannot be split: the progress record must commit
// with all of it); done is then not called. Imports are plain writes,
// never captured. Each put keeps the expiry it carries; one already past
// is written as a delete. cm, when not nil, is the stream's Committer: the
// transaction is the one it opened ahead, and it opens the next.
func (s *Store) CommitImport(job string, p ImportProgress, batches [][]Mutation, cm *Committer, done func(error)) error {
	if err := CheckJobID(job); err != nil {
		return err
	}
	txn := cm.begin(s.db)
	queued := false
	defer func() {
		if !queued {
			txn.Discard()
		}
	}()
	n, entries := 0, 0
	for _, muts := range batches {
		for _, m := range muts {
			n += slot.PrefixLen + len(m.Key)
		}
		entries += len(muts)
	}
	tooBig := func(at string) error {
		return fmt.Errorf("%w: %d entries do not fit in one transaction%s; send smaller batches", ErrBatchTooLarge, entries, at)
	}
	kb := make([]byte, 0, n) // one arena for the storage keys of the transaction
	now := NowMs()
	for b, muts := range batches {
		for i, m := range muts {
			var err error
			from := len(kb)
			if kb, _, err = storageKey(kb, m.Key); err != nil {
				return fmt.Errorf("entries[%d]: %w", i, err)
			}
			e := entry{key: kb[from:len(kb):len(kb)], value: m.Value, exp: m.ExpiresAt, del: m.Delete}
			if Expired(e.exp, now) {
				// Expired on the way: absent here as on the source, and
				// an older value of the key must not stay.
				e = entry{key: e.key, del: true}
			}
			if err := setEntry(txn, e); err != nil {
				if errors.Is(err, badger.ErrTxnTooBig) {
					return tooBig(fmt.Sprintf(" (it filled up at entries[%d] of batch %d)", i, b))
				}
				return mapErr("import", err)
			}
		}
	}
	v := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, p.LastSeq), p.Entries)
	if err := txn.Set(importKey(job, p.Stream), v); err != nil {
		if errors.Is(err, badger.ErrTxnTooBig) {
			return tooBig("")
		}
		return mapErr("import", err)
	}
	queued = true // CommitWith discards the transaction itself
	cm.commit(txn, func(err error) {
		if errors.Is(err, badger.ErrTxnTooBig) {
			done(tooBig(""))
			return
		}
		done(mapErr("import commit", err))
	})
	return nil
}

// GroupLimits bounds what a caller should put in one CommitImport: key and
// value bytes, and entries; a quarter of what Badger takes in one
// transaction, so the per-entry overhead never tips it over.
func (s *Store) GroupLimits() (bytes, entries int) {
	return int(s.db.MaxBatchSize() / 4), int(s.db.MaxBatchCount() / 4)
}

// ApplyImport applies one import batch of job's stream and waits for it: a
// batch whose seq is at or below the stream's last applied one is not
// applied again (applied=false), since a resumed stream may resend
// batches. The caller serializes batches of one stream.
func (s *Store) ApplyImport(job, stream string, seq uint64, muts []Mutation) (applied bool, p ImportProgress, err error) {
	if p, err = s.StreamProgress(job, stream); err != nil || seq <= p.LastSeq {
		return false, p, err
	}
	next := ImportProgress{Stream: stream, LastSeq: seq, Entries: p.Entries + uint64(len(muts))}
	res := make(chan error, 1)
	if err := s.CommitImport(job, next, [][]Mutation{muts}, nil, func(err error) { res <- err }); err != nil {
		return false, p, err
	}
	if err := <-res; err != nil {
		return false, p, err
	}
	return true, next, nil
}

// ImportProgressOf returns the progress of every import stream of job, by
// stream id.
func (s *Store) ImportProgressOf(job string) ([]ImportProgress, error) {
	if err := CheckJobID(job); err != nil {
		return nil, err
	}
	prefix := jobPrefix(importSpace, job)
	var out []ImportProgress
	err := s.db.View(func(txn *badger.Txn) error {
		io := iteratorOptions()
		io.Prefix = prefix
		it := txn.NewIterator(io)
		defer it.Close()
		for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
			stream := string(it.Item().Key()[len(prefix):])
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			p, err := decodeProgress(stream, v)
			if err != nil {
				return err
			}
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		return nil, mapErr("import progress", err)
	}
	return out, nil
}

// DropImport deletes the import progress records of job.
func (s *Store) DropImport(job string) error {
	if err := CheckJobID(job); err != nil {
		return err
	}
	_, err := s.deletePrefix(jobPrefix(importSpace, job))
	return err
}
