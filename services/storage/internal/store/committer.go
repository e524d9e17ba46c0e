package store

import badger "github.com/dgraph-io/badger/v4"

// Committer queues the write-only transactions of one goroutine (an import
// stream's committer), opening each before the previous one is
// queued, so that building the next transaction overlaps Badger's writing
// of the previous one.
//
// Badger gives a transaction, when it opens, a read timestamp and waits
// until every commit queued before it is written (oracle.readTs), so a
// reader sees everything committed before it began. A goroutine that
// queues a commit and then opens its next transaction therefore waits for
// that commit, every time: its own work and Badger's writer take turns,
// one idle while the other runs. A transaction opened before the previous
// commit is queued waits only for the commits before that one. It reads
// nothing, so its older read timestamp changes nothing: a transaction
// without reads cannot conflict, its writes get a commit timestamp when
// queued, and commits are written in the order they are queued.
//
// The transaction opened ahead holds Badger's read watermark back, as any
// open transaction does: compactions keep the versions it could read, and
// Badger keeps the conflict keys of every later commit. So it lives only
// while work is queued: call Idle before waiting for more. A Committer has
// one commit in Badger at a time, written while the next is built: the
// transaction opened before a commit is queued waits for the one before.
//
// A nil *Committer opens each transaction when it is used.
type Committer struct {
	db   *badger.DB
	next *badger.Txn // opened ahead; nil when idle
}

// NewCommitter returns a Committer for one goroutine's transactions.
func (s *Store) NewCommitter() *Committer { return &Committer{db: s.db} }

// begin returns the transaction to fill: the one opened ahead, or a new one.
func (c *Committer) begin(db *badger.DB) *badger.Txn {
	if c == nil || c.next == nil {
		return db.NewTransaction(true)
	}
	txn := c.next
	c.next = nil
	return txn
}

// commit opens the next transaction and then queues txn's commit; done
// gets its outcome on another goroutine (CommitWith discards txn).
func (c *Committer) commit(txn *badger.Txn, done func(error)) {
	if c != nil && c.next == nil {
		c.next = c.db.NewTransaction(true)
	}
	txn.CommitWith(done)
}

// Idle discards the transaction opened ahead, if any. Call it before the
// goroutine waits for more work, and when it is done.
func (c *Committer) Idle() {
	if c != nil && c.next != nil {
		c.next.Discard()
		c.next = nil
	}
}
