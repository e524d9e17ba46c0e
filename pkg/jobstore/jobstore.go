// Package jobstore persists the records of long-running jobs (bulk loads,
// migrations), one JSON record per job id, so a service finds its jobs
// again after a restart: in a small Badger database of its own (Open;
// every write is synced: these records are few and decide what a restarted
// service resumes or rolls back), or in etcd (OpenEtcd), where every
// replica of the service reads them and the leader's writes are fenced by
// its term (pkg/leader), so the next leader finds the jobs of the last.
package jobstore

import (
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/dgraph-io/badger/v4"

	"github.com/slotkv/slotkv/pkg/badgerlog"
)

const keyPrefix = "job/"

// Store holds records of type T by job id.
type Store[T any] struct {
	db *badger.DB
}

// Open opens (or creates) the store in dir.
func Open[T any](dir string, log *slog.Logger) (*Store[T], error) {
	opts := badger.DefaultOptions(dir).
		WithLogger(badgerlog.New(log)).
		WithSyncWrites(true).
		WithNumVersionsToKeep(1).
		WithValueLogFileSize(16 << 20).
		WithMemTableSize(8 << 20).
		WithBlockCacheSize(8 << 20).
		WithIndexCacheSize(0)
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open job store %s: %w", dir, err)
	}
	return &Store[T]{db: db}, nil
}

// Close closes the store.
func (s *Store[T]) Close() error { return s.db.Close() }

// Put saves the record of job id, replacing the previous one.
func (s *Store[T]) Put(id string, r *T) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("job record %s: %w", id, err)
	}
	return s.db.Update(func(txn *badger.Txn) error {
		return txn.Set([]byte(keyPrefix+id), b)
	})
}

// Load returns every record, in job id order.
func (s *Store[T]) Load() ([]*T, error) {
	var out []*T
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(keyPrefix), PrefetchValues: true, PrefetchSize: 16})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			err := item.Value(func(v []byte) error {
				r := new(T)
				if err := json.Unmarshal(v, r); err != nil {
					return fmt.Errorf("job record %s: %w", item.Key(), err)
				}
				out = append(out, r)
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}
