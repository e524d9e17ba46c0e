package dataset

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/slotkv/slotkv/pkg/slot"
)

// checkOneSentinel fails unless err wraps exactly one of the package's
// sentinels: callers (the downloader) decide what to do by errors.Is.
func checkOneSentinel(t *testing.T, err error) {
	t.Helper()
	n := 0
	for _, s := range sentinels {
		if errors.Is(err, s) {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("error %q wraps %d sentinels, want exactly 1", err, n)
	}
}

// FuzzParseManifest feeds arbitrary bytes to ParseManifest. A rejection
// wraps exactly one sentinel; an accepted manifest passes Validate, keeps
// the invariants the downloader relies on (safe unique names, files in
// (slot, key) order, records adding up), and survives Marshal and a
// re-parse unchanged. Tighter limits never accept more.
func FuzzParseManifest(f *testing.F) {
	valid, err := validManifest().Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add([]byte(`{"format_version":1,"slot_count":16384,"records":1,"files":[{"name":"a","size":1,` +
		`"sha256":"` + strings.Repeat("0", 64) + `","slots":"` + fmt.Sprint(slot.OfString("k")) + `","keys":1,"first_key":"k","last_key":"k"}]}`))
	f.Add([]byte(`{"format_version":2,"whatever":[]}`))
	f.Add([]byte(`{"format_version":"1"}`))
	f.Add([]byte(`{"FORMAT_VERSION":1,"slot_count":16384,"records":0,"files":[]}`))
	f.Add([]byte(`{"format_version":1,"slot_count":16384,"records":0,"files":null}`))
	f.Add([]byte(`{"format_version":1} {}`))
	f.Add([]byte(`[1,2,3]`))
	f.Add([]byte("\xef\xbb\xbf{}"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(bytes.NewReader(data), Limits{})
		small, serr := ParseManifest(bytes.NewReader(data), Limits{MaxManifestBytes: 4096, MaxFileBytes: 1 << 20, MaxFiles: 3})
		if serr != nil {
			checkOneSentinel(t, serr)
		} else if err != nil || !reflect.DeepEqual(small, m) {
			t.Fatalf("accepted with tight limits (%+v) but not with the defaults: %v", small, err)
		}
		if err != nil {
			checkOneSentinel(t, err)
			if m != nil {
				t.Fatalf("ParseManifest returned %+v with error %v", m, err)
			}
			return
		}
		if err := m.Validate(Limits{}); err != nil {
			t.Fatalf("ParseManifest accepted a manifest that Validate rejects: %v", err)
		}
		names := map[string]bool{}
		var sum uint64
		for i, fl := range m.Files {
			if checkName(fl.Name) != nil || names[strings.ToLower(fl.Name)] || !utf8.ValidString(fl.FirstKey) || !utf8.ValidString(fl.LastKey) {
				t.Fatalf("files[%d] = %+v accepted", i, fl)
			}
			names[strings.ToLower(fl.Name)] = true
			r, err := fl.SlotRange()
			if err != nil || !r.Contains(slot.OfString(fl.FirstKey)) || !r.Contains(slot.OfString(fl.LastKey)) {
				t.Fatalf("files[%d] = %+v: keys outside slots %v (%v)", i, fl, r, err)
			}
			if i > 0 {
				p := m.Files[i-1]
				if compareKey(slot.OfString(p.LastKey), p.LastKey, slot.OfString(fl.FirstKey), fl.FirstKey) >= 0 {
					t.Fatalf("files[%d] starts at or before the end of files[%d]", i, i-1)
				}
			}
			sum += fl.Keys
		}
		if sum != m.Records {
			t.Fatalf("records %d, files add up to %d", m.Records, sum)
		}
		out, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseManifest(bytes.NewReader(out), Limits{})
		if err != nil || !reflect.DeepEqual(again, m) {
			t.Fatalf("Marshal output does not parse back to the same manifest: %v\n%s", err, out)
		}
	})
}

// manifestFields are the JSON names of the fields FuzzManifestField
// mutates: a file's seven, then the top level's four.
var manifestFields = []string{"name", "size", "sha256", "slots", "keys", "first_key", "last_key",
	"format_version", "slot_count", "records", "files"}

// FuzzManifestField changes one field of a valid manifest (to a string, a
// number, null, true, or deletes it) and checks that a rejection names
// the field at fault: its JSON name, and for a file's field which file
// (files[i], or a neighbour for fields that order files against each
// other). A mistake in one field of a 100,000-file manifest must be
// findable from the error alone.
func FuzzManifestField(f *testing.F) {
	f.Add(uint8(1), uint8(0), uint8(0), "../x", int64(0))
	f.Add(uint8(2), uint8(1), uint8(1), "", int64(-5))
	f.Add(uint8(0), uint8(2), uint8(0), "ABC", int64(0))
	f.Add(uint8(1), uint8(3), uint8(0), "16383-0", int64(0))
	f.Add(uint8(1), uint8(4), uint8(1), "", int64(0))
	f.Add(uint8(1), uint8(5), uint8(0), "zzz", int64(0))
	f.Add(uint8(1), uint8(6), uint8(0), "k:00000000", int64(0))
	f.Add(uint8(0), uint8(0), uint8(1), "", int64(7))
	f.Add(uint8(2), uint8(6), uint8(2), "", int64(0))
	f.Add(uint8(0), uint8(7), uint8(1), "", int64(2))
	f.Add(uint8(0), uint8(8), uint8(0), "16384", int64(0))
	f.Add(uint8(0), uint8(9), uint8(1), "", int64(299))
	f.Add(uint8(0), uint8(10), uint8(3), "", int64(0))
	f.Add(uint8(0), uint8(10), uint8(4), "", int64(0))
	f.Fuzz(func(t *testing.T, fileIdx, field, kind uint8, s string, n int64) {
		base, err := validManifest().Marshal()
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := json.Unmarshal(base, &doc); err != nil {
			t.Fatal(err)
		}
		files := doc["files"].([]any)
		i := int(fileIdx) % len(files)
		name := manifestFields[int(field)%len(manifestFields)]
		obj, inFile := doc, int(field)%len(manifestFields) < 7
		if inFile {
			obj = files[i].(map[string]any)
		}
		var v any
		switch kind % 5 {
		case 0:
			v = s
		case 1:
			v = n
		case 2:
			v = nil
		case 3:
			v = true
		case 4:
			delete(obj, name)
		}
		if kind%5 != 4 {
			obj[name] = v
		}
		data, err := json.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		_, err = ParseManifest(bytes.NewReader(data), Limits{})
		if err == nil {
			return
		}
		checkOneSentinel(t, err)
		msg := err.Error()
		if !strings.Contains(msg, name) {
			t.Fatalf("changing %s of files[%d] to %s: error %q does not name %q", name, i, data, msg, name)
		}
		if !inFile {
			return
		}
		// Keys and slots order files against their neighbours, so the
		// fault may be reported on files[i-1] or files[i+1]; the rest
		// must name files[i].
		ok := strings.Contains(msg, fmt.Sprintf("files[%d]", i))
		switch name {
		case "first_key", "last_key", "slots", "keys":
			ok = ok || strings.Contains(msg, fmt.Sprintf("files[%d]", i-1)) || strings.Contains(msg, fmt.Sprintf("files[%d]", i+1))
			// keys feed records: a wrong count is found only there.
			ok = ok || strings.HasPrefix(strings.TrimPrefix(msg, ErrInvalidManifest.Error()+": "), "records:")
		}
		if !ok {
			t.Fatalf("changing %s of files[%d]: error %q does not say which file", name, i, msg)
		}
	})
}
