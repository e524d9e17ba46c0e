// Package storage runs a slotkv storage node: a Badger store laid out by
// slot (internal/store), the node's identity, topology and slot states
// (internal/node), the migration building blocks (internal/migration), and
// the StorageService, NodeService and MigrationService gRPC APIs with their
// REST gateway (internal/grpcapi), served through pkg/server.
//
// The topology is etcd's (--etcd-endpoints, Options.Common.Etcd, required;
// etcd.go): the node watches it and installs each version, serves an
// imported slot only once the job's hand-off record is there too (the
// migrator commits it with the topology), and registers under a lease. There is no other way to give a node a topology (NodeService
// only reads it). While etcd is unreachable it serves from the topology and
// slot states on its disk.
//
// cmd/slotkv-storage only turns flags into Options and calls Run; tests
// call Run in process on 127.0.0.1:0 and learn the ports from OnListen.
package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/slotkv/slotkv/gen"
	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/limits"
	"github.com/slotkv/slotkv/pkg/server"
	"github.com/slotkv/slotkv/pkg/topostore"
	"github.com/slotkv/slotkv/services/storage/internal/grpcapi"
	"github.com/slotkv/slotkv/services/storage/internal/migration"
	"github.com/slotkv/slotkv/services/storage/internal/node"
	"github.com/slotkv/slotkv/services/storage/internal/store"
)

// Default limits, re-exported for flags and documentation.
const (
	DefaultMaxKeyBytes   = grpcapi.DefaultMaxKeyBytes
	DefaultMaxValueBytes = grpcapi.DefaultMaxValueBytes
	DefaultMaxBatch      = grpcapi.DefaultMaxBatch
	// DefaultMaxIngestBytes caps the key + value bytes of one Ingest batch.
	DefaultMaxIngestBytes = grpcapi.DefaultMaxIngestBytes
	// DefaultMaxImportStreams caps the migration Import streams open at once.
	DefaultMaxImportStreams = migration.DefaultMaxImportStreams
)

// Options configures a storage node. Start from DefaultOptions.
type Options struct {
	// NodeID is the node's stable id. Required. The first start records it
	// in DataDir; starting the same directory with another id fails.
	NodeID string
	// DataDir holds the Badger database. Required.
	DataDir string
	// Common: listen addresses (HTTPAddr "" disables REST and the
	// /healthz, /readyz probes), shutdown bound, token and TLS, set by
	// the shared flags (server.Flags).
	// Its AdvertiseGRPC and AdvertiseHTTP are the addresses this node
	// reports (GetNodeInfo, its etcd registration).
	server.Common
	// RESPAddr, when set, serves the Redis protocol in cluster mode for
	// the slots this node owns (pkg/resp): -MOVED to the owner's RESP
	// address, -TRYAGAIN while a slot is frozen, CLUSTER SLOTS and friends
	// from the topology. AdvertiseRESP is the address reported to peers
	// (GetNodeInfo, hence the topology); empty means the bound address.
	RESPAddr, AdvertiseRESP string
	// OnListenRESP is called with the bound RESP address before OnListen.
	OnListenRESP func(net.Addr)

	// MaxKeyBytes, MaxValueBytes and MaxBatch bound requests (MaxBatch also
	// the records of one Ingest batch); MaxIngestBytes bounds the key and
	// value bytes of one Ingest batch. Zero means the defaults.
	MaxKeyBytes, MaxValueBytes, MaxBatch int
	MaxIngestBytes                       int
	// MaxImportStreams caps the migration Import streams this node accepts
	// at once (one more is refused with ResourceExhausted), so parallel
	// jobs cannot exhaust it. Zero means DefaultMaxImportStreams.
	MaxImportStreams int

	// SyncWrites fsyncs every commit before acknowledging it.
	SyncWrites bool
	// MemTableBytes and BlockCacheBytes tune Badger; zero means the store
	// defaults (64 MiB memtables, 256 MiB block cache).
	MemTableBytes, BlockCacheBytes int64
	// ValueThreshold is the value size from which Badger keeps a value in
	// its value log instead of the LSM tree (store.Options.ValueThreshold):
	// 0 is the store's default (256 bytes), 1 MiB keeps every value in the
	// tree. ValueLogGCInterval is how often the value log's garbage is
	// collected: 0 is the store's default (5 minutes), negative never.
	// WritebackInterval is how often the dirty pages of Badger's logs are
	// handed to the disk, so a sync has little left to write: 0 is the
	// store's default (100 ms), negative never.
	ValueThreshold     int64
	ValueLogGCInterval time.Duration
	WritebackInterval  time.Duration
	// HeldKeysBytes caps the memory a migration snapshot spends recording
	// the keys it sends, for the cleanup after the hand-off
	// (store.Options.HeldKeysBytes): 0 is the store's default (64 MiB),
	// negative records nothing.
	HeldKeysBytes int

	// EtcdLeaseTTL is the lease of the node's registration in etcd (with
	// Common.Etcd): a node that stops renewing it is listed dead this long
	// after. Zero means topostore.DefaultLeaseTTL.
	EtcdLeaseTTL time.Duration

	// Logger receives the node's logs; nil means slog.Default().
	Logger *slog.Logger
	// TracerProvider makes server spans; nil means none (the trace
	// context still propagates).
	TracerProvider trace.TracerProvider
	// MeterProvider receives the RPC metrics and the service's own; nil
	// means the global one (a no-op unless installed).
	MeterProvider metric.MeterProvider
	// MetricsHandler, when set, serves GET /metrics on the HTTP port.
	MetricsHandler http.Handler
	// OnListen is called once both listeners are bound, with their actual
	// addresses (http is nil when HTTP is disabled).
	OnListen func(grpc, http net.Addr)
}

// DefaultOptions returns the defaults: gRPC on 127.0.0.1:7100, HTTP on 127.0.0.1:8100, data in
// ./data, default limits. NodeID must still be set.
func DefaultOptions() Options {
	return Options{
		DataDir: "data",
		// Loopback: a node reachable from elsewhere is a decision (a
		// token, or --insecure), see server.CheckExposure.
		Common:         server.Common{GRPCAddr: "127.0.0.1:7100", HTTPAddr: "127.0.0.1:8100"},
		MaxKeyBytes:    DefaultMaxKeyBytes,
		MaxValueBytes:  DefaultMaxValueBytes,
		MaxBatch:       DefaultMaxBatch,
		MaxIngestBytes: DefaultMaxIngestBytes,

		MaxImportStreams: DefaultMaxImportStreams,
		EtcdLeaseTTL:     topostore.DefaultLeaseTTL,
	}
}

const serviceName = "slotkv-storage"

// maxValueThreshold is the largest value threshold Badger accepts.
const maxValueThreshold = 1 << 20

// ErrConfig marks invalid Options.
var ErrConfig = errors.New("storage: invalid options")

// Run opens the store in DataDir, serves the storage node until ctx is
// done, then shuts down gracefully and closes the store. It returns nil
// after a requested shutdown, or the error that prevented startup or
// stopped a listener.
func Run(ctx context.Context, o Options) (err error) {
	switch {
	case o.NodeID == "":
		return fmt.Errorf("%w: a node id is required (--node-id)", ErrConfig)
	case o.DataDir == "":
		return fmt.Errorf("%w: a data directory is required (--data-dir)", ErrConfig)
	case o.GRPCAddr == "":
		return fmt.Errorf("%w: a gRPC listen address is required (--grpc-addr)", ErrConfig)
	case !o.Etcd.Enabled():
		return fmt.Errorf("%w: the control plane's etcd is required (--etcd-endpoints): the node takes its topology from there", ErrConfig)
	case o.ValueThreshold < 0 || o.ValueThreshold > maxValueThreshold:
		return fmt.Errorf("%w: --value-threshold=%d must be within 0-%d bytes (0: the default, %d)",
			ErrConfig, o.ValueThreshold, maxValueThreshold, store.DefaultValueThreshold)
	case o.MaxBatch < 0 || o.MaxIngestBytes < 0 || o.MaxImportStreams < 0:
		return fmt.Errorf("%w: negative limit (--max-batch=%d, --max-ingest-bytes=%d, --max-import-streams=%d)",
			ErrConfig, o.MaxBatch, o.MaxIngestBytes, o.MaxImportStreams)
	}
	if err := (limits.KV{MaxKeyBytes: o.MaxKeyBytes, MaxValueBytes: o.MaxValueBytes}).Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	// pkg/server adds service=<Name> to its own lines; the rest of the node
	// logs through log, which carries it too.
	base := log.With("node_id", o.NodeID)
	log = base.With("service", serviceName)

	if err := os.MkdirAll(o.DataDir, 0o755); err != nil {
		return fmt.Errorf("storage: data directory: %w", err)
	}
	so := store.DefaultOptions(o.DataDir).WithSyncWrites(o.SyncWrites).WithLogger(log).WithHeldKeysBytes(o.HeldKeysBytes)
	if o.MemTableBytes > 0 {
		so = so.WithMemTableSize(o.MemTableBytes)
	}
	if o.BlockCacheBytes > 0 {
		so = so.WithBlockCacheSize(o.BlockCacheBytes)
	}
	so = so.WithValueThreshold(o.ValueThreshold).WithValueLogGCInterval(o.ValueLogGCInterval).WithWritebackInterval(o.WritebackInterval)
	st, err := store.Open(so)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := st.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	n, err := node.Open(st, o.NodeID)
	if err != nil {
		return err
	}
	if t := n.Topology(); t != nil {
		log.Info("loaded topology", "version", t.Version(), "served", fmt.Sprint(n.Served()))
	}
	mig, err := migration.Open(st, n, migration.Options{MaxImportStreams: o.MaxImportStreams, Logger: log})
	if err != nil {
		return err
	}
	// Before the store closes (deferred above): open snapshots are Badger
	// transactions.
	defer mig.Close()
	for _, j := range mig.List() {
		log.Info("loaded migration", "job_id", j.Job, "role", j.Role.String(), "ranges", fmt.Sprint(j.Ranges), "peer", j.Peer, "frozen", j.Frozen, "head_seq", j.HeadSeq)
	}

	// The control plane in etcd: the topology comes from there (watched),
	// the only way a node is given one. Stopped before the migrations and
	// the store.
	cp, err := startControlPlane(ctx, o, n, log)
	if err != nil {
		return fmt.Errorf("%w: --etcd-endpoints: %v", ErrConfig, err)
	}
	defer cp.stop()

	unregister, err := registerMetrics(o.MeterProvider, st, n, log)
	if err != nil {
		return err
	}
	defer unregister()

	lim := grpcapi.Limits{MaxKeyBytes: o.MaxKeyBytes, MaxValueBytes: o.MaxValueBytes, MaxBatch: o.MaxBatch, MaxIngestBytes: o.MaxIngestBytes}.WithDefaults()

	// The advertised addresses are known only once the listeners are
	// bound; handlers read them through this pointer.
	var self atomic.Pointer[[2]string]
	self.Store(&[2]string{o.AdvertiseGRPC, o.AdvertiseHTTP})
	cfg := grpcapi.Config{
		Store:     st,
		Node:      n,
		Limits:    lim,
		Self:      func() (string, string) { a := self.Load(); return a[0], a[1] },
		Counts:    grpcapi.NewRPCCounts(),
		Migration: mig,
		Logger:    log,
	}
	var respAddr atomic.Pointer[string]
	cfg.SelfRESP = func() string {
		if a := respAddr.Load(); a != nil {
			return *a
		}
		return ""
	}
	storageSvc, nodeSvc, migSvc := grpcapi.NewStorageService(cfg), grpcapi.NewNodeService(cfg), grpcapi.NewMigrationService(cfg)

	if o.RESPAddr != "" {
		bound, stop, err := serveRESP(ctx, o, storageSvc, n, lim, log)
		if err != nil {
			return err
		}
		// Before the store closes (deferred above).
		defer stop()
		a := o.AdvertiseRESP
		if a == "" {
			a = server.Advertised(bound)
		}
		respAddr.Store(&a)
	}

	return server.Run(ctx, server.Options{
		Name:      serviceName,
		GRPCAddr:  o.GRPCAddr,
		HTTPAddr:  o.HTTPAddr,
		Tokens:    o.Tokens,
		Insecure:  o.Insecure,
		TLS:       o.TLS,
		ClientTLS: o.ClientTLS,
		// Room for a maximal key and value, or a maximal Ingest batch (its
		// bytes plus a little framing per record), in one message, even when
		// the limits are raised above the shared default.
		MaxRecvMsgSize: max(dial.MaxMsgSize, lim.MaxValueBytes+lim.MaxKeyBytes+(1<<20),
			lim.MaxIngestBytes+lim.MaxBatch*16+(1<<20)),
		// REST bodies: room for a maximal value as JSON (413 beyond).
		MaxBodyBytes:    server.BodyBytesFor(lim.MaxValueBytes),
		TracerProvider:  o.TracerProvider,
		MeterProvider:   o.MeterProvider,
		MetricsHandler:  o.MetricsHandler,
		OpenAPI:         gen.StorageOpenAPI,
		Logger:          base,
		ShutdownTimeout: o.ShutdownTimeout,
		// Count data RPCs (rpc_counts in GetNodeInfo), refused ones included.
		ServerOptions: []grpc.ServerOption{
			grpc.ChainUnaryInterceptor(cfg.Counts.UnaryInterceptor()),
			grpc.ChainStreamInterceptor(cfg.Counts.StreamInterceptor()),
			// Imports keep their packed entries in the received buffer.
			grpc.ForceServerCodecV2(grpcapi.ImportCodec()),
		},
		Register: func(s *grpc.Server) {
			storagev1.RegisterStorageServiceServer(s, storageSvc)
			storagev1.RegisterNodeServiceServer(s, nodeSvc)
			storagev1.RegisterMigrationServiceServer(s, migSvc)
		},
		Gateway: func(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error {
			if err := storagev1.RegisterStorageServiceHandler(ctx, mux, conn); err != nil {
				return err
			}
			if err := storagev1.RegisterNodeServiceHandler(ctx, mux, conn); err != nil {
				return err
			}
			return storagev1.RegisterMigrationServiceHandler(ctx, mux, conn)
		},
		Ready: func(context.Context) error { return st.Ready() },
		OnListen: func(g, h net.Addr) {
			a := [2]string{o.AdvertiseGRPC, o.AdvertiseHTTP}
			if a[0] == "" {
				a[0] = server.Advertised(g)
			}
			if a[1] == "" && h != nil {
				a[1] = server.Advertised(h)
			}
			self.Store(&a)
			if cp != nil {
				cp.register(&clusterv1.Node{Id: o.NodeID, GrpcAddress: a[0], HttpAddress: a[1], RespAddress: cfg.SelfRESP()})
			}
			log.Info("storage node ready", "advertise_grpc", a[0], "advertise_http", a[1], "data_dir", o.DataDir)
			if o.OnListen != nil {
				o.OnListen(g, h)
			}
		},
	})
}
