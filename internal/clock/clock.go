// Package clock holds the one wait the daemon's retries and renewals use:
// a sleep that ends early when its context does. It is a leaf so that the
// adapters, the engine and the commands share it without importing one
// another.
package clock

import (
	"context"
	"time"
)

// Sleep waits for d, or until ctx ends. It returns nil after a full wait
// and ctx.Err() when ctx ended first.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
