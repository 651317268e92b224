package clock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/internal/clock"
)

func TestSleepWaits(t *testing.T) {
	start := time.Now()
	if err := clock.Sleep(context.Background(), 20*time.Millisecond); err != nil {
		t.Fatalf("got %v, want nil after a full wait", err)
	}
	if got := time.Since(start); got < 20*time.Millisecond {
		t.Errorf("returned after %s, want at least 20ms", got)
	}
}

func TestSleepEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(10*time.Millisecond, cancel)
	start := time.Now()
	if err := clock.Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if got := time.Since(start); got > 10*time.Second {
		t.Errorf("returned after %s: the cancel did not end the wait", got)
	}

	ctx, cancel = context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	if err := clock.Sleep(ctx, time.Hour); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want context.DeadlineExceeded", err)
	}
}
