package console

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"
)

// The kinds of view the hub holds; each is one server-sent event name.
const (
	kindCluster    = "cluster"
	kindTraffic    = "traffic"
	kindMigrations = "migrations"
	kindBulkloads  = "bulkloads"
)

// sseHeartbeat is the period of comment lines on an idle event stream, so
// proxies and the browser do not take it for a dead connection.
const sseHeartbeat = 15 * time.Second

// hub holds the latest JSON of each kind of view and wakes the event
// streams when one changes. A slow browser only ever misses intermediate
// versions: it is sent the newest one when it catches up, never a backlog.
type hub struct {
	mu      sync.Mutex
	views   map[string]hubView
	changed chan struct{} // closed and replaced on every publish
	closed  bool
}

type hubView struct {
	version uint64
	data    []byte
}

func newHub() *hub {
	return &hub{views: map[string]hubView{}, changed: make(chan struct{})}
}

// publish stores v (marshalled to JSON) as the newest view of kind.
func (h *hub) publish(kind string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Views are plain structs: a failure is a programming error.
		panic(fmt.Sprintf("console: marshal %s view: %v", kind, err))
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if old, ok := h.views[kind]; ok && string(old.data) == string(b) {
		return
	}
	h.views[kind] = hubView{version: h.views[kind].version + 1, data: b}
	if !h.closed {
		close(h.changed)
		h.changed = make(chan struct{})
	}
}

// get returns the newest view of kind (nil when there is none yet).
func (h *hub) get(kind string) []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.views[kind].data
}

// close wakes every stream for the last time; they end.
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.closed {
		h.closed = true
		close(h.changed)
	}
}

// since returns the views newer than seen (kind -> version), updating
// seen, and the channel that closes on the next change.
func (h *hub) since(seen map[string]uint64) (out []string, data [][]byte, changed <-chan struct{}, closed bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	kinds := make([]string, 0, len(h.views))
	for k := range h.views {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		v := h.views[k]
		if seen[k] != v.version {
			seen[k] = v.version
			out = append(out, k)
			data = append(data, v.data)
		}
	}
	return out, data, h.changed, h.closed
}

// serveEvents streams every view as server-sent events: all of them at
// once, then each as it changes, until the client goes or the hub closes.
func (h *hub) serveEvents(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	// Tells EventSource how long to wait before it reconnects.
	if _, err := fmt.Fprint(w, "retry: 2000\n\n"); err != nil {
		return
	}
	seen := map[string]uint64{}
	beat := time.NewTicker(sseHeartbeat)
	defer beat.Stop()
	for {
		kinds, data, changed, closed := h.since(seen)
		for i, k := range kinds {
			if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", k, data[i]); err != nil {
				return
			}
		}
		if err := rc.Flush(); err != nil {
			return
		}
		if closed {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-changed:
		case <-beat.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
		}
	}
}
