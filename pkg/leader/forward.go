package leader

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// forwardedKey marks a call one replica forwarded to another: the receiver
// answers it itself or refuses it, never forwards it again, so two
// replicas that each believe the other leads cannot bounce a call.
const forwardedKey = "slotkv-forwarded-by"

// ErrNotLeader is the refusal of a write that could not be forwarded: the
// gRPC answer is FailedPrecondition with this text and the leader's
// address.
var ErrNotLeader = errors.New("this replica is not the leader")

// Dialer opens (or reuses) a connection to another replica, with the
// service's TLS and tracing; the token travels in the forwarded metadata.
type Dialer func(addr string) (*grpc.ClientConn, error)

// ForwardUnary returns a unary server interceptor for a replicated service:
// a call whose method write reports true, arriving at a replica that does
// not lead, is sent on to the leader with the caller's metadata (its token
// included) and the leader's answer is returned as it is. Calls of other
// methods (reads, which every replica answers) and calls at the leader run
// here. With no leader elected the call gets Unavailable (retry later); a
// call that was already forwarded once is refused with FailedPrecondition
// naming the leader this replica knows of.
func (e *Elector) ForwardUnary(dial Dialer, write func(fullMethod string) bool) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if !write(info.FullMethod) || e.IsLeader() {
			return handler(ctx, req)
		}
		leader, err := e.Leader(ctx)
		switch {
		case errors.Is(err, ErrNoLeader):
			return nil, status.Errorf(codes.Unavailable, "no %s replica is leader yet (an election is under way): retry", e.o.Role)
		case err != nil:
			return nil, status.Errorf(codes.Unavailable, "finding the %s leader in etcd: %v", e.o.Role, err)
		case leader == e.o.Value:
			// Elected a moment ago and not yet told, or the term just
			// ended: answer here, the fence guards what it writes.
			return handler(ctx, req)
		}
		md, _ := metadata.FromIncomingContext(ctx)
		if by := md.Get(forwardedKey); len(by) > 0 {
			return nil, status.Errorf(codes.FailedPrecondition, "%v: %s %s forwarded by %s; the leader is at %s",
				ErrNotLeader, e.o.Role, e.o.Value, by[0], leader)
		}
		reply, err := newReply(info.FullMethod)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "forwarding %s: %v", info.FullMethod, err)
		}
		cc, err := dial(leader)
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "%v: dialing the %s leader at %s: %v", ErrNotLeader, e.o.Role, leader, err)
		}
		out := metadata.NewOutgoingContext(ctx, forwardMD(md, e.o.Value))
		if err := cc.Invoke(out, info.FullMethod, req, reply); err != nil {
			return nil, err
		}
		return reply, nil
	}
}

// forwardMD is the caller's metadata without the transport's own keys,
// marked as forwarded by self.
func forwardMD(in metadata.MD, self string) metadata.MD {
	out := metadata.MD{}
	for k, v := range in {
		switch {
		case strings.HasPrefix(k, ":"), k == "content-type", k == "user-agent", k == "te",
			k == "grpc-timeout", k == "grpc-encoding", k == "grpc-accept-encoding",
			k == "traceparent", k == "tracestate": // the client's stats handler sets these anew
			continue
		}
		out[k] = v
	}
	out.Set(forwardedKey, self)
	return out
}

// newReply allocates the response message of a method ("/pkg.Service/Method")
// from the registered descriptors.
func newReply(fullMethod string) (proto.Message, error) {
	name := strings.ReplaceAll(strings.TrimPrefix(fullMethod, "/"), "/", ".")
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
	if err != nil {
		return nil, err
	}
	md, ok := d.(protoreflect.MethodDescriptor)
	if !ok {
		return nil, fmt.Errorf("%s is not a method", name)
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
	if err != nil {
		return nil, err
	}
	return mt.New().Interface(), nil
}
