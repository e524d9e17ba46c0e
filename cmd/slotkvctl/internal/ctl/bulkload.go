package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	downloaderv1 "github.com/slotkv/slotkv/gen/slotkv/downloader/v1"
	"github.com/slotkv/slotkv/pkg/dial"
	"github.com/slotkv/slotkv/pkg/flagenv"
	"github.com/slotkv/slotkv/pkg/server"
)

const bulkloadUsage = `Usage:
  slotkvctl bulkload start  --downloader ADDR --manifest URL [--job-id ID] [--watch]
  slotkvctl bulkload watch  --downloader ADDR JOB
  slotkvctl bulkload list   --downloader ADDR
  slotkvctl bulkload pause  --downloader ADDR JOB
  slotkvctl bulkload resume --downloader ADDR JOB
  slotkvctl bulkload cancel --downloader ADDR JOB

Flags (environment fallback in parentheses): --downloader, the downloader's
gRPC address (SLOTKV_DOWNLOADER); --json prints JSON; the token and TLS
flags of the other commands (slotkvctl help).

start loads the dataset whose manifest is at URL (http(s)://, or file://
where the downloader allows it) and prints the job; with --watch it then
shows the job's progress like watch. watch shows a job's progress on stderr
until it ends (download and ingest, per file: bars refreshed in place on a
terminal, one line per second and a line per finished file otherwise): exit
0 when it SUCCEEDED, 1 otherwise; a paused job is watched until it is
resumed and ends, or Ctrl-C, which detaches (the job goes on). pause stops
a running job's downloads and ingest (finished files stay finished), resume
continues it, cancel stops it for good (records already loaded stay).
`

// mainBulkload runs "bulkload VERB ...".
func mainBulkload(ctx context.Context, args []string, stdout, stderr io.Writer, lookupEnv func(string) (string, bool)) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, bulkloadUsage)
		return 2
	}
	verb, args := args[0], args[1:]
	switch verb {
	case "-h", "--help", "-help", "help":
		fmt.Fprint(stdout, bulkloadUsage)
		return 0
	case "start", "watch", "list", "pause", "resume", "cancel":
	default:
		fmt.Fprintf(stderr, "slotkvctl bulkload: unknown command %q\n\n%s", verb, bulkloadUsage)
		return 2
	}
	name := "slotkvctl bulkload " + verb
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, bulkloadUsage) }
	addr := flagenv.String(fs, "downloader", "SLOTKV_DOWNLOADER", "", "downloader gRPC address")
	var cf server.ClientFlags
	cf.Register(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	var manifest, jobID *string
	var watch *bool
	if verb == "start" {
		manifest = fs.String("manifest", "", "URL of the dataset's manifest")
		jobID = fs.String("job-id", "", "job id (generated when empty)")
		watch = fs.Bool("watch", false, "show the job's progress until it ends")
	}
	// The job may come first (watch JOB --downloader ...) or last.
	var job string
	takesJob := verb != "start" && verb != "list"
	if takesJob && len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		job, args = args[0], args[1:]
	}
	if err := flagenv.ParseLookup(fs, args, lookupEnv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "slotkvctl:", err)
		return 2
	}
	rest := fs.Args()
	if takesJob && job == "" && len(rest) > 0 {
		job, rest = rest[0], rest[1:]
	}
	if len(rest) > 0 {
		fmt.Fprintf(stderr, "%s: unexpected arguments %q\n", name, rest)
		return 2
	}
	switch {
	case strings.TrimSpace(*addr) == "":
		fmt.Fprintf(stderr, "%s: --downloader (or SLOTKV_DOWNLOADER) is required\n", name)
		return 2
	case takesJob && job == "":
		fmt.Fprintf(stderr, "%s: the job id is required\n\n%s", name, bulkloadUsage)
		return 2
	case verb == "start" && strings.TrimSpace(*manifest) == "":
		fmt.Fprintf(stderr, "%s: --manifest is required\n\n%s", name, bulkloadUsage)
		return 2
	}
	if err := cf.Finish(); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 2
	}
	cc, err := dial.New(strings.TrimSpace(*addr), dial.Options{Token: cf.Token, TLS: cf.TLS})
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	}
	defer cc.Close()
	client := downloaderv1.NewBulkLoadServiceClient(cc)

	// One call; watching has no deadline (Ctrl-C detaches).
	call := func(f func(context.Context) (*downloaderv1.Job, error)) (*downloaderv1.Job, error) {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return f(cctx)
	}
	var j *downloaderv1.Job
	switch verb {
	case "list":
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		resp, err := client.ListJobs(cctx, &downloaderv1.ListJobsRequest{})
		if err == nil {
			err = PrintBulkLoads(stdout, resp.GetJobs(), *asJSON)
		}
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", name, describe(err))
			return 1
		}
		return 0
	case "start":
		j, err = call(func(ctx context.Context) (*downloaderv1.Job, error) {
			r, err := client.StartJob(ctx, &downloaderv1.StartJobRequest{ManifestUrl: strings.TrimSpace(*manifest), JobId: *jobID})
			return r.GetJob(), err
		})
		if err == nil && *watch {
			fmt.Fprintf(stderr, "bulk load %s started: %s\n", j.GetId(), j.GetManifestUrl())
			job = j.GetId()
		}
	case "pause":
		j, err = call(func(ctx context.Context) (*downloaderv1.Job, error) {
			r, err := client.PauseJob(ctx, &downloaderv1.PauseJobRequest{JobId: job})
			return r.GetJob(), err
		})
	case "resume":
		j, err = call(func(ctx context.Context) (*downloaderv1.Job, error) {
			r, err := client.ResumeJob(ctx, &downloaderv1.ResumeJobRequest{JobId: job})
			return r.GetJob(), err
		})
	case "cancel":
		j, err = call(func(ctx context.Context) (*downloaderv1.Job, error) {
			r, err := client.CancelJob(ctx, &downloaderv1.CancelJobRequest{JobId: job})
			return r.GetJob(), err
		})
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, describe(err))
		return 1
	}
	if verb != "watch" && (verb != "start" || !*watch) {
		switch {
		case *asJSON:
			_ = printJSON(stdout, j)
		case verb == "start":
			// The manifest is read after the start: no totals yet.
			fmt.Fprintf(stdout, "bulk load %s started: %s (follow it: slotkvctl bulkload watch %s)\n", j.GetId(), j.GetManifestUrl(), j.GetId())
		default:
			fmt.Fprintf(stdout, "bulk load %s %s: %s\n", j.GetId(), bulkState(j.GetState()), bulkSummary(j))
		}
		return 0
	}

	final, err := WatchBulkLoad(ctx, client, job, stderr, isTerminal(stderr))
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintf(stderr, "\n%s: detached; job %s goes on\n", name, job)
		} else {
			fmt.Fprintf(stderr, "%s: %v\n", name, describe(err))
		}
		return 1
	}
	if *asJSON {
		_ = printJSON(stdout, final)
	}
	if final.GetState() != downloaderv1.State_STATE_SUCCEEDED {
		fmt.Fprintf(stderr, "bulk load %s %s: %s\n", job, bulkState(final.GetState()), orDash(final.GetError()))
		return 1
	}
	fmt.Fprintf(stderr, "bulk load %s SUCCEEDED: %s in %s\n", job, bulkSummary(final),
		final.GetUpdated().AsTime().Sub(final.GetCreated().AsTime()).Round(time.Millisecond))
	return 0
}

// WatchBulkLoad follows a job until it ends (SUCCEEDED, FAILED or
// CANCELED) and returns its final state. On a terminal (tty) it draws a
// bar for the job and one per file, refreshed in place; otherwise it
// writes one BulkLoadLine per second to w, and a line for each file that
// ends.
func WatchBulkLoad(ctx context.Context, c downloaderv1.BulkLoadServiceClient, id string, w io.Writer, tty bool) (*downloaderv1.Job, error) {
	interval := time.Second
	ended := map[string]bool{}
	show := func(j *downloaderv1.Job) {
		for _, f := range j.GetFiles() {
			if fileEnded(f.GetState()) && !ended[f.GetName()] {
				ended[f.GetName()] = true
				fmt.Fprintf(w, "  file %s\n", fileLine(f))
			}
		}
		fmt.Fprintln(w, BulkLoadLine(j))
	}
	if tty {
		interval = 250 * time.Millisecond
		bs := newBars(ctx, w)
		defer bs.close()
		show = func(j *downloaderv1.Job) { bulkLoadBars(bs, j) }
	}
	last, err := follow(ctx, "bulk load "+id, func() (grpc.ServerStreamingClient[downloaderv1.WatchJobResponse], error) {
		return c.WatchJob(ctx, &downloaderv1.WatchJobRequest{JobId: id, Interval: durationpb.New(interval)})
	}, func(r *downloaderv1.WatchJobResponse) { show(r.GetJob()) })
	if err != nil {
		return nil, err
	}
	return last.GetJob(), nil
}

func fileEnded(s downloaderv1.State) bool {
	return s == downloaderv1.State_STATE_SUCCEEDED || s == downloaderv1.State_STATE_FAILED || s == downloaderv1.State_STATE_CANCELED
}

// bulkFraction is how far a job or a file is: downloading and ingesting
// count half each, so a bar moves through both.
func bulkFraction(state downloaderv1.State, download, ingest *downloaderv1.Progress) float64 {
	if state == downloaderv1.State_STATE_SUCCEEDED {
		return 1
	}
	return (fraction(download.GetDone(), download.GetTotal()) + fraction(ingest.GetDone(), ingest.GetTotal())) / 2
}

// BulkLoadLine formats one progress line: "[#####.....]  52% INGESTING
// files 1/4  1.2/2.0 MB  5200/10000 keys  3000 keys/s  ETA 2s" (bytes
// downloaded and keys ingested, done of total).
func BulkLoadLine(j *downloaderv1.Job) string {
	frac := bulkFraction(j.GetState(), j.GetDownload(), j.GetIngest())
	return fmt.Sprintf("%s %3.0f%% %-11s %s", plainBar(frac), 100*frac, bulkState(j.GetState()), bulkText(j))
}

// bulkText is the job's counters: files done, bytes downloaded, keys
// ingested, the current rate and ETA.
func bulkText(j *downloaderv1.Job) string {
	done := 0
	for _, f := range j.GetFiles() {
		if f.GetState() == downloaderv1.State_STATE_SUCCEEDED {
			done++
		}
	}
	dl, in := j.GetDownload(), j.GetIngest()
	var b strings.Builder
	fmt.Fprintf(&b, "files %d/%d  %s/%s  %d/%d keys", done, j.GetFileCount(),
		mbNumber(dl.GetDone()), mb(dl.GetTotal()), in.GetDone(), in.GetTotal())
	// The rate and ETA of the step that is going on: ingest once any
	// records flow, download before.
	p, unit := in, "keys/s"
	if in.GetRate() == 0 && dl.GetRate() > 0 {
		p, unit = dl, "MB/s"
	}
	if r := p.GetRate(); r > 0 {
		if unit == "MB/s" {
			fmt.Fprintf(&b, "  %.1f MB/s", r/1e6)
		} else {
			fmt.Fprintf(&b, "  %.0f keys/s", r)
		}
	}
	if eta := p.GetEta(); eta != nil && eta.AsDuration() > 0 {
		fmt.Fprintf(&b, "  ETA %s", eta.AsDuration().Round(time.Second))
	}
	return b.String()
}

// fileLine describes a file: "part-00001.skv SUCCEEDED: 0.3/0.3 MB
// 2500/2500 keys to n1,n2", and its error if it has one.
func fileLine(f *downloaderv1.FileStatus) string {
	s := fmt.Sprintf("%s %s: %s", f.GetName(), bulkState(f.GetState()), fileText(f))
	if f.GetError() != "" {
		s += "  error: " + f.GetError()
	}
	return s
}

func fileText(f *downloaderv1.FileStatus) string {
	s := fmt.Sprintf("%s/%s  %d/%d keys", mbNumber(f.GetDownload().GetDone()), mb(f.GetDownload().GetTotal()),
		f.GetIngest().GetDone(), f.GetIngest().GetTotal())
	if len(f.GetNodes()) > 0 {
		s += " to " + strings.Join(f.GetNodes(), ",")
	}
	if f.GetAttempts() > 1 {
		s += fmt.Sprintf("  (%d attempts)", f.GetAttempts())
	}
	return s
}

// bulkLoadBars draws the job's bar and one per file.
func bulkLoadBars(bs *bars, j *downloaderv1.Job) {
	bs.set("job", "bulk load "+j.GetId()+" "+bulkState(j.GetState()), bulkFraction(j.GetState(), j.GetDownload(), j.GetIngest()),
		j.GetState() == downloaderv1.State_STATE_SUCCEEDED, bulkText(j))
	for _, f := range j.GetFiles() {
		text := fileText(f)
		if f.GetError() != "" {
			text += "  error: " + f.GetError()
		}
		bs.set("file "+f.GetName(), "  "+f.GetName()+" "+bulkState(f.GetState()), bulkFraction(f.GetState(), f.GetDownload(), f.GetIngest()),
			f.GetState() == downloaderv1.State_STATE_SUCCEEDED, text)
	}
}

// bulkSummary is a job in a few words: files, bytes and keys, done of
// total.
func bulkSummary(j *downloaderv1.Job) string {
	return fmt.Sprintf("%d files, %s/%s downloaded, %d/%d keys ingested", j.GetFileCount(),
		mbNumber(j.GetDownload().GetDone()), mb(j.GetDownload().GetTotal()), j.GetIngest().GetDone(), j.GetIngest().GetTotal())
}

func bulkState(s downloaderv1.State) string { return strings.TrimPrefix(s.String(), "STATE_") }

// mbNumber is mb without the unit, for "done/total MB" pairs.
func mbNumber(n uint64) string { return fmt.Sprintf("%.1f", float64(n)/1e6) }

// PrintBulkLoads prints jobs, newest first, as a table or JSON.
func PrintBulkLoads(w io.Writer, jobs []*downloaderv1.Job, asJSON bool) error {
	if asJSON {
		return printJSON(w, &downloaderv1.ListJobsResponse{Jobs: jobs})
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tSTATE\tFILES\tDOWNLOADED\tKEYS\tCREATED\tMANIFEST\tERROR")
	for _, j := range jobs {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s/%s\t%d/%d\t%s\t%s\t%s\n", j.GetId(), bulkState(j.GetState()), j.GetFileCount(),
			mbNumber(j.GetDownload().GetDone()), mb(j.GetDownload().GetTotal()), j.GetIngest().GetDone(), j.GetIngest().GetTotal(),
			j.GetCreated().AsTime().Local().Format(time.DateTime), j.GetManifestUrl(), orDash(j.GetError()))
	}
	return tw.Flush()
}
