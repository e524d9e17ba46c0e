// Package migration is the storage node's side of an online slot-range
// migration (proto: MigrationService): the building blocks a migration job
// drives on the source and the destination, in the spirit of Apache
// Kvrocks' slot migration (a snapshot, an incremental change stream, then a
// short write-blocking hand-off).
//
// # Source
//
// BeginMigration (role SOURCE) turns the job's slots from OWNED to
// MIGRATING(job, peer=destination). From that moment every write to them
// (Put, Delete, BatchWrite, Ingest: they share store's one write function)
// appends, in the same Badger transaction as the data, one change record per
// key to the job's change log
//
//	0xFF 'c' <job> 0x00 <seq: 8 bytes big-endian> -> put or delete of one key
//
// numbered in commit order without visible gaps (store.ChangeLog). The
// node's write gate (package node) makes the state change and capture
// exact: a write holds the gate shared from its ownership check to its
// commit and a state change holds it exclusively, so no write admitted as
// OWNED commits after the slot turned MIGRATING (it would escape capture)
// and none admitted as MIGRATING commits after the freeze.
//
// OpenSnapshot takes, under the change log's lock, the head sequence S and a
// Badger read-only transaction: the snapshot holds exactly the changes up to
// S. It is kept in memory, one per job, shared by every SnapshotScan and
// SnapshotDigest of the job (Badger allows concurrent iterators on a
// read-only transaction), and released by EndMigration or shutdown. Badger
// keeps the versions it needs alive while it is open. ReadChanges returns
// the changes after any sequence, so the destination ends up with
// snapshot(S) + changes(S, head] = the source's data.
//
// After a restart of the source there is no snapshot (the change log and the
// slot states are persisted, the read view is not): OpenSnapshot opens a new
// one at the current head. The migrator restarts the snapshot phase. Two
// ways are correct: start the destination over (EndMigration ABORTED there
// and BeginMigration again) and stream the new snapshot, or keep the
// destination's data, stream the rest of the new snapshot from the last
// position and replay the changes from the OLD snapshot's sequence (every
// change is a whole put or delete, so replaying a suffix of the log over a
// mix of older and newer values ends in the newest; only the digest at the
// snapshot position cannot be compared then).
//
// Freeze turns the slots FROZEN (reads served, writes refused with
// Unavailable + RetryInfo) under the exclusive gate, so the head read there
// is final: no write is in flight and none can be admitted. The final
// sequence is persisted in the job record and returned again by a repeated
// Freeze.
//
// # Destination
//
// BeginMigration (role DESTINATION) marks the slots IMPORTING(job,
// peer=source): not served (SLOT_MOVED to the topology's owner, the
// source). Leftover data in them is deleted in small batches before the job
// accepts imports; the job record remembers when that is done, so a repeated
// BeginMigration never deletes imported data. Import applies batches of
// entries per (job, stream id) with the stream's last applied batch
// sequence persisted in the same transaction as the batch
//
//	0xFF 'i' <job> 0x00 <stream id> -> last seq, entries applied
//
// so a batch at or below it is acknowledged without being applied again. An
// import batch holds the gate shared and checks that its slots are still
// IMPORTING for the job, so it can never land after an abort started or
// after the commit made the slots OWNED. The number of import streams open
// at once is capped per node (ErrTooManyImportStreams).
//
// # Hand-off and end
//
// The commit is a topology change (package node): a newer topology that
// gives the FROZEN slots to the destination stops the source serving them
// (reads included) and makes them OWNED on the destination. EndMigration
// COMMITTED, called after that, drops the bookkeeping (change log,
// snapshot, import records, job record); it refuses while the topology does
// not reflect the commit yet. EndMigration ABORTED returns a source's
// slots to OWNED (when the topology still assigns them here) and drops the
// change log; on a destination it first marks the job aborting (imports
// stop), deletes the imported data in batches, then clears the IMPORTING
// states and the job. A destination whose slots were already committed
// refuses to abort (that would delete served data). Unknown jobs end
// successfully, so a restarted migrator can always call it.
//
// On the etcd control plane the topology is committed in etcd and each
// node installs it from its watch, so the destination may hold the new
// topology before the source does. A FROZEN source serves nothing of the
// job's slots, reads included, so the migrator commits the job's hand-off
// record in the same etcd transaction as the topology. The destination's
// IMPORTING slots stay IMPORTING (node.SetImportRelease) until it has seen
// that record, and EndMigration COMMITTED refuses until then too.
//
// # Expiry
//
// Every entry carries its key's expiry (absolute Unix milliseconds):
// snapshot entries (in the packed form, a kvpack expiry marker ahead of the
// entry), change records and import entries. The destination writes it as
// it is and digests it as it receives it, the same way the source digested
// it when it sent it. A put whose expiry passes before it is read from the
// change log is sent as a delete, and one whose expiry passes before it is
// imported is written as a delete, so a key expiring mid-migration is
// neither resurrected (an older value of it cannot survive) nor lost (it
// arrives with its own expiry, not a fresh one), Kvrocks #1223.
//
// # Persistence
//
// A job record 0xFF 'm' <job> (role, ranges, peer, topology version,
// frozen, final sequence, destination progress flags) is written in the
// same transaction as the slot states it goes with, so after a restart the
// node knows its jobs (ListMigrations, EndMigration) and their states.
// Change-log or import records of jobs without a record (a crash between
// forgetting a job and deleting its records) are deleted at startup.
//
// # Cleanup
//
// DeleteSlots deletes the data of slots this node neither owns nor
// migrates in transactions of 512 keys with an optional pace, never with
// Badger's DropPrefix: DropPrefix blocks every write to the database while
// it flushes memtables and rewrites tables (BenchmarkCleanupWriteStall in
// package store measures both).
//
// Finding the keys to delete would read every block of the slots again,
// values included. A source job that ends COMMITTED instead keeps the keys
// its snapshot's scans recorded, with the changes after the snapshot
// applied (store.HeldKeys), and DeleteSlots of exactly its slots deletes
// those without a read. The list is kept only when the scans covered
// every key interval of the slots, and used only while no install gave
// the node any of the slots again since the job ended (node.HeldSince,
// checked with each batch under the gate): otherwise keys may have arrived
// that it does not name, and DeleteSlots reads the slots. It lives in
// memory (a restart drops it) and goes once the cleanup succeeds; the
// "slots deleted" log line says which way the keys were found
// (keys_known).
//
// A destination deletes whatever it holds in a job's slots before the
// first import (leftovers of an interrupted earlier job). When the slots
// come back to a node whose cleanup emptied them, that read finds only
// the cleanup's tombstones; so a successful DeleteSlots marks its slots
// empty as of the generation it checked them at, and Begin skips the read
// when every slot is marked and no install since gave it to the node
// (node.HeldAt, under the gate: nothing can have arrived without one).
// The "migration begun" log line says so (known_empty). Marks live in
// memory: after a restart the destination reads.
package migration
