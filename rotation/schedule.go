package rotation

import (
	"time"

	"github.com/robfig/cron/v3"
)

// The arithmetic of a schedule that validation needs
// (docs/design.md#slot-rule). The scheduler itself is in scheduler.go.

// ShortestInterval is the shortest interval between two runs of a
// schedule: the delay of an @every, else the shortest gap over the
// coming year (a year covers every calendar pattern but leap days, and
// CRON_TZ's daylight-saving days).
func ShortestInterval(s cron.Schedule) time.Duration {
	if d, ok := s.(cron.ConstantDelaySchedule); ok {
		return d.Delay
	}
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	end := start.AddDate(1, 0, 1)
	shortest := time.Duration(0)
	prev := s.Next(start)
	for i := 0; i < 100000 && prev.Before(end); i++ {
		next := s.Next(prev)
		if next.IsZero() {
			break
		}
		if gap := next.Sub(prev); shortest == 0 || gap < shortest {
			shortest = gap
		}
		prev = next
	}
	if shortest == 0 {
		shortest = 366 * 24 * time.Hour
	}
	return shortest
}

// KeysInGrace is how many superseded keys can still be in their grace
// when a scheduled run starts, n = floor((grace + jitter) / interval),
// for the shortest interval between runs: a key superseded at a run
// lives until grace after that run, which jitter may have delayed up to
// jitter past its tick, so it is still there at every later tick within
// grace + jitter. A delete_after equal to the next tick counts: that
// tick's rotation publishes after the tick.
func KeysInGrace(grace, jitter, interval time.Duration) int {
	if interval <= 0 {
		return 0
	}
	return int((grace + jitter) / interval)
}

// SlotsNeeded is how many Codat key slots a routine rotation needs: the
// served key, the KeysInGrace superseded keys and the new key. It must
// fit in max_keys - reserve_slots.
func SlotsNeeded(grace, jitter, interval time.Duration) int {
	return 1 + KeysInGrace(grace, jitter, interval) + 1
}
