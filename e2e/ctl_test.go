package e2e

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/slotkv/slotkv/pkg/proctest"
)

// runCtl runs slotkvctl and returns its combined output.
func runCtl(tb testing.TB, args ...string) (string, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, proctest.Bin(tb, "slotkvctl"), args...).CombinedOutput()
	return string(out), err
}
