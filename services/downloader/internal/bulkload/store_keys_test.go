package bulkload

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestFileRecordKeysJSON: a saved file record keeps its first and last
// keys byte for byte, binary ones (in first_key_b64/last_key_b64) as well
// as UTF-8 ones, and records saved before binary keys still load.
func TestFileRecordKeysJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, first, last string
		b64               bool
	}{
		{"utf-8", "a:1", "z:9", false},
		{"binary first", "\x00\xff", "z", true},
		{"binary last", "a", "\xc3\x28", true},
		{"empty", "", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := &fileRecord{Name: "f.skv", Keys: 2, First: tc.first, Last: tc.last, State: StatePending}
			b, err := json.Marshal(in)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(string(b), "_b64"); got != tc.b64 {
				t.Fatalf("saved as %s: base64 keys %v, want %v", b, got, tc.b64)
			}
			var out fileRecord
			if err := json.Unmarshal(b, &out); err != nil {
				t.Fatal(err)
			}
			if out.First != tc.first || out.Last != tc.last || out.Name != "f.skv" || out.Keys != 2 {
				t.Fatalf("loaded %+v from %s, want first %q last %q", out, b, tc.first, tc.last)
			}
		})
	}
	var old fileRecord
	if err := json.Unmarshal([]byte(`{"name":"f.skv","size":1,"sha256":"","slots":"0-1","keys":1,"first_key":"k","last_key":"k","state":1}`), &old); err != nil || old.First != "k" || old.Last != "k" {
		t.Fatalf("a record saved before binary keys: %+v, %v", old, err)
	}
}
