package store

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestWriteBack checks the write-back pass on a real store: it starts the
// write-out of the memtable logs and the newest value-log files (and
// nothing else), takes a new log file at the next pass and closes what
// Badger removed; and the loop stops with Close.
func TestWriteBack(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(DefaultOptions(dir).WithMemTableSize(4 << 20).WithBlockCacheSize(4 << 20).WithWritebackInterval(5 * time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	big := make([]byte, 4096) // in the value log
	for i := range 200 {
		if _, err := s.Put(gcKey(i), big); err != nil {
			t.Fatal(err)
		}
	}
	if err := startWriteOut(mustOpen(t, filepath.Join(dir, "MANIFEST"))); err != nil {
		t.Fatalf("sync_file_range on a real file: %v", err)
	}

	w := newWriteback(dir)
	defer w.close()
	names := func() []string {
		var n []string
		for name := range w.files {
			n = append(n, name)
		}
		slices.Sort(n)
		return n
	}
	w.pass()
	var vlogs, mems int
	for _, n := range names() {
		switch {
		case strings.HasSuffix(n, ".vlog"):
			vlogs++
		case strings.HasSuffix(n, ".mem"):
			mems++
		default:
			t.Errorf("write-back opened %s, not a log", n)
		}
	}
	if vlogs == 0 || mems == 0 {
		t.Fatalf("write-back took %v: want the value log and the memtable logs", names())
	}

	// Badger opens a new value-log file: the pass after takes it, and
	// keeps the newest two value-log files only.
	for _, n := range []string{"999998.vlog", "999999.vlog"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	w.pass()
	var got []string
	for _, n := range names() {
		if strings.HasSuffix(n, ".vlog") {
			got = append(got, n)
		}
	}
	if !slices.Equal(got, []string{"999998.vlog", "999999.vlog"}) {
		t.Fatalf("value-log files held after a new one came: %v, want the newest two", got)
	}
	// Badger removes one: the next pass closes it.
	f := w.files["999999.vlog"]
	if err := os.Remove(filepath.Join(dir, "999999.vlog")); err != nil {
		t.Fatal(err)
	}
	w.pass()
	if _, ok := w.files["999999.vlog"]; ok {
		t.Fatal("a removed log file is still held")
	}
	if _, err := f.Stat(); err == nil {
		t.Fatal("the removed log file's descriptor is still open")
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.bgDone:
	default:
		t.Fatal("the write-back still runs after Close")
	}
}

func mustOpen(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}
