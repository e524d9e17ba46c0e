package fanout

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// ParseNamingLine parses one line of a naming file in bRPC's style:
//
//	address [tag [weight]]   # comment
//
// The tag, "N/M", puts the instance in partition N of M (see ParseTag); no
// tag means partition 0 of 1. The weight is a positive integer, 1 when left
// out. A '#' starts a comment that runs to the end of the line. A blank or
// comment-only line gives ok == false and no error.
func ParseNamingLine(line string) (in Instance, ok bool, err error) {
	if i := strings.IndexByte(line, '#'); i >= 0 {
		line = line[:i]
	}
	f := strings.Fields(line)
	switch {
	case len(f) == 0:
		return Instance{}, false, nil
	case len(f) > 3:
		return Instance{}, false, fmt.Errorf("fanout: naming line %q: %d fields, want: address [tag [weight]]", strings.TrimSpace(line), len(f))
	}
	in = Instance{Addr: f[0], Weight: 1}
	if len(f) >= 2 {
		if _, _, err := ParseTag(f[1]); err != nil {
			return Instance{}, false, err
		}
		in.Tag = f[1]
	}
	if len(f) == 3 {
		w, err := strconv.Atoi(f[2])
		if err != nil || w < 1 {
			return Instance{}, false, fmt.Errorf("fanout: weight %q: want a positive integer", f[2])
		}
		in.Weight = w
	}
	return in, true, nil
}

// maxNamingLine bounds one line of a naming file.
const maxNamingLine = 1 << 20

// ParseNaming parses a naming file (see ParseNamingLine) and returns every
// good instance, in file order, and one error per bad line, each starting
// with "line N: ". A line repeating the address and tag of an earlier one
// is an error (the earlier line wins). A read error ends the parse and is
// the last error.
func ParseNaming(r io.Reader) ([]Instance, []error) {
	var (
		out  []Instance
		errs []error
		seen = map[instanceKey]int{} // -> line number
	)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxNamingLine)
	n := 0
	for sc.Scan() {
		n++
		in, ok, err := ParseNamingLine(sc.Text())
		if err != nil {
			errs = append(errs, fmt.Errorf("line %d: %w", n, err))
			continue
		}
		if !ok {
			continue
		}
		k := keyOf(in)
		if prev, dup := seen[k]; dup {
			errs = append(errs, fmt.Errorf("line %d: fanout: duplicate of line %d: %s", n, prev, k))
			continue
		}
		seen[k] = n
		out = append(out, in)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			err = fmt.Errorf("line %d: fanout: line longer than %d bytes: %w", n+1, maxNamingLine, err)
		} else {
			err = fmt.Errorf("line %d: fanout: read: %w", n+1, err)
		}
		errs = append(errs, err)
	}
	return out, errs
}

// instanceKey identifies an instance in a list: its address and tag.
type instanceKey struct{ addr, tag string }

func (k instanceKey) String() string {
	if k.tag == "" {
		return k.addr
	}
	return k.addr + " " + k.tag
}

func keyOf(in Instance) instanceKey { return instanceKey{in.Addr, in.Tag} }

// instWeight returns in's weight, at least 1.
func instWeight(in Instance) int { return max(in.Weight, 1) }

// Static returns a Source that always lists instances.
func Static(instances ...Instance) Source { return staticSource(slices.Clone(instances)) }

type staticSource []Instance

func (s staticSource) Subscribe(fn func([]Instance)) (stop func()) {
	fn(slices.Clone(s))
	return func() {}
}

// Settable is a Source whose list is set by its owner: the router feeds
// the live topology through one. It is safe for concurrent use.
type Settable struct {
	hub hub
}

// NewSettable returns a Settable listing initial.
func NewSettable(initial []Instance) *Settable {
	s := &Settable{}
	s.hub.publish(initial)
	return s
}

// Set replaces the list and sends it to every subscriber. When no other
// Set runs at the same time, every subscriber has been given the list when
// Set returns.
func (s *Settable) Set(instances []Instance) { s.hub.publish(instances) }

// Instances returns the current list.
func (s *Settable) Instances() []Instance { return s.hub.current() }

// Subscribe implements Source.
func (s *Settable) Subscribe(fn func([]Instance)) (stop func()) { return s.hub.subscribe(fn) }

// hub hands lists to subscribers. Each subscriber is called in the
// goroutine that publishes, never twice at once, and never with a list
// older than one it was already given; while it runs, newer lists are
// coalesced and handed over by the goroutine already calling it. A
// subscriber may call stop, publish or subscribe from within its callback.
// Stop does not wait for a callback that is running.
type hub struct {
	mu      sync.Mutex
	version uint64
	list    []Instance
	subs    map[*subscriber]struct{}
}

type subscriber struct {
	fn func([]Instance)

	mu      sync.Mutex
	running bool // a goroutine is calling fn
	stopped bool
	given   uint64 // version last handed to fn
	next    []Instance
	nextV   uint64 // version of next (== given when nothing is pending)
}

func (h *hub) current() []Instance {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.list)
}

func (h *hub) publish(list []Instance) {
	list = slices.Clone(list)
	h.mu.Lock()
	h.version++
	v := h.version
	h.list = list
	subs := make([]*subscriber, 0, len(h.subs))
	for s := range h.subs {
		subs = append(subs, s)
	}
	h.mu.Unlock()
	for _, s := range subs {
		s.offer(v, list)
	}
}

func (h *hub) subscribe(fn func([]Instance)) (stop func()) {
	s := &subscriber{fn: fn}
	h.mu.Lock()
	if h.subs == nil {
		h.subs = map[*subscriber]struct{}{}
	}
	h.subs[s] = struct{}{}
	if h.version == 0 { // never published: the empty list is version 1
		h.version = 1
	}
	v, list := h.version, h.list
	h.mu.Unlock()
	s.offer(v, list)
	var once sync.Once
	return func() {
		once.Do(func() {
			h.mu.Lock()
			delete(h.subs, s)
			h.mu.Unlock()
			s.mu.Lock()
			s.stopped = true
			s.mu.Unlock()
		})
	}
}

// offer hands list (version v) to the subscriber unless it has seen a newer
// one. If another goroutine is calling fn, that goroutine delivers it.
func (s *subscriber) offer(v uint64, list []Instance) {
	s.mu.Lock()
	if s.stopped || v <= s.nextV {
		s.mu.Unlock()
		return
	}
	s.next, s.nextV = list, v
	if s.running {
		s.mu.Unlock()
		return
	}
	s.running = true
	for {
		list, v := s.next, s.nextV
		s.next, s.given = nil, v
		s.mu.Unlock()
		s.fn(slices.Clone(list))
		s.mu.Lock()
		if s.stopped || s.nextV <= s.given {
			s.running = false
			s.mu.Unlock()
			return
		}
	}
}
