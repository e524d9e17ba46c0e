package store

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// DefaultWritebackInterval is how often the store hands the dirty pages of
// its logs to the disk (see writeback).
const DefaultWritebackInterval = 100 * time.Millisecond

func (o Options) writebackInterval() time.Duration {
	if o.WritebackInterval == 0 {
		return DefaultWritebackInterval
	}
	return o.WritebackInterval
}

// WithWritebackInterval returns o with WritebackInterval set.
func (o Options) WithWritebackInterval(d time.Duration) Options { o.WritebackInterval = d; return o }

// writeback starts, at each pass (every WritebackInterval, store.go), the
// write-out of the pages of Badger's logs (the value log and the
// memtables' write-ahead logs) dirtied since the last pass, without
// waiting for it, as RocksDB's bytes_per_sync does. Badger writes its logs
// through memory maps and leaves the pages to the kernel, which writes
// them back only after 30 s or past a share of memory, so a sync had to
// write everything since the last one at once: 76-120 ms for the 345 MB a
// migration imports, on this project's 2-core box. With write-back the
// syncs slotkv waits for (an import's durable point before the hand-off,
// the hand-off's own, SyncWrites commits) find only the last interval's
// pages dirty. It changes nothing the files hold, only when the disk gets
// them. It holds the log files open, by name, and remembers what it last
// saw of the directory.
type writeback struct {
	dir   string
	files map[string]*os.File
	mtime time.Time
}

func newWriteback(dir string) *writeback {
	return &writeback{dir: dir, files: map[string]*os.File{}}
}

// pass starts the write-out of every log file that writes may have
// dirtied. A file it cannot open or write out is skipped: the next sync
// writes it in full, as it would without write-back.
func (w *writeback) pass() {
	// A file came or went when the directory's modification time moved.
	// One that changed in the last second may share its timestamp with a
	// change made after the last look (timestamps are coarse): look again.
	fi, err := os.Stat(w.dir)
	if err != nil || !fi.ModTime().Equal(w.mtime) || time.Since(fi.ModTime()) < time.Second {
		if err == nil {
			w.mtime = fi.ModTime()
		}
		w.scan()
	}
	for _, f := range w.files {
		_ = startWriteOut(f)
	}
}

// scan holds open the logs that take writes: every memtable's write-ahead
// log, and the newest two value-log files (Badger appends to the newest;
// the one before may still have pages of its last writes dirty). It
// closes the files it no longer needs, Badger's removed ones among them.
func (w *writeback) scan() {
	entries, err := os.ReadDir(w.dir)
	if err != nil {
		return
	}
	var vlogs []string
	want := map[string]bool{}
	for _, e := range entries {
		switch name := e.Name(); {
		case strings.HasSuffix(name, ".mem"):
			want[name] = true
		case strings.HasSuffix(name, ".vlog"):
			vlogs = append(vlogs, name)
		}
	}
	// Badger names value-log files by a zero-padded, growing number.
	slices.Sort(vlogs)
	for _, name := range vlogs[max(0, len(vlogs)-2):] {
		want[name] = true
	}
	for name, f := range w.files {
		if !want[name] {
			_ = f.Close()
			delete(w.files, name)
		}
	}
	for name := range want {
		if _, ok := w.files[name]; ok {
			continue
		}
		if f, err := os.Open(filepath.Join(w.dir, name)); err == nil {
			w.files[name] = f
		}
	}
}

// close closes every file held.
func (w *writeback) close() {
	for name, f := range w.files {
		_ = f.Close()
		delete(w.files, name)
	}
}
