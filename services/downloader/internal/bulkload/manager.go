// Package bulkload runs the downloader's bulk-load jobs: it fetches a
// dataset's manifest and data files over HTTP(S) (or file://), verifies
// them, ingests their records into the storage nodes owning their slots,
// persists every job in Badger and reports progress. See the downloader
// package documentation for the state rules.
package bulkload

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/slotkv/slotkv/pkg/dataset"
	"github.com/slotkv/slotkv/pkg/jobstore"
	"github.com/slotkv/slotkv/pkg/route"
	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/pkg/topology"
)

// Config configures a Manager. Zero fields take the defaults of
// DefaultConfig, except DataDir and Router, which are required.
type Config struct {
	DataDir string        // job store (db/) and downloads (jobs/<id>/)
	Router  *route.Router // the cluster: topology and connections

	AllowedPrefixes  []string
	AllowFileURLs    bool
	MaxManifestBytes int64
	MaxFileBytes     int64
	MaxFiles         int

	MaxDownloads            int
	MaxDownloadsPerNode     int
	BandwidthBytesPerSecond uint64

	IngestBatchRecords int
	IngestBatchBytes   int
	IngestConcurrency  int
	IngestWindow       int           // batches in flight per stream
	NodeRetryTimeout   time.Duration // how long an unavailable node is retried
	NodeRetryMin       time.Duration
	NodeRetryMax       time.Duration

	HTTPRetryMax     int
	HTTPRetryWaitMin time.Duration
	HTTPRetryWaitMax time.Duration
	HTTPTimeout      time.Duration // until response headers
	HTTPStallTimeout time.Duration // without a byte of the body

	// Statfs returns the free bytes of the file system holding path;
	// nil means syscall.Statfs.
	Statfs func(path string) (free uint64, err error)

	ProgressInterval time.Duration // progress log line and save period

	// MaxRunningJobs caps the jobs running at once (PENDING to
	// INGESTING): StartJob and ResumeJob beyond it are refused with
	// ResourceExhausted. Jobs that continue after a restart are not
	// refused (they were admitted before).
	MaxRunningJobs int

	Logger         *slog.Logger
	TracerProvider trace.TracerProvider
	// MeterProvider receives the job gauges (metrics.go); nil = none.
	MeterProvider metric.MeterProvider

	// Etcd, when set, makes this Manager one replica of a highly
	// available downloader: job records and runtime settings live in etcd
	// (not under DataDir), jobs run only during a term given to Lead, and
	// the other times reads are answered from the etcd records and writes
	// refused with ErrNotLeading. DataDir still holds the downloads.
	Etcd *EtcdConfig
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		MaxManifestBytes:    dataset.DefaultMaxManifestBytes,
		MaxFileBytes:        dataset.DefaultMaxFileBytes,
		MaxFiles:            dataset.DefaultMaxFiles,
		MaxDownloads:        4,
		MaxDownloadsPerNode: 2,
		IngestBatchRecords:  1000,
		IngestBatchBytes:    8 << 20,
		IngestConcurrency:   4,
		IngestWindow:        4,
		NodeRetryTimeout:    30 * time.Second,
		NodeRetryMin:        100 * time.Millisecond,
		NodeRetryMax:        3 * time.Second,
		HTTPRetryMax:        5,
		HTTPRetryWaitMin:    200 * time.Millisecond,
		HTTPRetryWaitMax:    5 * time.Second,
		HTTPTimeout:         30 * time.Second,
		HTTPStallTimeout:    60 * time.Second,
		ProgressInterval:    5 * time.Second,
		MaxRunningJobs:      DefaultMaxRunningJobs,
	}
}

// DefaultMaxRunningJobs is the default cap on bulk-load jobs running at
// once: each runs its own downloads (under the shared caps) and up to
// IngestConcurrency ingest streams.
const DefaultMaxRunningJobs = 16

func (c *Config) setDefaults() {
	d := DefaultConfig()
	set := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	setD := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	if c.MaxManifestBytes <= 0 {
		c.MaxManifestBytes = d.MaxManifestBytes
	}
	if c.MaxFileBytes <= 0 {
		c.MaxFileBytes = d.MaxFileBytes
	}
	set(&c.MaxFiles, d.MaxFiles)
	set(&c.MaxDownloads, d.MaxDownloads)
	set(&c.MaxDownloadsPerNode, d.MaxDownloadsPerNode)
	set(&c.IngestBatchRecords, d.IngestBatchRecords)
	set(&c.IngestBatchBytes, d.IngestBatchBytes)
	set(&c.IngestConcurrency, d.IngestConcurrency)
	set(&c.IngestWindow, d.IngestWindow)
	set(&c.MaxRunningJobs, d.MaxRunningJobs)
	if c.HTTPRetryMax < 0 {
		c.HTTPRetryMax = 0
	}
	setD(&c.NodeRetryTimeout, d.NodeRetryTimeout)
	setD(&c.NodeRetryMin, d.NodeRetryMin)
	setD(&c.NodeRetryMax, d.NodeRetryMax)
	setD(&c.HTTPRetryWaitMin, d.HTTPRetryWaitMin)
	setD(&c.HTTPRetryWaitMax, d.HTTPRetryWaitMax)
	setD(&c.HTTPTimeout, d.HTTPTimeout)
	setD(&c.HTTPStallTimeout, d.HTTPStallTimeout)
	setD(&c.ProgressInterval, d.ProgressInterval)
	if c.Statfs == nil {
		c.Statfs = statfs
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

func statfs(path string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// Settings are the runtime knobs.
type Settings struct {
	MaxDownloads            int
	MaxDownloadsPerNode     int
	BandwidthBytesPerSecond uint64
}

// SettingsUpdate changes the fields that are set.
type SettingsUpdate struct {
	MaxDownloads            *int
	MaxDownloadsPerNode     *int
	BandwidthBytesPerSecond *uint64
}

// Manager runs and persists the jobs.
type Manager struct {
	opts    Config
	log     *slog.Logger
	tp      trace.TracerProvider
	tracer  trace.Tracer
	rt      *route.Router
	st      jobstore.Records[jobRecord]
	ha      *haState // nil without Config.Etcd
	sched   *scheduler
	bw      *bandwidth
	http    *retryablehttp.Client
	jobsDir string

	mu       sync.Mutex
	jobs     map[string]*job
	closed   bool
	closing  chan struct{} // closed by Shutdown
	wg       sync.WaitGroup
	shutOnce sync.Once
	lead     atomic.Bool   // with etcd: a term is led and its jobs taken over (set under mu)
	termDone chan struct{} // with etcd: closed once the term led now has stopped its jobs

	unregisterMetrics func() error

	settingsMu sync.Mutex    // serializes UpdateSettings
	saved      savedSettings // runtime settings saved in settingsFile
}

// Open opens the job store under cfg.DataDir and continues every job that
// was running when the service stopped.
func Open(cfg Config) (*Manager, error) {
	cfg.setDefaults()
	if cfg.DataDir == "" {
		return nil, errors.New("bulkload: DataDir is required")
	}
	if cfg.Router == nil {
		return nil, errors.New("bulkload: Router is required")
	}
	m := &Manager{
		opts:    cfg,
		log:     cfg.Logger,
		tp:      cfg.TracerProvider,
		tracer:  cfg.TracerProvider.Tracer("github.com/slotkv/slotkv/services/downloader"),
		rt:      cfg.Router,
		jobsDir: filepath.Join(cfg.DataDir, "jobs"),
		jobs:    map[string]*job{},
		closing: make(chan struct{}),
	}
	m.http = m.newHTTPClient()
	if cfg.Etcd != nil {
		h, err := newHA(cfg.Etcd)
		if err != nil {
			return nil, err
		}
		m.ha = h
	}
	if err := os.MkdirAll(m.jobsDir, 0o755); err != nil {
		return nil, fmt.Errorf("bulkload: %w", err)
	}
	set, err := m.loadSettings()
	if err != nil {
		return nil, fmt.Errorf("bulkload: %w", err)
	}
	m.sched = newScheduler(set.MaxDownloads, set.MaxDownloadsPerNode)
	m.bw = newBandwidth(set.BandwidthBytesPerSecond)
	if m.ha != nil {
		// The jobs are the leader's: loaded and run by Lead.
		m.st = m.ha.recs
		if m.unregisterMetrics, err = m.registerMetrics(cfg.MeterProvider); err != nil {
			return nil, fmt.Errorf("bulkload: metrics: %w", err)
		}
		return m, nil
	}
	st, err := jobstore.Open[jobRecord](filepath.Join(cfg.DataDir, "db"), m.log)
	if err != nil {
		return nil, fmt.Errorf("bulkload: %w", err)
	}
	m.st = st
	recs, err := st.Load()
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("bulkload: %w", err)
	}
	if m.unregisterMetrics, err = m.registerMetrics(cfg.MeterProvider); err != nil {
		st.Close()
		return nil, fmt.Errorf("bulkload: metrics: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range recs {
		j := newJob(m, r)
		m.jobs[r.ID] = j
		if r.State.Running() {
			m.log.Info("continuing bulk-load job after restart", "job_id", r.ID, "state", r.State.String())
			j.mu.Lock()
			m.startLocked(j)
			j.mu.Unlock()
		}
	}
	return m, nil
}

// Shutdown stops every running job where it is (its state is kept, so it
// continues after the next Open), ends the watches and waits.
func (m *Manager) Shutdown() {
	m.shutOnce.Do(func() {
		m.mu.Lock()
		m.closed = true
		close(m.closing)
		for _, j := range m.jobs {
			j.mu.Lock()
			if j.cancel != nil {
				j.cancel(errShutdown)
			}
			j.mu.Unlock()
		}
		m.mu.Unlock()
		m.wg.Wait()
	})
}

// Close shuts down (see Shutdown) and closes the store.
func (m *Manager) Close() error {
	m.Shutdown()
	if err := m.unregisterMetrics(); err != nil {
		m.log.Warn("unregistering the job metrics failed", "err", err)
	}
	return m.st.Close()
}

// Start creates a job for the manifest at manifestURL and starts it.
func (m *Manager) Start(ctx context.Context, manifestURL, id string) (*JobStatus, error) {
	if _, err := m.checkURL("manifest_url", manifestURL); err != nil {
		return nil, err
	}
	if id == "" {
		id = newJobID()
	} else if err := checkJobID(id); err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	if !m.leading() {
		return nil, ErrNotLeading
	}
	if _, ok := m.jobs[id]; ok {
		return nil, fmt.Errorf("%w: %q", ErrJobExists, id)
	}
	if err := m.checkRunningLocked(); err != nil {
		return nil, err
	}
	rec := &jobRecord{ID: id, ManifestURL: manifestURL, State: StatePending, Created: now, Updated: now}
	if err := m.st.Put(rec.ID, rec); err != nil {
		if errors.Is(err, jobstore.ErrNotLeader) {
			return nil, ErrNotLeading
		}
		return nil, fmt.Errorf("bulkload: persist job %s: %w", id, err)
	}
	j := newJob(m, rec)
	m.jobs[id] = j
	j.mu.Lock()
	defer j.mu.Unlock()
	m.log.InfoContext(ctx, "bulk-load job started", "job_id", id, "manifest_url", manifestURL)
	m.startLocked(j)
	return j.statusLocked(true), nil
}

func newJobID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "bl-" + time.Now().UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}

func (m *Manager) job(id string) (*job, error) {
	if id == "" {
		return nil, rpcerr.InvalidField("job_id", "required")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.leading() {
		return nil, ErrNotLeading
	}
	j, ok := m.jobs[id]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrJobNotFound, id)
	}
	return j, nil
}

// lookup finds job id for a read: the running job while this Manager
// leads (term is then closed when the term's jobs have stopped; nil
// without etcd), or follow true when the answer is to come from the etcd
// record.
func (m *Manager) lookup(id string) (j *job, term <-chan struct{}, follow bool, err error) {
	if id == "" {
		return nil, nil, false, rpcerr.InvalidField("job_id", "required")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.leading() {
		return nil, nil, true, nil
	}
	j, ok := m.jobs[id]
	if !ok {
		return nil, nil, false, fmt.Errorf("%w: %q", ErrJobNotFound, id)
	}
	return j, m.termDone, false, nil
}

// Get returns a job with per-file and per-node detail (with etcd, at a
// replica that does not lead, from its record).
func (m *Manager) Get(id string) (*JobStatus, error) {
	j, _, follow, err := m.lookup(id)
	if err != nil {
		return nil, err
	}
	if follow {
		return m.recordStatus(context.Background(), id, true)
	}
	return j.status(true), nil
}

// List returns every job, newest first, without detail (with etcd, at a
// replica that does not lead, from the records).
func (m *Manager) List() ([]*JobStatus, error) {
	m.mu.Lock()
	if !m.leading() {
		m.mu.Unlock()
		out, err := m.recordList()
		if err != nil {
			return nil, err
		}
		sortStatuses(out)
		return out, nil
	}
	jobs := make([]*job, 0, len(m.jobs))
	for _, j := range m.jobs {
		jobs = append(jobs, j)
	}
	m.mu.Unlock()
	out := make([]*JobStatus, 0, len(jobs))
	for _, j := range jobs {
		out = append(out, j.status(false))
	}
	sortStatuses(out)
	return out, nil
}

func sortStatuses(out []*JobStatus) {
	slices.SortFunc(out, func(a, b *JobStatus) int {
		if c := b.Created.Compare(a.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}

// Watch calls send with the job's status now, then at most every interval,
// until the job ends (SUCCEEDED, FAILED, CANCELED): then once more with
// the final status, and returns nil. With etcd a replica that does not
// lead reads the job's record at every interval, and a watch at the
// leader goes on that way when the term ends.
func (m *Manager) Watch(ctx context.Context, id string, interval time.Duration, send func(*JobStatus) error) error {
	if interval <= 0 {
		interval = time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		j, term, follow, err := m.lookup(id)
		if err != nil {
			return err
		}
		var (
			st      *JobStatus
			changed chan struct{}
		)
		if follow {
			if st, err = m.recordStatus(ctx, id, true); err != nil {
				return err
			}
		} else {
			j.mu.Lock()
			st = j.statusLocked(true)
			changed = j.changed
			j.mu.Unlock()
		}
		if err := send(st); err != nil {
			return err
		}
		if st.State.Ended() {
			return nil
		}
		// Wait for the interval; an end of the job is reported at once.
	wait:
		for {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-m.closing:
				return ErrClosed
			case <-t.C:
				break wait
			case <-term:
				break wait
			case <-changed:
				j.mu.Lock()
				ended := j.rec.State.Ended()
				changed = j.changed
				j.mu.Unlock()
				if ended {
					break wait
				}
			}
		}
	}
}

// Pause stops a running job; finished files stay finished, partial
// downloads and ingest checkpoints are kept for Resume.
func (m *Manager) Pause(ctx context.Context, id string) (*JobStatus, error) {
	j, err := m.job(id)
	if err != nil {
		return nil, err
	}
	j.mu.Lock()
	if !j.rec.State.Running() || j.cancel == nil {
		st := j.rec.State
		j.mu.Unlock()
		return nil, fmt.Errorf("%w: job %q is %s; only a running job (PENDING, DOWNLOADING, DOWNLOADED, INGESTING) can be paused", ErrBadState, id, st)
	}
	j.cancel(errPaused)
	done := j.done
	j.mu.Unlock()
	if err := waitDone(ctx, done); err != nil {
		return nil, err
	}
	if j.deposed() {
		return nil, ErrNotLeading
	}
	m.log.InfoContext(ctx, "bulk-load job paused", "job_id", id)
	return j.status(true), nil
}

// Resume continues a PAUSED job, or retries a FAILED one (failed files
// start over, finished files are kept).
func (m *Manager) Resume(ctx context.Context, id string) (*JobStatus, error) {
	j, err := m.job(id)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	if m.jobs[id] != j {
		return nil, ErrNotLeading // the term ended meanwhile
	}
	j.mu.Lock()
	if st := j.rec.State; (st != StatePaused && st != StateFailed) || j.cancel != nil {
		j.mu.Unlock()
		return nil, fmt.Errorf("%w: job %q is %s; only a PAUSED or FAILED job can be resumed", ErrBadState, id, st)
	}
	j.mu.Unlock()
	// Counted without j.mu (each job's lock is taken in turn); m.mu keeps
	// other Starts and Resumes out meanwhile.
	if err := m.checkRunningLocked(); err != nil {
		return nil, err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if st := j.rec.State; (st != StatePaused && st != StateFailed) || j.cancel != nil {
		return nil, fmt.Errorf("%w: job %q is %s; only a PAUSED or FAILED job can be resumed", ErrBadState, id, st)
	}
	prev, prevErr := j.rec.State, j.rec.Error
	j.rec.State = StatePending
	j.rec.Error = ""
	j.touchLocked()
	if m.ha != nil {
		// Saved before it runs: a resume the next leader would not see
		// is refused, not answered.
		if err := j.saveLocked(); err != nil {
			j.rec.State, j.rec.Error = prev, prevErr
			j.touchLocked()
			if errors.Is(err, jobstore.ErrNotLeader) {
				return nil, ErrNotLeading
			}
			return nil, fmt.Errorf("%w: resuming job %q: saving its record failed: %v", rpcerr.ErrUnavailable, id, err)
		}
	}
	m.log.InfoContext(ctx, "bulk-load job resumed", "job_id", id, "from", prev.String())
	m.startLocked(j)
	return j.statusLocked(true), nil
}

// Cancel stops a job for good and removes its downloaded files. Records
// already ingested stay in the cluster.
func (m *Manager) Cancel(ctx context.Context, id string) (*JobStatus, error) {
	j, err := m.job(id)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	j.mu.Lock()
	if j.rec.State.Final() {
		st := j.rec.State
		j.mu.Unlock()
		return nil, fmt.Errorf("%w: job %q is %s already; only an unfinished job can be canceled", ErrBadState, id, st)
	}
	if j.cancel != nil {
		j.cancel(errCanceled)
		done := j.done
		j.mu.Unlock()
		if err := waitDone(ctx, done); err != nil {
			return nil, err
		}
		if j.deposed() {
			return nil, ErrNotLeading
		}
	} else {
		j.setStoppedLocked(StateCanceled)
		err := j.saveLocked()
		j.mu.Unlock()
		if errors.Is(err, jobstore.ErrNotLeader) {
			return nil, ErrNotLeading
		}
		j.removeDir()
	}
	m.log.InfoContext(ctx, "bulk-load job canceled", "job_id", id)
	return j.status(true), nil
}

// checkRunningLocked refuses a new run when MaxRunningJobs jobs are
// running (m.mu held, no job's lock held).
func (m *Manager) checkRunningLocked() error {
	n := 0
	for _, j := range m.jobs {
		j.mu.Lock()
		if j.cancel != nil {
			n++
		}
		j.mu.Unlock()
	}
	if n >= m.opts.MaxRunningJobs {
		return fmt.Errorf("%d bulk-load jobs are running, the limit (MaxRunningJobs, --max-running-jobs) is %d: wait for one to end, or pause or cancel one: %w",
			n, m.opts.MaxRunningJobs, rpcerr.ErrResourceExhausted)
	}
	return nil
}

func waitDone(ctx context.Context, done <-chan struct{}) error {
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Settings returns the runtime settings in force (with etcd, at a replica
// that does not lead, the leader's as saved in etcd).
func (m *Manager) Settings(ctx context.Context) (Settings, error) {
	if m.leading() {
		return m.localSettings(), nil
	}
	saved, err := m.ha.loadSettings(ctx)
	if err != nil {
		return Settings{}, fmt.Errorf("%w: %v", rpcerr.ErrUnavailable, err)
	}
	s, _ := m.restoreSettings(saved, false)
	return s, nil
}

// localSettings are the settings this Manager applies.
func (m *Manager) localSettings() Settings {
	g, n := m.sched.caps()
	return Settings{MaxDownloads: g, MaxDownloadsPerNode: n, BandwidthBytesPerSecond: m.bw.get()}
}

// PeakDownloads is the most downloads ever running at once (diagnostics).
func (m *Manager) PeakDownloads() int {
	m.sched.mu.Lock()
	defer m.sched.mu.Unlock()
	return m.sched.peak
}

// drainTimeout bounds how long a stopping ingest waits for the
// acknowledgements of the batches it has sent.
func (m *Manager) drainTimeout() time.Duration {
	return min(m.opts.NodeRetryTimeout, 10*time.Second)
}

// topology returns a topology newer than old (or any when old is nil),
// waiting up to NodeRetryTimeout for the storage nodes to give one.
func (m *Manager) topology(ctx context.Context, old *topology.Topology) (*topology.Topology, error) {
	ctx, cancel := context.WithTimeout(ctx, m.opts.NodeRetryTimeout)
	defer cancel()
	var minV uint64 = 1
	if old != nil {
		minV = old.Version() + 1
	}
	delay := m.opts.NodeRetryMin
	for {
		t, err := m.rt.RefreshTo(ctx, minV)
		if t != nil && (old == nil || t.Version() > old.Version()) {
			return t, nil
		}
		if old != nil && t != nil && err == nil {
			return t, nil // the cluster knows nothing newer
		}
		if ctx.Err() != nil {
			if err == nil {
				err = ctx.Err()
			}
			return t, fmt.Errorf("no topology from %s: %v", m.rt.Source(), err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
		delay = min(delay*2, m.opts.NodeRetryMax)
	}
}
