package leader

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

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

// Dialer opens a connection to another replica, with the service's TLS
// and tracing; the token travels in the forwarded metadata.
type Dialer func(addr string) (*grpc.ClientConn, error)

// GateOptions tunes NewGate.
type GateOptions struct {
	// Write reports the methods only the leader answers; every other call
	// is answered by the replica it reaches.
	Write func(fullMethod string) bool
	// Dial opens a connection to the leader; the gate keeps one per
	// address until Close.
	Dial Dialer
	// Ready reports whether this replica, when it leads, has taken its
	// jobs over; until then a write waits. Nil: as soon as it leads.
	Ready func() bool
	// Wait bounds how long a write waits for a leader that is elected
	// and ready (a replica just started, an election under way);
	// 2*DefaultTTL + 1s when zero.
	Wait time.Duration
}

// lookupTimeout bounds one read of the leader, so a write is refused
// naming etcd when etcd does not answer instead of waiting for the caller's
// deadline.
const lookupTimeout = 2 * time.Second

// Gate is what a replicated service (the migrator, the downloader) puts in
// front of its gRPC handlers: Campaign runs this replica's election, and
// Unary, the unary interceptor, lets reads through, runs a write here when
// this replica leads and is ready, and otherwise sends it on to the
// leader with the caller's metadata (its token included), returning the
// leader's answer as it is. While no leader is elected, or the elected one
// is still taking its jobs over, a write waits up to Wait and is then
// refused with Unavailable saying why; when etcd does not answer it is
// refused at once, naming etcd. A call that was already forwarded once is
// never forwarded again: FailedPrecondition naming the leader this replica
// knows of.
type Gate struct {
	o  GateOptions
	el atomic.Pointer[Elector]
	wg sync.WaitGroup

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

// NewGate returns a gate; until Campaign, writes wait for it (and reads
// pass).
func NewGate(o GateOptions) *Gate {
	if o.Wait <= 0 {
		o.Wait = 2*DefaultTTL + time.Second
	}
	return &Gate{o: o, conns: map[string]*grpc.ClientConn{}}
}

// Campaign elects among the replicas with an Elector on cli (see New for
// o) and calls lead for each term this replica holds, in the background,
// until ctx ends.
func (g *Gate) Campaign(ctx context.Context, cli *clientv3.Client, o Options, lead func(context.Context, Term) error) error {
	el, err := New(cli, o)
	if err != nil {
		return err
	}
	g.el.Store(el)
	g.wg.Go(func() { _ = el.Run(ctx, lead) })
	return nil
}

// Elector is the gate's elector, nil before Campaign.
func (g *Gate) Elector() *Elector { return g.el.Load() }

// Close waits for the campaign to end (its context) and closes the
// connections to other replicas.
func (g *Gate) Close() {
	g.wg.Wait()
	g.mu.Lock()
	defer g.mu.Unlock()
	for addr, cc := range g.conns {
		_ = cc.Close()
		delete(g.conns, addr)
	}
}

// Unary is the unary server interceptor.
func (g *Gate) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if !g.o.Write(info.FullMethod) {
		return handler(ctx, req)
	}
	el, leader, err := g.await(ctx)
	if err != nil {
		return nil, err
	}
	if leader == "" {
		return handler(ctx, req)
	}
	md, _ := metadata.FromIncomingContext(ctx)
	if by := md.Get(forwardedKey); len(by) > 0 {
		return nil, status.Errorf(codes.FailedPrecondition, "%v: %s %s forwarded by %s; the leader is at %s",
			ErrNotLeader, el.o.Role, el.o.Value, by[0], leader)
	}
	reply, err := newReply(info.FullMethod)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "forwarding %s: %v", info.FullMethod, err)
	}
	cc, err := g.dial(leader)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "%v: dialing the %s leader at %s: %v", ErrNotLeader, el.o.Role, leader, err)
	}
	out := metadata.NewOutgoingContext(ctx, forwardMD(md, el.o.Value))
	if err := cc.Invoke(out, info.FullMethod, req, reply); err != nil {
		return nil, err
	}
	return reply, nil
}

// await waits until a write can go somewhere: here (leader "") when this
// replica leads and is ready, or to the leader's address.
func (g *Gate) await(ctx context.Context) (*Elector, string, error) {
	wctx, cancel := context.WithTimeout(ctx, g.o.Wait)
	defer cancel()
	last := "this replica has not joined the election yet"
	for {
		if el := g.el.Load(); el != nil {
			if el.IsLeader() && (g.o.Ready == nil || g.o.Ready()) {
				return el, "", nil
			}
			lctx, lcancel := context.WithTimeout(wctx, lookupTimeout)
			addr, err := el.Leader(lctx)
			lcancel()
			switch {
			case err == nil && addr != el.o.Value:
				return el, addr, nil
			case err == nil:
				last = "this replica was elected and is taking the jobs over"
			case errors.Is(err, ErrNoLeader):
				last = "no replica is leader (an election is under way)"
			case wctx.Err() == nil:
				return nil, "", status.Errorf(codes.Unavailable, "cannot find the %s leader: etcd does not answer: %v", el.o.Role, err)
			}
		}
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return nil, "", status.FromContextError(ctx.Err()).Err()
			}
			return nil, "", status.Errorf(codes.Unavailable, "no leader to take the write within %v: %s: retry", g.o.Wait, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (g *Gate) dial(addr string) (*grpc.ClientConn, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if cc, ok := g.conns[addr]; ok {
		return cc, nil
	}
	cc, err := g.o.Dial(addr)
	if err != nil {
		return nil, err
	}
	g.conns[addr] = cc
	return cc, nil
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
