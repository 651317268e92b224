package emulator

import (
	"sync"
	"time"
)

// rateCounter counts the Codat requests that arrive, as Codat counts a
// caller's IP against its limit of requests a minute.
type rateCounter struct {
	mu       sync.Mutex
	arrivals []time.Time // in order of arrival
	limited  int
}

// add records a request arriving at t and returns how many arrived in
// the minute up to t, this one included.
func (r *rateCounter) add(t time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.arrivals = append(r.arrivals, t)
	return r.inMinuteTo(t)
}

// inMinuteTo counts the arrivals in (t-1m, t]; the caller holds mu.
func (r *rateCounter) inMinuteTo(t time.Time) int {
	n := 0
	for i := len(r.arrivals) - 1; i >= 0 && r.arrivals[i].After(t.Add(-time.Minute)); i-- {
		n++
	}
	return n
}

// oldestInMinuteTo is the earliest arrival in (t-1m, t]; the caller
// holds mu.
func (r *rateCounter) oldestInMinuteTo(t time.Time) time.Time {
	oldest := t
	for i := len(r.arrivals) - 1; i >= 0 && r.arrivals[i].After(t.Add(-time.Minute)); i-- {
		oldest = r.arrivals[i]
	}
	return oldest
}

// MinuteCount is the requests that arrived in one minute of the clock.
type MinuteCount struct {
	Minute   time.Time `json:"minute"`
	Requests int       `json:"requests"`
}

// RateReport is GET /_emulator/rate: every Codat request that arrived,
// of every client served, counted per minute as Codat counts an IP.
type RateReport struct {
	// Requests is every Codat request that arrived.
	Requests int `json:"requests"`
	// PerMinute holds each minute of the clock (UTC) in which requests
	// arrived, oldest first.
	PerMinute []MinuteCount `json:"per_minute"`
	// MaxPerMinute is the most requests in one minute of the clock;
	// MaxIn60s the most in any 60 seconds, wherever they start.
	MaxPerMinute int `json:"max_per_minute"`
	MaxIn60s     int `json:"max_in_any_60s"`
	// IPLimit is the limit a fleet answers 429 beyond (0: none), and
	// IPLimited the requests it so answered.
	IPLimit   int `json:"ip_limit,omitempty"`
	IPLimited int `json:"ip_limited"`
}

func (r *rateCounter) report() RateReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	rep := RateReport{Requests: len(r.arrivals), PerMinute: []MinuteCount{}, IPLimited: r.limited}
	j := 0 // the first arrival of the 60 s that end at the i-th
	for i, t := range r.arrivals {
		m := t.Truncate(time.Minute)
		if n := len(rep.PerMinute); n > 0 && rep.PerMinute[n-1].Minute.Equal(m) {
			rep.PerMinute[n-1].Requests++
		} else {
			rep.PerMinute = append(rep.PerMinute, MinuteCount{Minute: m, Requests: 1})
		}
		rep.MaxPerMinute = max(rep.MaxPerMinute, rep.PerMinute[len(rep.PerMinute)-1].Requests)
		for t.Sub(r.arrivals[j]) >= time.Minute {
			j++
		}
		rep.MaxIn60s = max(rep.MaxIn60s, i-j+1)
	}
	return rep
}
