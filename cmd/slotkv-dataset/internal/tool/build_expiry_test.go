package tool

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/slotkv/slotkv/pkg/dataset"
)

// TestBuildBinaryKeysAndExpiry builds a dataset from JSONL lines with
// key_b64 and expires_at_ms, and reads back every key's bytes and expiry;
// a binary first or last key reaches the manifest in base64; `verify`
// accepts the dataset.
func TestBuildBinaryKeysAndExpiry(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		lines []string
		want  map[string]int64 // key bytes -> expiry
	}{
		{"binary keys and expiries", []string{
			`{"key_b64":"AP8=","value":"a","expires_at_ms":1767225600000}`,
			`{"key":"text","value":"b"}`,
			`{"key_b64":"/w==","value_b64":"AA==","expires_at_ms":253402300799999}`,
		}, map[string]int64{"\x00\xff": 1767225600000, "text": 0, "\xff": 253402300799999}},
		{"only binary", []string{`{"key_b64":"gA==","value":""}`}, map[string]int64{"\x80": 0}},
		{"last occurrence wins with its expiry", []string{
			`{"key":"k","value":"old","expires_at_ms":5}`,
			`{"key":"k","value":"new"}`,
			`{"key":"j","value":"new","expires_at_ms":7}`,
		}, map[string]int64{"k": 0, "j": 7}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			in := writeInput(t, dir, "in.jsonl", strings.Join(tc.lines, "\n")+"\n")
			out := filepath.Join(dir, "ds")
			mustRun(t, "build", "--input", in, "--out", out)
			mustRun(t, "verify", "--dir", out)
			m, _ := loadDataset(t, out)
			got := map[string]int64{}
			for _, f := range m.Files {
				data, err := os.ReadFile(filepath.Join(out, f.Name))
				if err != nil {
					t.Fatal(err)
				}
				r, err := dataset.NewReader(bytes.NewReader(data))
				if err != nil {
					t.Fatal(err)
				}
				for {
					rec, err := r.Next()
					if err == io.EOF {
						break
					}
					if err != nil {
						t.Fatal(err)
					}
					got[string(rec.Key)] = rec.ExpiresAtMs
				}
			}
			if len(got) != len(tc.want) {
				t.Fatalf("records %v, want %v", got, tc.want)
			}
			for k, exp := range tc.want {
				if e, ok := got[k]; !ok || e != exp {
					t.Fatalf("key %q: expiry %d (present %v), want %d", k, e, ok, exp)
				}
			}
		})
	}
}
