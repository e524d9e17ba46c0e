package tool

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

// surrogateEscape matches a \u escape of a UTF-16 surrogate, which the
// parser accepts only as a well-formed pair.
var surrogateEscape = regexp.MustCompile(`\\u[dD][89a-fA-F]`)

// exactFields reports whether the object in line has only the field names
// key, key_b64, value, value_b64 and expires_at_ms, spelled exactly, each
// at most once: the strictness the parser adds on top of encoding/json.
func exactFields(line []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(line))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return false
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return false
		}
		name, _ := t.(string)
		if !validField[name] || seen[name] {
			return false
		}
		seen[name] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return false
		}
	}
	return true
}

var validField = map[string]bool{"key": true, "key_b64": true, "value": true, "value_b64": true, "expires_at_ms": true}

// FuzzLineParserAccepts is the other half of FuzzLineParser: every line
// that encoding/json accepts, minus what the parser documents refusing
// (other spellings of the field names, repeated fields, invalid UTF-8,
// lone surrogates), the parser accepts too, with the same key and value.
// A line the parser wrongly refused would be dropped from a dataset as a
// bad line.
func FuzzLineParserAccepts(f *testing.F) {
	for _, s := range []string{
		`{"key":"a","value":"b"}`,
		"\t{ \"key\" :\r\n\"a\" , \"value_b64\" : \"aGk=\" }\r",
		`{"value":"\u00e9\ud83d\ude00\/","key":"\"\\\b\f\n\r\t"}`,
		`{"key":"a","value_b64":"aG\nk="}`,
		`{"key":"a","value_b64":"aGk"}`,
		`{"key":"a","value":""}`,
		`{"key":"\u0000","value":"\uFFFD"}`,
		`{"key_b64":"AP8=","value":"x","expires_at_ms":1767225600000}`,
		`{"key":"a","value":"x","expires_at_ms":-0}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		sk, sv, se, ok := stdParseExp(line)
		if !ok || !utf8.Valid(line) || surrogateEscape.Match(line) || !exactFields(line) {
			return
		}
		var p lineParser
		k, v, err := p.parse(line)
		if err != nil {
			t.Fatalf("parse(%q): %v; encoding/json accepts it as %q, %q", line, err, sk, sv)
		}
		if !bytes.Equal(k, sk) || !bytes.Equal(v, sv) || p.exp != se {
			t.Fatalf("parse(%q) = %q, %q, %d; encoding/json: %q, %q, %d", line, k, v, p.exp, sk, sv, se)
		}
	})
}

// FuzzReadJSONL reads whole JSONL inputs and checks the line accounting
// that `slotkv-dataset build` reports: every non-blank line is either
// added or reported bad exactly once, under its own 1-based line number
// (CRLF endings, a final line without newline and a BOM on line 1
// included), with the reason the line parser gives for that line alone.
// Blank means JSON whitespace only: a line of Unicode spaces is no JSON.
func FuzzReadJSONL(f *testing.F) {
	for _, s := range []string{
		"{\"key\":\"a\",\"value\":\"b\"}\n{\"key\":\"c\",\"value\":\"d\"}\n",
		"\xef\xbb\xbf{\"key\":\"a\",\"value\":\"b\"}\r\n\r\n  \nnot json\n{\"key\":\"x\"}",
		"\n\n{\"key\":\"a\",\"value_b64\":\"!!\"}\n\xef\xbb\xbf{\"key\":\"a\",\"value\":\"b\"}\n",
		"{\"key\":\"a\\nb\",\"value\":\"\\u2028\"}\n\x00\n",
		"\u00a0\n \u0085 \r\n{\"key\":\"a\",\"value\":\"b\"}\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		type outcome struct {
			added  bool
			reason string
			key    string
			value  string
			exp    int64
		}
		got := map[int]outcome{}
		last := 0
		record := func(n int, o outcome) {
			if n <= last {
				t.Fatalf("line %d reported after line %d", n, last)
			}
			last = n
			got[n] = o
		}
		add := func(n int, k, v []byte, exp int64) {
			record(n, outcome{added: true, key: string(k), value: string(v), exp: exp})
		}
		bad := func(n int, format string, args ...any) { record(n, outcome{reason: fmt.Sprintf(format, args...)}) }
		if err := readJSONL(context.Background(), bytes.NewReader(data), 1<<20, add, bad); err != nil {
			t.Fatalf("readJSONL: %v", err)
		}

		// The reference: split at '\n', strip a BOM from line 1 only,
		// skip blank lines, parse each of the rest on its own.
		lines := strings.Split(string(data), "\n")
		if strings.HasSuffix(string(data), "\n") {
			lines = lines[:len(lines)-1]
		}
		want := 0
		for i, line := range lines {
			n := i + 1
			if n == 1 {
				line = strings.TrimPrefix(line, "\ufeff")
			}
			o, reported := got[n]
			if strings.Trim(line, " \t\r\n") == "" { // JSON's whitespace only
				if reported {
					t.Fatalf("blank line %d %q reported: %+v", n, line, o)
				}
				continue
			}
			want++
			if !reported {
				t.Fatalf("line %d %q neither added nor reported bad", n, line)
			}
			var p lineParser
			k, v, err := p.parse([]byte(line))
			switch {
			case err != nil && (o.added || o.reason != err.Error()):
				t.Fatalf("line %d %q: got %+v, want bad line %q", n, line, o, err)
			case err == nil && (!o.added || o.key != string(k) || o.value != string(v) || o.exp != p.exp):
				t.Fatalf("line %d %q: got %+v, want key %q value %q", n, line, o, k, v)
			}
		}
		if len(got) != want {
			t.Fatalf("%d lines reported, the input has %d non-blank lines", len(got), want)
		}
	})
}
