package fanout

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// BenchmarkSelectiveCall measures the channel's own cost: the sub-channels
// answer at once from memory.
func BenchmarkSelectiveCall(b *testing.B) {
	ok := func(name string) Channel[uint64, string] {
		return Func[uint64, string](func(context.Context, uint64) (string, error) { return name, nil })
	}
	failing := Func[uint64, string](func(context.Context, uint64) (string, error) { return "", errors.New("down") })
	key := func(r uint64) uint64 { return r }
	tests := []struct {
		name  string
		o     SelectiveOptions[uint64]
		first Channel[uint64, string] // sub 0; nil: answers
	}{
		{"round-robin", SelectiveOptions[uint64]{}, nil},
		{"weighted-random", SelectiveOptions[uint64]{Balancer: WeightedRandom()}, nil},
		{"consistent-hash", SelectiveOptions[uint64]{Balancer: ConsistentHash(0), Key: key}, nil},
		{"latency-aware", SelectiveOptions[uint64]{Balancer: LatencyAware()}, nil},
		{"timeout", SelectiveOptions[uint64]{Timeout: time.Second}, nil},
		{"retry-after-failure", SelectiveOptions[uint64]{Balancer: selFirstFree{}, MaxRetry: 2}, failing},
		{"backup-armed", SelectiveOptions[uint64]{BackupDelay: time.Hour}, nil},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			s := NewSelective[uint64, string](tt.o)
			for i := range 3 {
				ch := ok(fmt.Sprint("s", i))
				if i == 0 && tt.first != nil {
					ch = tt.first
				}
				_ = s.Add(fmt.Sprint("s", i), ch, i+1)
			}
			ctx := context.Background()
			b.ReportAllocs()
			var i uint64
			for b.Loop() {
				i++
				if _, err := s.Call(ctx, i); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("broadcast-3", func(b *testing.B) {
		s := NewSelective[uint64, string](SelectiveOptions[uint64]{})
		for i := range 3 {
			_ = s.Add(fmt.Sprint("s", i), ok(fmt.Sprint("s", i)), 1)
		}
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.Broadcast(ctx, 1); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("round-robin-parallel", func(b *testing.B) {
		s := NewSelective[uint64, string](SelectiveOptions[uint64]{})
		for i := range 3 {
			_ = s.Add(fmt.Sprint("s", i), ok(fmt.Sprint("s", i)), 1)
		}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			ctx := context.Background()
			for pb.Next() {
				if _, err := s.Call(ctx, 1); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}
