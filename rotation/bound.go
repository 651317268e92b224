package rotation

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"
)

// The bound on concurrent work (docs/design.md#concurrency). Rotations
// are network-bound, so targets rotate side by side; but a thousand
// targets due on one tick must not open a thousand rotations against
// Vault and the state file at once. Every rotation and retire pass, from
// the scheduler or from a manual `rotate` in the same process, takes a
// slot of the engine's one bound after it holds its target and gives it
// back when it ends. A target waiting for a slot is neither dropped nor
// failed: it waits its turn, first come first served, and says so in
// status and metrics.

// DefaultMaxConcurrent is the bound when Engine.MaxConcurrent is unset.
// docs/configuration.md (max_concurrent_rotations) says why.
const DefaultMaxConcurrent = 16

// ErrCancelledWaiting: the caller gave up (shutdown, a client that hung
// up) while the target waited for a slot; nothing was tried.
var ErrCancelledWaiting = errors.New("cancelled while waiting for a rotation slot")

// bound is a FIFO counting semaphore whose limit may change.
type bound struct {
	mu      sync.Mutex
	limit   int
	running int
	waiters []*waiter
}

type waiter struct {
	target string
	since  time.Time
	grant  chan struct{} // closed when the slot is this waiter's
}

// acquire waits for a slot, in arrival order, until ctx ends.
func (b *bound) acquire(ctx context.Context, target string, now time.Time, limit int) (release func(), err error) {
	b.mu.Lock()
	if b.limit == 0 {
		b.limit = limit
	}
	if b.running < b.limit && len(b.waiters) == 0 {
		b.running++
		b.mu.Unlock()
		return b.releaseOnce(), nil
	}
	w := &waiter{target: target, since: now, grant: make(chan struct{})}
	b.waiters = append(b.waiters, w)
	b.mu.Unlock()
	select {
	case <-w.grant:
		return b.releaseOnce(), nil
	case <-ctx.Done():
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-w.grant:
		// Granted as ctx ended: hand the slot on.
		b.running--
		b.grant()
	default:
		for i, o := range b.waiters {
			if o == w {
				b.waiters = append(b.waiters[:i], b.waiters[i+1:]...)
				break
			}
		}
	}
	return nil, errors.Join(ErrCancelledWaiting, ctx.Err())
}

func (b *bound) releaseOnce() func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			b.mu.Lock()
			b.running--
			b.grant()
			b.mu.Unlock()
		})
	}
}

// grant gives free slots to the longest waiters. The caller holds mu.
func (b *bound) grant() {
	for b.running < b.limit && len(b.waiters) > 0 {
		w := b.waiters[0]
		b.waiters = b.waiters[1:]
		b.running++
		close(w.grant)
	}
}

// setLimit changes the bound; rotations running over a lowered bound
// finish, and no new one starts until they are under it.
func (b *bound) setLimit(n int) {
	b.mu.Lock()
	b.limit = n
	b.grant()
	b.mu.Unlock()
}

// Concurrency is a look at the bound: rotations running, targets
// waiting for a slot, and the bound.
type Concurrency struct {
	Running, Waiting, Limit int
	// WaitingSince is when each waiting target began to wait.
	WaitingSince map[string]time.Time
}

// WaitingTargets returns the waiting targets, longest waiting first.
func (c Concurrency) WaitingTargets() []string {
	out := make([]string, 0, len(c.WaitingSince))
	for t := range c.WaitingSince {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := c.WaitingSince[out[i]], c.WaitingSince[out[j]]
		return a.Before(b) || a.Equal(b) && out[i] < out[j]
	})
	return out
}

func (b *bound) look(limit int) Concurrency {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.limit == 0 {
		b.limit = limit
	}
	c := Concurrency{Running: b.running, Waiting: len(b.waiters), Limit: b.limit, WaitingSince: make(map[string]time.Time, len(b.waiters))}
	for _, w := range b.waiters {
		c.WaitingSince[w.target] = w.since
	}
	return c
}

// maxConcurrent is the engine's bound.
func (e *Engine) maxConcurrent() int {
	return orDefault(e.MaxConcurrent, DefaultMaxConcurrent)
}

// holdSlot waits for a slot of the engine's bound for target.
func (e *Engine) holdSlot(ctx context.Context, target string) (release func(), err error) {
	return e.bound.acquire(ctx, target, e.now(), e.maxConcurrent())
}

// SetMaxConcurrent changes the bound of a running engine (a reload, or
// a command's --parallel); 0 restores the default.
func (e *Engine) SetMaxConcurrent(n int) {
	e.bound.setLimit(orDefault(n, DefaultMaxConcurrent))
}

// Concurrency reports the rotations running and waiting under the
// engine's bound.
func (e *Engine) Concurrency() Concurrency { return e.bound.look(e.maxConcurrent()) }
