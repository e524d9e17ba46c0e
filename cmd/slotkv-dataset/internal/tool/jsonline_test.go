package tool

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/slotkv/slotkv/pkg/dataset"
)

// stdParse parses line with encoding/json, the reference.
func stdParse(line []byte) (key, value []byte, ok bool) {
	key, value, _, ok = stdParseExp(line)
	return key, value, ok
}

// stdParseExp is stdParse with the expiry: a JSON integer from 0 to
// dataset.MaxExpiresAtMs (null, fractions and exponents refused).
func stdParseExp(line []byte) (key, value []byte, exp int64, ok bool) {
	var v struct {
		Key         *string         `json:"key"`
		KeyB64      *[]byte         `json:"key_b64"`
		Value       *string         `json:"value"`
		ValueB64    *[]byte         `json:"value_b64"`
		ExpiresAtMs json.RawMessage `json:"expires_at_ms"`
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil || dec.More() {
		return nil, nil, 0, false
	}
	if _, err := dec.Token(); err == nil {
		return nil, nil, 0, false
	}
	if (v.Key == nil) == (v.KeyB64 == nil) || (v.Value == nil) == (v.ValueB64 == nil) {
		return nil, nil, 0, false
	}
	if v.ExpiresAtMs != nil { // null comes as "null", refused below
		n, err := strconv.ParseInt(string(v.ExpiresAtMs), 10, 64)
		if err != nil || n < 0 || n > dataset.MaxExpiresAtMs {
			return nil, nil, 0, false
		}
		exp = n
	}
	if v.KeyB64 != nil {
		key = *v.KeyB64
	} else {
		key = []byte(*v.Key)
	}
	if v.Value != nil {
		return key, []byte(*v.Value), exp, true
	}
	return key, *v.ValueB64, exp, true
}

func TestLineParser(t *testing.T) {
	t.Parallel()
	tests := []struct {
		line, key, value, err string
		exp                   int64
	}{
		{line: `{"key_b64":"AP8=","value":"b"}`, key: "\x00\xff", value: "b"},
		{line: `{"key":"a","value":"b","expires_at_ms":1767225600000}`, key: "a", value: "b", exp: 1767225600000},
		{line: `{"expires_at_ms": -0 ,"key_b64":"/w==","value_b64":"AA=="}`, key: "\xff", value: "\x00"},
		{line: `{"key":"a","value":"b","expires_at_ms":253402300799999}`, key: "a", value: "b", exp: 253402300799999},
		{line: `{"key":"a","value":"b","expires_at_ms":253402300800000}`, err: "after 9999-12-31"},
		{line: `{"key":"a","value":"b","expires_at_ms":99999999999999999999999}`, err: "after 9999-12-31"},
		{line: `{"key":"a","value":"b","expires_at_ms":-5}`, err: "negative"},
		{line: `{"key":"a","value":"b","expires_at_ms":1.5}`, err: "must be an integer"},
		{line: `{"key":"a","value":"b","expires_at_ms":1e3}`, err: "must be an integer"},
		{line: `{"key":"a","value":"b","expires_at_ms":"1"}`, err: "must be an integer"},
		{line: `{"key":"a","value":"b","expires_at_ms":null}`, err: "must be an integer"},
		{line: `{"key":"a","value":"b","expires_at_ms":01}`, err: "leading zero"},
		{line: `{"key":"a","value":"b","expires_at_ms":1,"expires_at_ms":2}`, err: "appears twice"},
		{line: `{"key":"a","key_b64":"AA==","value":"b"}`, err: "both key and key_b64"},
		{line: `{"key_b64":"!","value":"b"}`, err: "key_b64: invalid base64"},
		{line: `{"key":"a","value":"b"}`, key: "a", value: "b"},
		{line: ` { "value" : "b" , "key" : "a" } `, key: "a", value: "b"},
		{line: `{"key":"a","value":""}`, key: "a", value: ""},
		{line: `{"key":"a\u0062\n\"\\\/\b\f\r\t","value":"\ud83d\ude00"}`, key: "ab\n\"\\/\b\f\r\t", value: "😀"},
		{line: `{"\u006bey":"a","value":"b"}`, key: "a", value: "b"},
		{line: `{"key":"a","value_b64":"aGk="}`, key: "a", value: "hi"},
		{line: `{"key":"a","value_b64":""}`, key: "a", value: ""},
		{line: `{"key":"é","value":"ü"}`, key: "é", value: "ü"},
		{line: `{"key":"a","value":"b"`, err: "expected ',' or '}'"},
		{line: `{"key":"a","value":"b"}x`, err: "data after the object"},
		{line: `{"key":"a",}`, err: "expected a field name"},
		{line: `{"key":"a" "value":"b"}`, err: "expected ',' or '}'"},
		{line: `{"key" "a"}`, err: "expected ':'"},
		{line: `{}`, err: "missing key"},
		{line: `{"key":"a"}`, err: "missing value"},
		{line: `{"key":"a","key":"b","value":""}`, err: `field "key" appears twice`},
		{line: `{"KEY":"a","value":"b"}`, err: `unknown field "KEY"`},
		{line: `{"key":null,"value":"b"}`, err: `field "key" must be a JSON string`},
		{line: `{"key":"a","value":"b","value_b64":""}`, err: "both value and value_b64"},
		{line: "{\"key\":\"a\x01\",\"value\":\"b\"}", err: "control character"},
		{line: "{\"key\":\"\xff\",\"value\":\"b\"}", err: "not valid UTF-8"},
		{line: `{"key":"\ud800","value":"b"}`, err: "lone surrogate"},
		{line: `{"key":"\ud800\u0041","value":"b"}`, err: "lone surrogate"},
		{line: `{"key":"\x","value":"b"}`, err: "invalid escape"},
		{line: `{"key":"\u12","value":"b"}`, err: `invalid \u escape`},
		{line: `{"key":"abc`, err: "unterminated string"},
		{line: `{"key":"a\`, err: "unterminated string"},
		{line: `"key"`, err: "not a JSON object"},
		{line: `{"key":"a","value_b64":"a"}`, err: "invalid base64"},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			t.Parallel()
			var p lineParser
			k, v, err := p.parse([]byte(tt.line))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Errorf("parse = %q, %q, %v; want error %q", k, v, err, tt.err)
				}
				if _, _, ok := stdParse([]byte(tt.line)); ok && utf8.ValidString(tt.line) && !strings.Contains(tt.line, `\ud800`) &&
					!strings.Contains(tt.err, "twice") && !strings.Contains(tt.err, "KEY") {
					t.Errorf("encoding/json accepts %s", tt.line)
				}
				return
			}
			if err != nil || string(k) != tt.key || string(v) != tt.value || p.exp != tt.exp {
				t.Errorf("parse = %q, %q, %d, %v; want %q, %q, %d", k, v, p.exp, err, tt.key, tt.value, tt.exp)
			}
		})
	}
}

// FuzzLineParser checks the hand-written parser against encoding/json:
// whatever it accepts, encoding/json accepts with the same result; and
// whatever json.Marshal writes for valid UTF-8 strings, it parses back.
func FuzzLineParser(f *testing.F) {
	f.Add([]byte(`{"key":"a","value":"b"}`), "k", "v")
	f.Add([]byte(`{"key":"\u00e9\ud83d\ude00","value_b64":"AAE="}`), "\u2028<&>", "\x00\x1f\"\\")
	f.Add([]byte(` {"value":"","key":"x"} `), "", "")
	f.Add([]byte(`{"key_b64":"AP8=","value":"v","expires_at_ms":1767225600000}`), "k", "")
	f.Fuzz(func(t *testing.T, line []byte, key, value string) {
		var p lineParser
		k, v, err := p.parse(line)
		if err == nil {
			sk, sv, se, ok := stdParseExp(line)
			if !ok || !bytes.Equal(k, sk) || !bytes.Equal(v, sv) || p.exp != se {
				t.Fatalf("parse(%q) = %q, %q, %d; encoding/json: %q, %q, %d, %v", line, k, v, p.exp, sk, sv, se, ok)
			}
		}
		if !utf8.ValidString(key) || !utf8.ValidString(value) {
			return
		}
		for _, b64 := range []bool{false, true} {
			var enc []byte
			if b64 {
				enc, _ = json.Marshal(map[string]string{"key": key, "value_b64": base64.StdEncoding.EncodeToString([]byte(value))})
			} else {
				enc, _ = json.Marshal(map[string]string{"key": key, "value": value})
			}
			k, v, err := p.parse(enc)
			if err != nil || string(k) != key || string(v) != value {
				t.Fatalf("parse(%s) = %q, %q, %v; want %q, %q", enc, k, v, err, key, value)
			}
		}
	})
}
