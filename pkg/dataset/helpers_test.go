package dataset

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/slotkv/slotkv/pkg/slot"
)

var sentinels = []error{ErrInvalidManifest, ErrUnsupportedVersion, ErrUnsafeName, ErrTooLarge, ErrChecksum, ErrCorrupt}

// checkSentinel fails unless err wraps want and no other sentinel.
func checkSentinel(t *testing.T, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("error %v does not wrap %v", err, want)
	}
	for _, s := range sentinels {
		if s != want && errors.Is(err, s) {
			t.Errorf("error %v wraps %v as well as %v", err, s, want)
		}
	}
}

// makeRecords returns n records with distinct keys "k:%08d", values of
// random sizes up to maxValue, sorted by (slot, key).
func makeRecords(n, maxValue int, seed uint64) []Record {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	recs := make([]Record, n)
	for i := range recs {
		key := fmt.Appendf(nil, "k:%08d", i)
		val := make([]byte, rng.IntN(maxValue+1))
		for j := range val {
			val[j] = byte(rng.Uint32())
		}
		recs[i] = Record{Slot: slot.Of(key), Key: key, Value: val}
	}
	sortRecords(recs)
	return recs
}

func sortRecords(recs []Record) {
	slices.SortFunc(recs, func(a, b Record) int { return compareRecord(a.Slot, a.Key, b.Slot, b.Key) })
}

// writeFile writes recs to a new data file and returns its bytes and info.
func writeFile(t testing.TB, recs []Record, blockSize int) ([]byte, FileInfo) {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf, WriterOptions{BlockSize: blockSize})
	for _, r := range recs {
		if err := w.Write(r); err != nil {
			t.Fatalf("Write(%q): %v", r.Key, err)
		}
	}
	info, err := w.Close()
	if err != nil {
		t.Fatalf("Close: %v", err)
	}
	return buf.Bytes(), info
}

// readAll reads every record of data, copying them.
func readAll(data []byte) ([]Record, *Reader, error) {
	r, err := NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, nil, err
	}
	var out []Record
	for {
		rec, err := r.Next()
		if err != nil {
			return out, r, err
		}
		out = append(out, Record{Slot: rec.Slot, Key: bytes.Clone(rec.Key), Value: bytes.Clone(rec.Value), ExpiresAtMs: rec.ExpiresAtMs})
	}
}

// blockOffsets returns the file offsets of every block header of a valid
// data file, the footer's last.
func blockOffsets(t *testing.T, data []byte) []int {
	t.Helper()
	var offs []int
	off := fileHeaderSize
	for off < len(data) {
		offs = append(offs, off)
		off += blockHeaderSize + int(binary.BigEndian.Uint32(data[off+4:]))
	}
	if off != len(data) {
		t.Fatalf("blocks end at %d, file is %d bytes", off, len(data))
	}
	return offs
}

// rawBlock frames payload as a data block with a valid CRC.
func rawBlock(payload []byte, count uint32) []byte {
	h := make([]byte, blockHeaderSize)
	putBlockHeader(h, BlockMagic, len(payload), count, payload)
	return append(h, payload...)
}

func rawRecord(s uint16, key, value string) []byte {
	b := binary.BigEndian.AppendUint16(nil, s)
	b = binary.AppendUvarint(b, uint64(len(key)))
	b = append(b, key...)
	b = binary.AppendUvarint(b, uint64(len(value)))
	b = append(b, value...)
	return binary.AppendUvarint(b, 0) // no expiry (format version 2)
}

func rawHeader() []byte {
	return binary.BigEndian.AppendUint32([]byte(FileMagic), FormatVersion)
}

func rawFooter(keys, blocks uint64) []byte {
	p := binary.BigEndian.AppendUint64(nil, keys)
	p = binary.BigEndian.AppendUint64(p, blocks)
	h := make([]byte, blockHeaderSize)
	putBlockHeader(h, FooterMagic, len(p), 0, p)
	return append(h, p...)
}
