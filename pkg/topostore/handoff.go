package topostore

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The hand-off record of a migration job: <prefix>handoff/<job> = the
// topology version from which the job's source no longer serves its slots.
// The migrator writes it in the etcd transaction that commits that
// version, after the source froze the slots (a FROZEN slot serves neither
// reads nor writes, and the freeze is on the source's disk). The
// destination serves the slots only when it holds a topology that assigns
// them to it and the record exists, so at no moment do two nodes serve a
// slot. The migrator removes the record when the job has ended.

// HandoffKey is the etcd key of job's hand-off record.
func (s *Store) HandoffKey(job string) string { return s.prefix + "handoff/" + job }

// RecordHandoff records that the source of job stopped serving its slots
// at topology version.
func (s *Store) RecordHandoff(ctx context.Context, job string, version uint64) error {
	if _, err := s.cli.Put(ctx, s.HandoffKey(job), strconv.FormatUint(version, 10)); err != nil {
		return fmt.Errorf("topostore: etcd put %s: %w", s.HandoffKey(job), err)
	}
	return nil
}

// Handoff returns the version recorded for job, and whether there is one.
func (s *Store) Handoff(ctx context.Context, job string) (uint64, bool, error) {
	resp, err := s.cli.Get(ctx, s.HandoffKey(job))
	if err != nil {
		return 0, false, fmt.Errorf("topostore: etcd get %s: %w", s.HandoffKey(job), err)
	}
	if len(resp.Kvs) == 0 {
		return 0, false, nil
	}
	v, err := strconv.ParseUint(string(resp.Kvs[0].Value), 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("topostore: %s at revision %d: %w", s.HandoffKey(job), resp.Kvs[0].ModRevision, err)
	}
	return v, true, nil
}

// DeleteHandoff removes job's record (the job has ended).
func (s *Store) DeleteHandoff(ctx context.Context, job string) error {
	if _, err := s.cli.Delete(ctx, s.HandoffKey(job)); err != nil {
		return fmt.Errorf("topostore: etcd delete %s: %w", s.HandoffKey(job), err)
	}
	return nil
}

// Handoffs delivers the job ids of hand-off records: every record present
// when it starts (and after each resumption), then each one put later. A
// job may be delivered more than once; the channel is closed when ctx is
// done.
func (s *Store) Handoffs(ctx context.Context) <-chan string {
	out := make(chan string)
	prefix := s.prefix + "handoff/"
	go s.watchPrefix(ctx, prefix, func(key string) bool {
		select {
		case out <- strings.TrimPrefix(key, prefix):
			return true
		case <-ctx.Done():
			return false
		}
	}, func() { close(out) })
	return out
}

// watchPrefix calls put with the key of every record under prefix, present
// or put later, resuming from a fresh read when the watch ends, until ctx
// is done or put returns false; then it calls done.
func (s *Store) watchPrefix(ctx context.Context, prefix string, put func(key string) bool, done func()) {
	defer done()
	delay := retryMin
	for ctx.Err() == nil {
		gctx, cancel := context.WithTimeout(ctx, getTimeout)
		resp, err := s.cli.Get(gctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		cancel()
		if err == nil {
			delay = retryMin
			for _, kv := range resp.Kvs {
				if !put(string(kv.Key)) {
					return
				}
			}
			wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
			for wr := range s.cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1)) {
				if err = wr.Err(); err != nil {
					break
				}
				for _, ev := range wr.Events {
					if ev.Type == clientv3.EventTypePut && !put(string(ev.Kv.Key)) {
						wcancel()
						return
					}
				}
			}
			wcancel()
		}
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("topostore: watch ended, resuming from a fresh read", "prefix", prefix, "err", err, "retry_in", delay)
		select {
		case <-time.After(delay):
			delay = min(2*delay, retryMax)
		case <-ctx.Done():
			return
		}
	}
}
