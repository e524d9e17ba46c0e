package dataset

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/slotkv/slotkv/pkg/slot"
)

// validManifest returns a valid manifest of three files over real keys.
func validManifest() *Manifest {
	recs := makeRecords(300, 0, 1)
	m := &Manifest{FormatVersion: FormatVersion, SlotCount: slot.Count}
	for i := range 3 {
		part := recs[i*100 : (i+1)*100]
		first, last := part[0], part[len(part)-1]
		m.Files = append(m.Files, File{
			Name:     fmt.Sprintf("part-%05d.skv", i),
			Size:     int64(1000 + i),
			SHA256:   strings.Repeat(fmt.Sprintf("%x", i+10), 64),
			Slots:    fmt.Sprintf("%d-%d", first.Slot, last.Slot),
			Keys:     uint64(len(part)),
			FirstKey: string(first.Key),
			LastKey:  string(last.Key),
		})
		m.Records += uint64(len(part))
	}
	return m
}

func marshal(t *testing.T, m *Manifest) string {
	t.Helper()
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseManifestValid(t *testing.T) {
	t.Parallel()
	m := validManifest()
	text := marshal(t, m)
	got, err := ParseManifest(strings.NewReader(text), Limits{})
	if err != nil {
		t.Fatalf("ParseManifest: %v\n%s", err, text)
	}
	if !reflect.DeepEqual(got, m) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, m)
	}
	if !strings.Contains(text, fmt.Sprintf("\n  \"format_version\": %d,", FormatVersion)) {
		t.Errorf("Marshal is not indented JSON:\n%s", text)
	}
	r, err := got.Files[1].SlotRange()
	if err != nil || r.String() != got.Files[1].Slots && fmt.Sprintf("%d-%d", r.Start, r.End) != got.Files[1].Slots {
		t.Errorf("SlotRange() = %v, %v for %q", r, err, got.Files[1].Slots)
	}
}

func TestParseManifestErrors(t *testing.T) {
	t.Parallel()
	setFile := func(i int, f func(*File)) func(*Manifest) {
		return func(m *Manifest) { f(&m.Files[i]) }
	}
	name := func(n string) func(*Manifest) {
		return setFile(1, func(f *File) { f.Name = n })
	}
	tests := []struct {
		name   string
		mutate func(*Manifest)          // applied to a valid manifest
		edit   func(text string) string // applied to its JSON
		raw    string                   // used instead when set
		lim    Limits
		want   error
		substr string
	}{
		{name: "malformed JSON", raw: `{"format_version": 1, "files": [`, want: ErrInvalidManifest, substr: "malformed JSON"},
		{name: "syntax error", raw: `{"format_version": 1,, }`, want: ErrInvalidManifest, substr: "malformed JSON at byte offset"},
		{name: "empty", raw: ``, want: ErrInvalidManifest, substr: "empty manifest"},
		{name: "not an object", raw: `[1,2]`, want: ErrInvalidManifest, substr: "manifest: JSON array"},
		{name: "trailing data", edit: func(s string) string { return s + "{}" }, want: ErrInvalidManifest, substr: "after top-level value"},
		{name: "unknown top-level field", edit: func(s string) string { return strings.Replace(s, "{", `{"extra": 1,`, 1) }, want: ErrInvalidManifest, substr: `unknown field "extra"`},
		{name: "unknown file field", edit: func(s string) string { return strings.Replace(s, `"keys":`, `"crc": 5, "keys":`, 1) }, want: ErrInvalidManifest, substr: `unknown field "crc"`},
		{name: "wrong type", edit: func(s string) string { return strings.Replace(s, `"size": 1001`, `"size": "big"`, 1) }, want: ErrInvalidManifest, substr: "files[1].size"},
		{name: "missing records", edit: func(s string) string { return strings.Replace(s, `"records": 300,`, ``, 1) }, want: ErrInvalidManifest, substr: "records: missing"},
		{name: "missing sha256", edit: func(s string) string {
			i := strings.Index(s, `"name": "part-00001.skv"`)
			j := i + strings.Index(s[i:], `"sha256"`)
			k := j + strings.Index(s[j:], "\n")
			return s[:j] + s[k+1:]
		}, want: ErrInvalidManifest, substr: "files[1].sha256: missing"},
		{name: "null first_key", edit: func(s string) string {
			i := strings.Index(s, `"name": "part-00002.skv"`)
			j := i + strings.Index(s[i:], `"first_key": `) + len(`"first_key": `)
			k := j + strings.Index(s[j:], ",")
			return s[:j] + "null" + s[k:]
		}, want: ErrInvalidManifest, substr: "files[2].first_key: missing"},
		{name: "version 3", mutate: func(m *Manifest) { m.FormatVersion = 3 }, want: ErrUnsupportedVersion, substr: "format_version: 3"},
		{name: "version 3 with new fields", edit: func(s string) string {
			return strings.Replace(strings.Replace(s, `"format_version": 2`, `"format_version": 3`, 1), "{", `{"compression": "zstd",`, 1)
		}, want: ErrUnsupportedVersion, substr: "format_version: 3"},
		{name: "first_key and first_key_b64", edit: func(s string) string {
			return strings.Replace(s, `"first_key": `, `"first_key_b64": "AA==", "first_key": `, 1)
		}, want: ErrInvalidManifest, substr: "files[0].first_key_b64: give files[0].first_key or"},
		{name: "last_key_b64 not base64", edit: func(s string) string {
			i := strings.Index(s, `"last_key": `)
			k := i + strings.Index(s[i:], "\n")
			return s[:i] + `"last_key_b64": "!!"` + s[k:]
		}, want: ErrInvalidManifest, substr: "files[0].last_key_b64"},
		{name: "first_key_b64 in version 1", edit: func(s string) string {
			s = strings.Replace(s, `"format_version": 2`, `"format_version": 1`, 1)
			i := strings.Index(s, `"first_key": `)
			k := i + strings.Index(s[i:], ",")
			return s[:i] + `"first_key_b64": "/w=="` + s[k:]
		}, want: ErrInvalidManifest, substr: "needs format_version 2"},
		{name: "binary key in version 1", mutate: func(m *Manifest) { m.FormatVersion = 1; m.Files[0].FirstKey = "\xff" + m.Files[0].FirstKey },
			want: ErrInvalidManifest, substr: "files[0].first_key"},
		{name: "version 0", mutate: func(m *Manifest) { m.FormatVersion = 0 }, want: ErrUnsupportedVersion, substr: "format_version: 0"},
		{name: "version missing", edit: func(s string) string { return strings.Replace(s, `"format_version": 2,`, ``, 1) }, want: ErrInvalidManifest, substr: "format_version: missing"},
		{name: "version not integer", edit: func(s string) string { return strings.Replace(s, `"format_version": 2`, `"format_version": "2"`, 1) }, want: ErrInvalidManifest, substr: "format_version"},
		{name: "slot_count", mutate: func(m *Manifest) { m.SlotCount = 1024 }, want: ErrInvalidManifest, substr: "slot_count: 1024"},
		{name: "no files", mutate: func(m *Manifest) { m.Files = nil; m.Records = 0 }, want: ErrInvalidManifest, substr: "files: empty"},
		{name: "too many files", lim: Limits{MaxFiles: 2}, want: ErrTooLarge, substr: "files: 3 files"},
		{name: "dot-dot path", mutate: name("../x"), want: ErrUnsafeName, substr: `files[1].name: "../x" would leave the download directory`},
		{name: "subdirectory", mutate: name("a/b"), want: ErrUnsafeName, substr: `files[1].name: "a/b" would leave`},
		{name: "absolute", mutate: name("/etc/passwd"), want: ErrUnsafeName, substr: `files[1].name: "/etc/passwd" would leave`},
		{name: "backslash", mutate: name(`a\b`), want: ErrUnsafeName, substr: `files[1].name: "a\\b" would leave`},
		{name: "dot", mutate: name("."), want: ErrUnsafeName, substr: `files[1].name: "." would leave`},
		{name: "dotdot", mutate: name(".."), want: ErrUnsafeName, substr: `files[1].name: ".." would leave`},
		{name: "hidden", mutate: name(".hidden"), want: ErrUnsafeName, substr: `files[1].name: ".hidden" starts with '.'`},
		{name: "empty name", mutate: name(""), want: ErrUnsafeName, substr: `files[1].name: "" is empty`},
		{name: "NUL", mutate: name("a\x00b"), want: ErrUnsafeName, substr: `files[1].name: "a\x00b" contains a control character`},
		{name: "newline", mutate: name("a\nb"), want: ErrUnsafeName, substr: "control character"},
		{name: "too long", mutate: name(strings.Repeat("a", 256)), want: ErrUnsafeName, substr: "longer than 255 bytes"},
		{name: "manifest name", mutate: name("Manifest.JSON"), want: ErrUnsafeName, substr: "reserved for the manifest"},
		{name: "duplicate name", mutate: name("part-00000.skv"), want: ErrUnsafeName, substr: `files[1].name: "part-00000.skv" duplicates files[0].name`},
		{name: "duplicate name ignoring case", mutate: name("PART-00000.skv"), want: ErrUnsafeName, substr: "duplicates files[0].name"},
		{name: "size 0", mutate: setFile(2, func(f *File) { f.Size = 0 }), want: ErrInvalidManifest, substr: "files[2].size: 0"},
		{name: "size negative", mutate: setFile(2, func(f *File) { f.Size = -5 }), want: ErrInvalidManifest, substr: "files[2].size: -5"},
		{name: "size over cap", lim: Limits{MaxFileBytes: 1000}, want: ErrTooLarge, substr: "files[1].size: 1001 bytes"},
		{name: "sha256 uppercase", mutate: setFile(0, func(f *File) { f.SHA256 = strings.ToUpper(f.SHA256) }), want: ErrInvalidManifest, substr: "files[0].sha256"},
		{name: "sha256 short", mutate: setFile(0, func(f *File) { f.SHA256 = "abc" }), want: ErrInvalidManifest, substr: `files[0].sha256: "abc"`},
		{name: "sha256 not hex", mutate: setFile(0, func(f *File) { f.SHA256 = strings.Repeat("g", 64) }), want: ErrInvalidManifest, substr: "files[0].sha256"},
		{name: "slots garbage", mutate: setFile(0, func(f *File) { f.Slots = "abc" }), want: ErrInvalidManifest, substr: "files[0].slots"},
		{name: "slots reversed", mutate: setFile(0, func(f *File) { f.Slots = "9-1" }), want: ErrInvalidManifest, substr: "files[0].slots"},
		{name: "slots out of range", mutate: setFile(0, func(f *File) { f.Slots = "0-16384" }), want: ErrInvalidManifest, substr: "files[0].slots"},
		{name: "slots empty", mutate: setFile(0, func(f *File) { f.Slots = "" }), want: ErrInvalidManifest, substr: "files[0].slots"},
		{name: "keys 0", mutate: func(m *Manifest) { m.Records -= m.Files[1].Keys; m.Files[1].Keys = 0 }, want: ErrInvalidManifest, substr: "files[1].keys: 0"},
		{name: "first_key empty", mutate: setFile(0, func(f *File) { f.FirstKey = "" }), want: ErrInvalidManifest, substr: "files[0].first_key: empty"},
		{name: "last_key empty", mutate: setFile(0, func(f *File) { f.LastKey = "" }), want: ErrInvalidManifest, substr: "files[0].last_key: empty"},
		{name: "first_key outside slots", mutate: setFile(1, func(f *File) { f.Slots = "16383" }), want: ErrInvalidManifest, substr: "files[1].first_key"},
		{name: "last before first", mutate: setFile(0, func(f *File) { f.FirstKey, f.LastKey = f.LastKey, f.FirstKey; f.Slots = "0-16383" }), want: ErrInvalidManifest, substr: "files[0].last_key"},
		{name: "first equals last", mutate: setFile(0, func(f *File) { f.LastKey = f.FirstKey }), want: ErrInvalidManifest, substr: "files[0].last_key: equals first_key"},
		{name: "files overlap", mutate: func(m *Manifest) { m.Files[1].FirstKey = m.Files[0].LastKey; m.Files[1].Slots = "0-16383" }, want: ErrInvalidManifest, substr: "files[1].first_key"},
		{name: "files out of order", mutate: func(m *Manifest) { m.Files[0], m.Files[2] = m.Files[2], m.Files[0] }, want: ErrInvalidManifest, substr: "files[1].first_key"},
		{name: "records mismatch", mutate: func(m *Manifest) { m.Records++ }, want: ErrInvalidManifest, substr: "records: 301, but the files' keys add up to 300"},
		{name: "manifest over cap", lim: Limits{MaxManifestBytes: 100}, want: ErrTooLarge, substr: "manifest is larger than the limit of 100 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			text := tt.raw
			if text == "" {
				m := validManifest()
				if tt.mutate != nil {
					tt.mutate(m)
				}
				text = marshal(t, m)
				if tt.edit != nil {
					text = tt.edit(text)
				}
			}
			if tt.name == "empty" {
				text = ""
			}
			_, err := ParseManifest(strings.NewReader(text), tt.lim)
			if err == nil {
				t.Fatalf("ParseManifest accepted:\n%s", text)
			}
			checkSentinel(t, err, tt.want)
			if !strings.Contains(err.Error(), tt.substr) {
				t.Errorf("error %q does not contain %q", err, tt.substr)
			}
		})
	}
}

func TestValidateName(t *testing.T) {
	t.Parallel()
	// Names JSON cannot carry as is: test them through Validate.
	for _, n := range []string{"\xff.skv", "a\u0085b", "a\x7fb"} {
		t.Run(n, func(t *testing.T) {
			t.Parallel()
			m := validManifest()
			m.Files[0].Name = n
			err := m.Validate(Limits{})
			checkSentinel(t, err, ErrUnsafeName)
			if !strings.Contains(err.Error(), "files[0].name") {
				t.Errorf("error %q does not name files[0].name", err)
			}
		})
	}
	for _, n := range []string{"part-00000.skv", "a", "data.v1.bin", "ünïcode.skv", strings.Repeat("x", 255), "a..b"} {
		t.Run("ok "+n[:min(len(n), 20)], func(t *testing.T) {
			t.Parallel()
			m := validManifest()
			m.Files[0].Name = n
			if err := m.Validate(Limits{}); err != nil {
				t.Errorf("Validate(%q): %v", n, err)
			}
		})
	}
}

func TestValidateKeyUTF8(t *testing.T) {
	t.Parallel()
	m := validManifest()
	m.Files[0].LastKey = "\xff"
	err := m.Validate(Limits{})
	checkSentinel(t, err, ErrInvalidManifest)
	if !strings.Contains(err.Error(), "files[0].last_key") {
		t.Errorf("error %q does not name files[0].last_key", err)
	}
}

func TestManifestSingleKeyFile(t *testing.T) {
	t.Parallel()
	m := validManifest()
	f := &m.Files[2]
	m.Records -= f.Keys - 1
	f.Keys = 1
	f.LastKey = f.FirstKey
	if err := m.Validate(Limits{}); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	f.LastKey = m.Files[2].LastKey + "x"
	if err := m.Validate(Limits{}); err == nil {
		t.Fatal("a one-key file with first_key != last_key was accepted")
	}
}

func TestMarshalEmptyFiles(t *testing.T) {
	t.Parallel()
	b, err := (&Manifest{FormatVersion: 1, SlotCount: slot.Count}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if files, ok := v["files"].([]any); !ok || len(files) != 0 {
		t.Errorf("files = %#v, want []", v["files"])
	}
	if !bytes.HasSuffix(b, []byte("}\n")) {
		t.Errorf("Marshal output does not end in a newline: %q", b)
	}
}
