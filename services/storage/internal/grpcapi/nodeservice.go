package grpcapi

import (
	"context"
	"fmt"

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

// SetTopology installs a newer topology.
func (s *NodeService) SetTopology(ctx context.Context, req *storagev1.SetTopologyRequest) (*storagev1.SetTopologyResponse, error) {
	if s.c.TopologyManagedBy != "" {
		return nil, rpcerr.ToStatus(fmt.Errorf("%w: topology is managed in etcd (%s): node %s follows it there; change it through etcd (slotkvctl, the migrator), not SetTopology",
			rpcerr.ErrConflict, s.c.TopologyManagedBy, s.c.Node.ID()))
	}
	prev := s.c.Node.Topology()
	v, changed, err := s.c.Node.SetTopology(req.GetTopology())
	if err != nil {
		s.c.Logger.WarnContext(ctx, "topology refused", "version", req.GetTopology().GetVersion(), "err", err)
		return nil, rpcerr.ToStatus(err)
	}
	if changed {
		var from uint64
		if prev != nil {
			from = prev.Version()
		}
		t := s.c.Node.Topology()
		s.c.Logger.InfoContext(ctx, "topology installed", "from_version", from, "version", v, "owned", rangeString(t.RangesOf(s.c.Node.ID())))
		// A topology that lists this node at other addresses sends clients
		// elsewhere; say so loudly instead of letting routing fail quietly.
		grpcAddr, _ := s.c.Self()
		if me, ok := t.Node(s.c.Node.ID()); ok && grpcAddr != "" && me.GRPCAddress != grpcAddr {
			s.c.Logger.WarnContext(ctx, "topology lists this node at another gRPC address",
				"topology_address", me.GRPCAddress, "advertised_address", grpcAddr)
		}
	}
	return &storagev1.SetTopologyResponse{Version: v, Changed: changed}, nil
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
