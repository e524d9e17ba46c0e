// Command slotkv-migrator runs slotkv's migration service: it moves slot
// ranges between storage nodes online (see package migrator).
//
// Every flag has an environment fallback (SLOTKV_*); see -h.
//
// `slotkv-migrator healthcheck [--url URL]` exits 0 when a running service's
// /readyz answers 2xx, for container health checks (the image has no
// curl); the port comes from $SLOTKV_HTTP_ADDR or the --http-addr default.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/slotkv/slotkv/pkg/flagenv"
	"github.com/slotkv/slotkv/pkg/leader"
	"github.com/slotkv/slotkv/pkg/server"
	"github.com/slotkv/slotkv/pkg/version"
	"github.com/slotkv/slotkv/services/migrator"
)

const serviceName = migrator.ServiceName

func main() {
	if code, ok := server.HealthcheckCommand(os.Args[1:], migrator.DefaultOptions().HTTPAddr); ok {
		os.Exit(code)
	}
	ctx, stop := server.SignalContext()
	code := run(ctx, os.Args[1:], os.LookupEnv, os.Stderr)
	stop()
	os.Exit(code)
}

// phaseList is a --pause-before-phase value: PHASE[,PHASE...].
type phaseList []migrator.Phase

func (p *phaseList) String() string {
	var s []string
	for _, x := range *p {
		s = append(s, strings.TrimPrefix(x.String(), "PHASE_"))
	}
	return strings.Join(s, ",")
}

func (p *phaseList) Set(v string) error {
	*p = nil
	for item := range strings.SplitSeq(v, ",") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		ph, err := migrator.ParsePhase(item)
		if err != nil {
			return err
		}
		*p = append(*p, ph)
	}
	return nil
}

type config struct {
	opts  migrator.Options
	flags server.Flags // the shared flags; opts.Common comes from them
}

func parse(args []string, lookup func(string) (string, bool), out io.Writer) (config, error) {
	d := migrator.DefaultOptions()
	fs := flag.NewFlagSet(serviceName, flag.ContinueOnError)
	fs.SetOutput(out)
	var c config
	c.flags.Register(fs, d.Common)
	var (
		dataDir     = flagenv.String(fs, "data-dir", "SLOTKV_DATA_DIR", d.DataDir, "not used: the job records are in etcd (--etcd-endpoints, required)")
		parallelism = flagenv.Int(fs, "parallelism", "SLOTKV_MIGRATION_PARALLELISM", d.DefaultParallelism, "default snapshot streams per job (0: GOMAXPROCS)")
		rate        = flagenv.Uint64(fs, "rate", "SLOTKV_MIGRATION_RATE", d.RateBytesPerSecond, "default byte rate of a job's streams, bytes per second (0: unlimited)")
		batch       = flagenv.Uint(fs, "batch-records", "SLOTKV_MIGRATION_BATCH_RECORDS", uint(d.BatchRecords), "default records per batch")
		lag         = flagenv.Uint64(fs, "lag-threshold", "SLOTKV_MIGRATION_LAG_THRESHOLD", d.LagThreshold, "default: catch-up ends when fewer changes than this remain")
		rounds      = flagenv.Uint(fs, "max-catch-up-rounds", "SLOTKV_MIGRATION_MAX_CATCH_UP_ROUNDS", uint(d.MaxCatchUpRounds), "default catch-up rounds before the hand-off happens anyway")
		rollback    = flagenv.Duration(fs, "rollback-retry-interval", "SLOTKV_ROLLBACK_RETRY_INTERVAL", d.RollbackRetryInterval, "period of retries of an unfinished rollback or roll-forward")
		handoff     = flagenv.Duration(fs, "handoff-timeout", "SLOTKV_HANDOFF_TIMEOUT", d.HandoffTimeout, "longest hand-off from freeze to commit; past it the job rolls back and writes resume on the source")
		progress    = flagenv.Duration(fs, "progress-interval", "SLOTKV_PROGRESS_INTERVAL", d.ProgressInterval, "period of progress log lines and saves of a running job")
		cleanup     = flagenv.Uint64(fs, "cleanup-keys-per-second", "SLOTKV_CLEANUP_KEYS_PER_SECOND", 0, "pace of the source's purge of the dropped slots after a commit (0: as fast as small batches go)")
		maxRunning  = flagenv.Int(fs, "max-running-jobs", "SLOTKV_MAX_RUNNING_JOBS", d.MaxRunningJobs, "most migrations running at once; more are refused (ResourceExhausted) until one ends")
		pauseTO     = flagenv.Duration(fs, "pause-before-phase-timeout", "SLOTKV_PAUSE_BEFORE_PHASE_TIMEOUT", d.PauseTimeout, "testing aid: how long --pause-before-phase holds a job")
		pauseCommit = flagenv.Bool(fs, "pause-after-commit", "SLOTKV_PAUSE_AFTER_COMMIT", false, "testing aid: hold every job after etcd committed its hand-off, for --pause-before-phase-timeout")
		leaderTTL   = flagenv.Duration(fs, "leader-ttl", "SLOTKV_LEADER_TTL", leader.DefaultTTL, "how long a dead leader keeps its term before another replica takes the jobs over")
	)
	var pauses phaseList
	// Testing aid, hidden from -h: jobs wait at the start of these phases
	// until canceled or --pause-before-phase-timeout passes.
	flagenv.Var(fs, &pauses, "pause-before-phase", "SLOTKV_PAUSE_BEFORE_PHASE", "")
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage of %s:\n", serviceName)
		fs.VisitAll(func(f *flag.Flag) {
			if f.Name == "pause-before-phase" || f.Name == "pause-before-phase-timeout" || f.Name == "pause-after-commit" {
				return
			}
			fmt.Fprintf(out, "  -%s\n    \t%s (default %q)\n", f.Name, f.Usage, f.DefValue)
		})
	}
	if err := flagenv.ParseLookup(fs, args, lookup); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if err := c.flags.Finish(); err != nil {
		return c, err
	}
	o := d
	o.Common = c.flags.Common
	o.DataDir = *dataDir
	o.DefaultParallelism, o.RateBytesPerSecond = *parallelism, *rate
	o.BatchRecords, o.LagThreshold, o.MaxCatchUpRounds = uint32(*batch), *lag, uint32(*rounds)
	o.RollbackRetryInterval, o.ProgressInterval, o.CleanupKeysPerSecond = *rollback, *progress, *cleanup
	o.HandoffTimeout = *handoff
	o.MaxRunningJobs = *maxRunning
	o.PauseBeforePhase, o.PauseTimeout = pauses, *pauseTO
	o.PauseAfterCommit = *pauseCommit
	if *leaderTTL < time.Second {
		return c, fmt.Errorf("--leader-ttl %v is under a second (etcd leases count whole seconds)", *leaderTTL)
	}
	o.LeaderTTL = *leaderTTL
	c.opts = o
	return c, nil
}

func run(ctx context.Context, args []string, lookup func(string) (string, bool), stderr io.Writer) int {
	c, err := parse(args, lookup, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", serviceName, err)
		return 2
	}
	if c.flags.ShowVersion {
		fmt.Fprintln(stderr, serviceName, version.Version)
		return 0
	}
	return server.Main(ctx, c.flags.MainConfig(serviceName, stderr), func(env server.Env) error {
		o := c.opts
		o.Logger, o.TracerProvider, o.OnListen = env.Logger, env.TracerProvider, env.OnListen
		o.MeterProvider, o.MetricsHandler = env.MeterProvider, env.MetricsHandler
		return migrator.Run(env.Ctx, o)
	})
}
