package bulkload

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/slotkv/slotkv/pkg/jobstore"
	"github.com/slotkv/slotkv/pkg/leader"
	"github.com/slotkv/slotkv/pkg/rpcerr"
)

// EtcdConfig is where the replicas of a highly available downloader keep
// what they share: the job records and the runtime settings. With it the
// Manager runs no job until Lead is called for a term of the leader
// election (pkg/leader); every write is fenced by that term.
type EtcdConfig struct {
	Client *clientv3.Client // not owned
	// JobsPrefix is the prefix of the job records, ending with "/"
	// (e.g. "/slotkv/jobs/bulkloads/").
	JobsPrefix string
	// SettingsKey holds the runtime settings changed with UpdateSettings
	// (e.g. "/slotkv/downloader/settings").
	SettingsKey string
}

// etcdTimeout bounds each etcd call of the replicated mode.
const etcdTimeout = 10 * time.Second

// haState is the replicated mode's part of a Manager.
type haState struct {
	cli         *clientv3.Client
	recs        *jobstore.Etcd[jobRecord]
	settingsKey string
	term        atomic.Pointer[termState] // the term being led, nil between terms
}

type termState struct {
	t   leader.Term
	ctx context.Context // canceled as soon as the term may be over
}

func newHA(c *EtcdConfig) (*haState, error) {
	if c.Client == nil {
		return nil, errors.New("bulkload: Etcd.Client is required")
	}
	if !strings.HasPrefix(c.SettingsKey, "/") {
		return nil, fmt.Errorf("bulkload: Etcd.SettingsKey %q must start with /", c.SettingsKey)
	}
	h := &haState{cli: c.Client, settingsKey: c.SettingsKey}
	recs, err := jobstore.OpenEtcd[jobRecord](c.Client, c.JobsPrefix, h.fence)
	if err != nil {
		return nil, fmt.Errorf("bulkload: Etcd.JobsPrefix: %w", err)
	}
	h.recs = recs
	return h, nil
}

// fence is the job store's guard: writes land only while this replica's
// term lasts, and none is even tried once the term's context has ended
// (the term may be over and a successor running the jobs).
func (h *haState) fence() (clientv3.Cmp, bool) {
	ts := h.term.Load()
	if ts == nil || ts.ctx.Err() != nil {
		return clientv3.Cmp{}, false
	}
	return ts.t.Fence(), true
}

// loadSettings reads the settings saved by a leader (none: zero value).
func (h *haState) loadSettings(ctx context.Context) (savedSettings, error) {
	var s savedSettings
	ctx, cancel := context.WithTimeout(ctx, etcdTimeout)
	defer cancel()
	resp, err := h.cli.Get(ctx, h.settingsKey)
	if err != nil {
		return s, fmt.Errorf("runtime settings: etcd get %s: %w", h.settingsKey, err)
	}
	if len(resp.Kvs) == 0 {
		return s, nil
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &s); err != nil {
		return s, fmt.Errorf("runtime settings: etcd %s: %w", h.settingsKey, err)
	}
	return s, nil
}

// saveSettings writes s in a transaction fenced by the term.
func (h *haState) saveSettings(s savedSettings) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	cmp, ok := h.fence()
	if !ok {
		return ErrNotLeading
	}
	ctx, cancel := context.WithTimeout(context.Background(), etcdTimeout)
	defer cancel()
	resp, err := h.cli.Txn(ctx).If(cmp).Then(clientv3.OpPut(h.settingsKey, string(b))).Commit()
	if err != nil {
		return fmt.Errorf("%w: the settings were not changed: saving them to etcd %s failed: %v", rpcerr.ErrUnavailable, h.settingsKey, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("%w (the term ended before the settings were saved)", ErrNotLeading)
	}
	return nil
}

// Leading reports whether this Manager runs the jobs and takes writes now
// (always without etcd).
func (m *Manager) Leading() bool { return m.leading() }

// leading reports whether this Manager runs the jobs: always without
// etcd; with etcd while a term is led and its jobs are taken over.
func (m *Manager) leading() bool { return m.ha == nil || m.lead.Load() }

// Lead runs the jobs for one term of the leader election and returns when
// ctx (the term) ends: it loads the job records and the runtime settings
// from etcd, continues every job that was running (as a restart does: a
// file not yet ingested is downloaded again and re-verified when its copy
// is not on this replica's disk, records already acknowledged are not
// sent again, finished files are not touched), and serves the writes. When
// ctx ends it stops every job at once without writing its record (the
// fence refuses such writes anyway: the next leader may already be
// running them) and waits for them.
func (m *Manager) Lead(ctx context.Context, t leader.Term) error {
	if m.ha == nil {
		return errors.New("bulkload: Lead needs Config.Etcd")
	}
	m.ha.term.Store(&termState{t: t, ctx: ctx})
	defer m.ha.term.Store(nil)
	recs, err := m.ha.recs.Load()
	if err != nil {
		return fmt.Errorf("bulkload: taking over: %w", err)
	}
	saved, err := m.ha.loadSettings(ctx)
	if err != nil {
		return fmt.Errorf("bulkload: taking over: %w", err)
	}
	m.settingsMu.Lock()
	set, saved := m.restoreSettings(saved, true)
	m.saved = saved
	m.sched.setCaps(set.MaxDownloads, set.MaxDownloadsPerNode)
	m.bw.set(set.BandwidthBytesPerSecond)
	m.settingsMu.Unlock()

	// Read before the jobs run: the records are theirs from then on.
	final := map[string]bool{}
	for _, r := range recs {
		if r.State.Final() {
			final[r.ID] = true
		}
	}
	m.mu.Lock()
	if m.closed || ctx.Err() != nil {
		m.mu.Unlock()
		return nil
	}
	done := make(chan struct{})
	m.termDone = done
	m.jobs = map[string]*job{}
	running := 0
	for _, r := range recs {
		j := newJob(m, r)
		m.jobs[r.ID] = j
		if r.State.Running() {
			running++
			m.log.Info("taking over bulk-load job as the new leader", "job_id", r.ID, "state", r.State.String())
			j.mu.Lock()
			m.startLocked(j)
			j.mu.Unlock()
		}
	}
	m.lead.Store(true)
	m.mu.Unlock()
	m.log.Info("leading the downloaders: jobs loaded from etcd", "jobs", len(recs), "running", running, "term", t.Key)
	m.removeStaleDirs(final)

	<-ctx.Done()

	m.mu.Lock()
	m.lead.Store(false)
	jobs := m.jobs
	m.jobs = map[string]*job{}
	var waits []chan struct{}
	for _, j := range jobs {
		j.mu.Lock()
		if j.cancel != nil {
			j.cancel(errDeposed)
			waits = append(waits, j.done)
		}
		j.mu.Unlock()
	}
	m.termDone = nil
	m.mu.Unlock()
	for _, w := range waits {
		<-w
	}
	close(done) // watches of this term's jobs go on from etcd
	m.log.Info("term over: this replica's bulk-load jobs stopped; following", "stopped", len(waits), "term", t.Key)
	return nil
}

// removeStaleDirs removes the download directories of jobs that ended
// while another replica led (or are gone): nothing will read them again.
// Those of unfinished jobs stay, re-verified before use if this replica
// runs the job again.
func (m *Manager) removeStaleDirs(final map[string]bool) {
	ents, err := os.ReadDir(m.jobsDir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		m.mu.Lock()
		_, known := m.jobs[e.Name()] // every record's job, and those started since
		m.mu.Unlock()
		if known && !final[e.Name()] {
			continue
		}
		dir := m.jobsDir + "/" + e.Name()
		if err := os.RemoveAll(dir); err != nil {
			m.log.Warn("removing a finished job's download directory failed", "dir", dir, "err", err)
		}
	}
}

// recordStatus is job id's status from its etcd record (a follower's
// answer).
func (m *Manager) recordStatus(ctx context.Context, id string, detail bool) (*JobStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, etcdTimeout)
	defer cancel()
	r, ok, err := m.ha.recs.Get(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("%w: reading bulk-load job %q from etcd: %v", rpcerr.ErrUnavailable, id, err)
	}
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrJobNotFound, id)
	}
	return newJob(m, r).status(detail), nil
}

// recordList is every job's status from the etcd records.
func (m *Manager) recordList() ([]*JobStatus, error) {
	recs, err := m.ha.recs.Load()
	if err != nil {
		return nil, fmt.Errorf("%w: reading the bulk-load jobs from etcd: %v", rpcerr.ErrUnavailable, err)
	}
	out := make([]*JobStatus, 0, len(recs))
	for _, r := range recs {
		out = append(out, newJob(m, r).status(false))
	}
	return out, nil
}
