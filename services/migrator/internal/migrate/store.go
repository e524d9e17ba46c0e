package migrate

import (
	"fmt"
	"strings"
	"time"

	migratorv1 "github.com/slotkv/slotkv/gen/slotkv/migrator/v1"
)

// record is what is persisted of a job: its plan, its phase, its progress
// and, from the commit point on, the topology that hands the slots over, so
// a restarted migrator can roll it forward (or back).
type record struct {
	ID          string `json:"id"`
	Ranges      string `json:"ranges"`
	Source      string `json:"source"`
	Destination string `json:"destination"`
	// Addresses of the two nodes when the job was planned (used when the
	// topology is not loaded yet, e.g. right after a restart).
	SourceAddr      string `json:"source_addr"`
	DestinationAddr string `json:"destination_addr"`
	PlannedVersion  uint64 `json:"planned_version"`

	Phase        migratorv1.Phase  `json:"phase"`
	Parallelism  uint32            `json:"parallelism"`
	Rate         uint64            `json:"rate_bytes_per_second"`
	BatchRecords uint32            `json:"batch_records"`
	LagThreshold uint64            `json:"lag_threshold"`
	MaxRounds    uint32            `json:"max_catch_up_rounds"`
	Verify       migratorv1.Verify `json:"verify,omitempty"`

	Keys      uint64          `json:"keys"`
	Bytes     uint64          `json:"bytes"`
	Batches   uint64          `json:"batches"`
	KeysTotal uint64          `json:"keys_total"`
	Streams   []*streamRecord `json:"streams,omitempty"`

	SnapshotSeq    uint64 `json:"snapshot_seq"`
	ChangesApplied uint64 `json:"changes_applied"`
	Lag            uint64 `json:"lag"`
	Rounds         uint32 `json:"catch_up_rounds"`

	WritePauseMS float64 `json:"write_pause_ms"`
	Error        string  `json:"error,omitempty"`
	ErrorRange   string  `json:"error_range,omitempty"`
	// FailedPhase is the phase the job was in when it failed or was
	// canceled (Phase is then FAILED or CANCELED).
	FailedPhase migratorv1.Phase `json:"failed_phase,omitempty"`

	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
	// Prepared is when PREPARE began, HandedOff when the destination took
	// the slots (time to hand-off = HandedOff - Prepared); the source's
	// cleanup ran from CleanupStarted to CleanupEnded.
	Prepared       time.Time `json:"prepared,omitzero"`
	HandedOff      time.Time `json:"handed_off,omitzero"`
	CleanupStarted time.Time `json:"cleanup_started,omitzero"`
	CleanupEnded   time.Time `json:"cleanup_ended,omitzero"`

	// BegunSource / BegunDestination: BeginMigration was (maybe) applied
	// on that node, so a rollback has to end the job there.
	BegunSource      bool `json:"begun_source,omitempty"`
	BegunDestination bool `json:"begun_destination,omitempty"`
	// RollbackPending: the job failed before its commit and at least one
	// node has not confirmed EndMigration(ABORTED) yet.
	RollbackPending bool `json:"rollback_pending,omitempty"`

	// Committing is the commit point: from here on the job only rolls
	// forward. NewTopology is the topology (proto, binary) it commits in
	// etcd.
	Committing       bool   `json:"committing,omitempty"`
	NewTopology      []byte `json:"new_topology,omitempty"`
	CommittedVersion uint64 `json:"committed_version,omitempty"`
	// EtcdExpect is the topology version the etcd commit compares against
	// (etcd mode), EtcdCommitted that etcd confirmed the commit.
	EtcdExpect    uint64 `json:"etcd_expect,omitempty"`
	EtcdCommitted bool   `json:"etcd_committed,omitempty"`
	// Roll-forward steps done (the names are kept from the time the
	// migrator pushed the topology, for the records already in etcd):
	// PushedSource, the hand-off record is in etcd (the commit carries
	// it); PushedDestination, the destination serves them;
	// PushedAll, every other node follows etcd (always, set once).
	PushedSource      bool   `json:"pushed_source,omitempty"`
	PushedDestination bool   `json:"pushed_destination,omitempty"`
	PushedAll         bool   `json:"pushed_all,omitempty"`
	EndedSource       bool   `json:"ended_source,omitempty"`
	EndedDestination  bool   `json:"ended_destination,omitempty"`
	Cleaned           bool   `json:"cleaned,omitempty"`
	CleanedKeys       uint64 `json:"cleaned_keys,omitempty"`
}

type streamRecord struct {
	Index   uint32 `json:"index"`
	Ranges  string `json:"ranges"`
	Keys    uint64 `json:"keys"`
	Bytes   uint64 `json:"bytes"`
	Batches uint64 `json:"batches"`
	Done    bool   `json:"done"`
	Error   string `json:"error,omitempty"`
}

func terminal(p migratorv1.Phase) bool {
	return p == migratorv1.Phase_PHASE_SUCCEEDED || p == migratorv1.Phase_PHASE_FAILED || p == migratorv1.Phase_PHASE_CANCELED
}

// phaseName is the short name of a phase ("SNAPSHOT").
func phaseName(p migratorv1.Phase) string {
	return strings.TrimPrefix(p.String(), "PHASE_")
}

// ParsePhase parses "snapshot", "SNAPSHOT" or "PHASE_SNAPSHOT".
func ParsePhase(s string) (migratorv1.Phase, error) {
	u := strings.ToUpper(strings.TrimSpace(s))
	if !strings.HasPrefix(u, "PHASE_") {
		u = "PHASE_" + u
	}
	v, ok := migratorv1.Phase_value[u]
	if !ok || v == 0 {
		return 0, fmt.Errorf("unknown phase %q", s)
	}
	return migratorv1.Phase(v), nil
}
