package rotation_test

import (
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/rotation"
)

func TestShortestInterval(t *testing.T) {
	const h = time.Hour
	for spec, want := range map[string]time.Duration{
		"@every 90m":   90 * time.Minute,
		"@daily":       24 * h,
		"0 3 * * *":    24 * h,
		"0 3 * * 1":    7 * 24 * h,
		"0 3 * * 1,3":  2 * 24 * h,
		"*/15 * * * *": 15 * time.Minute,
		"0 0 1 1 *":    365 * 24 * h,
		// Daylight saving: the spring-forward day is 23 hours long.
		"CRON_TZ=Europe/London 0 12 * * *": 23 * h,
	} {
		s, err := rotation.ParseSchedule(spec)
		if err != nil {
			t.Fatalf("%q: %v", spec, err)
		}
		if got := rotation.ShortestInterval(s); got != want {
			t.Errorf("ShortestInterval(%q) = %v, want %v", spec, got, want)
		}
	}
}

func TestKeysInGrace(t *testing.T) {
	const h = time.Hour
	tests := []struct {
		grace, jitter, gap time.Duration
		want               int
	}{
		{23 * h, 0, 24 * h, 0},
		{23 * h, 59 * time.Minute, 24 * h, 0},
		{24 * h, 0, 24 * h, 1}, // delete_after at the next tick: still alive when it publishes
		{20 * h, 4 * h, 24 * h, 1},
		{24 * h, 23 * h, 24 * h, 1},
		{48 * h, 0, 24 * h, 2},
		{time.Second, 0, 0, 0},
	}
	for _, tt := range tests {
		if got := rotation.KeysInGrace(tt.grace, tt.jitter, tt.gap); got != tt.want {
			t.Errorf("KeysInGrace(%v, %v, %v) = %d, want %d", tt.grace, tt.jitter, tt.gap, got, tt.want)
		}
		if got := rotation.SlotsNeeded(tt.grace, tt.jitter, tt.gap); got != 2+tt.want {
			t.Errorf("SlotsNeeded(%v, %v, %v) = %d, want %d", tt.grace, tt.jitter, tt.gap, got, 2+tt.want)
		}
	}
}
