package kv

import (
	"fmt"
	"time"
	"unicode/utf8"

	routerv1 "github.com/slotkv/slotkv/gen/slotkv/router/v1"
	"github.com/slotkv/slotkv/pkg/rpcerr"
)

// Keys are bytes. The public API takes a key in one of two fields: `key`
// (a proto string, so UTF-8, readable in JSON and REST paths) or
// `key_bytes` (any bytes, base64 in JSON). Answers name a key the same
// way: `key` when it is valid UTF-8, `key_bytes` otherwise, so a client of
// the readable form sees no change for the keys it can write.

// keyOf returns the key a request gives as key or keyBytes: exactly one
// must be set (non-empty), and the key must fit the size limit. prefix
// ("" or "entries[3].") is put before the field names in errors.
func (s *Service) keyOf(prefix, key string, keyBytes []byte) ([]byte, error) {
	switch {
	case key != "" && len(keyBytes) > 0:
		return nil, invalid(prefix+"key_bytes", "set one of key (a UTF-8 string) and key_bytes (base64 bytes), not both")
	case len(keyBytes) > 0:
		if err := s.lim.CheckKeySize(prefix+"key_bytes", len(keyBytes)); err != nil {
			return nil, rpcerr.ToStatus(err)
		}
		return keyBytes, nil
	}
	if err := s.checkKey(prefix+"key", key); err != nil {
		return nil, err
	}
	return []byte(key), nil
}

// keysOf returns the keys of a MultiGet or MultiDelete: keys (UTF-8) or
// mixed (either form), not both. Each key is checked as keyOf does.
func (s *Service) keysOf(keys []string, mixed []*routerv1.Key) ([][]byte, error) {
	if len(keys) > 0 && len(mixed) > 0 {
		return nil, invalid("mixed_keys", "set one of keys and mixed_keys, not both")
	}
	if n := max(len(keys), len(mixed)); n > MaxKeys {
		field := "keys"
		if len(mixed) > 0 {
			field = "mixed_keys"
		}
		return nil, invalid(field, "%d keys, at most %d per call", n, MaxKeys)
	}
	out := make([][]byte, 0, len(keys)+len(mixed))
	for i, k := range keys {
		if err := s.checkKeyAt("keys", i, k); err != nil {
			return nil, err
		}
		out = append(out, []byte(k))
	}
	for i, m := range mixed {
		k, err := s.keyOf(fmt.Sprintf("mixed_keys[%d].", i), m.GetKey(), m.GetKeyBytes())
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, nil
}

// keyField names position i of a MultiGet's or MultiDelete's keys as the
// caller wrote it.
func keyField(mixed bool, i int) string {
	if mixed {
		return fmt.Sprintf("mixed_keys[%d]", i)
	}
	return fmt.Sprintf("keys[%d]", i)
}

// keyFields is how an answer carries key k: key when it is valid UTF-8,
// key_bytes otherwise.
func keyFields(k []byte) (string, []byte) {
	if utf8.Valid(k) {
		return string(k), nil
	}
	return "", k
}

// MaxExpiresAtMs is the latest expiry a write may ask for,
// 9999-12-31T23:59:59.999Z: far beyond any real use, and far from
// overflowing anything that adds to it or turns it into seconds.
const MaxExpiresAtMs int64 = 253402300799999

// expiryOf turns a write's ttl_ms or expires_at_ms (at most one; neither
// means none) into an absolute expiry in Unix milliseconds, 0 for none.
// A ttl counts from now, the router's clock. An expires_at_ms already past
// is kept as it is: the storage node then removes the key, as Redis does
// for SET ... PXAT in the past.
func expiryOf(prefix string, ttl, at int64, now time.Time) (int64, error) {
	switch {
	case ttl < 0:
		return 0, invalid(prefix+"ttl_ms", "%d is negative (0 or unset means no expiry)", ttl)
	case at < 0:
		return 0, invalid(prefix+"expires_at_ms", "%d is negative (0 or unset means no expiry)", at)
	case ttl > 0 && at > 0:
		return 0, invalid(prefix+"ttl_ms", "set one of ttl_ms and expires_at_ms, not both")
	case at > MaxExpiresAtMs:
		return 0, invalid(prefix+"expires_at_ms", "%d is after 9999-12-31 (at most %d)", at, MaxExpiresAtMs)
	case ttl > 0:
		nowMs := now.UnixMilli()
		if ttl > MaxExpiresAtMs-nowMs {
			return 0, invalid(prefix+"ttl_ms", "%d ends after 9999-12-31", ttl)
		}
		return nowMs + ttl, nil
	}
	return at, nil
}

// live reports whether a value with expiry exp (0 = none) is still there
// at nowMs. The storage nodes already leave expired keys out; the router
// checks again with its own clock, which set the expiry of every ttl_ms,
// so a key is never answered past the expiry its writer was told.
func live(exp, nowMs int64) bool { return exp == 0 || exp > nowMs }

// ttlLeft is the ttl_ms an answer reports for expiry exp: at least 1 for a
// live key with an expiry, 0 without one.
func ttlLeft(exp, nowMs int64) int64 {
	if exp == 0 {
		return 0
	}
	return max(exp-nowMs, 1)
}
