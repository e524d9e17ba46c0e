package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	migratorv1 "github.com/slotkv/slotkv/gen/slotkv/migrator/v1"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/flagenv"
	"github.com/slotkv/slotkv/pkg/server"
	"github.com/slotkv/slotkv/pkg/slot"
)

const migrateUsage = `Usage:
  slotkvctl migrate    --migrator ADDR --source n1 --destination n2 --ranges 0-100,200-300
                       [--parallelism N] [--rate 50MiB] [--batch N] [--verify stream|full]
                       [--job-id ID] [--token T | --admin-token T | --admin-token-file F]
  slotkvctl migrate    --migrator ADDR --watch JOB
  slotkvctl migrations --migrator ADDR [--json]

migrate starts a migration job and shows its progress on stderr (phase, %,
keys, MB, rate, ETA) until the job ends: exit 0 when it SUCCEEDED, 1
otherwise. On a terminal it draws a bar for the job and one per snapshot
stream, refreshed in place; otherwise it writes one line per second.
--watch attaches to an existing job instead. Ctrl-C detaches; the job goes
on (cancel it with the REST API: POST /v1/migrations/JOB:cancel).
--rate is bytes per second with an optional unit (KB, MB, GB, KiB, MiB,
GiB); 0 means unlimited. --verify full also reads the moved data back on
both nodes to compare digests (the default, stream, compares the digests
both nodes computed while the data streamed: no second read).
`

// mainMigrate runs "migrate" and "migrations".
func mainMigrate(ctx context.Context, cmd string, args []string, stdout, stderr io.Writer, lookupEnv func(string) (string, bool)) int {
	fs := flag.NewFlagSet("slotkvctl "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, migrateUsage) }
	addr := flagenv.String(fs, "migrator", "SLOTKV_MIGRATOR", "", "migrator gRPC address")
	var cf server.ClientFlags
	cf.Register(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	var (
		source, dest, ranges, rateS, watch, jobID, verify *string
		parallelism, batch                                *uint
	)
	if cmd == "migrate" {
		source = fs.String("source", "", "source node id")
		dest = fs.String("destination", "", "destination node id")
		ranges = fs.String("ranges", "", "slot ranges to move, e.g. 0-100,200-300")
		parallelism = fs.Uint("parallelism", 0, "snapshot streams (0: the migrator's default)")
		rateS = fs.String("rate", "0", "byte rate of the job, e.g. 50MiB (0: unlimited)")
		batch = fs.Uint("batch", 0, "records per batch (0: the migrator's default)")
		jobID = fs.String("job-id", "", "job id (generated when empty)")
		verify = fs.String("verify", "stream", "snapshot verification: stream (digests computed while copying) or full (also read back on both nodes)")
		watch = fs.String("watch", "", "attach to this existing job instead of starting one")
	}
	if err := flagenv.ParseLookup(fs, args, lookupEnv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "slotkvctl:", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "slotkvctl %s: unexpected arguments %q\n", cmd, fs.Args())
		return 2
	}
	if strings.TrimSpace(*addr) == "" {
		fmt.Fprintf(stderr, "slotkvctl %s: --migrator (or SLOTKV_MIGRATOR) is required\n", cmd)
		return 2
	}
	if err := cf.Finish(); err != nil {
		fmt.Fprintf(stderr, "slotkvctl %s: %v\n", cmd, err)
		return 2
	}
	cc, err := dial.New(strings.TrimSpace(*addr), dial.Options{Token: cf.Token, TLS: cf.TLS})
	if err != nil {
		fmt.Fprintf(stderr, "slotkvctl %s: %v\n", cmd, err)
		return 1
	}
	defer cc.Close()
	client := migratorv1.NewMigratorServiceClient(cc)

	if cmd == "migrations" {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		resp, err := client.ListMigrations(cctx, &migratorv1.ListMigrationsRequest{})
		if err == nil {
			err = PrintMigrations(stdout, resp.GetMigrations(), *asJSON)
		}
		if err != nil {
			fmt.Fprintf(stderr, "slotkvctl %s: %v\n", cmd, describe(err))
			return 1
		}
		return 0
	}

	id := *watch
	if id == "" {
		rate, err := ParseBytes(*rateS)
		if err != nil {
			fmt.Fprintf(stderr, "slotkvctl migrate: --rate: %v\n", err)
			return 2
		}
		vm, ok := map[string]migratorv1.Verify{"stream": migratorv1.Verify_VERIFY_STREAM, "full": migratorv1.Verify_VERIFY_FULL}[*verify]
		if !ok {
			fmt.Fprintf(stderr, "slotkvctl migrate: --verify: %q is neither stream nor full\n", *verify)
			return 2
		}
		if *source == "" || *dest == "" || *ranges == "" {
			fmt.Fprintf(stderr, "slotkvctl migrate: --source, --destination and --ranges are required (or --watch JOB)\n\n%s", migrateUsage)
			return 2
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		resp, err := client.StartMigration(cctx, &migratorv1.StartMigrationRequest{
			JobId: *jobID, Ranges: *ranges, SourceNodeId: *source, DestinationNodeId: *dest,
			Parallelism: uint32(*parallelism), RateBytesPerSecond: rate, BatchRecords: uint32(*batch), Verify: vm})
		cancel()
		if err != nil {
			fmt.Fprintf(stderr, "slotkvctl migrate: %v\n", describe(err))
			return 1
		}
		id = resp.GetMigration().GetId()
		fmt.Fprintf(stderr, "migration %s started: %s from %s to %s, %d streams\n", id, resp.GetMigration().GetRanges(),
			*source, *dest, resp.GetMigration().GetParallelism())
	}
	final, err := WatchProgress(ctx, client, id, stderr, isTerminal(stderr))
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintf(stderr, "\nslotkvctl migrate: detached; job %s goes on\n", id)
		} else {
			fmt.Fprintf(stderr, "slotkvctl migrate: %v\n", describe(err))
		}
		return 1
	}
	if *asJSON {
		_ = printJSON(stdout, final)
	}
	if final.GetPhase() != migratorv1.Phase_PHASE_SUCCEEDED {
		msg := final.GetError()
		if r := final.GetErrorRange(); r != "" {
			msg += " (slots " + r + ")"
		}
		fmt.Fprintf(stderr, "migration %s %s: %s\n", id, phase(final.GetPhase()), msg)
		return 1
	}
	fmt.Fprintf(stderr, "migration %s SUCCEEDED: %d keys, %s, topology version %d, hand-off after %s (write pause %.1f ms), %d keys cleaned up in %s\n",
		id, final.GetKeys(), mb(final.GetBytes()), final.GetCommittedVersion(), final.GetTimeToHandoff().AsDuration().Round(time.Millisecond),
		final.GetWritePauseMs(), final.GetCleanedKeys(), final.GetCleanupDuration().AsDuration().Round(time.Millisecond))
	return 0
}

// WatchProgress follows a job until it ends and returns its final state.
// On a terminal (tty) it draws a bar for the job and one per snapshot
// stream, refreshed in place; otherwise it writes one ProgressLine per
// second to w.
func WatchProgress(ctx context.Context, c migratorv1.MigratorServiceClient, id string, w io.Writer, tty bool) (*migratorv1.Migration, error) {
	interval := time.Second
	show := func(m *migratorv1.Migration) { fmt.Fprintln(w, ProgressLine(m)) }
	if tty {
		interval = 250 * time.Millisecond
		bs := newBars(ctx, w)
		defer bs.close()
		show = func(m *migratorv1.Migration) { migrationBars(bs, m) }
	}
	last, err := follow(ctx, "migration "+id, func() (grpc.ServerStreamingClient[migratorv1.WatchMigrationResponse], error) {
		return c.WatchMigration(ctx, &migratorv1.WatchMigrationRequest{JobId: id, Interval: durationpb.New(interval)})
	}, func(r *migratorv1.WatchMigrationResponse) { show(r.GetMigration()) })
	if err != nil {
		return nil, err
	}
	return last.GetMigration(), nil
}

// migrationFraction is how far the job is: the snapshot's keys until it is
// done, then all of it.
func migrationFraction(m *migratorv1.Migration) float64 {
	switch {
	case m.GetPhase() == migratorv1.Phase_PHASE_SUCCEEDED:
		return 1
	case m.GetKeysTotal() > 0:
		return fraction(m.GetKeys(), m.GetKeysTotal())
	case m.GetPhase() > migratorv1.Phase_PHASE_SNAPSHOT && m.GetPhase() < migratorv1.Phase_PHASE_SUCCEEDED:
		return 1
	}
	return 0
}

// ProgressLine formats one progress line:
// "[#####.....]  52% SNAPSHOT keys 5200/10000  5.1 MB  1.2 MB/s  ETA 4s".
func ProgressLine(m *migratorv1.Migration) string {
	frac := migrationFraction(m)
	return fmt.Sprintf("%s %3.0f%% %-9s %s", plainBar(frac), 100*frac, phase(m.GetPhase()), migrationText(m))
}

// migrationText is the job's counters: keys, bytes, rate, ETA and, from
// the catch-up on, changes applied and lag.
func migrationText(m *migratorv1.Migration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "keys %d/%d  %s  %s/s", m.GetKeys(), m.GetKeysTotal(), mb(m.GetBytes()), mb(uint64(m.GetRate())))
	if eta := m.GetEta(); eta != nil && eta.AsDuration() > 0 {
		fmt.Fprintf(&b, "  ETA %s", eta.AsDuration().Round(time.Second))
	}
	if m.GetPhase() >= migratorv1.Phase_PHASE_CATCH_UP {
		fmt.Fprintf(&b, "  changes %d lag %d", m.GetChangesApplied(), m.GetLag())
	}
	return b.String()
}

// migrationBars draws the job's bar and one per snapshot stream. A
// stream's total is not reported; it is estimated as the job's key total
// times the stream's share of the job's slots.
func migrationBars(bs *bars, m *migratorv1.Migration) {
	bs.set("job", "migration "+m.GetId()+" "+phase(m.GetPhase()), migrationFraction(m),
		m.GetPhase() == migratorv1.Phase_PHASE_SUCCEEDED, migrationText(m))
	jobSlots := slotCount(m.GetRanges())
	for _, st := range m.GetStreams() {
		est := uint64(0)
		if jobSlots > 0 {
			est = m.GetKeysTotal() * uint64(slotCount(st.GetRanges())) / uint64(jobSlots)
		}
		text := fmt.Sprintf("keys %d  %s  %s/s", st.GetKeys(), mb(st.GetBytes()), mb(uint64(st.GetRate())))
		if st.GetError() != "" {
			text += "  error: " + st.GetError()
		}
		// The slot count, not the ranges: a stream's ranges interleave
		// with the others' and would fill the line.
		bs.set(fmt.Sprint("stream", st.GetIndex()), fmt.Sprintf("  stream %d (%d slots)", st.GetIndex(), slotCount(st.GetRanges())),
			fraction(st.GetKeys(), max(est, st.GetKeys())), st.GetDone() && st.GetError() == "", text)
	}
}

// slotCount is the number of slots in ranges ("0-100,200-300"), 0 when
// they do not parse.
func slotCount(ranges string) int {
	set, err := slot.ParseRangeSet(ranges)
	if err != nil {
		return 0
	}
	return set.Len()
}

func phase(p migratorv1.Phase) string { return strings.TrimPrefix(p.String(), "PHASE_") }

func mb(n uint64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }

// PrintMigrations prints jobs, newest first, as a table or JSON.
func PrintMigrations(w io.Writer, jobs []*migratorv1.Migration, asJSON bool) error {
	if asJSON {
		return printJSON(w, &migratorv1.ListMigrationsResponse{Migrations: jobs})
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tPHASE\tRANGES\tFROM\tTO\tKEYS\tBYTES\tPAUSE\tCREATED\tERROR")
	for _, m := range jobs {
		pause := "-"
		if m.GetWritePauseMs() > 0 {
			pause = fmt.Sprintf("%.1fms", m.GetWritePauseMs())
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\t%s\t%s\n", m.GetId(), phase(m.GetPhase()), m.GetRanges(),
			m.GetSourceNodeId(), m.GetDestinationNodeId(), m.GetKeys(), m.GetKeysTotal(), mb(m.GetBytes()), pause,
			m.GetCreated().AsTime().Local().Format(time.DateTime), orDash(m.GetError()))
	}
	return tw.Flush()
}

// ParseBytes parses "50MiB", "1.5GB", "1000" (bytes), "0".
func ParseBytes(s string) (uint64, error) {
	s = strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   float64
	}{{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"k", 1e3}, {"m", 1e6}, {"g", 1e9}, {"b", 1}}
	mult := 1.0
	for _, u := range units {
		if l := strings.ToLower(s); strings.HasSuffix(l, u.suffix) {
			s, mult = strings.TrimSpace(s[:len(s)-len(u.suffix)]), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, fmt.Errorf("%q is not a byte size (e.g. 50MiB, 10MB, 1000)", s)
	}
	return uint64(v * mult), nil
}
