// Package node holds what a storage node knows about the cluster: its own
// identity, the topology it was last given and the state of each slot on
// this node, and answers the one question every data request asks first:
// may this node serve slot s right now?
//
// The topology and slot states are persisted as system records of the store
// and changed together in one Badger transaction, so after a crash a node
// never holds a topology without the slot states derived from it. In memory
// they form one immutable view behind an atomic pointer: the ownership check
// on the request path is a pointer load and an array index, with no lock.
package node

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/topology"
	"github.com/slotkv/slotkv/services/storage/internal/store"
)

// System record names (under store.SystemPrefix).
const (
	recordNodeID     = "node_id"
	recordTopology   = "topology"
	recordSlotStates = "slot_states"
)

// FrozenRetryAfter is the retry delay suggested to callers of a frozen slot.
// A hand-off freezes a slot only while the last changes drain, so a short
// delay keeps the write pause seen by clients close to the real one.
const FrozenRetryAfter = 20 * time.Millisecond

// ErrIdentity: the data directory belongs to another node id.
var ErrIdentity = errors.New("node identity mismatch")

// Kind is the state of one slot on this node.
type Kind uint8

// Slot states. The zero value means the node does not serve the slot.
const (
	None      Kind = iota // not served by this node
	Owned                 // served
	Migrating             // served while being copied to a peer
	Importing             // being received from a peer; not served yet
	Frozen                // nothing served: reads and writes paused for the hand-off
)

var kindNames = [...]string{"NONE", "OWNED", "MIGRATING", "IMPORTING", "FROZEN"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", k)
}

// Proto returns the wire enum of k.
func (k Kind) Proto() clusterv1.SlotState {
	switch k {
	case Owned:
		return clusterv1.SlotState_SLOT_STATE_OWNED
	case Migrating:
		return clusterv1.SlotState_SLOT_STATE_MIGRATING
	case Importing:
		return clusterv1.SlotState_SLOT_STATE_IMPORTING
	case Frozen:
		return clusterv1.SlotState_SLOT_STATE_FROZEN
	}
	return clusterv1.SlotState_SLOT_STATE_UNSPECIFIED
}

func kindFromProto(s clusterv1.SlotState) (Kind, error) {
	switch s {
	case clusterv1.SlotState_SLOT_STATE_UNSPECIFIED:
		return None, nil
	case clusterv1.SlotState_SLOT_STATE_OWNED:
		return Owned, nil
	case clusterv1.SlotState_SLOT_STATE_MIGRATING:
		return Migrating, nil
	case clusterv1.SlotState_SLOT_STATE_IMPORTING:
		return Importing, nil
	case clusterv1.SlotState_SLOT_STATE_FROZEN:
		return Frozen, nil
	}
	return None, fmt.Errorf("unknown slot state %d", s)
}

// serves reports whether a slot in this state is this node's to answer
// for: a FROZEN slot is, though every call of it is told to retry.
func (k Kind) serves() bool { return k == Owned || k == Migrating || k == Frozen }

// StateRange is the state of a range of slots. JobID and PeerNodeID name the
// migration behind MIGRATING, IMPORTING and FROZEN.
type StateRange struct {
	Range      slot.Range
	Kind       Kind
	JobID      string
	PeerNodeID string
}

// Proto returns the wire form of r.
func (r StateRange) Proto() *clusterv1.SlotStateRange {
	return &clusterv1.SlotStateRange{
		Range:      &clusterv1.SlotRange{Start: uint32(r.Range.Start), End: uint32(r.Range.End)},
		State:      r.Kind.Proto(),
		JobId:      r.JobID,
		PeerNodeId: r.PeerNodeID,
	}
}

// view is one immutable snapshot of the topology and slot states.
type view struct {
	topo   *topology.Topology // nil before the first SetTopology
	states []StateRange       // sorted, merged, Kind != None
	kind   [slot.Count]Kind   // per-slot lookup derived from states
	job    [slot.Count]uint16 // per-slot index into jobs (0: none)
	jobs   []string           // jobs[0] == ""
}

func newView(topo *topology.Topology, states []StateRange) *view {
	v := &view{topo: topo, states: states, jobs: []string{""}}
	for _, r := range states {
		var j uint16
		if r.JobID != "" {
			if i := slices.Index(v.jobs, r.JobID); i >= 0 {
				j = uint16(i)
			} else {
				j = uint16(len(v.jobs))
				v.jobs = append(v.jobs, r.JobID)
			}
		}
		for s := int(r.Range.Start); s <= int(r.Range.End); s++ {
			v.kind[s], v.job[s] = r.Kind, j
		}
	}
	return v
}

// Slots is every slot's state, spelled out for a transition to edit.
type Slots struct {
	Kind [slot.Count]Kind
	Job  [slot.Count]string
	Peer [slot.Count]string
}

func (v *view) slots() *Slots {
	s := new(Slots)
	for _, r := range v.states {
		for i := int(r.Range.Start); i <= int(r.Range.End); i++ {
			s.Kind[i], s.Job[i], s.Peer[i] = r.Kind, r.JobID, r.PeerNodeID
		}
	}
	return s
}

// Set sets the state of slot i.
func (s *Slots) Set(i uint16, k Kind, job, peer string) {
	s.Kind[i], s.Job[i], s.Peer[i] = k, job, peer
}

// ranges returns the states as merged ranges in slot order.
func (s *Slots) ranges() []StateRange {
	var out []StateRange
	for i := range slot.Count {
		k := s.Kind[i]
		if k == None {
			continue
		}
		if n := len(out); n > 0 {
			last := &out[n-1]
			if int(last.Range.End)+1 == i && last.Kind == k && last.JobID == s.Job[i] && last.PeerNodeID == s.Peer[i] {
				last.Range.End = uint16(i)
				continue
			}
		}
		out = append(out, StateRange{Range: slot.Range{Start: uint16(i), End: uint16(i)}, Kind: k, JobID: s.Job[i], PeerNodeID: s.Peer[i]})
	}
	return out
}

// Node is the identity and cluster view of one storage node. It is safe for
// concurrent use.
type Node struct {
	st *store.Store
	id string

	// gate: writes hold it shared from check to commit, state changes
	// exclusively (see the package doc). It also serializes changes.
	gate sync.RWMutex
	view atomic.Pointer[view]

	// released, when set, says whether the hand-off of a job has been
	// recorded (etcd mode): an IMPORTING slot becomes OWNED only then,
	// however early this node learns the topology that assigns it here.
	released atomic.Pointer[func(job string) bool]

	// served holds, per job, when this node began to serve the job's
	// imported slots (an install that turned them from IMPORTING to
	// OWNED, whichever path did it): the end of the hand-off's write
	// pause, which the job's EndMigration reports. In memory only: after
	// a restart the pause is reported from the later install.
	servedMu sync.Mutex
	served   map[string]time.Time

	// changed is closed, and dropped, at each install: Changed's waiters.
	changedMu sync.Mutex
	changed   chan struct{}

	// gen numbers the installs; heldAt[s] is the gen of the last install
	// whose view had slot s in a state other than NONE or assigned it
	// here: the last time this node could take writes or imports to it
	// (see HeldSince).
	gen    atomic.Uint64
	heldAt [slot.Count]atomic.Uint64
}

// Generation numbers the state installs of this node: it grows at each.
// Read in a Transition's committed func, it is that transition's.
func (n *Node) Generation() uint64 { return n.gen.Load() }

// HeldAt is the generation of the last install that gave this node slot s
// in a state other than NONE, or assigned it here (0: none since start).
func (n *Node) HeldAt(s uint16) uint64 {
	if int(s) >= slot.Count {
		return 0
	}
	return n.heldAt[s].Load()
}

// HeldSince reports whether an install after generation gen gave this
// node any slot of ranges in a state other than NONE, or assigned one
// here: whether data can have reached those slots since gen.
func (n *Node) HeldSince(ranges []slot.Range, gen uint64) bool {
	for _, r := range ranges {
		for s := int(r.Start); s <= int(r.End); s++ {
			if n.heldAt[s].Load() > gen {
				return true
			}
		}
	}
	return false
}

// Changed returns a channel closed when the node next installs a state (a
// topology or slot states). Take it before looking at the state a caller
// waits to change, so an install in between is not missed.
func (n *Node) Changed() <-chan struct{} {
	n.changedMu.Lock()
	defer n.changedMu.Unlock()
	if n.changed == nil {
		n.changed = make(chan struct{})
	}
	return n.changed
}

// ServedSince returns when this node began to serve slots imported by job,
// and false when it has not (or has forgotten, see ForgetServed).
func (n *Node) ServedSince(job string) (time.Time, bool) {
	n.servedMu.Lock()
	defer n.servedMu.Unlock()
	t, ok := n.served[job]
	return t, ok
}

// ForgetServed drops job's ServedSince, once the job has ended here.
func (n *Node) ForgetServed(job string) {
	n.servedMu.Lock()
	defer n.servedMu.Unlock()
	delete(n.served, job)
}

// noteServed records, for each job with a slot that went from IMPORTING in
// prev to OWNED in next, that it is served from now on.
func (n *Node) noteServed(prev, next *view) {
	now := time.Now()
	n.servedMu.Lock()
	defer n.servedMu.Unlock()
	for s := range slot.Count {
		if prev.kind[s] != Importing || next.kind[s] != Owned {
			continue
		}
		job := prev.jobs[prev.job[s]]
		if _, ok := n.served[job]; ok {
			continue
		}
		if n.served == nil {
			n.served = map[string]time.Time{}
		}
		n.served[job] = now
	}
}

// SetImportRelease makes an IMPORTING slot of job J turn OWNED only when
// released(J) is true, on top of the topology assigning it here. It is the
// destination's side of the hand-off record in etcd, which says that the
// source stopped serving the slots: a topology that assigns them here is
// not enough (it could come from another change than the job's commit),
// and serving before the source stopped would let a client read a value
// older than one it has seen. Without it (nil) the topology alone decides,
// as when the migrator pushes it. Call ReleaseImports when released(J)
// turns true.
func (n *Node) SetImportRelease(released func(job string) bool) {
	if released == nil {
		n.released.Store(nil)
		return
	}
	n.released.Store(&released)
}

// ImportReleased reports whether job's imports may turn OWNED once the
// topology assigns them here (always, without SetImportRelease).
func (n *Node) ImportReleased(job string) bool {
	f := n.released.Load()
	return f == nil || (*f)(job)
}

// ReleaseImports turns the IMPORTING slots of job that the held topology
// assigns to this node OWNED, in one transition under the exclusive write
// gate, once ImportReleased(job). It returns the slots it turned, none when
// there was nothing to do.
func (n *Node) ReleaseImports(job string) ([]slot.Range, error) {
	if !n.ImportReleased(job) {
		return nil, nil
	}
	var turned []uint16
	err := n.apply(func(cur *view, sl *Slots, _ *store.SystemTxn) (*topology.Topology, error) {
		for i := range slot.Count {
			s := uint16(i)
			if sl.Kind[i] != Importing || sl.Job[i] != job || !assigned(cur.topo, s, n.id) {
				continue
			}
			sl.Set(s, Owned, "", "")
			turned = append(turned, s)
		}
		if len(turned) == 0 {
			return nil, errUnchanged
		}
		return cur.topo, nil
	}, nil)
	if errors.Is(err, errUnchanged) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("node: release imports of job %q: %w", job, err)
	}
	return slot.FromSlots(turned).Ranges(), nil
}

func assigned(t *topology.Topology, s uint16, id string) bool {
	if t == nil {
		return false
	}
	owner, ok := t.Owner(s)
	return ok && owner.ID == id
}

// Open binds st to node id and loads the persisted topology and slot states.
// The first Open of a directory records id; a later Open with another id
// fails with ErrIdentity naming both, since serving one node's data under
// another's name would silently hand out the wrong slots.
func Open(st *store.Store, id string) (*Node, error) {
	if id == "" {
		return nil, rpcerr.InvalidField("node-id", "a node id is required")
	}
	err := st.UpdateSystem(func(tx *store.SystemTxn) error {
		have, err := tx.Get(recordNodeID)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return tx.Set(recordNodeID, []byte(id))
		case err != nil:
			return err
		case string(have) != id:
			return fmt.Errorf("%w: data directory %s belongs to node %q, refusing to start it as node %q (use --node-id %s or another --data-dir)",
				ErrIdentity, st.Dir(), have, id, have)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	n := &Node{st: st, id: id}
	v, err := n.load()
	if err != nil {
		return nil, err
	}
	tbl, err := n.captureTable(v)
	if err != nil {
		return nil, err
	}
	n.install(v, tbl)
	return n, nil
}

func (n *Node) load() (*view, error) {
	raw, err := n.st.GetSystem(recordTopology)
	if errors.Is(err, store.ErrNotFound) {
		return newView(nil, nil), nil
	}
	if err != nil {
		return nil, err
	}
	var p clusterv1.Topology
	if err := proto.Unmarshal(raw, &p); err != nil {
		return nil, fmt.Errorf("node: persisted topology is corrupt: %w", err)
	}
	topo, err := topology.FromProto(&p)
	if err != nil {
		return nil, fmt.Errorf("node: persisted topology is invalid: %w", err)
	}
	raw, err = n.st.GetSystem(recordSlotStates)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	states, err := decodeStates(raw)
	if err != nil {
		return nil, fmt.Errorf("node: persisted slot states are corrupt: %w", err)
	}
	return newView(topo, states), nil
}

// ID is the node id.
func (n *Node) ID() string { return n.id }

// Topology returns the topology held, nil before the first one.
func (n *Node) Topology() *topology.Topology { return n.view.Load().topo }

// States returns every slot range with a state on this node, in slot order.
func (n *Node) States() []StateRange {
	return append([]StateRange(nil), n.view.Load().states...)
}

// Served returns the slot ranges this node answers for now (OWNED,
// MIGRATING and FROZEN, which answers "retry"), merged, in slot order.
func (n *Node) Served() []slot.Range {
	var out []slot.Range
	for _, r := range n.view.Load().states {
		if !r.Kind.serves() {
			continue
		}
		if k := len(out); k > 0 && int(out[k-1].End)+1 == int(r.Range.Start) {
			out[k-1].End = r.Range.End
			continue
		}
		out = append(out, r.Range)
	}
	return out
}

// State returns the state of slot s.
func (n *Node) State(s uint16) Kind {
	if int(s) >= slot.Count {
		return None
	}
	return n.view.Load().kind[s]
}

// StateOf returns the state of slot s and the job behind it.
func (n *Node) StateOf(s uint16) (Kind, string) {
	if int(s) >= slot.Count {
		return None, ""
	}
	v := n.view.Load()
	return v.kind[s], v.jobs[v.job[s]]
}

// Write runs write under the write gate, taken shared, once this node
// accepts writes to every slot of slots (as CheckWrites), so no slot state
// change can come between the check and the commit. The gate is released
// when write returns, or panics (the server's recovery must not leave it
// held: the next Freeze or SetTopology would wait forever). When a slot is
// refused, write does not run and Write returns its index and the reason.
func (n *Node) Write(slots []uint16, write func() error) (refused int, err error) {
	n.gate.RLock()
	defer n.gate.RUnlock()
	if i, err := n.checkWrites(n.view.Load(), slots); err != nil {
		return i, err
	}
	return -1, write()
}

// EndWrite releases the gate taken by a successful Guard.
func (n *Node) EndWrite() { n.gate.RUnlock() }

// Guard takes the write gate shared without checking anything; fn returns
// nil or an error computed from the state seen under the gate. On success
// the caller must call EndWrite after its commit. Writers that are not
// ordinary data writes (imports, slot cleanup) use it to check their own
// rules against a view that cannot change before they commit.
func (n *Node) Guard(fn func() error) error {
	n.gate.RLock()
	if err := fn(); err != nil {
		n.gate.RUnlock()
		return err
	}
	return nil
}

// CheckRead returns nil when this node serves reads of slot s, and otherwise
// the reason: rpcerr.ErrNoTopology, rpcerr.ErrSlotUnassigned, a
// *rpcerr.SlotMovedError naming the owner, or a *rpcerr.SlotFrozenError.
// A FROZEN slot refuses reads too: the migrator commits the hand-off
// record with the topology, so the destination may serve from the commit
// on, and a source that still answered reads then could answer with a
// value older than one a client already read there.
func (n *Node) CheckRead(s uint16) error { return n.check(n.view.Load(), s) }

// CheckWrite is CheckRead for writes: a node takes writes of exactly the
// slots it serves reads of.
func (n *Node) CheckWrite(s uint16) error { return n.check(n.view.Load(), s) }

// CheckRanges checks every slot of ranges from one view and returns the
// error of the first slot not served.
func (n *Node) CheckRanges(ranges []slot.Range) error {
	v := n.view.Load()
	for _, r := range ranges {
		for s := int(r.Start); s <= int(r.End) && s < slot.Count; s++ {
			if err := n.check(v, uint16(s)); err != nil {
				return err
			}
		}
	}
	return nil
}

// CheckWrites checks from one view that this node accepts writes to every
// slot of slots (in order; a run of equal slots is checked once) and returns
// the index and error of the first slot that it does not, as CheckWrite.
func (n *Node) CheckWrites(slots []uint16) (int, error) {
	return n.checkWrites(n.view.Load(), slots)
}

func (n *Node) checkWrites(v *view, slots []uint16) (int, error) {
	for i, s := range slots {
		if i > 0 && s == slots[i-1] {
			continue
		}
		if err := n.check(v, s); err != nil {
			return i, err
		}
	}
	return -1, nil
}

func (n *Node) check(v *view, s uint16) error {
	if int(s) >= slot.Count {
		return rpcerr.InvalidField("slot", "slot %d is out of 0-%d", s, slot.MaxSlot)
	}
	switch k := v.kind[s]; {
	case k == Frozen:
		return &rpcerr.SlotFrozenError{Slot: s, RetryAfter: FrozenRetryAfter}
	case k.serves():
		return nil
	}
	if v.topo == nil {
		return fmt.Errorf("%w: node %s has not been given a topology yet", rpcerr.ErrNoTopology, n.id)
	}
	owner, ok := v.topo.Owner(s)
	switch {
	case !ok:
		return fmt.Errorf("%w: slot %d has no owner in topology version %d", rpcerr.ErrSlotUnassigned, s, v.topo.Version())
	case owner.ID == n.id:
		// Assigned here but not (yet) served: an import not committed.
		return fmt.Errorf("%w: slot %d is %s on node %s and not served yet", rpcerr.ErrUnavailable, s, v.kind[s], n.id)
	}
	return &rpcerr.SlotMovedError{Slot: s, OwnerID: owner.ID, OwnerAddress: owner.GRPCAddress, Version: v.topo.Version()}
}

// SetTopology installs p if it is newer than the topology held. It returns
// the version held afterwards and whether anything changed. An older version
// is refused with rpcerr.ErrStaleTopology; the same version is accepted
// (changed=false) only when identical, so a bootstrap can be re-run, and is
// otherwise refused too: two different topologies must never share a version.
// A newer topology is persisted together with the slot states derived from
// it in one transaction, under the exclusive write gate, then becomes
// visible to requests at once. Slots assigned to this node become OWNED and
// the rest lose their state, except for migrations: a MIGRATING or FROZEN
// slot keeps its state while the topology still assigns it here (and is
// cleared, the hand-off's commit, once it does not), and an IMPORTING slot
// keeps its state until the topology assigns it here (then OWNED).
func (n *Node) SetTopology(p *clusterv1.Topology) (version uint64, changed bool, err error) {
	in, err := n.Install(p)
	return in.Version, in.Changed, err
}

// Installed is what Install did.
type Installed struct {
	// Version is the topology version held afterwards; Changed whether it
	// is a new one.
	Version uint64
	Changed bool
	// HandedOff are the jobs whose MIGRATING or FROZEN slots the new
	// topology gave away: this node no longer serves them (the source's
	// side of the hand-off), in order of first slot.
	HandedOff []string
	// Held are the jobs whose IMPORTING slots the new topology assigns
	// here but stay IMPORTING because their hand-off is not released yet
	// (SetImportRelease).
	Held []string
}

// Install is SetTopology, telling which migrations it handed off or holds
// back (see Installed). With SetImportRelease set, an IMPORTING slot that
// the topology assigns here turns OWNED only when its job is released.
func (n *Node) Install(p *clusterv1.Topology) (in Installed, err error) {
	t, err := topology.FromProto(p)
	if err != nil {
		return in, err
	}
	var version uint64
	changed := true
	var handedOff, held []string
	addJob := func(list *[]string, job string) {
		if !slices.Contains(*list, job) {
			*list = append(*list, job)
		}
	}
	err = n.apply(func(cur *view, sl *Slots, _ *store.SystemTxn) (*topology.Topology, error) {
		if cur.topo != nil {
			switch have := cur.topo.Version(); {
			case t.Version() < have:
				version, changed = have, false
				return nil, fmt.Errorf("%w: topology version %d is older than version %d held by node %s",
					rpcerr.ErrStaleTopology, t.Version(), have, n.id)
			case t.Version() == have && t.Equal(cur.topo):
				version, changed = have, false
				return nil, errUnchanged
			case t.Version() == have:
				version, changed = have, false
				return nil, fmt.Errorf("%w: topology version %d differs from the version %d already held by node %s; a changed topology needs a higher version",
					rpcerr.ErrStaleTopology, t.Version(), have, n.id)
			}
		}
		for i := range slot.Count {
			s := uint16(i)
			owner, ok := t.Owner(s)
			mine := ok && owner.ID == n.id
			switch sl.Kind[i] {
			case Migrating, Frozen:
				// Still ours: the migration goes on. Given away: the commit
				// of the hand-off; the slot is no longer served here.
				if !mine {
					addJob(&handedOff, sl.Job[i])
					sl.Set(s, None, "", "")
				}
			case Importing:
				// Given to this node: the commit; the slot is served now,
				// or once the source has recorded that it stopped.
				switch {
				case mine && n.ImportReleased(sl.Job[i]):
					sl.Set(s, Owned, "", "")
				case mine:
					addJob(&held, sl.Job[i])
				}
			default:
				if mine {
					sl.Set(s, Owned, "", "")
				} else {
					sl.Set(s, None, "", "")
				}
			}
		}
		return t, nil
	}, nil)
	if errors.Is(err, errUnchanged) {
		return Installed{Version: version}, nil
	}
	if err != nil {
		if changed {
			err = fmt.Errorf("node: persist topology version %d: %w", t.Version(), err)
		}
		return Installed{Version: version}, err
	}
	return Installed{Version: t.Version(), Changed: true, HandedOff: handedOff, Held: held}, nil
}

var errUnchanged = errors.New("unchanged")

// Transition changes slot states with the write gate held exclusively: no
// write is between its check and its commit while fn runs. fn gets the
// topology held (nil before the first) and every slot's state to edit, and
// may write system records in tx (a migration's job record); when it
// returns nil the new states and its records commit in one transaction and
// the new view (and capture table) is installed. committed, when set, runs
// after that and before the gate opens, so in-memory state that writes
// check under the gate changes at the same moment.
func (n *Node) Transition(fn func(topo *topology.Topology, s *Slots, tx *store.SystemTxn) error, committed func()) error {
	return n.apply(func(cur *view, sl *Slots, tx *store.SystemTxn) (*topology.Topology, error) {
		return cur.topo, fn(cur.topo, sl, tx)
	}, committed)
}

// apply runs one state change under the exclusive gate; fn returns the
// topology to hold afterwards (persisted when it differs from the current).
func (n *Node) apply(fn func(cur *view, sl *Slots, tx *store.SystemTxn) (*topology.Topology, error), committed func()) error {
	if err := n.applyLocked(fn, committed); err != nil {
		return err
	}
	// Durable before the caller acknowledges it, but synced after the gate
	// is released: every writer of the node waits for the gate, and a sync
	// under it would add a disk flush to the hand-off's write pause. What
	// the new state refuses is refused from the install on; a crash before
	// the sync loses a state no one was told of.
	return n.st.SyncSystem()
}

func (n *Node) applyLocked(fn func(cur *view, sl *Slots, tx *store.SystemTxn) (*topology.Topology, error), committed func()) error {
	n.gate.Lock()
	defer n.gate.Unlock()
	cur := n.view.Load()
	sl := cur.slots()
	var (
		next *view
		tbl  *store.CaptureTable
	)
	err := n.st.CommitSystem(func(tx *store.SystemTxn) error {
		t, err := fn(cur, sl, tx)
		if err != nil {
			return err
		}
		if t != cur.topo {
			b, err := proto.Marshal(t.Proto())
			if err != nil {
				return fmt.Errorf("node: encode topology: %w", err)
			}
			if err := tx.Set(recordTopology, b); err != nil {
				return err
			}
		}
		states := sl.ranges()
		b, err := encodeStates(states)
		if err != nil {
			return err
		}
		if err := tx.Set(recordSlotStates, b); err != nil {
			return err
		}
		next = newView(t, states)
		tbl, err = n.captureTable(next)
		return err
	})
	if err != nil {
		return err
	}
	n.install(next, tbl)
	n.noteServed(cur, next)
	if committed != nil {
		committed()
	}
	return nil
}

// captureTable maps every MIGRATING slot of v to its job's change log; nil
// when there is none.
func (n *Node) captureTable(v *view) (*store.CaptureTable, error) {
	var tbl *store.CaptureTable
	for _, r := range v.states {
		if r.Kind != Migrating {
			continue
		}
		l, err := n.st.ChangeLog(r.JobID)
		if err != nil {
			return nil, fmt.Errorf("node: change log of job %q: %w", r.JobID, err)
		}
		if tbl == nil {
			tbl = new(store.CaptureTable)
		}
		for s := int(r.Range.Start); s <= int(r.Range.End); s++ {
			tbl[s] = l
		}
	}
	return tbl, nil
}

// install publishes v and its capture table (under the exclusive gate, or
// before the node is shared).
func (n *Node) install(v *view, tbl *store.CaptureTable) {
	g := n.gen.Add(1)
	var mine []slot.Range
	if v.topo != nil {
		mine = v.topo.RangesOf(n.id)
	}
	for _, r := range mine {
		for s := int(r.Start); s <= int(r.End); s++ {
			n.heldAt[s].Store(g)
		}
	}
	for _, r := range v.states {
		for s := int(r.Range.Start); s <= int(r.Range.End); s++ {
			n.heldAt[s].Store(g)
		}
	}
	n.st.SetCapture(tbl)
	n.view.Store(v)
	n.changedMu.Lock()
	defer n.changedMu.Unlock()
	if n.changed != nil {
		close(n.changed)
		n.changed = nil
	}
}

// encodeStates writes states as length-delimited SlotStateRange messages.
func encodeStates(states []StateRange) ([]byte, error) {
	var buf bytes.Buffer
	for _, r := range states {
		if _, err := protodelim.MarshalTo(&buf, r.Proto()); err != nil {
			return nil, fmt.Errorf("node: encode slot states: %w", err)
		}
	}
	return buf.Bytes(), nil
}

func decodeStates(b []byte) ([]StateRange, error) {
	var out []StateRange
	r := bytes.NewReader(b)
	for r.Len() > 0 {
		var m clusterv1.SlotStateRange
		if err := protodelim.UnmarshalFrom(r, &m); err != nil {
			return nil, err
		}
		k, err := kindFromProto(m.GetState())
		if err != nil {
			return nil, err
		}
		rg := slot.Range{Start: uint16(m.GetRange().GetStart()), End: uint16(m.GetRange().GetEnd())}
		if m.GetRange().GetEnd() > slot.MaxSlot || m.GetRange().GetStart() > m.GetRange().GetEnd() {
			return nil, fmt.Errorf("bad slot range %d-%d", m.GetRange().GetStart(), m.GetRange().GetEnd())
		}
		out = append(out, StateRange{Range: rg, Kind: k, JobID: m.GetJobId(), PeerNodeID: m.GetPeerNodeId()})
	}
	return out, nil
}
