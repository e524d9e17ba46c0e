package fanout_test

import (
	"context"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/slotkv/slotkv/pkg/fanout"
)

// A Selective over three replicas with consistent hashing: each key has a
// home replica, and removing a replica moves only the keys it held.
func ExampleSelective() {
	s := fanout.NewSelective[string, string](fanout.SelectiveOptions[string]{
		Balancer: fanout.ConsistentHash(0),
		Key: func(key string) uint64 {
			h := fnv.New64a()
			h.Write([]byte(key))
			return h.Sum64()
		},
		MaxRetry: 2,
	})
	for _, name := range []string{"replica-a", "replica-b", "replica-c"} {
		// In slotkv a sub-channel wraps one gRPC client method.
		get := func(ctx context.Context, key string) (string, error) { return key + " from " + name, nil }
		if err := s.Add(name, fanout.Func[string, string](get), 1); err != nil {
			panic(err)
		}
	}
	keys := []string{"user:1", "user:2", "user:3", "user:4", "user:5"}
	call := func() {
		for _, key := range keys {
			resp, err := s.Call(context.Background(), key)
			fmt.Println(resp, err)
		}
	}
	call()
	s.Remove("replica-b")
	fmt.Println("replica-b removed:")
	call()
	// Output:
	// user:1 from replica-c <nil>
	// user:2 from replica-a <nil>
	// user:3 from replica-c <nil>
	// user:4 from replica-b <nil>
	// user:5 from replica-a <nil>
	// replica-b removed:
	// user:1 from replica-c <nil>
	// user:2 from replica-a <nil>
	// user:3 from replica-c <nil>
	// user:4 from replica-a <nil>
	// user:5 from replica-a <nil>
}

// A backup request: the first replica does not answer within BackupDelay,
// so the same request goes to another one, whose answer wins; the first
// attempt is cancelled.
func ExampleSelective_backup() {
	s := fanout.NewSelective[string, string](fanout.SelectiveOptions[string]{
		BackupDelay:    10 * time.Millisecond,
		BackupMaxRatio: 0.1, // at most about one call in ten sends a backup
	})
	stuck := func(ctx context.Context, key string) (string, error) {
		<-ctx.Done() // a replica that hangs until the call gives up on it
		return "", ctx.Err()
	}
	healthy := func(ctx context.Context, key string) (string, error) { return key + " from healthy", nil }
	_ = s.Add("stuck", fanout.Func[string, string](stuck), 1)
	_ = s.Add("healthy", fanout.Func[string, string](healthy), 1)

	resp, rep, err := s.CallReport(context.Background(), "user:1")
	fmt.Println(resp, err)
	for _, a := range rep.Attempts {
		fmt.Printf("%-7s backup=%-5v won=%-5v canceled=%-5v err=%v\n", a.Name, a.Backup, a.Won, a.Canceled, a.Err)
	}
	fmt.Printf("%+v\n", s.Stats())
	// Output:
	// user:1 from healthy <nil>
	// stuck   backup=false won=false canceled=true  err=context canceled
	// healthy backup=true  won=true  canceled=false err=<nil>
	// {Calls:1 Retries:0 Backups:1 BackupsWon:1 BackupsDenied:0}
}
