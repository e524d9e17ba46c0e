package fanout

import (
	"context"
	"errors"
)

// Channel sends one call and waits for its answer. Every channel of this
// package is a Channel, so they nest: a Parallel of Selectives, a Selective
// of Partitions, and so on.
type Channel[Req, Resp any] interface {
	Call(ctx context.Context, req Req) (Resp, error)
}

// Func adapts a function to a Channel, typically one gRPC method on one
// connection:
//
//	fanout.Func[*pb.GetRequest, *pb.GetResponse](client.Get)
type Func[Req, Resp any] func(ctx context.Context, req Req) (Resp, error)

// Call calls f.
func (f Func[Req, Resp]) Call(ctx context.Context, req Req) (Resp, error) { return f(ctx, req) }

// Capacitor is implemented by channels that know how much traffic they can
// take. A channel that does not implement it counts as its weight (1 unless
// configured). The rules, as in bRPC's dynamic partition channel:
//   - an instance is its weight;
//   - a Selective channel is the sum of its sub-channels;
//   - a Parallel or Partition channel is the minimum of its sub-channels,
//     and 0 when a partition has no instance.
type Capacitor interface {
	Capacity() int
}

// CapacityOf returns ch's capacity: ch.Capacity() when ch is a Capacitor,
// otherwise weight.
func CapacityOf[Req, Resp any](ch Channel[Req, Resp], weight int) int {
	if c, ok := ch.(Capacitor); ok {
		return c.Capacity()
	}
	return weight
}

// Sentinel errors.
var (
	// ErrSkip is returned by a Mapper to leave one sub-channel out of a call.
	ErrSkip = errors.New("fanout: skip sub-call")
	// ErrAllSkipped: the mapper skipped every sub-channel, so nothing was sent.
	ErrAllSkipped = errors.New("fanout: every sub-call was skipped")
	// ErrNoChannel: a channel has no sub-channel to send to (an empty
	// Selective, a partition without instances, no complete layout).
	ErrNoChannel = errors.New("fanout: no sub-channel")
	// ErrFailAll is returned by a Merger (as MergeFailAll) to end a call at
	// once; the call's error wraps it.
	ErrFailAll = errors.New("fanout: merger failed the whole call")
	// ErrBackupLimited is never returned; it names why a backup request was
	// not sent in Report.Attempts.
	ErrBackupLimited = errors.New("fanout: backup request over its load cap")
)
