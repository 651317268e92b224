package rotation_test

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/robfig/cron/v3"

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
		"* * * * *":    time.Minute,
		"0 0 29 2 *":   1461 * 24 * h, // every leap year
		"0 0 30 2 *":   366 * 24 * h,  // never
		// Daylight saving: the spring-forward day is 23 hours long.
		"CRON_TZ=Europe/London 0 12 * * *":   23 * h,
		"CRON_TZ=Europe/London * * * * *":    time.Minute,
		"CRON_TZ=Europe/London 59 1 * * *":   h, // twice on the autumn day
		"CRON_TZ=America/New_York 0 3 * * 0": 7*24*h - h,
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

// walkTicks is the definition ShortestInterval computes: the shortest
// gap between consecutive ticks of robfig/cron's Next, walked tick by
// tick over the same 32 years. Slow; the tests use it on specs with few
// ticks a day.
func walkTicks(s cron.Schedule) time.Duration {
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	end := start.AddDate(32, 0, 0)
	var shortest time.Duration
	prev := s.Next(start.Add(-time.Second))
	for !prev.IsZero() && prev.Before(end) {
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
		return 366 * 24 * time.Hour
	}
	return shortest
}

// TestShortestIntervalIsTheWalk compares the computed interval with the
// tick-by-tick walk over random specs: sparse times of day, random day
// fields, in UTC, a fixed zone and zones with daylight saving (London,
// New York, Lord Howe's half hour, Santiago's midnight changes).
func TestShortestIntervalIsTheWalk(t *testing.T) {
	zones := []string{"", "CRON_TZ=Asia/Kolkata ", "CRON_TZ=Europe/London ", "CRON_TZ=America/New_York ",
		"CRON_TZ=Australia/Lord_Howe ", "CRON_TZ=America/Santiago "}
	pick := func(r *rand.Rand, lo, hi, most int) string {
		if r.IntN(3) == 0 {
			return "*"
		}
		n := 1 + r.IntN(most)
		var parts []string
		for range n {
			parts = append(parts, strconv.Itoa(lo+r.IntN(hi-lo+1)))
		}
		return strings.Join(parts, ",")
	}
	r := rand.New(rand.NewPCG(21, 21))
	specs := []string{
		"CRON_TZ=Europe/London 30 1 * * *",  // skipped on the spring day
		"CRON_TZ=Europe/London 59 1 * * *",  // twice on the autumn day
		"CRON_TZ=Europe/London 0 1,2 * * *", // both sides of the change
		"CRON_TZ=America/Santiago 0 0 * * *",
		"0 0 29 2 *",
		"0 0 31 * *",
		"0 0 13 * 5",
		"0 12 * 2 1-5",
	}
	for range 40 {
		hours := pick(r, 0, 23, 3)
		if hours == "*" {
			hours = strconv.Itoa(r.IntN(24))
		}
		minutes := pick(r, 0, 59, 2)
		if minutes == "*" {
			minutes = strconv.Itoa(r.IntN(60))
		}
		spec := fmt.Sprintf("%s%s %s %s %s %s", zones[r.IntN(len(zones))], minutes, hours,
			pick(r, 1, 31, 2), pick(r, 1, 12, 3), pick(r, 0, 6, 2))
		specs = append(specs, spec)
	}
	for _, spec := range specs {
		s, err := rotation.ParseSchedule(spec)
		if err != nil {
			t.Fatalf("%q: %v", spec, err)
		}
		if got, want := rotation.ShortestInterval(s), walkTicks(s); got != want {
			t.Errorf("ShortestInterval(%q) = %v, the walk says %v", spec, got, want)
		}
	}
}

// BenchmarkShortestInterval: the first computation of a spec (the cache
// emptied each time), per kind of spec.
func BenchmarkShortestInterval(b *testing.B) {
	for _, spec := range []string{"* * * * *", "0 3 * * *", "CRON_TZ=Europe/London * * * * *", "CRON_TZ=Europe/London 0 3 * * *"} {
		s, err := rotation.ParseSchedule(spec)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(spec, func(b *testing.B) {
			for range b.N {
				rotation.ForgetIntervals()
				rotation.ShortestInterval(s)
			}
		})
	}
}
