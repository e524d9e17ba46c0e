package fanout

import (
	"context"
	"sync"
)

// Future is the answer of an asynchronous call. Wait for it, or cancel it:
// Cancel ends the call's context, so every sub-call still running is
// cancelled and its goroutines return.
type Future[Resp any] struct {
	done   chan struct{}
	cancel context.CancelFunc
	once   sync.Once
	resp   Resp
	err    error
}

// Go starts ch.Call(ctx, req) in a goroutine and returns its Future. The
// call's context is derived from ctx, so cancelling ctx cancels the call too.
func Go[Req, Resp any](ctx context.Context, ch Channel[Req, Resp], req Req) *Future[Resp] {
	ctx, cancel := context.WithCancel(ctx)
	f := &Future[Resp]{done: make(chan struct{}), cancel: cancel}
	go func() {
		defer cancel() // release the context's resources once answered
		resp, err := ch.Call(ctx, req)
		f.resp, f.err = resp, err
		close(f.done)
	}()
	return f
}

// Done is closed when the answer is there.
func (f *Future[Resp]) Done() <-chan struct{} { return f.done }

// Wait blocks until the answer is there and returns it.
func (f *Future[Resp]) Wait() (Resp, error) {
	<-f.done
	return f.resp, f.err
}

// WaitContext waits for the answer or for ctx to end; when ctx ends first
// it returns ctx.Err() and leaves the call running (Cancel stops it).
func (f *Future[Resp]) WaitContext(ctx context.Context) (Resp, error) {
	select {
	case <-f.done:
		return f.resp, f.err
	case <-ctx.Done():
		var zero Resp
		return zero, ctx.Err()
	}
}

// Cancel cancels the call. The answer (most likely context.Canceled) still
// arrives through Wait once every sub-call has returned.
func (f *Future[Resp]) Cancel() { f.once.Do(f.cancel) }
