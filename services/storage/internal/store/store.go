package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/slotkv/slotkv/pkg/badgerlog"
	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/pkg/slot"
)

// Sentinel errors. Each wraps the rpcerr sentinel that decides its gRPC code,
// so callers test them with errors.Is and the gRPC layer maps them without
// knowing this package.
var (
	// ErrNotFound: Get of an absent key.
	ErrNotFound = fmt.Errorf("key %w", rpcerr.ErrNotFound)
	// ErrEmptyKey: a user key of length zero.
	ErrEmptyKey = fmt.Errorf("%w: empty key", rpcerr.ErrInvalidArgument)
	// ErrReservedKey: a key whose storage form starts with Badger's reserved
	// "!badger!" prefix (slot 8546 and a key starting with "adger!").
	ErrReservedKey = fmt.Errorf("%w: key collides with Badger's reserved key space", rpcerr.ErrInvalidArgument)
	// ErrBatchTooLarge: a batch that does not fit in one Badger transaction
	// (Badger's ErrTxnTooBig); the wrapping error names the count.
	ErrBatchTooLarge = fmt.Errorf("%w: batch too large", rpcerr.ErrInvalidArgument)
	// ErrBadScan: scan options out of bounds (limit, ranges).
	ErrBadScan = fmt.Errorf("%w: bad scan", rpcerr.ErrInvalidArgument)
	// ErrClosed: the store was closed.
	ErrClosed = fmt.Errorf("store closed: %w", rpcerr.ErrUnavailable)
	// ErrFormat: the directory holds data of another format version.
	ErrFormat = errors.New("store: incompatible data format")
)

// badgerReserved is the prefix Badger keeps for its own keys.
var badgerReserved = []byte("!badger!")

// Store is a Badger database with slotkv's key layout. It is safe for
// concurrent use.
type Store struct {
	db   *badger.DB
	opts Options

	// drops are the slots dropped and their purge (drop.go).
	drops drops

	// capture maps migrating slots to their change logs (nil: none); see
	// changelog.go and write.
	capture atomic.Pointer[CaptureTable]
	logsMu  sync.Mutex
	logs    map[string]*ChangeLog
	// syncs counts the store's disk syncs (for tests).
	syncs atomic.Uint64

	// The background loops (the purge of dropped slots, drop.go; the
	// value log's collection, vloggc.go; the write-back of the logs,
	// writeback.go): stopBG ends them (nil when
	// none runs), bgDone closes once all have returned.
	stopBG context.CancelFunc
	bgDone chan struct{}
	// vlogRewritten counts the value-log files collected; gcEpoch is odd
	// while one is being collected, and grows by two with each file.
	vlogRewritten atomic.Uint64
	gcEpoch       atomic.Uint64
}

// iteratorOptions are Badger's iterator defaults without value prefetching:
// Badger prefetches by starting a goroutine per item. With P migration
// streams scanning at once the goroutine churn contended on the Go
// scheduler's locks: 3.3 s of lock delay in 3 s on a 16-core source at
// P=16, per record (measured with values in the LSM tree, where a
// prefetch reads nothing more). Values are read in place by Item.Value
// instead, from the tree's block or from the memory-mapped value log.
func iteratorOptions() badger.IteratorOptions {
	o := badger.DefaultIteratorOptions
	o.PrefetchValues = false
	return o
}

// Open opens (creating if needed) the store described by opts.
func Open(opts Options) (*Store, error) {
	if opts.Dir == "" && !opts.InMemory {
		return nil, fmt.Errorf("store: open: %w", rpcerr.InvalidField("dir", "no data directory given"))
	}
	bo := badger.DefaultOptions(opts.Dir).
		WithInMemory(opts.InMemory).
		WithSyncWrites(opts.SyncWrites).
		WithLogger(badgerlog.New(opts.Logger)).
		// Metrics are process-global expvars in Badger; Size is computed
		// here from the files instead, so they buy nothing.
		WithMetricsEnabled(false)
	if opts.InMemory {
		bo = bo.WithDir("").WithValueDir("")
	}
	bo = bo.WithValueThreshold(opts.valueThreshold())
	if opts.MemTableSize > 0 {
		bo = bo.WithMemTableSize(opts.MemTableSize)
		// Badger refuses a value threshold above its largest batch (15% of
		// a memtable); small memtables (tests) need a smaller threshold.
		if maxBatch := opts.MemTableSize * 15 / 100; bo.ValueThreshold > maxBatch/2 {
			bo = bo.WithValueThreshold(maxBatch / 2)
		}
	}
	if opts.BlockCacheSize > 0 {
		bo = bo.WithBlockCacheSize(opts.BlockCacheSize)
	}
	if opts.ValueLogFileSize > 0 {
		bo = bo.WithValueLogFileSize(opts.ValueLogFileSize)
	}
	db, err := badger.Open(bo)
	if err != nil {
		return nil, fmt.Errorf("store: open badger in %s: %w", opts.Dir, err)
	}
	s := &Store{db: db, opts: opts}
	if err := s.checkFormat(); err != nil {
		_ = db.Close()
		return nil, err
	}
	if err := s.loadDrops(); err != nil {
		_ = db.Close()
		return nil, err
	}
	loops := []func(context.Context){s.purgeLoop}
	if every := opts.valueLogGCInterval(); every > 0 && !opts.InMemory {
		loops = append(loops, func(ctx context.Context) {
			tick(ctx, every, func() { s.collectValueLog(ctx) })
		})
	}
	if every := opts.writebackInterval(); every > 0 && !opts.InMemory {
		loops = append(loops, func(ctx context.Context) {
			w := newWriteback(opts.Dir)
			defer w.close()
			tick(ctx, every, w.pass)
		})
	}
	s.startBackground(loops)
	return s, nil
}

// startBackground runs each loop on its own goroutine until Close.
func (s *Store) startBackground(loops []func(context.Context)) {
	if len(loops) == 0 {
		return
	}
	var ctx context.Context
	ctx, s.stopBG = context.WithCancel(context.Background())
	s.bgDone = make(chan struct{})
	var wg sync.WaitGroup
	for _, loop := range loops {
		wg.Go(func() { loop(ctx) })
	}
	go func() {
		wg.Wait()
		close(s.bgDone)
	}()
}

// tick runs pass every interval until ctx ends.
func tick(ctx context.Context, every time.Duration, pass func()) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pass()
	}
}

// Close flushes and closes the database. Calls after the first return nil.
func (s *Store) Close() error {
	if s.db.IsClosed() {
		return nil
	}
	if s.stopBG != nil {
		// No background loop may run into a closed database.
		s.stopBG()
		<-s.bgDone
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

// Dir returns the data directory.
func (s *Store) Dir() string { return s.opts.Dir }

// CheckKey returns the slot of a user key, or ErrEmptyKey / ErrReservedKey
// when the key cannot be stored; request validation calls it to name the
// offending field before any write starts.
func CheckKey(key []byte) (uint16, error) {
	if len(key) == 0 {
		return 0, ErrEmptyKey
	}
	sl := slot.Of(key)
	if p := slot.Prefix(sl); p == [2]byte(badgerReserved[:2]) && bytes.HasPrefix(key, badgerReserved[slot.PrefixLen:]) {
		return sl, fmt.Errorf("%w: key %q (slot %d) starts with %q after its slot prefix", ErrReservedKey, key, sl, badgerReserved[slot.PrefixLen:])
	}
	return sl, nil
}

// Ready reports whether the store is open: nil, or ErrClosed.
func (s *Store) Ready() error {
	if s.db.IsClosed() {
		return ErrClosed
	}
	return nil
}

// storageKey returns the storage form of a user key and its slot.
func storageKey(dst, key []byte) ([]byte, uint16, error) {
	sl, err := CheckKey(key)
	if err != nil {
		return nil, sl, err
	}
	return slot.AppendKey(dst, sl, key), sl, nil
}

// mapErr turns Badger errors into this package's sentinels.
func mapErr(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, badger.ErrDBClosed):
		return fmt.Errorf("store: %s: %w", op, ErrClosed)
	case errors.Is(err, badger.ErrBlockedWrites):
		// Writes are blocked while Badger drops a prefix; the caller may retry.
		return fmt.Errorf("store: %s: %w: %w", op, rpcerr.ErrUnavailable, err)
	}
	return fmt.Errorf("store: %s: %w", op, err)
}

// Get returns the value of key and its slot; ErrNotFound when absent or
// expired.
func (s *Store) Get(key []byte) ([]byte, uint16, error) {
	v, _, sl, err := s.GetWithExpiry(key)
	return v, sl, err
}

// GetWithExpiry is Get that also returns the key's expiry (Unix ms; 0:
// never).
func (s *Store) GetWithExpiry(key []byte) (val []byte, exp int64, sl uint16, err error) {
	k, sl, err := storageKey(nil, key)
	if err != nil {
		return nil, 0, sl, err
	}
	var found bool
	err = s.view(func(txn *badger.Txn) error {
		var err error
		val, exp, found, err = s.getLive(txn, k, NowMs())
		return err
	})
	if err != nil {
		return nil, 0, sl, mapErr("get", err)
	}
	if !found {
		return nil, 0, sl, fmt.Errorf("%w: %q (slot %d)", ErrNotFound, key, sl)
	}
	return val, exp, sl, nil
}

// Put writes key = value, with no expiry, in its own transaction and
// returns the key's slot.
func (s *Store) Put(key, value []byte) (uint16, error) { return s.PutExpiring(key, value, 0) }

// PutExpiring writes key = value expiring at exp (Unix ms; 0: never); an
// expiry already past deletes the key.
func (s *Store) PutExpiring(key, value []byte, exp int64) (uint16, error) {
	k, sl, err := storageKey(nil, key)
	if err != nil {
		return sl, err
	}
	if err := CheckExpiry(exp); err != nil {
		return sl, err
	}
	_, err = s.write(writeOp{op: "put", n: 1, entry: func(int) entry { return entry{key: k, value: value, exp: exp} }})
	return sl, s.singleErr(err)
}

// Delete removes key (absent keys are fine) and returns its slot and
// whether it existed (present and not expired) just before.
func (s *Store) Delete(key []byte) (sl uint16, existed bool, err error) {
	k, sl, err := storageKey(nil, key)
	if err != nil {
		return sl, false, err
	}
	_, err = s.write(writeOp{op: "delete", n: 1,
		entry: func(int) entry { return entry{key: k, del: true} },
		read: func(txn *badger.Txn, now int64) (bool, error) {
			var err error
			existed, err = s.liveKey(txn, k, now)
			return true, err
		},
	})
	return sl, existed, s.singleErr(err)
}

// liveKey reports whether the storage key k is present (not dropped) and
// not expired at now in txn (a read: it takes part in conflict detection).
func (s *Store) liveKey(txn *badger.Txn, k []byte, now int64) (bool, error) {
	item, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if s.dropFilter(txn).hides(item) {
		return false, nil
	}
	dead, err := itemExpired(item, now)
	return !dead, err
}

// singleErr words a *txnFullError of a one-key write (a value too big for
// one transaction, with its change record when captured).
func (s *Store) singleErr(err error) error {
	var full *txnFullError
	if errors.As(err, &full) {
		return fmt.Errorf("%w: the value does not fit in one transaction", ErrBatchTooLarge)
	}
	return err
}

// Item is one BatchGet result.
type Item struct {
	Key       []byte
	Value     []byte // nil when not found
	Found     bool
	Slot      uint16
	ExpiresAt int64 // Unix ms; 0: never
}

// BatchGet reads keys in one consistent snapshot, returning one Item per key
// in request order; expired keys are not found.
func (s *Store) BatchGet(keys [][]byte) ([]Item, error) {
	items := make([]Item, len(keys))
	var buf []byte
	now := NowMs()
	err := s.view(func(txn *badger.Txn) error {
		for i, key := range keys {
			k, sl, err := storageKey(buf[:0], key)
			if err != nil {
				return fmt.Errorf("keys[%d]: %w", i, err)
			}
			buf = k
			items[i] = Item{Key: key, Slot: sl}
			v, exp, found, err := s.getLive(txn, k, now)
			if err != nil {
				return err
			}
			if found {
				items[i].Value, items[i].Found, items[i].ExpiresAt = v, true, exp
			}
		}
		return nil
	})
	if err != nil {
		return nil, mapErr("batch get", err)
	}
	return items, nil
}

// Mutation is one BatchWrite operation: a put, or a delete when Delete is
// set. A put expires at ExpiresAt (Unix ms; 0: never; already past: the
// put is a delete).
type Mutation struct {
	Key       []byte
	Value     []byte
	Delete    bool
	ExpiresAt int64
}

// BatchWrite applies muts atomically: every mutation or none. A batch too big
// for one Badger transaction fails with ErrBatchTooLarge naming its size.
func (s *Store) BatchWrite(muts []Mutation) error {
	_, err := s.WriteBatch(muts, false)
	return err
}

// BatchResult is what WriteBatch did.
type BatchResult struct {
	// Applied is false only when ifAllAbsent refused the batch.
	Applied bool
	// Deleted counts the deletes whose key existed (and had not expired).
	Deleted int
}

// WriteBatch is BatchWrite that reports the deletes of keys that existed
// and, with ifAllAbsent (MSETNX), writes nothing (Applied false) when the
// key of any put exists. What it reads and what it writes are one
// transaction: no write of those keys can come in between.
func (s *Store) WriteBatch(muts []Mutation, ifAllAbsent bool) (BatchResult, error) {
	// Each key needs its own buffer (Badger keeps it until commit): one
	// arena for all of them.
	var keyBytes int
	for _, m := range muts {
		keyBytes += slot.PrefixLen + len(m.Key)
	}
	arena := make([]byte, 0, keyBytes)
	keys := make([][]byte, len(muts))
	reads := false
	for i, m := range muts {
		k, _, err := storageKey(arena, m.Key)
		if err != nil {
			return BatchResult{}, fmt.Errorf("mutations[%d]: %w", i, err)
		}
		if !m.Delete {
			if err := CheckExpiry(m.ExpiresAt); err != nil {
				return BatchResult{}, fmt.Errorf("mutations[%d]: %w", i, err)
			}
		}
		keys[i], arena = k[:len(k):len(k)], k[len(k):]
		reads = reads || m.Delete || ifAllAbsent
	}
	res := BatchResult{Applied: true}
	w := writeOp{op: "batch write", n: len(muts), entry: func(i int) entry {
		return entry{key: keys[i], value: muts[i].Value, exp: muts[i].ExpiresAt, del: muts[i].Delete}
	}}
	if reads {
		w.read = func(txn *badger.Txn, now int64) (bool, error) {
			res = BatchResult{Applied: true}
			// For a delete, a key written earlier in the batch is present
			// (a put) or absent (a delete), so DEL k k counts k once;
			// ifAllAbsent looks at the stored keys only (MSETNX k 1 k 2
			// sets k).
			var earlier map[string]bool
			if len(muts) > 1 {
				earlier = map[string]bool{}
			}
			for i, m := range muts {
				live, seen := earlier[string(keys[i])]
				if earlier != nil {
					earlier[string(keys[i])] = !m.Delete
				}
				if !m.Delete && !ifAllAbsent {
					continue
				}
				if !seen || !m.Delete {
					var err error
					if live, err = s.liveKey(txn, keys[i], now); err != nil {
						return false, err
					}
				}
				switch {
				case live && m.Delete:
					res.Deleted++
				case live:
					res.Applied = false
					return false, nil
				}
			}
			return true, nil
		}
	}
	_, err := s.write(w)
	var full *txnFullError
	if errors.As(err, &full) {
		var total int
		for i := range muts {
			total += len(keys[i]) + len(muts[i].Value)
		}
		return BatchResult{}, fmt.Errorf("%w: %d mutations totalling over %d bytes do not fit in one transaction (it filled up at mutations[%d]); split the batch",
			ErrBatchTooLarge, len(muts), total, full.at)
	}
	if err != nil {
		return BatchResult{}, err
	}
	if !res.Applied {
		res.Deleted = 0
	}
	return res, nil
}

// Size returns the bytes Badger's LSM tree (.sst tables and the .mem
// memtable write-ahead logs) and value log (.vlog) take on disk, computed
// from the files now (Badger's own figure is a metric refreshed once a
// minute). Sizes are allocated bytes where the platform reports them:
// Badger preallocates memtable and value-log files as sparse files, whose
// apparent size (hundreds of MiB for an empty node) says nothing about disk
// use. An in-memory store reports zeros.
func (s *Store) Size() (lsm, vlog int64, err error) {
	if s.opts.InMemory {
		return 0, 0, nil
	}
	err = filepath.WalkDir(s.opts.Dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			// Files come and go under compaction; a vanished one counts zero.
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			return nil
		}
		switch filepath.Ext(path) {
		case ".sst", ".mem":
			lsm += diskSize(d)
		case ".vlog":
			vlog += diskSize(d)
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("store: size of %s: %w", s.opts.Dir, err)
	}
	return lsm, vlog, nil
}

// diskSize is the allocated size of a file, or its length where the
// platform does not say.
func diskSize(d os.DirEntry) int64 {
	fi, err := d.Info()
	if err != nil {
		return 0
	}
	if a, ok := allocated(fi); ok {
		return min(a, fi.Size())
	}
	return fi.Size()
}
