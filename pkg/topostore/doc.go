// Package topostore keeps slotkv's topology in etcd: the record every
// service will load and watch once the control plane of issue 13 moves to
// etcd, and the one place a topology change is committed. No service uses it
// yet; today's services still push and poll the topology as before.
//
// # Layout
//
// Every key lives under one prefix (DefaultPrefix, "/slotkv/", unless the
// Options say otherwise), so one etcd can hold several clusters and an
// operator can list or back up a cluster with one range:
//
//	<prefix>topology         the current topology
//	<prefix>nodes/<id>       a storage node's registration (clusterv1.Node),
//	                         under a lease it keeps alive (Register, Nodes)
//	<prefix>handoff/<job>    the hand-off record: the topology version from
//	                         which the job's source no longer serves its
//	                         slots (RecordHandoff, Handoffs)
//
// The value is the topology's canonical protobuf form
// (slotkv.cluster.v1.Topology from topology.Topology.Proto, marshalled
// deterministically): the same message the services exchange over gRPC, so
// one definition has one encoding, and two writes of the same topology are
// the same bytes. Read it, from the repository root, with any v3 etcdctl
// and the pinned buf (make tools); head drops the newline etcdctl adds:
//
//	etcdctl get --print-value-only /slotkv/topology | head -c -1 |
//	    bin/buf convert proto --type slotkv.cluster.v1.Topology --from -#format=binpb --to -#format=json
//
// Later pieces of issue 13 add their records next to it (node registrations
// under leases, job records, election keys); Store.Key names a key under the
// prefix for them, and Commit writes such records in the same transaction
// as the topology.
//
// # Guarantees
//
// Load and the reads inside Commit are etcd's linearizable reads: they see
// every write acknowledged before they started, never an older topology
// than one a caller has already been given.
//
// Bootstrap is a transaction on the key's absence (its create revision is
// 0): of any number of concurrent calls exactly one writes, the others
// change nothing and are told the topology that is stored.
//
// Commit is one etcd transaction: it compares the stored topology with the
// one the caller read (its mod revision, read in the same call along with
// the topology's version) and, only if it is unchanged, puts the new
// topology and the caller's extra records together. Of concurrent commits
// from the same version exactly one succeeds; the others get
// ErrStaleVersion and nothing of theirs is written. A commit whose outcome
// is unknown (etcd unreachable after sending) can be read back with Load.
//
// Watch delivers the current topology and then every later version, in
// order, each once, with versions strictly increasing. It resumes by
// itself: the etcd client reconnects a dropped watch and continues from the
// revision it had; when that revision has been compacted, or the member
// lost its leader (the watch requires one, so a partitioned member does not
// keep a watcher silent), it reads the topology afresh with a linearizable
// Get and watches on from that read's revision. Versions compacted away in
// between are then skipped, but the latest is never missed. While etcd is
// unreachable the watcher keeps the last topology it delivered and retries
// with backoff.
package topostore
