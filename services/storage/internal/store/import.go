package store

import (
	"encoding/binary"
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
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

// ApplyImport applies one import batch of job's stream: the puts and
// deletes of muts (user keys), together with the stream's progress record
// (last batch sequence, entries applied), in one transaction. A batch whose
// seq is at or below the stream's last applied one is not applied again
// (applied=false): a resumed stream may resend batches. Imports are plain
// writes, never captured. The caller serializes batches of one stream; a
// batch too big for one transaction fails with ErrBatchTooLarge (it cannot
// be split: the progress record must commit with all of it).
func (s *Store) ApplyImport(job, stream string, seq uint64, muts []Mutation) (applied bool, p ImportProgress, err error) {
	if err := CheckJobID(job); err != nil {
		return false, p, err
	}
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	pk := importKey(job, stream)
	p = ImportProgress{Stream: stream}
	it, err := txn.Get(pk)
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
	case err != nil:
		return false, p, mapErr("import progress", err)
	default:
		v, err := it.ValueCopy(nil)
		if err != nil {
			return false, p, mapErr("import progress", err)
		}
		if p, err = decodeProgress(stream, v); err != nil {
			return false, p, err
		}
	}
	if seq <= p.LastSeq {
		return false, p, nil
	}
	for i, m := range muts {
		k, _, err := storageKey(nil, m.Key)
		if err != nil {
			return false, p, fmt.Errorf("entries[%d]: %w", i, err)
		}
		if err := setEntry(txn, k, m.Value, m.Delete); err != nil {
			if errors.Is(err, badger.ErrTxnTooBig) {
				return false, p, fmt.Errorf("%w: %d entries do not fit in one transaction (it filled up at entries[%d]); send smaller batches", ErrBatchTooLarge, len(muts), i)
			}
			return false, p, mapErr("import", err)
		}
	}
	p.LastSeq, p.Entries = seq, p.Entries+uint64(len(muts))
	v := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, p.LastSeq), p.Entries)
	if err := txn.Set(pk, v); err != nil {
		if errors.Is(err, badger.ErrTxnTooBig) {
			return false, p, fmt.Errorf("%w: %d entries do not fit in one transaction; send smaller batches", ErrBatchTooLarge, len(muts))
		}
		return false, p, mapErr("import", err)
	}
	if err := txn.Commit(); err != nil {
		if errors.Is(err, badger.ErrTxnTooBig) {
			return false, p, fmt.Errorf("%w: %d entries do not fit in one transaction; send smaller batches", ErrBatchTooLarge, len(muts))
		}
		return false, p, mapErr("import commit", err)
	}
	return true, p, nil
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
		io := badger.DefaultIteratorOptions
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
