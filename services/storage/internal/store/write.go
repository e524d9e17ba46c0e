package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/pkg/slot"
)

// txnFullError: Badger refused entry `at` with ErrTxnTooBig and the write
// could not (or must not) continue in another transaction. Callers turn it
// into ErrBatchTooLarge with their own wording.
type txnFullError struct{ at int }

func (e *txnFullError) Error() string {
	return fmt.Sprintf("transaction full at entry %d", e.at)
}

// entry is one key written by write: key = value expiring at exp (Unix
// ms, 0: never), or a delete of key when del is set. key is a storage key.
type entry struct {
	key, value []byte
	exp        int64
	del        bool
}

// writeOp describes one call of write.
type writeOp struct {
	op string // for errors
	n  int    // entries
	// split lets a set too big for one transaction commit in several.
	split bool
	// entry returns entry i. Its key must not depend on read: it is taken
	// before read runs (change capture locks the logs of the keys first).
	entry func(i int) entry
	// read, when set, runs in the write's transaction before any entry is
	// set, with the time the write compares expiries with: it reads what
	// the write depends on and returns false to commit nothing. The keys
	// it reads make the commit subject to Badger's conflict detection: a
	// write that commits one of them in between makes write start over
	// with a fresh transaction (read runs again). Only with split false.
	read func(txn *badger.Txn, now int64) (bool, error)
}

// maxConflictRetries bounds the attempts of a write that reads: each retry
// means another write committed one of its keys in between.
const maxConflictRetries = 100

// write is the one path by which user data reaches Badger (Put, Delete,
// BatchWrite, Update, FlushSlots and Ingest), so whatever must see every
// write hooks in here: change capture for migrating slots, and the rule
// that a put whose expiry has passed is a delete (Redis's). It writes
// entry(0) ... entry(n-1) in order.
//
// When split is false the n entries are one transaction: all or none; a set
// too big for one transaction returns *txnFullError and writes nothing. When
// split is true a set too big for one transaction is committed in several,
// cut where Badger reports ErrTxnTooBig; an error may then leave a prefix of
// the entries committed, so only idempotent writes (Ingest's puts) may split,
// and the caller must not acknowledge anything unless write returns nil.
// txns is the number of transactions committed (0 when read declined).
//
// Capture: when the capture table maps the slot of an entry to a change
// log, the write locks that log (all such logs, in job order), numbers its
// captured entries from the log's head, writes one change record per entry
// in the same transaction as the data, commits and advances the head before
// unlocking. Writes that touch no migrating slot pay one atomic load and one
// array index per entry.
func (s *Store) write(w writeOp) (txns int, err error) {
	if s.db.IsClosed() {
		return 0, mapErr(w.op, badger.ErrDBClosed)
	}
	var cw *captureWrite
	if tbl := s.capture.Load(); tbl != nil {
		if cw = prepareCapture(tbl, w.n, w.entry); cw != nil {
			defer cw.unlock()
		}
	}
	lost := 0
	for attempt := 1; ; attempt++ {
		e0 := s.gcEpoch.Load()
		txns, err = s.writeOnce(w, cw)
		if w.read != nil && txns == 0 && s.lostToCollection(e0, err) {
			// A value the read looked at moved under a value-log
			// collection (vloggc.go): nothing was committed, read again.
			if lost++; lost < maxReadAttempts {
				continue
			}
		}
		if w.read == nil || !errors.Is(err, badger.ErrConflict) {
			return txns, err
		}
		if attempt == maxConflictRetries {
			return txns, fmt.Errorf("store: %s: %w: %d attempts conflicted with concurrent writes of the same keys", w.op, rpcerr.ErrUnavailable, attempt)
		}
	}
}

// writeOnce is one attempt of write; cw is its capture state (nil: none).
func (s *Store) writeOnce(w writeOp, cw *captureWrite) (txns int, err error) {
	txn := s.db.NewTransaction(true)
	defer func() { txn.Discard() }()
	now := NowMs()
	if w.read != nil {
		ok, err := w.read(txn, now)
		if err != nil {
			return 0, mapErr(w.op, err)
		}
		if !ok {
			return 0, nil
		}
	}
	set := func(txn *badger.Txn, i int, e entry) error {
		if Expired(e.exp, now) {
			e = entry{key: e.key, del: true}
		}
		if cw != nil {
			return cw.set(txn, i, e)
		}
		return setEntry(txn, e)
	}
	first := 0 // index of the first entry of txn
	for i := range w.n {
		e := w.entry(i)
		err := set(txn, i, e)
		if errors.Is(err, badger.ErrTxnTooBig) && w.split && i > first {
			if cw != nil {
				// The entry or its change record did not fit; either may
				// be in txn already. Rebuild the transaction from the
				// entries before it (they fitted once, they fit again).
				txn.Discard()
				txn = s.db.NewTransaction(true)
				for r := first; r < i; r++ {
					if err := set(txn, r, w.entry(r)); err != nil {
						return txns, mapErr(w.op, err)
					}
				}
			}
			// Without capture Badger refused the entry before adding it.
			if err := txn.Commit(); err != nil {
				return txns, mapErr(w.op+" commit", err)
			}
			if cw != nil {
				cw.committed(first, i)
			}
			txns++
			txn = s.db.NewTransaction(true)
			first = i
			err = set(txn, i, e)
		}
		if errors.Is(err, badger.ErrTxnTooBig) {
			return txns, &txnFullError{at: i}
		}
		if err != nil {
			return txns, mapErr(w.op, err)
		}
	}
	if err := txn.Commit(); err != nil {
		if errors.Is(err, badger.ErrTxnTooBig) {
			return txns, &txnFullError{at: w.n}
		}
		return txns, mapErr(w.op+" commit", err)
	}
	if cw != nil {
		cw.committed(first, w.n)
	}
	return txns + 1, nil
}

// captureWrite is the capture state of one write: the change logs it
// touches, locked, and the change sequence of every captured entry.
type captureWrite struct {
	logs []*ChangeLog // sorted by job id; locked until unlock
	log  []int16      // per entry: index into logs, -1 when not captured
	seq  []uint64     // per entry: change sequence, 0 when not captured
}

func slotOfStorageKey(k []byte) uint16 {
	if len(k) < slot.PrefixLen {
		return 0
	}
	return uint16(k[0])<<8 | uint16(k[1])
}

// prepareCapture returns nil when no entry is captured; otherwise it locks
// the logs involved and numbers the captured entries.
func prepareCapture(tbl *CaptureTable, n int, entry func(int) entry) *captureWrite {
	var logs []*ChangeLog
	for i := range n {
		if l := tbl[slotOfStorageKey(entry(i).key)]; l != nil && !slices.Contains(logs, l) {
			logs = append(logs, l)
		}
	}
	if len(logs) == 0 {
		return nil
	}
	// One lock order for every write: no deadlock between two writes that
	// touch the same two jobs.
	slices.SortFunc(logs, func(a, b *ChangeLog) int { return strings.Compare(a.job, b.job) })
	for _, l := range logs {
		l.mu.Lock()
	}
	cw := &captureWrite{logs: logs, log: make([]int16, n), seq: make([]uint64, n)}
	next := make([]uint64, len(logs))
	for j, l := range logs {
		next[j] = l.head.Load()
	}
	for i := range n {
		cw.log[i] = -1
		if l := tbl[slotOfStorageKey(entry(i).key)]; l != nil {
			j := slices.Index(logs, l)
			next[j]++
			cw.log[i], cw.seq[i] = int16(j), next[j]
		}
	}
	return cw
}

func (cw *captureWrite) unlock() {
	for _, l := range cw.logs {
		l.mu.Unlock()
	}
}

// committed advances the heads past the captured entries of [from, to),
// once they are committed.
func (cw *captureWrite) committed(from, to int) {
	for i := from; i < to; i++ {
		if j := cw.log[i]; j >= 0 {
			cw.logs[j].head.Store(cw.seq[i])
		}
	}
}

// set adds entry i and, when captured, its change record to txn.
func (cw *captureWrite) set(txn *badger.Txn, i int, e entry) error {
	if err := setEntry(txn, e); err != nil {
		return err
	}
	j := cw.log[i]
	if j < 0 {
		return nil
	}
	l := cw.logs[j]
	ck := l.seqKey(make([]byte, 0, len(l.prefix)+8), cw.seq[i])
	var cv []byte
	if !e.del {
		cv = make([]byte, 0, 1+expiryHeaderLen+binary.MaxVarintLen32+len(e.key)+len(e.value))
	}
	return txn.Set(ck, appendChangeValue(cv, e))
}

func setEntry(txn *badger.Txn, e entry) error {
	if e.del {
		return txn.Delete(e.key)
	}
	if e.exp == 0 {
		return txn.Set(e.key, e.value)
	}
	return txn.SetEntry(newValueEntry(e.key, e.value, e.exp))
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
	exps  []int64 // expiries, Unix ms; nil while no record expires
	bytes int     // user key + value bytes added
}

// Reset empties b and sizes its arena for n records whose user keys total
// keyBytes (a hint: Add grows the arena in new chunks when it is exceeded).
func (b *IngestBatch) Reset(n, keyBytes int) {
	clear(b.keys) // drop references to the previous batch
	clear(b.vals)
	b.keys, b.vals, b.exps, b.bytes = b.keys[:0], b.vals[:0], b.exps[:0], 0
	if cap(b.keys) < n {
		b.keys, b.vals = make([][]byte, 0, n), make([][]byte, 0, n)
	}
	// A fresh arena: the previous one may still be referenced by a
	// caller that kept a batch's keys.
	b.arena = make([]byte, 0, keyBytes+n*slot.PrefixLen)
}

// Add appends the put key = value and returns the key's slot, or
// ErrEmptyKey / ErrReservedKey (nothing added).
func (b *IngestBatch) Add(key, value []byte) (uint16, error) { return b.AddExpiring(key, value, 0) }

// AddExpiring is Add for a record that expires at exp (Unix ms; 0: never).
// A record whose expiry has passed when the batch is written is a delete
// (callers skip the records already expired when they add them).
func (b *IngestBatch) AddExpiring(key, value []byte, exp int64) (uint16, error) {
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
	if exp != 0 && b.exps == nil {
		b.exps = make([]int64, len(b.keys)-1, cap(b.keys))
	}
	if b.exps != nil {
		b.exps = append(b.exps, exp)
	}
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
	txns, err = s.write(writeOp{op: "ingest", n: len(b.keys), split: true, entry: func(i int) entry {
		e := entry{key: b.keys[i], value: b.vals[i]}
		if b.exps != nil {
			e.exp = b.exps[i]
		}
		return e
	}})
	var full *txnFullError
	if errors.As(err, &full) {
		if full.at < len(b.keys) {
			return txns, fmt.Errorf("%w: record %d (%d bytes) does not fit in one transaction", ErrBatchTooLarge, full.at, len(b.keys[full.at])+len(b.vals[full.at]))
		}
		return txns, fmt.Errorf("%w: the last transaction of %d records does not fit", ErrBatchTooLarge, len(b.keys))
	}
	return txns, err
}
