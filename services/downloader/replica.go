package downloader

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	downloaderv1 "github.com/slotkv/slotkv/gen/slotkv/downloader/v1"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/leader"
	"github.com/slotkv/slotkv/pkg/topostore"
	"github.com/slotkv/slotkv/services/downloader/internal/bulkload"
)

// Keys of the replicated downloader under the cluster's etcd prefix.
const (
	// EtcdRole names the downloaders' election (<prefix>election/downloader).
	EtcdRole = "downloader"
	// EtcdJobsPrefix holds one JSON record per bulk-load job.
	EtcdJobsPrefix = "jobs/bulkloads/"
	// EtcdSettingsKey holds the runtime settings changed with
	// UpdateSettings.
	EtcdSettingsKey = "downloader/settings"
)

// writeMethods are the calls a follower forwards to the leader; every
// other call (GetJob, ListJobs, WatchJob, GetSettings) is answered by the
// replica it reaches, from the etcd records.
var writeMethods = map[string]bool{
	downloaderv1.BulkLoadService_StartJob_FullMethodName:       true,
	downloaderv1.BulkLoadService_PauseJob_FullMethodName:       true,
	downloaderv1.BulkLoadService_ResumeJob_FullMethodName:      true,
	downloaderv1.BulkLoadService_CancelJob_FullMethodName:      true,
	downloaderv1.BulkLoadService_UpdateSettings_FullMethodName: true,
}

func isWrite(fullMethod string) bool { return writeMethods[fullMethod] }

// replica is this downloader's part in the election: it campaigns with its
// advertised gRPC address, hands each term to the Manager (Lead) and
// forwards the writes that reach it as a follower.
type replica struct {
	cli   *clientv3.Client
	store *topostore.Store
	m     *bulkload.Manager
	o     Options
	log   *slog.Logger

	fwd    atomic.Pointer[grpc.UnaryServerInterceptor] // set once campaigning
	el     atomic.Pointer[leader.Elector]              // set once campaigning
	self   string                                      // the advertised address, set with el
	cancel context.CancelFunc
	wg     sync.WaitGroup

	connMu sync.Mutex
	conns  map[string]*grpc.ClientConn // to the leaders forwarded to
}

func newReplica(cli *clientv3.Client, store *topostore.Store, m *bulkload.Manager, o Options, log *slog.Logger) *replica {
	return &replica{cli: cli, store: store, m: m, o: o, log: log, cancel: func() {}, conns: map[string]*grpc.ClientConn{}}
}

// campaign starts the election under self (the advertised address, known
// once the gRPC port is bound); it runs until ctx ends or stop.
func (r *replica) campaign(ctx context.Context, self string) {
	el, err := leader.New(r.cli, leader.Options{Prefix: r.store.Key(""), Role: EtcdRole, Value: self, Log: r.log})
	if err != nil {
		// The prefix was checked by topostore and self is non-empty.
		r.log.Error("downloader: cannot campaign for leadership; this replica only answers reads", "err", err)
		return
	}
	f := el.ForwardUnary(r.dial, isWrite)
	r.self = self
	r.fwd.Store(&f)
	r.el.Store(el)
	ectx, cancel := context.WithCancel(ctx)
	r.cancel = cancel
	r.wg.Go(func() {
		_ = el.Run(ectx, func(tctx context.Context, t leader.Term) error { return r.m.Lead(tctx, t) })
	})
	r.log.Info("campaigning for the downloaders' leadership", "value", self, "role", EtcdRole)
}

// leaderWait bounds how long a write waits for an elected leader that has
// taken its jobs over: a replica just started (or the only one, restarted
// while its old term's lease lives on), or an election under way.
const leaderWait = 2*leader.DefaultTTL + time.Second

// forward is the server's interceptor: a write waits (at most leaderWait,
// and the call's deadline) until a leader is elected and, when that is
// this replica, has taken the jobs over; then the elector's forwarding
// sends it to the leader or lets it run here. Reads run here.
func (r *replica) forward(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if !isWrite(info.FullMethod) {
		return h(ctx, req)
	}
	if err := r.awaitLeader(ctx); err != nil {
		return nil, err
	}
	return (*r.fwd.Load())(ctx, req, info, h)
}

func (r *replica) awaitLeader(ctx context.Context) error {
	wctx, cancel := context.WithTimeout(ctx, leaderWait)
	defer cancel()
	last := "this replica has not joined the election yet"
	for {
		if el := r.el.Load(); el != nil {
			addr, err := el.Leader(wctx)
			switch {
			case err == nil && (addr != r.self || r.m.Leading()):
				return nil
			case err == nil:
				last = "this replica was elected and is taking the jobs over"
			case errors.Is(err, leader.ErrNoLeader):
				last = "no replica is leader (an election is under way)"
			default:
				last = err.Error()
			}
		}
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return status.FromContextError(ctx.Err()).Err()
			}
			return status.Errorf(codes.Unavailable, "no downloader leader to take the write within %v: %s: retry", leaderWait, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// dial opens (once per address) a connection to the leader, with the TLS
// used for other slotkv services; the caller's token travels in the
// forwarded metadata.
func (r *replica) dial(addr string) (*grpc.ClientConn, error) {
	r.connMu.Lock()
	defer r.connMu.Unlock()
	if cc, ok := r.conns[addr]; ok {
		return cc, nil
	}
	cc, err := dial.New(addr, dial.Options{TLS: r.o.PeerTLS, TracerProvider: r.o.TracerProvider, MeterProvider: r.o.MeterProvider})
	if err != nil {
		return nil, err
	}
	r.conns[addr] = cc
	return cc, nil
}

// stop ends the campaign (the term's jobs stop, the replica resigns) and
// closes the connections.
func (r *replica) stop() {
	r.cancel()
	r.wg.Wait()
	r.connMu.Lock()
	defer r.connMu.Unlock()
	for _, cc := range r.conns {
		_ = cc.Close()
	}
}
