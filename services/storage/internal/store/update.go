package store

import (
	"fmt"
	"hash/maphash"
	"math"
	"strconv"
	"sync"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/slotkv/slotkv/pkg/rpcerr"
)

// Sentinel errors of Update.
var (
	// ErrNotInteger: INCRBY of a value that is not a base-10 signed 64-bit
	// integer as Redis writes one.
	ErrNotInteger = rpcerr.ErrNotInteger
	// ErrOverflow: INCRBY whose result leaves the signed 64-bit range.
	ErrOverflow = rpcerr.ErrOverflow
	// ErrBadUpdate: an Update the store cannot apply (unknown op, a value
	// the op would grow past its limit).
	ErrBadUpdate = fmt.Errorf("%w: bad update", rpcerr.ErrInvalidArgument)
)

// UpdateOp is the read-modify-write an Update applies (Redis's string
// commands; see the proto's UpdateOp for the wire contract).
type UpdateOp uint8

// Update operations.
const (
	OpSet     UpdateOp = iota + 1 // SET, under Cond; expiry, or KeepTTL
	OpIncrBy                      // INCRBY Delta; keeps the expiry
	OpAppend                      // APPEND Value; keeps the expiry
	OpExpire                      // EXPIRE at ExpiresAt, under ExpireCond
	OpPersist                     // PERSIST
	OpGetDel                      // GETDEL
	OpGetEx                       // GETEX: ExpiresAt, or Persist, or neither
)

// WriteCond guards OpSet.
type WriteCond uint8

// Write conditions.
const (
	Always    WriteCond = iota // no condition
	IfAbsent                   // NX
	IfPresent                  // XX
)

// ExpireCond guards OpExpire (Redis 7's options; no expiry counts as an
// infinite one for GT and LT).
type ExpireCond uint8

// Expire conditions.
const (
	ExpireAlways    ExpireCond = iota
	ExpireNoExpiry             // NX
	ExpireHasExpiry            // XX
	ExpireGreater              // GT
	ExpireLess                 // LT
)

// Update is one read-modify-write of one key.
type Update struct {
	Op     UpdateOp
	Value  []byte // OpSet's value, OpAppend's suffix
	Delta  int64  // OpIncrBy
	Cond   WriteCond
	ExpCnd ExpireCond
	// ExpiresAt: OpSet's expiry (0: none); OpExpire's new expiry (at or
	// before now, 0 and negative included: the key is deleted); OpGetEx's
	// new expiry (0: unchanged; at or before now: deleted).
	ExpiresAt int64
	KeepTTL   bool // OpSet: keep the current expiry
	Persist   bool // OpGetEx: remove the expiry
	ReturnOld bool // OpSet: return the old value
	// MaxValueBytes, when positive, bounds the value OpAppend and
	// OpIncrBy leave (OpSet's value is checked by the caller).
	MaxValueBytes int
}

// UpdateResult is what an Update did.
type UpdateResult struct {
	Slot uint16
	// Applied is false when a condition refused the write or the key was
	// absent (OpExpire, OpPersist, OpGetDel, OpGetEx).
	Applied bool
	// OldFound and OldValue: the value before, with ReturnOld, OpGetDel
	// and OpGetEx.
	OldFound bool
	OldValue []byte
	NewInt   int64  // OpIncrBy
	NewLen   uint64 // OpAppend
	// ExpiresAt is the key's expiry afterwards (0: none, or no key).
	ExpiresAt int64
}

// updateLocks serialize Updates of one key (by hash) on this node, so
// concurrent INCRBYs of a hot key queue up instead of failing Badger's
// conflict check and retrying; conflicts with other writes of the key
// (Put, BatchWrite) are still caught by Badger and retried by write.
type updateLocks struct {
	seed maphash.Seed
	mu   [256]sync.Mutex
}

var keyLocks = updateLocks{seed: maphash.MakeSeed()}

func (l *updateLocks) lock(k []byte) func() {
	m := &l.mu[maphash.Bytes(l.seed, k)%uint64(len(l.mu))]
	m.Lock()
	return m.Unlock
}

// Update applies u to key atomically: the read of the current value and
// expiry and the write that follows are one Badger transaction, retried
// when another write of the key commits in between, and captured like any
// write when the key's slot migrates. An expired key is absent.
func (s *Store) Update(key []byte, u Update) (UpdateResult, error) {
	k, sl, err := storageKey(nil, key)
	if err != nil {
		return UpdateResult{Slot: sl}, err
	}
	if u.Op < OpSet || u.Op > OpGetEx {
		return UpdateResult{Slot: sl}, fmt.Errorf("%w: unknown op %d", ErrBadUpdate, u.Op)
	}
	if u.Op == OpSet {
		if err := CheckExpiry(u.ExpiresAt); err != nil {
			return UpdateResult{Slot: sl}, err
		}
	}
	defer keyLocks.lock(k)()
	var (
		res   UpdateResult
		out   entry // what to write, decided by read
		write bool
	)
	_, err = s.write(writeOp{op: "update", n: 1,
		entry: func(int) entry {
			if !write {
				return entry{key: k} // before read: only the key counts
			}
			return out
		},
		read: func(txn *badger.Txn, now int64) (bool, error) {
			cur, exp, found, err := s.getLive(txn, k, now)
			if err != nil {
				return false, err
			}
			res = UpdateResult{Slot: sl}
			out, write, err = u.apply(k, cur, exp, found, now, &res)
			return write, err
		},
	})
	if err != nil {
		return UpdateResult{Slot: sl}, s.singleErr(err)
	}
	return res, nil
}

// apply decides an Update given the key's current state: what to write
// (write false: nothing) and the result, into res.
func (u Update) apply(k, cur []byte, exp int64, found bool, now int64, res *UpdateResult) (out entry, write bool, err error) {
	put := func(v []byte, e int64) (entry, bool, error) {
		if Expired(e, now) {
			res.ExpiresAt = 0
			return entry{key: k, del: true}, true, nil
		}
		res.ExpiresAt = e
		return entry{key: k, value: v, exp: e}, true, nil
	}
	old := func() { res.OldFound, res.OldValue = found, cur }
	res.ExpiresAt = exp
	switch u.Op {
	case OpSet:
		if u.ReturnOld {
			old()
		}
		if (u.Cond == IfAbsent && found) || (u.Cond == IfPresent && !found) {
			return entry{}, false, nil
		}
		res.Applied = true
		e := u.ExpiresAt
		if u.KeepTTL {
			e = exp
		}
		return put(u.Value, e)
	case OpIncrBy:
		var n int64
		if found {
			if n, err = parseRedisInt(cur); err != nil {
				return entry{}, false, err
			}
		}
		if (u.Delta > 0 && n > math.MaxInt64-u.Delta) || (u.Delta < 0 && n < math.MinInt64-u.Delta) {
			return entry{}, false, fmt.Errorf("%w: %d + %d", ErrOverflow, n, u.Delta)
		}
		n += u.Delta
		res.Applied, res.NewInt = true, n
		return put(strconv.AppendInt(nil, n, 10), exp)
	case OpAppend:
		if u.MaxValueBytes > 0 && len(cur)+len(u.Value) > u.MaxValueBytes {
			return entry{}, false, rpcerr.InvalidField("value", "appending %d bytes to %d would make the value %d bytes, above the limit --max-value-bytes=%d",
				len(u.Value), len(cur), len(cur)+len(u.Value), u.MaxValueBytes)
		}
		v := append(cur[:len(cur):len(cur)], u.Value...)
		res.Applied, res.NewLen = true, uint64(len(v))
		return put(v, exp)
	case OpExpire:
		if !found {
			return entry{}, false, nil
		}
		e := u.ExpiresAt
		if e <= 0 {
			e = math.MinInt64 // EXPIREAT 0, EXPIRE -1: in the past
		}
		const inf = math.MaxInt64
		have := exp
		if have == 0 {
			have = inf
		}
		switch u.ExpCnd {
		case ExpireNoExpiry:
			if exp != 0 {
				return entry{}, false, nil
			}
		case ExpireHasExpiry:
			if exp == 0 {
				return entry{}, false, nil
			}
		case ExpireGreater:
			if e <= have { // never for a key without expiry (infinite)
				return entry{}, false, nil
			}
		case ExpireLess:
			if e >= have {
				return entry{}, false, nil
			}
		}
		res.Applied = true
		if e <= now {
			res.ExpiresAt = 0
			return entry{key: k, del: true}, true, nil
		}
		return put(cur, e)
	case OpPersist:
		if !found || exp == 0 {
			return entry{}, false, nil
		}
		res.Applied = true
		return put(cur, 0)
	case OpGetDel:
		old()
		if !found {
			return entry{}, false, nil
		}
		res.Applied, res.ExpiresAt = true, 0
		return entry{key: k, del: true}, true, nil
	case OpGetEx:
		old()
		if !found {
			return entry{}, false, nil
		}
		res.Applied = true
		switch {
		case u.Persist && exp != 0:
			return put(cur, 0)
		case u.Persist:
			return entry{}, false, nil
		case u.ExpiresAt < 0:
			res.ExpiresAt = 0
			return entry{key: k, del: true}, true, nil
		case u.ExpiresAt != 0:
			return put(cur, u.ExpiresAt)
		}
		return entry{}, false, nil
	}
	return entry{}, false, fmt.Errorf("%w: unknown op %d", ErrBadUpdate, u.Op)
}

// parseRedisInt parses v as Redis's string2ll does: an optional '-', then
// base-10 digits without leading zeros ("0" itself excepted, "-0" not), no
// '+', no spaces, within the signed 64-bit range.
func parseRedisInt(v []byte) (int64, error) {
	bad := func() (int64, error) {
		const show = 32
		if len(v) > show {
			return 0, fmt.Errorf("%w: %q...", ErrNotInteger, v[:show])
		}
		return 0, fmt.Errorf("%w: %q", ErrNotInteger, v)
	}
	if len(v) == 0 || len(v) > 20 {
		return bad()
	}
	digits := v
	if digits[0] == '-' {
		digits = digits[1:]
	}
	if len(digits) == 0 || (digits[0] == '0' && len(v) > 1) {
		return bad()
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return bad()
		}
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		return bad()
	}
	return n, nil
}
