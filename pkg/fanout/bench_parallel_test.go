package fanout

import (
	"context"
	"fmt"
	"testing"
)

// parBenchSub is an in-memory sub-channel that answers at once.
func parBenchSub(ctx context.Context, req int) (int, error) { return req, nil }

func parBenchSum(acc int, i int, sub int) (int, MergeResult) { return acc + sub, MergeOK }

// BenchmarkParallelOverhead measures what a Parallel call costs on top of
// its sub-calls: ns/subcall is comparable with BenchmarkDirectCall's.
func BenchmarkParallelOverhead(b *testing.B) {
	for _, n := range []int{1, 3, 8, 32} {
		name := fmt.Sprintf("%dsubs", n)
		if n == 1 {
			name = "1sub"
		}
		b.Run(name, func(b *testing.B) {
			p := NewParallel(ParallelOptions[int, int]{Merger: parBenchSum})
			for i := range n {
				p.Add(fmt.Sprint("s", i), Func[int, int](parBenchSub))
			}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if got, err := p.Call(ctx, 1); err != nil || got != n {
					b.Fatalf("got %d, %v", got, err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/subcall")
		})
	}
}

// BenchmarkDirectCall is the baseline: calling the sub-channel's Func
// directly.
func BenchmarkDirectCall(b *testing.B) {
	var ch Channel[int, int] = Func[int, int](parBenchSub)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if got, err := ch.Call(ctx, 1); err != nil || got != 1 {
			b.Fatalf("got %d, %v", got, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/subcall")
}
