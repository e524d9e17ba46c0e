package migrator_test

import (
	"runtime"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	migratorv1 "github.com/slotkv/slotkv/gen/slotkv/migrator/v1"
	"github.com/slotkv/slotkv/services/migrator"
)

// TestPlanning checks what StartMigration refuses and what it accepts. Jobs
// are held at PREPARE (before any storage call) by a phase hook, so they
// stay unfinished while the overlap cases run.
func TestPlanning(t *testing.T) {
	t.Parallel()
	c := startCluster(t, 3, "")
	hold := newBlocker(migratorv1.Phase_PHASE_PREPARE)
	m := startMigrator(t, c, t.TempDir(), func(o *migrator.Options) { o.PhaseHook = hold.hook })
	ctx := testCtx(t)

	held := start(t, m, &migratorv1.StartMigrationRequest{JobId: "held", Ranges: "100-200,300-400", SourceNodeId: "n1", DestinationNodeId: "n2"})
	if held.GetPhase() != migratorv1.Phase_PHASE_PENDING || held.GetParallelism() < 1 {
		t.Fatalf("new job: %v", held)
	}
	var started []string
	t.Cleanup(func() {
		for _, id := range append(started, "held") {
			_, _ = m.client.CancelMigration(testCtx(t), &migratorv1.CancelMigrationRequest{JobId: id})
		}
	})

	refusals := []struct {
		name       string
		req        *migratorv1.StartMigrationRequest
		code       codes.Code
		wantInText []string
	}{
		{"bad ranges", &migratorv1.StartMigrationRequest{Ranges: "abc", SourceNodeId: "n1", DestinationNodeId: "n2"}, codes.InvalidArgument, []string{"ranges"}},
		{"reversed ranges", &migratorv1.StartMigrationRequest{Ranges: "9-3", SourceNodeId: "n1", DestinationNodeId: "n2"}, codes.InvalidArgument, []string{"ranges"}},
		{"empty ranges", &migratorv1.StartMigrationRequest{Ranges: "", SourceNodeId: "n1", DestinationNodeId: "n2"}, codes.InvalidArgument, []string{"ranges"}},
		{"out of range", &migratorv1.StartMigrationRequest{Ranges: "16000-16384", SourceNodeId: "n3", DestinationNodeId: "n2"}, codes.InvalidArgument, []string{"ranges"}},
		{"same node", &migratorv1.StartMigrationRequest{Ranges: "0-10", SourceNodeId: "n1", DestinationNodeId: "n1"}, codes.InvalidArgument, []string{"destination_node_id"}},
		{"no source", &migratorv1.StartMigrationRequest{Ranges: "0-10", DestinationNodeId: "n1"}, codes.InvalidArgument, []string{"source_node_id"}},
		{"unknown source", &migratorv1.StartMigrationRequest{Ranges: "0-10", SourceNodeId: "n9", DestinationNodeId: "n1"}, codes.InvalidArgument, []string{"source_node_id", "n9"}},
		{"unknown destination", &migratorv1.StartMigrationRequest{Ranges: "0-10", SourceNodeId: "n1", DestinationNodeId: "n9"}, codes.InvalidArgument, []string{"destination_node_id", "n9"}},
		{"not owned", &migratorv1.StartMigrationRequest{Ranges: "5000-5470", SourceNodeId: "n1", DestinationNodeId: "n3"}, codes.FailedPrecondition,
			[]string{"source n1 does not own slots 5461-5470", "n2 owns 5461-5470"}},
		{"intersecting", &migratorv1.StartMigrationRequest{Ranges: "150-250", SourceNodeId: "n1", DestinationNodeId: "n3"}, codes.FailedPrecondition,
			[]string{"slots 150-200", "held"}},
		{"subset", &migratorv1.StartMigrationRequest{Ranges: "120-130", SourceNodeId: "n1", DestinationNodeId: "n2"}, codes.FailedPrecondition,
			[]string{"slots 120-130", "held"}},
		{"superset", &migratorv1.StartMigrationRequest{Ranges: "50-500", SourceNodeId: "n1", DestinationNodeId: "n2"}, codes.FailedPrecondition,
			[]string{"slots 100-200,300-400", "held"}},
		{"duplicate id", &migratorv1.StartMigrationRequest{JobId: "held", Ranges: "1000-1001", SourceNodeId: "n1", DestinationNodeId: "n2"}, codes.AlreadyExists,
			[]string{"held"}},
		{"bad job id", &migratorv1.StartMigrationRequest{JobId: "a/b", Ranges: "1000-1001", SourceNodeId: "n1", DestinationNodeId: "n2"}, codes.InvalidArgument,
			[]string{"job_id"}},
		{"more streams than the destination takes", &migratorv1.StartMigrationRequest{Ranges: "4400-5400", SourceNodeId: "n1", DestinationNodeId: "n2", Parallelism: 1000000},
			codes.InvalidArgument, []string{"parallelism", "1001 streams", "destination n2", "--max-import-streams is 16"}},
		{"bad verify", &migratorv1.StartMigrationRequest{Ranges: "1000-1001", SourceNodeId: "n1", DestinationNodeId: "n2", Verify: 9}, codes.InvalidArgument,
			[]string{"verify"}},
	}
	for _, tc := range refusals {
		_, err := m.client.StartMigration(ctx, tc.req)
		if status.Code(err) != tc.code {
			t.Errorf("%s: err = %v, want %s", tc.name, err, tc.code)
			continue
		}
		for _, w := range tc.wantInText {
			if !strings.Contains(status.Convert(err).Message(), w) {
				t.Errorf("%s: error %q does not name %q", tc.name, status.Convert(err).Message(), w)
			}
		}
	}

	// Accepted: adjacent (no shared slot) and disjoint.
	for _, rs := range []string{"99,201-299,401", "2000-2100"} {
		mg := start(t, m, &migratorv1.StartMigrationRequest{Ranges: rs, SourceNodeId: "n1", DestinationNodeId: "n2"})
		started = append(started, mg.GetId())
		if mg.GetRanges() != rs {
			t.Errorf("ranges = %q, want %q", mg.GetRanges(), rs)
		}
	}

	// Parallelism: 0 means GOMAXPROCS, never more streams than slots.
	p0 := start(t, m, &migratorv1.StartMigrationRequest{Ranges: "3000-3001", SourceNodeId: "n1", DestinationNodeId: "n2"})
	started = append(started, p0.GetId())
	if want := uint32(min(runtime.GOMAXPROCS(0), 2)); p0.GetParallelism() != want {
		t.Errorf("parallelism 0 on 2 slots = %d, want %d", p0.GetParallelism(), want)
	}
	big := start(t, m, &migratorv1.StartMigrationRequest{Ranges: "3100-4100", SourceNodeId: "n1", DestinationNodeId: "n2"})
	started = append(started, big.GetId())
	if want := uint32(runtime.GOMAXPROCS(0)); big.GetParallelism() != want {
		t.Errorf("parallelism 0 on 1001 slots = %d, want GOMAXPROCS %d", big.GetParallelism(), want)
	}
	p100 := start(t, m, &migratorv1.StartMigrationRequest{Ranges: "4200-4209", SourceNodeId: "n1", DestinationNodeId: "n2", Parallelism: 100})
	started = append(started, p100.GetId())
	if p100.GetParallelism() != 10 {
		t.Errorf("parallelism 100 on 10 slots = %d, want 10", p100.GetParallelism())
	}
	if p100.GetBatchRecords() != 1000 || p100.GetLagThreshold() != 1000 || p100.GetMaxCatchUpRounds() != 10 || p100.GetRateBytesPerSecond() != 0 {
		t.Errorf("defaults: %v", p100)
	}

	// List is newest first; Get finds a job; unknown jobs are NotFound.
	list, err := m.client.ListMigrations(ctx, &migratorv1.ListMigrationsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(list.GetMigrations()); n != 6 || list.GetMigrations()[0].GetId() != p100.GetId() || list.GetMigrations()[n-1].GetId() != "held" {
		var ids []string
		for _, mg := range list.GetMigrations() {
			ids = append(ids, mg.GetId())
		}
		t.Errorf("list = %v", ids)
	}
	if _, err := m.client.GetMigration(ctx, &migratorv1.GetMigrationRequest{JobId: "nope"}); status.Code(err) != codes.NotFound {
		t.Errorf("Get unknown: %v", err)
	}
	if _, err := m.client.UpdateMigration(ctx, &migratorv1.UpdateMigrationRequest{JobId: "held"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("empty update: %v", err)
	}
	zero := uint32(0)
	if _, err := m.client.UpdateMigration(ctx, &migratorv1.UpdateMigrationRequest{JobId: "held", BatchRecords: &zero}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("batch 0: %v", err)
	}

	// Canceling before PREPARE did anything: CANCELED, and the slots are
	// free again for a new job.
	resp, err := m.client.CancelMigration(ctx, &migratorv1.CancelMigrationRequest{JobId: "held"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetMigration().GetPhase() != migratorv1.Phase_PHASE_CANCELED {
		t.Fatalf("after cancel: %v", resp.GetMigration())
	}
	if _, err := m.client.CancelMigration(ctx, &migratorv1.CancelMigrationRequest{JobId: "held"}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("second cancel: %v", err)
	}
	again := start(t, m, &migratorv1.StartMigrationRequest{Ranges: "150-198", SourceNodeId: "n1", DestinationNodeId: "n3"})
	started = append(started, again.GetId())
}
