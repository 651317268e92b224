package codat

import (
	"context"
	"sync"
	"time"

	"github.com/codat-rotator/codat-rotator/internal/clock"
)

// Budget is the Codat requests one process may send: every client that
// shares it, every kind of request, retries included
// (docs/design.md#codat-budget). Codat allows 1,000 requests a minute
// per IP and may block the IP beyond that; a fleet's clients each have
// their own quota, but share the IP.
//
// It lets a few requests go at once (the burst) and paces the rest
// evenly, so that no window of a minute, even one seen a second late
// at Codat, holds more than PerMinute. A request waits for the budget
// before it is written: a wait never sends anything, so it never
// repeats a create nor leaves its outcome unknown.
//
// A 429 that the client's own quota does not explain is taken as the
// IP's limit: Narrow holds every request back until its Retry-After has
// passed, then paces at half the rate for NarrowFor.
type Budget struct {
	perMinute int
	burst     int
	interval  time.Duration // between two requests at the full rate
	narrowFor time.Duration
	now       func() time.Time
	sleep     func(ctx context.Context, d time.Duration) error
	onWait    func(time.Duration)

	mu       sync.Mutex
	tat      time.Time // when the next request conforms, less the burst's tolerance
	paused   time.Time // no request before
	narrowed time.Time // half rate until
	waiting  int
	narrows  uint64
}

// BudgetOptions tune a Budget; the zero value of each has a default.
type BudgetOptions struct {
	// NarrowFor is how long the rate stays halved after an IP-limit 429's
	// Retry-After has passed (default 5m).
	NarrowFor time.Duration
	// OnWait, when set, is told how long each request waited (zero for
	// most).
	OnWait func(time.Duration)
	// Now and Sleep are the clock; tests replace them.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
}

// budgetWindow is the minute a budget counts over, plus a second for
// requests that reach Codat later than others: what the budget lets go
// in budgetWindow never exceeds PerMinute in any minute Codat sees.
const budgetWindow = 61 * time.Second

// NewBudget returns a budget of perMinute requests a minute; with 0
// (as with a nil *Budget) every request goes at once.
func NewBudget(perMinute int, opts BudgetOptions) *Budget {
	if opts.NarrowFor <= 0 {
		opts.NarrowFor = 5 * time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Sleep == nil {
		opts.Sleep = clock.Sleep
	}
	b := &Budget{narrowFor: opts.NarrowFor, now: opts.Now, sleep: opts.Sleep, onWait: opts.OnWait}
	b.set(perMinute)
	return b
}

// SetPerMinute changes the budget (a reload); 0 lifts it.
func (b *Budget) SetPerMinute(perMinute int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.set(perMinute)
}

// set applies perMinute; the caller holds mu, or is NewBudget.
func (b *Budget) set(perMinute int) {
	b.perMinute = max(perMinute, 0)
	if b.perMinute == 0 {
		return
	}
	// 1% at once (at least one request), the rest paced.
	b.burst = max(1, b.perMinute/100)
	b.interval = budgetWindow / time.Duration(max(1, b.perMinute-b.burst))
}

// Wait returns once one request may be sent, or with ctx's error, in
// which case the request must not be sent. It reports how long it
// waited.
func (b *Budget) Wait(ctx context.Context) (time.Duration, error) {
	if b == nil {
		return 0, nil
	}
	start := b.now()
	b.mu.Lock()
	off := b.perMinute == 0
	b.mu.Unlock()
	if off {
		return 0, nil
	}
	b.mu.Lock()
	b.waiting++
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		b.waiting--
		b.mu.Unlock()
	}()
	for {
		b.mu.Lock()
		now := b.now()
		at := b.reserve(now)
		b.mu.Unlock()
		if !at.After(now) {
			waited := now.Sub(start)
			if b.onWait != nil {
				b.onWait(waited)
			}
			return waited, nil
		}
		if err := b.sleep(ctx, at.Sub(now)); err != nil {
			return b.now().Sub(start), err
		}
		// A Narrow while this request slept moves its turn: look again.
		b.mu.Lock()
		paused := b.paused
		b.mu.Unlock()
		if !paused.After(at) {
			if b.onWait != nil {
				b.onWait(b.now().Sub(start))
			}
			return b.now().Sub(start), nil
		}
	}
}

// reserve books the earliest turn at or after now and returns it. The
// caller holds mu. Pacing is a generic cell rate: a request conforms
// when tat, less the burst's tolerance, has passed; each one moves tat
// one interval on.
func (b *Budget) reserve(now time.Time) time.Time {
	if b.perMinute == 0 {
		return now // lifted by a reload while this request waited
	}
	interval := b.interval
	if now.Before(b.narrowed) {
		interval *= 2
	}
	tolerance := time.Duration(b.burst-1) * b.interval
	at := now
	if t := b.tat.Add(-tolerance); t.After(at) {
		at = t
	}
	if b.paused.After(at) {
		at = b.paused
	}
	tat := b.tat
	if at.After(tat) {
		tat = at
	}
	b.tat = tat.Add(interval)
	return at
}

// Narrow is an IP-limit 429: no request from any client sharing the
// budget before retryAfter has passed (a minute when Codat gave none),
// then half the rate for NarrowFor.
func (b *Budget) Narrow(retryAfter time.Duration) {
	if b == nil || b.PerMinute() == 0 {
		return
	}
	if retryAfter <= 0 {
		retryAfter = time.Minute
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	until := b.now().Add(retryAfter)
	if until.After(b.paused) {
		b.paused = until
	}
	if t := b.paused.Add(b.narrowFor); t.After(b.narrowed) {
		b.narrowed = t
	}
	b.narrows++
}

// BudgetState is what a Budget reports to metrics.
type BudgetState struct {
	// PerMinute is the budget; zero when there is none.
	PerMinute int
	// Effective is the rate allowed now: PerMinute, half of it while
	// narrowed, zero while paused.
	Effective int
	// Waiting is how many requests wait for their turn.
	Waiting int
	// Narrows counts the IP-limit 429s that narrowed the budget.
	Narrows uint64
}

// State returns the budget's state; the zero state for no budget.
func (b *Budget) State() BudgetState {
	if b == nil || b.PerMinute() == 0 {
		return BudgetState{}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	st := BudgetState{PerMinute: b.perMinute, Effective: b.perMinute, Waiting: b.waiting, Narrows: b.narrows}
	switch {
	case now.Before(b.paused):
		st.Effective = 0
	case now.Before(b.narrowed):
		st.Effective = b.perMinute / 2
	}
	return st
}

// PerMinute is the budget's requests a minute, zero for no budget.
func (b *Budget) PerMinute() int {
	if b == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.perMinute
}
