package robustness

import (
	"fmt"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// Kind is what an operation does.
type Kind uint8

// The operations of the register model.
const (
	Get Kind = iota
	Put
	Delete
)

func (k Kind) String() string {
	switch k {
	case Get:
		return "get"
	case Put:
		return "put"
	case Delete:
		return "delete"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Input is an operation as the client sent it.
type Input struct {
	Kind  Kind
	Key   string
	Value string // Put only
}

// Output is what the store answered.
type Output struct {
	Found bool   // Get: the key exists
	Value string // Get: its value
	// Ambiguous marks a write whose outcome is unknown (error, timeout).
	Ambiguous bool
}

// never is the return time of an ambiguous write: later than any real
// call, so its effect may fall anywhere after its call.
const never = math.MaxInt64

// History collects the operations of concurrent clients. Its zero value is
// not usable: use NewHistory.
type History struct {
	start time.Time

	mu          sync.Mutex
	ops         []porcupine.Operation
	ambiguous   int
	failedReads int
}

// NewHistory starts a history; times are taken relative to now.
func NewHistory() *History { return &History{start: time.Now()} }

// Now is the current time on the history's clock: take it just before a
// call is sent.
func (h *History) Now() int64 { return int64(time.Since(h.start)) }

// Record adds one operation of client that was called at call (from Now)
// and has just returned out, or err. A failed write is kept as ambiguous;
// a failed read is dropped (it observed nothing).
func (h *History) Record(client int, in Input, call int64, out Output, err error) {
	ret := h.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		if in.Kind == Get {
			h.failedReads++
			return
		}
		h.ambiguous++
		out, ret = Output{Ambiguous: true}, never
	}
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret})
}

// Stats are a history's counts.
type Stats struct {
	Ops         int // recorded operations (ambiguous writes included)
	Ambiguous   int // writes whose outcome is unknown
	FailedReads int // reads that returned an error (not recorded)
}

// Stats counts the history so far.
func (h *History) Stats() Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	return Stats{Ops: len(h.ops), Ambiguous: h.ambiguous, FailedReads: h.failedReads}
}

// Operations is a copy of the recorded operations.
func (h *History) Operations() []porcupine.Operation {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]porcupine.Operation(nil), h.ops...)
}

// state is one key's register: absent, or holding a value.
type state struct {
	found bool
	value string
}

// Model is the per-key register model, partitioned by key so that each
// key's history is checked on its own.
var Model = porcupine.Model{
	Partition: func(ops []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		for _, op := range ops {
			k := op.Input.(Input).Key
			byKey[k] = append(byKey[k], op)
		}
		keys := make([]string, 0, len(byKey))
		for k := range byKey {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, len(keys))
		for i, k := range keys {
			out[i] = byKey[k]
		}
		return out
	},
	Init: func() any { return state{} },
	Step: func(st, input, output any) (bool, any) {
		s, in, out := st.(state), input.(Input), output.(Output)
		switch in.Kind {
		case Put:
			return true, state{found: true, value: in.Value}
		case Delete:
			return true, state{}
		default:
			return out.Found == s.found && (!s.found || out.Value == s.value), s
		}
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(Input), output.(Output)
		switch {
		case out.Ambiguous:
			return fmt.Sprintf("%s(%q, %q) -> ?", in.Kind, in.Key, in.Value)
		case in.Kind == Get && !out.Found:
			return fmt.Sprintf("get(%q) -> absent", in.Key)
		case in.Kind == Get:
			return fmt.Sprintf("get(%q) -> %q", in.Key, out.Value)
		case in.Kind == Put:
			return fmt.Sprintf("put(%q, %q)", in.Key, in.Value)
		}
		return fmt.Sprintf("delete(%q)", in.Key)
	},
	DescribeState: func(st any) string {
		if s := st.(state); s.found {
			return fmt.Sprintf("%q", s.value)
		}
		return "absent"
	},
}

// Result is the verdict on a history.
type Result struct {
	Stats
	// Verdict is porcupine's: Ok, Illegal, or Unknown when the check ran
	// out of time.
	Verdict porcupine.CheckResult
	// Visualization is the HTML file of porcupine's visualization, written
	// when the verdict is not Ok and a path was given.
	Visualization string
}

// Linearizable reports whether the checker proved the history linearizable.
func (r Result) Linearizable() bool { return r.Verdict == porcupine.Ok }

// Check runs porcupine on the history for at most timeout. When the
// history is not proved linearizable and vizPath is set, porcupine's
// visualization (every partial linearization, the failing operations
// marked) is written there.
func (h *History) Check(timeout time.Duration, vizPath string) (Result, error) {
	res := Result{Stats: h.Stats()}
	verdict, info := porcupine.CheckOperationsVerbose(Model, h.Operations(), timeout)
	res.Verdict = verdict
	if verdict != porcupine.Ok && vizPath != "" {
		if err := porcupine.VisualizePath(Model, info, vizPath); err != nil {
			return res, fmt.Errorf("write visualization %s: %w", vizPath, err)
		}
		res.Visualization = vizPath
	}
	return res, nil
}
