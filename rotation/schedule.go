package rotation

import (
	"sort"
	"sync"
	"time"

	"github.com/robfig/cron/v3"
)

// The arithmetic of a schedule that validation needs
// (docs/design.md#slot-rule). The scheduler itself is in scheduler.go.

// ShortestInterval is the shortest interval between two runs of a
// schedule: the delay of an @every, else the shortest gap between two
// consecutive runs of the cron spec, CRON_TZ's daylight-saving days
// included. It is computed once per distinct spec (a fleet of a
// thousand targets on one spec pays for one) and from the spec's
// fields, not by walking a year of ticks: see specInterval.
func ShortestInterval(s cron.Schedule) time.Duration {
	switch sc := s.(type) {
	case cron.ConstantDelaySchedule:
		return sc.Delay
	case *cron.SpecSchedule:
		key := intervalKey{sc.Second, sc.Minute, sc.Hour, sc.Dom, sc.Month, sc.Dow, locationOf(sc).String()}
		intervals.Lock()
		d, ok := intervals.m[key]
		intervals.Unlock()
		if !ok {
			d = specInterval(sc)
			intervals.Lock()
			intervals.m[key] = d
			intervals.Unlock()
		}
		return d
	}
	return neverInterval
}

// neverInterval stands for a schedule with fewer than two runs in the
// calendar's cycle (such as 30 February): longer than any other gap.
const neverInterval = 366 * 24 * time.Hour

// intervals caches specInterval per distinct spec: its fields and the
// name of its zone (each CRON_TZ parse loads its own *time.Location).
var intervals = struct {
	sync.Mutex
	m map[intervalKey]time.Duration
}{m: map[intervalKey]time.Duration{}}

type intervalKey struct {
	second, minute, hour, dom, month, dow uint64
	loc                                   string
}

// locationOf is the zone a spec's ticks are read in: its CRON_TZ, else
// UTC, the scheduler's clock (robfig/cron reads time.Local as "the zone
// of the time passed in").
func locationOf(sc *cron.SpecSchedule) *time.Location {
	if sc.Location == nil || sc.Location == time.Local {
		return time.UTC
	}
	return sc.Location
}

// The window over which specInterval looks: 1 January 2025 for 32
// years. Why that is enough: the Gregorian calendar's days, months,
// weekdays and leap years repeat every 28 years from 1901 to 2099, so
// 28 years hold every kind of day a spec can match; the longest gap
// between two runs within those years is 4 years (29 February alone),
// so 32 years hold every kind of pair of consecutive runs too. A zone's
// future daylight-saving rule is the same every year.
var (
	windowStart = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	windowYears = 32
)

// specInterval is a cron spec's shortest gap, from its fields.
//
// A spec fires on a set of days (month, day of month, day of week) at
// the same times of day (hour, minute, second) on each. While the zone's
// offset stays the same, the gaps are therefore the gaps between those
// times of day within a day, and from the last time of one firing day
// to the first of the next: k days less the span of the times, for k
// the days between two consecutive firing days. Those come from
// calendar arithmetic over the window, one step per day, no time.Time.
//
// Around a change of offset (CRON_TZ's daylight saving), robfig/cron
// skips, repeats or shifts ticks by its own rules: there the gaps come
// from its Next, from the last tick before the day of the change to the
// first tick after it (aroundChange).
func specInterval(sc *cron.SpecSchedule) time.Duration {
	tods := timesOfDay(sc)
	if len(tods) == 0 {
		return neverInterval
	}
	loc := locationOf(sc)
	end := windowStart.AddDate(windowYears, 0, 0)
	changes := changeDays(loc, end)

	var shortest time.Duration
	keep := func(d time.Duration) {
		if d > 0 && (shortest == 0 || d < shortest) {
			shortest = d
		}
	}
	within := minGapWithin(tods)
	span := time.Duration(tods[len(tods)-1]-tods[0]) * time.Second
	// last is the latest firing day with no change of offset since it.
	last := civil{n: -1}
	var from *civil // the run of change days being crossed, from this firing day (nil: the window's start)
	inRun := false
	y, m, d, wd := windowStart.Year(), int(windowStart.Month()), windowStart.Day(), int(windowStart.Weekday())
	for n := 0; y < windowStart.Year()+windowYears; n++ {
		day := civil{y, m, d, n}
		switch {
		case changes[y*10000+m*100+d]:
			if !inRun {
				inRun, from = true, nil
				if last.n >= 0 {
					f := last
					from = &f
				}
			}
			last = civil{n: -1}
		case sc.Month&(1<<uint(m)) != 0 && dayMatches(sc, d, wd):
			if within > 0 {
				keep(within)
			}
			if inRun {
				keep(aroundChange(sc, tods, loc, from, &day))
				inRun = false
			} else if last.n >= 0 {
				keep(time.Duration(n-last.n)*24*time.Hour - span)
			}
			last = day
		}
		wd = (wd + 1) % 7
		if d++; d > daysIn(y, m) {
			d = 1
			if m++; m > 12 {
				m = 1
				y++
			}
		}
	}
	if inRun {
		keep(aroundChange(sc, tods, loc, from, nil))
	}
	if shortest == 0 {
		return neverInterval
	}
	return shortest
}

// changeDays are the local dates in the window on which loc's offset
// changes (both dates when the change is at midnight); none for UTC or
// a fixed zone.
func changeDays(loc *time.Location, end time.Time) map[int]bool {
	days := map[int]bool{}
	for t := windowStart; t.Before(end); {
		_, next := t.In(loc).ZoneBounds()
		if next.IsZero() || !next.Before(end) {
			break
		}
		if !next.After(t) {
			// Go reports some years' 31 December as a bound it never
			// passes: step over it.
			t = t.Add(time.Hour)
			continue
		}
		before, after := next.Add(-time.Nanosecond).In(loc), next.In(loc)
		// Past its table, Go also bounds each year at 1 January with
		// no change of offset: not a change.
		_, offBefore := before.Zone()
		if _, offAfter := after.Zone(); offAfter != offBefore {
			for _, at := range []time.Time{before, after} {
				days[at.Year()*10000+int(at.Month())*100+at.Day()] = true
			}
		}
		t = next
	}
	return days
}

// aroundChange is the shortest gap among robfig/cron's ticks from the
// last tick of firing day from (the window's start when nil) to the
// first tick of firing day to (the window's end when nil), days with no
// change of offset. Stretches of a day where the offset stays the same
// are crossed in one step: there the ticks are the times of day.
func aroundChange(sc *cron.SpecSchedule, tods []int, loc *time.Location, from, to *civil) time.Duration {
	at := func(c *civil, tod int) time.Time {
		// A day with no change of offset: midnight plus the time of day.
		return time.Date(c.y, time.Month(c.m), c.d, 0, 0, 0, 0, loc).Add(time.Duration(tod) * time.Second)
	}
	var t, stop time.Time
	if from != nil {
		t = at(from, tods[len(tods)-1])
	} else {
		t = sc.Next(windowStart.Add(-time.Second))
	}
	if to != nil {
		stop = at(to, tods[0])
	} else {
		stop = windowStart.AddDate(windowYears, 0, 0)
	}
	var shortest time.Duration
	keep := func(d time.Duration) {
		if d > 0 && (shortest == 0 || d < shortest) {
			shortest = d
		}
	}
	for !t.IsZero() && t.Before(stop) {
		wall := t.In(loc)
		tod := wall.Hour()*3600 + wall.Minute()*60 + wall.Second()
		if i := sort.SearchInts(tods, tod); i < len(tods) && tods[i] == tod {
			// The day's later times that come before the next change.
			_, change := wall.ZoneBounds()
			j := i
			for j+1 < len(tods) && (change.IsZero() || t.Add(time.Duration(tods[j+1]-tod)*time.Second).Before(change)) {
				j++
				keep(time.Duration(tods[j]-tods[j-1]) * time.Second)
			}
			t = t.Add(time.Duration(tods[j]-tod) * time.Second)
		}
		next := sc.Next(t)
		if next.IsZero() {
			break
		}
		keep(next.Sub(t))
		t = next
	}
	return shortest
}

// civil is a local date, n days after windowStart.
type civil struct{ y, m, d, n int }

// timesOfDay lists the seconds after midnight at which the spec fires
// on a firing day, in order.
func timesOfDay(sc *cron.SpecSchedule) []int {
	var tods []int
	for h := 0; h < 24; h++ {
		if sc.Hour&(1<<uint(h)) == 0 {
			continue
		}
		for m := 0; m < 60; m++ {
			if sc.Minute&(1<<uint(m)) == 0 {
				continue
			}
			for s := 0; s < 60; s++ {
				if sc.Second&(1<<uint(s)) != 0 {
					tods = append(tods, h*3600+m*60+s)
				}
			}
		}
	}
	return tods
}

// minGapWithin is the shortest gap between consecutive times of day,
// zero when there is one.
func minGapWithin(tods []int) time.Duration {
	gap := 0
	for i := 1; i < len(tods); i++ {
		if d := tods[i] - tods[i-1]; gap == 0 || d < gap {
			gap = d
		}
	}
	return time.Duration(gap) * time.Second
}

// dayMatches is robfig/cron's rule for the day: with either field a
// star, both must match; otherwise either.
func dayMatches(sc *cron.SpecSchedule, dom, dow int) bool {
	domMatch := sc.Dom&(1<<uint(dom)) != 0
	dowMatch := sc.Dow&(1<<uint(dow)) != 0
	if sc.Dom&cronStar != 0 || sc.Dow&cronStar != 0 {
		return domMatch && dowMatch
	}
	return domMatch || dowMatch
}

// cronStar is robfig/cron's mark of a field written as "*" or "?".
const cronStar = 1 << 63

func daysIn(y, m int) int {
	switch m {
	case 2:
		if y%4 == 0 && (y%100 != 0 || y%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
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
