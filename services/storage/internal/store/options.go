package store

import "log/slog"

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
