package migrator_test

import (
	"context"
	"strings"
	"testing"

	"github.com/slotkv/slotkv/services/migrator"
)

// TestRunNeedsEtcd: etcd is the only source of the topology and the only
// place a hand-off commits, so a migrator without --etcd-endpoints does
// not start, and says which flag is missing.
func TestRunNeedsEtcd(t *testing.T) {
	t.Parallel()
	o := migrator.DefaultOptions()
	o.GRPCAddr, o.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	o.Logger = testLogger(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	err := migrator.Run(ctx, o)
	if err == nil || !strings.Contains(err.Error(), "--etcd-endpoints is required") {
		t.Fatalf("Run without etcd: %v, want an error naming --etcd-endpoints", err)
	}
}
