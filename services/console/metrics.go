package console

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc/status"

	"github.com/slotkv/slotkv/pkg/auth"
)

// rpcDurationMetric is otelgrpc's server latency histogram as the services'
// /metrics (OpenTelemetry's Prometheus exporter) names it.
const rpcDurationMetric = "rpc_server_call_duration_seconds"

// dataMethodPrefix selects a storage node's data RPCs (what clients
// cause), not the migrator's and downloader's building blocks.
const dataMethodPrefix = "slotkv.storage.v1.StorageService/"

// maxMetricsBytes bounds one /metrics answer read by the console.
const maxMetricsBytes = 8 << 20

// latencySums are the cumulative sum (seconds) and count of a node's data
// RPC latencies.
type latencySums struct {
	sum   float64
	count uint64
}

// meanMsSince is the mean latency in milliseconds of the calls between
// prev and s; false when none finished (or the node restarted).
func (s latencySums) meanMsSince(prev latencySums) (float64, bool) {
	if s.count <= prev.count || s.sum < prev.sum {
		return 0, false
	}
	return (s.sum - prev.sum) / float64(s.count-prev.count) * 1000, true
}

// scrapeLatency reads the data RPC latency sums from the /metrics of the
// service at base (a URL), with the admin token.
func (c *Console) scrapeLatency(ctx context.Context, base string) (latencySums, error) {
	var out latencySums
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return out, err
	}
	if t := c.o.Tokens.Admin; t != "" {
		auth.SetHeader(req.Header, t)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return out, fmt.Errorf("%s/metrics: %s", base, resp.Status)
	}
	return parseLatency(io.LimitReader(resp.Body, maxMetricsBytes))
}

// parseLatency adds up rpcDurationMetric over the data methods.
func parseLatency(r io.Reader) (latencySums, error) {
	var out latencySums
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return out, fmt.Errorf("metrics: %w", err)
	}
	fam, ok := fams[rpcDurationMetric]
	if !ok {
		return out, nil
	}
	for _, m := range fam.GetMetric() {
		h := m.GetHistogram()
		if h == nil {
			continue
		}
		for _, l := range m.GetLabel() {
			if l.GetName() == "rpc_method" && strings.HasPrefix(l.GetValue(), dataMethodPrefix) {
				out.sum += h.GetSampleSum()
				out.count += h.GetSampleCount()
			}
		}
	}
	return out, nil
}

// errMessage is the message of a gRPC error as the service wrote it
// (without "rpc error: code = ... desc = ").
func errMessage(err error) string {
	if s, ok := status.FromError(err); ok {
		return s.Message()
	}
	return err.Error()
}
