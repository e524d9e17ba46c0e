// Package migrate runs slot-range migration jobs: planning, the phases
// (prepare, snapshot, verify, catch-up, hand-off, cleanup), rollback before
// the commit and roll-forward after it, persistence of the job records,
// and the MigratorService gRPC API.
//
// The control plane is etcd (Config.Topo, Config.Etcd), and nothing else:
// the hand-off commits there in one transaction and the nodes follow it
// (etcd.go); nothing is pushed to the nodes. The records are in etcd too,
// where the replicas of a highly available migrator share them
// (replica.go): the leader's Manager writes them fenced by its term, and a
// new leader takes them over.
package migrate

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"

	migratorv1 "github.com/slotkv/slotkv/gen/slotkv/migrator/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/jobstore"
	"github.com/slotkv/slotkv/pkg/route"
	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/topology"
	"github.com/slotkv/slotkv/pkg/topostore"
)

// Defaults of Config; they hold up on a laptop and on a real cluster.
const (
	DefaultBatchRecords          = 1000
	DefaultLagThreshold          = 1000
	DefaultMaxCatchUpRounds      = 10
	DefaultRollbackRetryInterval = 2 * time.Second
	DefaultProgressInterval      = 5 * time.Second
	DefaultPauseTimeout          = 30 * time.Second
	// DefaultMaxRunningJobs caps the migrations running at once: each
	// holds P streams on its source and destination.
	DefaultMaxRunningJobs = 16
	// MaxBatchRecords bounds batch_records (a batch is one gRPC message).
	MaxBatchRecords = 100000
	// batchBytes caps the bytes of one snapshot batch and one change read;
	// the rate limiter's burst is at least this.
	batchBytes = 1 << 20
	// importWindow is how many snapshot batches one stream keeps in flight
	// (sent, not yet acknowledged) on its Import stream: more than the
	// destination commits at once (its import pipeline), so its writer
	// always has the next batch at hand.
	importWindow = 16
	// rpcTimeout bounds unary calls to storage nodes that are not part of a
	// long phase (begin, freeze, end).
	rpcTimeout = 30 * time.Second
	// shutdownRollbackTimeout bounds each abort call made at shutdown.
	shutdownRollbackTimeout = 5 * time.Second
	// DefaultHandoffTimeout bounds the hand-off from Freeze to the commit
	// point (the write pause before the commit).
	DefaultHandoffTimeout = 10 * time.Second
)

// Config configures a Manager.
type Config struct {
	// Router gives the topology (Refresh) of the cluster.
	Router *route.Router
	// Topo is the control plane in etcd (required): the hand-off commits
	// there in one transaction and the nodes follow it (see etcd.go);
	// nothing is pushed to the nodes. The Router should read the same.
	Topo *topostore.Store
	// Dial opens a connection to a storage node (token, TLS and tracing
	// are its business). Every job opens its own connections and closes
	// them when it ends, whatever the path.
	Dial func(addr string) (*grpc.ClientConn, error)

	// Defaults of the knobs of a job (StartMigration's zero values).
	DefaultParallelism  int    // 0: GOMAXPROCS
	DefaultRate         uint64 // bytes per second, 0: unlimited
	DefaultBatchRecords uint32
	DefaultLagThreshold uint64
	DefaultMaxRounds    uint32

	// RollbackRetryInterval between attempts to end an aborted job on a
	// node that did not answer, and to roll a committed job forward.
	RollbackRetryInterval time.Duration
	// ProgressInterval between progress log lines and progress saves.
	ProgressInterval time.Duration
	// HandoffTimeout bounds the hand-off from Freeze to the commit point;
	// past it the job rolls back and the source is unfrozen. 0:
	// DefaultHandoffTimeout.
	HandoffTimeout time.Duration
	// CleanupKeysPerSecond paces the source's DeleteSlots; 0 = as fast as
	// the node's small batches go (it never blocks other writes).
	CleanupKeysPerSecond uint64
	// MaxRunningJobs caps the jobs that have not ended (PENDING to
	// CLEANUP); StartMigration beyond it is refused with
	// ResourceExhausted. 0: DefaultMaxRunningJobs.
	MaxRunningJobs int

	// PauseBeforePhase makes jobs wait at the start of these phases until
	// they are canceled or PauseTimeout has passed. Testing aid.
	PauseBeforePhase []migratorv1.Phase
	PauseTimeout     time.Duration
	// PhaseHook, when set, is called at the start of every phase (after
	// the phase is persisted); an error fails the job. Testing aid for
	// in-process tests.
	PhaseHook func(ctx context.Context, jobID string, phase migratorv1.Phase) error
	// CommitHook, when set, runs before each etcd commit transaction of a
	// hand-off (etcd mode), e.g. to commit a concurrent change first.
	// Testing aid for in-process tests.
	CommitHook func(ctx context.Context, jobID string)
	// PauseAfterCommit holds every job for PauseTimeout right after etcd
	// committed its hand-off (before the destination serves), so end-to-end tests
	// can kill the leader in HANDOFF after the commit. Testing aid.
	PauseAfterCommit bool

	// Etcd and Fence (required) keep the job records in etcd under Topo's
	// prefix (jobs/migrations/<job>): every write, the
	// hand-off commit included, is guarded by Fence (the leader's term,
	// see Replica), so a deposed leader's writes change nothing.
	Etcd  *clientv3.Client
	Fence jobstore.Fence

	Logger         *slog.Logger
	TracerProvider trace.TracerProvider
	// MeterProvider receives the job gauges (metrics.go); nil = none.
	MeterProvider metric.MeterProvider
}

func (c *Config) setDefaults() {
	if c.DefaultBatchRecords == 0 {
		c.DefaultBatchRecords = DefaultBatchRecords
	}
	if c.DefaultLagThreshold == 0 {
		c.DefaultLagThreshold = DefaultLagThreshold
	}
	if c.DefaultMaxRounds == 0 {
		c.DefaultMaxRounds = DefaultMaxCatchUpRounds
	}
	if c.RollbackRetryInterval <= 0 {
		c.RollbackRetryInterval = DefaultRollbackRetryInterval
	}
	if c.ProgressInterval <= 0 {
		c.ProgressInterval = DefaultProgressInterval
	}
	if c.HandoffTimeout <= 0 {
		c.HandoffTimeout = DefaultHandoffTimeout
	}
	if c.PauseTimeout <= 0 {
		c.PauseTimeout = DefaultPauseTimeout
	}
	if c.MaxRunningJobs <= 0 {
		c.MaxRunningJobs = DefaultMaxRunningJobs
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.TracerProvider == nil {
		c.TracerProvider = noop.NewTracerProvider()
	}
	if c.MeterProvider == nil {
		c.MeterProvider = metricnoop.NewMeterProvider()
	}
}

var (
	errShutdown = errors.New("migrator shutting down")
	errCanceled = errors.New("canceled by request")
	// errTermEnded: this replica's leadership term ended (Abandon).
	errTermEnded = errors.New("this migrator replica no longer leads")
)

// Manager owns the jobs.
type Manager struct {
	migratorv1.UnimplementedMigratorServiceServer

	cfg    Config
	log    *slog.Logger
	tracer trace.Tracer
	st     jobstore.Records[record]

	ctx  context.Context // ends at shutdown (cause errShutdown)
	stop context.CancelCauseFunc
	wg   sync.WaitGroup

	// commitMu serializes the hand-off of jobs, so two commits never build
	// their topology from the same version.
	commitMu sync.Mutex

	mu   sync.Mutex
	jobs map[string]*job

	unregisterMetrics func() error

	// abandoned: the leadership term ended (Abandon); jobs stop without a
	// rollback and without writing their records, for the next leader.
	abandoned atomic.Bool

	// putHook, when set (tests, with setPutHook), runs before each save of
	// a job record; its error is the save's, and the record is not
	// written. Atomic: a test swaps it while jobs save their progress.
	putHook atomic.Pointer[func(r *record) error]
}

// setPutHook installs (or, with nil, removes) the test hook of put.
func (m *Manager) setPutHook(h func(r *record) error) {
	if h == nil {
		m.putHook.Store(nil)
		return
	}
	m.putHook.Store(&h)
}

// put saves a job record in the job store.
func (m *Manager) put(r *record) error {
	if h := m.putHook.Load(); h != nil {
		if err := (*h)(r); err != nil {
			return err
		}
	}
	return m.st.Put(r.ID, r)
}

// Open opens the job store, loads the jobs and continues those that did
// not end: a job that had not reached its commit point is rolled back and
// fails ("migrator restarted during PHASE"); a committed one rolls forward.
func Open(cfg Config) (*Manager, error) {
	cfg.setDefaults()
	if cfg.Router == nil || cfg.Dial == nil {
		return nil, errors.New("migrate: Config.Router and Config.Dial are required")
	}
	st, err := openRecords(cfg)
	if err != nil {
		return nil, err
	}
	ctx, stop := context.WithCancelCause(context.Background())
	m := &Manager{
		cfg: cfg, log: cfg.Logger, st: st, ctx: ctx, stop: stop,
		tracer: cfg.TracerProvider.Tracer("github.com/slotkv/slotkv/services/migrator"),
		jobs:   map[string]*job{},
	}
	recs, err := st.Load()
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	if m.unregisterMetrics, err = m.registerMetrics(cfg.MeterProvider); err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("migrate: metrics: %w", err)
	}
	for _, r := range recs {
		j, err := m.newJob(r)
		if err != nil {
			m.log.Error("skipping a job record that cannot be loaded", "job", r.ID, "err", err)
			continue
		}
		m.jobs[r.ID] = j
		switch {
		case r.Phase == migratorv1.Phase_PHASE_SUCCEEDED && !r.PushedAll:
			j.closeEnded()
			m.wg.Go(func() { j.resumeCommitted() })
		case terminal(r.Phase) && !r.RollbackPending:
			j.closeEnded()
		case terminal(r.Phase):
			m.log.Info("continuing the rollback of a job", "job", r.ID, "phase", phaseName(r.Phase))
			m.wg.Go(func() { j.retryRollback() })
		case r.Committing && !r.EtcdCommitted:
			m.log.Info("a job reached its commit point before a restart; etcd decides whether it committed", "job", r.ID, "phase", phaseName(r.Phase))
			m.wg.Go(func() { j.resumeEtcdCommit() })
		case r.Committing:
			m.log.Info("rolling a committed job forward after a restart", "job", r.ID, "phase", phaseName(r.Phase))
			m.wg.Go(func() { j.resumeCommitted() })
		default:
			m.log.Warn("rolling back a job interrupted by a restart", "job", r.ID, "phase", phaseName(r.Phase))
			cause := fmt.Errorf("migrator restarted during %s", phaseName(r.Phase))
			if cfg.Fence != nil {
				// A replica took over from the last leader (dead, cut off
				// from etcd, or stopped).
				cause = fmt.Errorf("migrator restarted during %s (the leading replica changed: the new leader took the job over from its record)", phaseName(r.Phase))
			}
			m.wg.Go(func() { j.fail(cause) })
		}
	}
	return m, nil
}

// openRecords opens the job store in etcd, every write behind the fence.
func openRecords(cfg Config) (jobstore.Records[record], error) {
	if cfg.Etcd == nil || cfg.Topo == nil || cfg.Fence == nil {
		return nil, errors.New("migrate: the job records in etcd need Config.Etcd, Config.Topo and Config.Fence")
	}
	return jobstore.OpenEtcd[record](cfg.Etcd, recordsPrefix(cfg.Topo), cfg.Fence)
}

// recordsPrefix is where the job records are in etcd.
func recordsPrefix(st *topostore.Store) string { return st.Key("jobs/migrations/") }

// deposed reports an error of a write refused because this replica no
// longer leads (its fence failed).
func deposed(err error) bool {
	return errors.Is(err, jobstore.ErrNotLeader) || errors.Is(err, topostore.ErrFenced) || errors.Is(err, errTermEnded)
}

// Abandon stops every job where it is, for the end of a leadership term:
// no rollback, no record written (the next leader takes the jobs over from
// their records; its fence makes ours fail anyway), and waits for them.
func (m *Manager) Abandon() {
	m.abandoned.Store(true)
	m.stop(errTermEnded)
	m.wg.Wait()
}

// Shutdown stops every job where it is (state kept: the next start rolls
// them back or forward) and waits for them.
func (m *Manager) Shutdown() {
	m.stop(errShutdown)
	m.wg.Wait()
}

// Close shuts down and closes the store.
func (m *Manager) Close() error {
	m.Shutdown()
	if err := m.unregisterMetrics(); err != nil {
		m.log.Warn("unregistering the job metrics failed", "err", err)
	}
	return m.st.Close()
}

func (m *Manager) shuttingDown() bool { return m.ctx.Err() != nil }

// sleep waits d or until shutdown; false on shutdown.
func (m *Manager) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-m.ctx.Done():
		return false
	}
}

var jobIDRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

func newJobID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "mig-" + time.Now().UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}

// plan validates a request against the topology and the running jobs and
// registers the job. It is the whole of StartMigration but the start.
func (m *Manager) plan(ctx context.Context, req *migratorv1.StartMigrationRequest) (*job, error) {
	rs, err := slot.ParseRangeSet(req.GetRanges())
	if err != nil {
		return nil, rpcerr.InvalidField("ranges", "%v", err)
	}
	src, dst := req.GetSourceNodeId(), req.GetDestinationNodeId()
	switch {
	case src == "":
		return nil, rpcerr.InvalidField("source_node_id", "required")
	case dst == "":
		return nil, rpcerr.InvalidField("destination_node_id", "required")
	case src == dst:
		return nil, rpcerr.InvalidField("destination_node_id", "must differ from source_node_id (both %q)", src)
	case req.GetBatchRecords() > MaxBatchRecords:
		return nil, rpcerr.InvalidField("batch_records", "%d is above the limit of %d", req.GetBatchRecords(), MaxBatchRecords)
	}
	verify := req.GetVerify()
	switch verify {
	case migratorv1.Verify_VERIFY_UNSPECIFIED:
		verify = migratorv1.Verify_VERIFY_STREAM
	case migratorv1.Verify_VERIFY_STREAM, migratorv1.Verify_VERIFY_FULL:
	default:
		return nil, rpcerr.InvalidField("verify", "%v is not a verification mode (VERIFY_STREAM or VERIFY_FULL)", verify)
	}
	id := req.GetJobId()
	if id == "" {
		id = newJobID()
	} else if !jobIDRe.MatchString(id) {
		return nil, rpcerr.InvalidField("job_id", "%q: use 1-64 letters, digits, '.', '_' or '-'", id)
	}
	topo, err := m.cfg.Router.Refresh(ctx)
	if err != nil {
		// Never plan on a cached topology: etcd decides, and the job could
		// not commit anyway.
		return nil, fmt.Errorf("%w: cannot read the topology from %s (is etcd up?): %v", rpcerr.ErrUnavailable, m.cfg.Router.Source(), err)
	}
	if topo == nil {
		if err == nil {
			err = rpcerr.ErrNoTopology
		}
		return nil, fmt.Errorf("%w: no topology from the storage nodes: %v", rpcerr.ErrUnavailable, err)
	}
	srcNode, ok := topo.Node(src)
	if !ok {
		return nil, rpcerr.InvalidField("source_node_id", "node %q is not in topology version %d", src, topo.Version())
	}
	dstNode, ok := topo.Node(dst)
	if !ok {
		return nil, rpcerr.InvalidField("destination_node_id", "node %q is not in topology version %d", dst, topo.Version())
	}
	owned, err := slot.NewRangeSet(topo.RangesOf(src)...)
	if err != nil {
		return nil, err
	}
	if missing := rs.Subtract(owned); !missing.IsEmpty() {
		return nil, fmt.Errorf("%w: source %s does not own slots %s (topology version %d%s)",
			rpcerr.ErrConflict, src, missing, topo.Version(), ownersOf(topo, missing))
	}

	p := int(req.GetParallelism())
	if p == 0 {
		p = m.cfg.DefaultParallelism
	}
	if p <= 0 {
		p = runtime.GOMAXPROCS(0)
	}
	streams := len(rs.Split(p)) // never more than slots, never fewer than 1
	// The destination caps the import streams it takes at once: a job
	// asking for more is refused now rather than failing in SNAPSHOT; a
	// default above the cap is lowered to it.
	if limit := m.importStreamLimit(ctx, dstNode); limit > 0 && streams > limit {
		if req.GetParallelism() > 0 {
			return nil, rpcerr.InvalidField("parallelism", "%d streams are more than destination %s accepts at once (its --max-import-streams is %d)",
				streams, dst, limit)
		}
		m.log.InfoContext(ctx, "parallelism lowered to the destination's import stream limit", "destination", dst, "parallelism", streams, "limit", limit)
		streams = limit
	}
	now := time.Now().UTC()
	rec := &record{
		ID: id, Ranges: rs.String(), Source: src, Destination: dst,
		SourceAddr: srcNode.GRPCAddress, DestinationAddr: dstNode.GRPCAddress,
		PlannedVersion: topo.Version(),
		Phase:          migratorv1.Phase_PHASE_PENDING,
		Parallelism:    uint32(streams),
		Rate:           cmp.Or(req.GetRateBytesPerSecond(), m.cfg.DefaultRate),
		BatchRecords:   cmp.Or(req.GetBatchRecords(), m.cfg.DefaultBatchRecords),
		LagThreshold:   cmp.Or(req.GetLagThreshold(), m.cfg.DefaultLagThreshold),
		MaxRounds:      cmp.Or(req.GetMaxCatchUpRounds(), m.cfg.DefaultMaxRounds),
		Verify:         verify,
		Created:        now, Updated: now,
	}
	j, err := m.newJob(rec)
	if err != nil {
		return nil, err
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	if _, dup := m.jobs[id]; dup {
		return nil, fmt.Errorf("%w: job %q exists", rpcerr.ErrAlreadyExists, id)
	}
	for _, o := range m.sortedJobsLocked() {
		if !o.unfinished() {
			continue
		}
		if shared := rs.Intersect(o.ranges); !shared.IsEmpty() {
			return nil, fmt.Errorf("%w: slots %s are already in unfinished job %s (%s, ranges %s, %s -> %s)",
				rpcerr.ErrConflict, shared, o.id, o.phaseName(), o.ranges, o.rec.Source, o.rec.Destination)
		}
	}
	if n := m.runningLocked(); n >= m.cfg.MaxRunningJobs {
		return nil, fmt.Errorf("%d migrations are running, the limit (MaxRunningJobs, --max-running-jobs) is %d: wait for one to end or cancel one: %w",
			n, m.cfg.MaxRunningJobs, rpcerr.ErrResourceExhausted)
	}
	if err := m.put(rec); err != nil {
		return nil, fmt.Errorf("persisting job %s: %w", id, err)
	}
	m.jobs[id] = j
	return j, nil
}

// runningLocked counts the jobs that have not ended (m.mu held).
func (m *Manager) runningLocked() int {
	n := 0
	for _, j := range m.jobs {
		j.mu.Lock()
		if !terminal(j.rec.Phase) {
			n++
		}
		j.mu.Unlock()
	}
	return n
}

// importStreamLimit asks node for the import streams it accepts at once;
// 0 when it cannot tell (the job then meets the limit, if any, in
// SNAPSHOT).
func (m *Manager) importStreamLimit(ctx context.Context, n topology.Node) int {
	cc, err := m.cfg.Router.Conn(n.GRPCAddress)
	if err == nil {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		var resp *storagev1.ListMigrationsResponse
		if resp, err = storagev1.NewMigrationServiceClient(cc).ListMigrations(cctx, &storagev1.ListMigrationsRequest{}); err == nil {
			return int(resp.GetMaxImportStreams())
		}
	}
	m.log.WarnContext(ctx, "could not ask the destination for its import stream limit", "destination", n.ID, "err", err)
	return 0
}

// ownersOf says who owns the slots of missing, e.g. "; n2 owns 5461-5470".
func ownersOf(topo *topology.Topology, missing slot.RangeSet) string {
	var out string
	for _, n := range topo.Nodes() {
		rs, err := slot.NewRangeSet(topo.RangesOf(n.ID)...)
		if err != nil {
			continue
		}
		if in := missing.Intersect(rs); !in.IsEmpty() {
			out += fmt.Sprintf("; %s owns %s", n.ID, in)
		}
	}
	all := slot.Full()
	for _, n := range topo.Nodes() {
		rs, _ := slot.NewRangeSet(topo.RangesOf(n.ID)...)
		all = all.Subtract(rs)
	}
	if in := missing.Intersect(all); !in.IsEmpty() {
		out += fmt.Sprintf("; %s unassigned", in)
	}
	return out
}

func (m *Manager) sortedJobsLocked() []*job {
	out := make([]*job, 0, len(m.jobs))
	for _, j := range m.jobs {
		out = append(out, j)
	}
	// Newest first.
	slices.SortFunc(out, func(a, b *job) int {
		return cmp.Or(b.rec.Created.Compare(a.rec.Created), cmp.Compare(b.id, a.id))
	})
	return out
}

func (m *Manager) get(id string) (*job, error) {
	if id == "" {
		return nil, rpcerr.InvalidField("job_id", "required")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	j, ok := m.jobs[id]
	if !ok {
		return nil, fmt.Errorf("%w: no migration job %q", rpcerr.ErrNotFound, id)
	}
	return j, nil
}
