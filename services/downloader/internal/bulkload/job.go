package bulkload

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/semaphore"

	"github.com/slotkv/slotkv/pkg/dataset"
	"github.com/slotkv/slotkv/pkg/jobstore"
	"github.com/slotkv/slotkv/pkg/slot"
)

// job is one bulk-load job: its persisted record and its runtime state.
type job struct {
	m  *Manager
	mu sync.Mutex

	rec   *jobRecord
	files []*fileRT
	nodes map[string]*nodeRT
	dl    meter // bytes over all files
	ing   meter // records over all files

	cancel  context.CancelCauseFunc // set while a run is under way
	done    chan struct{}           // closed when that run has ended
	changed chan struct{}           // closed (and replaced) on every state change
	dirty   bool                    // progress not yet saved
	saveErr error                   // of the last save

	ingestSem *semaphore.Weighted
}

type fileRT struct {
	dl, ing meter
	targets []string // nodes the file's records go to, when scheduled
}

type nodeRT struct {
	rate   meter // records
	active int   // downloads bound for the node running now
}

func newJob(m *Manager, r *jobRecord) *job {
	if r.Nodes == nil {
		r.Nodes = map[string]*nodeCount{}
	}
	j := &job{m: m, rec: r, nodes: map[string]*nodeRT{}, changed: make(chan struct{})}
	j.files = make([]*fileRT, len(r.Files))
	for i := range j.files {
		j.files[i] = &fileRT{}
	}
	return j
}

func (j *job) id() string  { return j.rec.ID } // immutable
func (j *job) dir() string { return j.m.jobsDir + "/" + j.rec.ID }

func (j *job) touchLocked() {
	j.rec.Updated = time.Now().UTC()
	close(j.changed)
	j.changed = make(chan struct{})
}

func (j *job) saveLocked() error {
	j.dirty = false
	err := j.m.st.Put(j.rec.ID, j.rec)
	j.saveErr = err
	if err != nil {
		if errors.Is(err, jobstore.ErrNotLeader) {
			// The term is over: the next leader owns the record now.
			j.m.log.Warn("bulk-load job not saved: this replica no longer leads", "job_id", j.rec.ID, "err", err)
			return err
		}
		j.m.log.Error("saving bulk-load job failed", "job_id", j.rec.ID, "err", err)
	}
	return err
}

func (j *job) deposed() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.deposedLocked()
}

// deposedLocked reports whether the last save was refused because this
// replica no longer leads: what the job did since is not in its record.
func (j *job) deposedLocked() bool { return errors.Is(j.saveErr, jobstore.ErrNotLeader) }

func (j *job) save() {
	j.mu.Lock()
	defer j.mu.Unlock()
	_ = j.saveLocked()
}

// setFile changes file i under the lock; a state change is persisted and
// announced.
func (j *job) setFile(i int, f func(*fileRecord, *fileRT)) {
	j.mu.Lock()
	defer j.mu.Unlock()
	fr := j.rec.Files[i]
	before := fr.State
	f(fr, j.files[i])
	j.dirty = true
	if fr.State != before {
		j.deriveLocked()
		j.touchLocked()
		_ = j.saveLocked()
	}
}

func (j *job) addDownloaded(i int, n int64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.rec.Files[i].Downloaded += n
	j.dirty = true
}

// acked records a batch of file i acknowledged by node: the records of
// indices idx are committed there.
func (j *job) acked(i int, node string, idx []uint64, bytes uint64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	fr := j.rec.Files[i]
	fr.setAcked(fr.ackedSet().addIndices(idx))
	records := uint64(len(idx))
	nc := j.rec.Nodes[node]
	if nc == nil {
		nc = &nodeCount{}
		j.rec.Nodes[node] = nc
	}
	nc.Records += records
	nc.Bytes += bytes
	j.dirty = true
}

// deriveLocked sets a running job's state from its files': PENDING until
// a file starts downloading, DOWNLOADING while any file is still to be
// downloaded, DOWNLOADED when all are and none is ingesting yet, then
// INGESTING. SUCCEEDED, FAILED, PAUSED and CANCELED are set by the run.
func (j *job) deriveLocked() {
	if !j.rec.State.Running() || !j.rec.HaveFiles {
		return
	}
	var toDownload, started, ingest bool
	for _, f := range j.rec.Files {
		switch f.State {
		case StatePending:
			toDownload = true
		case StateDownloading:
			toDownload, started = true, true
		case StateIngesting, StateSucceeded:
			ingest, started = true, true
		case StateDownloaded:
			started = true
		case StateFailed, StatePaused, StateCanceled:
			// The run is ending (finish sets the job's state); such a
			// file must not send an ingesting job back to DOWNLOADING.
		}
	}
	switch {
	case toDownload && started:
		j.rec.State = StateDownloading
	case toDownload:
		j.rec.State = StatePending
	case ingest:
		j.rec.State = StateIngesting
	default:
		j.rec.State = StateDownloaded
	}
}

// startLocked starts a run of the job (j.mu held, m.mu held or not yet
// shared).
func (m *Manager) startLocked(j *job) {
	ctx, cancel := context.WithCancelCause(context.Background())
	j.cancel = cancel
	j.done = make(chan struct{})
	j.ingestSem = semaphore.NewWeighted(int64(m.opts.IngestConcurrency))
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		// One trace per run of the job; logs of the run carry its id.
		ctx, span := m.tracer.Start(ctx, "bulkload job", trace.WithNewRoot(), trace.WithAttributes(
			attribute.String("job_id", j.rec.ID), attribute.String("manifest_url", j.rec.ManifestURL)))
		err := j.execute(ctx)
		if err != nil && ctx.Err() == nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		j.finish(ctx, err)
		span.End()
	}()
}

// execute runs the job until every file has succeeded, a file fails or
// the run's context ends.
func (j *job) execute(ctx context.Context) error {
	var wg sync.WaitGroup
	tctx, stopTicker := context.WithCancel(ctx)
	wg.Go(func() { j.tick(tctx) })
	defer func() {
		stopTicker()
		wg.Wait()
	}()

	return j.executeFiles(ctx)
}

func (j *job) executeFiles(ctx context.Context) error {
	j.mu.Lock()
	have := j.rec.HaveFiles
	j.mu.Unlock()
	if !have {
		if err := j.fetchManifest(ctx); err != nil {
			return err
		}
	}
	if err := j.prepare(ctx); err != nil {
		return err
	}

	fctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	var (
		wg       sync.WaitGroup
		errMu    sync.Mutex
		firstErr error
	)
	j.mu.Lock()
	n := len(j.rec.Files)
	todo := make([]int, 0, n)
	for i, f := range j.rec.Files {
		if f.State != StateSucceeded {
			todo = append(todo, i)
		}
	}
	j.mu.Unlock()
	for _, i := range todo {
		wg.Go(func() {
			err := j.runFile(fctx, i)
			var fe *fileError
			if err != nil && errors.As(err, &fe) {
				errMu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				errMu.Unlock()
				fail(err)
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return firstErr
}

// fetchManifest downloads and parses the manifest and records its files.
func (j *job) fetchManifest(ctx context.Context) error {
	m := j.m
	j.mu.Lock()
	raw := j.rec.ManifestURL
	j.mu.Unlock()
	ctx, span := m.tracer.Start(ctx, "manifest")
	defer span.End()
	u, err := m.checkURL("manifest_url", raw)
	if err != nil {
		return fmt.Errorf("manifest %s: %w", raw, err)
	}
	body, err := m.openManifest(ctx, u)
	if err != nil {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return fmt.Errorf("manifest %s: %w", raw, err)
	}
	defer body.Close()
	man, err := dataset.ParseManifest(body, dataset.Limits{MaxManifestBytes: m.opts.MaxManifestBytes, MaxFileBytes: m.opts.MaxFileBytes, MaxFiles: m.opts.MaxFiles})
	if err != nil {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return fmt.Errorf("manifest %s: %w", raw, err)
	}
	files := make([]*fileRecord, len(man.Files))
	for i, f := range man.Files {
		if _, err := localPath(j.dir(), f.Name); err != nil {
			return fmt.Errorf("manifest %s: files[%d].name: %w", raw, i, err)
		}
		files[i] = &fileRecord{Name: f.Name, Size: f.Size, SHA256: f.SHA256, Slots: f.Slots, Keys: f.Keys, First: f.FirstKey, Last: f.LastKey, State: StatePending}
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.rec.Files, j.rec.Records, j.rec.HaveFiles = files, man.Records, true
	j.files = make([]*fileRT, len(files))
	for i := range j.files {
		j.files[i] = &fileRT{}
	}
	span.SetAttributes(attribute.Int("files", len(files)), attribute.Int64("records", int64(man.Records)))
	m.log.InfoContext(ctx, "manifest loaded", "job_id", j.rec.ID, "files", len(files), "records", man.Records)
	j.deriveLocked()
	j.touchLocked()
	_ = j.saveLocked()
	return nil
}

// prepare sets every unfinished file to where it can continue from (a
// verified download on disk: DOWNLOADED; otherwise PENDING, keeping its
// part file) and checks the disk has room for what is left to download.
func (j *job) prepare(ctx context.Context) error {
	m := j.m
	if err := os.MkdirAll(j.dir(), 0o755); err != nil {
		return fmt.Errorf("create download directory: %w", err)
	}
	// A download kept on disk under its final name is used again only if
	// it still has the manifest's size and sha256 (re-read outside the
	// lock): a copy changed or truncated since is downloaded again. A
	// whole file whose verification was not recorded (a crash between the
	// rename and the save) is taken once it checks out.
	type kept struct {
		i               int
		name, path, sha string
		size            int64
		verified        bool
	}
	var check []kept
	j.mu.Lock()
	for i, f := range j.rec.Files {
		if f.State == StateSucceeded {
			continue
		}
		if path, err := localPath(j.dir(), f.Name); err == nil {
			if _, err := os.Stat(path); err == nil {
				check = append(check, kept{i, f.Name, path, f.SHA256, f.Size, f.Verified})
			}
		}
	}
	j.mu.Unlock()
	intact := map[int]bool{}
	for _, k := range check {
		if err := checkKept(k.path, k.size, k.sha); err != nil {
			if k.verified {
				m.log.WarnContext(ctx, "a verified download changed on disk; downloading it again", "job_id", j.id(), "file", k.name, "err", err)
			}
			_ = os.Remove(k.path)
			continue
		}
		intact[k.i] = true
	}

	j.mu.Lock()
	var need uint64
	for i, f := range j.rec.Files {
		if f.State == StateSucceeded {
			continue
		}
		f.Error = ""
		f.setAcked(f.ackedSet())
		path, err := localPath(j.dir(), f.Name)
		if err != nil {
			j.mu.Unlock()
			return fileErr(f.Name, "%v", err)
		}
		if intact[i] {
			f.Verified, f.State, f.Downloaded = true, StateDownloaded, f.Size
			continue
		}
		f.Verified, f.State, f.Downloaded = false, StatePending, 0
		if st, err := os.Stat(partPath(path)); err == nil && st.Size() <= f.Size {
			f.Downloaded = st.Size()
		}
		need += uint64(f.Size - f.Downloaded)
	}
	for _, rt := range j.files {
		rt.dl.reset()
		rt.ing.reset()
	}
	j.dl.reset()
	j.ing.reset()
	j.deriveLocked()
	j.touchLocked()
	_ = j.saveLocked()
	dir := j.dir()
	j.mu.Unlock()

	if need > 0 {
		free, err := m.opts.Statfs(dir)
		if err != nil {
			return fmt.Errorf("checking free disk space in %s: %w", dir, err)
		}
		if free < need {
			return fmt.Errorf("not enough disk space: the dataset needs %d bytes, %d free in %s", need, free, dir)
		}
	}
	return nil
}

// checkKept checks that the verified download at path still has the
// manifest's size and sha256.
func checkKept(path string, size int64, sha string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.Size() != size {
		return fmt.Errorf("%s is %d bytes, the manifest says %d", path, st.Size(), size)
	}
	h := sha256.New()
	if _, err := hashFile(path, h); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sha {
		return fmt.Errorf("%s: sha256 %s, the manifest says %s", path, short(got), short(sha))
	}
	return nil
}

// runFile downloads (unless already verified on disk) and ingests file i.
func (j *job) runFile(ctx context.Context, i int) (err error) {
	m := j.m
	j.mu.Lock()
	f := *j.rec.Files[i]
	j.mu.Unlock()
	ctx, span := m.tracer.Start(ctx, "file "+f.Name, trace.WithAttributes(
		attribute.String("file", f.Name), attribute.String("slots", f.Slots), attribute.Int64("size", f.Size), attribute.Int64("keys", int64(f.Keys))))
	defer func() {
		if err != nil && ctx.Err() == nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}()
	defer func() {
		var fe *fileError
		if err != nil && errors.As(err, &fe) && ctx.Err() == nil {
			m.log.ErrorContext(ctx, "bulk-load file failed", "job_id", j.id(), "file", f.Name, "err", err)
			j.setFile(i, func(fr *fileRecord, _ *fileRT) {
				fr.State, fr.Error = StateFailed, err.Error()
			})
		}
	}()

	if f.State != StateDownloaded {
		targets, err := j.targets(ctx, f)
		if err != nil {
			return err
		}
		release, err := m.sched.acquire(ctx, targets)
		if err != nil {
			return err
		}
		j.mu.Lock()
		j.files[i].targets = targets
		j.mu.Unlock()
		j.activeDownload(i, targets, 1)
		err = j.download(ctx, i)
		j.activeDownload(i, targets, -1)
		release()
		if err != nil {
			return err
		}
	}

	targets, err := j.targets(ctx, f)
	if err != nil {
		return err
	}
	w := int64(min(max(len(targets), 1), m.opts.IngestConcurrency))
	if err := j.ingestSem.Acquire(ctx, w); err != nil {
		return context.Cause(ctx)
	}
	err = j.ingest(ctx, i)
	j.ingestSem.Release(w)
	if err != nil {
		return err
	}
	// Persist SUCCEEDED before freeing the disk: a crash in between must
	// leave a finished file, not an INGESTING one with no local copy
	// (which would be downloaded again).
	j.setFile(i, func(fr *fileRecord, _ *fileRT) {
		fr.State = StateSucceeded
		fr.setAcked(spans{}.add(0, fr.Keys))
	})
	if path, perr := localPath(j.dir(), f.Name); perr == nil {
		_ = os.Remove(path) // ingested: free the disk now
	}
	m.log.InfoContext(ctx, "bulk-load file done", "job_id", j.id(), "file", f.Name, "keys", f.Keys)
	return nil
}

// targets are the nodes owning the file's slot range now.
func (j *job) targets(ctx context.Context, f fileRecord) ([]string, error) {
	r, err := slot.ParseRange(f.Slots)
	if err != nil {
		return nil, fileErr(f.Name, "slots %q: %v", f.Slots, err)
	}
	t := j.m.rt.Topology()
	if t == nil {
		if t, err = j.m.topology(ctx, nil); err != nil {
			if ctx.Err() != nil {
				return nil, context.Cause(ctx)
			}
			return nil, fileErr(f.Name, "%v", err)
		}
	}
	set := map[string]bool{}
	for s := int(r.Start); s <= int(r.End); s++ {
		if n, ok := t.Owner(uint16(s)); ok {
			set[n.ID] = true
		}
	}
	return slices.Sorted(maps.Keys(set)), nil
}

func (j *job) activeDownload(i int, nodes []string, d int) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, n := range nodes {
		rt := j.nodes[n]
		if rt == nil {
			rt = &nodeRT{}
			j.nodes[n] = rt
		}
		rt.active += d
	}
}

// finish records how the run ended.
func (j *job) finish(ctx context.Context, err error) {
	m := j.m
	cause := context.Cause(ctx)
	j.mu.Lock()
	removeDir, removeParts, save := false, false, true
	switch {
	case errors.Is(cause, errDeposed):
		// Not saved: the next leader continues from the record as it
		// is in etcd (and may be running the job already).
		save = false
		j.saveErr = fmt.Errorf("%w: the term ended before the job stopped", jobstore.ErrNotLeader)
		m.log.InfoContext(ctx, "bulk-load job stopped: this replica no longer leads; the next leader continues it", "job_id", j.rec.ID, "state", j.rec.State.String())
	case err == nil:
		j.rec.State, j.rec.Error = StateSucceeded, ""
		removeDir = true
		m.log.InfoContext(ctx, "bulk-load job succeeded", "job_id", j.rec.ID, "files", len(j.rec.Files), "records", j.rec.Records)
	case errors.Is(cause, errShutdown):
		// Keep the state: the job continues after the restart.
		m.log.InfoContext(ctx, "bulk-load job stopped for shutdown; it continues after a restart", "job_id", j.rec.ID, "state", j.rec.State.String())
	case errors.Is(cause, errPaused):
		j.setStoppedLocked(StatePaused)
	case errors.Is(cause, errCanceled):
		j.setStoppedLocked(StateCanceled)
		removeDir = true
	default:
		j.rec.State, j.rec.Error = StateFailed, err.Error()
		// Partial downloads (the .part temp files) are removed; verified
		// files stay, so a resume does not fetch them again.
		removeParts = true
		for _, f := range j.rec.Files {
			switch f.State {
			case StateDownloading, StatePending:
				f.State, f.Downloaded = StatePending, 0
			case StateIngesting:
				f.State = StateDownloaded
			}
		}
		m.log.ErrorContext(ctx, "bulk-load job failed", "job_id", j.rec.ID, "err", err)
	}
	j.cancel(nil)
	j.cancel = nil
	for _, rt := range j.nodes {
		rt.active = 0
	}
	j.touchLocked()
	if save {
		_ = j.saveLocked()
	}
	done := j.done
	j.mu.Unlock()
	if removeDir {
		j.removeDir()
	}
	if removeParts {
		j.removeParts()
	}
	close(done)
}

// setStoppedLocked sets the job and its unfinished files to st (PAUSED or
// CANCELED).
func (j *job) setStoppedLocked(st State) {
	j.rec.State = st
	for _, f := range j.rec.Files {
		if f.State != StateSucceeded && (st == StateCanceled || f.State != StateFailed) {
			f.State = st
		}
	}
	j.touchLocked()
}

// removeParts removes the job's partial downloads.
func (j *job) removeParts() {
	parts, _ := filepath.Glob(filepath.Join(j.dir(), ".*"+partSuffix))
	for _, p := range parts {
		if err := os.Remove(p); err != nil {
			j.m.log.Warn("removing a partial download failed", "job_id", j.id(), "path", p, "err", err)
		}
	}
}

func (j *job) removeDir() {
	if err := os.RemoveAll(j.dir()); err != nil {
		j.m.log.Warn("removing the job's download directory failed", "job_id", j.id(), "dir", j.dir(), "err", err)
	}
}

// tick updates rates every second, and saves progress and logs a progress
// line every ProgressInterval.
func (j *job) tick(ctx context.Context) {
	m := j.m
	t := time.NewTicker(time.Second)
	defer t.Stop()
	lastLog := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			j.mu.Lock()
			j.updateMetersLocked(now)
			var line []any
			if now.Sub(lastLog) >= m.opts.ProgressInterval {
				lastLog = now
				if j.dirty {
					_ = j.saveLocked()
				}
				st := j.statusLocked(false)
				line = []any{"job_id", st.ID, "state", st.State.String(),
					"bytes", st.Download.Done, "bytes_total", st.Download.Total, "bytes_per_sec", int64(st.Download.Rate),
					"keys", st.Ingest.Done, "keys_total", st.Ingest.Total, "keys_per_sec", int64(st.Ingest.Rate)}
				if st.Ingest.HasETA {
					line = append(line, "eta", st.Ingest.ETA.Round(time.Second).String())
				} else if st.Download.HasETA && st.Download.Done < st.Download.Total {
					line = append(line, "download_eta", st.Download.ETA.Round(time.Second).String())
				}
			}
			j.mu.Unlock()
			if line != nil {
				m.log.InfoContext(ctx, "bulk-load progress", line...)
			}
		}
	}
}

func (j *job) updateMetersLocked(now time.Time) {
	var dl, ing, dlTotal, ingTotal uint64
	for i, f := range j.rec.Files {
		rt := j.files[i]
		rt.dl.done, rt.dl.total = uint64(f.Downloaded), uint64(f.Size)
		rt.ing.done, rt.ing.total = f.Ingested, f.Keys
		rt.dl.tick(now)
		rt.ing.tick(now)
		dl += uint64(f.Downloaded)
		ing += f.Ingested
		dlTotal += uint64(f.Size)
		ingTotal += f.Keys
	}
	j.dl.done, j.dl.total = dl, dlTotal
	j.ing.done, j.ing.total = ing, ingTotal
	j.dl.tick(now)
	j.ing.tick(now)
	for id, nc := range j.rec.Nodes {
		rt := j.nodes[id]
		if rt == nil {
			rt = &nodeRT{}
			j.nodes[id] = rt
		}
		rt.rate.done = nc.Records
		rt.rate.tick(now)
	}
}
