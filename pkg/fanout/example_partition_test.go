package fanout_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/slotkv/slotkv/pkg/fanout"
)

const exampleSlots = 16384

// slotReq reads the given slots, or writes Value to them.
type slotReq struct {
	Slots []int
	Value string // "" to read
}

// slotResp maps slots to their values.
type slotResp map[int]string

// slotMapper keeps the slots of partition i of m and skips a partition
// that has none.
func slotMapper(i, m int, req slotReq) (slotReq, error) {
	var mine []int
	for _, s := range req.Slots {
		if fanout.PartitionOf(s, m, exampleSlots) == i {
			mine = append(mine, s)
		}
	}
	if len(mine) == 0 {
		return slotReq{}, fanout.ErrSkip
	}
	return slotReq{Slots: mine, Value: req.Value}, nil
}

func slotMerger(acc slotResp, _ int, sub slotResp) (slotResp, fanout.MergeResult) {
	if acc == nil {
		acc = slotResp{}
	}
	maps.Copy(acc, sub)
	return acc, fanout.MergeOK
}

// memCluster stands for the network: one in-memory store per address. In
// slotkv, Dial opens a gRPC connection and wraps a client method in
// fanout.Func; close closes the connection.
type memCluster struct {
	mu     sync.Mutex
	stores map[string]slotResp
}

func (c *memCluster) dial(in fanout.Instance) (fanout.Channel[slotReq, slotResp], func(), error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stores == nil {
		c.stores = map[string]slotResp{}
	}
	if c.stores[in.Addr] == nil {
		c.stores[in.Addr] = slotResp{}
	}
	store := c.stores[in.Addr]
	ch := fanout.Func[slotReq, slotResp](func(ctx context.Context, req slotReq) (slotResp, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		out := slotResp{}
		for _, s := range req.Slots {
			if req.Value != "" {
				store[s] = req.Value
			}
			out[s] = store[s]
		}
		return out, nil
	})
	return ch, func() {}, nil
}

func printResp(r slotResp) {
	for _, s := range slices.Sorted(maps.Keys(r)) {
		fmt.Printf(" %d=%s", s, r[s])
	}
	fmt.Println()
}

// A layout of 2 partitions: slots 0-8191 on a:7000 and b:7000 (replicas),
// slots 8192-16383 on c:7000. Reads go to one replica of each partition
// concerned, writes (Broadcast) to every replica.
func ExamplePartition() {
	var cluster memCluster
	p, err := fanout.NewPartition(fanout.PartitionOptions[slotReq, slotResp]{
		Partitions: 2,
		Dial:       cluster.dial,
		Parallel: fanout.ParallelOptions[slotReq, slotResp]{
			Mapper:    slotMapper,
			Merger:    slotMerger,
			FailLimit: 1, // every partition must answer
		},
	})
	if err != nil {
		panic(err)
	}
	defer p.Close()
	p.Update([]fanout.Instance{
		{Addr: "a:7000", Tag: "0/2"},
		{Addr: "b:7000", Tag: "0/2"},
		{Addr: "c:7000", Tag: "1/2"},
		{Addr: "d:7000", Tag: "0/3"}, // another layout: ignored
	})
	fmt.Println("instances:", p.Instances())
	fmt.Println("complete:", p.Complete(), "capacity:", p.Capacity())

	ctx := context.Background()
	if _, err := p.Broadcast(ctx, slotReq{Slots: []int{100, 9000}, Value: "v1"}); err != nil {
		panic(err)
	}
	resp, rep, err := p.CallReport(ctx, slotReq{Slots: []int{100, 9000}})
	if err != nil {
		panic(err)
	}
	fmt.Print("read:")
	printResp(resp)
	for _, s := range rep.Subs {
		fmt.Println("partition", s.Name, "skipped:", s.Skipped)
	}
	// Both replicas of partition 0 got the write.
	fmt.Println("a:", cluster.stores["a:7000"][100], "b:", cluster.stores["b:7000"][100])

	p.Update([]fanout.Instance{{Addr: "a:7000", Tag: "0/2"}}) // c:7000 leaves
	_, err = p.Call(ctx, slotReq{Slots: []int{100}})
	fmt.Println(err)
	// Output:
	// instances: [a:7000 0/2 b:7000 0/2 c:7000 1/2]
	// complete: true capacity: 1
	// read: 100=v1 9000=v1
	// partition 0/2 skipped: false
	// partition 1/2 skipped: false
	// a: v1 b: v1
	// fanout: layout of 2 partitions is incomplete, no instance in 1/2: fanout: no sub-channel
}

// Data is moving from 3 partitions to 4: the naming file lists both
// layouts. Reads go to one complete layout, chosen in proportion to its
// capacity; writes go to every complete layout.
func ExampleDynamicPartition() {
	const naming = `# address tag [weight]
10.0.0.1:7000 0/3
10.0.0.2:7000 1/3
10.0.0.3:7000 2/3
10.0.0.4:7000 0/4 2
10.0.0.5:7000 1/4 2
10.0.0.6:7000 2/4 2
10.0.0.7:7000 3/4 2
10.0.0.8:7000 4/4   # a typo
`
	instances, errs := fanout.ParseNaming(strings.NewReader(naming))
	for _, err := range errs {
		fmt.Println("skipped", err)
	}

	var cluster memCluster
	d := fanout.NewDynamicPartition(fanout.DynamicOptions[slotReq, slotResp]{
		Dial: cluster.dial,
		Parallel: func(m int) fanout.ParallelOptions[slotReq, slotResp] {
			return fanout.ParallelOptions[slotReq, slotResp]{Mapper: slotMapper, Merger: slotMerger, FailLimit: 1}
		},
	})
	defer d.Close()
	stop := d.Watch(fanout.Static(instances...)) // or a FileSource on the file
	defer stop()
	for _, l := range d.Layouts() {
		fmt.Printf("layout %d: %d instances, complete %v, capacity %d\n", l.Partitions, l.Instances, l.Complete, l.Capacity)
	}
	fmt.Println("capacity:", d.Capacity())

	ctx := context.Background()
	wrote, err := d.Broadcast(ctx, slotReq{Slots: []int{1, 6000, 16000}, Value: "x"})
	if err != nil {
		panic(err)
	}
	fmt.Println("written to layouts:", slices.Sorted(maps.Keys(wrote)))

	for range 3 { // whichever layout answers, the data is the same
		resp, err := d.Call(ctx, slotReq{Slots: []int{1, 6000, 16000}})
		if err != nil {
			panic(err)
		}
		fmt.Print("read:")
		printResp(resp)
	}
	// Output:
	// skipped line 9: fanout: tag "4/4": N must be in [0, 4)
	// layout 3: 3 instances, complete true, capacity 1
	// layout 4: 4 instances, complete true, capacity 2
	// capacity: 3
	// written to layouts: [3 4]
	// read: 1=x 6000=x 16000=x
	// read: 1=x 6000=x 16000=x
	// read: 1=x 6000=x 16000=x
}
