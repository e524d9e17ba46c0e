// Package fanout gives grpc-go the combo channels of bRPC
// (docs/en/combo_channel.md in apache/brpc): generic channels that fan one
// call out to many sub-channels and merge the answers.
//
//   - Parallel calls every sub-channel at once; a Mapper rewrites or skips
//     each sub-call, a Merger folds the answers; FailLimit ends the call
//     early and cancels the rest, SuccessLimit ends it after a quorum.
//   - Selective picks one sub-channel with a load balancer (round robin,
//     weighted random, consistent hash, latency-aware), retries on another
//     one, and can send a backup (hedged) request after a delay.
//   - Partition is a Parallel whose sub-channels are the partitions of one
//     layout, each a Selective over the partition's instances.
//   - DynamicPartition holds several layouts at once and sends each call to
//     one complete layout chosen in proportion to its capacity.
//
// Every channel is a Channel[Req, Resp], so they nest, and each can be
// called synchronously (Call) or asynchronously (Go returns a Future that
// can be waited on or cancelled). Nothing here knows about gRPC: a
// sub-channel is any Channel, usually a Func wrapping one client method.
//
// # Example: a partitioned multi-get over gRPC
//
// Three storage partitions, each served by two replicas; a multi-get sends
// each partition only its own keys, hedges slow replicas after 20ms, and
// tolerates one partition being down (a partial answer):
//
//	get, err := fanout.NewPartition(fanout.PartitionOptions[*pb.BatchGetRequest, *pb.BatchGetResponse]{
//		Partitions: 3,
//		Dial: func(in fanout.Instance) (fanout.Channel[*pb.BatchGetRequest, *pb.BatchGetResponse], func(), error) {
//			cc, err := grpc.NewClient(in.Addr, opts...)
//			if err != nil {
//				return nil, nil, err
//			}
//			c := pb.NewStorageServiceClient(cc)
//			return fanout.Func[*pb.BatchGetRequest, *pb.BatchGetResponse](
//				func(ctx context.Context, r *pb.BatchGetRequest) (*pb.BatchGetResponse, error) {
//					return c.BatchGet(ctx, r)
//				}), func() { cc.Close() }, nil
//		},
//		Selective: fanout.SelectiveOptions[*pb.BatchGetRequest]{
//			Balancer: fanout.LatencyAware(), MaxRetry: 1,
//			BackupDelay: 20 * time.Millisecond, BackupMaxRatio: 0.1,
//		},
//		Parallel: fanout.ParallelOptions[*pb.BatchGetRequest, *pb.BatchGetResponse]{
//			Mapper: func(i, n int, r *pb.BatchGetRequest) (*pb.BatchGetRequest, error) {
//				mine := keysOfPartition(r.Keys, i, n) // slots [i*16384/n, (i+1)*16384/n)
//				if len(mine) == 0 {
//					return nil, fanout.ErrSkip
//				}
//				return &pb.BatchGetRequest{Keys: mine}, nil
//			},
//			Merger: func(acc *pb.BatchGetResponse, i int, sub *pb.BatchGetResponse) (*pb.BatchGetResponse, fanout.MergeResult) {
//				if acc == nil {
//					acc = &pb.BatchGetResponse{}
//				}
//				acc.Items = append(acc.Items, sub.Items...)
//				return acc, fanout.MergeOK
//			},
//			FailLimit: 2, // one partition down is a partial answer, two fail the call
//			Timeout:   time.Second,
//		},
//	})
//	if err != nil {
//		return err
//	}
//	stop := get.Watch(fileSource) // "addr N/M [weight]" lines, reloaded on change
//	defer stop()
//	resp, report, err := get.CallReport(ctx, &pb.BatchGetRequest{Keys: keys})
//	// report.Failed lists the partitions that did not answer.
//
// The runnable examples (ExampleParallel, ExampleSelective,
// ExamplePartition, ExampleDynamicPartition) show each channel alone.
package fanout
