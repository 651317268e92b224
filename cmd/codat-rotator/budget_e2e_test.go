package main

import (
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/codat/emulator"
)

// TestBudgetSharedByTargets: a fleet rotate through the real binary, the
// default Codat budget, two targets on different Codat clients. An
// IP-limit 429 on one (its quota not spent) holds the other's requests
// back for its Retry-After; a 429 of one client's own quota does not.
func TestBudgetSharedByTargets(t *testing.T) {
	const retryAfter = 3 * time.Second
	for _, tt := range []struct {
		name      string
		faults    emulator.OpFaults
		otherHeld bool
	}{
		{"ip limit slows every client", emulator.OpFaults{RateLimit: 1, RetryAfter: emulator.Duration(retryAfter)}, true},
		{"client quota slows only its own", emulator.OpFaults{QuotaRateLimit: 1, RetryAfter: emulator.Duration(retryAfter)}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newFleetEnv(t, 3, 2) // t2 cannot rotate; t0 and t1 are the two
			if err := e.codat.emus[0].SetFaults(emulator.Faults{List: tt.faults}); err != nil {
				t.Fatal(err)
			}
			code, stdout, stderr := e.cli(t, "rotate", "--parallel", "3")
			if code != exitError { // t2 fails, as it must
				t.Fatalf("exit %d, want %d\n%s%s", code, exitError, stdout, stderr)
			}
			var limited time.Time
			for _, ev := range e.codat.emus[0].Events(0) {
				if ev.Status == 429 {
					limited = ev.Time
					break
				}
			}
			if limited.IsZero() {
				t.Fatal("t0 met no 429")
			}
			// t1's requests in the Retry-After that followed t0's 429,
			// leaving a margin for those already on their way.
			during := 0
			for _, ev := range e.codat.emus[1].Events(0) {
				if ev.Time.After(limited.Add(300*time.Millisecond)) && ev.Time.Before(limited.Add(retryAfter-300*time.Millisecond)) {
					during++
				}
			}
			if tt.otherHeld && during > 0 {
				t.Errorf("t1 sent %d requests during the Retry-After of t0's IP-limit 429; the budget should hold every client", during)
			}
			for i := range 2 {
				if got := e.codat.emus[i].ActiveKeys(); got != 2 {
					t.Errorf("t%d: %d keys at codat after a routine rotation, want 2", i, got)
				}
			}
			last := time.Time{}
			for _, ev := range e.codat.emus[1].Events(0) {
				last = ev.Time
			}
			held := !last.Before(limited.Add(retryAfter - 300*time.Millisecond))
			switch {
			case tt.otherHeld && !held:
				t.Errorf("t1's last request %v after t0's IP-limit 429: t1 finished before it, the test shows nothing", last.Sub(limited))
			case !tt.otherHeld && held:
				// t1 rotated while t0 waited out its own quota's 429.
				t.Errorf("t1's last request %v after t0's quota 429: held back by another client's quota", last.Sub(limited))
			}
		})
	}
}
