// Package migrator is slotkv's migration service: it moves slot ranges
// from one storage node to another while clients keep reading and writing,
// driving the storage nodes' MigrationService building blocks.
//
// A job goes PENDING -> PREPARE -> SNAPSHOT -> VERIFY -> CATCH_UP ->
// HANDOFF -> CLEANUP -> SUCCEEDED:
//
//   - PREPARE: BeginMigration on the destination (IMPORTING), then on the
//     source (MIGRATING, change capture on), at the planned topology version.
//   - SNAPSHOT: OpenSnapshot on the source, then P streams (parallelism; 0 =
//     GOMAXPROCS, never more than the slots, never fewer than one), each a
//     SnapshotScan of its sub-range piped into its own Import stream
//     ("snap-<i>", seq = batch number), sharing one byte-rate limiter that
//     UpdateMigration changes while they run (with the batch size).
//   - VERIFY: the source's SnapshotDigest against the destination's digest
//     of what it imported, per slot, before any change is applied; a
//     mismatch fails the job naming the first differing slot.
//   - CATCH_UP: ReadChanges -> Import ("changes", seq = change seq of the
//     batch's last entry) in rounds until the lag is under the threshold or
//     the rounds are used up.
//   - HANDOFF: Freeze the source, drain the changes up to the final seq,
//     confirm the destination applied them, persist the commit point with
//     the new topology (version + 1), commit it in etcd in one transaction,
//     with the job's hand-off record (the frozen source serves nothing of
//     the slots, reads included), then wait for the destination to serve
//     them. The nodes follow etcd's watch; nothing is pushed to them. The
//     write pause (Freeze to the destination serving) is recorded as
//     write_pause_ms; nothing slow runs inside it. EndMigration(COMMITTED) on both nodes.
//   - CLEANUP: DeleteSlots on the source (small batches; writes to other
//     slots never stall).
//
// Before the commit point, a failure or a cancel stops and waits for every
// stream and then ends the job ABORTED on both nodes (the destination drops
// what it imported, the source's slots return to OWNED); the job reports
// the first error and the sub-range it hit. A node that cannot be reached
// is retried every RollbackRetryInterval in the background (persisted, so
// a restart continues it). After the commit point the job only rolls
// forward, retrying.
//
// Restarts: the job records are in etcd. A job that had not reached its
// commit point is not resumed: it is rolled back and ends
// FAILED with "migrator restarted during PHASE" (resuming a snapshot would
// need every stream's position to be durable on both sides, and rolling
// back is always safe). A committed job rolls forward.
//
// etcd (--etcd-endpoints) is required: it is the only source of the
// topology and of the nodes, and the only place a hand-off commits.
//
// High availability: the job records live in etcd (jobs/migrations/<job>
// under the prefix), and several replicas run at once. They elect a leader (pkg/leader, role "migrator",
// each named by its advertised gRPC address); only the leader runs jobs,
// and every record it writes, the hand-off commit included, is fenced by
// its term. A new leader takes the jobs over as a restart does: it rolls
// back the uncommitted ones and forward the committed ones, with no
// operator action. A replica whose term ends stops its jobs where they
// are, without a rollback. Followers answer GetMigration, ListMigrations
// and WatchMigration from the records in etcd and forward StartMigration,
// UpdateMigration and CancelMigration to the leader.
//
// Testing aid: Options.PauseBeforePhase (flag --pause-before-phase, env
// SLOTKV_PAUSE_BEFORE_PHASE) makes every job wait at the start of the named
// phases (after the phase is persisted and visible in the API) until it is
// canceled or PauseTimeout (--pause-before-phase-timeout, default 30s)
// passes, so end-to-end tests can cancel or kill the migrator in a given
// phase deterministically. Do not use it in production.
//
// Metrics: pkg/server has no /metrics endpoint yet, so the migrator exports
// none; progress is in the API (GetMigration, WatchMigration) and in a log
// line every ProgressInterval.
package migrator

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/slotkv/slotkv/gen"
	migratorv1 "github.com/slotkv/slotkv/gen/slotkv/migrator/v1"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/leader"
	"github.com/slotkv/slotkv/pkg/route"
	"github.com/slotkv/slotkv/pkg/server"
	"github.com/slotkv/slotkv/pkg/topostore"
	"github.com/slotkv/slotkv/services/migrator/internal/migrate"
)

// ServiceName names the service in logs and traces.
const ServiceName = "slotkv-migrator"

// Phase is a job phase (re-exported for Options.PauseBeforePhase).
type Phase = migratorv1.Phase

// ParsePhase parses "snapshot", "SNAPSHOT" or "PHASE_SNAPSHOT".
func ParsePhase(s string) (Phase, error) { return migrate.ParsePhase(s) }

// Options configures the migrator. DefaultOptions gives the defaults.
type Options struct {
	// Common: listen addresses (HTTPAddr "" turns REST, /healthz and
	// /readyz off), shutdown bound, token (required from callers, sent to
	// storage) and TLS (PeerTLS dials the storage nodes), set by the
	// shared flags (server.Flags).
	server.Common
	// DataDir is not used: the job records are in etcd (Common.Etcd,
	// required), as is the topology.
	DataDir string

	// Defaults of a job's knobs (a request's zero values take them).
	DefaultParallelism int    // snapshot streams; 0 = GOMAXPROCS
	RateBytesPerSecond uint64 // shared byte rate of a job; 0 = unlimited
	BatchRecords       uint32 // records per batch
	LagThreshold       uint64 // catch-up ends below this lag
	MaxCatchUpRounds   uint32 // catch-up rounds before the hand-off anyway

	// HandoffTimeout bounds the hand-off from Freeze to the commit point: a
	// stuck node cannot hold the write pause longer; the job rolls back.
	HandoffTimeout time.Duration
	// RollbackRetryInterval between retries of an unfinished rollback or
	// roll-forward.
	RollbackRetryInterval time.Duration
	// ProgressInterval between progress log lines (and saves) of a job.
	ProgressInterval time.Duration
	// CleanupKeysPerSecond paces the source's purge of the slots its cleanup
	// dropped; 0: as fast as small batches go.
	CleanupKeysPerSecond uint64
	// MaxRunningJobs caps the migrations running at once; StartMigration
	// beyond it gets ResourceExhausted naming the limit.
	MaxRunningJobs int

	// PauseBeforePhase and PauseTimeout: testing aid (see the package doc).
	PauseBeforePhase []Phase
	PauseTimeout     time.Duration
	// PhaseHook is called at the start of every phase of every job; an
	// error fails the job. Testing aid for in-process tests.
	PhaseHook func(ctx context.Context, jobID string, phase Phase) error
	// CommitHook, when set, runs before each etcd commit transaction of a
	// hand-off (with --etcd-endpoints). Testing aid for in-process tests.
	CommitHook func(ctx context.Context, jobID string)
	// PauseAfterCommit (--pause-after-commit) holds every job for
	// PauseTimeout right after etcd committed its hand-off, so tests can
	// kill the leader in HANDOFF after the commit. Testing aid.
	PauseAfterCommit bool

	// LeaderTTL is how long a dead leader keeps its term before another
	// replica takes the jobs over (with --etcd-endpoints); 0 means
	// leader.DefaultTTL.
	LeaderTTL time.Duration

	Logger         *slog.Logger
	TracerProvider trace.TracerProvider
	// MeterProvider receives the RPC metrics and the service's own; nil
	// means the global one (a no-op unless installed).
	MeterProvider metric.MeterProvider
	// MetricsHandler, when set, serves GET /metrics on the HTTP port.
	MetricsHandler http.Handler
	// OnListen is called with the bound addresses (httpAddr nil without HTTP).
	OnListen func(grpcAddr, httpAddr net.Addr)
}

// DefaultOptions returns the defaults.
func DefaultOptions() Options {
	return Options{
		Common:                server.Common{GRPCAddr: "127.0.0.1:9093", HTTPAddr: "127.0.0.1:8083", ShutdownTimeout: 15 * time.Second},
		DataDir:               "./data/migrator",
		BatchRecords:          migrate.DefaultBatchRecords,
		LagThreshold:          migrate.DefaultLagThreshold,
		MaxCatchUpRounds:      migrate.DefaultMaxCatchUpRounds,
		RollbackRetryInterval: migrate.DefaultRollbackRetryInterval,
		HandoffTimeout:        migrate.DefaultHandoffTimeout,
		ProgressInterval:      migrate.DefaultProgressInterval,
		MaxRunningJobs:        migrate.DefaultMaxRunningJobs,
		PauseTimeout:          migrate.DefaultPauseTimeout,
	}
}

// Run serves the migrator until ctx ends. On shutdown running jobs stop
// where they are; the next start rolls them back (before their commit) or
// forward (after it).
func Run(ctx context.Context, o Options) error {
	base := o.Logger
	if base == nil {
		base = slog.Default()
	}
	log := base.With("service", ServiceName)
	// The control plane is etcd and nothing else: the topology is read
	// there (the router follows its watch), the hand-off commits there and
	// the job records live there. There is no other way to reach the
	// nodes' topology (no seed nodes, no push).
	if !o.Etcd.Enabled() {
		return errors.New("migrator: --etcd-endpoints is required (the topology and the job records are in etcd)")
	}
	dialNode := func(addr string) (*grpc.ClientConn, error) {
		return dial.New(addr, dial.Options{Token: o.Tokens.Admin, TLS: o.PeerTLS, TracerProvider: o.TracerProvider, MeterProvider: o.MeterProvider})
	}
	// Dial does not wait: a migrator started while etcd is down serves its
	// API, and a migration started meanwhile waits for etcd or fails
	// naming it.
	cli, topo, err := o.Etcd.Dial(ctx, log)
	if err != nil {
		return fmt.Errorf("migrator: --etcd-endpoints: %w", err)
	}
	defer cli.Close()
	rt, err := route.New(route.Options{Store: topo, Dial: dialNode, Logger: log})
	if err != nil {
		return fmt.Errorf("migrator: %w", err)
	}
	defer rt.Close()
	rctx, stopRouter := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { _ = rt.Run(rctx) })
	defer func() {
		stopRouter()
		wg.Wait()
	}()

	cfg := migrate.Config{
		Router:                rt,
		Topo:                  topo,
		Dial:                  dialNode,
		DefaultParallelism:    o.DefaultParallelism,
		DefaultRate:           o.RateBytesPerSecond,
		DefaultBatchRecords:   o.BatchRecords,
		DefaultLagThreshold:   o.LagThreshold,
		DefaultMaxRounds:      o.MaxCatchUpRounds,
		RollbackRetryInterval: o.RollbackRetryInterval,
		HandoffTimeout:        o.HandoffTimeout,
		ProgressInterval:      o.ProgressInterval,
		CleanupKeysPerSecond:  o.CleanupKeysPerSecond,
		MaxRunningJobs:        o.MaxRunningJobs,
		PauseBeforePhase:      o.PauseBeforePhase,
		PauseTimeout:          o.PauseTimeout,
		PhaseHook:             o.PhaseHook,
		CommitHook:            o.CommitHook,
		PauseAfterCommit:      o.PauseAfterCommit,
		Logger:                log,
		TracerProvider:        o.TracerProvider,
		MeterProvider:         o.MeterProvider,
	}
	// Highly available: the replicas elect a leader, which runs the jobs
	// from their records in etcd; the others answer reads and forward
	// writes to it.
	cfg.Etcd = cli
	rep, err := migrate.NewReplica(cfg)
	if err != nil {
		return fmt.Errorf("migrator: %w", err)
	}
	ha := newReplicaRun(&o, cli, topo, rep, log)
	ectx, stopElection := context.WithCancel(ctx)
	defer ha.close()
	defer stopElection()
	serverOpts := []grpc.ServerOption{grpc.ChainUnaryInterceptor(ha.gate.Unary)}
	// Jobs stop as soon as shutdown begins (the term ends with ctx).
	onListen := func(g, h net.Addr) {
		if err := ha.start(ectx, g); err != nil {
			log.Error("the leader election did not start; this replica only follows", "err", err)
		}
		if o.OnListen != nil {
			o.OnListen(g, h)
		}
	}

	var pauses []string
	for _, p := range o.PauseBeforePhase {
		pauses = append(pauses, p.String())
	}
	log.Info("starting", "etcd", strings.Join(o.Etcd.Endpoints, ","), "pause_before_phase", strings.Join(pauses, ","))
	return server.Run(ctx, server.Options{
		Name:            ServiceName,
		GRPCAddr:        o.GRPCAddr,
		HTTPAddr:        o.HTTPAddr,
		Tokens:          o.Tokens,
		Insecure:        o.Insecure,
		TLS:             o.TLS,
		ClientTLS:       o.ClientTLS,
		TracerProvider:  o.TracerProvider,
		MeterProvider:   o.MeterProvider,
		MetricsHandler:  o.MetricsHandler,
		OpenAPI:         gen.MigratorOpenAPI,
		Logger:          base,
		ShutdownTimeout: o.ShutdownTimeout,
		Register:        rep.Register,
		ServerOptions:   serverOpts,
		Gateway: func(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error {
			return migratorv1.RegisterMigratorServiceHandler(ctx, mux, conn)
		},
		Ready:    rt.CheckReady,
		OnListen: onListen,
	})
}

// writeMethods are the calls only the leader answers.
var writeMethods = map[string]bool{
	migratorv1.MigratorService_StartMigration_FullMethodName:  true,
	migratorv1.MigratorService_UpdateMigration_FullMethodName: true,
	migratorv1.MigratorService_CancelMigration_FullMethodName: true,
}

// replicaRun is one replica's part in the election: it campaigns once its
// gRPC address is known, and its gate (pkg/leader) forwards writes to the
// leader.
type replicaRun struct {
	o    *Options
	cli  *clientv3.Client
	topo *topostore.Store
	rep  *migrate.Replica
	log  *slog.Logger
	gate *leader.Gate
}

func newReplicaRun(o *Options, cli *clientv3.Client, topo *topostore.Store, rep *migrate.Replica, log *slog.Logger) *replicaRun {
	return &replicaRun{o: o, cli: cli, topo: topo, rep: rep, log: log, gate: leader.NewGate(leader.GateOptions{
		Write: func(m string) bool { return writeMethods[m] },
		Dial: func(addr string) (*grpc.ClientConn, error) {
			return dial.New(addr, dial.Options{TLS: o.PeerTLS, TracerProvider: o.TracerProvider, MeterProvider: o.MeterProvider})
		},
		Ready: rep.Leading,
		// A write waits out a dead leader's session and the takeover.
		Wait: cmp.Or(o.LeaderTTL, leader.DefaultTTL) + 2*time.Second,
	})}
}

// start campaigns as the replica at the bound gRPC address g, until ctx
// ends.
func (h *replicaRun) start(ctx context.Context, g net.Addr) error {
	self := h.o.AdvertisedGRPC(g)
	err := h.gate.Campaign(ctx, h.cli, leader.Options{Prefix: h.topo.Key(""), Role: "migrator", Value: self, TTL: h.o.LeaderTTL, Log: h.log}, h.rep.Lead)
	if err != nil {
		return err
	}
	h.rep.SetLeaderLookup(h.gate.Elector().Leader)
	h.log.Info("campaigning for the migrator leadership", "advertise_grpc", self)
	return nil
}

// close waits for the election to end (its context is Run's) and closes
// the connections to the other replicas.
func (h *replicaRun) close() { h.gate.Close() }
