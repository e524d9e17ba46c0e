package grpcapi

import (
	"context"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc"

	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
)

// RPCCounts counts the StorageService calls this node has received, per
// method, for GetNodeInfoResponse.rpc_counts. The map of counters is built
// once from the service descriptor and never changes, so counting is one map
// read and one atomic add: no lock on the data path.
type RPCCounts struct {
	prefix string
	byName map[string]*atomic.Uint64 // method name ("Get") -> counter
}

// NewRPCCounts returns counters for every StorageService method, all zero.
func NewRPCCounts() *RPCCounts {
	c := &RPCCounts{
		prefix: "/" + storagev1.StorageService_ServiceDesc.ServiceName + "/",
		byName: map[string]*atomic.Uint64{},
	}
	for _, m := range storagev1.StorageService_ServiceDesc.Methods {
		c.byName[m.MethodName] = new(atomic.Uint64)
	}
	for _, s := range storagev1.StorageService_ServiceDesc.Streams {
		c.byName[s.StreamName] = new(atomic.Uint64)
	}
	return c
}

// count adds one call of fullMethod ("/slotkv.storage.v1.StorageService/Get")
// and ignores methods of other services.
func (c *RPCCounts) count(fullMethod string) {
	if c == nil {
		return
	}
	name, ok := strings.CutPrefix(fullMethod, c.prefix)
	if !ok {
		return
	}
	if n := c.byName[name]; n != nil {
		n.Add(1)
	}
}

// UnaryInterceptor counts every StorageService call before its handler
// runs, so refused calls (invalid, SLOT_MOVED, frozen, failing) are counted
// too. Installed after the server's auth interceptor, it does not count
// calls refused for a missing or wrong cluster token.
func (c *RPCCounts) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		c.count(info.FullMethod)
		return handler(ctx, req)
	}
}

// StreamInterceptor is UnaryInterceptor for streaming methods.
func (c *RPCCounts) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		c.count(info.FullMethod)
		return handler(srv, ss)
	}
}

// Snapshot returns the counts by method name, every method included (zero
// when never called). Nil when c is nil.
func (c *RPCCounts) Snapshot() map[string]uint64 {
	if c == nil {
		return nil
	}
	out := make(map[string]uint64, len(c.byName))
	for name, n := range c.byName {
		out[name] = n.Load()
	}
	return out
}
