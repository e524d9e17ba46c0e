package resp

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/match"

	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/slot"
)

// nowMs is the clock expiries are computed from.
func nowMs() int64 { return time.Now().UnixMilli() }

func parseInt(b []byte) (int64, bool) {
	n, err := strconv.ParseInt(string(b), 10, 64)
	return n, err == nil
}

// upper is an option argument in upper case.
func upper(b []byte) string { return strings.ToUpper(string(b)) }

// expiry turns an EX/PX/EXAT/PXAT argument into Unix milliseconds;
// msPer is 1000 for seconds, abs for an absolute time. Redis refuses a
// non-positive value and one that overflows: "invalid expire time in
// '<cmd>' command".
func expiry(cmd string, arg []byte, msPer int64, abs bool) (int64, error) {
	n, ok := parseInt(arg)
	if !ok {
		return 0, Error(errNotInteger)
	}
	bad := Error(fmt.Sprintf("ERR invalid expire time in '%s' command", cmd))
	if n <= 0 || n > math.MaxInt64/msPer {
		return 0, bad
	}
	ms := n * msPer
	if !abs {
		now := nowMs()
		if ms > math.MaxInt64-now {
			return 0, bad
		}
		ms += now
	}
	return ms, nil
}

func cmdGet(x *call) error {
	v, err := x.backend().Get(x.ctx, x.args[1])
	if err != nil {
		return err
	}
	x.w.value(v)
	return nil
}

// cmdSet is SET key value [NX|XX] [GET] [EX s|PX ms|EXAT ts|PXAT ts|KEEPTTL].
func cmdSet(x *call) error {
	key, val := x.args[1], x.args[2]
	if err := x.checkValue(val); err != nil {
		return err
	}
	req := &storagev1.UpdateRequest{Key: key, Op: storagev1.UpdateOp_UPDATE_OP_SET, Value: val}
	var ttlSet bool
	for i := 3; i < len(x.args); i++ {
		opt := upper(x.args[i])
		switch opt {
		case "NX", "XX":
			if req.Condition != storagev1.WriteCondition_WRITE_CONDITION_UNSPECIFIED {
				return Error(errSyntax)
			}
			req.Condition = storagev1.WriteCondition_WRITE_CONDITION_IF_ABSENT
			if opt == "XX" {
				req.Condition = storagev1.WriteCondition_WRITE_CONDITION_IF_PRESENT
			}
		case "GET":
			req.ReturnOld = true
		case "KEEPTTL":
			if ttlSet {
				return Error(errSyntax)
			}
			ttlSet, req.KeepTtl = true, true
		case "EX", "PX", "EXAT", "PXAT":
			if ttlSet || i+1 >= len(x.args) {
				return Error(errSyntax)
			}
			i++
			per := int64(1000)
			if opt[0] == 'P' {
				per = 1
			}
			ms, err := expiry("set", x.args[i], per, strings.HasSuffix(opt, "AT"))
			if err != nil {
				return err
			}
			ttlSet, req.ExpiresAtMs = true, ms
		default:
			return Error(errSyntax)
		}
	}
	if req.Condition == storagev1.WriteCondition_WRITE_CONDITION_UNSPECIFIED && !req.ReturnOld && !req.KeepTtl {
		// A plain write needs no read: the node's Put.
		if err := x.backend().Set(x.ctx, key, val, req.ExpiresAtMs); err != nil {
			return err
		}
		x.w.ok()
		return nil
	}
	resp, err := x.backend().Update(x.ctx, req)
	if err != nil {
		return err
	}
	switch {
	case req.ReturnOld:
		x.w.value(Value{Data: resp.GetOldValue(), Found: resp.GetOldFound()})
	case resp.GetApplied():
		x.w.ok()
	default:
		x.w.null()
	}
	return nil
}

func cmdSetNX(x *call) error {
	if err := x.checkValue(x.args[2]); err != nil {
		return err
	}
	resp, err := x.backend().Update(x.ctx, &storagev1.UpdateRequest{Key: x.args[1], Op: storagev1.UpdateOp_UPDATE_OP_SET,
		Value: x.args[2], Condition: storagev1.WriteCondition_WRITE_CONDITION_IF_ABSENT})
	if err != nil {
		return err
	}
	x.w.int(boolInt(resp.GetApplied()))
	return nil
}

func cmdSetEX(x *call) error  { return setWithTTL(x, "setex", 1000) }
func cmdPSetEX(x *call) error { return setWithTTL(x, "psetex", 1) }

// setWithTTL is SETEX/PSETEX key ttl value.
func setWithTTL(x *call, name string, per int64) error {
	ms, err := expiry(name, x.args[2], per, false)
	if err != nil {
		return err
	}
	if err := x.checkValue(x.args[3]); err != nil {
		return err
	}
	if err := x.backend().Set(x.ctx, x.args[1], x.args[3], ms); err != nil {
		return err
	}
	x.w.ok()
	return nil
}

func cmdGetSet(x *call) error {
	if err := x.checkValue(x.args[2]); err != nil {
		return err
	}
	resp, err := x.backend().Update(x.ctx, &storagev1.UpdateRequest{Key: x.args[1], Op: storagev1.UpdateOp_UPDATE_OP_SET,
		Value: x.args[2], ReturnOld: true})
	if err != nil {
		return err
	}
	x.w.value(Value{Data: resp.GetOldValue(), Found: resp.GetOldFound()})
	return nil
}

func cmdGetDel(x *call) error {
	resp, err := x.backend().Update(x.ctx, &storagev1.UpdateRequest{Key: x.args[1], Op: storagev1.UpdateOp_UPDATE_OP_GET_DEL})
	if err != nil {
		return err
	}
	x.w.value(Value{Data: resp.GetOldValue(), Found: resp.GetOldFound()})
	return nil
}

// cmdGetEx is GETEX key [EX s|PX ms|EXAT ts|PXAT ts|PERSIST].
func cmdGetEx(x *call) error {
	req := &storagev1.UpdateRequest{Key: x.args[1], Op: storagev1.UpdateOp_UPDATE_OP_GET_EX}
	set := false
	for i := 2; i < len(x.args); i++ {
		opt := upper(x.args[i])
		switch opt {
		case "PERSIST":
			if set {
				return Error(errSyntax)
			}
			set, req.Persist = true, true
		case "EX", "PX", "EXAT", "PXAT":
			if set || i+1 >= len(x.args) {
				return Error(errSyntax)
			}
			i++
			per := int64(1000)
			if opt[0] == 'P' {
				per = 1
			}
			ms, err := expiry("getex", x.args[i], per, strings.HasSuffix(opt, "AT"))
			if err != nil {
				return err
			}
			set, req.ExpiresAtMs = true, ms
		default:
			return Error(errSyntax)
		}
	}
	if !set {
		// GETEX without options is GET: no write needed.
		return cmdGet(x)
	}
	resp, err := x.backend().Update(x.ctx, req)
	if err != nil {
		return err
	}
	x.w.value(Value{Data: resp.GetOldValue(), Found: resp.GetOldFound()})
	return nil
}

func cmdMGet(x *call) error {
	vs, err := x.backend().MGet(x.ctx, x.args[1:])
	if err != nil {
		return err
	}
	x.w.array(len(vs))
	for _, v := range vs {
		x.w.value(v)
	}
	return nil
}

// pairs reads MSET's key value ... arguments.
func pairs(x *call) ([]Pair, error) {
	if (len(x.args)-1)%2 != 0 {
		return nil, Error(fmt.Sprintf("ERR wrong number of arguments for '%s' command", x.spec.name))
	}
	ps := make([]Pair, 0, (len(x.args)-1)/2)
	for i := 1; i < len(x.args); i += 2 {
		if err := x.checkValue(x.args[i+1]); err != nil {
			return nil, err
		}
		ps = append(ps, Pair{Key: x.args[i], Value: x.args[i+1]})
	}
	return ps, nil
}

func cmdMSet(x *call) error {
	ps, err := pairs(x)
	if err != nil {
		return err
	}
	if _, err := x.backend().MSet(x.ctx, ps, false); err != nil {
		return err
	}
	x.w.ok()
	return nil
}

// cmdMSetNX needs its keys in one slot in both modes: the check and the
// writes are one atomic batch on one node, which keys spread over nodes
// cannot have.
func cmdMSetNX(x *call) error {
	ps, err := pairs(x)
	if err != nil {
		return err
	}
	s := slot.Of(ps[0].Key)
	for _, p := range ps[1:] {
		if slot.Of(p.Key) != s {
			return Error("CROSSSLOT Keys in request don't hash to the same slot")
		}
	}
	applied, err := x.backend().MSet(x.ctx, ps, true)
	if err != nil {
		return err
	}
	x.w.int(boolInt(applied))
	return nil
}

// incrBy is INCR/DECR (sign, no argument) and INCRBY/DECRBY (sign times
// the argument).
func incrBy(sign int64, withArg bool) func(*call) error {
	return func(x *call) error {
		delta := sign
		if withArg {
			n, ok := parseInt(x.args[2])
			if !ok {
				return Error(errNotInteger)
			}
			if sign < 0 {
				if n == math.MinInt64 {
					return Error("ERR decrement would overflow")
				}
				n = -n
			}
			delta = n
		}
		resp, err := x.backend().Update(x.ctx, &storagev1.UpdateRequest{Key: x.args[1], Op: storagev1.UpdateOp_UPDATE_OP_INCR_BY, Delta: delta})
		if err != nil {
			return err
		}
		x.w.int(resp.GetNewInt())
		return nil
	}
}

func cmdAppend(x *call) error {
	if err := x.checkValue(x.args[2]); err != nil {
		return err
	}
	resp, err := x.backend().Update(x.ctx, &storagev1.UpdateRequest{Key: x.args[1], Op: storagev1.UpdateOp_UPDATE_OP_APPEND, Value: x.args[2]})
	if err != nil {
		return err
	}
	x.w.int(int64(resp.GetNewLength()))
	return nil
}

func cmdStrlen(x *call) error {
	v, err := x.backend().Get(x.ctx, x.args[1])
	if err != nil {
		return err
	}
	x.w.int(int64(len(v.Data)))
	return nil
}

func cmdDel(x *call) error {
	n, err := x.backend().Del(x.ctx, x.args[1:])
	if err != nil {
		return err
	}
	x.w.int(n)
	return nil
}

// cmdExists counts a key once per time it is named, as Redis does.
func cmdExists(x *call) error {
	vs, err := x.backend().MGet(x.ctx, x.args[1:])
	if err != nil {
		return err
	}
	var n int64
	for _, v := range vs {
		if v.Found {
			n++
		}
	}
	x.w.int(n)
	return nil
}

// expireCmd is EXPIRE/PEXPIRE/EXPIREAT/PEXPIREAT key time [NX|XX|GT|LT].
func expireCmd(msPer int64, abs bool) func(*call) error {
	return func(x *call) error {
		n, ok := parseInt(x.args[2])
		if !ok {
			return Error(errNotInteger)
		}
		bad := Error(fmt.Sprintf("ERR invalid expire time in '%s' command", x.spec.name))
		if n > math.MaxInt64/msPer || n < math.MinInt64/msPer {
			return bad
		}
		ms := n * msPer
		if !abs {
			now := nowMs()
			if ms > 0 && ms > math.MaxInt64-now {
				return bad
			}
			ms += now
		}
		// A time already past deletes the key (the node's contract); 0
		// would mean "no expiry".
		ms = max(ms, 1)
		req := &storagev1.UpdateRequest{Key: x.args[1], Op: storagev1.UpdateOp_UPDATE_OP_EXPIRE, ExpiresAtMs: ms}
		var nx, xx, gt, lt bool
		for _, a := range x.args[3:] {
			switch upper(a) {
			case "NX":
				nx = true
			case "XX":
				xx = true
			case "GT":
				gt = true
			case "LT":
				lt = true
			default:
				return Error("ERR Unsupported option " + clip(a))
			}
		}
		switch {
		case nx && (xx || gt || lt):
			return Error("ERR NX and XX, GT or LT options at the same time are not compatible")
		case gt && lt:
			return Error("ERR GT and LT options at the same time are not compatible")
		case nx:
			req.ExpireCondition = storagev1.ExpireCondition_EXPIRE_CONDITION_NO_EXPIRY
		case xx && gt:
			// XX GT: only a key with an expiry, and only later. GT alone
			// treats "no expiry" as infinite and so never applies to it,
			// which is XX GT already.
			req.ExpireCondition = storagev1.ExpireCondition_EXPIRE_CONDITION_GREATER
		case gt:
			req.ExpireCondition = storagev1.ExpireCondition_EXPIRE_CONDITION_GREATER
		case xx && lt:
			// Needs both: an expiry, and an earlier one. The node has one
			// condition per call; LT applies to keys without expiry, so
			// read first, and leave keys without one alone.
			v, err := x.backend().Get(x.ctx, x.args[1])
			if err != nil {
				return err
			}
			if !v.Found || v.ExpiresAtMs == 0 {
				x.w.int(0)
				return nil
			}
			req.ExpireCondition = storagev1.ExpireCondition_EXPIRE_CONDITION_LESS
		case lt:
			req.ExpireCondition = storagev1.ExpireCondition_EXPIRE_CONDITION_LESS
		case xx:
			req.ExpireCondition = storagev1.ExpireCondition_EXPIRE_CONDITION_HAS_EXPIRY
		}
		resp, err := x.backend().Update(x.ctx, req)
		if err != nil {
			return err
		}
		x.w.int(boolInt(resp.GetApplied()))
		return nil
	}
}

// ttlCmd is TTL/PTTL (remaining time) and EXPIRETIME/PEXPIRETIME
// (absolute): -2 for a missing key, -1 for a key without expiry.
func ttlCmd(msPer int64, abs bool) func(*call) error {
	return func(x *call) error {
		v, err := x.backend().Get(x.ctx, x.args[1])
		if err != nil {
			return err
		}
		switch {
		case !v.Found:
			x.w.int(-2)
		case v.ExpiresAtMs == 0:
			x.w.int(-1)
		case abs:
			x.w.int(v.ExpiresAtMs / msPer)
		default:
			left := max(v.ExpiresAtMs-nowMs(), 0)
			// Redis rounds TTL to the nearest second.
			x.w.int((left + msPer/2) / msPer)
		}
		return nil
	}
}

func cmdPersist(x *call) error {
	resp, err := x.backend().Update(x.ctx, &storagev1.UpdateRequest{Key: x.args[1], Op: storagev1.UpdateOp_UPDATE_OP_PERSIST})
	if err != nil {
		return err
	}
	x.w.int(boolInt(resp.GetApplied()))
	return nil
}

func cmdType(x *call) error {
	v, err := x.backend().Get(x.ctx, x.args[1])
	if err != nil {
		return err
	}
	if v.Found {
		x.w.status("string")
	} else {
		x.w.status("none")
	}
	return nil
}

// literalPrefix is the part of a glob pattern before its first special
// character: the scan prefix that narrows what the nodes read.
func literalPrefix(pattern string) []byte {
	i := strings.IndexAny(pattern, `*?[\`)
	if i < 0 {
		i = len(pattern)
	}
	return []byte(pattern[:i])
}

// cmdScan is SCAN cursor [MATCH pattern] [COUNT n] [TYPE type].
func cmdScan(x *call) error {
	id, err := strconv.ParseUint(string(x.args[1]), 10, 64)
	if err != nil {
		return Error("ERR invalid cursor")
	}
	count, pattern, typ := 10, "", ""
	for i := 2; i < len(x.args); i += 2 {
		if i+1 >= len(x.args) {
			return Error(errSyntax)
		}
		switch upper(x.args[i]) {
		case "MATCH":
			pattern = string(x.args[i+1])
		case "COUNT":
			n, ok := parseInt(x.args[i+1])
			if !ok {
				return Error(errNotInteger)
			}
			if n < 1 {
				return Error(errSyntax)
			}
			count = int(min(n, 10000))
		case "TYPE":
			typ = strings.ToLower(string(x.args[i+1]))
		default:
			return Error(errSyntax)
		}
	}
	var from []byte
	if id != 0 {
		var ok bool
		if from, ok = x.s.cursors.get(id); !ok {
			return Error("ERR invalid cursor")
		}
	}
	var keys [][]byte
	var next []byte
	if typ == "" || typ == "string" {
		keys, next, err = x.backend().Scan(x.ctx, from, literalPrefix(pattern), count)
		if err != nil {
			return err
		}
	}
	if pattern != "" {
		kept := keys[:0]
		for _, k := range keys {
			if match.Match(string(k), pattern) {
				kept = append(kept, k)
			}
		}
		keys = kept
	}
	cursor := uint64(0)
	if next != nil {
		cursor = x.s.cursors.put(next)
	}
	x.w.array(2)
	x.w.bulkString(strconv.FormatUint(cursor, 10))
	x.w.array(len(keys))
	for _, k := range keys {
		x.w.bulk(k)
	}
	return nil
}

// cmdKeys is KEYS pattern: a full scan, page by page.
func cmdKeys(x *call) error {
	pattern := string(x.args[1])
	prefix := literalPrefix(pattern)
	var out [][]byte
	var from []byte
	for {
		keys, next, err := x.backend().Scan(x.ctx, from, prefix, 1000)
		if err != nil {
			return err
		}
		for _, k := range keys {
			if match.Match(string(k), pattern) {
				out = append(out, k)
			}
		}
		if next == nil {
			break
		}
		from = next
	}
	x.w.array(len(out))
	for _, k := range out {
		x.w.bulk(k)
	}
	return nil
}

func cmdDBSize(x *call) error {
	n, err := x.backend().DBSize(x.ctx)
	if err != nil {
		return err
	}
	x.w.int(n)
	return nil
}

// cmdFlushAll is FLUSHALL/FLUSHDB [ASYNC|SYNC]; both modes are
// synchronous here.
func cmdFlushAll(x *call) error {
	if len(x.args) > 2 {
		return Error(errSyntax)
	}
	if len(x.args) == 2 {
		if m := upper(x.args[1]); m != "ASYNC" && m != "SYNC" {
			return Error(errSyntax)
		}
	}
	if err := x.backend().FlushAll(x.ctx); err != nil {
		return err
	}
	x.w.ok()
	return nil
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}
