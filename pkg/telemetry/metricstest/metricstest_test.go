package metricstest

import "testing"

func TestSample(t *testing.T) {
	t.Parallel()
	const text = `# HELP a_total things
# TYPE a_total counter
a_total{op="get",part="n1"} 3
a_total{op="put",part="n1"} 5
b 7.5
`
	tests := []struct {
		name   string
		metric string
		labels []string
		want   float64
		ok     bool
	}{
		{"first match", "a_total", nil, 3, true},
		{"by labels", "a_total", []string{`op="put"`, `part="n1"`}, 5, true},
		{"no such labels", "a_total", []string{`op="delete"`}, 0, false},
		{"no labels at all", "b", nil, 7.5, true},
		{"prefix is not a match", "a", nil, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if v, ok := Sample(text, tt.metric, tt.labels...); v != tt.want || ok != tt.ok {
				t.Errorf("Sample(%s, %v) = %v, %v; want %v, %v", tt.metric, tt.labels, v, ok, tt.want, tt.ok)
			}
		})
	}
	if got := Grep(text, `op="put"`); got != "a_total{op=\"put\",part=\"n1\"} 5\n" {
		t.Errorf("Grep = %q", got)
	}
}
