package store

import (
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"
)

// SystemPrefix is the first byte of every system record's key. User storage
// keys start with a slot's high byte, at most 0x3F (slots are < 0x4000), so
// no user key can reach this space and no slot-range scan can see it.
const SystemPrefix byte = 0xFF

// formatRecord holds the data format version of the directory. Format 2
// added the drop records (drop.go): a binary of format 1 would read the
// entries of dropped slots as live, so a directory this binary opens is
// stamped 2 and an older binary refuses it. A format-1 directory has no
// drop record and reads the same: it is upgraded in place.
const (
	formatRecord  = "format"
	formatVersion = "2"
	formatBefore  = "1"
)

func systemKey(name string) []byte {
	k := make([]byte, 0, 1+len(name))
	k = append(k, SystemPrefix)
	return append(k, name...)
}

// checkFormat stamps a new directory with the format version and refuses one
// written by an incompatible version, before any data is misread.
func (s *Store) checkFormat() error {
	return s.UpdateSystem(func(tx *SystemTxn) error {
		v, err := tx.Get(formatRecord)
		if errors.Is(err, ErrNotFound) {
			return tx.Set(formatRecord, []byte(formatVersion))
		}
		if err != nil {
			return err
		}
		if string(v) == formatBefore {
			return tx.Set(formatRecord, []byte(formatVersion))
		}
		if string(v) != formatVersion {
			return fmt.Errorf("%w: %s holds format %q, this binary reads format %q", ErrFormat, s.opts.Dir, v, formatVersion)
		}
		return nil
	})
}

// SystemTxn reads and writes system records (names under SystemPrefix)
// inside one Badger transaction, so related records (a topology and the slot
// states derived from it) change together or not at all.
type SystemTxn struct {
	txn *badger.Txn
}

// Get returns a copy of the record name; ErrNotFound when absent.
func (t *SystemTxn) Get(name string) ([]byte, error) {
	it, err := t.txn.Get(systemKey(name))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("system record %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, mapErr("get system record "+name, err)
	}
	v, err := it.ValueCopy(nil)
	if err != nil {
		return nil, mapErr("get system record "+name, err)
	}
	return v, nil
}

// Set writes the record name. Only valid in UpdateSystem.
func (t *SystemTxn) Set(name string, value []byte) error {
	return mapErr("set system record "+name, t.txn.Set(systemKey(name), value))
}

// Delete removes the record name. Only valid in UpdateSystem.
func (t *SystemTxn) Delete(name string) error {
	return mapErr("delete system record "+name, t.txn.Delete(systemKey(name)))
}

// GetSystem returns the system record name; ErrNotFound when absent.
func (s *Store) GetSystem(name string) ([]byte, error) {
	var v []byte
	err := s.view(func(txn *badger.Txn) error {
		var err error
		v, err = (&SystemTxn{txn: txn}).Get(name)
		return err
	})
	return v, err
}

// UpdateSystem runs fn in one read-write transaction and commits it when fn
// returns nil. Writes are always synced to disk: system records are rare and
// losing one (a topology) after acknowledging it would be worse than a slow
// call.
func (s *Store) UpdateSystem(fn func(tx *SystemTxn) error) error {
	if err := s.CommitSystem(fn); err != nil {
		return err
	}
	return s.SyncSystem()
}

// CommitSystem is UpdateSystem without the sync: the caller must call
// SyncSystem before it acknowledges the change to anyone. It lets a caller
// that holds a lock every writer waits for (the node's write gate) commit
// under it and sync after releasing it.
func (s *Store) CommitSystem(fn func(tx *SystemTxn) error) error {
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	if err := fn(&SystemTxn{txn: txn}); err != nil {
		return err
	}
	if err := txn.Commit(); err != nil {
		return mapErr("commit system records", err)
	}
	return nil
}

// SyncSystem makes every commit so far durable, system records and data
// alike (a no-op with SyncWrites, where each commit already is, and in
// memory).
func (s *Store) SyncSystem() error {
	if s.opts.SyncWrites || s.opts.InMemory {
		return nil
	}
	return mapErr("sync system records", s.sync())
}

// sync makes every commit so far durable and records, for each change log,
// that its changes up to the head it had before are on disk. Every sync of
// the store goes through it.
func (s *Store) sync() error {
	s.logsMu.Lock()
	heads := make(map[*ChangeLog]uint64, len(s.logs))
	for _, l := range s.logs {
		heads[l] = l.Head()
	}
	s.logsMu.Unlock()
	s.syncs.Add(1)
	if err := s.db.Sync(); err != nil {
		return err
	}
	for l, h := range heads {
		l.noteSynced(h)
	}
	return nil
}
