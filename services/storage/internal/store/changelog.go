package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/pkg/slot"
)

// System key spaces of migrations (under SystemPrefix, see doc.go):
//
//	0xFF 'c' <job> 0x00 <seq: 8 bytes big-endian>  -> encoded Change
//	0xFF 'i' <job> 0x00 <stream id>                -> last seq, entries (import progress)
//	0xFF 'm' <job>                                 -> job record (package migration)
const (
	changeSpace = 'c'
	importSpace = 'i'
	// JobRecordSpace prefixes the name of a migration job record.
	JobRecordSpace = "m"
)

// ErrBadJobID: a job id the key layout cannot hold.
var ErrBadJobID = fmt.Errorf("%w: bad job id", rpcerr.ErrInvalidArgument)

// MaxJobIDBytes bounds a job id, keeping system keys short.
const MaxJobIDBytes = 128

// CheckJobID validates a job id: 1 to MaxJobIDBytes bytes, no NUL (NUL ends
// the job id inside change-log and import keys).
func CheckJobID(job string) error {
	switch {
	case job == "":
		return fmt.Errorf("%w: empty", ErrBadJobID)
	case len(job) > MaxJobIDBytes:
		return fmt.Errorf("%w: %d bytes, above %d", ErrBadJobID, len(job), MaxJobIDBytes)
	case strings.IndexByte(job, 0) >= 0:
		return fmt.Errorf("%w: %q holds a NUL byte", ErrBadJobID, job)
	}
	return nil
}

// jobPrefix returns 0xFF space <job> 0x00.
func jobPrefix(space byte, job string) []byte {
	p := make([]byte, 0, 3+len(job))
	p = append(p, SystemPrefix, space)
	p = append(p, job...)
	return append(p, 0)
}

// Change is one captured write to a migrating slot: a put, or a delete.
type Change struct {
	Seq       uint64
	Slot      uint16
	Key       []byte // user key
	Value     []byte
	Delete    bool
	ExpiresAt int64 // of a put, Unix ms; 0: never
}

// A change record's value is
//
//	[flags: 1 byte, bit 0 = delete, bit 1 = expiry][expiry: 8 bytes big-endian Unix ms, with bit 1]
//	[uvarint len(storage key)][storage key][value]
//
// The slot is the key's own (the storage key's prefix), kept for the reader.
// Records without an expiry are laid out as before expiries existed.
const (
	changeDelete byte = 1 << 0
	changeExpiry byte = 1 << 1
)

func appendChangeValue(dst []byte, e entry) []byte {
	var flags byte
	if e.del {
		flags |= changeDelete
	}
	if !e.del && e.exp != 0 {
		flags |= changeExpiry
	}
	dst = append(dst, flags)
	if flags&changeExpiry != 0 {
		dst = binary.BigEndian.AppendUint64(dst, uint64(e.exp))
	}
	dst = binary.AppendUvarint(dst, uint64(len(e.key)))
	dst = append(dst, e.key...)
	if e.del {
		return dst
	}
	return append(dst, e.value...)
}

func decodeChange(seq uint64, v []byte) (Change, error) {
	if len(v) < 1 {
		return Change{}, fmt.Errorf("change %d: empty record", seq)
	}
	flags := v[0]
	c := Change{Seq: seq, Delete: flags&changeDelete != 0}
	v = v[1:]
	if flags&changeExpiry != 0 {
		if len(v) < 8 {
			return Change{}, fmt.Errorf("change %d: corrupt record (expiry)", seq)
		}
		c.ExpiresAt = int64(binary.BigEndian.Uint64(v))
		v = v[8:]
	}
	n, w := binary.Uvarint(v)
	if w <= 0 || uint64(len(v)-w) < n {
		return Change{}, fmt.Errorf("change %d: corrupt record", seq)
	}
	k := v[w : w+int(n)]
	sl, key, err := slot.SplitKey(k)
	if err != nil {
		return Change{}, fmt.Errorf("change %d: %w", seq, err)
	}
	c.Slot, c.Key = sl, key
	c.Value = v[w+int(n):]
	return c, nil
}

// ChangeLog is the change log of one migration job on its source node: the
// ordered, persisted record of every write to the job's MIGRATING slots.
//
// A write that touches a slot mapped to the log in the capture table (see
// SetCapture) takes mu, numbers its changes head+1, head+2, ... and writes
// them in the same Badger transaction as the data, commits, advances head
// and only then releases mu. Changes are therefore numbered in commit order
// with no gap a reader can see: a reader that loads head and then opens a
// Badger read transaction sees every change up to head, and OpenSnapshot,
// which does both under mu, gets a read view holding exactly the changes up
// to its sequence.
type ChangeLog struct {
	job    string
	prefix []byte // 0xFF 'c' <job> 0x00
	mu     sync.Mutex
	head   atomic.Uint64
	// synced: every change up to this sequence is on disk (a sync began
	// after it was committed), so ReadChanges need not sync for it.
	synced atomic.Uint64
}

// noteSynced records that every change up to seq is on disk.
func (l *ChangeLog) noteSynced(seq uint64) {
	for {
		cur := l.synced.Load()
		if cur >= seq || l.synced.CompareAndSwap(cur, seq) {
			return
		}
	}
}

// Job is the job id.
func (l *ChangeLog) Job() string { return l.job }

// Head is the sequence of the newest committed change (0: none).
func (l *ChangeLog) Head() uint64 { return l.head.Load() }

func (l *ChangeLog) seqKey(dst []byte, seq uint64) []byte {
	dst = append(dst, l.prefix...)
	return binary.BigEndian.AppendUint64(dst, seq)
}

// CaptureTable maps each slot to the change log capturing its writes (nil:
// not captured). It is immutable once passed to SetCapture.
type CaptureTable [slot.Count]*ChangeLog

// SetCapture installs the capture table every later write consults; nil
// turns capture off. The caller (package node) installs it while no write
// is between its ownership check and its commit, so a write is captured
// exactly when it was admitted against a view where its slot is MIGRATING.
func (s *Store) SetCapture(t *CaptureTable) { s.capture.Store(t) }

// ChangeLog returns the change log of job, loading its head from disk the
// first time. Logs stay registered until DropChangeLog.
func (s *Store) ChangeLog(job string) (*ChangeLog, error) {
	if err := CheckJobID(job); err != nil {
		return nil, err
	}
	s.logsMu.Lock()
	defer s.logsMu.Unlock()
	if l, ok := s.logs[job]; ok {
		return l, nil
	}
	l := &ChangeLog{job: job, prefix: jobPrefix(changeSpace, job)}
	err := s.db.View(func(txn *badger.Txn) error {
		io := iteratorOptions()
		io.Reverse = true
		io.Prefix = l.prefix
		it := txn.NewIterator(io)
		defer it.Close()
		// Seek to the largest possible key of the prefix.
		it.Seek(append(slices.Clone(l.prefix), 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF))
		if it.ValidForPrefix(l.prefix) {
			k := it.Item().Key()
			if len(k) == len(l.prefix)+8 {
				l.head.Store(binary.BigEndian.Uint64(k[len(l.prefix):]))
			}
		}
		return nil
	})
	if err != nil {
		return nil, mapErr("load change log "+job, err)
	}
	if s.logs == nil {
		s.logs = map[string]*ChangeLog{}
	}
	s.logs[job] = l
	return l, nil
}

// ReadChanges returns the changes of log after seq `after`, in order, at
// most limit of them and, past the first, at most maxBytes of keys and
// values, and the head it read. A put whose expiry has passed is returned
// as a delete of its key: the value is gone on this node, and an older
// value of the key (in the snapshot) must not survive on the destination. Every change it returns, and the head, are
// on disk: the database is synced after the head is read (unless a sync
// since covered it: the freeze's, in a hand-off) and nothing past the head
// is returned, so a sequence number handed to a migrator is never reused
// after an OS crash (writes are not synced one by one by default).
func (s *Store) ReadChanges(l *ChangeLog, after uint64, limit, maxBytes int) ([]Change, uint64, error) {
	head := l.Head()
	if head > after && l.synced.Load() < head {
		if err := s.sync(); err != nil {
			return nil, 0, mapErr("sync change log", err)
		}
	}
	var out []Change
	size := 0
	now := NowMs()
	err := s.db.View(func(txn *badger.Txn) error {
		return eachChange(txn, l, after, max(1, min(limit, 100)), func(seq uint64, item *badger.Item) (bool, error) {
			if seq > head {
				return false, nil // committed after the sync: the next read returns it
			}
			n := int(item.ValueSize())
			if len(out) >= limit || (len(out) > 0 && size+n > maxBytes) {
				return false, nil
			}
			v, err := item.ValueCopy(nil)
			if err != nil {
				return false, err
			}
			c, err := decodeChange(seq, v)
			if err != nil {
				return false, err
			}
			if !c.Delete && Expired(c.ExpiresAt, now) {
				c.Delete, c.Value, c.ExpiresAt = true, nil, 0
			}
			out = append(out, c)
			size += n
			return true, nil
		})
	})
	if err != nil {
		return nil, 0, mapErr("read changes", err)
	}
	return out, head, nil
}

// eachChange calls fn with the sequence and item of every change record of
// l after seq `after`, in order, until fn returns false or an error.
// prefetch is the iterator's prefetch size (0: Badger's default).
func eachChange(txn *badger.Txn, l *ChangeLog, after uint64, prefetch int, fn func(seq uint64, item *badger.Item) (bool, error)) error {
	io := iteratorOptions()
	io.Prefix = l.prefix
	if prefetch > 0 {
		io.PrefetchSize = prefetch
	}
	it := txn.NewIterator(io)
	defer it.Close()
	for it.Seek(l.seqKey(nil, after+1)); it.ValidForPrefix(l.prefix); it.Next() {
		item := it.Item()
		k := item.Key()
		if len(k) != len(l.prefix)+8 {
			continue
		}
		if more, err := fn(binary.BigEndian.Uint64(k[len(l.prefix):]), item); err != nil || !more {
			return err
		}
	}
	return nil
}

// DropChangeLog deletes every change record of job (in batches) and forgets
// its log. The caller guarantees no write captures into it any more.
func (s *Store) DropChangeLog(job string) error {
	if err := CheckJobID(job); err != nil {
		return err
	}
	s.logsMu.Lock()
	delete(s.logs, job)
	s.logsMu.Unlock()
	_, err := s.deletePrefix(jobPrefix(changeSpace, job))
	return err
}

// deletePrefix deletes every key with prefix, batch by batch.
func (s *Store) deletePrefix(prefix []byte) (uint64, error) {
	var total uint64
	for {
		keys, err := s.collectKeys(prefix, nil, nil, DefaultDeleteBatch)
		if err != nil {
			return total, err
		}
		if len(keys) == 0 {
			return total, nil
		}
		if err := s.deleteKeys(keys); err != nil {
			return total, err
		}
		total += uint64(len(keys))
	}
}

// collectKeys returns up to n keys with prefix (or, with a nil prefix, in
// [from, to)) from a fresh read view.
func (s *Store) collectKeys(prefix, from, to []byte, n int) ([][]byte, error) {
	var keys [][]byte
	err := s.db.View(func(txn *badger.Txn) error {
		io := iteratorOptions()
		io.Prefix = prefix
		it := txn.NewIterator(io)
		defer it.Close()
		start := from
		if start == nil {
			start = prefix
		}
		for it.Seek(start); it.Valid() && len(keys) < n; it.Next() {
			k := it.Item().Key()
			if (prefix != nil && !bytes.HasPrefix(k, prefix)) || (to != nil && bytes.Compare(k, to) >= 0) {
				break
			}
			keys = append(keys, it.Item().KeyCopy(nil))
		}
		return nil
	})
	return keys, mapErr("collect keys", err)
}

func (s *Store) deleteKeys(keys [][]byte) error {
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	for _, k := range keys {
		if err := txn.Delete(k); err != nil {
			return mapErr("delete", err)
		}
	}
	return mapErr("delete commit", txn.Commit())
}

// JobsWithRecords returns the job ids that have change-log or import
// records, so a node can collect the leftovers of jobs it no longer knows
// (a crash between forgetting a job and deleting its records).
func (s *Store) JobsWithRecords() ([]string, error) {
	seen := map[string]bool{}
	err := s.db.View(func(txn *badger.Txn) error {
		io := iteratorOptions()
		it := txn.NewIterator(io)
		defer it.Close()
		for _, space := range []byte{changeSpace, importSpace} {
			p := []byte{SystemPrefix, space}
			for it.Seek(p); it.ValidForPrefix(p); {
				k := it.Item().Key()
				end := bytes.IndexByte(k[2:], 0)
				if end < 0 {
					it.Next()
					continue
				}
				job := string(k[2 : 2+end])
				seen[job] = true
				// Jump past every key of this job: <p><job> 0x01.
				it.Seek(append(append(slices.Clone(p), job...), 1))
			}
		}
		return nil
	})
	if err != nil {
		return nil, mapErr("list job records", err)
	}
	out := make([]string, 0, len(seen))
	for j := range seen {
		out = append(out, j)
	}
	slices.Sort(out)
	return out, nil
}

// SystemRecords calls fn with every system record whose name starts with
// prefix, in name order.
func (s *Store) SystemRecords(prefix string, fn func(name string, value []byte) error) error {
	p := systemKey(prefix)
	err := s.db.View(func(txn *badger.Txn) error {
		io := iteratorOptions()
		io.Prefix = p
		it := txn.NewIterator(io)
		defer it.Close()
		for it.Seek(p); it.ValidForPrefix(p); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			if err := fn(string(it.Item().Key()[1:]), v); err != nil {
				return err
			}
		}
		return nil
	})
	return mapErr("system records", err)
}
