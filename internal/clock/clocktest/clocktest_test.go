package clocktest_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/internal/clock/clocktest"
)

func TestSleeperRecords(t *testing.T) {
	var s clocktest.Sleeper
	start := time.Now()
	for _, d := range []time.Duration{time.Hour, time.Minute} {
		if err := s.Sleep(context.Background(), d); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Sleep(ctx, time.Second); !errors.Is(err, context.Canceled) {
		t.Errorf("after cancel: got %v, want context.Canceled", err)
	}
	if got, want := fmt.Sprint(s.Durations()), "[1h0m0s 1m0s 1s]"; got != want {
		t.Errorf("durations: got %s, want %s", got, want)
	}
	if time.Since(start) > 10*time.Second {
		t.Error("the fake slept for real")
	}
}
