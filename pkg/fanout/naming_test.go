package fanout

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"
)

func TestParseNamingLine(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, line string
		want       Instance
		ok         bool
		err        string // substring of the error; "" for none
	}{
		{"address only", "10.0.0.1:7000", Instance{"10.0.0.1:7000", "", 1}, true, ""},
		{"address and tag", "10.0.0.1:7000 1/3", Instance{"10.0.0.1:7000", "1/3", 1}, true, ""},
		{"weight", "host:7000 0/4 5", Instance{"host:7000", "0/4", 5}, true, ""},
		{"tabs and spaces", "\t host:7000 \t 2/3\t7  ", Instance{"host:7000", "2/3", 7}, true, ""},
		{"trailing comment", "host:7000 0/1 # primary", Instance{"host:7000", "0/1", 1}, true, ""},
		{"comment glued", "host:7000 0/2#x", Instance{"host:7000", "0/2", 1}, true, ""},
		{"blank", "", Instance{}, false, ""},
		{"spaces", "   \t ", Instance{}, false, ""},
		{"comment line", "# address tag weight", Instance{}, false, ""},
		{"indented comment", "   # 1.2.3.4:5 0/3", Instance{}, false, ""},
		{"tag N >= M", "h:1 3/3", Instance{}, false, `tag "3/3"`},
		{"tag not N/M", "h:1 west", Instance{}, false, `tag "west": want N/M`},
		{"tag M 0", "h:1 0/0", Instance{}, false, "M must be at least 1"},
		{"tag sign", "h:1 +1/3", Instance{}, false, "plain integers"},
		{"weight 0", "h:1 0/3 0", Instance{}, false, `weight "0": want a positive integer`},
		{"weight negative", "h:1 0/3 -2", Instance{}, false, `weight "-2"`},
		{"weight not a number", "h:1 0/3 heavy", Instance{}, false, `weight "heavy"`},
		{"weight float", "h:1 0/3 1.5", Instance{}, false, `weight "1.5"`},
		{"too many fields", "h:1 0/3 2 extra", Instance{}, false, "4 fields"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, ok, err := ParseNamingLine(tc.line)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseNamingLine(%q) error %v, want one containing %q", tc.line, err, tc.err)
				}
				if ok {
					t.Fatalf("ParseNamingLine(%q): ok with an error", tc.line)
				}
				return
			}
			if err != nil || ok != tc.ok || got != tc.want {
				t.Fatalf("ParseNamingLine(%q) = %+v, %v, %v; want %+v, %v, nil", tc.line, got, ok, err, tc.want, tc.ok)
			}
			if ok { // a good line formats back to an equivalent line
				again, ok2, err := ParseNamingLine(got.String())
				if err != nil || !ok2 || again != got {
					t.Fatalf("round trip of %q via %q: %+v %v %v", tc.line, got.String(), again, ok2, err)
				}
			}
		})
	}
}

func TestParseNaming(t *testing.T) {
	t.Parallel()
	const text = `# slotkv layout: 3 partitions, moving to 4
10.0.0.1:7000 0/3
10.0.0.2:7000 1/3 2   # bigger box
10.0.0.3:7000 2/3

10.0.0.4:7000 0/4
10.0.0.4:7000 1/4
10.0.0.5:7000 4/4
10.0.0.1:7000 0/3 3
10.0.0.6:7000 2/4 0
10.0.0.7:7000 3/4
10.0.0.8:7000
`
	for _, tc := range []struct {
		name     string
		text     string
		want     []Instance
		wantErrs []string // prefixes, in order
	}{
		{"mixed", text, []Instance{
			{"10.0.0.1:7000", "0/3", 1}, {"10.0.0.2:7000", "1/3", 2}, {"10.0.0.3:7000", "2/3", 1},
			{"10.0.0.4:7000", "0/4", 1}, {"10.0.0.4:7000", "1/4", 1}, {"10.0.0.7:7000", "3/4", 1}, {"10.0.0.8:7000", "", 1},
		}, []string{
			`line 8: fanout: tag "4/4"`,
			"line 9: fanout: duplicate of line 2: 10.0.0.1:7000 0/3",
			`line 10: fanout: weight "0"`,
		}},
		{"empty", "", nil, nil},
		{"only comments", "# a\n\n   # b\n", nil, nil},
		{"no final newline", "a 0/2\nb 1/2", []Instance{{"a", "0/2", 1}, {"b", "1/2", 1}}, nil},
		{"CRLF", "a 0/2\r\nb 1/2 3\r\n", []Instance{{"a", "0/2", 1}, {"b", "1/2", 3}}, nil},
		{"same address, other tag", "a 0/2\na 1/2\na\n", []Instance{{"a", "0/2", 1}, {"a", "1/2", 1}, {"a", "", 1}}, nil},
		{"too long", "a 0/1\n" + strings.Repeat("x", maxNamingLine+1) + "\n", []Instance{{"a", "0/1", 1}},
			[]string{"line 2: fanout: line longer than"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, errs := ParseNaming(strings.NewReader(tc.text))
			if !slices.Equal(got, tc.want) {
				t.Errorf("instances\n got %v\nwant %v", got, tc.want)
			}
			if len(errs) != len(tc.wantErrs) {
				t.Fatalf("errors %q, want %d", errs, len(tc.wantErrs))
			}
			for i, err := range errs {
				if !strings.HasPrefix(err.Error(), tc.wantErrs[i]) {
					t.Errorf("error %d: %q, want prefix %q", i, err, tc.wantErrs[i])
				}
			}
		})
	}
	t.Run("read error", func(t *testing.T) {
		t.Parallel()
		boom := errors.New("boom")
		r := iotest.DataErrReader(strings.NewReader("a 0/1\n"))
		got, errs := ParseNaming(&errAfter{r: r, err: boom})
		if !slices.Equal(got, []Instance{{"a", "0/1", 1}}) || len(errs) != 1 || !errors.Is(errs[0], boom) ||
			!strings.HasPrefix(errs[0].Error(), "line 2: fanout: read:") {
			t.Fatalf("got %v %v", got, errs)
		}
	})
}

// errAfter reads r, then fails with err instead of io.EOF.
type errAfter struct {
	r   interface{ Read([]byte) (int, error) }
	err error
}

func (e *errAfter) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil {
		err = e.err
	}
	return n, err
}

// recorder is a subscriber that keeps every list it got.
type recorder struct {
	mu    sync.Mutex
	lists [][]Instance
	ch    chan []Instance
}

func newRecorder() *recorder { return &recorder{ch: make(chan []Instance, 1000)} }

func (r *recorder) fn(list []Instance) {
	r.mu.Lock()
	r.lists = append(r.lists, list)
	r.mu.Unlock()
	r.ch <- list
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.lists)
}

// waitFor waits until the subscriber gets want, failing after a deadline.
func (r *recorder) waitFor(t *testing.T, want []Instance) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case got := <-r.ch:
			if slices.Equal(got, want) {
				return
			}
		case <-deadline:
			t.Fatalf("the subscriber never got %v", want)
		}
	}
}

func TestStaticAndSettable(t *testing.T) {
	t.Parallel()
	a, b := insts("a", 2, 1), insts("b", 3, 1)
	t.Run("static", func(t *testing.T) {
		t.Parallel()
		in := slices.Clone(a)
		src := Static(in...)
		in[0].Addr = "changed" // Static keeps its own copy
		r := newRecorder()
		stop := src.Subscribe(r.fn)
		stop()
		if r.count() != 1 || !slices.Equal(r.lists[0], a) {
			t.Fatalf("got %v, want %v once", r.lists, a)
		}
	})
	t.Run("settable", func(t *testing.T) {
		t.Parallel()
		s := NewSettable(a)
		r1, r2 := newRecorder(), newRecorder()
		stop1 := s.Subscribe(r1.fn)
		stop2 := s.Subscribe(r2.fn)
		s.Set(b)
		stop1()
		stop1()
		s.Set(a)
		stop2()
		s.Set(nil)
		if want := [][]Instance{a, b}; !slices.EqualFunc(r1.lists, want, slices.Equal) {
			t.Errorf("first subscriber got %v, want %v", r1.lists, want)
		}
		if want := [][]Instance{a, b, a}; !slices.EqualFunc(r2.lists, want, slices.Equal) {
			t.Errorf("second subscriber got %v, want %v", r2.lists, want)
		}
		if got := s.Instances(); len(got) != 0 {
			t.Errorf("Instances %v, want none", got)
		}
	})
	t.Run("settable copies", func(t *testing.T) {
		t.Parallel()
		in := slices.Clone(a)
		s := NewSettable(in)
		in[0].Addr = "changed"
		got := s.Instances()
		got[1].Addr = "changed too"
		if !slices.Equal(s.Instances(), a) {
			t.Fatalf("Settable shares its list: %v", s.Instances())
		}
	})
	t.Run("callback may stop, set and subscribe", func(t *testing.T) {
		t.Parallel()
		s := NewSettable(nil)
		var stop func()
		var got [][]Instance
		inner := newRecorder()
		stop = s.Subscribe(func(list []Instance) {
			got = append(got, list)
			switch len(got) {
			case 2:
				s.Set(b) // delivered after this call returns
				s.Subscribe(inner.fn)
			case 3:
				stop()
			}
		})
		s.Set(a)
		s.Set(nil) // after stop: not delivered
		if want := [][]Instance{nil, a, b}; !slices.EqualFunc(got, want, slices.Equal) {
			t.Fatalf("got %v, want %v", got, want)
		}
		// inner subscribed while b was the list, then got the last Set.
		if want := [][]Instance{b, nil}; !slices.EqualFunc(inner.lists, want, slices.Equal) {
			t.Fatalf("inner subscriber got %v, want %v", inner.lists, want)
		}
	})
	t.Run("concurrent sets end on the last list", func(t *testing.T) {
		t.Parallel()
		s := NewSettable(nil)
		var mu sync.Mutex
		var calls, running int
		var last []Instance
		stop := s.Subscribe(func(list []Instance) {
			mu.Lock()
			running++
			if running > 1 {
				t.Error("callbacks overlap")
			}
			calls++
			last = list
			running--
			mu.Unlock()
		})
		defer stop()
		var wg sync.WaitGroup
		for i := range 50 {
			wg.Go(func() { s.Set(insts("x", 1+i%5, 1)) })
		}
		wg.Wait()
		s.Set(b)
		mu.Lock()
		defer mu.Unlock()
		if !slices.Equal(last, b) {
			t.Fatalf("last list %v, want %v", last, b)
		}
	})
}

// writeFile replaces path's content at once (write a temporary file, then
// rename it), so the poller never sees it half written.
func writeFile(t *testing.T, path, text string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// writeInPlace rewrites path's content in place (truncate, write): the
// poller may see it empty for a moment.
func writeInPlace(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// errLog collects OnError reports.
type errLog struct {
	mu   sync.Mutex
	errs []string
	ch   chan string
}

func newErrLog() *errLog { return &errLog{ch: make(chan string, 1000)} }

func (l *errLog) add(err error) {
	l.mu.Lock()
	l.errs = append(l.errs, err.Error())
	l.mu.Unlock()
	l.ch <- err.Error()
}

func (l *errLog) waitFor(t *testing.T, substr string) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case e := <-l.ch:
			if strings.Contains(e, substr) {
				return
			}
		case <-deadline:
			t.Fatalf("no error containing %q was reported", substr)
		}
	}
}

func TestFileSource(t *testing.T) {
	t.Parallel()
	a := []Instance{{"a", "0/2", 1}, {"b", "1/2", 1}}
	const aText = "a 0/2\nb 1/2\n"
	newFile := func(t *testing.T, text string) (string, *FileSource, *errLog) {
		t.Helper()
		path := filepath.Join(t.TempDir(), "naming")
		writeFile(t, path, text)
		log := newErrLog()
		fs, err := NewFileSource(path, FileOptions{Interval: 5 * time.Millisecond, OnError: log.add})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(fs.Close)
		return path, fs, log
	}
	t.Run("missing file", func(t *testing.T) {
		t.Parallel()
		_, err := NewFileSource(filepath.Join(t.TempDir(), "nope"), FileOptions{})
		if !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("error %v, want ErrNotExist", err)
		}
	})
	t.Run("directory", func(t *testing.T) {
		t.Parallel()
		if _, err := NewFileSource(t.TempDir(), FileOptions{}); err == nil || !strings.Contains(err.Error(), "directory") {
			t.Fatalf("error %v, want a directory error", err)
		}
	})
	t.Run("reload on change", func(t *testing.T) {
		t.Parallel()
		path, fs, _ := newFile(t, aText)
		if got := fs.Instances(); !slices.Equal(got, a) || fs.Path() != path {
			t.Fatalf("Instances %v", got)
		}
		r := newRecorder()
		defer fs.Subscribe(r.fn)()
		r.waitFor(t, a)
		// In place, same size, right away (maybe within the same mtime
		// tick): only the content tells.
		writeInPlace(t, path, "c 0/2\nb 1/2\n")
		r.waitFor(t, []Instance{{"c", "0/2", 1}, {"b", "1/2", 1}})
		writeInPlace(t, path, "c 0/2\nb 1/2\nd 1/2 4\n")
		r.waitFor(t, []Instance{{"c", "0/2", 1}, {"b", "1/2", 1}, {"d", "1/2", 4}})
		// Replaced by rename, as editors and config managers do.
		writeFile(t, path, aText)
		r.waitFor(t, a)
	})
	t.Run("no change, no call", func(t *testing.T) {
		t.Parallel()
		path, fs, _ := newFile(t, aText)
		r := newRecorder()
		defer fs.Subscribe(r.fn)()
		writeFile(t, path, aText) // same content, new mtime
		writeFile(t, path, "z 0/1\n")
		r.waitFor(t, []Instance{{"z", "0/1", 1}})
		if want := [][]Instance{a, {{"z", "0/1", 1}}}; !slices.EqualFunc(r.lists, want, slices.Equal) {
			t.Fatalf("got %v, want %v", r.lists, want)
		}
	})
	t.Run("bad lines reported and skipped", func(t *testing.T) {
		t.Parallel()
		path, fs, log := newFile(t, "a 0/2\nb 2/2\nc 1/2\n")
		log.waitFor(t, `naming file `+path+`: line 2: fanout: tag "2/2"`)
		if got := fs.Instances(); !slices.Equal(got, []Instance{{"a", "0/2", 1}, {"c", "1/2", 1}}) {
			t.Fatalf("Instances %v", got)
		}
		r := newRecorder()
		defer fs.Subscribe(r.fn)()
		writeFile(t, path, "a 0/2\nc 1/2 zero\nd 1/2\n")
		log.waitFor(t, `line 2: fanout: weight "zero"`)
		r.waitFor(t, []Instance{{"a", "0/2", 1}, {"d", "1/2", 1}})
	})
	t.Run("removed file keeps the last list", func(t *testing.T) {
		t.Parallel()
		path, fs, log := newFile(t, aText)
		r := newRecorder()
		defer fs.Subscribe(r.fn)()
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		log.waitFor(t, "keeping the last list of 2 instances")
		if got := fs.Instances(); !slices.Equal(got, a) {
			t.Fatalf("Instances %v after removal, want %v", got, a)
		}
		writeFile(t, path, "e 0/1\n")
		r.waitFor(t, []Instance{{"e", "0/1", 1}})
		for _, list := range r.lists {
			if len(list) == 0 {
				t.Fatal("an empty list was published while the file was missing")
			}
		}
		log.mu.Lock()
		defer log.mu.Unlock()
		if len(log.errs) != 1 {
			t.Fatalf("errors %q, want the missing file reported once", log.errs)
		}
	})
	t.Run("close stops polling", func(t *testing.T) {
		t.Parallel()
		path, fs, _ := newFile(t, aText)
		r := newRecorder()
		fs.Subscribe(r.fn)
		fs.Close()
		fs.Close()
		writeFile(t, path, "f 0/1\n")
		time.Sleep(50 * time.Millisecond) // ten intervals: the poller is gone anyway
		if r.count() != 1 || !slices.Equal(fs.Instances(), a) {
			t.Fatalf("after Close: %v, Instances %v", r.lists, fs.Instances())
		}
	})
	t.Run("feeds a partition channel", func(t *testing.T) {
		t.Parallel()
		path, fs, _ := newFile(t, aText)
		net := newLayNet()
		p := newLayPartition(t, net, 2, PartitionOptions[layReq, layResp]{})
		defer p.Watch(fs)()
		if !p.Complete() {
			t.Fatal("Watch did not load the file")
		}
		writeFile(t, path, "a 0/2\nb 1/2\nc 1/2\n")
		deadline := time.Now().Add(20 * time.Second)
		for len(p.Instances()) != 3 {
			if time.Now().After(deadline) {
				t.Fatalf("Instances %v, want 3", p.Instances())
			}
			time.Sleep(time.Millisecond)
		}
	})
}
