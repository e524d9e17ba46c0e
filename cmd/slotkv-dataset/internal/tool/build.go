package tool

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/slotkv/slotkv/pkg/dataset"
	"github.com/slotkv/slotkv/pkg/slot"
)

// Input limits.
const (
	// MaxKeyBytes is the longest key accepted (the storage default).
	MaxKeyBytes = 16 << 10
	// DefaultMaxValueBytes is the default of --max-value-bytes (the storage
	// default, 4 MiB).
	DefaultMaxValueBytes = 4 << 20
	// MaxValueBytesLimit caps --max-value-bytes so that a record always
	// fits a data block.
	MaxValueBytesLimit = 32 << 20
	// DefaultTargetFileSize is the default of --target-file-size.
	DefaultTargetFileSize = 64 << 20
	// maxListedBadLines caps the bad lines listed in the output.
	maxListedBadLines = 20
)

// BuildOptions configures Build.
type BuildOptions struct {
	Inputs         []string // input files, read in this order
	Format         string   // "jsonl", "csv", or "" to tell by each file's extension
	OutDir         string   // output directory; must be empty or not exist
	TargetFileSize int64    // a new data file is started once one reaches it
	MaxBadLines    int      // bad input lines tolerated (skipped); more fail the build
	MaxValueBytes  int      // longest value accepted; 0 = DefaultMaxValueBytes
	BlockSize      int      // data block size; 0 = dataset.DefaultBlockSize
}

// BadLine is an input line that could not be used.
type BadLine struct {
	File   string
	Line   int
	Reason string
}

func (b BadLine) String() string { return fmt.Sprintf("%s:%d: %s", b.File, b.Line, b.Reason) }

// BuildResult summarises a build.
type BuildResult struct {
	Input      uint64    // good records read, duplicates included
	Records    uint64    // records written
	Duplicates uint64    // records dropped because a later one had the same key
	BadLines   uint64    // bad input lines
	Bad        []BadLine // the first few bad lines
	Files      int
	Bytes      int64 // total size of the data files
	Manifest   *dataset.Manifest

	ReadTime  time.Duration
	SortTime  time.Duration
	WriteTime time.Duration
}

// ErrTooManyBadLines is returned by Build when the input has more bad lines
// than BuildOptions.MaxBadLines; the BuildResult lists them.
var ErrTooManyBadLines = errors.New("too many bad input lines")

// Build reads the inputs, sorts their records by (slot, key), keeps the last
// occurrence of each key (in input order, across files in the order given),
// writes them to data files of about TargetFileSize bytes named
// part-00000.skv, part-00001.skv, ... in OutDir, and then, atomically, the
// manifest. Nothing is written when the input has too many bad lines.
func Build(ctx context.Context, o BuildOptions) (*BuildResult, error) {
	if o.MaxValueBytes <= 0 {
		o.MaxValueBytes = DefaultMaxValueBytes
	}
	if o.MaxValueBytes > MaxValueBytesLimit {
		return nil, fmt.Errorf("--max-value-bytes %d is above the limit of %d", o.MaxValueBytes, MaxValueBytesLimit)
	}
	if o.TargetFileSize <= 0 {
		o.TargetFileSize = DefaultTargetFileSize
	}
	if len(o.Inputs) == 0 {
		return nil, errors.New("no input files (--input)")
	}
	formats := make([]string, len(o.Inputs))
	for i, in := range o.Inputs {
		f, err := inputFormat(in, o.Format)
		if err != nil {
			return nil, err
		}
		formats[i] = f
	}
	if err := checkOutDir(o.OutDir); err != nil {
		return nil, err
	}

	res := &BuildResult{}
	st := &store{}
	start := time.Now()
	for i, in := range o.Inputs {
		if err := readInput(ctx, in, formats[i], o.MaxValueBytes, st, res); err != nil {
			return res, err
		}
	}
	res.ReadTime = time.Since(start)
	if res.BadLines > uint64(o.MaxBadLines) {
		return res, fmt.Errorf("%w: %d, at most %d allowed (--max-bad-lines)", ErrTooManyBadLines, res.BadLines, o.MaxBadLines)
	}
	if len(st.entries) == 0 {
		return res, errors.New("the input holds no records")
	}

	start = time.Now()
	st.sort()
	res.Duplicates = st.dedup()
	res.Records = uint64(len(st.entries))
	res.SortTime = time.Since(start)

	start = time.Now()
	m, err := st.write(ctx, o)
	res.WriteTime = time.Since(start)
	if err != nil {
		return res, err
	}
	res.Manifest = m
	res.Files = len(m.Files)
	for _, f := range m.Files {
		res.Bytes += f.Size
	}
	return res, nil
}

// inputFormat returns the format of input file name: format if set, else
// from its extension (.jsonl, .ndjson, .json, .csv, optionally + .gz).
func inputFormat(name, format string) (string, error) {
	switch format {
	case "jsonl", "csv":
		return format, nil
	case "":
	default:
		return "", fmt.Errorf("unknown --format %q (want jsonl or csv)", format)
	}
	ext := strings.ToLower(filepath.Ext(strings.TrimSuffix(strings.TrimSuffix(name, ".gz"), ".GZ")))
	switch ext {
	case ".jsonl", ".ndjson", ".json":
		return "jsonl", nil
	case ".csv":
		return "csv", nil
	}
	return "", fmt.Errorf("%s: cannot tell the input format from the extension %q; use --format jsonl or --format csv", name, ext)
}

func checkOutDir(dir string) error {
	if dir == "" {
		return errors.New("no output directory (--out)")
	}
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("output directory: %w", err)
	case len(entries) > 0:
		return fmt.Errorf("output directory %s is not empty; remove it or choose another --out", dir)
	}
	return nil
}

// readInput reads one input file into st, counting bad lines in res.
func readInput(ctx context.Context, name, format string, maxValue int, st *store, res *BuildResult) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(strings.ToLower(name), ".gz") {
		zr, err := gzip.NewReader(bufio.NewReaderSize(f, 1<<20))
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		defer zr.Close()
		r = zr
	}
	bad := func(line int, format string, args ...any) {
		res.BadLines++
		if len(res.Bad) < maxListedBadLines {
			res.Bad = append(res.Bad, BadLine{File: name, Line: line, Reason: fmt.Sprintf(format, args...)})
		}
	}
	// Keys are bytes: a JSONL line gives one that is not UTF-8 as key_b64.
	add := func(line int, key, value []byte, exp int64) {
		switch {
		case len(key) == 0:
			bad(line, "empty key")
		case len(key) > MaxKeyBytes:
			bad(line, "key is %d bytes, longer than %d", len(key), MaxKeyBytes)
		case len(value) > maxValue:
			bad(line, "value is %d bytes, longer than %d (--max-value-bytes)", len(value), maxValue)
		default:
			res.Input++
			st.add(slot.Of(key), key, value, exp)
		}
	}
	if format == "csv" {
		err = readCSV(ctx, r, add, bad)
	} else {
		err = readJSONL(ctx, r, maxValue, add, bad)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

func readJSONL(ctx context.Context, r io.Reader, maxValue int, add func(int, []byte, []byte, int64), bad func(int, string, ...any)) error {
	// The longest line that can hold a valid record: every byte of key and
	// value escaped as \u00XX, plus room for field names and whitespace.
	maxLine := 6*(MaxKeyBytes+maxValue) + 4096
	br := bufio.NewReaderSize(r, 1<<20)
	var p lineParser
	var long []byte
	for n := 1; ; n++ {
		if n%65536 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		line, err := br.ReadSlice('\n')
		tooLong := false
		if err == bufio.ErrBufferFull {
			long = append(long[:0], line...)
			for err == bufio.ErrBufferFull {
				line, err = br.ReadSlice('\n')
				if !tooLong {
					long = append(long, line...)
					if len(long) > maxLine {
						tooLong, long = true, long[:0]
					}
				}
			}
			line = long
		}
		if err != nil && err != io.EOF {
			return err
		}
		if n == 1 {
			line = bytes.TrimPrefix(line, []byte("\xef\xbb\xbf")) // UTF-8 BOM
		}
		switch {
		case tooLong:
			res := fmt.Sprintf("line longer than %d bytes", maxLine)
			bad(n, "%s", res)
		case len(bytes.Trim(line, " \t\r\n")) == 0:
			// Blank line: only JSON whitespace. bytes.TrimSpace would also
			// drop a line of Unicode spaces (U+00A0, U+0085) unreported,
			// though it is no JSON and must count as a bad line.
		default:
			key, value, perr := p.parse(bytes.TrimSuffix(line, []byte("\n")))
			if perr != nil {
				bad(n, "%v", perr)
			} else {
				add(n, key, value, p.exp)
			}
		}
		if err == io.EOF {
			return nil
		}
	}
}

func readCSV(ctx context.Context, r io.Reader, add func(int, []byte, []byte, int64), bad func(int, string, ...any)) error {
	cr := csv.NewReader(bufio.NewReaderSize(r, 1<<20))
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	for n := 0; ; n++ {
		if n%65536 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		rec, err := cr.Read()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				bad(pe.StartLine, "bad CSV: %v", pe.Err)
				continue
			}
			return err
		}
		line, _ := cr.FieldPos(0)
		if n == 0 && len(rec) == 2 && strings.TrimPrefix(rec[0], "\ufeff") == "key" && rec[1] == "value" {
			continue // header row
		}
		if len(rec) != 2 {
			bad(line, "%d fields, want 2 (key,value)", len(rec))
			continue
		}
		add(line, []byte(rec[0]), []byte(rec[1]), 0)
	}
}

// store holds records compactly: keys and values in a few large arena
// chunks, and a small fixed-size entry per record pointing into them.
type store struct {
	chunks  [][]byte
	entries []entry
}

type entry struct {
	ref  uint64 // chunk index << 32 | offset of the key in the chunk; grows with input order
	exp  int64  // expiry, Unix milliseconds; 0 = none
	klen uint32
	vlen uint32
	slot uint16
}

const maxChunk = 64 << 20 // > MaxKeyBytes + MaxValueBytesLimit

func (s *store) add(sl uint16, key, value []byte, exp int64) {
	need := len(key) + len(value)
	if len(s.chunks) == 0 || cap(s.chunks[len(s.chunks)-1])-len(s.chunks[len(s.chunks)-1]) < need {
		size := 1 << 20
		if n := len(s.chunks); n > 0 {
			size = min(2*cap(s.chunks[n-1]), maxChunk)
		}
		s.chunks = append(s.chunks, make([]byte, 0, max(size, need)))
	}
	ci := len(s.chunks) - 1
	c := s.chunks[ci]
	off := len(c)
	c = append(c, key...)
	s.chunks[ci] = append(c, value...)
	s.entries = append(s.entries, entry{ref: uint64(ci)<<32 | uint64(off), exp: exp, klen: uint32(len(key)), vlen: uint32(len(value)), slot: sl})
}

func (s *store) key(e *entry) []byte {
	c, off := s.chunks[e.ref>>32], uint32(e.ref)
	return c[off : off+e.klen]
}

func (s *store) value(e *entry) []byte {
	c, off := s.chunks[e.ref>>32], uint32(e.ref)+e.klen
	return c[off : off+e.vlen]
}

// sort orders the entries by (slot, key, input order).
func (s *store) sort() {
	slices.SortFunc(s.entries, func(a, b entry) int {
		if a.slot != b.slot {
			return int(a.slot) - int(b.slot)
		}
		if c := bytes.Compare(s.key(&a), s.key(&b)); c != 0 {
			return c
		}
		if a.ref < b.ref {
			return -1
		}
		return 1
	})
}

// dedup keeps the last occurrence of each key in the sorted entries and
// returns how many it dropped.
func (s *store) dedup() uint64 {
	out := s.entries[:0]
	for i := range s.entries {
		e := s.entries[i]
		if i+1 < len(s.entries) && s.entries[i+1].slot == e.slot && bytes.Equal(s.key(&s.entries[i+1]), s.key(&e)) {
			continue // a later occurrence follows
		}
		out = append(out, e)
	}
	dropped := uint64(len(s.entries) - len(out))
	s.entries = out
	return dropped
}

// write writes the sorted entries to data files and the manifest.
func (s *store) write(ctx context.Context, o BuildOptions) (m *dataset.Manifest, err error) {
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return nil, err
	}
	var created []string
	defer func() {
		if err != nil { // leave no half-built dataset behind
			for _, p := range created {
				os.Remove(p)
			}
		}
	}()
	m = &dataset.Manifest{FormatVersion: dataset.FormatVersion, SlotCount: slot.Count}
	var (
		f  *os.File
		bw *bufio.Writer
		w  *dataset.Writer
	)
	closeFile := func() error {
		info, err := w.Close()
		if err == nil {
			err = bw.Flush()
		}
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		m.Files = append(m.Files, info.File(filepath.Base(f.Name())))
		m.Records += info.Keys
		w = nil
		return nil
	}
	defer func() {
		if w != nil {
			f.Close()
		}
	}()
	for i := range s.entries {
		e := &s.entries[i]
		if w == nil {
			if i%1024 == 0 && ctx.Err() != nil {
				return nil, ctx.Err()
			}
			name := filepath.Join(o.OutDir, fmt.Sprintf("part-%05d.skv", len(m.Files)))
			f, err = os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
			if err != nil {
				return nil, err
			}
			created = append(created, name)
			bw = bufio.NewWriterSize(f, 1<<20)
			w = dataset.NewWriter(bw, dataset.WriterOptions{BlockSize: o.BlockSize})
		}
		if err := w.Write(dataset.Record{Slot: e.slot, Key: s.key(e), Value: s.value(e), ExpiresAtMs: e.exp}); err != nil {
			return nil, err
		}
		if w.Size() >= o.TargetFileSize {
			if err := closeFile(); err != nil {
				return nil, err
			}
		}
	}
	if w != nil {
		if err := closeFile(); err != nil {
			return nil, err
		}
	}
	if err := m.Validate(dataset.Limits{MaxFileBytes: math.MaxInt64, MaxFiles: math.MaxInt}); err != nil {
		return nil, fmt.Errorf("built an invalid manifest (a bug): %w", err)
	}
	data, err := m.Marshal()
	if err != nil {
		return nil, err
	}
	tmp := filepath.Join(o.OutDir, "."+dataset.ManifestName+".tmp")
	created = append(created, tmp)
	if err := writeFileSync(tmp, data); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, filepath.Join(o.OutDir, dataset.ManifestName)); err != nil {
		return nil, err
	}
	syncDir(o.OutDir)
	return m, nil
}

func writeFileSync(name string, data []byte) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncDir makes renames in dir durable; best effort.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
