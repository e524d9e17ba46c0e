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
package fanout
