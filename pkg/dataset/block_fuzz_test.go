package dataset

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/slotkv/slotkv/pkg/slot"
)

// FuzzBlockPayload frames fuzz bytes as the payload of correctly
// checksummed blocks (FuzzReader's arbitrary files almost never get past
// the CRC, so they barely reach the record decoder). The payload is cut
// into two blocks at split, with the record counts given, and followed by
// a footer that matches them. Checked:
//   - the Reader never panics, and fails only with ErrCorrupt naming the
//     block it stopped in and that block's offset;
//   - the records it returns have non-empty keys in their own slot, in
//     strictly increasing (slot, key) order across the block boundary;
//   - a file it reads to the end is also accepted by VerifyFile with the
//     manifest entry its records imply, and its records, written again
//     by the Writer, read back the same in no more payload bytes.
func FuzzBlockPayload(f *testing.F) {
	rec := func(k, v string) []byte { return rawRecord(slot.OfString(k), k, v) }
	two := append(rec("a", "1"), rec("b", "2")...)
	f.Add(two, uint16(1), uint16(1), uint16(len(rec("a", "1"))))
	f.Add(two, uint16(2), uint16(0), uint16(len(two)))
	f.Add(two, uint16(1), uint16(1), uint16(3))
	f.Add(append(rec("b", ""), rec("a", "")...), uint16(1), uint16(1), uint16(len(rec("b", ""))))
	f.Add(append(rec("a", ""), rec("a", "")...), uint16(2), uint16(0), uint16(100))
	f.Add([]byte{0, 0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}, uint16(1), uint16(0), uint16(0))
	f.Add([]byte{0x3a, 0x2c, 0x81, 0x00, 'a', 0x00}, uint16(1), uint16(0), uint16(6)) // non-minimal varint
	f.Add([]byte{0, 0, 0, 0, 0}, uint16(1), uint16(0), uint16(5))
	f.Add(append(rec("a", "x"), 0), uint16(1), uint16(0), uint16(100))
	withExp := binary.AppendUvarint(rec("\xff\x00", "v")[:len(rec("\xff\x00", "v"))-1], 1_800_000_000_000)
	f.Add(append(withExp, rec("b", "")...), uint16(1), uint16(1), uint16(len(withExp)))
	f.Fuzz(func(t *testing.T, payload []byte, c1, c2, split uint16) {
		p := int(split) % (len(payload) + 1)
		file := rawHeader()
		var blockOffs []int
		var blocks uint64
		for _, b := range []struct {
			payload []byte
			count   uint16
		}{{payload[:p], c1}, {payload[p:], c2}} {
			if len(b.payload) == 0 && b.count == 0 {
				continue // no block
			}
			blockOffs = append(blockOffs, len(file))
			file = append(file, rawBlock(b.payload, uint32(b.count))...)
			blocks++
		}
		file = append(file, rawFooter(uint64(c1)+uint64(c2), blocks)...)

		recs, rd, err := readAll(file)
		if err != io.EOF {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("reading: %v, want ErrCorrupt (the checksums are right)", err)
			}
			// Errors inside a block name it and its offset; the others
			// (the footer's totals) name the footer's offset.
			if b := rd.Block(); b >= 0 && b < len(blockOffs) && strings.Contains(err.Error(), "block ") &&
				!strings.Contains(err.Error(), "footer") {
				if want := fmt.Sprintf("block %d at offset %d", b, blockOffs[b]); !strings.Contains(err.Error(), want) {
					t.Fatalf("error %q does not name %q", err, want)
				}
			} else if !strings.Contains(err.Error(), "offset ") {
				t.Fatalf("error %q names no offset", err)
			}
		}
		for i, r := range recs {
			if len(r.Key) == 0 || r.Slot != slot.Of(r.Key) {
				t.Fatalf("record %d: key %q in slot %d returned", i, r.Key, r.Slot)
			}
			if i > 0 && compareRecord(recs[i-1].Slot, recs[i-1].Key, r.Slot, r.Key) >= 0 {
				t.Fatalf("record %d (%q) does not sort after record %d (%q)", i, r.Key, i-1, recs[i-1].Key)
			}
		}
		if err != io.EOF {
			return
		}
		if uint64(len(recs)) != uint64(c1)+uint64(c2) {
			t.Fatalf("read %d records, the blocks say %d", len(recs), uint64(c1)+uint64(c2))
		}
		if len(recs) > 0 {
			fi := File{
				Name: "f", Size: int64(len(file)), Keys: uint64(len(recs)),
				Slots:    fmt.Sprintf("%d-%d", recs[0].Slot, recs[len(recs)-1].Slot),
				FirstKey: string(recs[0].Key), LastKey: string(recs[len(recs)-1].Key),
			}
			if err := VerifyFile(bytes.NewReader(file), fi); err != nil {
				t.Fatalf("Reader accepts the file, VerifyFile(%+v) does not: %v", fi, err)
			}
		}
		again, _ := writeFile(t, recs, MaxBlockPayload)
		got, _, err := readAll(again)
		if err != io.EOF || len(got) != len(recs) {
			t.Fatalf("rewritten file: %d of %d records, %v", len(got), len(recs), err)
		}
		for i := range got {
			if !bytes.Equal(got[i].Key, recs[i].Key) || !bytes.Equal(got[i].Value, recs[i].Value) || got[i].ExpiresAtMs != recs[i].ExpiresAtMs {
				t.Fatalf("rewritten record %d differs", i)
			}
		}
		// Header, one block header and the footer; the rest is payload.
		overhead := fileHeaderSize + len(rawFooter(0, 0))
		if len(recs) > 0 {
			overhead += blockHeaderSize
		}
		if len(again)-overhead > len(payload) {
			t.Fatalf("rewritten payload is %d bytes, the original %d", len(again)-overhead, len(payload))
		}
	})
}
