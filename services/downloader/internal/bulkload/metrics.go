package bulkload

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Bulk-load metrics, one series per job (job_id attribute), read from the
// jobs by a callback at collection time: nothing is recorded per batch.
// State is the State (= slotkv.downloader.v1.State) value, SUCCEEDED = 5.
const (
	MetricBytesDownloaded = "slotkv.bulkload.bytes_downloaded"
	MetricRecordsIngested = "slotkv.bulkload.records_ingested"
	MetricState           = "slotkv.bulkload.state"
)

// registerMetrics registers the job gauges on mp; the returned function
// unregisters them.
func (m *Manager) registerMetrics(mp metric.MeterProvider) (func() error, error) {
	meter := mp.Meter("github.com/slotkv/slotkv/services/downloader")
	dl, err1 := meter.Int64ObservableGauge(MetricBytesDownloaded, metric.WithUnit("By"),
		metric.WithDescription("Bytes of the job's files downloaded so far."))
	ing, err2 := meter.Int64ObservableGauge(MetricRecordsIngested, metric.WithUnit("{record}"),
		metric.WithDescription("Records of the job acknowledged by the storage nodes so far."))
	state, err3 := meter.Int64ObservableGauge(MetricState,
		metric.WithDescription("State of the job (slotkv.downloader.v1.State enum value)."))
	if err := errors.Join(err1, err2, err3); err != nil {
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
			var bytes, records uint64
			for _, f := range j.rec.Files {
				bytes += uint64(max(f.Downloaded, 0))
				records += f.Ingested
			}
			s := j.rec.State
			j.mu.Unlock()
			set := metric.WithAttributeSet(attribute.NewSet(attribute.String("job_id", j.id())))
			o.ObserveInt64(dl, int64(min(bytes, 1<<63-1)), set)
			o.ObserveInt64(ing, int64(min(records, 1<<63-1)), set)
			o.ObserveInt64(state, int64(s), set)
		}
		return nil
	}, dl, ing, state)
	if err != nil {
		return nil, err
	}
	return reg.Unregister, nil
}
