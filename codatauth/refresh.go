package codatauth

import (
	"context"
	"time"
)

// After next_rotation_at the daemon still has to create, verify and
// publish the new key (docs/design.md#step-table), and its jitter may
// delay the start: the first read waits dueDelay, and reads that still
// find the old secret back off from there, doubling up to the interval.
const dueDelay = time.Second

// readLocked reads the source and, on success, puts the credential in
// use. The caller holds mu and reports the event after unlocking.
func (t *Transport) readLocked(ctx context.Context, reason Reason) (Refresh, *credState) {
	start := time.Now()
	cred, err := t.src.Load(ctx)
	t.lastRead = start
	t.reads.Add(1)
	ev := Refresh{Time: start, Took: time.Since(start), Reason: reason, Err: err}
	old := t.cur.Load()
	if err != nil {
		t.failures.Add(1)
		if old != nil {
			ev.KeyID = old.cred.KeyID
		}
		return ev, old
	}
	ev.Changed = old == nil || old.cred.Header != cred.Header
	if ev.Changed {
		t.changes.Add(1)
	}
	ev.KeyID = cred.KeyID
	st := &credState{cred: cred, values: []string{cred.Header.Reveal()}}
	t.cur.Store(st)
	return ev, st
}

func (t *Transport) report(ev Refresh) {
	if t.onRefresh != nil {
		t.onRefresh(ev)
	}
}

// refreshLoop reads the source on the schedule nextRead gives, until
// Close.
func (t *Transport) refreshLoop() {
	defer t.wg.Done()
	var failures, dueReads int
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		wait, reason := nextRead(time.Now(), t.cur.Load().cred.NextRotationAt, t.interval, failures, dueReads)
		timer.Reset(wait)
		select {
		case <-t.ctx.Done():
			return
		case <-timer.C:
		}
		t.mu.Lock()
		ev, st := t.readLocked(t.ctx, reason)
		t.mu.Unlock()
		if t.ctx.Err() != nil {
			return // a read cut short by Close is no failure to report
		}
		t.report(ev)
		switch {
		case ev.Err != nil:
			failures++
		case st.cred.NextRotationAt.After(time.Now()):
			failures, dueReads = 0, 0 // a secret with its next rotation ahead
		case reason == ReasonRotationDue:
			failures, dueReads = 0, dueReads+1 // still the old secret: back off
		default:
			failures = 0 // past due at the interval: stay there
		}
	}
}

// nextRead returns how long to wait before the next background read and
// why: after failures, a backoff from 1 s doubling up to the interval;
// just after nextRotation when that comes before the interval is up; then
// while the source still shows a past nextRotation (the new key is not
// published yet), a backoff counted by dueReads; else the interval.
func nextRead(now, nextRotation time.Time, interval time.Duration, failures, dueReads int) (time.Duration, Reason) {
	if failures > 0 {
		return min(interval, backoff(failures)), ReasonRetry
	}
	if nextRotation.IsZero() {
		return interval, ReasonInterval
	}
	if d := nextRotation.Add(dueDelay).Sub(now); d > 0 {
		if d < interval {
			return d, ReasonRotationDue
		}
		return interval, ReasonInterval
	}
	if w := backoff(dueReads + 1); w < interval {
		return w, ReasonRotationDue
	}
	return interval, ReasonInterval
}

// backoff returns dueDelay·2^(n-1), capped at an hour.
func backoff(n int) time.Duration {
	if n > 12 {
		return time.Hour
	}
	return min(dueDelay<<(n-1), time.Hour)
}
