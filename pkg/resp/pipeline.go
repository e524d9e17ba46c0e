package resp

import (
	"context"
	"math"
	"strings"
	"time"

	"github.com/tidwall/redcon"

	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/slot"
)

// Pipelines: a client that pipelines (redis-benchmark -P, go-redis
// Pipeline, any client under load) sends runs of the same command. A run of
// two or more GETs is one MGet, a run of plain SETs and MSETs one MSet, a
// run of INCR/DECR/INCRBY/DECRBY on one key one increment by their sum:
// one call (per node) instead of one per command. The replies are written
// in order, as if the commands had run one by one: a run of writes is
// applied at once, which is one of the orders in which they could have
// run (a key set twice in the run keeps its last value; the increments
// answer the values after each in turn). Anything else, or a batch that
// fails, runs command by command, so every reply and error is exactly the
// one-by-one one.

// maxBatch bounds the commands of one batch call.
const maxBatch = 1000

// batch runs the run of batchable commands at the head of cmds as one
// call and returns how many it answered; 0 means the head runs alone.
func (s *Server) batch(base context.Context, c redcon.Conn, sess *session, cmds []redcon.Command) int {
	if !sess.authed || len(cmds) < 2 {
		return 0
	}
	kind := batchKind(cmds[0].Args)
	if kind == "" {
		return 0
	}
	n := 1
	for n < len(cmds) && n < maxBatch && batchKind(cmds[n].Args) == kind {
		n++
	}
	if n < 2 {
		return 0
	}
	run := cmds[:n]
	for _, cmd := range run {
		// GET and INCR-like commands have one key (then maybe a delta);
		// SET and MSET key value pairs.
		step, end := 1, 2
		if kind == "set" {
			step, end = 2, len(cmd.Args)
		}
		for i := 1; i < end; i += step {
			key := cmd.Args[i]
			if len(key) > s.o.Limits.MaxKeyBytes || (kind == "set" && len(cmd.Args[i+1]) > s.o.Limits.MaxValueBytes) {
				return 0
			}
			if s.o.Cluster != nil && s.o.Cluster.Route(slot.Of(key)) != nil {
				return 0
			}
		}
		if s.o.Cluster != nil && kind == "set" && len(cmd.Args) > 3 && !oneSlot(cmd.Args[1:], 2) {
			return 0 // an MSET across slots is CROSSSLOT on its own
		}
	}
	var deltas []int64
	if kind == "incr" {
		if deltas = incrDeltas(run); deltas == nil {
			return 0
		}
	}
	start := time.Now()
	ctx, span := s.startSpan(base, kind, n)
	ctx, cancel := context.WithTimeout(ctx, s.o.CommandTimeout)
	defer cancel()
	w := &writer{c: c, resp3: sess.resp3, outcome: "ok"}
	var ok bool
	switch kind {
	case "get":
		keys := make([][]byte, n)
		for i, cmd := range run {
			keys[i] = cmd.Args[1]
		}
		var vs []Value
		vs, err := s.o.Backend.MGet(ctx, keys)
		if ok = err == nil && len(vs) == n; ok {
			for _, v := range vs {
				w.value(v)
			}
		}
	case "set":
		// The last value of each key is the one that stays.
		type at struct{ cmd, arg int }
		last := map[string]at{}
		for i, cmd := range run {
			for j := 1; j < len(cmd.Args); j += 2 {
				last[string(cmd.Args[j])] = at{i, j}
			}
		}
		pairs := make([]Pair, 0, len(last))
		for i, cmd := range run {
			for j := 1; j < len(cmd.Args); j += 2 {
				if last[string(cmd.Args[j])] == (at{i, j}) {
					pairs = append(pairs, Pair{Key: cmd.Args[j], Value: cmd.Args[j+1]})
				}
			}
		}
		_, err := s.o.Backend.MSet(ctx, pairs, false)
		if ok = err == nil; ok {
			for range run {
				w.ok()
			}
		}
	case "incr":
		// One increment by the sum; the replies are the values after
		// each increment in turn, as if they had run one by one.
		var sum int64
		for _, d := range deltas {
			sum += d
		}
		resp, err := s.o.Backend.Update(ctx, &storagev1.UpdateRequest{Key: run[0].Args[1],
			Op: storagev1.UpdateOp_UPDATE_OP_INCR_BY, Delta: sum})
		switch {
		case err == nil:
			ok = true
			v := resp.GetNewInt() - sum
			for _, d := range deltas {
				v += d
				w.int(v)
			}
		case replyError(err) != errOverflow:
			// Not run again one by one: an increment whose outcome is
			// unknown (a timeout) must not be applied twice. Every
			// command of the run gets the error, as each would have.
			ok = true
			msg := replyError(err)
			for range run {
				w.err(msg)
			}
		}
		// OVERFLOW: the node refused the sum, so nothing was applied; one
		// by one, the increments that fit are applied.
	}
	if !ok {
		// Nothing was answered: the commands run one by one, counted then.
		span.End()
		return 0
	}
	s.finish(base, span, kind, w.outcome, n, start)
	return n
}

// batchKind is "get" for GET key, "set" for SET key value (no options)
// and MSET, "incr" for INCR/DECR/INCRBY/DECRBY, "" for a command that runs
// alone.
func batchKind(args [][]byte) string {
	name := strings.ToLower(string(args[0]))
	switch {
	case len(args) == 2 && name == "get":
		return "get"
	case len(args) == 3 && name == "set", len(args) >= 3 && len(args)%2 == 1 && name == "mset":
		return "set"
	case len(args) == 2 && (name == "incr" || name == "decr"), len(args) == 3 && (name == "incrby" || name == "decrby"):
		return "incr"
	}
	return ""
}

// incrDeltas is the increment of each command of a run of INCR-like
// commands on one key; nil when they name several keys, an argument is
// not an integer, or the sum would overflow (those run one by one, to get
// their own answers).
func incrDeltas(run []redcon.Command) []int64 {
	out := make([]int64, len(run))
	var sum int64
	for i, cmd := range run {
		if string(cmd.Args[1]) != string(run[0].Args[1]) {
			return nil
		}
		d := int64(1)
		if len(cmd.Args) == 3 {
			var ok bool
			if d, ok = parseInt(cmd.Args[2]); !ok || d == math.MinInt64 {
				return nil
			}
		}
		if name := strings.ToLower(string(cmd.Args[0])); name == "decr" || name == "decrby" {
			d = -d
		}
		if (d > 0 && sum > math.MaxInt64-d) || (d < 0 && sum < math.MinInt64-d) {
			return nil
		}
		sum += d
		out[i] = d
	}
	return out
}

// oneSlot reports whether the keys of args (every step-th from 0) share a
// slot.
func oneSlot(args [][]byte, step int) bool {
	s := slot.Of(args[0])
	for i := step; i < len(args); i += step {
		if slot.Of(args[i]) != s {
			return false
		}
	}
	return true
}
