package fanout

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// FileOptions configures a FileSource.
type FileOptions struct {
	// Interval between two looks at the file; 250ms when zero.
	Interval time.Duration
	// OnError receives the bad lines of the file and the errors reading it;
	// they are skipped (a bad line) or keep the last good list (an unread
	// file). Nil logs them with slog.Default().Warn. It is called from the
	// constructor and from the polling goroutine, never twice at once.
	OnError func(error)
}

// racyWindow: a file whose modification time is this close to the moment
// it was read may have been written again without its time changing (file
// systems with coarse timestamps), so it is read again at every poll until
// it has been quiet that long.
const racyWindow = 2 * time.Second

// FileSource is a Source that reads a naming file (see ParseNaming) and
// polls it: when the file's content changes, every subscriber gets the new
// list, within two intervals (new content must read the same twice in a
// row, so a file caught half written is not published). A file that
// disappears or cannot be read keeps the last good list; the error goes to
// OnError once until the file reads again. Bad lines go to OnError each
// time a content with them is published.
type FileSource struct {
	path     string
	interval time.Duration
	onError  func(error)
	hub      hub

	// Poll state, owned by the polling goroutine after the constructor.
	stat     os.FileInfo
	readAt   time.Time
	sum      [sha256.Size]byte // of the content published
	pending  bool              // next was read once, not published yet
	next     [sha256.Size]byte
	lastErr  string
	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

// NewFileSource reads the naming file at path and starts polling it. A
// file that cannot be read is an error; bad lines are not (they go to
// opts.OnError). Close stops the polling.
func NewFileSource(path string, opts FileOptions) (*FileSource, error) {
	s := &FileSource{
		path:     path,
		interval: opts.Interval,
		onError:  opts.OnError,
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	if s.interval <= 0 {
		s.interval = 250 * time.Millisecond
	}
	if s.onError == nil {
		s.onError = func(err error) { slog.Default().Warn("fanout: naming file", "path", path, "err", err) }
	}
	st, data, err := s.read()
	if err != nil {
		return nil, err
	}
	s.stat, s.readAt, s.sum = st, time.Now(), sha256.Sum256(data)
	s.load(data)
	go s.poll()
	return s, nil
}

// Subscribe implements Source.
func (s *FileSource) Subscribe(fn func([]Instance)) (stop func()) { return s.hub.subscribe(fn) }

// Instances returns the last good list.
func (s *FileSource) Instances() []Instance { return s.hub.current() }

// Path returns the file's path.
func (s *FileSource) Path() string { return s.path }

// Close stops polling; subscribers keep the last list. It waits for the
// polling goroutine to end, so it must not be called from a subscriber.
func (s *FileSource) Close() {
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.done
}

func (s *FileSource) read() (os.FileInfo, []byte, error) {
	st, err := os.Stat(s.path)
	if err != nil {
		return nil, nil, fmt.Errorf("fanout: naming file: %w", err)
	}
	if st.IsDir() {
		return nil, nil, fmt.Errorf("fanout: naming file %s: is a directory", s.path)
	}
	data, err := os.ReadFile(s.path)
	if err != nil {
		return nil, nil, fmt.Errorf("fanout: naming file: %w", err)
	}
	return st, data, nil
}

// load parses data and publishes the list.
func (s *FileSource) load(data []byte) {
	list, errs := ParseNaming(bytes.NewReader(data))
	for _, err := range errs {
		s.onError(fmt.Errorf("fanout: naming file %s: %w", s.path, err))
	}
	s.hub.publish(list)
}

func (s *FileSource) poll() {
	defer close(s.done)
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		s.check()
	}
}

// check looks at the file once. New content is published once two reads
// in a row found it, so that a file caught while being written (truncated,
// half written) is not published.
func (s *FileSource) check() {
	st, err := os.Stat(s.path)
	if err == nil && !s.pending && !s.changed(st) {
		return
	}
	var data []byte
	if err == nil {
		st, data, err = s.read()
	} else {
		err = fmt.Errorf("fanout: naming file: %w", err)
	}
	if err != nil {
		if msg := err.Error(); msg != s.lastErr {
			s.lastErr = msg
			s.onError(fmt.Errorf("%w (keeping the last list of %d instances)", err, len(s.hub.current())))
		}
		s.stat, s.pending = nil, false // read it again as soon as it is back
		return
	}
	s.lastErr = ""
	s.stat, s.readAt = st, time.Now()
	sum := sha256.Sum256(data)
	switch {
	case sum == s.sum: // unchanged (or changed back)
		s.pending = false
	case !s.pending || sum != s.next:
		s.pending, s.next = true, sum // publish if the next read agrees
	default:
		s.pending, s.sum = false, sum
		s.load(data)
	}
}

// changed reports whether the file may differ from what was last read.
func (s *FileSource) changed(st os.FileInfo) bool {
	old := s.stat
	return old == nil ||
		!os.SameFile(old, st) ||
		!st.ModTime().Equal(old.ModTime()) ||
		st.Size() != old.Size() ||
		s.readAt.Sub(st.ModTime()) < racyWindow
}
