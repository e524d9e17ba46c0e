package migrate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/topology"
	"github.com/slotkv/slotkv/pkg/topostore"
)

// The hand-off on the etcd control plane (Config.Topo). The commit
// point is one etcd transaction: the topology that gives the job's slots
// to the destination and the job's committed state (migrations/<job>),
// compared against the version the job read, and the hand-off record
// (handoff/<job>): the source froze the slots before, and a FROZEN slot
// serves neither reads nor writes, so the destination may serve them as
// soon as it holds the topology and the record, which come in one
// revision. The nodes watch both. The job record's Committing is written
// first, but etcd's topology decides: a job whose Committing is on disk
// is committed iff etcd's topology assigns its slots to the destination
// at or past CommittedVersion.

// committedState is the job's record written with the topology.
type committedState struct {
	JobID       string    `json:"job_id"`
	Source      string    `json:"source"`
	Destination string    `json:"destination"`
	Ranges      string    `json:"ranges"`
	Version     uint64    `json:"version"`
	CommittedAt time.Time `json:"committed_at"`
}

// commitOutcome is what an etcd commit attempt knows.
type commitOutcome int

const (
	notCommitted commitOutcome = iota // certainly not (nothing of the job's is in etcd)
	committed                         // the topology in etcd gives the slots to the destination
	undecided                         // a transaction was sent and etcd did not answer since
)

// Backoff between commit attempts while etcd does not answer.
const (
	etcdRetryMin = 50 * time.Millisecond
	etcdRetryMax = time.Second
)

// outcomeUnknown reports a commit transaction whose outcome is unknown
// (topostore says so in its message; it has no sentinel for it).
func outcomeUnknown(err error) bool {
	return err != nil && strings.Contains(err.Error(), "outcome unknown")
}

// committedIn reports whether t is the job's commit or a later version
// that includes it.
func (j *job) committedIn(t *topology.Topology, committedVersion uint64, dst string) bool {
	if t == nil || t.Version() < committedVersion {
		return false
	}
	for s := range j.ranges.All() {
		if n, ok := t.Owner(s); !ok || n.ID != dst {
			return false
		}
	}
	return true
}

// etcdCommit commits the job's NewTopology on version EtcdExpect in one
// etcd transaction with its committed state, until the outcome is known or
// ctx ends. A stale version (a disjoint job committed first) re-plans the
// commit on the stored topology when the source still owns every slot of
// the job; an unknown outcome is read back from etcd, or the commit tried
// again (a second try of the same compare cannot commit twice). A commit
// is noted in the record (EtcdCommitted), not saved: the caller's next
// update saves it, and until then a restart asks etcd, as it must anyway
// when the process dies between the commit and the save.
func (j *job) etcdCommit(ctx context.Context) (commitOutcome, error) {
	st := j.m.cfg.Topo
	sent := false
	delay := etcdRetryMin
	var last error
	for {
		j.mu.Lock()
		r := *j.rec
		j.mu.Unlock()
		var tp clusterv1.Topology
		if err := proto.Unmarshal(r.NewTopology, &tp); err != nil {
			return notCommitted, fmt.Errorf("committed topology of job %s: %w", j.id, err)
		}
		next, err := topology.FromProto(&tp)
		if err != nil {
			return notCommitted, err
		}
		state, err := json.Marshal(committedState{JobID: j.id, Source: r.Source, Destination: r.Destination,
			Ranges: j.ranges.String(), Version: next.Version(), CommittedAt: time.Now().UTC()})
		if err != nil {
			return notCommitted, err
		}
		if h := j.m.cfg.CommitHook; h != nil {
			h(ctx, j.id)
		}
		var fence []clientv3.Cmp
		if f := j.m.cfg.Fence; f != nil {
			cmp, ok := f()
			if !ok {
				return undecided, fmt.Errorf("not committing topology version %d: %w", next.Version(), errTermEnded)
			}
			fence = append(fence, cmp)
		}
		// The hand-off record goes with the commit: the source stopped
		// serving the slots, reads included, when it froze them, and its
		// freeze was durable on its disk before the drain began. So the
		// destination may serve from the commit's revision on, with no
		// second round trip through the source and etcd in the pause.
		err = st.CommitIf(ctx, fence, r.EtcdExpect, next, clientv3.OpPut(st.Key("migrations/"+j.id), string(state)),
			clientv3.OpPut(st.HandoffKey(j.id), strconv.FormatUint(next.Version(), 10)))
		switch {
		case err == nil:
			j.note(func(r *record) { r.EtcdCommitted = true })
			return committed, nil
		case errors.Is(err, topostore.ErrFenced):
			// Deposed: the next leader decides the commit from etcd (and
			// the nodes, still frozen); nothing is rolled back here.
			return undecided, err
		case errors.Is(err, topostore.ErrStaleVersion):
			cur, lerr := st.Load(ctx)
			if lerr != nil {
				last = fmt.Errorf("%w; reading back: %v", err, lerr)
				break
			}
			if j.committedIn(cur, r.CommittedVersion, r.Destination) {
				// An earlier try of ours went through.
				j.note(func(r *record) { r.EtcdCommitted = true })
				return committed, nil
			}
			re, rerr := j.replanCommit(cur, r.Source, r.Destination)
			if rerr != nil {
				return notCommitted, fmt.Errorf("%w: %v", err, rerr)
			}
			b, merr := proto.Marshal(re.Proto())
			if merr != nil {
				return notCommitted, merr
			}
			j.log.InfoContext(ctx, "topology changed in etcd since the plan; committing on the stored version", "expected", r.EtcdExpect, "stored", cur.Version(), "err", err)
			if perr := j.persist(func(r *record) {
				r.NewTopology, r.CommittedVersion, r.EtcdExpect = b, re.Version(), cur.Version()
			}); perr != nil {
				return notCommitted, fmt.Errorf("saving the re-planned commit: %w", perr)
			}
			// The stored version moved on: no earlier try can apply now.
			sent, delay = false, etcdRetryMin
			continue
		default:
			sent = sent || outcomeUnknown(err)
			last = err
		}
		if ctx.Err() != nil {
			cause := fmt.Errorf("etcd did not confirm the commit of topology version %d: %v", next.Version(), last)
			if sent {
				return undecided, cause
			}
			return notCommitted, cause
		}
		j.log.WarnContext(ctx, "etcd did not answer the commit; trying again", "err", last, "retry_in", delay)
		select {
		case <-time.After(delay):
			delay = min(2*delay, etcdRetryMax)
		case <-ctx.Done():
		}
	}
}

// replanCommit moves the job's commit onto cur: the source must still own
// every slot and the destination be in it.
func (j *job) replanCommit(cur *topology.Topology, src, dst string) (*topology.Topology, error) {
	for s := range j.ranges.All() {
		if n, ok := cur.Owner(s); !ok || n.ID != src {
			return nil, fmt.Errorf("slot %d is no longer owned by source %s in topology version %d", s, src, cur.Version())
		}
	}
	return cur.Reassign(j.ranges, dst)
}

// revertCommitting clears the local commit point of a job etcd did not
// commit, so that it rolls back.
func (j *job) revertCommitting() {
	// In memory whatever the save says: the rollback that follows must
	// not take the job for committed. Should the save fail, the next start
	// finds the nodes no longer frozen and does not commit either.
	j.update(func(r *record) {
		r.Committing, r.NewTopology, r.CommittedVersion, r.EtcdExpect = false, nil, 0, 0
	})
}

// resolveCommit finishes a commit whose outcome is unknown (etcd
// unreachable after the transaction was sent, or the migrator restarted
// between its Committing record and the transaction), on the manager's
// context: only shutdown stops it, never a job cancel, since a job that
// may be committed must not roll back.
func (j *job) resolveCommit() (commitOutcome, error) {
	return j.etcdCommit(j.m.ctx)
}

// resumeEtcdCommit is the restart recovery of a job with Committing on
// disk and no confirmed commit in etcd: committed iff etcd's topology
// assigns the slots to the destination (at or past CommittedVersion). If
// not, the commit is made now when both nodes still hold the job as it
// was at the commit point (source FROZEN): a transaction sent before the
// restart cannot apply after that (the compare fails once the version
// moved), so the job is never rolled back under a commit that could still
// land. Otherwise it rolls back as a job interrupted before its commit.
func (j *job) resumeEtcdCommit() {
	st := j.m.cfg.Topo
	j.mu.Lock()
	r := *j.rec
	j.mu.Unlock()
	var cur *topology.Topology
	for {
		ctx, cancel := context.WithTimeout(j.m.ctx, rpcTimeout)
		t, err := st.Load(ctx)
		cancel()
		if err == nil {
			cur = t
			break
		}
		j.log.Warn("reading the topology from etcd to decide a commit; retrying", "err", err, "retry_in", j.m.cfg.RollbackRetryInterval)
		if !j.m.sleep(j.m.cfg.RollbackRetryInterval) {
			return
		}
	}
	if j.committedIn(cur, r.CommittedVersion, r.Destination) {
		j.update(func(r *record) { r.EtcdCommitted = true })
		j.log.Info("the commit is in etcd; rolling the job forward", "version", cur.Version())
		j.resumeCommitted()
		return
	}
	frozen, err := j.heldFrozen()
	for err != nil {
		j.log.Warn("asking the nodes whether the job is still frozen; retrying", "err", err, "retry_in", j.m.cfg.RollbackRetryInterval)
		if !j.m.sleep(j.m.cfg.RollbackRetryInterval) {
			return
		}
		frozen, err = j.heldFrozen()
	}
	if !frozen {
		j.revertCommitting()
		j.fail(fmt.Errorf("migrator restarted during HANDOFF before etcd committed the job (topology version %d does not give its slots to %s), and the nodes no longer hold it frozen", cur.Version(), r.Destination))
		return
	}
	out, err := j.resolveCommit()
	switch out {
	case committed:
		j.log.Info("committed in etcd after a restart; rolling the job forward")
		j.resumeCommitted()
	case notCommitted:
		j.revertCommitting()
		j.fail(fmt.Errorf("migrator restarted during HANDOFF and etcd did not commit the job: %w", err))
	default:
		j.log.Warn("stopped before etcd answered; the next start decides", "err", err)
	}
}

// heldFrozen reports whether the source holds the job FROZEN and the
// destination holds it too: the state of the commit point.
func (j *job) heldFrozen() (bool, error) {
	c := j.m.newConns()
	defer c.close()
	src, dst, err := j.peers(c)
	if err != nil {
		return false, err
	}
	has := func(p *peer, frozen bool) (bool, error) {
		ctx, cancel := context.WithTimeout(j.m.ctx, rpcTimeout)
		defer cancel()
		resp, err := p.mig.ListMigrations(ctx, &storagev1.ListMigrationsRequest{})
		if err != nil {
			return false, p.err("ListMigrations", err)
		}
		for _, m := range resp.GetMigrations() {
			if m.GetJobId() == j.id {
				return !frozen || m.GetFrozen(), nil
			}
		}
		return false, nil
	}
	ok, err := has(src, true)
	if err != nil || !ok {
		return false, err
	}
	return has(dst, false)
}

// waitHandshake waits for the job's hand-off record. A commit of this
// migrator carries it; one made by an earlier version relied on the source
// to write it. When it is slow to come, the source's own topology tells: a
// source that holds the committed version or a later one does not serve
// the slots, and the record is written for it.
func (j *job) waitHandshake(ctx context.Context, src *peer, version uint64) error {
	st := j.m.cfg.Topo
	ctx, cancel := context.WithTimeoutCause(ctx, rpcTimeout,
		fmt.Errorf("source %s did not record the hand-off of topology version %d in etcd within %s", src.id, version, rpcTimeout))
	defer cancel()
	start := time.Now()
	lastAsk := start
	for {
		_, ok, err := st.Handoff(ctx, j.id)
		if err == nil && ok {
			return nil
		}
		if time.Since(lastAsk) >= handshakeFallback {
			lastAsk = time.Now()
			if resp, gerr := src.node.GetTopology(ctx, &storagev1.GetTopologyRequest{}); gerr == nil && resp.GetTopology().GetVersion() >= version {
				held := resp.GetTopology().GetVersion()
				if rerr := st.RecordHandoff(ctx, j.id, held); rerr == nil {
					j.log.InfoContext(ctx, "recorded the hand-off for the source", "source", src.id, "version", held)
					return nil
				}
			}
		}
		select {
		case <-time.After(handshakePoll):
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// waitServing waits until the destination serves every slot of the job,
// by ending the job there: EndMigration COMMITTED succeeds only once the
// destination holds the committed topology and the source's hand-off
// record (it turns the slots OWNED then, if its watch has not yet). With
// wait set the destination answers as soon as it installs that state, no
// poll (each try takes its write gate). It notes the destination ended
// (the caller's next update saves it), and returns when, by this clock,
// the destination began to serve (it syncs after, before it answers) and
// how long before its answer that was. Other errors (a restarting
// destination) are retried until rpcTimeout.
func (j *job) waitServing(ctx context.Context, dst *peer) (servedAt time.Time, before time.Duration, err error) {
	ctx, cancel := context.WithTimeoutCause(ctx, rpcTimeout,
		fmt.Errorf("destination %s did not serve slots %s within %s", dst.id, j.ranges, rpcTimeout))
	defer cancel()
	for {
		resp, err := dst.mig.EndMigration(ctx, &storagev1.EndMigrationRequest{JobId: j.id,
			Outcome: storagev1.MigrationOutcome_MIGRATION_OUTCOME_COMMITTED, Wait: true})
		if err == nil {
			j.note(func(r *record) { r.EndedDestination = true })
			before := msDuration(resp.GetServingMs())
			return time.Now().Add(-before), before, nil
		}
		select {
		case <-time.After(handshakePoll):
		case <-ctx.Done():
			return time.Time{}, 0, fmt.Errorf("%w (last answer: %v)", context.Cause(ctx), dst.err("EndMigration(COMMITTED)", err))
		}
	}
}

// Polling of the hand-off: often, since the write pause lasts until the
// destination serves.
const (
	handshakePoll     = 5 * time.Millisecond
	handshakeFallback = 200 * time.Millisecond
)
