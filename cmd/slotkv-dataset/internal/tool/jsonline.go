package tool

import (
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/slotkv/slotkv/pkg/dataset"
	"unicode/utf16"
	"unicode/utf8"
)

// lineParser parses JSONL input lines of the form
//
//	{"key": "...", "value": "..."}  or  {"key": "...", "value_b64": "..."}
//
// where the key may be given as "key_b64" (base64) instead of "key", for
// keys that are not UTF-8, and an optional "expires_at_ms" (a JSON integer,
// Unix milliseconds, 0 = never) sets the record's expiry:
//
//	{"key_b64": "AP8=", "value": "v", "expires_at_ms": 1767225600000}
//
// without allocating per line: strings without escapes are returned as
// slices of the line, others are decoded into scratch buffers reused by the
// next call. It accepts exactly the JSON encoding/json accepts for such an
// object, except that it is stricter: field names must match exactly,
// unknown and repeated fields are refused, strings must be valid UTF-8 and
// \u escapes must not be lone surrogates (encoding/json would silently
// replace those with U+FFFD and so change the key).
type lineParser struct {
	kbuf, vbuf, bbuf, nbuf, kbbuf, kdbuf []byte
	// exp is the expiry of the line parse last accepted (0 = none).
	exp int64
}

// parse returns the key and value of line (without its newline), and
// sets p.exp to its expiry. The slices are valid until the next call.
func (p *lineParser) parse(line []byte) (key, value []byte, err error) {
	p.exp = 0
	i := skipWS(line, 0)
	if i == len(line) || line[i] != '{' {
		return nil, nil, errors.New("bad JSON: not a JSON object")
	}
	i = skipWS(line, i+1)
	var haveKey, haveValue, haveB64, haveKeyB64, haveExp bool
	var b64, keyB64 []byte
	var exp int64
	if i < len(line) && line[i] == '}' {
		i++
	} else {
		for {
			if i == len(line) || line[i] != '"' {
				return nil, nil, fmt.Errorf("bad JSON at column %d: expected a field name", i+1)
			}
			var name []byte
			name, i, err = parseString(line, i, &p.nbuf)
			if err != nil {
				return nil, nil, err
			}
			i = skipWS(line, i)
			if i == len(line) || line[i] != ':' {
				return nil, nil, fmt.Errorf("bad JSON at column %d: expected ':' after field name", i+1)
			}
			i = skipWS(line, i+1)
			var seen *bool
			var buf *[]byte
			var dst *[]byte
			switch string(name) {
			case "key":
				seen, buf, dst = &haveKey, &p.kbuf, &key
			case "value":
				seen, buf, dst = &haveValue, &p.vbuf, &value
			case "value_b64":
				seen, buf, dst = &haveB64, &p.bbuf, &b64
			case "key_b64":
				seen, buf, dst = &haveKeyB64, &p.kbbuf, &keyB64
			case "expires_at_ms":
				seen = &haveExp
			default:
				return nil, nil, fmt.Errorf("unknown field %q (want key or key_b64, value or value_b64, and optionally expires_at_ms)", name)
			}
			if *seen {
				return nil, nil, fmt.Errorf("field %q appears twice", name)
			}
			*seen = true
			if seen == &haveExp {
				if exp, i, err = parseExpiry(line, i); err != nil {
					return nil, nil, fmt.Errorf("field %q: %w", name, err)
				}
				i = skipWS(line, i)
				if i < len(line) && line[i] == ',' {
					i = skipWS(line, i+1)
					continue
				}
				if i < len(line) && line[i] == '}' {
					i++
					break
				}
				return nil, nil, fmt.Errorf("bad JSON at column %d: expected ',' or '}'", i+1)
			}
			if i == len(line) || line[i] != '"' {
				return nil, nil, fmt.Errorf("field %q must be a JSON string", name)
			}
			*dst, i, err = parseString(line, i, buf)
			if err != nil {
				return nil, nil, fmt.Errorf("field %q: %w", name, err)
			}
			i = skipWS(line, i)
			if i < len(line) && line[i] == ',' {
				i = skipWS(line, i+1)
				continue
			}
			if i < len(line) && line[i] == '}' {
				i++
				break
			}
			return nil, nil, fmt.Errorf("bad JSON at column %d: expected ',' or '}'", i+1)
		}
	}
	if i = skipWS(line, i); i != len(line) {
		return nil, nil, fmt.Errorf("bad JSON at column %d: data after the object", i+1)
	}
	switch {
	case haveKey && haveKeyB64:
		return nil, nil, errors.New("both key and key_b64")
	case !haveKey && !haveKeyB64:
		return nil, nil, errors.New("missing key (or key_b64)")
	case haveValue && haveB64:
		return nil, nil, errors.New("both value and value_b64")
	case !haveValue && !haveB64:
		return nil, nil, errors.New(`missing value (or value_b64); use "value": "" for an empty value`)
	case haveB64:
		if value, err = decodeB64(b64, &p.vbuf); err != nil {
			return nil, nil, fmt.Errorf("value_b64: %w", err)
		}
	}
	if haveKeyB64 {
		if key, err = decodeB64(keyB64, &p.kdbuf); err != nil {
			return nil, nil, fmt.Errorf("key_b64: %w", err)
		}
	}
	if value == nil {
		value = []byte{}
	}
	p.exp = exp
	return key, value, nil
}

// decodeB64 decodes standard base64 (as encoding/json reads []byte) into
// *buf.
func decodeB64(b64 []byte, buf *[]byte) ([]byte, error) {
	n := base64.StdEncoding.DecodedLen(len(b64))
	if cap(*buf) < n {
		*buf = make([]byte, n)
	}
	m, err := base64.StdEncoding.Decode((*buf)[:n], b64)
	if err != nil {
		return nil, fmt.Errorf("invalid base64: %v", err)
	}
	return (*buf)[:m], nil
}

// parseExpiry parses the JSON integer at b[i] as an expiry in Unix
// milliseconds: 0 to dataset.MaxExpiresAtMs ("-0" is 0). It returns the
// index after the number.
func parseExpiry(b []byte, i int) (int64, int, error) {
	neg := i < len(b) && b[i] == '-'
	if neg {
		i++
	}
	start := i
	var v int64
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		if v > (dataset.MaxExpiresAtMs-int64(b[i]-'0'))/10 {
			return 0, 0, fmt.Errorf("after 9999-12-31 (at most %d Unix milliseconds)", dataset.MaxExpiresAtMs)
		}
		v = v*10 + int64(b[i]-'0')
		i++
	}
	switch {
	case i == start:
		return 0, 0, errors.New("must be an integer (Unix milliseconds)")
	case b[start] == '0' && i-start > 1:
		return 0, 0, errors.New("bad JSON number: leading zero")
	case i < len(b) && (b[i] == '.' || b[i] == 'e' || b[i] == 'E'):
		return 0, 0, errors.New("must be an integer (Unix milliseconds)")
	case neg && v != 0:
		return 0, 0, fmt.Errorf("-%d is negative (0 or absent means no expiry)", v)
	}
	return v, i, nil
}

func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\r', '\n':
			i++
		default:
			return i
		}
	}
	return i
}

// parseString parses the JSON string starting at b[i] == '"' and returns
// its contents and the index after the closing quote. Contents without
// escapes alias b; others are decoded into *buf.
func parseString(b []byte, i int, buf *[]byte) ([]byte, int, error) {
	start := i + 1
	j := start
	for j < len(b) {
		c := b[j]
		if c == '"' {
			s := b[start:j]
			if !utf8.Valid(s) {
				return nil, 0, errors.New("string is not valid UTF-8")
			}
			return s, j + 1, nil
		}
		if c == '\\' {
			return parseEscaped(b, start, j, buf)
		}
		if c < 0x20 {
			return nil, 0, fmt.Errorf("bad JSON at column %d: control character in string", j+1)
		}
		j++
	}
	return nil, 0, errors.New("bad JSON: unterminated string")
}

// parseEscaped continues parseString from b[j] == '\\', having seen plain
// bytes b[start:j].
func parseEscaped(b []byte, start, j int, buf *[]byte) ([]byte, int, error) {
	out := append((*buf)[:0], b[start:j]...)
	defer func() { *buf = out[:0] }()
	for j < len(b) {
		c := b[j]
		switch {
		case c == '"':
			if !utf8.Valid(out) {
				return nil, 0, errors.New("string is not valid UTF-8")
			}
			return out, j + 1, nil
		case c < 0x20:
			return nil, 0, fmt.Errorf("bad JSON at column %d: control character in string", j+1)
		case c != '\\':
			out = append(out, c)
			j++
			continue
		}
		if j+1 >= len(b) {
			break
		}
		switch e := b[j+1]; e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := hex4(b, j+2)
			if !ok {
				return nil, 0, fmt.Errorf(`bad JSON at column %d: invalid \u escape`, j+1)
			}
			if utf16.IsSurrogate(r) {
				r2, ok := rune(0), false
				if j+7 < len(b) && b[j+6] == '\\' && b[j+7] == 'u' {
					r2, ok = hex4(b, j+8)
				}
				dec := utf16.DecodeRune(r, r2)
				if !ok || dec == utf8.RuneError {
					return nil, 0, fmt.Errorf(`bad JSON at column %d: \u escape is a lone surrogate`, j+1)
				}
				out = utf8.AppendRune(out, dec)
				j += 12
				continue
			}
			out = utf8.AppendRune(out, r)
			j += 6
			continue
		default:
			return nil, 0, fmt.Errorf("bad JSON at column %d: invalid escape \\%c", j+1, e)
		}
		j += 2
	}
	return nil, 0, errors.New("bad JSON: unterminated string")
}

func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
