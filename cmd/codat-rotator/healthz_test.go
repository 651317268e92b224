package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/metrics"
	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/store"
)

// TestHealthzWedged: /healthz, served by the daemon's handler over a
// real scheduler, answers 503 while a target's loop is stuck in its own
// code (here its Activate hook blocks), 200 once the loop moves on, and
// 503 once the scheduler stopped. (The lock held for good is
// rotation's TestSchedulerCheck: Check gives up at its deadline.)
func TestHealthzWedged(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	sched := &rotation.Scheduler{
		Engine:     &rotation.Engine{Store: db},
		StallAfter: 100 * time.Millisecond,
		// Never rotated: a catch-up, held off past the test's end.
		CatchUpDelay: func(time.Duration) time.Duration { return time.Hour },
	}
	entered, release := make(chan struct{}), make(chan struct{})
	var unwedge sync.Once
	if err := sched.Start([]rotation.Schedule{{
		Target: rotation.Target{Name: "prod"}, Spec: "@yearly",
		Activate: func() { close(entered); <-release },
	}}); err != nil {
		t.Fatal(err)
	}
	stop := func() {
		unwedge.Do(func() { close(release) })
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		sched.Stop(ctx)
	}
	t.Cleanup(stop)
	c := &runCommand{sched: sched, m: metrics.New()}
	srv := httptest.NewServer(c.observability())
	t.Cleanup(srv.Close)

	healthz := func() (int, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	// until polls /healthz, bounded, until it answers want.
	until := func(want int, what string) string {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			code, body := healthz()
			if code == want {
				return body
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: /healthz answered %d %q, want %d", what, code, body, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	<-entered
	body := until(http.StatusServiceUnavailable, "loop wedged in Activate")
	if !strings.Contains(body, "target prod") {
		t.Errorf("503 body %q: want it to name the wedged target", body)
	}
	unwedge.Do(func() { close(release) })
	until(http.StatusOK, "after the loop moved on")
	for deadline := time.Now().Add(10 * time.Second); !sched.Idle(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the loop did not park after its Activate")
		}
	}
	stop()
	if code, body := healthz(); code != http.StatusServiceUnavailable {
		t.Errorf("/healthz after Stop: got %d %q, want 503", code, body)
	}
}
