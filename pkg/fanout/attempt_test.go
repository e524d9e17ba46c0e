package fanout

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
)

// Each sub-call of a Selective channel sees which attempt it serves: the
// first, a retry after a failure, or a backup request.
func TestAttemptFromContext(t *testing.T) {
	t.Parallel()
	if _, ok := AttemptFromContext(context.Background()); ok {
		t.Fatal("AttemptInfo outside a Selective call")
	}
	tests := []struct {
		name string
		o    SelectiveOptions[string]
		fns  []func(context.Context, string) (string, error)
		want []AttemptInfo
	}{
		{"first answers", SelectiveOptions[string]{Balancer: selFirstFree{}}, []func(context.Context, string) (string, error){nil, nil},
			[]AttemptInfo{{Number: 1}}},
		{"retry after a failure", SelectiveOptions[string]{Balancer: selFirstFree{}, MaxRetry: 1}, []func(context.Context, string) (string, error){selFail(errSelBoom), nil},
			[]AttemptInfo{{Number: 1}, {Number: 2, Retry: true}}},
		{"retry on the hedged path", SelectiveOptions[string]{Balancer: selFirstFree{}, MaxRetry: 1, BackupDelay: time.Hour}, []func(context.Context, string) (string, error){selFail(errSelBoom), nil},
			[]AttemptInfo{{Number: 1}, {Number: 2, Retry: true}}},
		{"backup request", SelectiveOptions[string]{Balancer: selFirstFree{}, BackupDelay: time.Millisecond, BackupMaxRatio: 1}, []func(context.Context, string) (string, error){
			func(ctx context.Context, _ string) (string, error) { <-ctx.Done(); return "", ctx.Err() }, nil},
			[]AttemptInfo{{Number: 1}, {Number: 2, Backup: true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			var seen []AttemptInfo
			fns := make([]func(context.Context, string) (string, error), len(tt.fns))
			for i, fn := range tt.fns {
				fns[i] = func(ctx context.Context, req string) (string, error) {
					a, ok := AttemptFromContext(ctx)
					if !ok {
						t.Error("sub-call without AttemptInfo")
					}
					mu.Lock()
					seen = append(seen, a)
					mu.Unlock()
					if fn != nil {
						return fn(ctx, req)
					}
					return "ok", nil
				}
			}
			s, _, _ := newSelTest(t, tt.o, fns...)
			if _, err := s.Call(context.Background(), "x"); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			slices.SortFunc(seen, func(a, b AttemptInfo) int { return a.Number - b.Number })
			if !slices.Equal(seen, tt.want) {
				t.Fatalf("attempts seen %+v, want %+v", seen, tt.want)
			}
		})
	}
}
