package dataset

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/slotkv/slotkv/pkg/slot"
)

// TestBinaryKeysAndExpiry: records with keys that are not UTF-8 and with
// expiries round-trip through the Writer and Reader, the manifest carries
// the binary first and last keys as base64, and VerifyFile accepts the
// file against the parsed manifest.
func TestBinaryKeysAndExpiry(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		recs []Record
		b64  []string // manifest fields expected in base64
	}{
		{"binary first and last", []Record{
			{Key: []byte{0x00, 0xff}, Value: []byte("a"), ExpiresAtMs: 1},
			{Key: []byte("plain"), Value: nil},
			{Key: []byte{0xfe}, Value: []byte{0}, ExpiresAtMs: MaxExpiresAtMs},
		}, []string{"first_key_b64", "last_key_b64"}},
		{"utf-8 keys with expiry", []Record{
			{Key: []byte("a"), Value: []byte("1"), ExpiresAtMs: 1_800_000_000_000},
			{Key: []byte("b"), Value: []byte("2")},
		}, nil},
		{"one binary key", []Record{{Key: []byte("\xc3\x28"), Value: []byte("x"), ExpiresAtMs: 42}}, []string{"first_key_b64", "last_key_b64"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for i := range tc.recs {
				tc.recs[i].Slot = slot.Of(tc.recs[i].Key)
			}
			sortRecords(tc.recs)
			data, info := writeFile(t, tc.recs, 0)
			got, rd, err := readAll(data)
			if err != io.EOF || len(got) != len(tc.recs) || rd.Version() != FormatVersion {
				t.Fatalf("read %d of %d records (version %d): %v", len(got), len(tc.recs), rd.Version(), err)
			}
			for i, r := range got {
				w := tc.recs[i]
				if !bytes.Equal(r.Key, w.Key) || !bytes.Equal(r.Value, w.Value) || r.ExpiresAtMs != w.ExpiresAtMs {
					t.Fatalf("record %d = %q %q %d, want %q %q %d", i, r.Key, r.Value, r.ExpiresAtMs, w.Key, w.Value, w.ExpiresAtMs)
				}
			}
			info.SHA256 = strings.Repeat("0", 64)
			m := &Manifest{FormatVersion: FormatVersion, SlotCount: slot.Count, Records: info.Keys, Files: []File{info.File("f.skv")}}
			text, err := m.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range tc.b64 {
				if !strings.Contains(string(text), `"`+f+`"`) {
					t.Fatalf("manifest has no %s:\n%s", f, text)
				}
			}
			parsed, err := ParseManifest(bytes.NewReader(text), Limits{})
			if err != nil {
				t.Fatalf("ParseManifest: %v\n%s", err, text)
			}
			if f := parsed.Files[0]; f.FirstKey != string(tc.recs[0].Key) || f.LastKey != string(tc.recs[len(tc.recs)-1].Key) {
				t.Fatalf("parsed first/last key %q %q, want %q %q", f.FirstKey, f.LastKey, tc.recs[0].Key, tc.recs[len(tc.recs)-1].Key)
			}
			if err := VerifyFile(bytes.NewReader(data), parsed.Files[0]); err != nil {
				t.Fatalf("VerifyFile: %v", err)
			}
		})
	}
}

// TestReadVersion1 reads a data file of format version 1 (no expiry in
// its records), as datasets built before version 2 are.
func TestReadVersion1(t *testing.T) {
	t.Parallel()
	v1 := func(k, v string) []byte {
		b := binary.BigEndian.AppendUint16(nil, slot.OfString(k))
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
		b = binary.AppendUvarint(b, uint64(len(v)))
		return append(b, v...)
	}
	type kv struct{ k, v string }
	recs := []kv{{"a", "1"}, {"b", ""}, {"c", "three"}}
	sortKV := func() {
		for i := range recs {
			for j := i + 1; j < len(recs); j++ {
				if compareRecord(slot.OfString(recs[j].k), []byte(recs[j].k), slot.OfString(recs[i].k), []byte(recs[i].k)) < 0 {
					recs[i], recs[j] = recs[j], recs[i]
				}
			}
		}
	}
	sortKV()
	var payload []byte
	for _, r := range recs {
		payload = append(payload, v1(r.k, r.v)...)
	}
	file := binary.BigEndian.AppendUint32([]byte(FileMagic), 1)
	file = append(file, rawBlock(payload, uint32(len(recs)))...)
	file = append(file, rawFooter(uint64(len(recs)), 1)...)
	got, rd, err := readAll(file)
	if err != io.EOF || len(got) != len(recs) || rd.Version() != 1 {
		t.Fatalf("read %d of %d records (version %d): %v", len(got), len(recs), rd.Version(), err)
	}
	for i, r := range got {
		if string(r.Key) != recs[i].k || string(r.Value) != recs[i].v || r.ExpiresAtMs != 0 {
			t.Fatalf("record %d = %q %q %d, want %q %q 0", i, r.Key, r.Value, r.ExpiresAtMs, recs[i].k, recs[i].v)
		}
	}
	// A version the reader does not know is refused as such.
	bad := append(binary.BigEndian.AppendUint32([]byte(FileMagic), FormatVersion+1), file[fileHeaderSize:]...)
	if _, err := NewReader(bytes.NewReader(bad)); !errors.Is(err, ErrUnsupportedVersion) {
		t.Fatalf("version %d: %v, want ErrUnsupportedVersion", FormatVersion+1, err)
	}
}

// TestWriteBadExpiry: a negative expiry, or one after 9999, is refused
// and nothing is written.
func TestWriteBadExpiry(t *testing.T) {
	t.Parallel()
	for _, exp := range []int64{-1, MaxExpiresAtMs + 1} {
		w := NewWriter(io.Discard, WriterOptions{})
		if err := w.Write(Record{Slot: slot.OfString("k"), Key: []byte("k"), ExpiresAtMs: exp}); err == nil || !strings.Contains(err.Error(), "expires") {
			t.Fatalf("Write with expiry %d: %v, want an error about the expiry", exp, err)
		}
	}
}
