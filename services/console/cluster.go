package console

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/topology"
	"github.com/slotkv/slotkv/pkg/topostore"
)

// palette colors the nodes, in topology order (by id); it repeats past
// its end. Chosen to stay apart for the common color blindnesses.
var palette = []string{"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"}

// clusterView is the cluster page's data.
type clusterView struct {
	Version uint64 `json:"version"`
	// From says where the topology came from: "etcd", "router" or a node
	// id.
	From  string     `json:"from"`
	Nodes []nodeView `json:"nodes"`
	// Dead are the ids of the nodes the topology names that hold no
	// registration in etcd (their lease expired or they stopped): their
	// slots are not served. Empty without etcd.
	Dead    []string    `json:"dead"`
	Owners  []ownerSpan `json:"owners"`
	Marks   []markSpan  `json:"marks"`
	Errors  []string    `json:"errors"`
	Links   []docLink   `json:"links"`
	Updated time.Time   `json:"updated"`
}

type nodeView struct {
	ID    string `json:"id"`
	GRPC  string `json:"grpc"`
	HTTP  string `json:"http"`
	Color string `json:"color"`
	// Health: "ok", "stale" (answers, with an older topology), "down"
	// (does not answer) or, with etcd, "dead" (named by the topology but
	// not registered: its lease expired or it stopped).
	Health string `json:"health"`
	Error  string `json:"error,omitempty"`
	// Registered is, with etcd, whether the node holds a live registration
	// there; absent without etcd or while etcd does not answer.
	Registered *bool `json:"registered,omitempty"`
	// InTopology is false for a registered node the topology does not name
	// yet (a new node, before a migration gives it slots).
	InTopology      bool   `json:"in_topology"`
	Keys            uint64 `json:"keys"`
	DiskBytes       int64  `json:"disk_bytes"`
	Slots           int    `json:"slots"`
	Ranges          string `json:"ranges"`
	TopologyVersion uint64 `json:"topology_version"`
	Version         string `json:"version"`
	// States are the node's slot ranges that are not plainly owned.
	States []markSpan `json:"states"`
}

// ownerSpan is a run of slots one node owns in the topology.
type ownerSpan struct {
	Start uint32 `json:"start"`
	End   uint32 `json:"end"`
	Node  string `json:"node"`
	Color string `json:"color"`
	// Dead: the owner is a dead node (see clusterView.Dead).
	Dead bool `json:"dead,omitempty"`
}

// markSpan is a run of slots in a transient state on a node.
type markSpan struct {
	Start uint32 `json:"start"`
	End   uint32 `json:"end"`
	State string `json:"state"` // migrating, importing, frozen
	Node  string `json:"node"`
	Job   string `json:"job,omitempty"`
	Peer  string `json:"peer,omitempty"`
}

// docLink points at a service's OpenAPI document.
type docLink struct {
	Name string `json:"name"`
	URL  string `json:"url"`
}

// trafficView is the traffic page's data: one series per node.
type trafficView struct {
	IntervalSeconds float64      `json:"interval_seconds"`
	Nodes           []nodeSeries `json:"nodes"`
}

type nodeSeries struct {
	ID     string         `json:"id"`
	Color  string         `json:"color"`
	Points []trafficPoint `json:"points"`
}

// trafficPoint is one sample: data RPCs per second since the last one,
// and their mean latency (nil when no call finished or /metrics could not
// be read).
type trafficPoint struct {
	T         int64    `json:"t"` // Unix milliseconds
	Rate      *float64 `json:"rate"`
	LatencyMs *float64 `json:"latency_ms"`
}

// clusterPoller samples the topology, the nodes and their traffic.
//
// With etcd (Console.store) the topology is the one the etcd watch
// delivered last, and a new version triggers a sample at once, so the slot
// map follows a migration's commit without waiting for the next tick; the
// node list is the topology's nodes and the nodes registered in etcd.
// Without etcd the topology is the newest the router and the storage nodes
// answer, polled every SampleInterval.
type clusterPoller struct {
	c     *Console
	store *topostore.Store // nil without etcd
	kick  chan struct{}    // a new topology from the watch

	mu      sync.Mutex
	last    *topology.Topology
	watched *topology.Topology  // the watch's newest; nil before the first
	addrs   map[string]string   // node id -> gRPC address, from the last sample
	prev    map[string]counters // the previous sample per node
	series  map[string][]trafficPoint
}

// counters are a node's cumulative figures at one moment.
type counters struct {
	at       time.Time
	rpcs     uint64
	lat      latencySums
	latValid bool
}

func newClusterPoller(c *Console, store *topostore.Store) *clusterPoller {
	return &clusterPoller{c: c, store: store, kick: make(chan struct{}, 1), addrs: map[string]string{}, prev: map[string]counters{}, series: map[string][]trafficPoint{}}
}

func (p *clusterPoller) run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	if p.store != nil {
		wg.Go(func() { p.watch(ctx) })
	}
	t := time.NewTicker(p.c.o.SampleInterval)
	defer t.Stop()
	for {
		p.sample(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.kick:
		}
	}
}

// watch keeps the newest topology of the etcd watch and asks for a sample
// on each, until ctx ends.
func (p *clusterPoller) watch(ctx context.Context) {
	for t := range p.store.Watch(ctx) {
		p.mu.Lock()
		p.watched = t
		p.mu.Unlock()
		select {
		case p.kick <- struct{}{}:
		default: // a sample is already asked for; it reads the newest
		}
	}
}

// etcdTopology is the watch's newest topology. Before the watch has
// delivered one it reads etcd once, to say why: not bootstrapped, or etcd
// not answering.
func (p *clusterPoller) etcdTopology(ctx context.Context) (*topology.Topology, []string) {
	p.mu.Lock()
	t := p.watched
	p.mu.Unlock()
	if t != nil {
		return t, nil
	}
	cctx, cancel := context.WithTimeout(ctx, etcdCallTimeout)
	defer cancel()
	t, err := p.store.Load(cctx)
	switch {
	case errors.Is(err, topostore.ErrNotBootstrapped):
		return nil, []string{"etcd holds no topology yet: bootstrap the cluster (slotkvctl bootstrap)"}
	case err != nil:
		return nil, []string{fmt.Sprintf("topology from etcd %s: %s", p.c.etcdEndpoints(), errMessage(err))}
	}
	return t, nil
}

// registered returns the nodes registered in etcd by id, or nil (unknown)
// and the error when etcd does not answer. A record that does not decode
// is reported with the others kept.
func (p *clusterPoller) registered(ctx context.Context) (map[string]topology.Node, []string) {
	cctx, cancel := context.WithTimeout(ctx, etcdCallTimeout)
	defer cancel()
	nodes, err := p.store.Nodes(cctx)
	var errs []string
	if err != nil {
		errs = append(errs, fmt.Sprintf("node registrations from etcd %s: %s", p.c.etcdEndpoints(), errMessage(err)))
		if len(nodes) == 0 {
			// Nothing read: etcd did not answer (or its only record is
			// bad); live and dead cannot be told apart.
			return nil, errs
		}
	}
	out := make(map[string]topology.Node, len(nodes))
	for _, n := range nodes {
		out[n.GetId()] = topology.Node{ID: n.GetId(), GRPCAddress: n.GetGrpcAddress(), HTTPAddress: n.GetHttpAddress(), RESPAddress: n.GetRespAddress()}
	}
	return out, errs
}

// member is a node of the cluster page: named by the topology, registered
// in etcd, or both.
type member struct {
	node       topology.Node
	inTopology bool
	registered *bool
}

// members are the topology's nodes and, with etcd, the registered ones,
// ordered by id. A registered node is called at its registered addresses:
// they are the ones it serves on now.
func members(topo *topology.Topology, reg map[string]topology.Node, withEtcd bool) []member {
	byID := map[string]*member{}
	var out []*member
	for _, n := range topo.Nodes() {
		m := &member{node: n, inTopology: true}
		byID[n.ID] = m
		out = append(out, m)
	}
	if withEtcd && reg != nil {
		for _, m := range out {
			r, ok := reg[m.node.ID]
			m.registered = &ok
			if ok {
				m.node = r
			}
		}
		for id, r := range reg {
			if _, ok := byID[id]; !ok {
				live := true
				out = append(out, &member{node: r, registered: &live})
			}
		}
	}
	slices.SortFunc(out, func(a, b *member) int { return strings.Compare(a.node.ID, b.node.ID) })
	res := make([]member, len(out))
	for i, m := range out {
		res[i] = *m
	}
	return res
}

// sample takes one sample and publishes the cluster and traffic views.
func (p *clusterPoller) sample(ctx context.Context) {
	var (
		topo *topology.Topology
		from string
		errs []string
		reg  map[string]topology.Node // registered nodes; nil without etcd or unknown
	)
	var regWG sync.WaitGroup
	var regErrs []string
	regWG.Go(func() { reg, regErrs = p.registered(ctx) })
	topo, errs = p.etcdTopology(ctx)
	regWG.Wait()
	errs = append(errs, regErrs...)
	from = "etcd"
	v := clusterView{Errors: errs, Updated: time.Now().UTC()}
	if topo == nil {
		if len(errs) == 0 {
			v.Errors = append(v.Errors, "no node holds a topology yet: bootstrap the cluster (slotkvctl bootstrap)")
		}
		v.Links = p.c.links(nil)
		p.c.hub.publish(kindCluster, v)
		return
	}
	v.Version, v.From = topo.Version(), from
	ms := members(topo, reg, p.store != nil)
	nodes := make([]topology.Node, len(ms))
	addrs := make(map[string]string, len(ms))
	colors := map[string]string{}
	dead := map[string]bool{}
	for i, m := range ms {
		nodes[i] = m.node
		addrs[m.node.ID] = m.node.GRPCAddress
		colors[m.node.ID] = palette[i%len(palette)]
		if m.registered != nil && !*m.registered {
			dead[m.node.ID] = true
			v.Dead = append(v.Dead, m.node.ID)
		}
	}
	p.mu.Lock()
	p.last, p.addrs = topo, addrs
	p.mu.Unlock()
	v.Links = p.c.links(nodes)
	for _, n := range topo.Nodes() {
		for _, r := range topo.RangesOf(n.ID) {
			v.Owners = append(v.Owners, ownerSpan{Start: uint32(r.Start), End: uint32(r.End), Node: n.ID, Color: colors[n.ID], Dead: dead[n.ID]})
		}
	}
	slices.SortFunc(v.Owners, func(a, b ownerSpan) int { return int(a.Start) - int(b.Start) })

	infos := make([]nodeView, len(ms))
	samples := make([]counters, len(ms))
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Go(func() {
			infos[i], samples[i] = p.node(ctx, m.node, topo.Version(), colors[m.node.ID])
			infos[i].InTopology, infos[i].Registered = m.inTopology, m.registered
			if dead[m.node.ID] {
				markDead(&infos[i], topo)
			}
		})
	}
	wg.Wait()
	for _, nv := range infos {
		v.Marks = append(v.Marks, nv.States...)
	}
	slices.SortFunc(v.Marks, func(a, b markSpan) int { return int(a.Start) - int(b.Start) })
	v.Nodes = infos
	p.c.hub.publish(kindCluster, v)
	p.c.hub.publish(kindTraffic, p.addTraffic(infos, samples))
}

// markDead turns a node view into a dead node's: not registered in etcd.
// A dead node may still answer (its lease expired while it was cut off
// from etcd); what it says is kept, but it stays dead: the cluster does not
// count on it.
func markDead(nv *nodeView, topo *topology.Topology) {
	msg := "not registered in etcd (its lease expired or it stopped)"
	switch nv.Health {
	case "down":
		msg += "; " + nv.Error
		// It cannot say which slots it owns: the topology does, and those
		// are the slots nobody serves.
		if rs, err := slot.NewRangeSet(topo.RangesOf(nv.ID)...); err == nil {
			nv.Slots, nv.Ranges = rs.Len(), rs.String()
		}
	default:
		msg += "; it still answers at " + nv.GRPC
	}
	nv.Health, nv.Error = "dead", msg
}

// node reads one node's info and counters.
func (p *clusterPoller) node(ctx context.Context, n topology.Node, version uint64, color string) (nodeView, counters) {
	nv := nodeView{ID: n.ID, GRPC: n.GRPCAddress, HTTP: n.HTTPAddress, Color: color, Health: "down"}
	var s counters
	cc, err := p.c.conn(n.GRPCAddress)
	if err != nil {
		nv.Error = err.Error()
		return nv, s
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	info, err := storagev1.NewNodeServiceClient(cc).GetNodeInfo(cctx, &storagev1.GetNodeInfoRequest{})
	if err != nil {
		nv.Error = errMessage(err)
		return nv, s
	}
	s.at = time.Now()
	for _, c := range info.GetRpcCounts() {
		s.rpcs += c
	}
	if n.HTTPAddress != "" {
		if lat, err := p.c.scrapeLatency(cctx, p.c.baseURL(n.HTTPAddress)); err == nil {
			s.lat, s.latValid = lat, true
		}
	}
	nv.Health = "ok"
	if info.GetTopologyVersion() < version {
		nv.Health = "stale"
	}
	nv.Keys, nv.DiskBytes = info.GetKeyCount(), info.GetLsmBytes()+info.GetVlogBytes()
	nv.TopologyVersion, nv.Version = info.GetTopologyVersion(), info.GetVersion()
	var owned []slot.Range
	for _, r := range info.GetOwned() {
		owned = append(owned, slot.Range{Start: uint16(r.GetStart()), End: uint16(r.GetEnd())})
	}
	if rs, err := slot.NewRangeSet(owned...); err == nil {
		nv.Slots, nv.Ranges = rs.Len(), rs.String()
	}
	for _, st := range info.GetSlotStates() {
		name := ""
		switch st.GetState() {
		case clusterv1.SlotState_SLOT_STATE_MIGRATING:
			name = "migrating"
		case clusterv1.SlotState_SLOT_STATE_IMPORTING:
			name = "importing"
		case clusterv1.SlotState_SLOT_STATE_FROZEN:
			name = "frozen"
		default:
			continue
		}
		nv.States = append(nv.States, markSpan{Start: st.GetRange().GetStart(), End: st.GetRange().GetEnd(), State: name, Node: n.ID, Job: st.GetJobId(), Peer: st.GetPeerNodeId()})
	}
	return nv, s
}

// addTraffic turns this sample's counters into a point per node (rates
// and latencies since the previous sample) and returns the series.
func (p *clusterPoller) addTraffic(nodes []nodeView, samples []counters) trafficView {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	v := trafficView{IntervalSeconds: p.c.o.SampleInterval.Seconds()}
	for i, n := range nodes {
		s, prev := samples[i], p.prev[n.ID]
		pt := trafficPoint{T: now.UnixMilli()}
		if !s.at.IsZero() && !prev.at.IsZero() && s.rpcs >= prev.rpcs {
			// A count that went down is a restarted node: no rate for it.
			dt := s.at.Sub(prev.at).Seconds()
			if dt > 0 {
				r := float64(s.rpcs-prev.rpcs) / dt
				pt.Rate = &r
			}
		}
		if s.latValid && prev.latValid {
			if ms, ok := s.lat.meanMsSince(prev.lat); ok {
				pt.LatencyMs = &ms
			}
		}
		if !s.at.IsZero() {
			p.prev[n.ID] = s
		} else {
			delete(p.prev, n.ID)
		}
		pts := append(p.series[n.ID], pt)
		if len(pts) > p.c.o.History {
			pts = slices.Clone(pts[len(pts)-p.c.o.History:])
		}
		p.series[n.ID] = pts
		v.Nodes = append(v.Nodes, nodeSeries{ID: n.ID, Color: n.Color, Points: pts})
	}
	return v
}

// nodeAddr is the gRPC address of node id in the last sample (its
// registered address with etcd, else the topology's).
func (p *clusterPoller) nodeAddr(id string) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	a, ok := p.addrs[id]
	return a, ok
}

// links are the OpenAPI documents of the services the console knows and
// of the storage nodes.
func (c *Console) links(nodes []topology.Node) []docLink {
	var out []docLink
	add := func(name, addr string) {
		if u := c.baseURL(addr); u != "" {
			out = append(out, docLink{Name: name, URL: u + "/openapi.json"})
		}
	}
	add("router", c.o.RouterHTTP)
	add("migrator", c.o.MigratorHTTP)
	add("downloader", c.o.DownloaderHTTP)
	for _, n := range nodes {
		add("storage "+n.ID, n.HTTPAddress)
	}
	return out
}
