package rotation_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/codat"
	"github.com/codat-rotator/codat-rotator/codat/emulator"
	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/store"
)

// addRoutedTargets adds n targets, each with its own emulator (its own
// Codat client), all served by one HTTP server under /t/<name>/ and
// reached through one HTTP client, so a thousand targets cost one
// listener and a few connections.
func (e *schedEnv) addRoutedTargets(n int) []string {
	e.t.Helper()
	emus := map[string]*emulator.Server{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest, _ := strings.CutPrefix(r.URL.Path, "/t/")
		name, tail, _ := strings.Cut(rest, "/")
		e.mu.Lock()
		emu := emus[name]
		e.mu.Unlock()
		if emu == nil {
			http.NotFound(w, r)
			return
		}
		r2 := r.Clone(r.Context())
		r2.URL.Path = "/" + tail
		emu.ServeHTTP(w, r2)
	}))
	e.t.Cleanup(srv.Close)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	names := make([]string, n)
	for i := range n {
		name := fmt.Sprintf("t%04d", i)
		names[i] = name
		emu, err := emulator.New(emulator.Options{Now: e.clock.Now})
		if err != nil {
			e.t.Fatalf("emulator.New: %v", err)
		}
		e.t.Cleanup(emu.Close)
		c, err := codat.New(codat.Secret(emu.InitialKey()), codat.Options{BaseURL: srv.URL + "/t/" + name, HTTPClient: hc,
			MaxAttempts: 1, RequestTimeout: waitLong, Now: e.clock.Now, Sleep: func(ctx context.Context, _ time.Duration) error { return ctx.Err() }})
		if err != nil {
			e.t.Fatalf("codat.New: %v", err)
		}
		t := rotation.Target{
			Name: name, Vault: rotation.Location{Mount: "secret", Path: "codat/" + name}, Prefix: prefix,
			MaxKeys: 10, ReserveSlots: 1, Grace: 30 * time.Minute,
			Bootstrap: func() (codat.Secret, error) { return codat.Secret(emu.InitialKey()), nil },
		}
		e.mu.Lock()
		emus[name], e.emus[name], e.clients[name], e.targets[name] = emu, emu, c, t
		e.mu.Unlock()
	}
	return names
}

// peakTotal is the most Codat calls in flight at once, over all targets.
func (g *gate) peakTotal() (now, peak int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, n := range g.inFlight {
		now += n
	}
	return now, g.peak["*total"]
}

// TestSchedulerBoundsATickOfAThousand: 1,000 targets due on one tick
// never run more than the engine's bound at once; those waiting show as
// waiting, and every one of them rotates in the end: none dropped, none
// failed.
func TestSchedulerBoundsATickOfAThousand(t *testing.T) {
	const n, limit = 1000, 20
	e := newSchedEnv(t)
	e.engine.MaxConcurrent = limit
	names := e.addRoutedTargets(n)
	// Every target rotated just now: no catch-up at start, all due on the
	// next tick.
	var schedules []rotation.Schedule
	for _, name := range names {
		e.update(name, func(st *store.Target) { st.LastSuccess = epoch })
		schedules = append(schedules, e.schedule(name, "0 4 * * *"))
	}
	s := e.newScheduler()
	e.start(s, schedules...)
	e.clock.waitParked(t, n)

	// Hold every create: rotations pile up at the create step, and the
	// rest must wait for a slot.
	release := e.gate.hold("create")
	e.clock.Advance(time.Hour) // 04:00, the tick of all 1,000
	for range limit {
		e.gate.waitEntered(t, "create")
	}
	deadline := time.Now().Add(waitLong)
	for {
		c := e.engine.Concurrency()
		if c.Running == limit && c.Waiting == n-limit {
			if len(c.WaitingSince) != n-limit {
				t.Errorf("waiting targets: got %d, want %d", len(c.WaitingSince), n-limit)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("concurrency: got %+v, want %d running and %d waiting", c, limit, n-limit)
		}
		time.Sleep(time.Millisecond)
	}
	// Nothing more gets past the bound while the slots stay taken.
	time.Sleep(50 * time.Millisecond)
	if now, _ := e.gate.peakTotal(); now != limit {
		t.Errorf("codat calls in flight with every slot held at create: got %d, want %d", now, limit)
	}
	// A target that waits has not failed.
	waiting := e.engine.Concurrency().WaitingTargets()
	if st := e.state(waiting[0]); st.LastResult != "" || st.ConsecutiveFailures != 0 {
		t.Errorf("%s waits for a slot, but its state says %q (%d failures)", waiting[0], st.LastResult, st.ConsecutiveFailures)
	}
	release()

	for _, name := range names {
		e.rec.waitRotationsWithin(t, name, 1, 6*waitLong) // a liveness bound, not a speed target
	}
	failed := 0
	for _, c := range e.rec.rotations {
		if c.err != nil {
			failed++
			if failed < 5 {
				t.Errorf("%s: %v", c.target, c.err)
			}
		}
	}
	if failed > 0 || len(e.rec.rotations) != n {
		t.Errorf("rotations reported: %d, failed: %d; want %d and 0", len(e.rec.rotations), failed, n)
	}
	if _, peak := e.gate.peakTotal(); peak > limit {
		t.Errorf("codat calls in flight at once: peak %d, over the bound of %d", peak, limit)
	}
	for _, name := range names {
		if st := e.state(name); st.LastResult != "success" {
			t.Errorf("%s: last result %q", name, st.LastResult)
		}
	}
	if c := e.engine.Concurrency(); c.Running != 0 || c.Waiting != 0 {
		t.Errorf("after the tick: %+v", c)
	}
	e.noErrBusy()
}

// TestBoundWaitIsNotAFailure: a rotation that gives up while it waits
// for a slot (a shutdown) tried nothing and records nothing; the scheduler
// reports no rotation for it.
func TestBoundWaitIsNotAFailure(t *testing.T) {
	e := newSchedEnv(t, "a", "b")
	e.engine.MaxConcurrent = 1
	release := e.gate.hold("create")
	done := make(chan error, 1)
	go func() {
		_, err := e.engine.Rotate(context.Background(), e.target("a"), rotation.Options{})
		done <- err
	}()
	e.gate.waitEntered(t, "create")
	ctx, cancel := context.WithCancel(context.Background())
	waited := make(chan error, 1)
	go func() {
		_, err := e.engine.Rotate(ctx, e.target("b"), rotation.Options{})
		waited <- err
	}()
	for e.engine.Concurrency().Waiting != 1 {
		time.Sleep(time.Millisecond)
	}
	if got := e.engine.Concurrency().WaitingTargets(); len(got) != 1 || got[0] != "b" {
		t.Errorf("waiting: got %v, want [b]", got)
	}
	cancel()
	err := <-waited
	if !errors.Is(err, rotation.ErrCancelledWaiting) {
		t.Errorf("cancelled while waiting: got %v, want ErrCancelledWaiting", err)
	}
	if rotation.Retryable(err) {
		t.Errorf("a cancelled wait is retryable: %v", err)
	}
	st := e.state("b")
	if st.LastResult != "" || st.ConsecutiveFailures != 0 || st.Halted || len(e.emu("b").Events(0)) != 0 {
		t.Errorf("b waited and gave up, but something was tried or recorded: %+v, %d codat requests", st, len(e.emu("b").Events(0)))
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The slot is free again: b rotates now.
	e.rotate("b")
	if c := e.engine.Concurrency(); c.Running != 0 || c.Waiting != 0 || c.Limit != 1 {
		t.Errorf("after: %+v", c)
	}
}

// TestBoundFIFO: slots go to the targets in the order they began to
// wait, and a lowered bound lets no new rotation start until the
// running ones are under it.
func TestBoundFIFO(t *testing.T) {
	names := []string{"a", "b", "c", "d"}
	e := newSchedEnv(t, names...)
	e.engine.MaxConcurrent = 1
	var mu sync.Mutex
	var order []string
	release := e.gate.holdFor("a", "create")
	var wg sync.WaitGroup
	wg.Go(func() {
		if _, err := e.engine.Rotate(context.Background(), e.target("a"), rotation.Options{}); err != nil {
			t.Error(err)
		}
	})
	e.gate.waitEntered(t, "create")
	for i, name := range names[1:] {
		wg.Go(func() {
			if _, err := e.engine.Rotate(context.Background(), e.target(name), rotation.Options{}); err != nil {
				t.Error(err)
			}
			mu.Lock()
			order = append(order, name)
			mu.Unlock()
		})
		for e.engine.Concurrency().Waiting != i+1 {
			time.Sleep(time.Millisecond)
		}
	}
	release()
	wg.Wait()
	if got := strings.Join(order, ","); got != "b,c,d" {
		t.Errorf("order: got %s, want b,c,d", got)
	}
}
