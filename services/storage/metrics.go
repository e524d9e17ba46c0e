package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/slotkv/slotkv/services/storage/internal/node"
	"github.com/slotkv/slotkv/services/storage/internal/store"
)

// registerMetrics adds the node's own gauges to mp: Badger's size on disk
// (LSM tree and value log, read from the files at each scrape, the same
// figure GetNodeInfo answers), the slots this node serves, and the purge
// of dropped slots. RPC counts
// and latencies come from otelgrpc. Call unregister before the store
// closes: the provider may outlive this node (tests run several).
func registerMetrics(mp metric.MeterProvider, st *store.Store, n *node.Node, log *slog.Logger) (unregister func(), err error) {
	if mp == nil {
		return func() {}, nil
	}
	m := mp.Meter("github.com/slotkv/slotkv/services/storage")
	size, err1 := m.Int64ObservableGauge("slotkv.storage.badger.size", metric.WithUnit("By"),
		metric.WithDescription("Bytes Badger takes on disk, by part: lsm (tables and memtable logs) or vlog (value log)."))
	slots, err2 := m.Int64ObservableGauge("slotkv.storage.slots",
		metric.WithDescription("Slots this node serves (owned, or migrating away and not yet handed off)."))
	gc, err3 := m.Int64ObservableCounter("slotkv.storage.badger.vlog_files_rewritten",
		metric.WithDescription("Value-log files the value log's garbage collection rewrote (their live values copied, the file deleted)."))
	pending, err4 := m.Int64ObservableGauge("slotkv.storage.purge.pending_slots",
		metric.WithDescription("Dropped slots whose entries the background purge has still to delete (a migration's cleanup drops the slots it moved away)."))
	purged, err5 := m.Int64ObservableCounter("slotkv.storage.purge.keys",
		metric.WithDescription("Dropped entries the background purge deleted since the node started."))
	if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
		return nil, fmt.Errorf("storage metrics: %w", err)
	}
	lsmAttr := metric.WithAttributes(attribute.String("part", "lsm"))
	vlogAttr := metric.WithAttributes(attribute.String("part", "vlog"))
	reg, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		lsm, vlog, err := st.Size()
		if err != nil {
			// A failed walk leaves the gauge out of this scrape rather than
			// reporting a wrong zero.
			log.Warn("badger size for metrics", "err", err)
		} else {
			o.ObserveInt64(size, lsm, lsmAttr)
			o.ObserveInt64(size, vlog, vlogAttr)
		}
		var served int64
		for _, r := range n.Served() {
			served += int64(r.Len())
		}
		o.ObserveInt64(slots, served)
		o.ObserveInt64(gc, int64(st.ValueLogFilesRewritten()))
		if p, err := st.PurgeState(); err != nil {
			log.Warn("purge state for metrics", "err", err)
		} else {
			o.ObserveInt64(pending, p.PendingSlots)
			o.ObserveInt64(purged, int64(p.PurgedKeys))
		}
		return nil
	}, size, slots, gc, pending, purged)
	if err != nil {
		return nil, fmt.Errorf("storage metrics: %w", err)
	}
	return func() { _ = reg.Unregister() }, nil
}
