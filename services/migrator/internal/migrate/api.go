package migrate

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	migratorv1 "github.com/slotkv/slotkv/gen/slotkv/migrator/v1"
	"github.com/slotkv/slotkv/pkg/rpcerr"
)

// Register installs the MigratorService on s.
func (m *Manager) Register(s *grpc.Server) { migratorv1.RegisterMigratorServiceServer(s, m) }

// Start plans and starts a job (StartMigration without the gRPC mapping).
func (m *Manager) Start(ctx context.Context, req *migratorv1.StartMigrationRequest) (*migratorv1.Migration, error) {
	if m.shuttingDown() {
		return nil, fmt.Errorf("%w: %v", rpcerr.ErrUnavailable, errShutdown)
	}
	j, err := m.plan(ctx, req)
	if err != nil {
		return nil, err
	}
	j.log.Info("migration planned", "ranges", j.ranges.String(), "source", j.rec.Source, "destination", j.rec.Destination,
		"streams", j.rec.Parallelism, "rate_bytes_per_second", j.rec.Rate, "batch_records", j.rec.BatchRecords,
		"topology_version", j.rec.PlannedVersion)
	out := j.proto()
	m.wg.Go(j.run)
	return out, nil
}

func (m *Manager) StartMigration(ctx context.Context, req *migratorv1.StartMigrationRequest) (*migratorv1.StartMigrationResponse, error) {
	mg, err := m.Start(ctx, req)
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	return &migratorv1.StartMigrationResponse{Migration: mg}, nil
}

func (m *Manager) GetMigration(_ context.Context, req *migratorv1.GetMigrationRequest) (*migratorv1.GetMigrationResponse, error) {
	j, err := m.get(req.GetJobId())
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	return &migratorv1.GetMigrationResponse{Migration: j.proto()}, nil
}

func (m *Manager) ListMigrations(context.Context, *migratorv1.ListMigrationsRequest) (*migratorv1.ListMigrationsResponse, error) {
	m.mu.Lock()
	jobs := m.sortedJobsLocked()
	m.mu.Unlock()
	out := &migratorv1.ListMigrationsResponse{}
	for _, j := range jobs {
		out.Migrations = append(out.Migrations, j.proto())
	}
	return out, nil
}

// MinWatchInterval bounds how often WatchMigration sends.
const MinWatchInterval = 10 * time.Millisecond

func (m *Manager) WatchMigration(req *migratorv1.WatchMigrationRequest, stream grpc.ServerStreamingServer[migratorv1.WatchMigrationResponse]) error {
	j, err := m.get(req.GetJobId())
	if err != nil {
		return rpcerr.ToStatus(err)
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
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		ended := false
		select {
		case <-j.ended:
			ended = true
		default:
		}
		if err := stream.Send(&migratorv1.WatchMigrationResponse{Migration: j.proto()}); err != nil {
			return err
		}
		if ended {
			return nil
		}
		select {
		case <-stream.Context().Done():
			return status.FromContextError(stream.Context().Err()).Err()
		case <-m.ctx.Done():
			if m.abandoned.Load() {
				return status.Error(codes.Unavailable, "this migrator replica no longer leads; watch again (every replica answers)")
			}
			return status.Error(codes.Unavailable, "migrator shutting down; watch again after its restart")
		case <-j.ended:
		case <-t.C:
		}
	}
}

func (m *Manager) UpdateMigration(_ context.Context, req *migratorv1.UpdateMigrationRequest) (*migratorv1.UpdateMigrationResponse, error) {
	j, err := m.get(req.GetJobId())
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	if req.RateBytesPerSecond == nil && req.BatchRecords == nil {
		return nil, rpcerr.ToStatus(rpcerr.InvalidField("rate_bytes_per_second", "nothing to update: set rate_bytes_per_second and/or batch_records"))
	}
	if req.BatchRecords != nil && (req.GetBatchRecords() == 0 || req.GetBatchRecords() > MaxBatchRecords) {
		return nil, rpcerr.ToStatus(rpcerr.InvalidField("batch_records", "must be 1-%d, got %d", MaxBatchRecords, req.GetBatchRecords()))
	}
	j.mu.Lock()
	if terminal(j.rec.Phase) {
		p := j.rec.Phase
		j.mu.Unlock()
		return nil, rpcerr.ToStatus(fmt.Errorf("%w: job %s has ended (%s)", rpcerr.ErrConflict, j.id, phaseName(p)))
	}
	// Saved before it applies: a setting the API acknowledged is in the
	// record a restart reads (and GetMigration shows it afterwards).
	prevRate, prevBatch := j.rec.Rate, j.rec.BatchRecords
	if req.RateBytesPerSecond != nil {
		j.rec.Rate = req.GetRateBytesPerSecond()
	}
	if req.BatchRecords != nil {
		j.rec.BatchRecords = req.GetBatchRecords()
	}
	if err := j.persistLocked(); err != nil {
		j.rec.Rate, j.rec.BatchRecords = prevRate, prevBatch
		j.mu.Unlock()
		return nil, rpcerr.ToStatus(fmt.Errorf("%w: job %s: saving rate_bytes_per_second/batch_records failed, nothing changed: %v",
			rpcerr.ErrUnavailable, j.id, err))
	}
	if req.RateBytesPerSecond != nil {
		j.setRate(j.rec.Rate)
	}
	if req.BatchRecords != nil {
		j.batch.Store(j.rec.BatchRecords)
	}
	rate, batch := j.rec.Rate, j.rec.BatchRecords
	j.mu.Unlock()
	j.log.Info("migration updated", "rate_bytes_per_second", rate, "batch_records", batch)
	return &migratorv1.UpdateMigrationResponse{Migration: j.proto()}, nil
}

// CancelMigration stops a job before its commit and waits (as long as the
// call's deadline allows) until it is rolled back.
func (m *Manager) CancelMigration(ctx context.Context, req *migratorv1.CancelMigrationRequest) (*migratorv1.CancelMigrationResponse, error) {
	j, err := m.get(req.GetJobId())
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	j.mu.Lock()
	switch {
	case j.rec.Committing:
		j.mu.Unlock()
		return nil, rpcerr.ToStatus(fmt.Errorf("%w: job %s already committed (topology version %d): it can no longer be canceled",
			rpcerr.ErrConflict, j.id, j.rec.CommittedVersion))
	case terminal(j.rec.Phase):
		p := j.rec.Phase
		j.mu.Unlock()
		return nil, rpcerr.ToStatus(fmt.Errorf("%w: job %s has already ended (%s)", rpcerr.ErrConflict, j.id, phaseName(p)))
	}
	j.canceled = true
	j.mu.Unlock()
	j.log.Info("cancel requested")
	j.cancel(errCanceled)
	select {
	case <-j.ended:
	case <-ctx.Done():
	case <-m.ctx.Done():
	}
	return &migratorv1.CancelMigrationResponse{Migration: j.proto()}, nil
}
