package dataset

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/slotkv/slotkv/pkg/slot"
)

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	big := makeRecords(3, 0, 9)
	big[1].Value = bytes.Repeat([]byte("v"), 20000) // larger than a block
	tests := []struct {
		name      string
		recs      []Record
		blockSize int
		minBlocks int
	}{
		{"many small blocks", makeRecords(20000, 300, 1), 4096, 100},
		{"default block size", makeRecords(5000, 1000, 2), 0, 10},
		{"one record per block", makeRecords(50, 10, 3), 1, 50},
		{"record larger than a block", big, 1024, 2},
		{"empty values", makeRecords(1000, 0, 4), 512, 2},
		{"single record", makeRecords(1, 10, 5), 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			data, info := writeFile(t, tt.recs, tt.blockSize)
			sum := sha256.Sum256(data)
			first, last := tt.recs[0], tt.recs[len(tt.recs)-1]
			want := FileInfo{
				Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:]), Keys: uint64(len(tt.recs)),
				FirstKey: first.Key, LastKey: last.Key, FirstSlot: first.Slot, LastSlot: last.Slot,
			}
			if !reflect.DeepEqual(info, want) {
				t.Errorf("FileInfo = %+v, want %+v", info, want)
			}
			got, r, err := readAll(data)
			if err != io.EOF {
				t.Fatalf("reading: %v", err)
			}
			if len(got) != len(tt.recs) {
				t.Fatalf("read %d records, wrote %d", len(got), len(tt.recs))
			}
			for i := range got {
				w := tt.recs[i]
				if got[i].Slot != w.Slot || !bytes.Equal(got[i].Key, w.Key) || !bytes.Equal(got[i].Value, w.Value) {
					t.Fatalf("record %d = {%d %q %d bytes}, want {%d %q %d bytes}", i, got[i].Slot, got[i].Key, len(got[i].Value), w.Slot, w.Key, len(w.Value))
				}
			}
			if blocks := r.Block() + 1; blocks < tt.minBlocks {
				t.Errorf("%d blocks, want at least %d", blocks, tt.minBlocks)
			}
			if _, err := r.Next(); err != io.EOF {
				t.Errorf("Next after EOF = %v, want io.EOF", err)
			}
			if err := VerifyFile(bytes.NewReader(data), info.File("f.skv")); err != nil {
				t.Errorf("VerifyFile: %v", err)
			}
			f := info.File("f.skv")
			m := &Manifest{FormatVersion: FormatVersion, SlotCount: slot.Count, Records: f.Keys, Files: []File{f}}
			if err := m.Validate(Limits{}); err != nil {
				t.Errorf("manifest of FileInfo.File: %v", err)
			}
		})
	}
}

func TestWriterSize(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	w := NewWriter(&buf, WriterOptions{BlockSize: 100})
	if w.Size() != int64(fileHeaderSize) {
		t.Errorf("Size() of a new Writer = %d", w.Size())
	}
	for i, r := range makeRecords(50, 30, 13) {
		if err := w.Write(r); err != nil {
			t.Fatal(err)
		}
		if buffered := w.Size() - int64(buf.Len()); buffered < 0 || buffered > 100+blockHeaderSize+64 {
			t.Fatalf("after record %d: Size() = %d with %d bytes written", i, w.Size(), buf.Len())
		}
	}
	before := w.Size()
	info, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != before+blockHeaderSize+footerPayloadSize {
		t.Errorf("Size() before Close = %d, file is %d bytes", before, info.Size)
	}
}

func TestEmptyFile(t *testing.T) {
	t.Parallel()
	data, info := writeFile(t, nil, 0)
	if info.Keys != 0 || info.Size != int64(len(data)) || len(data) != fileHeaderSize+blockHeaderSize+footerPayloadSize {
		t.Errorf("info %+v for %d bytes", info, len(data))
	}
	recs, _, err := readAll(data)
	if err != io.EOF || len(recs) != 0 {
		t.Errorf("read %d records, err %v; want 0, io.EOF", len(recs), err)
	}
}

func TestWriterRefuses(t *testing.T) {
	t.Parallel()
	recs := makeRecords(10, 5, 7)
	key := func(s string) []byte { return []byte(s) }
	tests := []struct {
		name   string
		prev   *Record
		rec    Record
		substr []string
	}{
		{"out of order", &recs[5], recs[4], []string{"out of order", fmt.Sprintf("%q", recs[4].Key), fmt.Sprintf("%q", recs[5].Key)}},
		{"duplicate", &recs[5], recs[5], []string{"duplicate key", fmt.Sprintf("%q", recs[5].Key)}},
		{"same slot, smaller key", &Record{Slot: slot.Of(key("{t}b")), Key: key("{t}b")}, Record{Slot: slot.Of(key("{t}a")), Key: key("{t}a")}, []string{`"{t}a"`, `"{t}b"`}},
		{"wrong slot", nil, Record{Slot: slot.Of(key("foo")) + 1, Key: key("foo")}, []string{`"foo"`, "slot 12183", "slot 12182"}},
		{"empty key", nil, Record{}, []string{"empty key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			w := NewWriter(&buf, WriterOptions{})
			if tt.prev != nil {
				if err := w.Write(*tt.prev); err != nil {
					t.Fatal(err)
				}
			}
			err := w.Write(tt.rec)
			if err == nil {
				t.Fatal("Write accepted the record")
			}
			for _, s := range tt.substr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %s", err, s)
				}
			}
			// The writer stays usable and the file valid.
			info, err := w.Close()
			if err != nil {
				t.Fatal(err)
			}
			got, _, err := readAll(buf.Bytes())
			if err != io.EOF || uint64(len(got)) != info.Keys {
				t.Errorf("read %d records (%v), info says %d", len(got), err, info.Keys)
			}
			if err := w.Write(recs[9]); err == nil {
				t.Error("Write after Close accepted")
			}
		})
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.n < len(p) {
		n := f.n
		f.n = 0
		return n, errors.New("disk full")
	}
	f.n -= len(p)
	return len(p), nil
}

func TestWriterIOError(t *testing.T) {
	t.Parallel()
	w := NewWriter(&failWriter{n: 100}, WriterOptions{BlockSize: 64})
	var err error
	for _, r := range makeRecords(100, 20, 8) {
		if err = w.Write(r); err != nil {
			break
		}
	}
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Write error = %v, want disk full", err)
	}
	if _, err := w.Close(); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("Close error = %v, want disk full", err)
	}
}

// testFile is a data file of several blocks shared by the corruption tests.
func testFile(t *testing.T) ([]byte, FileInfo, []int) {
	data, info := writeFile(t, makeRecords(400, 40, 11), 512)
	offs := blockOffsets(t, data)
	if len(offs) < 6 {
		t.Fatalf("only %d blocks", len(offs))
	}
	return data, info, offs
}

func TestReaderFlippedByte(t *testing.T) {
	t.Parallel()
	data, _, offs := testFile(t)
	for _, block := range []int{0, 3, len(offs) - 2} {
		for _, at := range []int{blockHeaderSize, blockHeaderSize + 7, offs[block+1] - offs[block] - 1} {
			t.Run(fmt.Sprintf("block %d byte %d", block, at), func(t *testing.T) {
				t.Parallel()
				bad := bytes.Clone(data)
				bad[offs[block]+at] ^= 0x10
				_, r, err := readAll(bad)
				checkSentinel(t, err, ErrChecksum)
				want := fmt.Sprintf("block %d at offset %d", block, offs[block])
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
				if r.Block() != block {
					t.Errorf("Block() = %d, want %d", r.Block(), block)
				}
				if _, err2 := r.Next(); err2 != err {
					t.Errorf("error not sticky: %v then %v", err, err2)
				}
			})
		}
	}
	t.Run("footer payload", func(t *testing.T) {
		t.Parallel()
		bad := bytes.Clone(data)
		bad[len(bad)-1] ^= 1
		_, _, err := readAll(bad)
		checkSentinel(t, err, ErrChecksum)
		if !strings.Contains(err.Error(), "footer") {
			t.Errorf("error %q does not name the footer", err)
		}
	})
}

func TestReaderTruncated(t *testing.T) {
	t.Parallel()
	data, _, offs := testFile(t)
	// Every cut point, including each block boundary and just before the
	// footer, must be reported as corruption, never as a clean end.
	// Every byte of the first two blocks and of the last block and footer,
	// every 13th elsewhere (the block boundaries are checked below).
	for n := 0; n < len(data); n++ {
		if n > offs[2] && n < offs[len(offs)-2] && n%13 != 0 {
			continue
		}
		_, _, err := readAll(data[:n])
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("file cut at %d of %d bytes: error %v, want ErrCorrupt", n, len(data), err)
		}
	}
	for _, b := range offs {
		t.Run(fmt.Sprintf("at block boundary %d", b), func(t *testing.T) {
			t.Parallel()
			got, _, err := readAll(data[:b])
			checkSentinel(t, err, ErrCorrupt)
			if !strings.Contains(err.Error(), "without a footer") {
				t.Errorf("error %q does not mention the missing footer", err)
			}
			if len(got) == 0 && b > offs[0] {
				t.Errorf("no records read before the cut")
			}
		})
	}
	t.Run("inside a payload", func(t *testing.T) {
		t.Parallel()
		_, _, err := readAll(data[:offs[2]+blockHeaderSize+10])
		checkSentinel(t, err, ErrCorrupt)
		if want := fmt.Sprintf("truncated block 2 at offset %d", offs[2]); !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	})
}

func TestReaderCorrupt(t *testing.T) {
	t.Parallel()
	data, _, offs := testFile(t)
	a, b := rawRecord(slot.OfString("a"), "a", "1"), rawRecord(slot.OfString("b"), "b", "2")
	if slot.OfString("a") > slot.OfString("b") {
		a, b = b, a
	}
	join := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	dropBlock := join(data[:offs[1]], data[offs[2]:])
	swapped := join(data[:offs[1]], data[offs[2]:offs[3]], data[offs[1]:offs[2]], data[offs[3]:])
	tests := []struct {
		name   string
		data   []byte
		want   error
		substr string
	}{
		{"wrong magic", append([]byte("SKVDATA2"), data[8:]...), ErrCorrupt, `bad magic "SKVDATA2"`},
		{"not a data file", []byte(`{"format_version": 1}`), ErrCorrupt, "bad magic"},
		{"empty file", nil, ErrCorrupt, "file header is 0 bytes"},
		{"version 3", join([]byte(FileMagic), []byte{0, 0, 0, 3}, data[12:]), ErrUnsupportedVersion, "version 3"},
		{"version 0", join([]byte(FileMagic), []byte{0, 0, 0, 0}, data[12:]), ErrUnsupportedVersion, "version 0"},
		{"bad block magic", join(data[:offs[1]], []byte("XXXX"), data[offs[1]+4:]), ErrCorrupt, fmt.Sprintf("bad block magic 0x58585858 at offset %d", offs[1])},
		{"record count changed", func() []byte {
			d := bytes.Clone(data)
			binary.BigEndian.PutUint32(d[offs[1]+8:], binary.BigEndian.Uint32(d[offs[1]+8:])-1)
			return d
		}(), ErrCorrupt, "block 1"},
		{"huge payload length", func() []byte {
			d := bytes.Clone(data)
			binary.BigEndian.PutUint32(d[offs[0]+4:], MaxBlockPayload+1)
			return d
		}(), ErrCorrupt, "payload length 67108865 out of range"},
		{"block dropped", dropBlock, ErrCorrupt, ""},
		{"blocks swapped", swapped, ErrCorrupt, "out of order"},
		{"trailing data", append(bytes.Clone(data), 0), ErrCorrupt, "data after the footer"},
		{"footer count wrong", join(rawHeader(), rawBlock(join(a, b), 2), rawFooter(3, 1)), ErrCorrupt, "footer at offset 42 says 3 records in 1 blocks, the file has 2 records"},
		{"records out of order", join(rawHeader(), rawBlock(join(b, a), 2), rawFooter(2, 1)), ErrCorrupt, "block 0 at offset 12: record 1: out of order"},
		{"duplicate key", join(rawHeader(), rawBlock(join(a, a), 2), rawFooter(2, 1)), ErrCorrupt, "record 1: duplicate key"},
		{"wrong slot", join(rawHeader(), rawBlock(rawRecord(7, "foo", ""), 1), rawFooter(1, 1)), ErrCorrupt, `key "foo" has slot 12182, record says 7`},
		{"empty key", join(rawHeader(), rawBlock(rawRecord(0, "", "xyz"), 1), rawFooter(1, 1)), ErrCorrupt, "empty key"},
		{"key past block", join(rawHeader(), rawBlock(rawRecord(slot.OfString("abcd"), "abcd", "")[:6], 1), rawFooter(1, 1)), ErrCorrupt, "key length 4 runs past"},
		{"expiry missing", join(rawHeader(), rawBlock(rawRecord(slot.OfString("abc"), "abc", "x")[:8], 1), rawFooter(1, 1)), ErrCorrupt, "bad expiry"},
		{"expiry after 9999", join(rawHeader(), rawBlock(binary.AppendUvarint(rawRecord(slot.OfString("abc"), "abc", "")[:7], uint64(MaxExpiresAtMs)+1), 1), rawFooter(1, 1)), ErrCorrupt, "expiry 253402300800000"},
		{"value past block", join(rawHeader(), rawBlock(rawRecord(slot.OfString("abc"), "abc", "xyz")[:9], 1), rawFooter(1, 1)), ErrCorrupt, "value length 3 runs past"},
		{"bytes left in block", join(rawHeader(), rawBlock(join(a, b), 1), rawFooter(1, 1)), ErrCorrupt, "bytes left in the block"},
		{"count too large for payload", join(rawHeader(), rawBlock(a, 100), rawFooter(1, 1)), ErrCorrupt, "cannot fit"},
		{"zero count", join(rawHeader(), rawBlock(a, 0), rawFooter(1, 1)), ErrCorrupt, "record count is 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, _, err := readAll(tt.data)
			checkSentinel(t, err, tt.want)
			if !strings.Contains(err.Error(), tt.substr) {
				t.Errorf("error %q does not contain %q", err, tt.substr)
			}
		})
	}
}

func TestVerifyFile(t *testing.T) {
	t.Parallel()
	data, info, _ := testFile(t)
	good := info.File("part-00007.skv")
	recs, _, _ := readAll(data)
	tests := []struct {
		name   string
		data   []byte
		mutate func(*File)
		want   error
		substr string
	}{
		{name: "ok"},
		{name: "fewer keys in the manifest", mutate: func(f *File) { f.Keys-- }, want: ErrCorrupt, substr: fmt.Sprintf("more than the %d keys", info.Keys-1)},
		{name: "more keys in the manifest", mutate: func(f *File) { f.Keys++ }, want: ErrCorrupt, substr: fmt.Sprintf("%d keys, the manifest says %d", info.Keys, info.Keys+1)},
		{name: "slot outside range", mutate: func(f *File) { f.Slots = fmt.Sprintf("%d-%d", info.FirstSlot, recs[200].Slot) }, want: ErrCorrupt, substr: fmt.Sprintf("key %q is in slot %d, outside", recs[201].Key, recs[201].Slot)},
		{name: "first key", mutate: func(f *File) { f.FirstKey = "zz" }, want: ErrCorrupt, substr: `the manifest says "zz"`},
		{name: "last key", mutate: func(f *File) { f.LastKey = string(recs[398].Key) }, want: ErrCorrupt, substr: "last key is"},
		{name: "size", mutate: func(f *File) { f.Size++ }, want: ErrCorrupt, substr: "the manifest says " + fmt.Sprint(info.Size+1)},
		{name: "bad slots", mutate: func(f *File) { f.Slots = "x" }, want: ErrInvalidManifest, substr: "slots"},
		{name: "checksum", data: func() []byte { d := bytes.Clone(data); d[100] ^= 4; return d }(), want: ErrChecksum, substr: "block 0"},
		{name: "truncated", data: data[:len(data)-1], want: ErrCorrupt, substr: "truncated footer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := good
			if tt.mutate != nil {
				tt.mutate(&f)
			}
			d := data
			if tt.data != nil {
				d = tt.data
			}
			err := VerifyFile(bytes.NewReader(d), f)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("VerifyFile: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("VerifyFile passed")
			}
			checkSentinel(t, err, tt.want)
			for _, s := range []string{tt.substr, "part-00007.skv"} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
		})
	}
}

func TestReaderAllocations(t *testing.T) {
	// Not parallel: AllocsPerRun. Keys alias the reused block buffer, and
	// order checking across block boundaries still works (the file has many
	// blocks).
	recs := makeRecords(2000, 3, 12)
	data, _ := writeFile(t, recs, 64)
	allocs := testing.AllocsPerRun(2, func() {
		r, err := NewReader(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for ; ; n++ {
			if _, err := r.Next(); err != nil {
				if err != io.EOF {
					t.Fatal(err)
				}
				break
			}
		}
		if n != len(recs) {
			t.Fatalf("read %d records, want %d", n, len(recs))
		}
	})
	if allocs > 50 {
		t.Errorf("%v allocations reading %d records, want far fewer than one per record", allocs, len(recs))
	}
}
