package server

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/slotkv/slotkv/pkg/dial"
)

// Resource limits every service gets (issue 12: bad input and resource
// abuse). Options.MaxConcurrentStreams overrides the first.
const (
	// DefaultMaxConcurrentStreams caps the concurrent RPCs (HTTP/2
	// streams) of one gRPC connection; a client opening more has them
	// refused (REFUSED_STREAM), and grpc-go clients queue them until a
	// stream ends. One connection carries a router's calls to a storage
	// node and every REST call of the gateway, so the cap is well above
	// what either has in flight.
	DefaultMaxConcurrentStreams = 1000

	// KeepaliveMinTime is the shortest interval between client pings the
	// server accepts, with or without an active RPC; a client pinging more
	// often is disconnected (GOAWAY ENHANCE_YOUR_CALM, "too_many_pings").
	// It must stay below dial.KeepaliveTime, the interval pkg/dial's
	// clients ping at, also on idle connections.
	KeepaliveMinTime = dial.KeepaliveTime / 3
	// KeepalivePingTime and KeepalivePingTimeout: the server pings a
	// connection quiet for KeepalivePingTime and closes it when the answer
	// does not come within KeepalivePingTimeout, so the connections of dead
	// clients are reclaimed.
	KeepalivePingTime    = time.Minute
	KeepalivePingTimeout = 20 * time.Second
	// MaxConnectionIdle closes (GOAWAY) a connection that has had no RPC
	// for this long: live clients that stopped calling give their
	// connection back, and grpc-go clients reconnect on their next call.
	// Long streams (watches, imports) keep their connection busy.
	MaxConnectionIdle = 15 * time.Minute
)

// grpcLimitOptions are the gRPC server's resource limits: message sizes,
// concurrent streams per connection and keepalive enforcement.
func grpcLimitOptions(o Options) []grpc.ServerOption {
	maxMsg := o.MaxRecvMsgSize
	if maxMsg <= 0 {
		maxMsg = dial.MaxMsgSize
	}
	streams := o.MaxConcurrentStreams
	if streams == 0 {
		streams = DefaultMaxConcurrentStreams
	}
	return []grpc.ServerOption{
		// An oversized message is refused with ResourceExhausted before
		// it is decoded.
		grpc.MaxRecvMsgSize(maxMsg),
		grpc.MaxSendMsgSize(maxMsg),
		grpc.MaxConcurrentStreams(streams),
		// Allow the client pings pkg/dial sends (every dial.KeepaliveTime,
		// also on idle connections); stricter enforcement would make the
		// server close those connections with "too_many_pings".
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             KeepaliveMinTime,
			PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: MaxConnectionIdle,
			Time:              KeepalivePingTime,
			Timeout:           KeepalivePingTimeout,
		}),
	}
}
