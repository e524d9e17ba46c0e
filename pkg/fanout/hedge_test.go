package fanout

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestBackupNotBeforeDelay(t *testing.T) {
	t.Parallel()
	started, release := make(chan struct{}), make(chan struct{})
	s, subs, _ := newSelTest(t, SelectiveOptions[string]{Balancer: selFirstFree{}, BackupDelay: time.Hour, BackupMaxRatio: 1},
		func(ctx context.Context, _ string) (string, error) {
			close(started)
			select {
			case <-release:
				return "slow s0", nil
			case <-ctx.Done():
				return "", ctx.Err()
			}
		}, nil)
	type answer struct {
		resp string
		rep  *SelectiveReport
		err  error
	}
	done := make(chan answer, 1)
	go func() {
		resp, rep, err := s.CallReport(context.Background(), "x")
		done <- answer{resp, rep, err}
	}()
	<-started
	time.Sleep(20 * time.Millisecond) // room for a wrong early backup to show
	if n := subs[1].calls.Load(); n != 0 {
		t.Fatalf("backup sent before its 1h delay (%d calls to s1)", n)
	}
	close(release)
	a := <-done
	if a.resp != "slow s0" || a.err != nil || len(a.rep.Attempts) != 1 {
		t.Fatalf("call = %q, %v, attempts %+v", a.resp, a.err, a.rep.Attempts)
	}
	if st := s.Stats(); st.Backups != 0 || st.BackupsDenied != 0 || subs[1].calls.Load() != 0 {
		t.Fatalf("stats %+v, s1 calls %d: want no backup", st, subs[1].calls.Load())
	}
}

func TestBackupWins(t *testing.T) {
	t.Parallel()
	for _, ratio := range []float64{0, 1} { // 0: the default cap, its first token
		t.Run("", func(t *testing.T) {
			t.Parallel()
			firstCancelled := make(chan struct{})
			s, subs, active := newSelTest(t, SelectiveOptions[string]{BackupDelay: time.Millisecond, BackupMaxRatio: ratio, MaxRetry: 0},
				func(ctx context.Context, _ string) (string, error) {
					<-ctx.Done() // slow: only a cancel ends it
					close(firstCancelled)
					return "", ctx.Err()
				}, nil, nil)
			resp, rep, err := s.CallReport(context.Background(), "x")
			if err != nil || resp != "s1" {
				t.Fatalf("call = %q, %v; want the backup's answer", resp, err)
			}
			select {
			case <-firstCancelled:
			default:
				t.Fatal("first attempt's context not cancelled, or not waited for")
			}
			if active.Load() != 0 {
				t.Fatal("attempt still running after the call")
			}
			if len(rep.Attempts) != 2 {
				t.Fatalf("attempts %+v, want 2", rep.Attempts)
			}
			first, backup := rep.Attempts[0], rep.Attempts[1]
			if first.Name != "s0" || first.Backup || first.Won || !first.Canceled || !errors.Is(first.Err, context.Canceled) {
				t.Errorf("first attempt %+v, want s0 cancelled", first)
			}
			if backup.Name != "s1" || !backup.Backup || !backup.Won || backup.Canceled || backup.Err != nil {
				t.Errorf("backup %+v, want s1 won", backup)
			}
			if st := s.Stats(); st != (SelectiveStats{Calls: 1, Backups: 1, BackupsWon: 1}) {
				t.Errorf("stats %+v", st)
			}
			if subs[2].calls.Load() != 0 {
				t.Error("a third attempt was sent")
			}
		})
	}
}

func TestBackupFirstAnswerWins(t *testing.T) {
	t.Parallel()
	// The first attempt answers after the backup was sent but before it
	// answers: the first wins and the backup is cancelled.
	backupStarted, backupCancelled := make(chan struct{}), make(chan struct{})
	s, _, _ := newSelTest(t, SelectiveOptions[string]{Balancer: selFirstFree{}, BackupDelay: time.Millisecond, BackupMaxRatio: 1},
		func(ctx context.Context, _ string) (string, error) {
			<-backupStarted
			return "s0", nil
		},
		func(ctx context.Context, _ string) (string, error) {
			close(backupStarted)
			<-ctx.Done()
			close(backupCancelled)
			return "", ctx.Err()
		})
	resp, rep, err := s.CallReport(context.Background(), "x")
	if resp != "s0" || err != nil {
		t.Fatalf("call = %q, %v", resp, err)
	}
	select {
	case <-backupCancelled:
	default:
		t.Fatal("backup not cancelled, or not waited for")
	}
	if !rep.Attempts[0].Won || !rep.Attempts[1].Canceled || !rep.Attempts[1].Backup {
		t.Fatalf("attempts %+v", rep.Attempts)
	}
	if st := s.Stats(); st.Backups != 1 || st.BackupsWon != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestBackupWhenFirstFails(t *testing.T) {
	t.Parallel()
	errFatal := errors.New("fatal")
	tests := []struct {
		name       string
		maxRetry   int
		firstErr   error
		backupErr  error
		want       string
		wantErr    error
		attempts   int
		retries    uint64
		backupStop bool // the backup is cancelled by the first's final failure
	}{
		{"backup is the retry", 1, errSelBoom, nil, "s1", nil, 2, 0, false},
		{"backup waited for without MaxRetry", 0, errSelBoom, nil, "s1", nil, 2, 0, false},
		{"both fail, out of retries", 1, errSelBoom, errSelBoom, "", errSelBoom, 2, 0, false},
		{"both fail, one more retry", 2, errSelBoom, errSelBoom, "s2", nil, 3, 1, false},
		{"first fails for good", 2, errFatal, nil, "", errFatal, 2, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			backupStarted, releaseFirst, releaseBackup := make(chan struct{}), make(chan struct{}), make(chan struct{})
			rec := &selRecorder{Balancer: selFirstFree{}, observed: make(chan string, 8)}
			s, subs, active := newSelTest(t, SelectiveOptions[string]{
				Balancer: rec, MaxRetry: tt.maxRetry, BackupDelay: time.Millisecond, BackupMaxRatio: 1,
				Retryable: func(err error) bool { return !errors.Is(err, errFatal) },
			},
				func(ctx context.Context, _ string) (string, error) {
					<-releaseFirst
					return "", tt.firstErr
				},
				func(ctx context.Context, _ string) (string, error) {
					close(backupStarted)
					select {
					case <-releaseBackup:
					case <-ctx.Done():
						return "", ctx.Err()
					}
					if tt.backupErr != nil {
						return "", tt.backupErr
					}
					return "s1", nil
				},
				nil)
			type answer struct {
				resp string
				rep  *SelectiveReport
				err  error
			}
			done := make(chan answer, 1)
			go func() {
				resp, rep, err := s.CallReport(context.Background(), "x")
				done <- answer{resp, rep, err}
			}()
			<-backupStarted
			close(releaseFirst)
			if name := <-rec.observed; name != "s0" { // the call has seen s0 fail
				t.Fatalf("observed %s first, want s0", name)
			}
			close(releaseBackup)
			a := <-done
			if a.resp != tt.want || !errors.Is(a.err, tt.wantErr) || (tt.wantErr == nil) != (a.err == nil) {
				t.Fatalf("call = %q, %v; want %q, %v", a.resp, a.err, tt.want, tt.wantErr)
			}
			if len(a.rep.Attempts) != tt.attempts {
				t.Fatalf("attempts %+v, want %d", a.rep.Attempts, tt.attempts)
			}
			if got := a.rep.Attempts[1]; !got.Backup || got.Name != "s1" || got.Canceled != tt.backupStop {
				t.Fatalf("second attempt %+v, want the backup on s1 (cancelled: %v)", got, tt.backupStop)
			}
			if st := s.Stats(); st.Retries != tt.retries || st.Backups != 1 {
				t.Fatalf("stats %+v, want %d retries and 1 backup", st, tt.retries)
			}
			if want := int64(tt.attempts - 2); subs[2].calls.Load() != want {
				t.Fatalf("s2 called %d times, want %d", subs[2].calls.Load(), want)
			}
			if active.Load() != 0 {
				t.Fatal("attempt still running after the call")
			}
		})
	}
}

func TestBackupNoOtherSub(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	s, _, _ := newSelTest(t, SelectiveOptions[string]{BackupDelay: time.Nanosecond, BackupMaxRatio: 1},
		func(ctx context.Context, _ string) (string, error) { <-release; return "only", nil })
	f := s.Go(context.Background(), "x")
	time.Sleep(5 * time.Millisecond)
	close(release)
	if resp, err := f.Wait(); resp != "only" || err != nil {
		t.Fatalf("call = %q, %v", resp, err)
	}
	if st := s.Stats(); st.Backups != 0 || st.BackupsDenied != 0 {
		t.Fatalf("stats %+v: no backup possible with one sub", st)
	}
}

func TestBackupCap(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		ratio float64 // 0: the default 0.1
		want  float64
	}{
		{"default ratio", 0, 0.1},
		{"quarter", 0.25, 0.25},
		{"every call", 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			const calls = 1000
			var s *Selective[string, string]
			var decisionsBefore, backupsBefore atomic.Uint64
			// The first attempt stays slow until the call decided about its
			// backup (sent or denied): every call reaches the decision.
			// When the backup was sent it waits for its cancellation, else
			// it answers.
			slow := func(ctx context.Context, _ string) (string, error) {
				for {
					st := s.Stats()
					if st.Backups+st.BackupsDenied > decisionsBefore.Load() {
						if st.Backups > backupsBefore.Load() {
							<-ctx.Done()
							return "", ctx.Err()
						}
						return "s0", nil
					}
					select {
					case <-ctx.Done():
						return "", ctx.Err()
					case <-time.After(20 * time.Microsecond):
					}
				}
			}
			s, _, _ = newSelTest(t, SelectiveOptions[string]{Balancer: selFirstFree{}, BackupDelay: time.Nanosecond, BackupMaxRatio: tt.ratio}, slow, nil)
			for i := range calls {
				st := s.Stats()
				decisionsBefore.Store(st.Backups + st.BackupsDenied)
				backupsBefore.Store(st.Backups)
				if _, err := s.Call(context.Background(), "x"); err != nil {
					t.Fatalf("call %d: %v", i, err)
				}
			}
			st := s.Stats()
			if st.Backups+st.BackupsDenied != calls {
				t.Fatalf("stats %+v: want a backup decision per call", st)
			}
			if limit := tt.want*calls + backupBurst; float64(st.Backups) > limit {
				t.Fatalf("%d backups for %d calls, over the cap %.0f", st.Backups, calls, limit)
			}
			if low := tt.want * calls * 0.95; float64(st.Backups) < low {
				t.Fatalf("%d backups for %d calls, want about %.0f", st.Backups, calls, tt.want*calls)
			}
			if st.BackupsWon != st.Backups {
				t.Fatalf("stats %+v: every backup should win", st)
			}
		})
	}
}

func TestBackupReportsDenied(t *testing.T) {
	t.Parallel()
	var s *Selective[string, string]
	slow := func(ctx context.Context, _ string) (string, error) {
		for s.Stats().Backups+s.Stats().BackupsDenied == 0 {
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-time.After(20 * time.Microsecond):
			}
		}
		return "s0", nil
	}
	s, _, _ = newSelTest(t, SelectiveOptions[string]{Balancer: selFirstFree{}, BackupDelay: time.Nanosecond, BackupMaxRatio: 0.01}, slow, nil)
	s.bucket.take() // spend the first token
	resp, rep, err := s.CallReport(context.Background(), "x")
	if resp != "s0" || err != nil {
		t.Fatalf("call = %q, %v", resp, err)
	}
	if len(rep.Attempts) != 2 || rep.Attempts[1] != (Attempt{Backup: true, Err: ErrBackupLimited}) {
		t.Fatalf("attempts %+v, want the denied backup reported", rep.Attempts)
	}
}

// TestSelectiveNoGoroutineLeak is not parallel: it counts the process's
// goroutines while no other test runs.
func TestSelectiveNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	block := func(ctx context.Context, _ string) (string, error) { <-ctx.Done(); return "", ctx.Err() }
	s, _, active := newSelTest(t, SelectiveOptions[string]{
		BackupDelay: time.Microsecond, BackupMaxRatio: 1, MaxRetry: 2, Timeout: 2 * time.Millisecond,
	}, block, block, block)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := s.Call(context.Background(), "timeout"); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("timed-out call: %v", err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			f := s.Go(ctx, "cancel")
			cancel()
			if _, err := f.Wait(); err == nil {
				t.Error("cancelled call succeeded")
			}
			if _, err := s.Broadcast(context.Background(), "broadcast"); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("timed-out broadcast: %v", err)
			}
		})
	}
	wg.Wait()
	if n := active.Load(); n != 0 {
		t.Fatalf("%d sub-calls still running after every call returned", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(time.Millisecond)
	}
}
