package downloader

import (
	"context"
	"log/slog"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

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
// advertised gRPC address, hands each term to the Manager (Lead), and its
// gate (pkg/leader) forwards the writes that reach it as a follower.
type replica struct {
	cli    *clientv3.Client
	store  *topostore.Store
	m      *bulkload.Manager
	log    *slog.Logger
	gate   *leader.Gate
	cancel context.CancelFunc
}

func newReplica(cli *clientv3.Client, store *topostore.Store, m *bulkload.Manager, o Options, log *slog.Logger) *replica {
	return &replica{cli: cli, store: store, m: m, log: log, cancel: func() {}, gate: leader.NewGate(leader.GateOptions{
		Write: isWrite,
		Dial: func(addr string) (*grpc.ClientConn, error) {
			return dial.New(addr, dial.Options{TLS: o.PeerTLS, TracerProvider: o.TracerProvider, MeterProvider: o.MeterProvider})
		},
		Ready: m.Leading,
	})}
}

// campaign starts the election under self (the advertised address, known
// once the gRPC port is bound); it runs until ctx ends or stop.
func (r *replica) campaign(ctx context.Context, self string) {
	ectx, cancel := context.WithCancel(ctx)
	r.cancel = cancel
	err := r.gate.Campaign(ectx, r.cli, leader.Options{Prefix: r.store.Key(""), Role: EtcdRole, Value: self, Log: r.log},
		func(tctx context.Context, t leader.Term) error { return r.m.Lead(tctx, t) })
	if err != nil {
		// The prefix was checked by topostore and self is non-empty.
		r.log.Error("downloader: cannot campaign for leadership; this replica only answers reads", "err", err)
		return
	}
	r.log.Info("campaigning for the downloaders' leadership", "value", self, "role", EtcdRole)
}

// stop ends the campaign (the term's jobs stop, the replica resigns) and
// closes the connections.
func (r *replica) stop() {
	r.cancel()
	r.gate.Close()
}
