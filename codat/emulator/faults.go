package emulator

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"
)

// Operation names, as used in Faults and in the event log.
const (
	OpList   = "list"
	OpCreate = "create"
	OpDelete = "delete"
)

// Duration is a time.Duration that reads and writes JSON as "1.5s".
type Duration time.Duration

// MarshalJSON writes the duration in Go's notation.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON accepts "250ms" or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		*d = Duration(v)
		return nil
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("duration: want a string such as \"250ms\", got %s", b)
	}
	*d = Duration(n)
	return nil
}

// Faults are what the emulator does wrong, per operation. Counters
// (Fail, RateLimit, Hang, LoseResponse) apply to the next N requests of
// the operation and count down; rates apply to every request at random.
type Faults struct {
	List   OpFaults `json:"list"`
	Create OpFaults `json:"create"`
	Delete OpFaults `json:"delete"`
}

// OpFaults are the faults of one operation, applied in this order:
// latency, 429, hang, 5xx before the side effect, then the operation and
// a lost response after it.
type OpFaults struct {
	// Latency is added to every request.
	Latency Duration `json:"latency,omitempty"`
	// RateLimit answers the next N requests with 429 and Retry-After,
	// the client's quota not spent (X-Rate-Limit-Remaining above 0): a
	// client takes it for the IP's limit.
	RateLimit int `json:"rate_limit,omitempty"`
	// QuotaRateLimit answers the next N requests with 429 and
	// Retry-After as if the client's daily quota were spent
	// (X-Rate-Limit-Remaining: 0).
	QuotaRateLimit int `json:"quota_rate_limit,omitempty"`
	// RetryAfter is the delay a 429 announces (default 1s).
	RetryAfter Duration `json:"retry_after,omitempty"`
	// RetryAfterDate sends Retry-After as an HTTP date instead of seconds.
	RetryAfterDate bool `json:"retry_after_date,omitempty"`
	// Hang holds the next N requests open, unanswered, until the client
	// gives up; HangRate does so at random.
	Hang     int     `json:"hang,omitempty"`
	HangRate float64 `json:"hang_rate,omitempty"`
	// Fail answers the next N requests with FailStatus (default 500)
	// before any side effect; FailRate answers 500 or 503 at random.
	Fail       int     `json:"fail,omitempty"`
	FailStatus int     `json:"fail_status,omitempty"`
	FailRate   float64 `json:"fail_rate,omitempty"`
	// LoseResponse performs the next N requests, then drops the
	// connection without answering; LoseRate does so at random.
	LoseResponse int     `json:"lose_response,omitempty"`
	LoseRate     float64 `json:"lose_rate,omitempty"`
}

// Validate reports settings that make no sense.
func (f Faults) Validate() error {
	for _, o := range []struct {
		name string
		f    OpFaults
	}{{OpList, f.List}, {OpCreate, f.Create}, {OpDelete, f.Delete}} {
		if err := o.f.validate(); err != nil {
			return fmt.Errorf("%s.%w", o.name, err)
		}
	}
	return nil
}

func (f OpFaults) validate() error {
	switch {
	case f.Latency < 0:
		return fmt.Errorf("latency: must not be negative")
	case f.RetryAfter < 0:
		return fmt.Errorf("retry_after: must not be negative")
	case f.RateLimit < 0 || f.QuotaRateLimit < 0 || f.Hang < 0 || f.Fail < 0 || f.LoseResponse < 0:
		return fmt.Errorf("rate_limit, quota_rate_limit, hang, fail, lose_response: counts must not be negative")
	case f.FailStatus != 0 && (f.FailStatus < 400 || f.FailStatus > 599):
		return fmt.Errorf("fail_status: %d is not an error status", f.FailStatus)
	}
	for name, r := range map[string]float64{"hang_rate": f.HangRate, "fail_rate": f.FailRate, "lose_rate": f.LoseRate} {
		if r < 0 || r > 1 {
			return fmt.Errorf("%s: %v is not between 0 and 1", name, r)
		}
	}
	return nil
}

// op returns the faults of the named operation.
func (f *Faults) op(name string) *OpFaults {
	switch name {
	case OpList:
		return &f.List
	case OpCreate:
		return &f.Create
	case OpDelete:
		return &f.Delete
	}
	return nil
}

// ParseFaults reads the JSON form of Faults, rejecting unknown fields so
// that a typo does not silently inject nothing.
func ParseFaults(s string) (Faults, error) {
	var f Faults
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return Faults{}, fmt.Errorf("faults: %w", err)
	}
	if err := f.Validate(); err != nil {
		return Faults{}, fmt.Errorf("faults: %w", err)
	}
	return f, nil
}

// verdict is what the fault plan decided for one request.
type verdict struct {
	latency    time.Duration
	rateLimit  bool
	quotaLimit bool
	retryAfter time.Duration
	asDate     bool
	hang       bool
	failStatus int
	lose       bool
}

// decide consumes counters and draws rates for one request of op.
func (f *OpFaults) decide(rng *rand.Rand) verdict {
	v := verdict{latency: time.Duration(f.Latency)}
	take := func(n *int, rate float64) bool {
		if *n > 0 {
			*n--
			return true
		}
		return rate > 0 && rng.Float64() < rate
	}
	// A 429 of the IP's limit first, else one of the client's quota.
	ipLimit := take(&f.RateLimit, 0)
	quota := !ipLimit && take(&f.QuotaRateLimit, 0)
	switch {
	case ipLimit || quota:
		v.rateLimit, v.quotaLimit = ipLimit, quota
		v.retryAfter = time.Duration(f.RetryAfter)
		if v.retryAfter == 0 {
			v.retryAfter = time.Second
		}
		v.asDate = f.RetryAfterDate
	case take(&f.Hang, f.HangRate):
		v.hang = true
	case f.Fail > 0:
		f.Fail--
		v.failStatus = f.FailStatus
		if v.failStatus == 0 {
			v.failStatus = http.StatusInternalServerError
		}
	case f.FailRate > 0 && rng.Float64() < f.FailRate:
		v.failStatus = http.StatusInternalServerError
		if rng.IntN(2) == 1 {
			v.failStatus = http.StatusServiceUnavailable
		}
	case take(&f.LoseResponse, f.LoseRate):
		v.lose = true
	}
	return v
}
