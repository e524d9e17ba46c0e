//go:build compose

package compose

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// span is what the trace receiver (e2e/cmd/otlpsink) answers per span.
type span struct {
	Service  string `json:"service"`
	TraceID  string `json:"trace_id"`
	SpanID   string `json:"span_id"`
	ParentID string `json:"parent_id"`
	Name     string `json:"name"`
	Kind     int    `json:"kind"` // OTLP SpanKind: 2 server, 3 client
}

const (
	kindServer = 2
	kindClient = 3
)

func (s *stack) spans(filter url.Values) ([]span, error) {
	var out []span
	err := s.call(http.MethodGet, s.tracesHTTP, "/api/spans?"+filter.Encode(), nil, &out)
	return out, err
}

// Every container exports its spans to the address the stack configures
// (http://jaeger:4317), and a REST put is one trace across the router's
// and a storage node's containers.
func TestTraces(t *testing.T) {
	s := newStack(t)

	// Each service calls the storage nodes from its start (topology
	// loads and refreshes, the bootstrap, the console's samples), so each
	// has spans to send.
	want := []string{"slotkv-router", "slotkv-migrator", "slotkv-downloader", "slotkv-console", "slotkv-storage-n1", "slotkv-storage-n2", "slotkv-storage-n3"}
	waitFor(t, "spans from every service", 90*time.Second, func() (bool, string, error) {
		all, err := s.spans(nil)
		if err != nil {
			return false, "", err
		}
		var seen []string
		for _, sp := range all {
			if !slices.Contains(seen, sp.Service) {
				seen = append(seen, sp.Service)
			}
		}
		var missing []string
		for _, w := range want {
			if !slices.Contains(seen, w) {
				missing = append(missing, w)
			}
		}
		return len(missing) == 0, fmt.Sprintf("%d spans; no spans yet from %v", len(all), missing), nil
	})

	b := make([]byte, 24)
	_, _ = rand.Read(b)
	traceID, parent := hex.EncodeToString(b[:16]), hex.EncodeToString(b[16:])
	key := fmt.Sprintf("compose/traced/%d", time.Now().UnixNano())
	req, err := http.NewRequest(http.MethodPut, s.url(s.routerHTTP, "/v1/kv/"+key), strings.NewReader(`{"text":"traced"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("traceparent", "00-"+traceID+"-"+parent+"-01")
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT %s: %s", key, resp.Status)
	}

	// The storage node's server span of the put, under the router's client
	// span, under the router's partition span, in the caller's trace.
	waitFor(t, "the put's trace across the router and a storage node", 90*time.Second, func() (bool, string, error) {
		tr, err := s.spans(url.Values{"trace_id": {traceID}})
		if err != nil {
			return false, "", err
		}
		byID := map[string]span{}
		for _, sp := range tr {
			byID[sp.SpanID] = sp
		}
		var gateway, storage bool
		for _, sp := range tr {
			if sp.Service == "slotkv-router" && sp.Kind == kindServer && sp.ParentID == parent && strings.HasPrefix(sp.Name, "PUT /v1/kv/") {
				gateway = true
			}
			if strings.HasPrefix(sp.Service, "slotkv-storage-n") && sp.Kind == kindServer && sp.Name == "slotkv.storage.v1.StorageService/Put" {
				client, ok := byID[sp.ParentID]
				part, ok2 := byID[client.ParentID]
				storage = ok && ok2 && client.Service == "slotkv-router" && client.Kind == kindClient && strings.HasPrefix(part.Name, "partition n")
			}
		}
		return gateway && storage, fmt.Sprintf("%d spans in the trace (router HTTP span %v, storage span under the router's %v)", len(tr), gateway, storage), nil
	})
}
