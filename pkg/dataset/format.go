package dataset

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"

	"github.com/slotkv/slotkv/pkg/slot"
)

// Format constants; see the package documentation.
const (
	// FileMagic opens every data file.
	FileMagic = "SKVDATA1"
	// BlockMagic opens every data block ("SKVB").
	BlockMagic uint32 = 0x534B5642
	// FooterMagic opens the footer block that ends every data file ("SKVE").
	FooterMagic uint32 = 0x534B5645
	// DefaultBlockSize is the payload size at which the writer cuts a block
	// by default.
	DefaultBlockSize = 64 << 10
	// MaxBlockPayload caps the payload of one block, and so the encoded size
	// of one record; a reader rejects larger blocks as corrupt.
	MaxBlockPayload = 64 << 20

	fileHeaderSize    = len(FileMagic) + 4
	blockHeaderSize   = 16
	footerPayloadSize = 16
	// The smallest record: slot, key length, 1-byte key, value length,
	// and from version 2 the expiry.
	minRecordSizeV1 = 2 + 1 + 1 + 1
	minRecordSize   = minRecordSizeV1 + 1
	// MaxExpiresAtMs is the latest expiry a record may carry (Unix
	// milliseconds, 9999-12-31T23:59:59.999Z), the limit the router's API
	// has too.
	MaxExpiresAtMs int64 = 253402300799999
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Record is one key-value pair of a data file. Slot must be slot.Of(Key).
// Keys are bytes, not necessarily UTF-8.
type Record struct {
	Slot       uint16
	Key, Value []byte
	// ExpiresAtMs is when the key expires, Unix milliseconds; 0 = never.
	// Always 0 in version 1 files.
	ExpiresAtMs int64
}

// WriterOptions tunes a [Writer].
type WriterOptions struct {
	// BlockSize is the payload size at which a block is cut (default
	// DefaultBlockSize, at most MaxBlockPayload). A block may be larger by
	// up to one record.
	BlockSize int
}

// FileInfo describes a data file written by a [Writer]; [FileInfo.File]
// turns it into a manifest entry.
type FileInfo struct {
	Size                int64
	SHA256              string // lowercase hex
	Keys                uint64
	FirstKey, LastKey   []byte
	FirstSlot, LastSlot uint16
}

// File returns the manifest entry of the file, named name. The manifest
// carries the first and last keys as JSON strings when they are valid
// UTF-8 and as base64 otherwise (see [File]).
func (fi FileInfo) File(name string) File {
	return File{
		Name:     name,
		Size:     fi.Size,
		SHA256:   fi.SHA256,
		Slots:    fmt.Sprintf("%d-%d", fi.FirstSlot, fi.LastSlot),
		Keys:     fi.Keys,
		FirstKey: string(fi.FirstKey),
		LastKey:  string(fi.LastKey),
	}
}

// Writer writes a data file: the header, then blocks of records in strictly
// increasing (slot, key) order, then the footer on Close. It computes the
// file's size and SHA-256 as it goes. A Writer is not safe for concurrent
// use.
type Writer struct {
	w         io.Writer
	sha       hash.Hash
	size      int64
	blockSize int
	buf       []byte // block header space + payload
	count     uint32 // records in buf
	blocks    uint64
	keys      uint64
	first     []byte
	last      []byte
	firstSlot uint16
	lastSlot  uint16
	started   bool
	closed    bool
	info      FileInfo
	err       error // sticky write error
}

// NewWriter returns a Writer writing a data file to w. Nothing is written
// until the first Write or Close; w is not closed by Close.
func NewWriter(w io.Writer, o WriterOptions) *Writer {
	bs := o.BlockSize
	if bs <= 0 {
		bs = DefaultBlockSize
	}
	bs = min(bs, MaxBlockPayload)
	return &Writer{
		w:         w,
		sha:       sha256.New(),
		blockSize: bs,
		buf:       make([]byte, blockHeaderSize, blockHeaderSize+min(bs, DefaultBlockSize)+1024),
	}
}

func (w *Writer) write(p []byte) error {
	if w.err != nil {
		return w.err
	}
	n, err := w.w.Write(p)
	w.sha.Write(p[:n])
	w.size += int64(n)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	if err != nil {
		w.err = fmt.Errorf("dataset: writing data file: %w", err)
	}
	return w.err
}

func (w *Writer) start() error {
	if w.started {
		return w.err
	}
	w.started = true
	var h [fileHeaderSize]byte
	copy(h[:], FileMagic)
	binary.BigEndian.PutUint32(h[len(FileMagic):], FormatVersion)
	return w.write(h[:])
}

// Write appends a record. The record's Slot must be slot.Of(r.Key), the key
// must not be empty, and (Slot, Key) must sort strictly after the previous
// record's; otherwise Write returns an error and writes nothing (the Writer
// stays usable). Write copies r; the caller may reuse its buffers.
func (w *Writer) Write(r Record) error {
	if w.closed {
		return errors.New("dataset: Write after Close")
	}
	if err := w.start(); err != nil {
		return err
	}
	if len(r.Key) == 0 {
		return errors.New("dataset: empty key")
	}
	if s := slot.Of(r.Key); r.Slot != s {
		return fmt.Errorf("dataset: record for key %q has slot %d, but the key is in slot %d", r.Key, r.Slot, s)
	}
	if r.ExpiresAtMs < 0 || r.ExpiresAtMs > MaxExpiresAtMs {
		return fmt.Errorf("dataset: record for key %q expires at %d, want 0 (never) to %d (Unix milliseconds)", r.Key, r.ExpiresAtMs, MaxExpiresAtMs)
	}
	if w.keys > 0 {
		if c := compareRecord(w.lastSlot, w.last, r.Slot, r.Key); c >= 0 {
			what := "duplicate key"
			if c > 0 {
				what = "records out of order"
			}
			return fmt.Errorf("dataset: %s: key %q (slot %d) written after key %q (slot %d); records must be in strictly increasing (slot, key) order",
				what, r.Key, r.Slot, w.last, w.lastSlot)
		}
	}
	size := 2 + uvarintLen(uint64(len(r.Key))) + len(r.Key) + uvarintLen(uint64(len(r.Value))) + len(r.Value) + uvarintLen(uint64(r.ExpiresAtMs))
	if size > MaxBlockPayload {
		return fmt.Errorf("dataset: record for key %q is %d bytes encoded, above the %d-byte block limit", r.Key, size, MaxBlockPayload)
	}
	if w.count > 0 && len(w.buf)-blockHeaderSize+size > MaxBlockPayload {
		if err := w.flush(); err != nil {
			return err
		}
	}
	w.buf = binary.BigEndian.AppendUint16(w.buf, r.Slot)
	w.buf = binary.AppendUvarint(w.buf, uint64(len(r.Key)))
	w.buf = append(w.buf, r.Key...)
	w.buf = binary.AppendUvarint(w.buf, uint64(len(r.Value)))
	w.buf = append(w.buf, r.Value...)
	w.buf = binary.AppendUvarint(w.buf, uint64(r.ExpiresAtMs))
	w.count++
	if w.keys == 0 {
		w.first = append([]byte(nil), r.Key...)
		w.firstSlot = r.Slot
	}
	w.keys++
	w.last = append(w.last[:0], r.Key...)
	w.lastSlot = r.Slot
	if len(w.buf)-blockHeaderSize >= w.blockSize {
		return w.flush()
	}
	return nil
}

// flush writes the pending block, if any.
func (w *Writer) flush() error {
	if w.count == 0 {
		return w.err
	}
	payload := w.buf[blockHeaderSize:]
	putBlockHeader(w.buf[:blockHeaderSize], BlockMagic, len(payload), w.count, payload)
	err := w.write(w.buf)
	w.buf = w.buf[:blockHeaderSize]
	w.count = 0
	w.blocks++
	return err
}

func putBlockHeader(h []byte, magic uint32, n int, count uint32, payload []byte) {
	binary.BigEndian.PutUint32(h[0:], magic)
	binary.BigEndian.PutUint32(h[4:], uint32(n))
	binary.BigEndian.PutUint32(h[8:], count)
	binary.BigEndian.PutUint32(h[12:], crc32.Checksum(payload, castagnoli))
}

// Size returns the size the file has so far: the bytes written plus the
// buffered block. It is the file's final size minus the footer once the
// last record is written.
func (w *Writer) Size() int64 {
	n := w.size
	if !w.started {
		n += int64(fileHeaderSize)
	}
	if w.count > 0 {
		n += int64(len(w.buf))
	}
	return n
}

// Close writes the pending block and the footer and returns the file's
// description. It does not close the underlying writer. Calling Close again
// returns the same result.
func (w *Writer) Close() (FileInfo, error) {
	if w.closed {
		return w.info, w.err
	}
	w.closed = true
	w.start()
	w.flush()
	var f [blockHeaderSize + footerPayloadSize]byte
	binary.BigEndian.PutUint64(f[blockHeaderSize:], w.keys)
	binary.BigEndian.PutUint64(f[blockHeaderSize+8:], w.blocks)
	putBlockHeader(f[:blockHeaderSize], FooterMagic, footerPayloadSize, 0, f[blockHeaderSize:])
	if err := w.write(f[:]); err != nil {
		return FileInfo{}, err
	}
	w.buf = nil
	w.info = FileInfo{
		Size:      w.size,
		SHA256:    hex.EncodeToString(w.sha.Sum(nil)),
		Keys:      w.keys,
		FirstKey:  w.first,
		LastKey:   bytes.Clone(w.last),
		FirstSlot: w.firstSlot,
		LastSlot:  w.lastSlot,
	}
	return w.info, nil
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

func compareRecord(s1 uint16, k1 []byte, s2 uint16, k2 []byte) int {
	if s1 != s2 {
		if s1 < s2 {
			return -1
		}
		return 1
	}
	return bytes.Compare(k1, k2)
}

// Reader reads a data file, verifying each block's checksum, the order of
// the records and that each record's slot is that of its key. A Reader is
// not safe for concurrent use.
type Reader struct {
	br       *bufio.Reader
	off      int64 // bytes consumed from br
	block    int   // index of the current block, -1 before the first
	blockOff int64 // file offset of the current block's header
	buf      []byte
	pos      int    // next record's offset in buf
	count    uint32 // records in the current block
	rec      uint32 // records returned from the current block
	keys     uint64 // records returned in all
	prevKey  []byte // aliases buf, or saved at a block boundary
	saved    []byte
	prevSlot uint16
	hdr      [blockHeaderSize]byte
	version  uint32 // of the file: 1 has no expiry in its records
	err      error  // sticky
}

// NewReader returns a Reader of the data file in r, after checking its
// header: an ErrCorrupt error for a bad magic or short header, an
// ErrUnsupportedVersion error for a format version other than
// MinFormatVersion to FormatVersion.
func NewReader(r io.Reader) (*Reader, error) {
	br, ok := r.(*bufio.Reader)
	if !ok || br.Size() < 64<<10 {
		br = bufio.NewReaderSize(r, 64<<10)
	}
	var h [fileHeaderSize]byte
	n, err := io.ReadFull(br, h[:])
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		return nil, fmt.Errorf("%w: file header is %d bytes, want %d (truncated or not a slotkv data file)", ErrCorrupt, n, fileHeaderSize)
	case err != nil:
		return nil, fmt.Errorf("dataset: reading data file header: %w", err)
	}
	if string(h[:len(FileMagic)]) != FileMagic {
		return nil, fmt.Errorf("%w: bad magic %q, want %q (not a slotkv data file)", ErrCorrupt, h[:len(FileMagic)], FileMagic)
	}
	v := binary.BigEndian.Uint32(h[len(FileMagic):])
	if v < MinFormatVersion || v > FormatVersion {
		return nil, fmt.Errorf("%w: data file format version %d (this build reads versions %d to %d)", ErrUnsupportedVersion, v, MinFormatVersion, FormatVersion)
	}
	return &Reader{br: br, off: int64(fileHeaderSize), block: -1, version: v}, nil
}

// Block returns the 0-based index of the current block: the one holding the
// record last returned by Next, or the one an error was found in; -1 before
// the first block is read.
func (r *Reader) Block() int { return r.block }

// Next returns the next record, or io.EOF after the last one once the
// footer has been verified. Errors wrap ErrChecksum (naming the block and its
// byte offset) or ErrCorrupt (truncation, bad framing, records out of order,
// a slot that is not the key's), or are read errors; they are sticky.
//
// The returned Key and Value alias the Reader's internal buffer: they are
// valid only until the next call to Next. Copy them to keep them.
func (r *Reader) Next() (Record, error) {
	if r.err != nil {
		return Record{}, r.err
	}
	for r.rec == r.count {
		if err := r.nextBlock(); err != nil {
			r.err = err
			return Record{}, err
		}
	}
	rec, err := r.decode()
	if err != nil {
		r.err = err
		return Record{}, err
	}
	return rec, nil
}

func (r *Reader) corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: block %d at offset %d: %s", ErrCorrupt, r.block, r.blockOff, fmt.Sprintf(format, args...))
}

func (r *Reader) decode() (Record, error) {
	b := r.buf[r.pos:]
	idx := r.rec
	bad := func(what string, args ...any) (Record, error) {
		return Record{}, r.corrupt("record %d: %s", idx, fmt.Sprintf(what, args...))
	}
	if len(b) < 2 {
		return bad("truncated (payload ends before the slot)")
	}
	s := binary.BigEndian.Uint16(b)
	n := 2
	kl, m := binary.Uvarint(b[n:])
	if m <= 0 {
		return bad("bad key length")
	}
	n += m
	if kl == 0 {
		return bad("empty key")
	}
	if kl > uint64(len(b)-n) {
		return bad("key length %d runs past the end of the block", kl)
	}
	key := b[n : n+int(kl) : n+int(kl)]
	n += int(kl)
	vl, m := binary.Uvarint(b[n:])
	if m <= 0 {
		return bad("bad value length")
	}
	n += m
	if vl > uint64(len(b)-n) {
		return bad("value length %d runs past the end of the block", vl)
	}
	value := b[n : n+int(vl) : n+int(vl)]
	n += int(vl)
	var exp uint64
	if r.version >= 2 {
		if exp, m = binary.Uvarint(b[n:]); m <= 0 {
			return bad("bad expiry")
		}
		n += m
		if exp > uint64(MaxExpiresAtMs) {
			return bad("expiry %d is after %d (9999-12-31)", exp, MaxExpiresAtMs)
		}
	}
	if want := slot.Of(key); s != want {
		return bad("key %q has slot %d, record says %d", key, want, s)
	}
	if r.keys > 0 {
		if c := compareRecord(r.prevSlot, r.prevKey, s, key); c >= 0 {
			what := "out of order"
			if c == 0 {
				what = "duplicate key"
			}
			return bad("%s: key %q (slot %d) after key %q (slot %d)", what, key, s, r.prevKey, r.prevSlot)
		}
	}
	r.pos += n
	r.rec++
	r.keys++
	r.prevKey, r.prevSlot = key, s
	if r.rec == r.count && r.pos != len(r.buf) {
		return bad("%d bytes left in the block after its last record", len(r.buf)-r.pos)
	}
	return Record{Slot: s, Key: key, Value: value, ExpiresAtMs: int64(exp)}, nil
}

// minRecordSize is the size of the smallest record of the file's version.
func (r *Reader) minRecordSize() uint64 {
	if r.version == 1 {
		return minRecordSizeV1
	}
	return minRecordSize
}

// Version is the format version of the file (from its header).
func (r *Reader) Version() int { return int(r.version) }

// nextBlock reads the next block header and payload. It returns io.EOF after
// a valid footer followed by the end of the file.
func (r *Reader) nextBlock() error {
	if r.keys > 0 { // keep the previous key for the order check
		r.saved = append(r.saved[:0], r.prevKey...)
		r.prevKey = r.saved
	}
	off := r.off
	n, err := io.ReadFull(r.br, r.hdr[:])
	r.off += int64(n)
	switch {
	case err == io.EOF:
		return fmt.Errorf("%w: file ends at offset %d after block %d without a footer (truncated)", ErrCorrupt, off, r.block)
	case err == io.ErrUnexpectedEOF:
		return fmt.Errorf("%w: truncated block header at offset %d (%d of %d bytes)", ErrCorrupt, off, n, blockHeaderSize)
	case err != nil:
		return fmt.Errorf("dataset: reading block header at offset %d: %w", off, err)
	}
	magic := binary.BigEndian.Uint32(r.hdr[0:])
	length := binary.BigEndian.Uint32(r.hdr[4:])
	count := binary.BigEndian.Uint32(r.hdr[8:])
	sum := binary.BigEndian.Uint32(r.hdr[12:])
	switch magic {
	case BlockMagic:
		r.block++
		r.blockOff = off
		switch {
		case length == 0 || length > MaxBlockPayload:
			return r.corrupt("payload length %d out of range 1-%d", length, MaxBlockPayload)
		case count == 0:
			return r.corrupt("record count is 0")
		case uint64(count)*r.minRecordSize() > uint64(length):
			return r.corrupt("record count %d cannot fit in %d payload bytes", count, length)
		}
		if err := r.readPayload(int(length), sum); err != nil {
			return err
		}
		r.count, r.rec, r.pos = count, 0, 0
		return nil
	case FooterMagic:
		r.blockOff = off
		if length != footerPayloadSize || count != 0 {
			return fmt.Errorf("%w: footer at offset %d: payload length %d and record count %d, want %d and 0", ErrCorrupt, off, length, count, footerPayloadSize)
		}
		if err := r.readPayload(footerPayloadSize, sum); err != nil {
			return err
		}
		keys := binary.BigEndian.Uint64(r.buf)
		blocks := binary.BigEndian.Uint64(r.buf[8:])
		if keys != r.keys || blocks != uint64(r.block+1) {
			return fmt.Errorf("%w: footer at offset %d says %d records in %d blocks, the file has %d records in %d blocks", ErrCorrupt, off, keys, blocks, r.keys, r.block+1)
		}
		if _, err := r.br.ReadByte(); err == nil {
			return fmt.Errorf("%w: data after the footer at offset %d", ErrCorrupt, r.off)
		} else if err != io.EOF {
			return fmt.Errorf("dataset: reading data file at offset %d: %w", r.off, err)
		}
		r.buf = r.buf[:0]
		return io.EOF
	default:
		return fmt.Errorf("%w: bad block magic %#08x at offset %d (after block %d)", ErrCorrupt, magic, off, r.block)
	}
}

// readPayload reads n bytes into r.buf and checks their CRC-32C. The buffer
// grows as data actually arrives, so a corrupt length cannot make the
// Reader allocate much more than the file holds.
func (r *Reader) readPayload(n int, sum uint32) error {
	what := func() string {
		if binary.BigEndian.Uint32(r.hdr[:]) == FooterMagic {
			return "footer"
		}
		return fmt.Sprintf("block %d", r.block)
	}
	r.buf = r.buf[:0]
	for len(r.buf) < n {
		chunk := min(n-len(r.buf), max(len(r.buf), 1<<20))
		if cap(r.buf)-len(r.buf) < chunk {
			nb := make([]byte, len(r.buf), len(r.buf)+chunk)
			copy(nb, r.buf)
			r.buf = nb
		}
		m, err := io.ReadFull(r.br, r.buf[len(r.buf):len(r.buf)+chunk])
		r.buf = r.buf[:len(r.buf)+m]
		r.off += int64(m)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return fmt.Errorf("%w: truncated %s at offset %d: payload has %d of %d bytes", ErrCorrupt, what(), r.blockOff, len(r.buf), n)
		}
		if err != nil {
			return fmt.Errorf("dataset: reading %s at offset %d: %w", what(), r.blockOff, err)
		}
	}
	if got := crc32.Checksum(r.buf, castagnoli); got != sum {
		return fmt.Errorf("%w: %s at offset %d: CRC-32C %08x, header says %08x", ErrChecksum, what(), r.blockOff, got, sum)
	}
	return nil
}

// VerifyFile reads the whole data file in r and checks it against its
// manifest entry f: every block and record is valid (see [Reader]), the
// record count is f.Keys, every slot is inside f.Slots, the first and last
// keys are f.FirstKey and f.LastKey, and the file is f.Size bytes long. It
// does not check the SHA-256 (the downloader computes it while
// downloading). Errors name the file.
func VerifyFile(r io.Reader, f File) error {
	rng, err := f.SlotRange()
	if err != nil {
		return err
	}
	cr := &countingReader{r: r}
	rd, err := NewReader(cr)
	if err != nil {
		return fmt.Errorf("%s: %w", f.Name, err)
	}
	var n uint64
	var last []byte
	for {
		rec, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: %w", f.Name, err)
		}
		n++
		if n > f.Keys {
			return fmt.Errorf("%s: %w: more than the %d keys the manifest lists", f.Name, ErrCorrupt, f.Keys)
		}
		if !rng.Contains(rec.Slot) {
			return fmt.Errorf("%s: %w: block %d: key %q is in slot %d, outside the file's slots %q", f.Name, ErrCorrupt, rd.Block(), rec.Key, rec.Slot, f.Slots)
		}
		if n == 1 && string(rec.Key) != f.FirstKey {
			return fmt.Errorf("%s: %w: first key is %q, the manifest says %q", f.Name, ErrCorrupt, rec.Key, f.FirstKey)
		}
		last = append(last[:0], rec.Key...)
	}
	if n != f.Keys {
		return fmt.Errorf("%s: %w: %d keys, the manifest says %d", f.Name, ErrCorrupt, n, f.Keys)
	}
	if string(last) != f.LastKey {
		return fmt.Errorf("%s: %w: last key is %q, the manifest says %q", f.Name, ErrCorrupt, last, f.LastKey)
	}
	if cr.n != f.Size {
		return fmt.Errorf("%s: %w: %d bytes, the manifest says %d", f.Name, ErrCorrupt, cr.n, f.Size)
	}
	return nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
