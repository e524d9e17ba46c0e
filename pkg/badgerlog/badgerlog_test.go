package badgerlog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestLevels(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	l.Errorf("disk %s\n", "full")
	l.Warningf("slow")
	l.Infof("compaction done") // debug: dropped at info level
	l.Debugf("detail")
	out := buf.String()
	for _, want := range []string{`level=ERROR msg="disk full" component=badger`, `level=WARN msg=slow component=badger`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "compaction") || strings.Contains(out, "detail") {
		t.Errorf("info/debug lines must go below info:\n%s", out)
	}
	New(nil).Errorf("discarded") // nil logger: no panic
}
