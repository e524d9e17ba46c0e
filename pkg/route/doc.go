// Package route is a client's view of the cluster (the router's, the
// downloader's, the migrator's): the newest topology of the cluster, one
// gRPC connection per storage node, and the one retry policy that turns a
// storage node's SLOT_MOVED, SLOT_FROZEN and Unavailable answers into a
// successful call whenever the cluster allows it.
//
// # Topology
//
// The topology lives in an atomic pointer, so routing a key is one load and
// one array index. It only moves forward: a version is installed when it is
// newer than the one held, and the connections to nodes that left it are
// closed. It comes from etcd only (Options.Store, the control plane's
// record, pkg/topostore; New refuses a Router without it): Run follows the
// store's watch and installs every version as it is committed, in order,
// so a change reaches the Router within milliseconds without any call
// failing on it first; the watch resumes by itself after an etcd outage,
// and the Router keeps routing by the last topology meanwhile. Refresh and
// RefreshTo read the store (a linearizable read: never older than a
// version already seen). The storage nodes are never asked for the
// topology; there is no periodic poll and no seed.
//
// The Router is Ready once it holds a topology, and it refreshes on demand
// (Refresh, RefreshTo) and whenever a storage node answers SLOT_MOVED with
// a version newer than the one held. Refreshes are single-flight: any
// number of concurrent SLOT_MOVED answers cause one read of the store.
//
// # Retry policy
//
// Every client of the storage nodes retries by the same rules, made of two
// pieces (after TiKV client-go's Backoffer and etcd's retry interceptor):
//
//   - Classify sorts an answer into a Class: Moved (SLOT_MOVED, with the
//     slot, owner and topology version it names), Frozen (a hand-off's
//     frozen slot, with its RetryInfo), NodeUnavailable (gRPC Unavailable;
//     Canceled, as when a connection is closed under a call because its
//     node left the topology; DeadlineExceeded while the caller's context
//     lives), Busy (ResourceExhausted, Aborted), NoTopology, StaleTopology,
//     or Fatal (anything about the request itself: relayed as it is).
//   - A Backoffer, one per call, paces the retries: its budget is the
//     call's deadline, not a number of retries; each kind of answer has
//     its own jittered exponential delay from the router's MinBackoff to
//     MaxBackoff; Next gives the next delay without sleeping (for callers
//     that schedule retries themselves), Wait sleeps it or says that it
//     would pass the deadline (ErrNoBudget).
//
// The rules, as Router.Do applies them to a single-key call (and the
// router's multi-key calls to each round of their fan-out):
//
//   - Moved: refresh the topology to at least the version the answer names
//     (and the held version + 1) by reading the store (Router.FollowMoved;
//     the owner the answer names is not asked). If the slot's owner is
//     then another node, retry there at once. If it is not — the new
//     owner has not installed the new topology yet (each node installs it
//     from its own watch, a moment before or after the router), or the
//     answering node lags
//     behind the router — back off first, so the router neither spins nor
//     gives up while the cluster converges. A node whose topology is older
//     than the router's causes no refresh at all.
//   - Frozen: wait the RetryInfo delay (a backoff when none) and retry.
//   - NoTopology (a node that has not installed its first topology yet,
//     which it takes from its own etcd watch a moment after the router):
//     back off and retry.
//   - NodeUnavailable: back off, start a topology refresh in the
//     background (the node may have been replaced) and retry.
//   - Anything else ends the call with that answer.
//
// All of it until the deadline: the caller's, or Options.CallTimeout when
// it set none. When the next delay would pass it, the call ends with the
// last retryable answer (naming the node), not a bare DeadlineExceeded.
// Reads that may answer without a partition (allow_partial) give an
// unavailable node only Options.MaxRetries backoff rounds.
//
// A connection to a node that was down recovers as soon as the node is
// back: the connections pkg/dial makes bound gRPC's connect backoff and
// reset it when a call fails on a connection in TRANSIENT_FAILURE, so the
// first retry after the node is ready reconnects instead of failing with
// the stale "connection refused" of the last attempt.
//
// # Unary calls addressed to one node (the migrator)
//
// Retry applies the policy to any call: it retries Frozen and
// NodeUnavailable answers with a Backoffer until the context's deadline,
// and, with options, Busy (RetryBusy), Moved (RetryMoved) and stale or
// missing topology answers (RetryStale, with a function that re-plans
// before each such retry). For example, a migrator's call to the
// destination:
//
//	ctx, cancel := context.WithTimeout(ctx, prepareTimeout) // the budget
//	defer cancel()
//	err := route.Retry(ctx, router.NewBackoffer(ctx), func(ctx context.Context) error {
//		_, err := client.BeginMigration(ctx, req)
//		return err
//	}, route.RetryStale(func(ctx context.Context, _ route.Class, _ error) error {
//		return replan(ctx) // a newer topology: re-plan the job before retrying
//	}))
//
// Retry returns nil, the first answer it does not retry, or the last
// retryable answer when the budget ran out, each with its gRPC code and
// details intact.
package route
