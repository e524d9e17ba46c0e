package grpcapi

import (
	"context"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/pkg/version"
)

// NodeService implements storagev1.NodeServiceServer.
type NodeService struct {
	storagev1.UnimplementedNodeServiceServer
	c Config
}

// NewNodeService returns the administration service.
func NewNodeService(c Config) *NodeService {
	return &NodeService{c: c.withDefaults()}
}

// GetTopology returns the topology held, unset before the first one.
func (s *NodeService) GetTopology(context.Context, *storagev1.GetTopologyRequest) (*storagev1.GetTopologyResponse, error) {
	t := s.c.Node.Topology()
	if t == nil {
		return &storagev1.GetTopologyResponse{}, nil
	}
	return &storagev1.GetTopologyResponse{Topology: t.Proto()}, nil
}

// respAddr is the advertised RESP address, "" without one.
func (s *NodeService) respAddr() string {
	if s.c.SelfRESP == nil {
		return ""
	}
	return s.c.SelfRESP()
}

// GetNodeInfo describes this node.
func (s *NodeService) GetNodeInfo(ctx context.Context, _ *storagev1.GetNodeInfoRequest) (*storagev1.GetNodeInfoResponse, error) {
	grpcAddr, httpAddr := s.c.Self()
	out := &storagev1.GetNodeInfoResponse{
		Node:      &clusterv1.Node{Id: s.c.Node.ID(), GrpcAddress: grpcAddr, HttpAddress: httpAddr, RespAddress: s.respAddr()},
		Owned:     protoRanges(s.c.Node.Served()),
		Version:   version.Version,
		RpcCounts: s.c.Counts.Snapshot(),
	}
	if t := s.c.Node.Topology(); t != nil {
		out.TopologyVersion = t.Version()
	}
	for _, r := range s.c.Node.States() {
		out.SlotStates = append(out.SlotStates, r.Proto())
	}
	n, err := s.c.Store.KeyCount(ctx)
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	out.KeyCount = n
	lsm, vlog, err := s.c.Store.Size()
	if err != nil {
		return nil, rpcerr.ToStatus(err)
	}
	out.LsmBytes, out.VlogBytes = lsm, vlog
	return out, nil
}
