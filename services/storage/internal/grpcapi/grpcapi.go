// Package grpcapi implements the storage node's gRPC services,
// StorageService (data) and NodeService (administration), on top of the
// store and node packages.
//
// Every handler does the same three steps in the same order: validate the
// request (InvalidArgument naming the field, e.g. "mutations[3].value"),
// check that this node serves every slot the request touches (SLOT_MOVED
// naming the first one that it does not), then run the store operation. This
// is the only layer that turns domain errors into gRPC statuses
// (rpcerr.ToStatus); the gateway turns those into HTTP codes.
//
// A write's ownership check and its store operation run under the node's
// write gate (node.Write), so no slot state change
// (a topology installed from etcd, a migration's begin, freeze or end) lands between them: a
// write is checked and captured against one view. Reads check without the
// gate: a read that races a hand-off reads a frozen slot whose value the
// destination holds too.
//
// MigrationService (migration.go) exposes package migration; its one error
// without an rpcerr sentinel, the import stream cap, maps to
// ResourceExhausted here.
//
// Ingest (NodeService, a bidirectional stream) runs the same three steps
// per batch and writes through the BatchWrite write path; see ingest.go.
//
// GetNodeInfo counts keys with a key-only walk of the whole store: exact,
// but proportional to the number of keys, so it is an admin call, not a
// health probe.
package grpcapi

import (
	"errors"
	"fmt"
	"log/slog"

	clusterv1 "github.com/slotkv/slotkv/gen/slotkv/cluster/v1"
	"github.com/slotkv/slotkv/pkg/limits"
	"github.com/slotkv/slotkv/pkg/rpcerr"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/services/storage/internal/migration"
	"github.com/slotkv/slotkv/services/storage/internal/node"
	"github.com/slotkv/slotkv/services/storage/internal/store"
)

// Default request limits. The key and value limits are the cluster's
// shared ones (pkg/limits), which the router checks too.
const (
	DefaultMaxKeyBytes   = limits.DefaultMaxKeyBytes
	DefaultMaxValueBytes = limits.DefaultMaxValueBytes
	// DefaultMaxBatch caps the keys of one BatchGet or BatchWrite and the
	// records of one Ingest batch.
	DefaultMaxBatch = 10000
	// DefaultMaxIngestBytes caps the key and value bytes of one Ingest
	// batch at 32 MiB: half the default gRPC message limit (pkg/dial), and
	// enough for a bulk loader to amortise the per-batch round trip.
	DefaultMaxIngestBytes = 32 << 20
)

// Limits bounds request sizes. Zero fields take the defaults above. The
// error messages name the flags that set them (--max-key-bytes,
// --max-value-bytes, --max-batch, --max-ingest-bytes), so an operator who
// hits one knows the knob.
type Limits struct {
	MaxKeyBytes   int
	MaxValueBytes int
	MaxBatch      int
	// MaxIngestBytes caps the key + value bytes of one Ingest batch.
	MaxIngestBytes int
}

// MaxKeyBytesLimit is the largest MaxKeyBytes allowed: Badger refuses keys
// over 65000 bytes, and the storage key adds the 2-byte slot prefix.
const MaxKeyBytesLimit = limits.MaxKeyBytesLimit

// WithDefaults returns l with zero fields set to the defaults.
func (l Limits) WithDefaults() Limits {
	if l.MaxKeyBytes <= 0 {
		l.MaxKeyBytes = DefaultMaxKeyBytes
	}
	if l.MaxValueBytes <= 0 {
		l.MaxValueBytes = DefaultMaxValueBytes
	}
	if l.MaxBatch <= 0 {
		l.MaxBatch = DefaultMaxBatch
	}
	if l.MaxIngestBytes <= 0 {
		l.MaxIngestBytes = DefaultMaxIngestBytes
	}
	return l
}

// Config is what the services need.
type Config struct {
	Store  *store.Store
	Node   *node.Node
	Limits Limits
	// Self returns this node's advertised gRPC and HTTP addresses; they are
	// known only once the listeners are bound.
	Self func() (grpcAddr, httpAddr string)
	// SelfRESP returns the advertised RESP address ("" without one);
	// nil means none.
	SelfRESP func() string
	// Counts, when set, are the StorageService call counters reported by
	// GetNodeInfo (install Counts.UnaryInterceptor on the server).
	Counts *RPCCounts
	// Migration runs the MigrationService; required by NewMigrationService.
	Migration *migration.Manager
	Logger    *slog.Logger
}

func (c Config) withDefaults() Config {
	c.Limits = c.Limits.WithDefaults()
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Self == nil {
		c.Self = func() (string, string) { return "", "" }
	}
	return c
}

// checkKey validates one key and returns its slot.
func (l Limits) checkKey(field string, key []byte) (uint16, error) {
	if err := l.kv().CheckKeySize(field, len(key)); err != nil {
		return 0, err
	}
	sl, err := store.CheckKey(key)
	switch {
	case errors.Is(err, store.ErrEmptyKey):
		return 0, rpcerr.InvalidField(field, "empty key")
	case err != nil:
		return 0, rpcerr.InvalidField(field, "%v", err)
	}
	return sl, nil
}

func (l Limits) checkValue(field string, v []byte) error {
	return l.kv().CheckValueSize(field, len(v))
}

// kv is the key and value part of l, with the shared checks.
func (l Limits) kv() limits.KV {
	return limits.KV{MaxKeyBytes: l.MaxKeyBytes, MaxValueBytes: l.MaxValueBytes}
}

// checkEntry checks entry i of a batch field ("entries"): its key and its
// value. The field names of the error ("entries[3].key") are formatted only
// when there is one: a batch of valid entries costs no allocation per entry.
func (l Limits) checkEntry(field string, i int, key, value []byte) (uint16, error) {
	sl, err := l.checkKey("", key)
	if err == nil {
		err = l.checkValue("", value)
	}
	if err == nil {
		return sl, nil
	}
	if _, err := l.checkKey(fmt.Sprintf("%s[%d].key", field, i), key); err != nil {
		return 0, err
	}
	return 0, l.checkValue(fmt.Sprintf("%s[%d].value", field, i), value)
}

func (l Limits) checkBatch(field string, n int) error {
	if n > l.MaxBatch {
		return rpcerr.InvalidField(field, "%d entries, above the limit --max-batch=%d", n, l.MaxBatch)
	}
	return nil
}

// ranges validates wire ranges. An empty list means every range this node
// serves now, so an operator can scan or count a node without knowing its
// slots; a router always names the ranges.
func ranges(n *node.Node, field string, in []*clusterv1.SlotRange) ([]slot.Range, error) {
	if len(in) == 0 {
		if n.Topology() == nil {
			return nil, n.CheckRead(0) // ErrNoTopology, with its message
		}
		return n.Served(), nil
	}
	out := make([]slot.Range, len(in))
	for i, r := range in {
		f := fmt.Sprintf("%s[%d]", field, i)
		switch {
		case r.GetStart() > slot.MaxSlot || r.GetEnd() > slot.MaxSlot:
			return nil, rpcerr.InvalidField(f, "range %d-%d is out of 0-%d", r.GetStart(), r.GetEnd(), slot.MaxSlot)
		case r.GetStart() > r.GetEnd():
			return nil, rpcerr.InvalidField(f, "range %d-%d starts after it ends", r.GetStart(), r.GetEnd())
		}
		out[i] = slot.Range{Start: uint16(r.GetStart()), End: uint16(r.GetEnd())}
	}
	return out, nil
}

func protoRanges(rs []slot.Range) []*clusterv1.SlotRange {
	out := make([]*clusterv1.SlotRange, len(rs))
	for i, r := range rs {
		out[i] = &clusterv1.SlotRange{Start: uint32(r.Start), End: uint32(r.End)}
	}
	return out
}
