package fanout

import "context"

// AttemptInfo describes the attempt a Selective channel is making when it
// calls a sub-channel. A sub-channel reads it with AttemptFromContext to
// label its own spans and metrics: whether it serves a backup request (a
// hedge) or a retry is only known to the Selective channel that sent it.
type AttemptInfo struct {
	// Number counts the attempts of one call from 1, backups included.
	Number int
	// Backup is true for a backup request sent because the first attempt
	// had not answered within BackupDelay.
	Backup bool
	// Retry is true for an attempt sent after an earlier one failed.
	Retry bool
}

type attemptKey struct{}

// withAttempt returns ctx carrying a.
func withAttempt(ctx context.Context, a AttemptInfo) context.Context {
	return context.WithValue(ctx, attemptKey{}, a)
}

// AttemptFromContext returns the attempt a Selective channel is making, and
// false outside a Selective channel's sub-call.
func AttemptFromContext(ctx context.Context) (AttemptInfo, bool) {
	a, ok := ctx.Value(attemptKey{}).(AttemptInfo)
	return a, ok
}
