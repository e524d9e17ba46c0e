// Package kv implements the router's public KVService: each call is routed
// to the storage node owning the key's slot through internal/route.
package kv

import (
	"context"
	"unicode/utf8"

	"google.golang.org/grpc"

	routerv1 "github.com/slotkv/slotkv/gen/slotkv/router/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/services/router/internal/route"
)

// Service is the KVService server.
type Service struct {
	routerv1.UnimplementedKVServiceServer
	r *route.Router
}

// New returns a KVService routing through r.
func New(r *route.Router) *Service { return &Service{r: r} }

// Register adds the service to s.
func (s *Service) Register(reg grpc.ServiceRegistrar) { routerv1.RegisterKVServiceServer(reg, s) }

func checkKey(key string) error {
	if key == "" {
		return rpcerr.ToStatus(rpcerr.InvalidField("key", "must not be empty"))
	}
	return nil
}

// Get reads one key. The value is answered as text when it is valid UTF-8,
// as bytes otherwise.
func (s *Service) Get(ctx context.Context, req *routerv1.GetRequest) (*routerv1.GetResponse, error) {
	key := req.GetKey()
	if err := checkKey(key); err != nil {
		return nil, err
	}
	var got *storagev1.GetResponse
	res, err := s.r.Do(ctx, key, func(ctx context.Context, c storagev1.StorageServiceClient) error {
		var err error
		got, err = c.Get(ctx, &storagev1.GetRequest{Key: []byte(key)})
		return err
	})
	if err != nil {
		return nil, err
	}
	resp := &routerv1.GetResponse{Key: key, Slot: uint32(res.Slot), NodeId: res.Node.ID}
	if v := got.GetValue(); utf8.Valid(v) {
		resp.Data = &routerv1.GetResponse_Text{Text: string(v)}
	} else {
		resp.Data = &routerv1.GetResponse_Value{Value: v}
	}
	return resp, nil
}

// Put writes one key; one of text and value is required (either may be
// empty).
func (s *Service) Put(ctx context.Context, req *routerv1.PutRequest) (*routerv1.PutResponse, error) {
	key := req.GetKey()
	if err := checkKey(key); err != nil {
		return nil, err
	}
	var value []byte
	switch d := req.GetData().(type) {
	case *routerv1.PutRequest_Text:
		value = []byte(d.Text)
	case *routerv1.PutRequest_Value:
		value = d.Value
		if value == nil {
			value = []byte{}
		}
	default:
		return nil, rpcerr.ToStatus(rpcerr.InvalidField("text", "the value is missing: set text (a UTF-8 string) or value (base64 bytes)"))
	}
	res, err := s.r.Do(ctx, key, func(ctx context.Context, c storagev1.StorageServiceClient) error {
		_, err := c.Put(ctx, &storagev1.PutRequest{Key: []byte(key), Value: value})
		return err
	})
	if err != nil {
		return nil, err
	}
	return &routerv1.PutResponse{Key: key, Slot: uint32(res.Slot), NodeId: res.Node.ID}, nil
}

// Delete removes one key; deleting an absent key succeeds.
func (s *Service) Delete(ctx context.Context, req *routerv1.DeleteRequest) (*routerv1.DeleteResponse, error) {
	key := req.GetKey()
	if err := checkKey(key); err != nil {
		return nil, err
	}
	res, err := s.r.Do(ctx, key, func(ctx context.Context, c storagev1.StorageServiceClient) error {
		_, err := c.Delete(ctx, &storagev1.DeleteRequest{Key: []byte(key)})
		return err
	})
	if err != nil {
		return nil, err
	}
	return &routerv1.DeleteResponse{Key: key, Slot: uint32(res.Slot), NodeId: res.Node.ID}, nil
}

// GetTopology answers the topology the router routes by, refreshed first
// when asked.
func (s *Service) GetTopology(ctx context.Context, req *routerv1.GetTopologyRequest) (*routerv1.GetTopologyResponse, error) {
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
