package codatauth

import (
	"testing"
	"time"
)

// TestNextRead: when the background refresh reads the source next, and
// why, as a pure function of the time, the secret's next_rotation_at,
// the interval and the failures and still-old reads so far.
func TestNextRead(t *testing.T) {
	now := time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC)
	const minute = time.Minute
	tests := []struct {
		name         string
		nextRotation time.Time
		interval     time.Duration
		failures     int
		dueReads     int
		want         time.Duration
		reason       Reason
	}{
		{"no next_rotation_at: the interval", time.Time{}, minute, 0, 0, minute, ReasonInterval},
		{"rotation far away: the interval", now.Add(24 * time.Hour), minute, 0, 0, minute, ReasonInterval},
		{"rotation within the interval: just after it", now.Add(10 * time.Second), minute, 0, 0, 11 * time.Second, ReasonRotationDue},
		{"rotation just past the interval: the interval", now.Add(minute), minute, 0, 0, minute, ReasonInterval},
		{"rotation now: a second later", now, minute, 0, 0, time.Second, ReasonRotationDue},
		{"past due, first look again: 1s", now.Add(-5 * time.Second), minute, 0, 0, time.Second, ReasonRotationDue},
		{"past due, still old after 3 reads: 8s", now.Add(-5 * time.Second), minute, 0, 3, 8 * time.Second, ReasonRotationDue},
		{"past due, backoff reaches the interval: the interval", now.Add(-time.Hour), minute, 0, 6, minute, ReasonInterval},
		{"past due for days: the interval", now.Add(-72 * time.Hour), minute, 0, 40, minute, ReasonInterval},
		{"one failure: 1s", now.Add(time.Hour), minute, 1, 0, time.Second, ReasonRetry},
		{"four failures: 8s", time.Time{}, minute, 4, 0, 8 * time.Second, ReasonRetry},
		{"many failures: capped by the interval", time.Time{}, minute, 50, 0, minute, ReasonRetry},
		{"short interval caps the failure backoff", time.Time{}, 500 * time.Millisecond, 3, 0, 500 * time.Millisecond, ReasonRetry},
		{"short interval beats a past-due backoff", now.Add(-time.Second), 500 * time.Millisecond, 0, 0, 500 * time.Millisecond, ReasonInterval},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, reason := nextRead(now, tt.nextRotation, tt.interval, tt.failures, tt.dueReads)
			if got != tt.want || reason != tt.reason {
				t.Errorf("got %s %s, want %s %s", got, reason, tt.want, tt.reason)
			}
		})
	}
}
