package ctl

import (
	"context"
	"fmt"
	"strings"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/topology"
)

// nodeTimeout bounds the calls to one node, so a node that hangs shows as
// unreachable instead of holding the whole command to its deadline.
const nodeTimeout = 5 * time.Second

// NodeStatus is one node of the topology as `slotkvctl nodes` shows it.
type NodeStatus struct {
	Node topology.Node
	// Slots the topology gives the node.
	Owned slot.RangeSet
	// Health is the node's gRPC health: SERVING, NOT_SERVING, or
	// UNREACHABLE when it did not answer (Err says why).
	Health string
	// Info is the node's own report; nil when it did not answer.
	Info *storagev1.GetNodeInfoResponse
	Err  error
}

// Healthy reports whether the node answered and serves.
func (n NodeStatus) Healthy() bool { return n.Health == "SERVING" && n.Err == nil }

func (s *NodeStatus) fetch(ctx context.Context, p *pool) {
	ctx, cancel := context.WithTimeout(ctx, nodeTimeout)
	defer cancel()
	cc, err := p.conn(s.Node.GRPCAddress)
	if err != nil {
		s.Err = err
		return
	}
	h, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		s.Err = fmt.Errorf("health check: %w", describe(err))
		return
	}
	s.Health = h.GetStatus().String()
	info, err := storagev1.NewNodeServiceClient(cc).GetNodeInfo(ctx, &storagev1.GetNodeInfoRequest{})
	if err != nil {
		s.Err = fmt.Errorf("node info: %w", describe(err))
		return
	}
	s.Info = info
}

// slotStates lists a node's slots that are not plainly owned:
// "0-100 MIGRATING to n2 (job j1)".
func slotStates(info *storagev1.GetNodeInfoResponse) []string {
	var out []string
	for _, s := range info.GetSlotStates() {
		if s.GetState() == clusterv1.SlotState_SLOT_STATE_OWNED {
			continue
		}
		r := s.GetRange()
		line := fmt.Sprintf("%s %s", slot.Range{Start: uint16(r.GetStart()), End: uint16(r.GetEnd())},
			strings.TrimPrefix(s.GetState().String(), "SLOT_STATE_"))
		if peer := s.GetPeerNodeId(); peer != "" {
			line += " peer " + peer
		}
		if job := s.GetJobId(); job != "" {
			line += " (job " + job + ")"
		}
		out = append(out, line)
	}
	return out
}
