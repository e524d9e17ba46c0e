package migrator_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	migratorv1 "github.com/slotkv/slotkv/gen/slotkv/migrator/v1"
	storagev1 "github.com/slotkv/slotkv/gen/slotkv/storage/v1"
	"github.com/slotkv/slotkv/pkg/slot"
	"github.com/slotkv/slotkv/services/migrator"
)

// TestVerify moves a range with each verification mode. In the "foreign
// import" case a hook at the start of VERIFY slips one extra key into the
// destination through an import stream of its own, as a relay bug or a
// second writer would: the digests computed while the data streamed no
// longer match and the job fails naming the slot, then rolls back (the
// destination drops everything it imported, the extra key too).
func TestVerify(t *testing.T) {
	t.Parallel()
	moved := slot.MustParseRangeSet("0-300")
	keys := keysIn(moved, 1500, "v")
	extra := keysIn(moved, 1, "extra")[0]
	cases := []struct {
		name    string
		verify  migratorv1.Verify
		foreign bool
		want    migratorv1.Phase
	}{
		{"stream digests", migratorv1.Verify_VERIFY_UNSPECIFIED, false, migratorv1.Phase_PHASE_SUCCEEDED},
		{"full read-back", migratorv1.Verify_VERIFY_FULL, false, migratorv1.Phase_PHASE_SUCCEEDED},
		{"foreign import, stream digests", migratorv1.Verify_VERIFY_STREAM, true, migratorv1.Phase_PHASE_FAILED},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := startCluster(t, 2, "")
			n1, n2 := c.Node(t, "n1"), c.Node(t, "n2")
			load(t, n1, keys, 100)
			hook := func(ctx context.Context, job string, p migratorv1.Phase) error {
				if !tc.foreign || p != migratorv1.Phase_PHASE_VERIFY {
					return nil
				}
				imp, err := storagev1.NewMigrationServiceClient(n2.Conn).Import(ctx)
				if err != nil {
					return err
				}
				e := &storagev1.MigrationEntry{Key: []byte(extra), Value: []byte("x"), Slot: uint32(slot.OfString(extra))}
				if err := imp.Send(&storagev1.ImportRequest{JobId: job, StreamId: "snap-foreign", Seq: 1, Entries: []*storagev1.MigrationEntry{e}}); err != nil {
					return err
				}
				if _, err := imp.Recv(); err != nil {
					return err
				}
				return imp.CloseSend()
			}
			m := startMigrator(t, c, t.TempDir(), func(o *migrator.Options) { o.PhaseHook = hook })
			mg := start(t, m, &migratorv1.StartMigrationRequest{Ranges: moved.String(), SourceNodeId: "n1", DestinationNodeId: "n2",
				Parallelism: 3, BatchRecords: 200, Verify: tc.verify})
			final := waitEnd(t, m, mg.GetId())
			if final.GetPhase() != tc.want {
				t.Fatalf("job ended %s (%s), want %s", final.GetPhase(), final.GetError(), tc.want)
			}
			if tc.foreign {
				if !strings.Contains(final.GetError(), "snapshot verification failed at slot") || final.GetErrorRange() != fmt.Sprint(slot.OfString(extra)) {
					t.Errorf("error %q (range %q), want the verification failure at slot %d", final.GetError(), final.GetErrorRange(), slot.OfString(extra))
				}
				assertNoMigrationState(t, n1, n2)
				if got := keyCount(t, n2); got != 0 {
					t.Errorf("the destination keeps %d keys after the rollback", got)
				}
				if got := keyCount(t, n1); got != uint64(len(keys)) {
					t.Errorf("the source holds %d keys, want its %d", got, len(keys))
				}
				return
			}
			if got := keyCount(t, n2); got != uint64(len(keys)) {
				t.Errorf("the destination holds %d keys, want %d", got, len(keys))
			}
		})
	}
}
