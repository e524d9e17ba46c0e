// Package tool is slotkv-dataset, the tool that builds, verifies and
// generates slotkv bulk-load datasets, as testable functions. Main parses a
// command line and runs a subcommand.
//
// # build
//
// Build reads JSONL or CSV input, sorts the records by (slot, key), cuts
// them into data files of about --target-file-size bytes (part-00000.skv,
// part-00001.skv, ...) and writes manifest.json last, atomically; see
// package github.com/slotkv/slotkv/pkg/dataset for the format.
//
// JSONL lines are objects {"key": "...", "value": "..."} (the value's UTF-8
// bytes are stored) or {"key": "...", "value_b64": "..."} for binary values;
// a key that is not UTF-8 is given as "key_b64" (base64) instead of "key",
// and "expires_at_ms" (a JSON integer, Unix milliseconds) sets the record's
// expiry (none when absent or 0).
// CSV rows are key,value with RFC 4180 quoting; a first row "key,value" is a
// header and skipped. Blank JSONL lines are ignored.
//
// Duplicate keys: the last occurrence in input order wins, across input
// files in the order given; the earlier ones are dropped and counted.
//
// Bad lines (bad JSON or CSV, missing or empty key, key over 16 KiB, value
// over --max-value-bytes, unknown field, both value and value_b64 or key
// and key_b64, a bad expiry) are reported as FILE:LINE: reason. Up to --max-bad-lines of
// them are skipped; more fail the build before anything is written.
//
// The records are held in memory while sorting, compactly (keys and values
// in large arena chunks plus 32 bytes per record), so the input should fit
// in memory with some room to spare.
//
// # serve
//
// Serve is a plain HTTP file server over a directory of datasets, so a bulk
// load can be tried and tested without object storage (the compose stack's
// "dataset" service runs it).
package tool

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/slotkv/slotkv/pkg/flagenv"
	"github.com/slotkv/slotkv/pkg/version"
)

const usage = `slotkv-dataset builds and checks slotkv bulk-load datasets.

Usage:
  slotkv-dataset build  --input FILE[,FILE...] --out DIR [--format jsonl|csv]
                        [--target-file-size 64MiB] [--max-bad-lines 0]
                        [--max-value-bytes 4MiB] [--block-size 64KiB]
  slotkv-dataset verify --dir DIR
  slotkv-dataset gen    --records N --value-size N --out FILE.jsonl
                        [--seed S] [--key-prefix key]
  slotkv-dataset serve  --dir DIR [--listen :8000] [--shutdown-timeout 10s]
  slotkv-dataset healthcheck [--url http://127.0.0.1:8000/healthz]
  slotkv-dataset version

build reads JSONL or CSV records, sorts them by (slot, key) and writes data
files of about --target-file-size bytes (part-00000.skv, ...) to DIR, which
must be empty or not exist, then manifest.json (last, atomically).
  JSONL: one object per line, {"key":"k","value":"text"} or
         {"key":"k","value_b64":"AAEC"} for binary values; "key_b64":"AP8="
         instead of "key" for binary keys; "expires_at_ms":1767225600000
         (Unix milliseconds) for an expiry; blank lines ignored.
  CSV:   key,value rows, RFC 4180 quoting; a first row "key,value" is skipped.
  --format defaults from each file's extension (.jsonl/.ndjson/.json, .csv,
  optionally .gz-compressed). Sizes accept 1000000, 64KiB, 64MiB, 1GiB, 1GB.
  Duplicate keys: the LAST occurrence in input order wins (across the input
  files in the order given); the dropped ones are counted in the summary.
  Bad lines (bad JSON/CSV, missing or empty key, key over 16 KiB, value too
  long, unknown field, both value and value_b64, a bad expiry) are listed
  as FILE:LINE: reason; up to --max-bad-lines of them are skipped, more fail
  the build (exit 1) before anything is written.

verify checks a dataset directory: the manifest, and every file's size,
SHA-256, block checksums, record order, slots, key count and first/last key.
It exits 1 on any problem, naming the file.

gen writes deterministic synthetic JSONL: keys PREFIX:00000001 ... and
printable pseudo-random values of --value-size bytes (same flags, same file).

serve is an HTTP file server for the downloader: GET and HEAD (with Range)
of the files under DIR, so DIR/NAME/manifest.json is the manifest URL
http://HOST:8000/NAME/manifest.json; /healthz answers ok. Paths with ".."
are refused, every request is logged (JSON on stderr), and SIGINT/SIGTERM
stop it gracefully. healthcheck GETs /healthz of a running serve and exits
0 when it answers 200 (container health checks: the image has no curl).
Flags of serve and healthcheck fall back to environment variables
(SLOTKV_DATASET_DIR, SLOTKV_DATASET_LISTEN, ...; see -h).
`

// Main runs slotkv-dataset with args (without the program name) and returns
// the process exit code: 0 on success, 1 on failure, 2 on a usage error.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "-h", "--help", "-help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	case "version", "--version":
		fmt.Fprintln(stdout, "slotkv-dataset", version.Version)
		return 0
	case "build":
		return runBuild(ctx, rest, stdout, stderr)
	case "verify":
		return runVerify(ctx, rest, stdout, stderr)
	case "gen":
		return runGen(ctx, rest, stdout, stderr)
	case "serve":
		return runServe(ctx, rest, stdout, stderr)
	case "healthcheck":
		return runHealthcheck(ctx, rest, stderr)
	}
	fmt.Fprintf(stderr, "slotkv-dataset: unknown command %q\n\n%s", cmd, usage)
	return 2
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("slotkv-dataset "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage of slotkv-dataset %s:\n", name)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args, after the environment for flags defined with
// flagenv; it returns an exit code when the caller should stop (-1 means go
// on).
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) int {
	if err := flagenv.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		if ee := (*flagenv.EnvError)(nil); errors.As(err, &ee) {
			fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err) // fs.Parse printed the others
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return 2
	}
	return -1
}

// listFlag collects comma-separated values, also from repeated flags.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

// sizeFlag is a byte size written 1000000, 64KiB, 64MiB, 1GiB, 1GB, ...
type sizeFlag int64

func (s *sizeFlag) String() string { return formatSize(int64(*s)) }
func (s *sizeFlag) Set(v string) error {
	n, err := ParseSize(v)
	if err != nil {
		return err
	}
	*s = sizeFlag(n)
	return nil
}

// ParseSize parses a positive byte size: a plain number of bytes or a
// number with a unit, B, KiB, MiB, GiB, TiB (powers of 1024; K, M, G, T
// too) or KB, MB, GB, TB (powers of 1000), case-insensitive.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult := map[string]int64{
		"": 1, "b": 1,
		"k": 1 << 10, "kib": 1 << 10, "kb": 1e3,
		"m": 1 << 20, "mib": 1 << 20, "mb": 1e6,
		"g": 1 << 30, "gib": 1 << 30, "gb": 1e9,
		"t": 1 << 40, "tib": 1 << 40, "tb": 1e12,
	}[unit]
	n, err := strconv.ParseInt(num, 10, 64)
	if num == "" || err != nil || mult == 0 {
		return 0, fmt.Errorf("invalid size %q (want e.g. 1000000, 64KiB, 64MiB, 1GiB)", s)
	}
	if n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q out of range", s)
	}
	return n * mult, nil
}

func formatSize(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return strconv.FormatInt(n, 10)
}

// humanBytes formats n for people: 1.5 GiB.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func runBuild(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("build", stderr)
	var inputs listFlag
	target := sizeFlag(DefaultTargetFileSize)
	maxValue := sizeFlag(DefaultMaxValueBytes)
	blockSize := sizeFlag(0)
	fs.Var(&inputs, "input", "input files, comma-separated (or repeat the flag), read in order")
	format := fs.String("format", "", "input format, jsonl or csv (default: from each file's extension)")
	out := fs.String("out", "", "output directory (must be empty or not exist)")
	fs.Var(&target, "target-file-size", "start a new data file once one reaches this size")
	maxBad := fs.Int("max-bad-lines", 0, "bad input lines to skip before failing the build")
	fs.Var(&maxValue, "max-value-bytes", "longest value accepted")
	fs.Var(&blockSize, "block-size", "data block size (default 64KiB)")
	if code := parseFlags(fs, args, stderr); code >= 0 {
		return code
	}
	if len(inputs) == 0 || *out == "" {
		fmt.Fprintln(stderr, "slotkv-dataset build: --input and --out are required")
		fs.Usage()
		return 2
	}
	if *maxBad < 0 {
		fmt.Fprintln(stderr, "slotkv-dataset build: --max-bad-lines must be >= 0")
		return 2
	}
	start := time.Now()
	res, err := Build(ctx, BuildOptions{
		Inputs: inputs, Format: *format, OutDir: *out, TargetFileSize: int64(target),
		MaxBadLines: *maxBad, MaxValueBytes: int(maxValue), BlockSize: int(blockSize),
	})
	if res != nil && res.BadLines > 0 {
		for _, b := range res.Bad {
			fmt.Fprintln(stderr, b)
		}
		if more := res.BadLines - uint64(len(res.Bad)); more > 0 {
			fmt.Fprintf(stderr, "... and %d more bad lines\n", more)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "slotkv-dataset build: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "built dataset %s in %s\n", *out, time.Since(start).Round(time.Millisecond))
	fmt.Fprintf(stdout, "  input:      %d records from %d file(s)\n", res.Input, len(inputs))
	fmt.Fprintf(stdout, "  records:    %d written\n", res.Records)
	fmt.Fprintf(stdout, "  duplicates: %d dropped (the last occurrence of a key wins)\n", res.Duplicates)
	fmt.Fprintf(stdout, "  bad lines:  %d skipped\n", res.BadLines)
	fmt.Fprintf(stdout, "  files:      %d data files, %d bytes (%s), + %s\n", res.Files, res.Bytes, humanBytes(res.Bytes), "manifest.json")
	fmt.Fprintf(stdout, "  time:       read %s, sort %s, write %s\n",
		res.ReadTime.Round(time.Millisecond), res.SortTime.Round(time.Millisecond), res.WriteTime.Round(time.Millisecond))
	return 0
}
