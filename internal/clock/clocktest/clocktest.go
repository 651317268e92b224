// Package clocktest has the fake sleep that tests inject in place of
// clock.Sleep, so that retry and backoff tests run at once and can check
// the waits asked for.
package clocktest

import (
	"context"
	"sync"
	"time"
)

// Sleeper records each wait and returns at once: nil, or ctx.Err() when
// the context has already ended. The zero value is ready; it is safe for
// concurrent use.
type Sleeper struct {
	mu sync.Mutex
	ds []time.Duration
}

// Sleep has the signature of clock.Sleep.
func (s *Sleeper) Sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.ds = append(s.ds, d)
	s.mu.Unlock()
	return ctx.Err()
}

// Durations returns the waits asked for so far, in order.
func (s *Sleeper) Durations() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.ds...)
}
