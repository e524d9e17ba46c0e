package migrate

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	migratorv1 "github.com/slotkv/slotkv/gen/slotkv/migrator/v1"
	"github.com/slotkv/slotkv/pkg/jobstore"
	"github.com/slotkv/slotkv/pkg/leader"
	"github.com/slotkv/slotkv/pkg/rpcerr"
)

// Replica is the MigratorService of one migrator among several on the etcd
// control plane. The replica that leads (pkg/leader) runs the jobs: Lead
// opens a Manager for its term on the job records in etcd, whose recovery
// rolls the last leader's jobs back or forward, and abandons it when the
// term ends. Every replica answers the reads, the followers from the
// records in etcd; writes reach the leader through pkg/leader's
// ForwardUnary, and one that arrives here at a follower anyway is refused.
type Replica struct {
	migratorv1.UnimplementedMigratorServiceServer

	cfg  Config
	recs *jobstore.Etcd[record] // unfenced: read only

	mu  sync.Mutex
	cur *Manager // the term's manager; nil while this replica follows
	who func(ctx context.Context) (string, error)
}

// NewReplica returns a follower; cfg needs Topo and Etcd (Fence is set per
// term).
func NewReplica(cfg Config) (*Replica, error) {
	if cfg.Topo == nil || cfg.Etcd == nil {
		return nil, errors.New("migrate: a replica needs Config.Topo and Config.Etcd")
	}
	recs, err := jobstore.OpenEtcd[record](cfg.Etcd, recordsPrefix(cfg.Topo), nil)
	if err != nil {
		return nil, err
	}
	return &Replica{cfg: cfg, recs: recs}, nil
}

// SetLeaderLookup tells the replica how to name the leader in a refusal
// (pkg/leader's Elector.Leader).
func (r *Replica) SetLeaderLookup(who func(ctx context.Context) (string, error)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.who = who
}

// Register installs the MigratorService on s.
func (r *Replica) Register(s *grpc.Server) { migratorv1.RegisterMigratorServiceServer(s, r) }

// Lead runs one leadership term (pkg/leader's lead function): it opens a
// Manager whose record writes and commits are fenced by the term, which
// takes the jobs over from their records, and serves until ctx ends; then
// it stops the jobs where they are, without a rollback, for the next
// leader.
func (r *Replica) Lead(ctx context.Context, t leader.Term) error {
	cfg := r.cfg
	cfg.Fence = func() (clientv3.Cmp, bool) {
		if ctx.Err() != nil {
			return clientv3.Cmp{}, false
		}
		return t.Fence(), true
	}
	cfg.Logger = cfg.Logger.With("term", t.Rev)
	m, err := Open(cfg)
	if err != nil {
		return fmt.Errorf("taking the jobs over: %w", err)
	}
	cfg.Logger.Info("leading: the jobs of etcd are taken over", "jobs", m.count())
	r.mu.Lock()
	r.cur = m
	r.mu.Unlock()
	<-ctx.Done()
	r.mu.Lock()
	r.cur = nil
	r.mu.Unlock()
	m.Abandon()
	if err := m.Close(); err != nil {
		cfg.Logger.Warn("closing the term's job manager", "err", err)
	}
	cfg.Logger.Warn("no longer leading: jobs stopped for the next leader")
	return nil
}

// Leading reports whether this replica leads and has taken the jobs over.
func (r *Replica) Leading() bool { return r.leader() != nil }

// leader is the term's manager, nil while this replica follows.
func (r *Replica) leader() *Manager {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur
}

func (m *Manager) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.jobs)
}

// notLeader is the refusal of a write at a follower.
func (r *Replica) notLeader(ctx context.Context) error {
	r.mu.Lock()
	who := r.who
	r.mu.Unlock()
	where := "unknown (no leader elected yet)"
	if who != nil {
		if addr, err := who(ctx); err == nil {
			where = addr
		} else if !errors.Is(err, leader.ErrNoLeader) {
			where = "unknown: " + err.Error()
		}
	}
	return status.Errorf(codes.FailedPrecondition, "%v: this migrator replica does not lead (or is still taking the jobs over); the leader is at %s", leader.ErrNotLeader, where)
}

func (r *Replica) StartMigration(ctx context.Context, req *migratorv1.StartMigrationRequest) (*migratorv1.StartMigrationResponse, error) {
	if m := r.leader(); m != nil {
		return m.StartMigration(ctx, req)
	}
	return nil, r.notLeader(ctx)
}

func (r *Replica) UpdateMigration(ctx context.Context, req *migratorv1.UpdateMigrationRequest) (*migratorv1.UpdateMigrationResponse, error) {
	if m := r.leader(); m != nil {
		return m.UpdateMigration(ctx, req)
	}
	return nil, r.notLeader(ctx)
}

func (r *Replica) CancelMigration(ctx context.Context, req *migratorv1.CancelMigrationRequest) (*migratorv1.CancelMigrationResponse, error) {
	if m := r.leader(); m != nil {
		return m.CancelMigration(ctx, req)
	}
	return nil, r.notLeader(ctx)
}

// readRecord is a job's record from etcd, or NotFound.
func (r *Replica) readRecord(ctx context.Context, id string) (*record, error) {
	if id == "" {
		return nil, rpcerr.InvalidField("job_id", "required")
	}
	rec, ok, err := r.recs.Get(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("%w: reading job %s from etcd: %v", rpcerr.ErrUnavailable, id, err)
	}
	if !ok {
		return nil, fmt.Errorf("%w: no migration job %q", rpcerr.ErrNotFound, id)
	}
	return rec, nil
}

func (r *Replica) GetMigration(ctx context.Context, req *migratorv1.GetMigrationRequest) (*migratorv1.GetMigrationResponse, error) {
	if m := r.leader(); m != nil {
		return m.GetMigration(ctx, req)
	}
	rec, err := r.readRecord(ctx, req.GetJobId())
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	return &migratorv1.GetMigrationResponse{Migration: recordProto(rec)}, nil
}

func (r *Replica) ListMigrations(ctx context.Context, req *migratorv1.ListMigrationsRequest) (*migratorv1.ListMigrationsResponse, error) {
	if m := r.leader(); m != nil {
		return m.ListMigrations(ctx, req)
	}
	recs, err := r.recs.Load()
	if err != nil {
		return nil, rpcerr.ToStatus(fmt.Errorf("%w: reading the jobs from etcd: %v", rpcerr.ErrUnavailable, err))
	}
	// Newest first, as the leader lists them.
	slices.SortFunc(recs, func(a, b *record) int {
		return cmp.Or(b.Created.Compare(a.Created), cmp.Compare(b.ID, a.ID))
	})
	out := &migratorv1.ListMigrationsResponse{}
	for _, rec := range recs {
		out.Migrations = append(out.Migrations, recordProto(rec))
	}
	return out, nil
}

// WatchMigration at the leader follows the job in memory; at a follower it
// polls the job's record in etcd (saved at each phase and every
// ProgressInterval) and ends when the job has.
func (r *Replica) WatchMigration(req *migratorv1.WatchMigrationRequest, stream grpc.ServerStreamingServer[migratorv1.WatchMigrationResponse]) error {
	if m := r.leader(); m != nil {
		err := m.WatchMigration(req, stream)
		if !m.abandoned.Load() || status.Code(err) != codes.Unavailable || stream.Context().Err() != nil {
			return err
		}
		// The term ended under the watch: go on from the records.
	}
	interval := time.Second
	if d := req.GetInterval(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return rpcerr.ToStatus(rpcerr.InvalidField("interval", "invalid duration"))
		}
		if d.AsDuration() > 0 {
			interval = max(d.AsDuration(), MinWatchInterval)
		}
	}
	ctx := stream.Context()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		rec, err := r.readRecord(ctx, req.GetJobId())
		if err != nil {
			return rpcerr.ToStatus(err)
		}
		if err := stream.Send(&migratorv1.WatchMigrationResponse{Migration: recordProto(rec)}); err != nil {
			return err
		}
		if terminal(rec.Phase) {
			return nil
		}
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-t.C:
		}
	}
}
