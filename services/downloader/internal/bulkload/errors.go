package bulkload

import (
	"errors"
	"fmt"

	"github.com/slotkv/slotkv/pkg/rpcerr"
)

// Domain errors. Each wraps the rpcerr sentinel the gRPC layer maps it to
// (rpcerr.ToStatus), so this package never builds a status itself.
var (
	// ErrJobNotFound: no job has the id (NotFound).
	ErrJobNotFound = fmt.Errorf("bulk-load job %w", rpcerr.ErrNotFound)
	// ErrJobExists: StartJob with the id of an existing job (AlreadyExists).
	ErrJobExists = fmt.Errorf("bulk-load job %w", rpcerr.ErrAlreadyExists)
	// ErrBadState: the job's state does not allow the request
	// (FailedPrecondition); the message says the state.
	ErrBadState = fmt.Errorf("bulk-load job state: %w", rpcerr.ErrConflict)
	// ErrClosed: the service is shutting down (Unavailable).
	ErrClosed = fmt.Errorf("bulk-load service is shutting down: %w", rpcerr.ErrUnavailable)
	// ErrNotLeading: with etcd, this replica does not run the jobs now
	// (its term is starting or has ended); the caller retries, and reaches
	// the leader through a follower's forwarding (Unavailable).
	ErrNotLeading = fmt.Errorf("bulk-load service: this downloader replica does not lead now (a term is starting or ending): retry: %w", rpcerr.ErrUnavailable)
)

// Causes of a job's run ending early (context.Cause of its context).
var (
	errPaused   = errors.New("job paused")
	errCanceled = errors.New("job canceled")
	errShutdown = errors.New("service shutting down")
	errDeposed  = errors.New("this replica's term as leader ended")
)

// fileError is the failure of one data file: it names the file, and the
// job's error is this message.
type fileError struct {
	name string
	err  error
}

func (e *fileError) Error() string { return e.name + ": " + e.err.Error() }
func (e *fileError) Unwrap() error { return e.err }

func fileErr(name string, format string, args ...any) error {
	return &fileError{name: name, err: fmt.Errorf(format, args...)}
}
