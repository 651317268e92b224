package emulator

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Fleet is many Codat clients behind one address, as Codat serves every
// client from one server and counts one caller's IP across them: client
// i answers under /clients/{i}/ (its Codat paths and its own
// /_emulator/ inspection), and the fleet counts every request of every
// client per minute (GET /_emulator/rate).
//
// With an IP limit, a request beyond it in the last minute is answered
// 429 with Retry-After and the client's own X-Rate-Limit-* headers,
// whose quota is not spent: what a caller sees when Codat limits its IP.
type Fleet struct {
	clients []*Server
	now     func() time.Time
	rate    rateCounter

	mu         sync.Mutex
	ipLimit    int           // requests a minute; 0: none
	ipNext     int           // the next N requests get the IP limit's 429 anyway
	retryAfter time.Duration // of ipNext's 429s
}

// FleetLimit is GET and POST /_emulator/ip_limit: the IP limit in force.
type FleetLimit struct {
	// PerMinute answers 429 to a request beyond it in the last minute;
	// 0: no limit.
	PerMinute int `json:"per_minute"`
	// Next answers the next N requests with the IP limit's 429, whatever
	// the count; RetryAfter is their Retry-After (default 1s).
	Next       int      `json:"next,omitempty"`
	RetryAfter Duration `json:"retry_after,omitempty"`
}

// NewFleet returns n clients, each an emulator made with opts (each its
// own first key).
func NewFleet(n int, opts Options) (*Fleet, error) {
	f := &Fleet{now: opts.Now}
	if f.now == nil {
		f.now = time.Now
	}
	for i := range n {
		o := opts
		if n > 1 {
			o.InitialKey = ""
		}
		c, err := New(o)
		if err != nil {
			return nil, fmt.Errorf("client %d: %w", i, err)
		}
		f.clients = append(f.clients, c)
	}
	return f, nil
}

// Client returns the i-th client.
func (f *Fleet) Client(i int) *Server { return f.clients[i] }

// Len is the number of clients.
func (f *Fleet) Len() int { return len(f.clients) }

// BaseURL is where the i-th client answers, under the fleet's root.
func BaseURL(root string, i int) string {
	return fmt.Sprintf("%s/clients/%d", strings.TrimSuffix(root, "/"), i)
}

// SetLimit replaces the IP limit.
func (f *Fleet) SetLimit(l FleetLimit) error {
	if l.PerMinute < 0 || l.Next < 0 || l.RetryAfter < 0 {
		return fmt.Errorf("ip_limit: per_minute, next and retry_after must not be negative")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ipLimit, f.ipNext, f.retryAfter = l.PerMinute, l.Next, time.Duration(l.RetryAfter)
	return nil
}

// Limit returns the IP limit in force.
func (f *Fleet) Limit() FleetLimit {
	f.mu.Lock()
	defer f.mu.Unlock()
	return FleetLimit{PerMinute: f.ipLimit, Next: f.ipNext, RetryAfter: Duration(f.retryAfter)}
}

// Rate returns every client's Codat requests, counted per minute.
func (f *Fleet) Rate() RateReport {
	rep := f.rate.report()
	rep.IPLimit = f.Limit().PerMinute
	return rep
}

// Close closes every client.
func (f *Fleet) Close() {
	for _, c := range f.clients {
		c.Close()
	}
}

// ServeHTTP routes /clients/{i}/... to the i-th client and serves the
// fleet's own /_emulator/rate and /_emulator/ip_limit.
func (f *Fleet) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == inspectPrefix+"/rate" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, f.Rate())
		return
	case r.URL.Path == inspectPrefix+"/ip_limit" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, f.Limit())
		return
	case r.URL.Path == inspectPrefix+"/ip_limit" && r.Method == http.MethodPost:
		var l FleetLimit
		if err := decodeStrict(r.Body, &l); err != nil {
			writeJSON(w, http.StatusBadRequest, inspectError("ip_limit: "+err.Error()))
			return
		}
		if err := f.SetLimit(l); err != nil {
			writeJSON(w, http.StatusBadRequest, inspectError(err.Error()))
			return
		}
		writeJSON(w, http.StatusOK, f.Limit())
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/clients/")
	i, tail, _ := strings.Cut(rest, "/")
	n, err := strconv.Atoi(i)
	if !ok || err != nil || n < 0 || n >= len(f.clients) {
		writeJSON(w, http.StatusNotFound, inspectError("no client at "+r.URL.Path+": clients answer under /clients/0 to /clients/"+strconv.Itoa(len(f.clients)-1)))
		return
	}
	c := f.clients[n]
	r2 := new(http.Request)
	*r2 = *r
	r2.URL = new(url.URL)
	*r2.URL = *r.URL
	r2.URL.Path = "/" + tail
	if strings.HasPrefix(r2.URL.Path, inspectPrefix) {
		c.ServeHTTP(w, r2) // inspection is not Codat's: not counted
		return
	}
	if after, limited := f.admit(); limited {
		left, reset := c.quotaLeft()
		h := w.Header()
		h.Set("X-Rate-Limit-Limit", strconv.Itoa(c.opts.DailyQuota))
		h.Set("X-Rate-Limit-Remaining", strconv.Itoa(max(left, 0)))
		h.Set("X-Rate-Limit-Reset", reset.Format(time.RFC3339))
		h.Set("Retry-After", strconv.Itoa(int((after+time.Second-1)/time.Second)))
		h.Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusTooManyRequests)
		_ = json.NewEncoder(w).Encode(errorResponse(http.StatusTooManyRequests, msgIPLimited, nil).body)
		return
	}
	c.ServeHTTP(w, r2)
}

// admit counts a Codat request and says whether the IP limit refuses
// it, and for how long.
func (f *Fleet) admit() (retryAfter time.Duration, limited bool) {
	now := f.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rate.mu.Lock()
	defer f.rate.mu.Unlock()
	f.rate.arrivals = append(f.rate.arrivals, now)
	switch {
	case f.ipNext > 0:
		f.ipNext--
		retryAfter = f.retryAfter
		if retryAfter <= 0 {
			retryAfter = time.Second
		}
	case f.ipLimit > 0 && f.rate.inMinuteTo(now) > f.ipLimit:
		// Until the oldest request of the last minute leaves it.
		retryAfter = f.rate.oldestInMinuteTo(now).Add(time.Minute).Sub(now)
	default:
		return 0, false
	}
	f.rate.limited++
	return retryAfter, true
}
