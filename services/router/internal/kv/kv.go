// Package kv implements the router's public KVService.
//
// In topology mode (the default) single-key calls are routed to the node
// owning the key's slot through internal/route (route.Do), and multi-key
// calls, scans and counts fan out through pkg/fanout Parallel channels with
// one sub-channel per node of the current topology (topoBackend). In
// naming-file mode every call goes through fanout.DynamicPartition channels
// over the layouts of the naming file (Naming).
package kv

import (
	"context"
	"fmt"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	routerv1 "github.com/slotkv/slotkv/gen/slotkv/router/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/limits"
	"github.com/slotkv/slotkv/pkg/route"
	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/pkg/slot"
)

// Service is the KVService server.
type Service struct {
	routerv1.UnimplementedKVServiceServer
	r      *route.Router // topology mode; nil in naming mode
	naming *Naming       // naming mode; nil in topology mode
	b      backend
	obs    *Observer
	lim    limits.KV // key and value sizes checked before forwarding
}

// New returns a KVService routing by the topology r holds; obs records its
// calls to the storage nodes.
func New(r *route.Router, obs *Observer) *Service {
	return &Service{r: r, b: &topoBackend{r: r, obs: obs}, obs: obs, lim: limits.KV{}.WithDefaults()}
}

// NewNamed returns a KVService routing by the layouts of a naming file.
func NewNamed(n *Naming) *Service {
	return &Service{naming: n, b: n, obs: n.o.Observer, lim: limits.KV{}.WithDefaults()}
}

// SetLimits sets the key and value size limits the service checks before
// forwarding anything to a storage node; zero fields take the shared
// defaults (pkg/limits), which are the storage node's defaults. Call it
// before serving.
func (s *Service) SetLimits(l limits.KV) { s.lim = l.WithDefaults() }

// do runs a single-key call through route.Do, each attempt observed as a
// call to the owning node's partition.
func (s *Service) do(ctx context.Context, key, op string, call route.Call) (route.Result, error) {
	return s.r.Do(ctx, key, func(ctx context.Context, a route.Attempt, c storagev1.StorageServiceClient) error {
		ctx, oc := s.obs.start(ctx, a.Node.ID, a.Node.GRPCAddress, op, 1, a.Number, false)
		defer oc.abandon(ctx)
		err := call(ctx, a, c)
		oc.end(ctx, err, err != nil && retryable(err))
		return err
	})
}

// Register adds the service to s.
func (s *Service) Register(reg grpc.ServiceRegistrar) { routerv1.RegisterKVServiceServer(reg, s) }

// checkKey refuses an empty or oversized key of the request field.
func (s *Service) checkKey(field, key string) error {
	if key == "" {
		return rpcerr.ToStatus(rpcerr.InvalidField(field, "must not be empty"))
	}
	if err := s.lim.CheckKeySize(field, len(key)); err != nil {
		return rpcerr.ToStatus(err)
	}
	return nil
}

// checkValue refuses an oversized value of the request field.
func (s *Service) checkValue(field string, value []byte) error {
	if err := s.lim.CheckValueSize(field, len(value)); err != nil {
		return rpcerr.ToStatus(err)
	}
	return nil
}

// Get reads one key. The value is answered as text when it is valid UTF-8,
// as bytes otherwise. An expired key is NotFound.
func (s *Service) Get(ctx context.Context, req *routerv1.GetRequest) (*routerv1.GetResponse, error) {
	key, err := s.keyOf("", req.GetKey(), req.GetKeyBytes())
	if err != nil {
		return nil, err
	}
	if s.naming != nil {
		return s.namingGet(ctx, key)
	}
	var got *storagev1.GetResponse
	res, err := s.do(ctx, string(key), "get", func(ctx context.Context, _ route.Attempt, c storagev1.StorageServiceClient) error {
		var err error
		got, err = c.Get(ctx, &storagev1.GetRequest{Key: key})
		return err
	})
	if err != nil {
		return nil, err
	}
	return getResponse(key, got.GetValue(), got.GetExpiresAtMs(), uint32(res.Slot), res.Node.ID)
}

// getResponse is the answer to a Get of key that found value with expiry
// exp: NotFound when it has expired by the router's clock.
func getResponse(key, value []byte, exp int64, slot uint32, node string) (*routerv1.GetResponse, error) {
	now := time.Now().UnixMilli()
	if !live(exp, now) {
		return nil, rpcerr.ToStatus(fmt.Errorf("%w: key %q", rpcerr.ErrNotFound, key))
	}
	resp := &routerv1.GetResponse{Slot: slot, NodeId: node, ExpiresAtMs: exp, TtlMs: ttlLeft(exp, now)}
	resp.Key, resp.KeyBytes = keyFields(key)
	if utf8.Valid(value) {
		resp.Data = &routerv1.GetResponse_Text{Text: string(value)}
	} else {
		resp.Data = &routerv1.GetResponse_Value{Value: value}
	}
	return resp, nil
}

// Put writes one key; one of text and value is required (either may be
// empty), and ttl_ms or expires_at_ms may set its expiry.
func (s *Service) Put(ctx context.Context, req *routerv1.PutRequest) (*routerv1.PutResponse, error) {
	key, err := s.keyOf("", req.GetKey(), req.GetKeyBytes())
	if err != nil {
		return nil, err
	}
	exp, err := expiryOf("", req.GetTtlMs(), req.GetExpiresAtMs(), time.Now())
	if err != nil {
		return nil, err
	}
	var value []byte
	field := "text"
	switch d := req.GetData().(type) {
	case *routerv1.PutRequest_Text:
		value = []byte(d.Text)
	case *routerv1.PutRequest_Value:
		value, field = d.Value, "value"
		if value == nil {
			value = []byte{}
		}
	default:
		return nil, rpcerr.ToStatus(rpcerr.InvalidField("text", "the value is missing: set text (a UTF-8 string) or value (base64 bytes)"))
	}
	if err := s.checkValue(field, value); err != nil {
		return nil, err
	}
	resp := &routerv1.PutResponse{ExpiresAtMs: exp}
	resp.Key, resp.KeyBytes = keyFields(key)
	if s.naming != nil {
		where, err := s.b.write(ctx, oneWrite(key, &storagev1.Mutation{Key: key, Value: value, ExpiresAtMs: exp}))
		if err != nil {
			return nil, err
		}
		resp.Slot, resp.NodeId = uint32(slot.Of(key)), where[0]
		return resp, nil
	}
	res, err := s.do(ctx, string(key), "put", func(ctx context.Context, _ route.Attempt, c storagev1.StorageServiceClient) error {
		_, err := c.Put(ctx, &storagev1.PutRequest{Key: key, Value: value, ExpiresAtMs: exp})
		return err
	})
	if err != nil {
		return nil, err
	}
	resp.Slot, resp.NodeId = uint32(res.Slot), res.Node.ID
	return resp, nil
}

// Delete removes one key; deleting an absent key succeeds.
func (s *Service) Delete(ctx context.Context, req *routerv1.DeleteRequest) (*routerv1.DeleteResponse, error) {
	key, err := s.keyOf("", req.GetKey(), req.GetKeyBytes())
	if err != nil {
		return nil, err
	}
	resp := &routerv1.DeleteResponse{}
	resp.Key, resp.KeyBytes = keyFields(key)
	if s.naming != nil {
		where, err := s.b.write(ctx, oneWrite(key, &storagev1.Mutation{Key: key, Delete: true}))
		if err != nil {
			return nil, err
		}
		resp.Slot, resp.NodeId = uint32(slot.Of(key)), where[0]
		return resp, nil
	}
	res, err := s.do(ctx, string(key), "delete", func(ctx context.Context, _ route.Attempt, c storagev1.StorageServiceClient) error {
		_, err := c.Delete(ctx, &storagev1.DeleteRequest{Key: key})
		return err
	})
	if err != nil {
		return nil, err
	}
	resp.Slot, resp.NodeId = uint32(res.Slot), res.Node.ID
	return resp, nil
}

// GetTopology answers the topology the router routes by, refreshed first
// when asked.
func (s *Service) GetTopology(ctx context.Context, req *routerv1.GetTopologyRequest) (*routerv1.GetTopologyResponse, error) {
	if s.naming != nil {
		return nil, status.Errorf(codes.FailedPrecondition,
			"router runs from a naming file (%s): it routes by its layouts, not by a topology", s.naming.o.Path)
	}
	t := s.r.Topology()
	if req.GetRefresh() || t == nil {
		var err error
		t, err = s.r.Refresh(ctx)
		if t == nil {
			return nil, rpcerr.ToStatus(err)
		}
	}
	return &routerv1.GetTopologyResponse{Topology: t.Proto()}, nil
}
