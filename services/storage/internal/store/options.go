package store

import (
	"log/slog"
	"time"
)

// Options configures a Store. Build it with DefaultOptions and the WithX
// methods, the way Badger's own options work:
//
//	st, err := store.Open(store.DefaultOptions(dir).WithSyncWrites(true))
type Options struct {
	// Dir is the Badger directory (keys and value log together).
	Dir string
	// SyncWrites makes every commit fsync before it returns. Off by default,
	// like Badger: an OS crash may lose the last writes, a process crash
	// loses nothing.
	SyncWrites bool
	// InMemory keeps everything in memory and ignores Dir (tests, benchmarks).
	InMemory bool
	// MemTableSize is the size of each Badger memtable in bytes; it also
	// bounds the size of one transaction (see ErrBatchTooLarge).
	MemTableSize int64
	// BlockCacheSize is Badger's block cache in bytes.
	BlockCacheSize int64
	// ValueLogFileSize is the maximum size of one value-log file in bytes.
	ValueLogFileSize int64
	// ValueThreshold is the size from which a value is kept in Badger's
	// value log, with only a pointer in the LSM tree (WiscKey's key-value
	// separation); smaller values stay in the tree. 0 means
	// DefaultValueThreshold; badger.maxValueThreshold (1 MiB) keeps every
	// value in the tree.
	ValueThreshold int64
	// ValueLogGCInterval is how often the value log's garbage (values
	// overwritten or deleted) is collected; 0 means
	// DefaultValueLogGCInterval, negative never (GCValueLog still runs it).
	ValueLogGCInterval time.Duration
	// WritebackInterval is how often the dirty pages of Badger's logs are
	// handed to the disk in the background, so that a sync has little
	// left to write (writeback.go); 0 means DefaultWritebackInterval,
	// negative never.
	WritebackInterval time.Duration
	// HeldKeysBytes caps the memory a migration snapshot spends recording
	// the keys its scans read, so that the source's cleanup need not read
	// them again (see HeldKeys); 0 means DefaultHeldKeysBytes, negative
	// records nothing.
	HeldKeysBytes int
	// Logger receives Badger's own log lines (info lines at debug level,
	// since Badger is chatty on open and compaction). Nil discards them.
	Logger *slog.Logger
}

// DefaultOptions returns production defaults for a store in dir.
func DefaultOptions(dir string) Options {
	return Options{
		Dir:              dir,
		MemTableSize:     64 << 20,
		BlockCacheSize:   256 << 20,
		ValueLogFileSize: 256 << 20,
	}
}

// DefaultValueThreshold: values of 256 bytes and more live in the value
// log. A moved, overwritten or deleted value then costs the LSM tree's
// compactions a key and a pointer instead of the value, at every level:
// in `make bench-migration` (1 KiB values) the whole migration used less
// than a third of the CPU, counted until compactions settled, that it did
// with values in the tree, and back-to-back migrations no longer slowed
// each other down. Below 256 bytes the pointer and the second read cost
// more than the compactions save.
const DefaultValueThreshold = 256

// DefaultValueLogGCInterval is how often the value log is collected: often
// enough that the space of a migrated-away range comes back within
// minutes, rarely enough that a pass finding little garbage costs nothing
// that shows.
const DefaultValueLogGCInterval = 5 * time.Minute

// valueLogGCRatio: a value-log file is rewritten once at least half of it
// is garbage (Badger's recommended ratio), so a rewrite copies at most as
// much as it frees.
const valueLogGCRatio = 0.5

func (o Options) valueThreshold() int64 {
	if o.ValueThreshold == 0 {
		return DefaultValueThreshold
	}
	return o.ValueThreshold
}

func (o Options) valueLogGCInterval() time.Duration {
	if o.ValueLogGCInterval == 0 {
		return DefaultValueLogGCInterval
	}
	return o.ValueLogGCInterval
}

// WithValueThreshold returns o with ValueThreshold set.
func (o Options) WithValueThreshold(n int64) Options { o.ValueThreshold = n; return o }

// WithValueLogGCInterval returns o with ValueLogGCInterval set.
func (o Options) WithValueLogGCInterval(d time.Duration) Options { o.ValueLogGCInterval = d; return o }

// WithHeldKeysBytes returns o with HeldKeysBytes set.
func (o Options) WithHeldKeysBytes(n int) Options { o.HeldKeysBytes = n; return o }

func (o Options) heldKeysLimit() int {
	if o.HeldKeysBytes == 0 {
		return DefaultHeldKeysBytes
	}
	return o.HeldKeysBytes
}

// WithDir returns o with Dir set.
func (o Options) WithDir(dir string) Options { o.Dir = dir; return o }

// WithSyncWrites returns o with SyncWrites set.
func (o Options) WithSyncWrites(v bool) Options { o.SyncWrites = v; return o }

// WithInMemory returns o with InMemory set.
func (o Options) WithInMemory(v bool) Options { o.InMemory = v; return o }

// WithMemTableSize returns o with MemTableSize set.
func (o Options) WithMemTableSize(n int64) Options { o.MemTableSize = n; return o }

// WithBlockCacheSize returns o with BlockCacheSize set.
func (o Options) WithBlockCacheSize(n int64) Options { o.BlockCacheSize = n; return o }

// WithValueLogFileSize returns o with ValueLogFileSize set.
func (o Options) WithValueLogFileSize(n int64) Options { o.ValueLogFileSize = n; return o }

// WithLogger returns o with Logger set.
func (o Options) WithLogger(l *slog.Logger) Options { o.Logger = l; return o }
