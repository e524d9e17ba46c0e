// Package e2e holds slotkv's end-to-end tests and benchmarks: they start the
// real service binaries as separate processes on loopback (see pkg/proctest),
// drive them over REST and gRPC exactly as an operator would, and stop them
// by their own process ids.
package e2e
