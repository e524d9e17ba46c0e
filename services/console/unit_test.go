package console

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestParseLatency(t *testing.T) {
	t.Parallel()
	const text = `# HELP rpc_server_call_duration_seconds Measures the duration of inbound RPC.
# TYPE rpc_server_call_duration_seconds histogram
rpc_server_call_duration_seconds_bucket{rpc_method="slotkv.storage.v1.StorageService/Get",le="0.005"} 3
rpc_server_call_duration_seconds_bucket{rpc_method="slotkv.storage.v1.StorageService/Get",le="+Inf"} 4
rpc_server_call_duration_seconds_sum{rpc_method="slotkv.storage.v1.StorageService/Get"} 0.5
rpc_server_call_duration_seconds_count{rpc_method="slotkv.storage.v1.StorageService/Get"} 4
rpc_server_call_duration_seconds_bucket{rpc_method="slotkv.storage.v1.StorageService/Put",le="+Inf"} 6
rpc_server_call_duration_seconds_sum{rpc_method="slotkv.storage.v1.StorageService/Put"} 1.5
rpc_server_call_duration_seconds_count{rpc_method="slotkv.storage.v1.StorageService/Put"} 6
rpc_server_call_duration_seconds_bucket{rpc_method="slotkv.storage.v1.MigrationService/Import",le="+Inf"} 100
rpc_server_call_duration_seconds_sum{rpc_method="slotkv.storage.v1.MigrationService/Import"} 90
rpc_server_call_duration_seconds_count{rpc_method="slotkv.storage.v1.MigrationService/Import"} 100
`
	got, err := parseLatency(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	// Only the data methods: the migrator's imports are not client traffic.
	if got.sum != 2 || got.count != 10 {
		t.Fatalf("sums %+v, want sum 2 count 10", got)
	}
	if _, err := parseLatency(strings.NewReader("not { metrics")); err == nil {
		t.Error("garbage parsed")
	}
	for _, tc := range []struct {
		name      string
		now, prev latencySums
		want      float64
		ok        bool
	}{
		{"calls", latencySums{2, 10}, latencySums{1, 5}, 200, true},
		{"no calls", latencySums{2, 10}, latencySums{2, 10}, 0, false},
		{"restarted", latencySums{0.1, 1}, latencySums{2, 10}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := tc.now.meanMsSince(tc.prev)
			if ok != tc.ok || got != tc.want {
				t.Errorf("meanMsSince = %v, %v; want %v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestFields(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in      string
		rate    uint64
		wantErr bool
	}{
		{"", 0, false},
		{"1048576", 1 << 20, false},
		{"1MiB", 1 << 20, false},
		{" 20 KiB ", 20 << 10, false},
		{"fast", 0, true},
		{"-5", 0, true},
	} {
		t.Run("rate "+tc.in, func(t *testing.T) {
			got, err := rateField(map[string]string{"rate": tc.in}, "rate")
			if (err != nil) != tc.wantErr || got != tc.rate {
				t.Fatalf("rateField(%q) = %d, %v", tc.in, got, err)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "rate: ") {
				t.Errorf("error %q does not name the field", err)
			}
		})
	}
	for _, tc := range []struct {
		in      string
		want    uint64
		wantErr bool
	}{{"", 0, false}, {"4", 4, false}, {"4294967296", 0, true}, {"two", 0, true}, {"-1", 0, true}} {
		t.Run("parallelism "+tc.in, func(t *testing.T) {
			got, err := uintField(map[string]string{"parallelism": tc.in}, "parallelism", 32)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("uintField(%q) = %d, %v", tc.in, got, err)
			}
		})
	}
}

func TestSafeNext(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"":                     "/",
		"/migrations":          "/migrations",
		"/traffic":             "/traffic",
		"//evil.example/":      "/",
		"https://evil.example": "/",
		"/\\evil.example":      "/",
		"/api/state":           "/",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSameOrigin(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name         string
		site, origin string
		want         bool
	}{
		{"same origin", "same-origin", "http://console.test", true},
		{"typed by the user", "none", "", true},
		{"another site", "cross-site", "http://evil.example", false},
		{"a sibling", "same-site", "http://other.console.test", false},
		{"old browser, same origin", "", "http://console.test", true},
		{"old browser, other origin", "", "http://evil.example", false},
		{"old browser, opaque origin", "", "null", false},
		{"not a browser", "", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "http://console.test/api/migrations", nil)
			if tc.site != "" {
				r.Header.Set("Sec-Fetch-Site", tc.site)
			}
			if tc.origin != "" {
				r.Header.Set("Origin", tc.origin)
			}
			if got := sameOrigin(r); got != tc.want {
				t.Errorf("sameOrigin = %v, want %v", got, tc.want)
			}
		})
	}
}

// The hub sends each view once per version, newest only, and ends its
// streams when it closes.
func TestHub(t *testing.T) {
	t.Parallel()
	h := newHub()
	h.publish(kindCluster, map[string]int{"v": 1})
	h.publish(kindCluster, map[string]int{"v": 2})
	h.publish(kindTraffic, map[string]int{"v": 1})
	seen := map[string]uint64{}
	kinds, data, changed, closed := h.since(seen)
	if strings.Join(kinds, ",") != "cluster,traffic" || string(data[0]) != `{"v":2}` || closed {
		t.Fatalf("first read: %v %q closed=%v", kinds, data, closed)
	}
	if kinds, _, _, _ := h.since(seen); len(kinds) != 0 {
		t.Fatalf("second read without changes: %v", kinds)
	}
	h.publish(kindCluster, map[string]int{"v": 2}) // the same view: no change
	select {
	case <-changed:
		t.Fatal("woken by an unchanged view")
	default:
	}
	h.publish(kindMigrations, []int{})
	<-changed
	if kinds, _, _, _ := h.since(seen); strings.Join(kinds, ",") != "migrations" {
		t.Fatalf("after a new view: %v", kinds)
	}

	srv := httptest.NewServer(http.HandlerFunc(h.serveEvents))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	h.close()
	b := readAll(t, resp) // ends: the hub closed
	for _, want := range []string{"retry: 2000\n", "event: cluster\ndata: {\"v\":2}\n\n", "event: traffic\n", "event: migrations\ndata: []\n\n"} {
		if !strings.Contains(b, want) {
			t.Errorf("stream lacks %q:\n%s", want, b)
		}
	}
}
