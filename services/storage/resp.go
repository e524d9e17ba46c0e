package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/limits"
	"github.com/slotkv/slotkv/pkg/resp"
	"github.com/slotkv/slotkv/pkg/route"
	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/pkg/server"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/services/storage/internal/grpcapi"
	"github.com/slotkv/slotkv/services/storage/internal/node"
)

// respCluster is a storage node's RESP backend in cluster mode: the
// commands run in process on the node's own StorageService (the same
// checks, limits and slot states as the gRPC API, without a network hop),
// and the topology the node holds answers MOVED and the CLUSTER commands.
type respCluster struct {
	svc storagev1.StorageServiceServer
	n   *node.Node
}

var (
	_ resp.Backend = (*respCluster)(nil)
	_ resp.Cluster = (*respCluster)(nil)
)

// Route sends a client to the slot's owner when this node does not serve
// it. A slot being imported here answers TRYAGAIN rather than MOVED: the
// node's topology still names the source, which may already have handed
// the slot over and would send the client straight back.
func (b *respCluster) Route(s uint16) error {
	err := b.n.CheckRead(s)
	if err == nil {
		return nil
	}
	if b.n.State(s) == node.Importing {
		return resp.Error(fmt.Sprintf("TRYAGAIN slot %d is being imported by this node", s))
	}
	return b.redirect(err)
}

// redirect turns the node's refusal into a Redis answer: MOVED to the
// owner's RESP address, TRYAGAIN for a frozen or not yet served slot,
// CLUSTERDOWN when nobody serves it.
func (b *respCluster) redirect(err error) error {
	c := route.Classify(err)
	switch {
	case c.Kind == route.Moved:
		if t := b.n.Topology(); t != nil {
			if owner, ok := t.Node(c.OwnerID); ok && owner.RESPAddress != "" {
				return &resp.MovedError{Slot: c.Slot, Addr: owner.RESPAddress}
			}
		}
		return resp.Error(fmt.Sprintf("CLUSTERDOWN slot %d is served by node %s, which has no RESP address in the topology", c.Slot, c.OwnerID))
	case c.Kind == route.Frozen:
		return resp.Error(fmt.Sprintf("TRYAGAIN slot %d is frozen for a migration hand-off", c.Slot))
	case errors.Is(rpcerr.FromStatus(err), rpcerr.ErrSlotUnassigned):
		return resp.Error("CLUSTERDOWN Hash slot not served")
	case c.Kind == route.NoTopology:
		return resp.Error("CLUSTERDOWN The cluster is down: this node has no topology yet")
	case c.Kind == route.NodeUnavailable:
		return resp.Error("TRYAGAIN " + errText(err))
	}
	return err
}

func errText(err error) string { return rpcerr.ToStatus(err).Error() }

// State is the topology as CLUSTER SLOTS and friends show it.
func (b *respCluster) State() resp.ClusterState {
	t := b.n.Topology()
	st := resp.ClusterState{Self: b.n.ID()}
	if t == nil {
		return st
	}
	st.Version = t.Version()
	for _, nd := range t.Nodes() {
		st.Nodes = append(st.Nodes, resp.ClusterNode{ID: nd.ID, Addr: nd.RESPAddress, Ranges: t.RangesOf(nd.ID)})
	}
	return st
}

func (b *respCluster) Get(ctx context.Context, key []byte) (resp.Value, error) {
	r, err := b.svc.Get(ctx, &storagev1.GetRequest{Key: key})
	if err != nil {
		if errors.Is(rpcerr.FromStatus(err), rpcerr.ErrNotFound) {
			return resp.Value{}, nil
		}
		return resp.Value{}, b.redirect(err)
	}
	return resp.Value{Data: r.GetValue(), Found: true, ExpiresAtMs: r.GetExpiresAtMs()}, nil
}

func (b *respCluster) Set(ctx context.Context, key, value []byte, expiresAtMs int64) error {
	_, err := b.svc.Put(ctx, &storagev1.PutRequest{Key: key, Value: value, ExpiresAtMs: expiresAtMs})
	if err != nil {
		return b.redirect(err)
	}
	return nil
}

func (b *respCluster) Update(ctx context.Context, req *storagev1.UpdateRequest) (*storagev1.UpdateResponse, error) {
	r, err := b.svc.Update(ctx, req)
	if err != nil {
		return nil, b.redirect(err)
	}
	return r, nil
}

func (b *respCluster) MGet(ctx context.Context, keys [][]byte) ([]resp.Value, error) {
	r, err := b.svc.BatchGet(ctx, &storagev1.BatchGetRequest{Keys: keys})
	if err != nil {
		return nil, b.redirect(err)
	}
	out := make([]resp.Value, len(keys))
	for i, it := range r.GetItems() {
		if i < len(out) {
			out[i] = resp.Value{Data: it.GetValue(), Found: it.GetFound(), ExpiresAtMs: it.GetExpiresAtMs()}
		}
	}
	return out, nil
}

func (b *respCluster) MSet(ctx context.Context, pairs []resp.Pair, ifAllAbsent bool) (bool, error) {
	muts := make([]*storagev1.Mutation, len(pairs))
	for i, p := range pairs {
		muts[i] = &storagev1.Mutation{Key: p.Key, Value: p.Value}
	}
	r, err := b.svc.BatchWrite(ctx, &storagev1.BatchWriteRequest{Mutations: muts, IfAllAbsent: ifAllAbsent})
	if err != nil {
		return false, b.redirect(err)
	}
	return !ifAllAbsent || r.GetApplied(), nil
}

func (b *respCluster) Del(ctx context.Context, keys [][]byte) (int64, error) {
	muts := make([]*storagev1.Mutation, len(keys))
	for i, k := range keys {
		muts[i] = &storagev1.Mutation{Key: k, Delete: true}
	}
	r, err := b.svc.BatchWrite(ctx, &storagev1.BatchWriteRequest{Mutations: muts})
	if err != nil {
		return 0, b.redirect(err)
	}
	return int64(r.GetDeleted()), nil
}

// served is the slot ranges this node serves now: what SCAN, DBSIZE and
// FLUSHALL cover on a node of a Redis cluster.
func (b *respCluster) served() []*clusterv1.SlotRange {
	var out []*clusterv1.SlotRange
	for _, r := range b.n.Served() {
		out = append(out, &clusterv1.SlotRange{Start: uint32(r.Start), End: uint32(r.End)})
	}
	return out
}

// Scan pages through this node's slots; the cursor is the next position
// in the storage key layout (slot.AppendKey).
func (b *respCluster) Scan(ctx context.Context, cursor, prefix []byte, count int) ([][]byte, []byte, error) {
	rs := b.served()
	if len(rs) == 0 {
		return nil, nil, nil
	}
	req := &storagev1.ScanRequest{Ranges: rs, Prefix: prefix, Limit: uint32(count), KeysOnly: true}
	if len(cursor) > 0 {
		sl, key, err := slot.SplitKey(cursor)
		if err != nil {
			return nil, nil, resp.Error("ERR invalid cursor")
		}
		req.Start = &storagev1.ScanPosition{Slot: uint32(sl), Key: key}
	}
	r, err := b.svc.Scan(ctx, req)
	if err != nil {
		// A slot handed over between Served and the scan: the client
		// scans again.
		return nil, nil, b.redirect(err)
	}
	keys := make([][]byte, len(r.GetItems()))
	for i, it := range r.GetItems() {
		keys[i] = it.GetKey()
	}
	var next []byte
	if p := r.GetNext(); p != nil {
		next = slot.AppendKey(nil, uint16(p.GetSlot()), p.GetKey())
	}
	return keys, next, nil
}

func (b *respCluster) DBSize(ctx context.Context) (int64, error) {
	rs := b.served()
	if len(rs) == 0 {
		return 0, nil
	}
	r, err := b.svc.Count(ctx, &storagev1.CountRequest{Ranges: rs})
	if err != nil {
		return 0, b.redirect(err)
	}
	return int64(r.GetCount()), nil
}

// FlushAll empties this node's slots, as FLUSHALL on one node of a Redis
// cluster does (redis-cli --cluster call, or the router, reach them all).
func (b *respCluster) FlushAll(ctx context.Context) error {
	var rs []*clusterv1.SlotRange
	if t := b.n.Topology(); t != nil {
		for _, r := range t.RangesOf(b.n.ID()) {
			rs = append(rs, &clusterv1.SlotRange{Start: uint32(r.Start), End: uint32(r.End)})
		}
	}
	if len(rs) == 0 {
		return nil
	}
	if _, err := b.svc.FlushSlots(ctx, &storagev1.FlushSlotsRequest{Ranges: rs}); err != nil {
		return b.redirect(err)
	}
	return nil
}

// serveRESP binds o.RESPAddr and serves cluster-mode RESP on it (over TLS
// when the node serves TLS) until ctx ends or stop is called (stop waits
// for the server to end).
func serveRESP(ctx context.Context, o Options, svc storagev1.StorageServiceServer, n *node.Node, lim grpcapi.Limits, log *slog.Logger) (net.Addr, func(), error) {
	if err := server.CheckListenExposure("--resp-addr", o.RESPAddr, !o.Tokens.Open(), o.Insecure); err != nil {
		return nil, nil, fmt.Errorf("storage: %w", err)
	}
	b := &respCluster{svc: svc, n: n}
	rs, err := resp.New(resp.Options{
		Name: serviceName, Backend: b, Cluster: b, Tokens: o.Tokens,
		Limits: limits.KV{MaxKeyBytes: lim.MaxKeyBytes, MaxValueBytes: lim.MaxValueBytes},
		Logger: log, TracerProvider: o.TracerProvider, MeterProvider: o.MeterProvider,
	})
	if err != nil {
		return nil, nil, err
	}
	bound, stop, err := rs.Start(ctx, o.RESPAddr, o.TLS)
	if err != nil {
		return nil, nil, fmt.Errorf("storage: RESP listener (--resp-addr): %w", err)
	}
	if o.OnListenRESP != nil {
		o.OnListenRESP(bound)
	}
	log.Info("serving RESP (cluster mode)", "resp_addr", bound.String(), "tls", o.TLS != nil)
	return bound, stop, nil
}
