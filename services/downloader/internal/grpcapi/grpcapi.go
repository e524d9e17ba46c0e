// Package grpcapi serves slotkv.downloader.v1.BulkLoadService over a
// bulkload.Manager. It is the only place where the downloader's domain
// errors become gRPC status codes (rpcerr.ToStatus).
package grpcapi

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	downloaderv1 "github.com/slotkv/slotkv/gen/slotkv/downloader/v1"
	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/services/downloader/internal/bulkload"
)

// Service implements BulkLoadService.
type Service struct {
	downloaderv1.UnimplementedBulkLoadServiceServer
	m *bulkload.Manager
}

// New returns the service over m.
func New(m *bulkload.Manager) *Service { return &Service{m: m} }

// Register registers the service on s.
func (s *Service) Register(gs *grpc.Server) { downloaderv1.RegisterBulkLoadServiceServer(gs, s) }

func (s *Service) StartJob(ctx context.Context, req *downloaderv1.StartJobRequest) (*downloaderv1.StartJobResponse, error) {
	st, err := s.m.Start(ctx, req.GetManifestUrl(), req.GetJobId())
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	return &downloaderv1.StartJobResponse{Job: JobProto(st)}, nil
}

func (s *Service) GetJob(_ context.Context, req *downloaderv1.GetJobRequest) (*downloaderv1.GetJobResponse, error) {
	st, err := s.m.Get(req.GetJobId())
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	return &downloaderv1.GetJobResponse{Job: JobProto(st)}, nil
}

func (s *Service) ListJobs(context.Context, *downloaderv1.ListJobsRequest) (*downloaderv1.ListJobsResponse, error) {
	jobs, err := s.m.List()
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	resp := &downloaderv1.ListJobsResponse{}
	for _, st := range jobs {
		resp.Jobs = append(resp.Jobs, JobProto(st))
	}
	return resp, nil
}

func (s *Service) WatchJob(req *downloaderv1.WatchJobRequest, stream grpc.ServerStreamingServer[downloaderv1.WatchJobResponse]) error {
	if d := req.GetInterval(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return rpcerr.ToStatus(rpcerr.InvalidField("interval", "must be a non-negative duration"))
		}
	}
	err := s.m.Watch(stream.Context(), req.GetJobId(), req.GetInterval().AsDuration(), func(st *bulkload.JobStatus) error {
		return stream.Send(&downloaderv1.WatchJobResponse{Job: JobProto(st)})
	})
	return rpcerr.ToStatus(err)
}

func (s *Service) PauseJob(ctx context.Context, req *downloaderv1.PauseJobRequest) (*downloaderv1.PauseJobResponse, error) {
	st, err := s.m.Pause(ctx, req.GetJobId())
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	return &downloaderv1.PauseJobResponse{Job: JobProto(st)}, nil
}

func (s *Service) ResumeJob(ctx context.Context, req *downloaderv1.ResumeJobRequest) (*downloaderv1.ResumeJobResponse, error) {
	st, err := s.m.Resume(ctx, req.GetJobId())
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	return &downloaderv1.ResumeJobResponse{Job: JobProto(st)}, nil
}

func (s *Service) CancelJob(ctx context.Context, req *downloaderv1.CancelJobRequest) (*downloaderv1.CancelJobResponse, error) {
	st, err := s.m.Cancel(ctx, req.GetJobId())
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	return &downloaderv1.CancelJobResponse{Job: JobProto(st)}, nil
}

func (s *Service) GetSettings(ctx context.Context, _ *downloaderv1.GetSettingsRequest) (*downloaderv1.GetSettingsResponse, error) {
	st, err := s.m.Settings(ctx)
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	return &downloaderv1.GetSettingsResponse{Settings: settingsProto(st)}, nil
}

func (s *Service) UpdateSettings(_ context.Context, req *downloaderv1.UpdateSettingsRequest) (*downloaderv1.UpdateSettingsResponse, error) {
	var u bulkload.SettingsUpdate
	if req.MaxDownloads != nil {
		v := int(req.GetMaxDownloads())
		u.MaxDownloads = &v
	}
	if req.MaxDownloadsPerNode != nil {
		v := int(req.GetMaxDownloadsPerNode())
		u.MaxDownloadsPerNode = &v
	}
	if req.BandwidthBytesPerSecond != nil {
		v := req.GetBandwidthBytesPerSecond()
		u.BandwidthBytesPerSecond = &v
	}
	st, err := s.m.UpdateSettings(u)
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	return &downloaderv1.UpdateSettingsResponse{Settings: settingsProto(st)}, nil
}

func settingsProto(s bulkload.Settings) *downloaderv1.Settings {
	return &downloaderv1.Settings{
		MaxDownloads:            uint32(s.MaxDownloads),
		MaxDownloadsPerNode:     uint32(s.MaxDownloadsPerNode),
		BandwidthBytesPerSecond: s.BandwidthBytesPerSecond,
	}
}

func progressProto(p bulkload.Progress) *downloaderv1.Progress {
	out := &downloaderv1.Progress{Done: p.Done, Total: p.Total, Rate: p.Rate}
	if p.HasETA {
		out.Eta = durationpb.New(p.ETA)
	}
	return out
}

// JobProto converts a job snapshot.
func JobProto(st *bulkload.JobStatus) *downloaderv1.Job {
	j := &downloaderv1.Job{
		Id:          st.ID,
		ManifestUrl: st.ManifestURL,
		State:       downloaderv1.State(st.State),
		Error:       st.Error,
		Created:     timestamppb.New(st.Created),
		Updated:     timestamppb.New(st.Updated),
		FileCount:   st.FileCount,
		Download:    progressProto(st.Download),
		Ingest:      progressProto(st.Ingest),
	}
	for _, f := range st.Files {
		j.Files = append(j.Files, &downloaderv1.FileStatus{
			Name: f.Name, State: downloaderv1.State(f.State), Slots: f.Slots,
			Download: progressProto(f.Download), Ingest: progressProto(f.Ingest),
			Nodes: f.Nodes, Attempts: f.Attempts, Error: f.Error,
		})
	}
	for _, n := range st.Nodes {
		j.Nodes = append(j.Nodes, &downloaderv1.NodeStatus{
			NodeId: n.NodeID, Records: n.Records, Bytes: n.Bytes, ActiveDownloads: n.ActiveDownloads, Rate: n.Rate,
		})
	}
	return j
}
