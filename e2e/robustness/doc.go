// Package robustness records client histories of a key-value store under
// faults and checks them for linearizability with porcupine
// (github.com/anishathalye/porcupine), as etcd's tests/robustness does.
//
// The model is one register per key: Put sets it, Delete clears it, Get
// must return the value the register holds at the point where the
// operation takes effect, somewhere between its call and its return.
//
// A call that failed is not a failure of the store. A write that returned
// an error or timed out may or may not have been applied (the request may
// have reached the node and the answer been lost), so it is recorded as
// ambiguous: its return time is "never", which lets the checker place its
// effect anywhere after its call, or after everything else (the same as not
// at all). A read that failed observed nothing and is left out. Only reads
// that returned constrain the history, so a history can only be found
// non-linearizable by a read that returned a value the store could not have
// held at that time: a lost acknowledged write, a stale read after a
// hand-off, a resurrected delete.
package robustness
