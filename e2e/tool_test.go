package e2e

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/slotkv/slotkv/pkg/proctest"
)

// runTool runs one of slotkv's command-line tools and returns its output.
func runTool(tb testing.TB, name string, args ...string) (string, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, proctest.Bin(tb, name), args...).CombinedOutput()
	return string(out), err
}
