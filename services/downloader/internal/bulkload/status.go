package bulkload

import (
	"cmp"
	"slices"
	"time"
)

// Progress of one measure (bytes or records).
type Progress struct {
	Done, Total uint64
	Rate        float64 // per second, recent
	ETA         time.Duration
	HasETA      bool
}

// FileStatus is one data file of a job.
type FileStatus struct {
	Name     string
	State    State
	Slots    string
	Download Progress // bytes
	Ingest   Progress // records
	Nodes    []string
	Attempts uint32
	Error    string
}

// NodeStatus is what a job sent to one storage node.
type NodeStatus struct {
	NodeID          string
	Records, Bytes  uint64
	ActiveDownloads uint32
	Rate            float64 // records per second, recent
}

// JobStatus is a snapshot of a job.
type JobStatus struct {
	ID, ManifestURL  string
	State            State
	Error            string
	Created, Updated time.Time
	FileCount        uint32
	Download         Progress
	Ingest           Progress
	Files            []FileStatus // with detail only
	Nodes            []NodeStatus // with detail only
}

func progress(m *meter) Progress {
	p := Progress{Done: m.done, Total: m.total, Rate: m.rate}
	p.ETA, p.HasETA = m.eta()
	return p
}

func (j *job) status(detail bool) *JobStatus {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.statusLocked(detail)
}

func (j *job) statusLocked(detail bool) *JobStatus {
	r := j.rec
	st := &JobStatus{
		ID: r.ID, ManifestURL: r.ManifestURL, State: r.State, Error: r.Error,
		Created: r.Created, Updated: r.Updated, FileCount: uint32(len(r.Files)),
	}
	// Totals straight from the record so they are exact between ticks.
	dl, ing := j.dl, j.ing
	dl.done, dl.total, ing.done, ing.total = 0, 0, 0, r.Records
	for _, f := range r.Files {
		dl.done += uint64(f.Downloaded)
		dl.total += uint64(f.Size)
		ing.done += f.Ingested
	}
	st.Download, st.Ingest = progress(&dl), progress(&ing)
	if !detail {
		return st
	}
	for i, f := range r.Files {
		fd, fi := j.files[i].dl, j.files[i].ing
		fd.done, fd.total = uint64(f.Downloaded), uint64(f.Size)
		fi.done, fi.total = f.Ingested, f.Keys
		st.Files = append(st.Files, FileStatus{
			Name: f.Name, State: f.State, Slots: f.Slots,
			Download: progress(&fd), Ingest: progress(&fi),
			Nodes: slices.Clone(f.Nodes), Attempts: f.Attempts, Error: f.Error,
		})
	}
	ids := map[string]bool{}
	for id := range r.Nodes {
		ids[id] = true
	}
	for id, rt := range j.nodes {
		if rt.active > 0 {
			ids[id] = true
		}
	}
	for id := range ids {
		ns := NodeStatus{NodeID: id}
		if nc := r.Nodes[id]; nc != nil {
			ns.Records, ns.Bytes = nc.Records, nc.Bytes
		}
		if rt := j.nodes[id]; rt != nil {
			ns.ActiveDownloads = uint32(max(rt.active, 0))
			ns.Rate = rt.rate.rate
		}
		st.Nodes = append(st.Nodes, ns)
	}
	slices.SortFunc(st.Nodes, func(a, b NodeStatus) int { return cmp.Compare(a.NodeID, b.NodeID) })
	return st
}
