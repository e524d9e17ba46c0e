// Package downloader is slotkv's bulk-load service (BulkLoadService): it
// loads a dataset built offline (slotkv-dataset) — a manifest and data files
// fetched over HTTP(S), or file:// when enabled — into the live cluster,
// each record to the storage node that owns its slot now, as Apache
// Pegasus' bulk load does, with pause, resume, cancel, persistence across
// restarts and progress per job, file and node.
//
// # Pipeline
//
// A job fetches the manifest (size-capped, validated by
// dataset.ParseManifest; names cannot leave the job directory), checks the
// download directory has room for what is left to download (fails early:
// "needs X bytes, Y free in DIR"), then runs every file through:
//
//   - download: a slot from the scheduler (a global cap and a cap per
//     target node — the owners of the file's slot range when it is
//     scheduled — both changeable at runtime with UpdateSettings), then a
//     GET with go-retryablehttp (bounded exponential backoff on connection
//     errors, 429 and 5xx) into <data>/jobs/<job>/<name>.part, through the
//     shared bandwidth limiter. A cut connection, a pause or a restart
//     continues with "Range: bytes=N-" after re-hashing the part file. Size
//     and sha256 are checked while streaming; the part is renamed to <name>
//     once whole and verified. A sha256 or size mismatch deletes the part
//     (a retry starts over) and fails the file; 404 fails it naming the URL.
//   - ingest: the file is read with dataset.NewReader (block CRCs, order,
//     slots, key count, first/last key checked against the manifest); each
//     record goes to the owner of its slot in the current topology
//     (watched in etcd with --etcd-endpoints, else polled from the
//     storage nodes), one
//     NodeService.Ingest stream per target node, batches of
//     IngestBatchRecords, a window of IngestWindow batches in flight per
//     stream, at most IngestConcurrency streams per job. SLOT_MOVED
//     refreshes the topology and re-routes every unacknowledged record; an
//     unavailable node (or frozen slot) is retried with backoff for
//     NodeRetryTimeout, then the file fails naming node and file. A node
//     acknowledges a batch once all of it is committed, and the set of
//     acknowledged records of each file (as index ranges) is persisted: a
//     later ingest of the file skips exactly those. The downloaded file is
//     deleted once ingested.
//
// # What the counts mean
//
// A file's ingest count ("ingest N / keys"), the job's (the sum over its
// files) and each node's are the records the storage nodes have
// acknowledged, i.e. committed and readable — not records read or sent.
// Ingest is not atomic per file: records committed stay readable when a
// job stops, and the counts say exactly how many. To keep them exact
// where a job stops (a file fails, e.g. a checksum; pause; cancel;
// shutdown), an ingest that stops sends nothing more and waits for the
// acknowledgements of the batches already sent (at most
// min(NodeRetryTimeout, 10s)): a node writes a stream's batches in order
// and stops at the first that fails, so every batch is then either
// counted or known not written. The one exception is a batch whose
// acknowledgement is lost with its connection (a node crash, a cut
// network): it may be written uncounted, and is sent again and counted by
// the next ingest of the file (puts are idempotent). So, at every stop,
// per file, per node and per job: count == records of the job readable in
// the cluster (for a dataset whose keys are unique and new), and after
// SUCCEEDED count == the manifest's keys.
//
// Files are downloaded and ingested concurrently: a file is ingested as
// soon as it is verified. The first file that fails stops the job's other
// files where they are and fails the job with that file's error.
//
// # States
//
// Job and file states are the proto's State. A file goes
//
//	PENDING -> DOWNLOADING -> DOWNLOADED -> INGESTING -> SUCCEEDED
//
// or to FAILED (with an error naming the file), and to PAUSED or CANCELED
// with its job. A running job's state follows its files: PENDING until the
// manifest is loaded and a file starts, DOWNLOADING while any file is still
// to be downloaded (files already downloaded are ingested meanwhile),
// DOWNLOADED when every file is and none is ingesting yet, INGESTING until
// every file has SUCCEEDED, then SUCCEEDED. Requests:
//
//   - PauseJob: only a running job (PENDING, DOWNLOADING, DOWNLOADED,
//     INGESTING) -> PAUSED. Downloads stop, ingest streams stop once what
//     they sent is acknowledged; part files, verified files and the
//     acknowledged records are kept. Otherwise FailedPrecondition
//     naming the state. A job that completes while being paused stays
//     SUCCEEDED.
//   - ResumeJob: a PAUSED job continues where it stopped; a FAILED job is
//     retried: its failed and unfinished downloads start over (their part
//     files are gone), its finished files are not touched again, its
//     verified files are not downloaded again (their kept copy is first
//     re-hashed: one whose size or sha256 no longer matches the manifest
//     is deleted and downloaded again), and no acknowledged record is
//     sent again. Any other state -> FailedPrecondition.
//   - CancelJob: any job that is not SUCCEEDED or CANCELED (running,
//     PAUSED or FAILED) -> CANCELED; the job directory (part and downloaded
//     files) is removed; records already ingested stay in the cluster, and
//     the job's counts say how many.
//     SUCCEEDED or CANCELED -> FailedPrecondition.
//   - StartJob with an existing id -> AlreadyExists; a bad or disallowed
//     URL -> InvalidArgument naming manifest_url; an unknown id -> NotFound.
//   - StartJob or ResumeJob while MaxRunningJobs jobs (default 16) are
//     running -> ResourceExhausted naming the limit; PAUSED and FAILED
//     jobs do not count. Jobs that continue after a restart are not
//     refused.
//
// SUCCEEDED and CANCELED are final. FAILED is not: its temp files (the
// .part files of unfinished downloads) are removed when it fails, but its
// verified files stay (so a resume does not download them again) until it
// is resumed to success or canceled. A SUCCEEDED or CANCELED job's
// directory is removed.
//
// # Persistence
//
// Jobs (manifest file list, per-file state, bytes, acknowledged records,
// per-node counts) are stored as JSON in Badger under <data>/db (in etcd
// with --etcd-endpoints: see Replicas on etcd), saved on
// every state change and every ProgressInterval while running. On start,
// jobs that were running continue: a file whose verified download is
// still on disk with the manifest's size and sha256 (re-hashed) is not
// downloaded again, a part file is resumed with a Range request, an ingest
// skips the records already acknowledged. SIGTERM stops running jobs
// where they are without changing their state.
//
// Runtime settings changed with UpdateSettings (max_downloads,
// max_downloads_per_node, bandwidth_bytes_per_second) are saved in
// <data>/settings.json (written to a temp file, synced, renamed) before
// they apply, and are in force again after a restart. Each is saved with
// the configured value (flag) it overrode: when the configuration says
// another value at a later start, the configuration wins (the operator's
// newer decision) and the saved value is dropped. An update that cannot be
// saved changes nothing and answers Unavailable.
//
// # Replicas on etcd
//
// With --etcd-endpoints the downloader runs as one of several replicas.
// Each campaigns in etcd's election <prefix>election/downloader
// (pkg/leader) with its advertised gRPC address (--advertise-grpc, else
// the bound one); the leader runs every job. Job records live in etcd
// under <prefix>jobs/bulkloads/<id> and the runtime settings under
// <prefix>downloader/settings, not under <data>: every write of them is
// one transaction fenced by the leader's term, so a deposed leader's
// write changes nothing. <data> keeps only the downloads of the replica.
//
// When a replica becomes leader it loads the records and settings and
// continues the jobs that were running, as a restart does: a file not yet
// ingested whose copy is not on its disk is downloaded again and
// verified, the records already acknowledged are not sent again (those
// acknowledged after the last save of the old leader are sent again:
// puts are idempotent), finished files are not touched. When its term
// ends (its lease lost, or shutdown) it stops its jobs at once without
// writing their records and follows. No operator action is needed: a
// killed leader's jobs continue at the next one within the election's
// TTL (5 s).
//
// A follower answers GetJob, ListJobs, WatchJob and GetSettings from the
// records in etcd (a watch open across a takeover goes on), and forwards
// StartJob, PauseJob, ResumeJob, CancelJob and UpdateSettings to the
// leader with the caller's token (pkg/leader's ForwardUnary): a call
// already forwarded once that reaches a replica which does not lead is
// refused with FailedPrecondition naming the leader, a leader that cannot
// be dialed gives Unavailable naming it. A write waits (up to twice the TTL and a second) while no leader is
// elected or the new one is taking the jobs over, then answers
// Unavailable.
//
// # Observability
//
// Progress (done, total, rate as an EWMA over about 5s, ETA) per job and
// file in bytes and records, and per node in records; WatchJob streams it
// at the requested interval until the job ends (one final message, then
// EOF); a progress log line per running job every ProgressInterval. Each
// run of a job is one trace ("bulkload job") with a span per file and
// child spans for the manifest, download (events for resumes) and ingest;
// HTTP requests and Ingest streams are traced by otelhttp and otelgrpc.
package downloader
