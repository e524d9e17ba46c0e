package bulkload

import "fmt"

// State of a job or of one file of a job. The values are those of the
// proto enum slotkv.downloader.v1.State, so the gRPC layer converts with a
// plain cast.
type State int32

// States (see the package documentation of the downloader for the rules).
const (
	StateUnspecified State = iota
	StatePending
	StateDownloading
	StateDownloaded
	StateIngesting
	StateSucceeded
	StateFailed
	StatePaused
	StateCanceled
)

var stateNames = [...]string{"UNSPECIFIED", "PENDING", "DOWNLOADING", "DOWNLOADED", "INGESTING", "SUCCEEDED", "FAILED", "PAUSED", "CANCELED"}

func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", int32(s))
}

// Final reports whether nothing can happen to a job in state s any more
// (SUCCEEDED and CANCELED). A FAILED job is not final: it can be resumed.
func (s State) Final() bool { return s == StateSucceeded || s == StateCanceled }

// Running reports whether a job in state s has work under way.
func (s State) Running() bool {
	switch s {
	case StatePending, StateDownloading, StateDownloaded, StateIngesting:
		return true
	}
	return false
}

// Ended reports whether a watch of a job in state s is over: the job has
// succeeded, failed or been canceled.
func (s State) Ended() bool { return s.Final() || s == StateFailed }
