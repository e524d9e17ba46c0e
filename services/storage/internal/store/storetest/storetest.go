// Package storetest opens real, throwaway stores for tests.
package storetest

import (
	"strconv"
	"sync"
	"testing"

	"github.com/slotkv/slotkv/pkg/slot"

	"github.com/slotkv/slotkv/services/storage/internal/store"
)

// Options returns store options for a test store in dir: small memtables and
// caches, so many parallel tests fit in memory.
func Options(dir string) store.Options {
	return store.DefaultOptions(dir).
		WithMemTableSize(4 << 20).
		WithBlockCacheSize(4 << 20).
		WithValueLogFileSize(16 << 20)
}

// Open opens a store in t.TempDir() and closes it in t.Cleanup.
func Open(tb testing.TB) *store.Store {
	tb.Helper()
	return OpenOptions(tb, Options(tb.TempDir()))
}

// OpenOptions opens a store with opts and closes it in t.Cleanup.
func OpenOptions(tb testing.TB, opts store.Options) *store.Store {
	tb.Helper()
	st, err := store.Open(opts)
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	tb.Cleanup(func() {
		if err := st.Close(); err != nil {
			tb.Errorf("close store: %v", err)
		}
	})
	return st
}

var (
	tagsOnce sync.Once
	tags     [slot.Count]string
)

// KeyInSlot returns "{tag}suffix" where tag is the shortest decimal hash tag
// landing in slot s, so tests can place keys in chosen slots.
func KeyInSlot(s uint16, suffix string) []byte {
	tagsOnce.Do(func() {
		found := 0
		for i := 0; found < slot.Count; i++ {
			t := strconv.Itoa(i)
			if sl := slot.OfString(t); tags[sl] == "" {
				tags[sl] = t
				found++
			}
		}
	})
	return []byte("{" + tags[s] + "}" + suffix)
}
