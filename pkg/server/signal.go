package server

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// SignalContext returns a context cancelled on the first SIGINT or SIGTERM,
// for mains to pass to Run. After that first signal the default handling is
// restored, so a second Ctrl-C kills a shutdown that hangs. Call stop when
// done to release the signal handler.
func SignalContext() (ctx context.Context, stop context.CancelFunc) {
	ctx, stop = signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop()
	}()
	return ctx, stop
}
