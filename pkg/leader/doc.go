// Package leader elects one leader among the replicas of a slotkv service
// (the migrator, the downloader) through etcd, with etcd's own
// concurrency.Election: each replica campaigns under
// <prefix>election/<role> with its advertised address as the value, on a
// session whose lease it keeps alive. The oldest campaign wins; when the
// leader's process dies or is cut off from etcd for longer than the
// session's TTL, its key goes with the lease and the next replica in line
// becomes leader.
//
// Run calls the caller's lead function for each term this replica holds,
// with a context canceled as soon as the term may be over (the session
// expired, or Run's context ended), so the leader stops its jobs before a
// successor can start them. A stale leader can still be mid-write when its
// term ends; Term.Fence is the etcd comparison that makes such a write
// fail: the job records are written in transactions guarded by it
// (pkg/jobstore's etcd store), so only the current term's writes land.
//
// Followers learn who leads with Leader (a linearizable read), to forward
// a write there or refuse it naming the leader.
package leader
