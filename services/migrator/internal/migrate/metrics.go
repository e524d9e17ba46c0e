package migrate

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Migration metrics, one series per job (job_id attribute), read from the
// jobs by a callback at collection time: nothing is recorded per batch. In
// Prometheus they are slotkv_migration_keys, slotkv_migration_bytes,
// slotkv_migration_phase (the migratorv1.Phase enum value, SUCCEEDED = 8),
// slotkv_migration_lag, slotkv_migration_write_pause_ms, and, once known,
// slotkv_migration_time_to_handoff_seconds and
// slotkv_migration_cleanup_seconds.
const (
	MetricKeys          = "slotkv.migration.keys"
	MetricBytes         = "slotkv.migration.bytes"
	MetricPhase         = "slotkv.migration.phase"
	MetricLag           = "slotkv.migration.lag"
	MetricWritePauseMS  = "slotkv.migration.write_pause_ms"
	MetricTimeToHandoff = "slotkv.migration.time_to_handoff"
	MetricCleanup       = "slotkv.migration.cleanup"
)

// registerMetrics registers the job gauges on mp; the returned function
// unregisters them.
func (m *Manager) registerMetrics(mp metric.MeterProvider) (func() error, error) {
	meter := mp.Meter("github.com/slotkv/slotkv/services/migrator")
	keys, err1 := meter.Int64ObservableGauge(MetricKeys, metric.WithUnit("{key}"),
		metric.WithDescription("Keys copied by the migration's snapshot so far."))
	bytes, err2 := meter.Int64ObservableGauge(MetricBytes, metric.WithUnit("By"),
		metric.WithDescription("Bytes copied by the migration's snapshot so far."))
	phase, err3 := meter.Int64ObservableGauge(MetricPhase,
		metric.WithDescription("Current phase of the migration (slotkv.migrator.v1.Phase enum value)."))
	lag, err4 := meter.Int64ObservableGauge(MetricLag, metric.WithUnit("{change}"),
		metric.WithDescription("Changes on the source not yet applied on the destination."))
	pause, err5 := meter.Float64ObservableGauge(MetricWritePauseMS,
		metric.WithDescription("Write pause of the migration's hand-off, in milliseconds."))
	toHandoff, err6 := meter.Float64ObservableGauge(MetricTimeToHandoff, metric.WithUnit("s"),
		metric.WithDescription("From the start of PREPARE to the destination serving the slots (reported once handed off)."))
	cleanup, err7 := meter.Float64ObservableGauge(MetricCleanup, metric.WithUnit("s"),
		metric.WithDescription("How long the source took to delete the moved slots (reported once cleaned)."))
	if err := errors.Join(err1, err2, err3, err4, err5, err6, err7); err != nil {
		return nil, err
	}
	reg, err := meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		m.mu.Lock()
		jobs := make([]*job, 0, len(m.jobs))
		for _, j := range m.jobs {
			jobs = append(jobs, j)
		}
		m.mu.Unlock()
		for _, j := range jobs {
			j.mu.Lock()
			j.syncStreamsLocked()
			r := j.rec
			k, b, p, l, w := r.Keys, r.Bytes, r.Phase, r.Lag, r.WritePauseMS
			prepared, handedOff, cleanStart, cleanEnd := r.Prepared, r.HandedOff, r.CleanupStarted, r.CleanupEnded
			j.mu.Unlock()
			set := metric.WithAttributeSet(attribute.NewSet(attribute.String("job_id", j.id)))
			o.ObserveInt64(keys, clampInt64(k), set)
			o.ObserveInt64(bytes, clampInt64(b), set)
			o.ObserveInt64(phase, int64(p), set)
			o.ObserveInt64(lag, clampInt64(l), set)
			o.ObserveFloat64(pause, w, set)
			if !prepared.IsZero() && !handedOff.IsZero() {
				o.ObserveFloat64(toHandoff, handedOff.Sub(prepared).Seconds(), set)
			}
			if !cleanStart.IsZero() && !cleanEnd.IsZero() {
				o.ObserveFloat64(cleanup, cleanEnd.Sub(cleanStart).Seconds(), set)
			}
		}
		return nil
	}, keys, bytes, phase, lag, pause, toHandoff, cleanup)
	if err != nil {
		return nil, err
	}
	return reg.Unregister, nil
}

func clampInt64(v uint64) int64 { return int64(min(v, 1<<63-1)) }
