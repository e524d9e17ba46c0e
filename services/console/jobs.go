package console

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	downloaderv1 "github.com/slotkv/slotkv/gen/slotkv/downloader/v1"
	migratorv1 "github.com/slotkv/slotkv/gen/slotkv/migrator/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/slot"
)

// jobView is what the tracker needs of a job's view.
type jobView interface {
	jobID() string
	ended() bool
	createdAt() time.Time
}

// jobsView is the migrations or bulk loads page's data.
type jobsView[V any] struct {
	Jobs  []V    `json:"jobs"`
	Error string `json:"error,omitempty"`
}

// tracker keeps the views of one service's jobs current: a list every
// jobListInterval finds every job, and one watch stream per unfinished job
// brings its progress as it happens.
type tracker[V jobView] struct {
	c    *Console
	kind string
	// list returns every job; watch streams one job's views until it ends
	// (or ctx does).
	list  func(ctx context.Context) ([]V, error)
	watch func(ctx context.Context, id string, each func(V)) error

	mu       sync.Mutex
	jobs     map[string]V
	watching map[string]bool
	// final: jobs whose view is a watch's last one of the ended job,
	// complete and final. A list's view may be a summary (a bulk load's
	// list view has no files), so it never replaces that one, and every
	// job, an ended one included, is watched until its view is final.
	final map[string]bool
	err   string
	ctx   context.Context // run's, for watches started by handlers
	wg    sync.WaitGroup
}

func (t *tracker[V]) run(ctx context.Context) {
	t.mu.Lock()
	t.ctx = ctx
	t.mu.Unlock()
	defer t.wg.Wait()
	tick := time.NewTicker(jobListInterval)
	defer tick.Stop()
	for {
		t.refresh(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// refresh lists the jobs, starts watches and publishes.
func (t *tracker[V]) refresh(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	jobs, err := t.list(cctx)
	cancel()
	t.mu.Lock()
	if err != nil {
		t.err = errMessage(err)
	} else {
		t.err = ""
		listed := make(map[string]bool, len(jobs))
		for _, j := range jobs {
			listed[j.jobID()] = true
		}
		// A job the service no longer lists is gone (unless a watch
		// brought it after the list was made).
		for id := range t.jobs {
			if !listed[id] && !t.watching[id] {
				delete(t.jobs, id)
				delete(t.final, id)
			}
		}
		for _, j := range jobs {
			// A running watch may have brought a newer view meanwhile
			// (unless the list saw the end first: the watch's last view
			// comes after it).
			id := j.jobID()
			if t.final[id] || (t.watching[id] && !j.ended()) {
				continue
			}
			t.jobs[id] = j
		}
	}
	t.startWatchesLocked()
	t.mu.Unlock()
	t.publish()
}

// put stores a view a handler got back from the service, so the page sees
// a job it just started without waiting for the next list.
func (t *tracker[V]) put(v V) {
	t.mu.Lock()
	t.jobs[v.jobID()] = v
	delete(t.final, v.jobID())
	t.startWatchesLocked()
	t.mu.Unlock()
	t.publish()
}

func (t *tracker[V]) startWatchesLocked() {
	if t.ctx == nil || t.ctx.Err() != nil {
		return
	}
	for id := range t.jobs {
		if t.final[id] || t.watching[id] {
			continue
		}
		t.watching[id] = true
		ctx := t.ctx
		t.wg.Go(func() {
			err := t.watch(ctx, id, func(v V) {
				t.mu.Lock()
				t.jobs[id] = v
				if v.ended() {
					t.final[id] = true
				}
				t.mu.Unlock()
				t.publish()
			})
			t.mu.Lock()
			delete(t.watching, id)
			if status.Code(err) == codes.NotFound {
				delete(t.jobs, id)
				delete(t.final, id)
			}
			t.mu.Unlock()
			if err != nil && ctx.Err() == nil {
				// The next list restarts the watch; waiting one interval
				// keeps a failing service from being asked in a loop.
				select {
				case <-ctx.Done():
				case <-time.After(jobListInterval):
				}
			}
			t.publish()
		})
	}
}

func (t *tracker[V]) publish() {
	t.mu.Lock()
	v := jobsView[V]{Jobs: make([]V, 0, len(t.jobs)), Error: t.err}
	for _, j := range t.jobs {
		v.Jobs = append(v.Jobs, j)
	}
	t.mu.Unlock()
	// Newest first, the id breaking ties so the order is stable.
	slices.SortFunc(v.Jobs, func(a, b V) int {
		if c := b.createdAt().Compare(a.createdAt()); c != 0 {
			return c
		}
		return strings.Compare(a.jobID(), b.jobID())
	})
	t.c.hub.publish(t.kind, v)
}

// watchStream reads a server stream of job views until it ends.
func watchStream[M any, V any](recv func() (M, error), view func(M) V, each func(V)) error {
	for {
		m, err := recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		each(view(m))
	}
}

// --- migrations ---

type migrationView struct {
	ID           string       `json:"id"`
	Ranges       string       `json:"ranges"`
	Source       string       `json:"source"`
	Destination  string       `json:"destination"`
	Phase        string       `json:"phase"`
	Ended        bool         `json:"ended"`
	Parallelism  uint32       `json:"parallelism"`
	RateLimit    uint64       `json:"rate_limit"`
	Keys         uint64       `json:"keys"`
	KeysTotal    uint64       `json:"keys_total"`
	Bytes        uint64       `json:"bytes"`
	Percent      float64      `json:"percent"`
	Rate         float64      `json:"rate"`
	ETASeconds   float64      `json:"eta_seconds"`
	WritePauseMs float64      `json:"write_pause_ms"`
	Lag          uint64       `json:"lag"`
	Changes      uint64       `json:"changes_applied"`
	Rounds       uint32       `json:"catch_up_rounds"`
	Error        string       `json:"error,omitempty"`
	ErrorRange   string       `json:"error_range,omitempty"`
	Created      time.Time    `json:"created"`
	Updated      time.Time    `json:"updated"`
	Streams      []streamView `json:"streams"`
}

type streamView struct {
	Index   uint32  `json:"index"`
	Ranges  string  `json:"ranges"`
	Keys    uint64  `json:"keys"`
	Total   uint64  `json:"total"`
	Bytes   uint64  `json:"bytes"`
	Rate    float64 `json:"rate"`
	Done    bool    `json:"done"`
	Error   string  `json:"error,omitempty"`
	Percent float64 `json:"percent"`
}

func (v migrationView) jobID() string        { return v.ID }
func (v migrationView) ended() bool          { return v.Ended }
func (v migrationView) createdAt() time.Time { return v.Created }

// phaseName is "SNAPSHOT" for PHASE_SNAPSHOT.
func phaseName(p migratorv1.Phase) string { return strings.TrimPrefix(p.String(), "PHASE_") }

func migrationEnded(p migratorv1.Phase) bool {
	switch p {
	case migratorv1.Phase_PHASE_SUCCEEDED, migratorv1.Phase_PHASE_FAILED, migratorv1.Phase_PHASE_CANCELED:
		return true
	}
	return false
}

func newMigrationTracker(c *Console) *tracker[migrationView] {
	api := func() (migratorv1.MigratorServiceClient, error) {
		cc, err := c.conn(c.o.Migrator)
		if err != nil {
			return nil, err
		}
		return migratorv1.NewMigratorServiceClient(cc), nil
	}
	return &tracker[migrationView]{
		c: c, kind: kindMigrations, jobs: map[string]migrationView{}, watching: map[string]bool{}, final: map[string]bool{},
		list: func(ctx context.Context) ([]migrationView, error) {
			m, err := api()
			if err != nil {
				return nil, err
			}
			r, err := m.ListMigrations(ctx, &migratorv1.ListMigrationsRequest{})
			if err != nil {
				return nil, err
			}
			out := make([]migrationView, 0, len(r.GetMigrations()))
			for _, j := range r.GetMigrations() {
				out = append(out, c.migrationView(ctx, j))
			}
			return out, nil
		},
		watch: func(ctx context.Context, id string, each func(migrationView)) error {
			m, err := api()
			if err != nil {
				return err
			}
			s, err := m.WatchMigration(ctx, &migratorv1.WatchMigrationRequest{JobId: id, Interval: durationpb.New(watchInterval)})
			if err != nil {
				return err
			}
			return watchStream(func() (*migratorv1.Migration, error) {
				r, err := s.Recv()
				return r.GetMigration(), err
			}, func(j *migratorv1.Migration) migrationView { return c.migrationView(ctx, j) }, each)
		},
	}
}

// migrationView is the page's view of a job. A stream's progress bar needs
// its number of keys, which the migrator does not count beforehand (it
// would read the range once more); the console counts each stream's ranges
// on the source once, when it first sees the stream (see streamTotals).
func (c *Console) migrationView(ctx context.Context, j *migratorv1.Migration) migrationView {
	v := migrationView{
		ID: j.GetId(), Ranges: j.GetRanges(), Source: j.GetSourceNodeId(), Destination: j.GetDestinationNodeId(),
		Phase: phaseName(j.GetPhase()), Ended: migrationEnded(j.GetPhase()),
		Parallelism: j.GetParallelism(), RateLimit: j.GetRateBytesPerSecond(),
		Keys: j.GetKeys(), KeysTotal: j.GetKeysTotal(), Bytes: j.GetBytes(), Rate: j.GetRate(),
		ETASeconds: j.GetEta().AsDuration().Seconds(), WritePauseMs: j.GetWritePauseMs(),
		Lag: j.GetLag(), Changes: j.GetChangesApplied(), Rounds: j.GetCatchUpRounds(),
		Error: j.GetError(), ErrorRange: j.GetErrorRange(),
		Created: j.GetCreated().AsTime(), Updated: j.GetUpdated().AsTime(),
		Streams: []streamView{},
	}
	pastSnapshot := j.GetPhase() > migratorv1.Phase_PHASE_VERIFY && j.GetPhase() != migratorv1.Phase_PHASE_FAILED && j.GetPhase() != migratorv1.Phase_PHASE_CANCELED
	switch {
	case pastSnapshot:
		v.Percent = 100
	case v.KeysTotal > 0:
		v.Percent = min(100, 100*float64(v.Keys)/float64(v.KeysTotal))
	}
	var keys, total uint64
	for _, s := range j.GetStreams() {
		sv := streamView{Index: s.GetIndex(), Ranges: s.GetRanges(), Keys: s.GetKeys(), Bytes: s.GetBytes(), Rate: s.GetRate(), Done: s.GetDone(), Error: s.GetError()}
		if !v.Ended {
			sv.Total = c.totals.get(ctx, c, j.GetId(), j.GetSourceNodeId(), s.GetIndex(), s.GetRanges())
		} else {
			// No new count for an ended job: the source may own the
			// slots no more.
			sv.Total = c.totals.lookup(streamKey{j.GetId(), s.GetIndex(), s.GetRanges()})
		}
		switch {
		case sv.Done || pastSnapshot:
			sv.Percent = 100
			sv.Total = max(sv.Total, sv.Keys)
		case sv.Total > 0:
			sv.Percent = min(99, 100*float64(sv.Keys)/float64(sv.Total))
		}
		v.Streams = append(v.Streams, sv)
		keys, total = keys+sv.Keys, total+sv.Total
	}
	// Before the migrator's estimate of the job's keys exists, the
	// streams' counts give the job's bar.
	if v.KeysTotal == 0 && !pastSnapshot && total > 0 {
		v.KeysTotal = total
		v.Percent = min(99, 100*float64(keys)/float64(total))
	}
	return v
}

// streamTotals caches the key count of each stream's ranges on the source.
type streamTotals struct {
	mu sync.Mutex
	m  map[streamKey]uint64
}

type streamKey struct {
	job    string
	index  uint32
	ranges string
}

func newStreamTotals() *streamTotals { return &streamTotals{m: map[streamKey]uint64{}} }

// maxStreamTotals bounds the counts kept; past it the cache starts over
// (ended jobs then show their done streams by their keys).
const maxStreamTotals = 4096

func (s *streamTotals) lookup(k streamKey) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[k]
}

// get counts the stream's ranges on the source once (0 when that fails:
// the bar then waits for the stream's done flag).
func (s *streamTotals) get(ctx context.Context, c *Console, job, source string, index uint32, ranges string) uint64 {
	k := streamKey{job, index, ranges}
	s.mu.Lock()
	n, ok := s.m[k]
	s.mu.Unlock()
	if ok {
		return n
	}
	rs, err := slot.ParseRangeSet(ranges)
	if err != nil {
		return 0
	}
	addr, ok := c.cluster.nodeAddr(source)
	if !ok {
		return 0
	}
	cc, err := c.conn(addr)
	if err != nil {
		return 0
	}
	req := &storagev1.CountRequest{}
	for _, r := range rs.Ranges() {
		req.Ranges = append(req.Ranges, &clusterv1.SlotRange{Start: uint32(r.Start), End: uint32(r.End)})
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := storagev1.NewStorageServiceClient(cc).Count(cctx, req)
	if err != nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.m) >= maxStreamTotals {
		clear(s.m)
	}
	s.m[k] = resp.GetCount()
	return resp.GetCount()
}

// --- bulk loads ---

type bulkView struct {
	ID          string         `json:"id"`
	ManifestURL string         `json:"manifest_url"`
	State       string         `json:"state"`
	Ended       bool           `json:"ended"`
	Error       string         `json:"error,omitempty"`
	FileCount   uint32         `json:"file_count"`
	Download    progressView   `json:"download"`
	Ingest      progressView   `json:"ingest"`
	Files       []fileView     `json:"files"`
	Nodes       []bulkNodeView `json:"nodes"`
	Created     time.Time      `json:"created"`
	Updated     time.Time      `json:"updated"`
}

type progressView struct {
	Done       uint64  `json:"done"`
	Total      uint64  `json:"total"`
	Percent    float64 `json:"percent"`
	Rate       float64 `json:"rate"`
	ETASeconds float64 `json:"eta_seconds"`
}

type fileView struct {
	Name     string       `json:"name"`
	State    string       `json:"state"`
	Slots    string       `json:"slots"`
	Download progressView `json:"download"`
	Ingest   progressView `json:"ingest"`
	Nodes    []string     `json:"nodes"`
	Attempts uint32       `json:"attempts"`
	Error    string       `json:"error,omitempty"`
}

type bulkNodeView struct {
	ID        string  `json:"id"`
	Records   uint64  `json:"records"`
	Bytes     uint64  `json:"bytes"`
	Downloads uint32  `json:"active_downloads"`
	Rate      float64 `json:"rate"`
}

func (v bulkView) jobID() string        { return v.ID }
func (v bulkView) ended() bool          { return v.Ended }
func (v bulkView) createdAt() time.Time { return v.Created }

func stateName(s downloaderv1.State) string { return strings.TrimPrefix(s.String(), "STATE_") }

func bulkEnded(s downloaderv1.State) bool {
	switch s {
	case downloaderv1.State_STATE_SUCCEEDED, downloaderv1.State_STATE_FAILED, downloaderv1.State_STATE_CANCELED:
		return true
	}
	return false
}

func progressOf(p *downloaderv1.Progress, done bool) progressView {
	v := progressView{Done: p.GetDone(), Total: p.GetTotal(), Rate: p.GetRate(), ETASeconds: p.GetEta().AsDuration().Seconds()}
	switch {
	case done:
		v.Percent = 100
	case v.Total > 0:
		v.Percent = min(100, 100*float64(v.Done)/float64(v.Total))
	}
	return v
}

func bulkViewOf(j *downloaderv1.Job) bulkView {
	ok := j.GetState() == downloaderv1.State_STATE_SUCCEEDED
	v := bulkView{
		ID: j.GetId(), ManifestURL: j.GetManifestUrl(), State: stateName(j.GetState()), Ended: bulkEnded(j.GetState()),
		Error: j.GetError(), FileCount: j.GetFileCount(),
		Download: progressOf(j.GetDownload(), ok), Ingest: progressOf(j.GetIngest(), ok),
		Created: j.GetCreated().AsTime(), Updated: j.GetUpdated().AsTime(),
		Files: []fileView{}, Nodes: []bulkNodeView{},
	}
	for _, f := range j.GetFiles() {
		fok := f.GetState() == downloaderv1.State_STATE_SUCCEEDED
		v.Files = append(v.Files, fileView{
			Name: f.GetName(), State: stateName(f.GetState()), Slots: f.GetSlots(),
			Download: progressOf(f.GetDownload(), fok || f.GetState() == downloaderv1.State_STATE_DOWNLOADED || f.GetState() == downloaderv1.State_STATE_INGESTING),
			Ingest:   progressOf(f.GetIngest(), fok),
			Nodes:    append([]string{}, f.GetNodes()...), Attempts: f.GetAttempts(), Error: f.GetError(),
		})
	}
	for _, n := range j.GetNodes() {
		v.Nodes = append(v.Nodes, bulkNodeView{ID: n.GetNodeId(), Records: n.GetRecords(), Bytes: n.GetBytes(), Downloads: n.GetActiveDownloads(), Rate: n.GetRate()})
	}
	return v
}

func newBulkTracker(c *Console) *tracker[bulkView] {
	api := func() (downloaderv1.BulkLoadServiceClient, error) {
		cc, err := c.conn(c.o.Downloader)
		if err != nil {
			return nil, err
		}
		return downloaderv1.NewBulkLoadServiceClient(cc), nil
	}
	return &tracker[bulkView]{
		c: c, kind: kindBulkloads, jobs: map[string]bulkView{}, watching: map[string]bool{}, final: map[string]bool{},
		list: func(ctx context.Context) ([]bulkView, error) {
			d, err := api()
			if err != nil {
				return nil, err
			}
			r, err := d.ListJobs(ctx, &downloaderv1.ListJobsRequest{})
			if err != nil {
				return nil, err
			}
			out := make([]bulkView, 0, len(r.GetJobs()))
			for _, j := range r.GetJobs() {
				out = append(out, bulkViewOf(j))
			}
			return out, nil
		},
		watch: func(ctx context.Context, id string, each func(bulkView)) error {
			d, err := api()
			if err != nil {
				return err
			}
			s, err := d.WatchJob(ctx, &downloaderv1.WatchJobRequest{JobId: id, Interval: durationpb.New(watchInterval)})
			if err != nil {
				return err
			}
			return watchStream(func() (*downloaderv1.Job, error) {
				r, err := s.Recv()
				return r.GetJob(), err
			}, bulkViewOf, each)
		},
	}
}
