package robustness

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// op is one operation of a hand-written history: client, input, output,
// call and return times (ret < 0: the call failed).
type op struct {
	client    int
	in        Input
	out       Output
	call, ret int64
}

func check(t *testing.T, ops []op, viz string) Result {
	t.Helper()
	h := NewHistory()
	for _, o := range ops {
		var err error
		if o.ret < 0 {
			err = errors.New("deadline exceeded")
		}
		h.mu.Lock()
		if err != nil && o.in.Kind == Get {
			h.failedReads++
		} else if err != nil {
			h.ambiguous++
			h.ops = append(h.ops, porcupine.Operation{ClientId: o.client, Input: o.in, Call: o.call, Output: Output{Ambiguous: true}, Return: never})
		} else {
			h.ops = append(h.ops, porcupine.Operation{ClientId: o.client, Input: o.in, Call: o.call, Output: o.out, Return: o.ret})
		}
		h.mu.Unlock()
	}
	res, err := h.Check(10*time.Second, viz)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func put(c int, k, v string, call, ret int64) op {
	return op{client: c, in: Input{Kind: Put, Key: k, Value: v}, call: call, ret: ret}
}
func del(c int, k string, call, ret int64) op {
	return op{client: c, in: Input{Kind: Delete, Key: k}, call: call, ret: ret}
}
func get(c int, k, v string, call, ret int64) op {
	return op{client: c, in: Input{Kind: Get, Key: k}, out: Output{Found: v != "", Value: v}, call: call, ret: ret}
}

func TestCheck(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		ops  []op
		ok   bool
	}{
		{"sequential", []op{put(0, "a", "1", 0, 1), get(1, "a", "1", 2, 3), del(0, "a", 4, 5), get(1, "a", "", 6, 7)}, true},
		{"concurrent read sees either", []op{put(0, "a", "1", 0, 1), put(0, "a", "2", 2, 10), get(1, "a", "1", 3, 4), get(1, "a", "2", 5, 6)}, true},
		{"stale read after acknowledged write", []op{put(0, "a", "1", 0, 1), put(0, "a", "2", 2, 3), get(1, "a", "1", 4, 5)}, false},
		{"lost write", []op{put(0, "a", "1", 0, 1), get(1, "a", "", 2, 3)}, false},
		{"resurrected delete", []op{put(0, "a", "1", 0, 1), del(0, "a", 2, 3), get(1, "a", "1", 4, 5)}, false},
		{"read goes back in time", []op{put(0, "a", "1", 0, 1), put(0, "a", "2", 2, 20), get(1, "a", "2", 3, 4), get(1, "a", "1", 5, 6)}, false},
		{"ambiguous write applied", []op{put(0, "a", "1", 0, 1), put(0, "a", "2", 2, -1), get(1, "a", "2", 10, 11)}, true},
		{"ambiguous write not applied", []op{put(0, "a", "1", 0, 1), put(0, "a", "2", 2, -1), get(1, "a", "1", 10, 11)}, true},
		{"ambiguous write applied late, then read old", []op{put(0, "a", "1", 0, 1), put(0, "a", "2", 2, -1), get(1, "a", "2", 10, 11), get(1, "a", "1", 12, 13)}, false},
		{"ambiguous write before its call", []op{put(0, "a", "1", 0, 1), get(1, "a", "2", 2, 3), put(0, "a", "2", 4, -1)}, false},
		{"failed read observes nothing", []op{put(0, "a", "1", 0, 1), get(1, "a", "zzz", 2, -1)}, true},
		{"keys are independent", []op{put(0, "a", "1", 0, 1), put(1, "b", "1", 0, 1), get(2, "b", "1", 2, 3), get(2, "a", "1", 2, 3)}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			viz := filepath.Join(t.TempDir(), "viz.html")
			res := check(t, tc.ops, viz)
			if res.Linearizable() != tc.ok {
				t.Fatalf("verdict %s, want linearizable=%v", res.Verdict, tc.ok)
			}
			if !tc.ok {
				if st, err := os.Stat(viz); err != nil || st.Size() == 0 {
					t.Fatalf("no visualization of the violation at %s: %v", viz, err)
				}
			}
		})
	}
}

// TestRecord: failed writes are ambiguous, failed reads dropped.
func TestRecord(t *testing.T) {
	t.Parallel()
	h := NewHistory()
	h.Record(0, Input{Kind: Put, Key: "a", Value: "1"}, h.Now(), Output{}, nil)
	h.Record(0, Input{Kind: Put, Key: "a", Value: "2"}, h.Now(), Output{}, errors.New("unavailable"))
	h.Record(1, Input{Kind: Get, Key: "a"}, h.Now(), Output{}, errors.New("unavailable"))
	h.Record(1, Input{Kind: Get, Key: "a"}, h.Now(), Output{Found: true, Value: "2"}, nil)
	if got, want := h.Stats(), (Stats{Ops: 3, Ambiguous: 1, FailedReads: 1}); got != want {
		t.Fatalf("stats %+v, want %+v", got, want)
	}
	res, err := h.Check(10*time.Second, "")
	if err != nil || !res.Linearizable() {
		t.Fatalf("verdict %s (%v), want Ok: the ambiguous put of 2 may have been applied", res.Verdict, err)
	}
}
