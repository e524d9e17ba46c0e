package fanout

import (
	"fmt"
	"strconv"
	"strings"
)

// Instance is one server as a naming source lists it: bRPC's
// `address tag [weight]` naming line.
type Instance struct {
	Addr string
	// Tag places the instance in a layout: "N/M" is partition N of M. An
	// empty tag means the instance serves everything (one partition of one).
	Tag string
	// Weight is the instance's capacity, at least 1.
	Weight int
}

// String formats the instance as a naming line.
func (in Instance) String() string {
	s := in.Addr
	if in.Tag != "" {
		s += " " + in.Tag
	}
	if in.Weight > 1 {
		s += " " + strconv.Itoa(in.Weight)
	}
	return s
}

// Partition returns N and M of the instance's "N/M" tag (0 and 1 for an
// empty tag).
func (in Instance) Partition() (n, m int, err error) { return ParseTag(in.Tag) }

// ParseTag parses a partition tag "N/M" (0 <= N < M). An empty tag is
// partition 0 of 1.
func ParseTag(tag string) (n, m int, err error) {
	if tag == "" {
		return 0, 1, nil
	}
	ns, ms, ok := strings.Cut(tag, "/")
	if !ok {
		return 0, 0, fmt.Errorf("fanout: tag %q: want N/M", tag)
	}
	n, err1 := strconv.Atoi(ns)
	m, err2 := strconv.Atoi(ms)
	switch {
	case err1 != nil || err2 != nil || ns != strconv.Itoa(n) || ms != strconv.Itoa(m):
		return 0, 0, fmt.Errorf("fanout: tag %q: N and M must be plain integers", tag)
	case m < 1:
		return 0, 0, fmt.Errorf("fanout: tag %q: M must be at least 1", tag)
	case n < 0 || n >= m:
		return 0, 0, fmt.Errorf("fanout: tag %q: N must be in [0, %d)", tag, m)
	}
	return n, m, nil
}

// Source publishes a list of instances and its changes.
type Source interface {
	// Subscribe calls fn with the current list at once, then with the
	// whole new list after every change, until stop is called. Calls of
	// fn never overlap.
	Subscribe(fn func([]Instance)) (stop func())
}
