package fanout

import (
	"context"
	"sync"
	"time"
)

// backupBurst is the least number of tokens the backup bucket holds.
const backupBurst = 10

// backupBucket caps backup requests: it earns ratio tokens per call and
// spends one per backup.
type backupBucket struct {
	mu     sync.Mutex
	ratio  float64
	cap    float64
	tokens float64
}

func (b *backupBucket) init(ratio float64) {
	b.ratio = ratio
	b.cap = max(backupBurst, ratio+1)
	b.tokens = 1
}

func (b *backupBucket) earn() {
	b.mu.Lock()
	b.tokens = min(b.tokens+b.ratio, b.cap)
	b.mu.Unlock()
}

// take spends one token if there is one.
func (b *backupBucket) take() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// refund gives back a token taken for a backup that was not sent.
func (b *backupBucket) refund() {
	b.mu.Lock()
	b.tokens = min(b.tokens+1, b.cap)
	b.mu.Unlock()
}

// selAttemptResult is what one attempt's goroutine hands back.
type selAttemptResult[Resp any] struct {
	k       int // index in attempts
	resp    Resp
	err     error
	latency time.Duration
}

// hedged runs a call with backup requests: every attempt runs in its own
// goroutine with its own cancellable context, and the caller's goroutine
// waits for answers and for the backup timer.
//
//   - The timer starts with the call. When it fires, no attempt has
//     succeeded, and exactly one is running, a backup request goes to a
//     sub-channel not tried yet, if the token bucket allows it. At most one
//     backup is sent per call.
//   - The first success wins; the attempts still running are cancelled
//     and waited for.
//   - A failure while another attempt runs ends the call if not
//     retryable (cancelling the other); otherwise the running attempt
//     counts as the retry (it spends one of MaxRetry if any is left).
//   - A retryable failure with nothing running is retried on a sub-channel
//     not tried yet while MaxRetry allows.
func (c *selectiveCall[Req, Resp]) hedged() (Resp, error) {
	s := c.s
	results := make(chan selAttemptResult[Resp], 2) // at most 2 attempts run at once
	var cancels []context.CancelFunc                // cancels[k] cancels attempts[k] while it runs
	running, launched := 0, 0
	launch := func(sub *subChan[Req, Resp], backup bool) {
		k := len(c.attempts)
		launched++
		// A launch that is neither the first nor a backup follows a
		// failed attempt.
		actx, cancel := context.WithCancel(withAttempt(c.ctx, AttemptInfo{Number: launched, Backup: backup, Retry: !backup && launched > 1}))
		c.attempts = append(c.attempts, Attempt{Name: sub.name, Backup: backup})
		cancels = append(cancels, cancel)
		running++
		go func() {
			t0 := time.Now()
			resp, err := callSub(actx, sub, c.req)
			results <- selAttemptResult[Resp]{k: k, resp: resp, err: err, latency: time.Since(t0)}
		}()
	}
	// cancelRest cancels every running attempt: the call is decided.
	cancelRest := func() {
		for k, cancel := range cancels {
			if cancel != nil {
				cancel()
				cancels[k] = nil
				c.attempts[k].Canceled = true
			}
		}
	}

	var zero Resp
	sub := c.pick()
	if sub == nil {
		return zero, c.failure("selective")
	}
	launch(sub, false)
	timer := time.NewTimer(s.o.BackupDelay)
	defer timer.Stop()
	timerC := timer.C

	var (
		resp    Resp
		won     = false
		decided = false // a winner, or a failure that ends the call
	)
	for running > 0 {
		select {
		case <-timerC:
			timerC = nil
			if decided || running != 1 || c.ctx.Err() != nil {
				continue
			}
			if !s.bucket.take() {
				s.backupsDenied.Add(1)
				c.attempts = append(c.attempts, Attempt{Backup: true, Err: ErrBackupLimited})
				cancels = append(cancels, nil)
				continue
			}
			sub := c.pick()
			if sub == nil {
				s.bucket.refund() // no other sub-channel to send it to
				continue
			}
			s.backups.Add(1)
			launch(sub, true)

		case r := <-results:
			running--
			a := &c.attempts[r.k]
			a.Err, a.Latency = r.err, r.latency
			if cancel := cancels[r.k]; cancel != nil {
				cancel() // release the context
				cancels[r.k] = nil
			}
			s.bal.Observe(a.Name, r.latency, r.err)
			if decided {
				continue
			}
			if r.err == nil {
				a.Won, resp, won, decided = true, r.resp, true, true
				if a.Backup {
					s.backupsWon.Add(1)
				}
				cancelRest()
				continue
			}
			if !c.retryable(r.err) {
				decided = true
				cancelRest()
				continue
			}
			if running > 0 {
				// The other attempt still runs: it is the retry.
				if c.retries < s.o.MaxRetry {
					c.retries++
				}
				continue
			}
			if c.retries >= s.o.MaxRetry {
				continue // running == 0: the loop ends
			}
			if sub := c.pick(); sub != nil {
				c.retries++
				s.retries.Add(1)
				launch(sub, false)
			}
		}
	}
	if won {
		return resp, nil
	}
	return zero, c.failure("selective")
}
