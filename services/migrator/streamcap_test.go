package migrator_test

import (
	"testing"

	migratorv1 "github.com/slotkv/slotkv/gen/slotkv/migrator/v1"
	"github.com/slotkv/slotkv/pkg/etcdtest"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/pkg/testcluster"
)

// TestImportStreamLimitSharedByJobs: two jobs into one destination whose
// --max-import-streams (2) one of them fills. The second job's streams are
// refused while the first copies, wait for free ones, and both jobs
// succeed with every key on the destination.
func TestImportStreamLimitSharedByJobs(t *testing.T) {
	t.Parallel()
	c := testcluster.Start(t, 2, testcluster.Options{Env: []string{"SLOTKV_MAX_IMPORT_STREAMS=2"}, Etcd: etcdtest.Start(t)})
	c.Bootstrap(t)
	n1, n2 := c.Node(t, "n1"), c.Node(t, "n2")
	slow, fast := slot.MustParseRangeSet("0-999"), slot.MustParseRangeSet("2000-2999")
	slowKeys, fastKeys := keysIn(slow, 400, "slow"), keysIn(fast, 400, "fast")
	load(t, n1, slowKeys, 256)
	load(t, n1, fastKeys, 256)
	m := startMigrator(t, c, t.TempDir(), nil)

	// About three seconds of copying on both of the destination's streams.
	first := start(t, m, &migratorv1.StartMigrationRequest{JobId: "first", Ranges: slow.String(), SourceNodeId: "n1", DestinationNodeId: "n2",
		Parallelism: 2, BatchRecords: 10, RateBytesPerSecond: 40 << 10})
	watchUntil(t, m, first.GetId(), func(mg *migratorv1.Migration) bool {
		return mg.GetKeys() > 0 || ended(mg.GetPhase())
	})
	second := start(t, m, &migratorv1.StartMigrationRequest{JobId: "second", Ranges: fast.String(), SourceNodeId: "n1", DestinationNodeId: "n2",
		Parallelism: 2})
	for _, id := range []string{first.GetId(), second.GetId()} {
		if final := waitEnd(t, m, id); final.GetPhase() != migratorv1.Phase_PHASE_SUCCEEDED {
			t.Fatalf("job %s ended %s: %s", id, final.GetPhase(), final.GetError())
		}
	}
	if got, want := keyCount(t, n2), uint64(len(slowKeys)+len(fastKeys)); got != want {
		t.Errorf("destination holds %d keys, want %d", got, want)
	}
	assertNoMigrationState(t, n1, n2)
}
