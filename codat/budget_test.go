package codat_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/codat"
	"github.com/codat-rotator/codat-rotator/codat/emulator"
)

// fakeClock is a clock whose Sleep moves it on at once and records the
// wait.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	slept []time.Duration
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.slept = append(c.slept, d)
	return nil
}

// total is the time slept since the last call.
func (c *fakeClock) total() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	var sum time.Duration
	for _, d := range c.slept {
		sum += d
	}
	c.slept = nil
	return sum
}

// maxInMinute is the most send times in any 60 s.
func maxInMinute(sent []time.Time) int {
	most, j := 0, 0
	for i, t := range sent {
		for t.Sub(sent[j]) >= time.Minute {
			j++
		}
		most = max(most, i-j+1)
	}
	return most
}

func TestBudgetNeverExceedsAMinute(t *testing.T) {
	for _, perMinute := range []int{1, 60, 900, 5000} {
		clk := newFakeClock()
		b := codat.NewBudget(perMinute, codat.BudgetOptions{Now: clk.Now, Sleep: clk.Sleep})
		var sent []time.Time
		n := 3*perMinute + 7
		for range n {
			if _, err := b.Wait(context.Background()); err != nil {
				t.Fatal(err)
			}
			sent = append(sent, clk.Now())
		}
		// Seen up to a second late at Codat, a minute there is 59 s here.
		if got := maxInMinute(sent); got > perMinute {
			t.Errorf("%d a minute: %d requests in one minute", perMinute, got)
		}
		shifted := make([]time.Time, len(sent))
		for i, s := range sent {
			shifted[i] = s.Add(time.Duration(i%2) * time.Second) // every other one a second late
		}
		if got := maxInMinute(shifted); got > perMinute {
			t.Errorf("%d a minute, every other request a second late: %d in one minute", perMinute, got)
		}
		// And it paces at the budget, not below: within 5% of n/perMinute.
		took := sent[len(sent)-1].Sub(sent[0])
		ideal := time.Duration(float64(n-1) / float64(perMinute) * float64(time.Minute))
		if took < ideal*9/10 || took > ideal*105/100 {
			t.Errorf("%d a minute: %d requests took %v, want about %v", perMinute, n, took, ideal)
		}
	}
}

func TestBudgetNarrow(t *testing.T) {
	clk := newFakeClock()
	b := codat.NewBudget(600, codat.BudgetOptions{Now: clk.Now, Sleep: clk.Sleep, NarrowFor: time.Minute})
	if _, err := b.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	b.Narrow(5 * time.Second)
	if st := b.State(); st.Effective != 0 || st.Narrows != 1 || st.PerMinute != 600 {
		t.Errorf("state while paused: %+v", st)
	}
	waited, err := b.Wait(context.Background())
	if err != nil || waited < 5*time.Second {
		t.Errorf("after Narrow(5s): waited %v, %v; want at least 5s", waited, err)
	}
	if st := b.State(); st.Effective != 300 {
		t.Errorf("after the pause: effective %d, want half of 600", st.Effective)
	}
	// Half the rate while narrowed.
	start := clk.Now()
	for range 100 {
		if _, err := b.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if took := clk.Now().Sub(start); took < 19*time.Second {
		t.Errorf("100 requests narrowed to 300 a minute took %v, want about 20s", took)
	}
}

// fleetEnv is a Fleet of two Codat clients over real HTTP, and a client
// for each, sharing one budget on a fake clock.
type fleetEnv struct {
	fleet   *emulator.Fleet
	budget  *codat.Budget
	clock   *fakeClock
	clients [2]*codat.Client
}

func newFleetEnv(t *testing.T, perMinute int) *fleetEnv {
	t.Helper()
	fl, err := emulator.NewFleet(2, emulator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(fl)
	t.Cleanup(func() {
		fl.Close()
		srv.Close()
	})
	e := &fleetEnv{fleet: fl, clock: newFakeClock()}
	e.budget = codat.NewBudget(perMinute, codat.BudgetOptions{Now: e.clock.Now, Sleep: e.clock.Sleep})
	for i := range e.clients {
		var retries fakeClock // the client's own waits: not the budget's
		c, err := codat.New(codat.Secret(fl.Client(i).InitialKey()), codat.Options{
			BaseURL: emulator.BaseURL(srv.URL, i), Budget: e.budget, MaxAttempts: 1, Sleep: retries.Sleep,
		})
		if err != nil {
			t.Fatal(err)
		}
		e.clients[i] = c
	}
	return e
}

func TestBudgetSharedByClients(t *testing.T) {
	e := newFleetEnv(t, 60) // one request a second, a burst of one
	ctx := context.Background()
	if _, err := e.clients[0].List(ctx); err != nil {
		t.Fatal(err)
	}
	e.clock.total()
	// The other client's next request waits its turn in the same budget.
	if _, err := e.clients[1].List(ctx); err != nil {
		t.Fatal(err)
	}
	if waited := e.clock.total(); waited < 900*time.Millisecond {
		t.Errorf("second client right after the first: waited %v for the shared budget, want about 1s", waited)
	}
	if got := e.fleet.Rate().Requests; got != 2 {
		t.Errorf("fleet counted %d requests, want 2", got)
	}
}

func TestIPLimitSlowsEveryClient(t *testing.T) {
	e := newFleetEnv(t, 6000)
	ctx := context.Background()
	if err := e.fleet.SetLimit(emulator.FleetLimit{Next: 1, RetryAfter: emulator.Duration(20 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	_, err := e.clients[0].List(ctx)
	var apiErr *codat.APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 429 || apiErr.ClientQuota {
		t.Fatalf("first client: got %v, want an IP-limit 429 (quota not spent)", err)
	}
	if st := e.budget.State(); st.Effective != 0 || st.Narrows != 1 {
		t.Errorf("budget after an IP-limit 429: %+v, want paused", st)
	}
	e.clock.total()
	// The other client, whose own quota is untouched, waits it out too.
	if _, err := e.clients[1].List(ctx); err != nil {
		t.Fatal(err)
	}
	if waited := e.clock.total(); waited < 20*time.Second {
		t.Errorf("second client after the first's IP-limit 429: waited %v, want the 20s Retry-After", waited)
	}
	if got := e.fleet.Rate().IPLimited; got != 1 {
		t.Errorf("fleet answered %d IP-limit 429s, want 1", got)
	}
}

func TestClientQuotaSlowsOnlyItsClient(t *testing.T) {
	e := newFleetEnv(t, 6000)
	ctx := context.Background()
	var f emulator.Faults
	f.List.QuotaRateLimit = 1
	f.List.RetryAfter = emulator.Duration(20 * time.Second)
	if err := e.fleet.Client(0).SetFaults(f); err != nil {
		t.Fatal(err)
	}
	_, err := e.clients[0].List(ctx)
	var apiErr *codat.APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 429 || !apiErr.ClientQuota {
		t.Fatalf("first client: got %v, want a 429 of its own quota", err)
	}
	if st := e.budget.State(); st.Effective != 6000 || st.Narrows != 0 {
		t.Errorf("budget after a client-quota 429: %+v, want untouched", st)
	}
	e.clock.total()
	if _, err := e.clients[1].List(ctx); err != nil {
		t.Fatal(err)
	}
	if waited := e.clock.total(); waited >= time.Second {
		t.Errorf("second client after the first's quota 429: waited %v, want no wait", waited)
	}
}

// A create cut short while it waits for the budget was never written:
// no POST at Codat, and not "outcome unknown".
func TestCreateCancelledInBudgetWaitSendsNothing(t *testing.T) {
	e := newFleetEnv(t, 60)
	if _, err := e.clients[0].List(context.Background()); err != nil { // the burst is spent
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := e.clients[0].Create(ctx, "never-sent")
	if err == nil || errors.Is(err, codat.ErrOutcomeUnknown) {
		t.Fatalf("create cancelled in the budget's wait: got %v, want an error that is not outcome unknown", err)
	}
	for _, ev := range e.fleet.Client(0).Events(0) {
		if ev.Op == emulator.OpCreate {
			t.Errorf("a create reached Codat: %+v", ev)
		}
	}
}

// With the budget lifted (0), an IP-limit 429 is waited out by the
// client itself, as without a budget.
func TestIPLimitWithoutBudgetWaitsInTheClient(t *testing.T) {
	fl, err := emulator.NewFleet(1, emulator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(fl)
	defer srv.Close()
	defer fl.Close()
	if err := fl.SetLimit(emulator.FleetLimit{Next: 1, RetryAfter: emulator.Duration(7 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	var own fakeClock
	c, err := codat.New(codat.Secret(fl.Client(0).InitialKey()), codat.Options{
		BaseURL: emulator.BaseURL(srv.URL, 0), Budget: codat.NewBudget(0, codat.BudgetOptions{}), Sleep: own.Sleep,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.List(context.Background()); err != nil {
		t.Fatal(err)
	}
	if waited := own.total(); waited != 7*time.Second {
		t.Errorf("the client waited %v after an IP-limit 429 with no budget, want its Retry-After of 7s", waited)
	}
}
