package store

import (
	"errors"
	"fmt"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/slotkv/slotkv/pkg/slot"
)

// txnFullError: Badger refused entry `at` with ErrTxnTooBig and the write
// could not (or must not) continue in another transaction. Callers turn it
// into ErrBatchTooLarge with their own wording.
type txnFullError struct{ at int }

func (e *txnFullError) Error() string {
	return fmt.Sprintf("transaction full at entry %d", e.at)
}

// write is the one path by which batches of user data reach Badger
// (BatchWrite and Ingest), so whatever must see every write (change capture
// for migrating slots) hooks in here. It sets key = value, or deletes key
// when del is true, for entry(0) ... entry(n-1), in order.
//
// When split is false the n entries are one transaction: all or none; a set
// too big for one transaction returns *txnFullError and writes nothing. When
// split is true a set too big for one transaction is committed in several,
// cut where Badger reports ErrTxnTooBig; an error may then leave a prefix of
// the entries committed, so only idempotent writes (Ingest's puts) may split,
// and the caller must not acknowledge anything unless write returns nil.
// txns is the number of transactions committed.
func (s *Store) write(op string, n int, split bool, entry func(i int) (key, value []byte, del bool)) (txns int, err error) {
	txn := s.db.NewTransaction(true)
	defer func() { txn.Discard() }()
	first := 0 // index of the first entry of txn
	for i := range n {
		k, v, del := entry(i)
		err := setEntry(txn, k, v, del)
		if errors.Is(err, badger.ErrTxnTooBig) && split && i > first {
			if err := txn.Commit(); err != nil {
				return txns, mapErr(op+" commit", err)
			}
			txns++
			txn = s.db.NewTransaction(true)
			first = i
			err = setEntry(txn, k, v, del)
		}
		if errors.Is(err, badger.ErrTxnTooBig) {
			return txns, &txnFullError{at: i}
		}
		if err != nil {
			return txns, mapErr(op, err)
		}
	}
	if err := txn.Commit(); err != nil {
		if errors.Is(err, badger.ErrTxnTooBig) {
			return txns, &txnFullError{at: n}
		}
		return txns, mapErr(op+" commit", err)
	}
	return txns + 1, nil
}

func setEntry(txn *badger.Txn, k, v []byte, del bool) error {
	if del {
		return txn.Delete(k)
	}
	return txn.Set(k, v)
}

// IngestBatch is a batch of puts prepared for Ingest. Add validates a key,
// returns its slot and lays out its storage key in an arena shared by the
// batch, so preparing a batch of n records costs a few allocations, not n.
// Values are not copied: the value slices passed to Add (and the key slices,
// until Add returns) must stay unchanged until Ingest returns.
//
// An IngestBatch may be reused after Ingest returns: Reset keeps the slices
// of key and value headers and starts a fresh arena.
type IngestBatch struct {
	arena []byte   // free tail of the current arena chunk
	keys  [][]byte // storage keys, each a capacity-limited slice of an arena
	vals  [][]byte
	bytes int // user key + value bytes added
}

// Reset empties b and sizes its arena for n records whose user keys total
// keyBytes (a hint: Add grows the arena in new chunks when it is exceeded).
func (b *IngestBatch) Reset(n, keyBytes int) {
	clear(b.keys) // drop references to the previous batch
	clear(b.vals)
	b.keys, b.vals, b.bytes = b.keys[:0], b.vals[:0], 0
	if cap(b.keys) < n {
		b.keys, b.vals = make([][]byte, 0, n), make([][]byte, 0, n)
	}
	// A fresh arena: the previous one may still be referenced by a
	// caller that kept a batch's keys.
	b.arena = make([]byte, 0, keyBytes+n*slot.PrefixLen)
}

// Add appends the put key = value and returns the key's slot, or
// ErrEmptyKey / ErrReservedKey (nothing added).
func (b *IngestBatch) Add(key, value []byte) (uint16, error) {
	sl, err := CheckKey(key)
	if err != nil {
		return sl, err
	}
	need := slot.PrefixLen + len(key)
	if cap(b.arena)-len(b.arena) < need {
		// Earlier keys keep pointing into the old chunk; never grow in place.
		b.arena = make([]byte, 0, max(need, 2*cap(b.arena), 4096))
	}
	k := slot.AppendKey(b.arena, sl, key)
	b.keys = append(b.keys, k[:len(k):len(k)])
	b.arena = k[len(k):]
	b.vals = append(b.vals, value)
	b.bytes += len(key) + len(value)
	return sl, nil
}

// Len is the number of records added.
func (b *IngestBatch) Len() int { return len(b.keys) }

// Bytes is the user key and value bytes added.
func (b *IngestBatch) Bytes() int { return b.bytes }

// Ingest writes the puts of b durably through the same write path as
// BatchWrite, as one Badger transaction when it fits and otherwise in as
// many as it takes, in order. The puts are idempotent, so a failure part way
// leaves a prefix written that a retry of the batch overwrites with the same
// values; the caller must acknowledge the batch only when Ingest returns nil.
// A single record too big for an empty transaction fails with
// ErrBatchTooLarge. It returns the number of transactions committed.
func (s *Store) Ingest(b *IngestBatch) (txns int, err error) {
	txns, err = s.write("ingest", len(b.keys), true, func(i int) ([]byte, []byte, bool) {
		return b.keys[i], b.vals[i], false
	})
	var full *txnFullError
	if errors.As(err, &full) {
		if full.at < len(b.keys) {
			return txns, fmt.Errorf("%w: record %d (%d bytes) does not fit in one transaction", ErrBatchTooLarge, full.at, len(b.keys[full.at])+len(b.vals[full.at]))
		}
		return txns, fmt.Errorf("%w: the last transaction of %d records does not fit", ErrBatchTooLarge, len(b.keys))
	}
	return txns, err
}
