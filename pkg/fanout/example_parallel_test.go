package fanout_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/slotkv/slotkv/pkg/fanout"
)

// examplePartitionOf places a key in one of n partitions.
func examplePartitionOf(key string, n int) int {
	h := 0
	for _, c := range []byte(key) {
		h = h*31 + int(c)
	}
	return h % n
}

// Scatter a multi-get over 3 partitions: the mapper sends each partition
// only its own keys (and skips a partition that has none), the merger
// gathers the answers into one map.
func ExampleParallel() {
	const parts = 3
	keys := []string{"apple", "banana", "cherry", "date", "elder", "fig"}

	// Each partition is an in-memory store here; in slotkv it is a gRPC
	// client method wrapped in fanout.Func.
	stores := make([]map[string]string, parts)
	for i := range stores {
		stores[i] = map[string]string{}
	}
	for _, k := range keys {
		stores[examplePartitionOf(k, parts)][k] = "value of " + k
	}

	p := fanout.NewParallel(fanout.ParallelOptions[[]string, map[string]string]{
		Mapper: func(i, n int, req []string) ([]string, error) {
			var mine []string
			for _, k := range req {
				if examplePartitionOf(k, n) == i {
					mine = append(mine, k)
				}
			}
			if len(mine) == 0 {
				return nil, fanout.ErrSkip // nothing to ask this partition
			}
			return mine, nil
		},
		Merger: func(acc map[string]string, i int, sub map[string]string) (map[string]string, fanout.MergeResult) {
			if acc == nil {
				acc = map[string]string{}
			}
			maps.Copy(acc, sub)
			return acc, fanout.MergeOK
		},
	})
	for i, store := range stores {
		p.Add(fmt.Sprint("part", i), fanout.Func[[]string, map[string]string](
			func(ctx context.Context, keys []string) (map[string]string, error) {
				found := map[string]string{}
				for _, k := range keys {
					if v, ok := store[k]; ok {
						found[k] = v
					}
				}
				return found, nil
			}))
	}

	got, rep, err := p.CallReport(context.Background(), []string{"apple", "fig", "cherry"})
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	for _, k := range slices.Sorted(maps.Keys(got)) {
		fmt.Printf("%s = %s\n", k, got[k])
	}
	for _, s := range rep.Subs {
		fmt.Printf("%s skipped=%v failed=%v\n", s.Name, s.Skipped, s.Err != nil)
	}
	// Output:
	// apple = value of apple
	// cherry = value of cherry
	// fig = value of fig
	// part0 skipped=true failed=false
	// part1 skipped=false failed=false
	// part2 skipped=false failed=false
}

// FailLimit decides how many failed sub-calls fail the call: below it the
// call succeeds with a partial result, at it the call fails and the
// sub-calls still running are cancelled.
func ExampleParallel_failLimit() {
	errRefused := errors.New("connection refused")
	replica := func(up bool) fanout.Func[string, int] {
		return func(ctx context.Context, key string) (int, error) {
			if !up {
				return 0, errRefused
			}
			return 1, nil
		}
	}
	count := func(acc int, i int, sub int) (int, fanout.MergeResult) { return acc + sub, fanout.MergeOK }

	for _, limit := range []int{2, 1} {
		p := fanout.NewParallel(fanout.ParallelOptions[string, int]{Merger: count, FailLimit: limit})
		p.Add("r1", replica(true))
		p.Add("r2", replica(false))
		p.Add("r3", replica(true))

		n, rep, err := p.CallReport(context.Background(), "key")
		fmt.Printf("FailLimit %d: answers=%d partial=%v failed=%v err=%v\n", limit, n, rep.Partial(), rep.Failed, err)
		fmt.Println("  is connection refused:", errors.Is(err, errRefused))
	}
	// Output:
	// FailLimit 2: answers=2 partial=true failed=[1] err=<nil>
	//   is connection refused: false
	// FailLimit 1: answers=0 partial=true failed=[1] err=fanout: 1 of 3 sub-calls failed: r2: connection refused
	//   is connection refused: true
}

// Go starts a call and returns a Future; Cancel ends it and every sub-call
// still running.
func ExampleParallel_Go() {
	p := fanout.NewParallel(fanout.ParallelOptions[string, string]{})
	started := make(chan struct{})
	p.Add("slow", fanout.Func[string, string](func(ctx context.Context, req string) (string, error) {
		close(started)
		<-ctx.Done() // a sub-channel honours its context
		return "", ctx.Err()
	}))

	f := p.Go(context.Background(), "req")
	<-started
	f.Cancel()
	_, err := f.Wait()
	fmt.Println(err)
	fmt.Println(errors.Is(err, context.Canceled))
	// Output:
	// fanout: context canceled before 1 of 1 sub-calls answered: slow
	// true
}
