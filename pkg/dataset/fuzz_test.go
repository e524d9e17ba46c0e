package dataset

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"testing"

	"github.com/slotkv/slotkv/pkg/slot"
)

// FuzzReader feeds arbitrary bytes to the Reader, which must never panic
// and must fail with one of the package's sentinel errors; and it turns the
// same bytes into records that must survive a write/read round trip.
func FuzzReader(f *testing.F) {
	valid, _ := writeFile(f, makeRecords(30, 20, 3), 64)
	f.Add(valid)
	f.Add(valid[:len(valid)-5])
	f.Add(valid[:40])
	f.Add([]byte(FileMagic))
	f.Add([]byte("a\x00bb\x00{x}c\x00{x}d\x00\x00e"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		// 1. Arbitrary bytes as a data file.
		r, err := NewReader(bytes.NewReader(data))
		if err == nil {
			var prev []byte
			var prevSlot uint16
			for n := 0; ; n++ {
				var rec Record
				rec, err = r.Next()
				if err != nil {
					break
				}
				if rec.Slot != slot.Of(rec.Key) || (n > 0 && compareRecord(prevSlot, prev, rec.Slot, rec.Key) >= 0) {
					t.Fatalf("reader returned a bad record %d: slot %d key %q", n, rec.Slot, rec.Key)
				}
				prev, prevSlot = append(prev[:0], rec.Key...), rec.Slot
			}
		}
		if err != io.EOF && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrChecksum) && !errors.Is(err, ErrUnsupportedVersion) {
			t.Fatalf("unexpected error %v", err)
		}

		// 2. The bytes as records: NUL-separated keys, values derived from
		// them; sorted and deduplicated they must round-trip.
		var recs []Record
		for i, k := range bytes.Split(data, []byte{0}) {
			if len(k) == 0 {
				continue
			}
			recs = append(recs, Record{Slot: slot.Of(k), Key: k, Value: bytes.Repeat(k, i%3)})
		}
		sortRecords(recs)
		recs = slices.CompactFunc(recs, func(a, b Record) bool { return bytes.Equal(a.Key, b.Key) })
		file, info := writeFile(t, recs, 1+len(data)%97)
		got, _, err := readAll(file)
		if err != io.EOF {
			t.Fatalf("reading back: %v", err)
		}
		if len(got) != len(recs) {
			t.Fatalf("read %d records, wrote %d", len(got), len(recs))
		}
		for i := range got {
			if got[i].Slot != recs[i].Slot || !bytes.Equal(got[i].Key, recs[i].Key) || !bytes.Equal(got[i].Value, recs[i].Value) {
				t.Fatalf("record %d differs", i)
			}
		}
		if len(recs) > 0 {
			if err := VerifyFile(bytes.NewReader(file), info.File("f")); err != nil {
				t.Fatalf("VerifyFile: %v", err)
			}
		}
	})
}
