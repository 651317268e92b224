package rotation_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/codat"
	"github.com/codat-rotator/codat-rotator/codat/emulator"
	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/store"
	"github.com/codat-rotator/codat-rotator/vault"
)

// The scheduler runs on real timers (robfig/cron and time.AfterFunc), so
// these tests put the engine on the wall clock: the scheduler compares
// the engine's clock with the schedules and arms its timers from it.

const (
	// waitLong bounds every wait for something that must happen.
	waitLong = 10 * time.Second
	// noCatchUp is a catch-up delay that keeps a catch-up from running
	// while a test lasts (Stop cancels the wait).
	noCatchUp = time.Hour
)

// What the scheduler logs, as operators read it.
const (
	msgCatchUp       = "a scheduled rotation was missed; catching up"
	msgJournal       = "an interrupted rotation is in the journal; finishing it now"
	msgHaltedAtStart = "target is halted; no scheduled rotation until `codat-rotator resume`"
	msgSkipHalted    = "rotation skipped: target halted"
	msgSkipBusy      = "rotation skipped: one is already running"
	msgTickSkipped   = "scheduled tick skipped: the previous rotation is still running"
	msgShutdown      = "shutdown: cancelling the running rotation; its journal is kept for the next start"
)

// rotationCall is one OnRotation call.
type rotationCall struct {
	target string
	opts   rotation.Options
	res    rotation.Result
	err    error
	// started is when the rotation began: the call's time less its
	// duration.
	started time.Time
	at      time.Time
}

// retireCall is one OnRetire call.
type retireCall struct {
	target  string
	deleted []string
	err     error
	at      time.Time
}

// schedRecorder records what a scheduler reports through its hooks.
type schedRecorder struct {
	mu        sync.Mutex
	rotations []rotationCall
	retires   []retireCall
}

func (r *schedRecorder) onRotation(target string, opts rotation.Options, res rotation.Result, err error, took time.Duration) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rotations = append(r.rotations, rotationCall{target: target, opts: opts, res: res, err: err, started: now.Add(-took), at: now})
}

func (r *schedRecorder) onRetire(target string, deleted []string, err error) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.retires = append(r.retires, retireCall{target: target, deleted: slices.Clone(deleted), err: err, at: now})
}

// rotationsOf returns the target's rotations, in the order reported.
func (r *schedRecorder) rotationsOf(target string) []rotationCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []rotationCall
	for _, c := range r.rotations {
		if c.target == target {
			out = append(out, c)
		}
	}
	return out
}

// succeeded counts the target's successful rotations.
func (r *schedRecorder) succeeded(target string) int {
	n := 0
	for _, c := range r.rotationsOf(target) {
		if c.err == nil {
			n++
		}
	}
	return n
}

// retiresOf returns the target's retirement passes.
func (r *schedRecorder) retiresOf(target string) []retireCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []retireCall
	for _, c := range r.retires {
		if c.target == target {
			out = append(out, c)
		}
	}
	return out
}

// retiredAt returns when a retirement pass of target deleted id.
func (r *schedRecorder) retiredAt(target, id string) (time.Time, bool) {
	for _, c := range r.retiresOf(target) {
		if slices.Contains(c.deleted, id) {
			return c.at, true
		}
	}
	return time.Time{}, false
}

// firstErr is the error of the first call, nil when none.
func firstErr(calls []rotationCall) error {
	if len(calls) == 0 {
		return nil
	}
	return calls[0].err
}

// onWallClock puts the env's engine on the wall clock.
func (e *env) onWallClock() *rotation.Engine {
	e.engine.Now = time.Now
	return e.engine
}

// newTestScheduler returns a scheduler on eng that logs into e's logs
// (which the secrets scan reads), reports into rec and never catches up
// unless the test says so.
func newTestScheduler(e *env, eng *rotation.Engine, rec *schedRecorder) *rotation.Scheduler {
	return &rotation.Scheduler{
		Engine:       eng,
		Logger:       slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		OnRotation:   rec.onRotation,
		OnRetire:     rec.onRetire,
		CatchUpDelay: func(time.Duration) time.Duration { return noCatchUp },
	}
}

// catchUpAtOnce makes a scheduler catch up without delay.
func catchUpAtOnce(time.Duration) time.Duration { return 0 }

// startScheduler starts s and stops it when the test ends, before the
// env's state file and servers go away.
func startScheduler(tb testing.TB, s *rotation.Scheduler, schedules ...rotation.Schedule) {
	tb.Helper()
	if err := s.Start(schedules); err != nil {
		tb.Fatalf("Start: %v", err)
	}
	tb.Cleanup(func() { stopWithin(s, waitLong) })
}

// stopWithin stops s, giving running rotations d to finish, and returns
// how long Stop took.
func stopWithin(s *rotation.Scheduler, d time.Duration) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	start := time.Now()
	s.Stop(ctx)
	return time.Since(start)
}

// waitFor polls cond until it holds, failing the test after waitLong.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(waitLong)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("gave up after %s waiting for %s", waitLong, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// logRecords returns the JSON log records with message msg about target
// (any target when target is empty).
func logRecords(tb testing.TB, logs *syncBuffer, msg, target string) []map[string]any {
	tb.Helper()
	var out []map[string]any
	for line := range strings.SplitSeq(logs.String(), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			tb.Fatalf("log line is not JSON: %q: %v", line, err)
		}
		if rec["msg"] == msg && (target == "" || rec["target"] == target) {
			out = append(out, rec)
		}
	}
	return out
}

// logged counts the records with message msg about target.
func logged(tb testing.TB, logs *syncBuffer, msg, target string) int {
	tb.Helper()
	return len(logRecords(tb, logs, msg, target))
}

// servedKeyID is the key id the env's mount serves, "" when none.
func (e *env) servedKeyID() string {
	e.t.Helper()
	p := e.served()
	if p == nil {
		return ""
	}
	return p.Data[vault.FieldKeyID]
}

// fleet is several targets, each with its own emulator and KV mount,
// sharing one state file and one engine on the wall clock, as a daemon
// with several targets runs them. The first env owns the state file and
// the logs.
type fleet struct {
	first  *env
	envs   map[string]*env
	engine *rotation.Engine
}

func newFleet(tb testing.TB, names ...string) *fleet {
	tb.Helper()
	f := &fleet{envs: map[string]*env{}}
	for i, name := range names {
		e := newEnv(tb, envConfig{})
		e.target.Name = name
		f.envs[name] = e
		if i == 0 {
			f.first = e
			continue
		}
		// The engine logs into the first env's logs: its secrets scan
		// must know every target's keys. Registered after the first
		// env's scan, so it runs before it.
		tb.Cleanup(func() {
			for _, raw := range e.raw.list() {
				f.first.raw.add(raw)
			}
		})
	}
	f.engine = f.first.newEngine(nil)
	f.engine.Now = time.Now
	f.engine.Codat = func(target string, key codat.Secret) rotation.Codat {
		return f.envs[target].client.WithKey(key)
	}
	return f
}

// schedule is the named target on spec.
func (f *fleet) schedule(name, spec string) rotation.Schedule {
	return rotation.Schedule{Target: f.envs[name].target, Spec: spec}
}

// state loads the named target's state from the shared file.
func (f *fleet) state(tb testing.TB, name string) store.Target {
	tb.Helper()
	st, err := f.first.db.Load(name)
	if err != nil {
		tb.Fatalf("load state of %s: %v", name, err)
	}
	return st
}

// update changes the named target's state in the shared file.
func (f *fleet) update(tb testing.TB, name string, fn func(*store.Target)) {
	tb.Helper()
	err := f.first.db.Update(name, func(st *store.Target) error {
		fn(st)
		return nil
	})
	if err != nil {
		tb.Fatalf("update state of %s: %v", name, err)
	}
}

// rotate runs one rotation of the named target with the fleet's engine.
func (f *fleet) rotate(tb testing.TB, name string) rotation.Result {
	tb.Helper()
	res, err := f.engine.Rotate(context.Background(), f.envs[name].target, rotation.Options{})
	if err != nil {
		tb.Fatalf("rotate %s: %v", name, err)
	}
	return res
}

// TestSchedulerCatchUp: at start, a target that never rotated, or whose
// last success is older than its most recent scheduled time, rotates
// soon; a target that rotated after its most recent scheduled time does
// not (docs/design.md#scheduling).
func TestSchedulerCatchUp(t *testing.T) {
	t.Parallel()

	t.Run("never rotated", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, envConfig{})
		rec := &schedRecorder{}
		s := newTestScheduler(e, e.onWallClock(), rec)
		var asked atomic.Int64
		s.CatchUpDelay = func(max time.Duration) time.Duration {
			asked.Store(int64(max))
			return 0
		}
		startScheduler(t, s, rotation.Schedule{Target: e.target, Spec: "@every 1h", Jitter: 5 * time.Minute})
		if got := logged(t, e.logs, msgCatchUp, targetName); got != 1 {
			t.Errorf("catch-up logged %d times at start, want 1", got)
		}
		if got, want := time.Duration(asked.Load()), 5*time.Minute; got != want {
			t.Errorf("CatchUpDelay asked with max %s, want the target's jitter %s", got, want)
		}

		waitFor(t, "the catch-up rotation", func() bool { return len(rec.rotationsOf(targetName)) > 0 })
		c := rec.rotationsOf(targetName)[0]
		if c.err != nil {
			t.Fatalf("catch-up rotation: %v", c.err)
		}
		if !c.res.Bootstrapped {
			t.Error("the first rotation did not publish the bootstrap key first")
		}
		if got, want := e.servedKeyID(), c.res.NewKey.ID; got != want {
			t.Errorf("vault serves %s after the catch-up, want its new key %s", got, want)
		}
		if st := e.state(); time.Since(st.LastSuccess) > waitLong {
			t.Errorf("last success = %s, want just now", st.LastSuccess)
		}
		stopWithin(s, waitLong)
		e.checkInvariants()
	})

	t.Run("recent and stale", func(t *testing.T) {
		t.Parallel()
		const (
			staleEvery, freshEvery = "stale-every", "fresh-every"
			staleCron, freshCron   = "stale-cron", "fresh-cron"
			hourly                 = "0 * * * *"
		)
		f := newFleet(t, staleEvery, freshEvery, staleCron, freshCron)
		for name := range f.envs {
			f.rotate(t, name)
		}
		now := time.Now().UTC()
		mostRecentRun := now.Truncate(time.Hour) // of "0 * * * *"
		lastSuccess := map[string]time.Time{
			staleEvery: now.Add(-61 * time.Minute),
			freshEvery: now,
			staleCron:  mostRecentRun.Add(-time.Minute),
			freshCron:  now,
		}
		for name, at := range lastSuccess {
			f.update(t, name, func(st *store.Target) { st.LastSuccess = at })
		}

		rec := &schedRecorder{}
		s := newTestScheduler(f.first, f.engine, rec)
		s.CatchUpDelay = catchUpAtOnce
		startScheduler(t, s,
			f.schedule(staleEvery, "@every 1h"), f.schedule(freshEvery, "@every 1h"),
			f.schedule(staleCron, hourly), f.schedule(freshCron, hourly))

		// The decision is made and logged by Start itself.
		for name, want := range map[string]int{staleEvery: 1, freshEvery: 0, staleCron: 1, freshCron: 0} {
			if got := logged(t, f.first.logs, msgCatchUp, name); got != want {
				t.Errorf("%s (last success %s): catch-up logged %d times, want %d", name, lastSuccess[name].Format(time.RFC3339), got, want)
			}
		}
		for _, name := range []string{staleEvery, staleCron} {
			waitFor(t, name+"'s catch-up rotation", func() bool { return len(rec.rotationsOf(name)) > 0 })
			c := rec.rotationsOf(name)[0]
			if c.err != nil {
				t.Errorf("%s: catch-up rotation: %v", name, c.err)
				continue
			}
			e := f.envs[name]
			if got := len(e.apiKeys()); got != 2 {
				t.Errorf("%s: %d keys made, want 2 (the first rotation and the catch-up)", name, got)
			}
			if got, want := e.servedKeyID(), c.res.NewKey.ID; got != want {
				t.Errorf("%s: vault serves %s, want the catch-up's key %s", name, got, want)
			}
		}
		// Both catch-ups began at once and have ended: a catch-up of a
		// fresh target would have run beside them.
		for _, name := range []string{freshEvery, freshCron} {
			if got := rec.rotationsOf(name); len(got) != 0 {
				t.Errorf("%s rotated at start (%d times) though it rotated after its most recent scheduled time", name, len(got))
			}
			if got := len(f.envs[name].apiKeys()); got != 1 {
				t.Errorf("%s: %d keys made, want only the one of its first rotation", name, got)
			}
		}
	})
}

// TestSchedulerFinishesJournalAtStart: a crash left a rotation in the
// journal (the new key made, not yet published); Start finishes that
// rotation at once, without making another key.
func TestSchedulerFinishesJournalAtStart(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	eng := e.onWallClock()
	c := &crasher{at: func(cl call, c *crasher) bool {
		return c.created && cl.svc == "vault" && cl.op == "write" && !cl.after // the publish, not the bootstrap
	}}
	if at, crashed := e.rotateUntilCrash(c, rotation.Options{}); !crashed {
		t.Fatal("the rotation did not crash before its publish")
	} else {
		t.Logf("crashed at %s", at)
	}
	j := e.state().Journal
	if j == nil || j.Step != store.StepPublish || j.NewKeyID == "" {
		t.Fatalf("journal after the crash = %+v, want step publish with the new key", j)
	}

	rec := &schedRecorder{}
	s := newTestScheduler(e, eng, rec)
	startScheduler(t, s, rotation.Schedule{Target: e.target, Spec: "@every 1h"})
	recs := logRecords(t, e.logs, msgJournal, targetName)
	if len(recs) != 1 || recs[0]["step"] != string(store.StepPublish) {
		t.Errorf("journal at start logged as %v, want one record with step publish", recs)
	}

	waitFor(t, "the journal's rotation to finish", func() bool { return len(rec.rotationsOf(targetName)) > 0 })
	got := rec.rotationsOf(targetName)[0]
	if got.err != nil {
		t.Fatalf("finishing the journal: %v", got.err)
	}
	if !got.res.Recovered || got.res.NewKey.ID != j.NewKeyID {
		t.Errorf("result = recovered %v, new key %s; want the journal's key %s, recovered", got.res.Recovered, got.res.NewKey.ID, j.NewKeyID)
	}
	if got := e.servedKeyID(); got != j.NewKeyID {
		t.Errorf("vault serves %s, want the journal's key %s", got, j.NewKeyID)
	}
	if got := len(e.apiKeys()); got != 1 {
		t.Errorf("%d keys made, want 1: finishing a journal never makes another key", got)
	}
	stopWithin(s, waitLong)
	e.checkInvariants()
}

// TestSchedulerHaltedAndFailingTargets: a halted target is logged at
// start and never rotates; a target whose Codat fails halts itself; the
// healthy target keeps rotating on schedule through both.
func TestSchedulerHaltedAndFailingTargets(t *testing.T) {
	t.Parallel()
	const healthy, halted, broken = "healthy", "halted", "broken"
	f := newFleet(t, healthy, halted, broken)
	haltedAt := time.Now().Add(-time.Hour).UTC()
	f.update(t, halted, func(st *store.Target) {
		st.Halted, st.HaltReason, st.HaltedAt = true, "halted by the test", haltedAt
	})
	if err := f.envs[broken].emu.SetFaults(emulator.Faults{List: emulator.OpFaults{Fail: 1 << 20, FailStatus: 503}}); err != nil {
		t.Fatal(err)
	}

	rec := &schedRecorder{}
	s := newTestScheduler(f.first, f.engine, rec)
	s.CatchUpDelay = catchUpAtOnce
	startScheduler(t, s, f.schedule(healthy, "@every 1s"), f.schedule(halted, "@every 1s"), f.schedule(broken, "@every 1s"))
	logs := f.first.logs
	if got := logged(t, logs, msgHaltedAtStart, halted); got != 1 {
		t.Errorf("halted target logged %d times at start, want 1", got)
	}
	if got := logged(t, logs, msgCatchUp, halted); got != 0 {
		t.Errorf("halted target: catch-up logged %d times, want 0", got)
	}

	waitFor(t, "the broken target to halt", func() bool { return f.state(t, broken).Halted })
	brokenHalted := time.Now()
	waitFor(t, "the healthy target to rotate after the broken one halted", func() bool {
		for _, c := range rec.rotationsOf(healthy) {
			if c.err == nil && c.started.After(brokenHalted) {
				return true
			}
		}
		return false
	})
	waitFor(t, "a tick of the halted targets", func() bool {
		return logged(t, logs, msgSkipHalted, halted) > 0 && logged(t, logs, msgSkipHalted, broken) > 0
	})
	stopWithin(s, waitLong)

	if got := rec.succeeded(healthy); got < 2 {
		t.Errorf("healthy target rotated %d times, want at least 2 (catch-up and ticks)", got)
	}
	if got := len(rec.rotationsOf(halted)); got != 0 {
		t.Errorf("halted target: %d rotations reported, want 0", got)
	}
	if ev := f.envs[halted].emu.Events(0); len(ev) != 0 {
		t.Errorf("halted target's codat saw %d requests, want none", len(ev))
	}
	if st := f.state(t, halted); !st.Halted || !st.LastAttempt.IsZero() || !st.HaltedAt.Equal(haltedAt) {
		t.Errorf("halted target's state = halted %v, last attempt %s, halted at %s; want untouched", st.Halted, st.LastAttempt, st.HaltedAt)
	}
	if bc := rec.rotationsOf(broken); len(bc) == 0 || bc[0].err == nil {
		t.Errorf("broken target: %d rotations reported, want a first one that failed", len(bc))
	}
	for _, c := range rec.rotationsOf(healthy) {
		if c.err != nil {
			t.Errorf("healthy target: rotation failed: %v", c.err)
		}
	}
	if got, want := len(f.envs[healthy].apiKeys()), rec.succeeded(healthy); got != want {
		t.Errorf("healthy target: codat made %d keys, %d rotations reported", got, want)
	}
}

// TestSchedulerRetireTimer: the retire timer is the persisted
// delete_after: it deletes the superseded key when its grace ends
// without another rotation, and a restarted scheduler re-arms it from
// the state file, deleting at once a key that fell due while it was
// down.
func TestSchedulerRetireTimer(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	e.target.Grace = 500 * time.Millisecond
	sched := rotation.Schedule{Target: e.target, Spec: "@every 1h"}

	// A first scheduler: a manual rotation, then the timer.
	rec1 := &schedRecorder{}
	s1 := newTestScheduler(e, e.onWallClock(), rec1)
	startScheduler(t, s1, sched)
	initial := e.initialID()
	res1, err := s1.RotateNow(targetName, rotation.Options{})
	if err != nil {
		t.Fatalf("RotateNow: %v", err)
	}
	k := e.stateKey(initial)
	if k == nil || k.State != store.KeyRetiring {
		t.Fatalf("the bootstrap key after the rotation = %+v, want retiring", k)
	}
	due1 := k.DeleteAfter
	if got := s1.NextRetire(targetName); !got.Equal(due1) {
		t.Errorf("NextRetire = %s, want the key's delete_after %s", got, due1)
	}
	waitFor(t, "the timer to retire the bootstrap key", func() bool {
		_, ok := rec1.retiredAt(targetName, initial)
		return ok
	})
	if at, _ := rec1.retiredAt(targetName, initial); at.Before(due1) {
		t.Errorf("retired at %s, before its delete_after %s (I4)", at.Format(time.RFC3339Nano), due1.Format(time.RFC3339Nano))
	}
	if _, live := e.activeKeys()[initial]; live {
		t.Error("codat still holds the retired bootstrap key")
	}
	if got := len(e.apiKeys()); got != 1 {
		t.Errorf("%d keys made, want 1: retiring needs no rotation", got)
	}
	waitFor(t, "the timer to disarm once nothing is left to retire", func() bool { return s1.NextRetire(targetName).IsZero() })

	// A second rotation; the daemon restarts before its grace ends.
	res2, err := s1.RotateNow(targetName, rotation.Options{})
	if err != nil {
		t.Fatalf("RotateNow: %v", err)
	}
	due2 := e.stateKey(res1.NewKey.ID).DeleteAfter
	if d := stopWithin(s1, waitLong); d > time.Second {
		t.Errorf("Stop with nothing running took %s", d)
	}
	if _, live := e.activeKeys()[res1.NewKey.ID]; !live {
		t.Fatal("the superseded key is gone before the restart")
	}
	rec2 := &schedRecorder{}
	s2 := newTestScheduler(e, e.newEngine(nil), rec2)
	s2.Engine.Now = time.Now
	startScheduler(t, s2, sched)
	if got := s2.NextRetire(targetName); !got.Equal(due2) {
		t.Errorf("after the restart, NextRetire = %s, want the persisted delete_after %s", got, due2)
	}
	waitFor(t, "the restarted scheduler to retire the superseded key", func() bool {
		_, ok := rec2.retiredAt(targetName, res1.NewKey.ID)
		return ok
	})
	if at, _ := rec2.retiredAt(targetName, res1.NewKey.ID); at.Before(due2) {
		t.Errorf("retired at %s, before its delete_after %s (I4)", at.Format(time.RFC3339Nano), due2.Format(time.RFC3339Nano))
	}

	// A third rotation; the key falls due while the daemon is down.
	if _, err := s2.RotateNow(targetName, rotation.Options{}); err != nil {
		t.Fatalf("RotateNow: %v", err)
	}
	due3 := e.stateKey(res2.NewKey.ID).DeleteAfter
	stopWithin(s2, waitLong)
	time.Sleep(time.Until(due3) + 50*time.Millisecond)
	if _, live := e.activeKeys()[res2.NewKey.ID]; !live {
		t.Fatal("the superseded key is gone while no scheduler ran")
	}
	rec3 := &schedRecorder{}
	s3 := newTestScheduler(e, e.newEngine(nil), rec3)
	s3.Engine.Now = time.Now
	started := time.Now()
	startScheduler(t, s3, sched)
	if got := s3.NextRetire(targetName); got.After(time.Now()) {
		t.Errorf("with a key already due, NextRetire = %s, want now", got)
	}
	waitFor(t, "the due key to be retired at start", func() bool {
		_, ok := rec3.retiredAt(targetName, res2.NewKey.ID)
		return ok
	})
	if at, _ := rec3.retiredAt(targetName, res2.NewKey.ID); at.Sub(started) > 2*time.Second {
		t.Errorf("a due key was retired %s after start, want at once", at.Sub(started))
	}
	if got := len(e.apiKeys()); got != 3 {
		t.Errorf("%d keys made, want 3: restarts neither rotate nor catch up", got)
	}
	if got := len(rec2.rotationsOf(targetName)) + len(rec3.rotationsOf(targetName)); got != 1 {
		t.Errorf("restarted schedulers reported %d rotations, want only the manual one", got)
	}
	stopWithin(s3, waitLong)
	e.checkInvariants()
}

// TestSchedulerTicks: scheduled ticks rotate and report; a tick never
// overlaps a running rotation of its target, whether the running one is
// manual (the engine refuses) or an earlier tick (cron skips); a panic
// in a tick is logged and later ticks still run.
func TestSchedulerTicks(t *testing.T) {
	t.Parallel()

	t.Run("every second", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, envConfig{})
		rec := &schedRecorder{}
		s := newTestScheduler(e, e.onWallClock(), rec)
		startScheduler(t, s, rotation.Schedule{Target: e.target, Spec: "@every 1s"})
		if next := s.Next(targetName); next.Before(time.Now()) || time.Until(next) > time.Second {
			t.Errorf("Next = %s, want within a second", next.Format(time.RFC3339Nano))
		}
		waitFor(t, "two scheduled rotations", func() bool { return len(rec.rotationsOf(targetName)) >= 2 })
		stopWithin(s, waitLong)

		calls := rec.rotationsOf(targetName)
		ids := map[string]bool{}
		for i, c := range calls {
			if c.err != nil {
				t.Errorf("rotation %d: %v", i, c.err)
				continue
			}
			if c.opts != (rotation.Options{}) {
				t.Errorf("rotation %d: options %+v, want a routine rotation", i, c.opts)
			}
			if c.res.RotationID == "" || c.res.NewKey.ID == "" || ids[c.res.NewKey.ID] {
				t.Errorf("rotation %d: id %q, new key %q; want an id and a new key each time", i, c.res.RotationID, c.res.NewKey.ID)
			}
			ids[c.res.NewKey.ID] = true
		}
		if got, want := len(e.apiKeys()), len(calls); got != want {
			t.Errorf("codat made %d keys, %d rotations reported", got, want)
		}
		if got, want := e.servedKeyID(), calls[len(calls)-1].res.NewKey.ID; got != want {
			t.Errorf("vault serves %s, want the last rotation's key %s", got, want)
		}
		e.checkInvariants()
	})

	t.Run("never overlaps a running rotation", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, envConfig{})
		const latency = 1500 * time.Millisecond
		if err := e.emu.SetFaults(emulator.Faults{Create: emulator.OpFaults{Latency: emulator.Duration(latency)}}); err != nil {
			t.Fatal(err)
		}
		rec := &schedRecorder{}
		s := newTestScheduler(e, e.onWallClock(), rec)
		startScheduler(t, s, rotation.Schedule{Target: e.target, Spec: "@every 1h"})

		// Watch how many Codat requests are in flight at once.
		var peak atomic.Int64
		watch, watched := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(watched)
			for {
				if n := int64(e.emu.InFlight()); n > peak.Load() {
					peak.Store(n)
				}
				select {
				case <-watch:
					return
				case <-time.After(time.Millisecond):
				}
			}
		}()
		defer func() { close(watch); <-watched }()

		type outcome struct {
			res rotation.Result
			err error
		}
		manual := make(chan outcome, 1)
		go func() {
			res, err := s.RotateNow(targetName, rotation.Options{Manual: true})
			manual <- outcome{res, err}
		}()
		waitFor(t, "the manual rotation's create to be in flight", func() bool {
			j := e.state().Journal
			return j != nil && j.Step == store.StepCreate && e.emu.InFlight() == 1
		})
		// Tick every second from now: at least one tick falls in the
		// create's remaining latency.
		if err := s.Apply([]rotation.Schedule{{Target: e.target, Spec: "@every 1s"}}); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		var m outcome
		select {
		case m = <-manual:
		case <-time.After(waitLong):
			t.Fatal("the manual rotation did not return")
		}
		if m.err != nil {
			t.Fatalf("RotateNow: %v", m.err)
		}
		if got := logged(t, e.logs, msgSkipBusy, targetName); got == 0 {
			t.Error("no tick was skipped while the manual rotation ran")
		}
		// The next tick rotates, slowly; the ticks during it are skipped
		// by cron and logged readably.
		waitFor(t, "a scheduled rotation after the manual one", func() bool { return len(rec.rotationsOf(targetName)) >= 2 })
		waitFor(t, "cron to skip a tick", func() bool { return logged(t, e.logs, msgTickSkipped, targetName) > 0 })
		stopWithin(s, waitLong)

		if got := peak.Load(); got > 1 {
			t.Errorf("codat saw %d requests in flight at once, want at most 1: rotations overlapped", got)
		}
		calls := rec.rotationsOf(targetName)
		if calls[0].opts != (rotation.Options{Manual: true}) || calls[0].res.NewKey.ID != m.res.NewKey.ID {
			t.Errorf("first reported rotation = %+v for key %s, want the manual one for %s", calls[0].opts, calls[0].res.NewKey.ID, m.res.NewKey.ID)
		}
		for i, c := range calls {
			if c.err != nil {
				t.Errorf("rotation %d: %v", i, c.err)
			}
			if i > 0 && c.started.Before(calls[i-1].at) {
				t.Errorf("rotation %d began at %s, before rotation %d ended at %s", i, c.started.Format(time.RFC3339Nano), i-1, calls[i-1].at.Format(time.RFC3339Nano))
			}
		}
		if got, want := len(e.apiKeys()), len(calls); got != want {
			t.Errorf("codat made %d keys, %d rotations reported", got, want)
		}
		if got, want := countOps(e.emu.Events(0), emulator.OpCreate), len(calls); got != want {
			t.Errorf("codat saw %d creates, %d rotations reported", got, want)
		}
		for _, r := range logRecords(t, e.logs, msgTickSkipped, targetName) {
			if r["level"] != "INFO" {
				t.Errorf("skipped tick logged at %v, want INFO", r["level"])
			}
		}
		// robfig/cron's chatter stays at debug level.
		for _, msg := range []string{"cron wake", "cron run", "cron start", "cron stop"} {
			for _, r := range logRecords(t, e.logs, msg, "") {
				if r["level"] != "DEBUG" {
					t.Errorf("%q logged at %v, want DEBUG", msg, r["level"])
				}
			}
		}
		if logged(t, e.logs, "cron run", "") == 0 {
			t.Error(`no "cron run" record: cron's logger is not wired to the scheduler's`)
		}
		e.checkInvariants()
	})

	t.Run("a panic in a tick does not stop the schedule", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, envConfig{})
		rec := &schedRecorder{}
		s := newTestScheduler(e, e.onWallClock(), rec)
		var calls atomic.Int32
		s.OnRotation = func(target string, opts rotation.Options, res rotation.Result, err error, took time.Duration) {
			rec.onRotation(target, opts, res, err, took)
			if calls.Add(1) == 1 {
				panic("hook exploded")
			}
		}
		startScheduler(t, s, rotation.Schedule{Target: e.target, Spec: "@every 1s"})
		waitFor(t, "a rotation after the panic", func() bool { return calls.Load() >= 2 })
		stopWithin(s, waitLong)
		recs := logRecords(t, e.logs, "cron panic", targetName)
		if len(recs) != 1 {
			t.Fatalf("panic logged %d times, want once", len(recs))
		}
		if recs[0]["level"] != "ERROR" || !strings.Contains(fmt.Sprint(recs[0]["error"]), "hook exploded") {
			t.Errorf("panic record = level %v, error %v; want ERROR naming the panic", recs[0]["level"], recs[0]["error"])
		}
		if got := rec.succeeded(targetName); got < 2 {
			t.Errorf("%d successful rotations, want at least 2", got)
		}
	})
}

// TestSchedulerJitter: a scheduled rotation waits the jitter drawn for
// its tick before it starts.
func TestSchedulerJitter(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	rec := &schedRecorder{}
	s := newTestScheduler(e, e.onWallClock(), rec)
	const delay, maxJitter = 600 * time.Millisecond, 30 * time.Second
	type draw struct {
		at  time.Time
		max time.Duration
	}
	draws := make(chan draw, 16)
	s.Jitter = func(max time.Duration) time.Duration {
		draws <- draw{time.Now(), max}
		return delay
	}
	startScheduler(t, s, rotation.Schedule{Target: e.target, Spec: "@every 1s", Jitter: maxJitter})
	waitFor(t, "the first jittered rotation", func() bool { return len(rec.rotationsOf(targetName)) > 0 })
	stopWithin(s, waitLong)

	var first draw
	select {
	case first = <-draws:
	default:
		t.Fatal("a rotation ran without a jitter drawn")
	}
	if first.max != maxJitter {
		t.Errorf("jitter drawn up to %s, want the schedule's %s", first.max, maxJitter)
	}
	c := rec.rotationsOf(targetName)[0]
	if c.err != nil {
		t.Fatalf("rotation: %v", c.err)
	}
	if waited := c.started.Sub(first.at); waited < delay {
		t.Errorf("the rotation began %s after its tick, want no earlier than the jitter %s", waited, delay)
	}
}

// TestSchedulerApply: a reload replaces schedules, removes targets with
// their retire timers, and leaves everything as it was when a schedule
// is bad.
func TestSchedulerApply(t *testing.T) {
	t.Parallel()

	t.Run("a rarer schedule stops frequent rotations", func(t *testing.T) {
		t.Parallel()
		const busy, control = "busy", "control"
		f := newFleet(t, busy, control)
		rec := &schedRecorder{}
		s := newTestScheduler(f.first, f.engine, rec)
		startScheduler(t, s, f.schedule(busy, "@every 1s"), f.schedule(control, "@every 1s"))
		waitFor(t, "a scheduled rotation of "+busy, func() bool { return rec.succeeded(busy) > 0 })

		if err := s.Apply([]rotation.Schedule{f.schedule(busy, "@every 1h"), f.schedule(control, "@every 1s")}); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		applied := time.Now()
		if next := s.Next(busy); next.Sub(applied) < 59*time.Minute {
			t.Errorf("Next(%s) = %s after the reload, want in about an hour", busy, next.Format(time.RFC3339))
		}
		// Both targets ticked on the same whole seconds: once the control
		// target rotated on a tick well after the reload, so would have
		// the busy one. (A tick that fired just before the reload may
		// still start a moment after it.)
		settled := applied.Add(300 * time.Millisecond)
		waitFor(t, "a rotation of the control target after the reload", func() bool {
			for _, c := range rec.rotationsOf(control) {
				if c.started.After(settled) {
					return true
				}
			}
			return false
		})
		for _, c := range rec.rotationsOf(busy) {
			if c.started.After(settled) {
				t.Errorf("%s rotated at %s, after its schedule became hourly at %s", busy, c.started.Format(time.RFC3339Nano), applied.Format(time.RFC3339Nano))
			}
		}
		stopWithin(s, waitLong)
		if got, want := len(f.envs[busy].apiKeys()), len(rec.rotationsOf(busy)); got != want {
			t.Errorf("%s: codat made %d keys, %d rotations reported", busy, got, want)
		}
	})

	t.Run("a removed target stops rotating and retiring", func(t *testing.T) {
		t.Parallel()
		const gone, control = "gone", "control"
		f := newFleet(t, gone, control)
		f.envs[gone].target.Grace = 500 * time.Millisecond
		rec := &schedRecorder{}
		s := newTestScheduler(f.first, f.engine, rec)
		startScheduler(t, s, f.schedule(gone, "@every 1h"), f.schedule(control, "@every 1s"))
		res, err := s.RotateNow(gone, rotation.Options{})
		if err != nil {
			t.Fatalf("RotateNow: %v", err)
		}
		if len(res.Retiring) != 1 {
			t.Fatalf("retiring after the rotation: %+v, want the bootstrap key", res.Retiring)
		}
		old := res.Retiring[0]
		if got := s.NextRetire(gone); !got.Equal(old.DeleteAfter) {
			t.Fatalf("NextRetire = %s, want %s", got, old.DeleteAfter)
		}

		if err := s.Apply([]rotation.Schedule{f.schedule(control, "@every 1s")}); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		if got := s.Names(); !slices.Equal(got, []string{control}) {
			t.Errorf("Names after the reload = %v, want [%s]", got, control)
		}
		if _, ok := s.Target(gone); ok {
			t.Errorf("Target(%s) still found after the reload", gone)
		}
		if got := s.NextRetire(gone); !got.IsZero() {
			t.Errorf("NextRetire(%s) = %s after removal, want zero", gone, got)
		}
		if _, err := s.RotateNow(gone, rotation.Options{}); err == nil {
			t.Errorf("RotateNow(%s) after removal succeeded, want an error", gone)
		}
		// Well past the old key's delete_after, the control target has
		// kept rotating: the removed one's timer would have fired.
		waitFor(t, "a rotation of the control target after the old key's grace", func() bool {
			for _, c := range rec.rotationsOf(control) {
				if c.started.After(old.DeleteAfter.Add(500 * time.Millisecond)) {
					return true
				}
			}
			return false
		})
		stopWithin(s, waitLong)
		if got := rec.retiresOf(gone); len(got) != 0 {
			t.Errorf("the removed target was retired %d times: %+v", len(got), got)
		}
		if _, live := f.envs[gone].activeKeys()[old.ID]; !live {
			t.Error("the removed target's retiring key was deleted")
		}
		if got := countOps(f.envs[gone].emu.Events(0), emulator.OpDelete); got != 0 {
			t.Errorf("the removed target's codat saw %d deletes, want 0", got)
		}
		if got := len(rec.rotationsOf(gone)); got != 1 {
			t.Errorf("the removed target rotated %d times, want only the manual rotation", got)
		}
	})

	t.Run("a bad schedule changes nothing", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, envConfig{})
		rec := &schedRecorder{}
		s := newTestScheduler(e, e.onWallClock(), rec)
		startScheduler(t, s, rotation.Schedule{Target: e.target, Spec: "@every 1h"})
		other := e.target
		other.Name = "other"
		for _, tc := range []struct {
			name      string
			schedules []rotation.Schedule
			wantErr   string
		}{
			{"bad spec", []rotation.Schedule{{Target: e.target, Spec: "every hour"}}, `target prod: schedule "every hour"`},
			{"bad spec of a new target", []rotation.Schedule{{Target: e.target, Spec: "@every 1s"}, {Target: other, Spec: "61 * * * *"}}, `target other: schedule "61 * * * *"`},
			{"a target twice", []rotation.Schedule{{Target: e.target, Spec: "@every 1s"}, {Target: e.target, Spec: "@every 2s"}}, "target prod: scheduled twice"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				err := s.Apply(tc.schedules)
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Apply = %v, want an error containing %q", err, tc.wantErr)
				}
				if got := s.Names(); !slices.Equal(got, []string{targetName}) {
					t.Errorf("Names = %v, want [%s]", got, targetName)
				}
				if next := s.Next(targetName); time.Until(next) < 59*time.Minute {
					t.Errorf("Next = %s, want the old hourly schedule", next.Format(time.RFC3339))
				}
			})
		}
		stopWithin(s, waitLong)
		if got := len(rec.rotationsOf(targetName)); got != 0 {
			t.Errorf("%d rotations after failed reloads, want 0", got)
		}
	})
}

// TestSchedulerStop: Stop lets a running rotation run until its context
// ends, then cancels it, leaving the journal for the next start; idle, it
// returns at once; a second Stop does nothing.
func TestSchedulerStop(t *testing.T) {
	t.Parallel()

	t.Run("cancels a rotation in flight", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, envConfig{})
		const latency, patience = 5 * time.Second, 300 * time.Millisecond
		if err := e.emu.SetFaults(emulator.Faults{Create: emulator.OpFaults{Latency: emulator.Duration(latency)}}); err != nil {
			t.Fatal(err)
		}
		rec := &schedRecorder{}
		s := newTestScheduler(e, e.onWallClock(), rec)
		startScheduler(t, s, rotation.Schedule{Target: e.target, Spec: "@every 1h"})
		manual := make(chan error, 1)
		go func() {
			_, err := s.RotateNow(targetName, rotation.Options{})
			manual <- err
		}()
		waitFor(t, "the create to be in flight", func() bool {
			j := e.state().Journal
			return j != nil && j.Step == store.StepCreate && e.emu.InFlight() == 1
		})

		took := stopWithin(s, patience)
		if took < patience-50*time.Millisecond || took > latency-time.Second {
			t.Errorf("Stop took %s, want about its context's %s, well under the create's %s", took, patience, latency)
		}
		// Stop waits for the rotation it cancels: its outcome is already
		// reported and its journal written when Stop returns.
		if calls := rec.rotationsOf(targetName); len(calls) != 1 || calls[0].err == nil {
			t.Errorf("%d rotations reported when Stop returned (first error: %v), want one failure", len(calls), firstErr(calls))
		}
		j := e.state().Journal
		if j == nil || j.Step != store.StepCreate || j.Name == "" {
			t.Errorf("journal after Stop = %+v, want the create step with its key name", j)
		}
		select {
		case err := <-manual:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("the cancelled rotation returned %v, want context.Canceled", err)
			}
		case <-time.After(waitLong):
			t.Error("RotateNow did not return after Stop")
		}
		if got := logged(t, e.logs, msgShutdown, ""); got != 1 {
			t.Errorf("shutdown cancellation logged %d times, want 1", got)
		}
		if d := stopWithin(s, waitLong); d > 100*time.Millisecond {
			t.Errorf("a second Stop took %s, want a no-op", d)
		}
		if _, err := s.RotateNow(targetName, rotation.Options{}); err == nil {
			t.Error("RotateNow after Stop succeeded, want a refusal")
		}

		// The next start finishes the journal: the create never reached
		// Codat, so the rotation starts afresh.
		if err := e.emu.SetFaults(emulator.Faults{}); err != nil {
			t.Fatal(err)
		}
		rec2 := &schedRecorder{}
		s2 := newTestScheduler(e, e.newEngine(nil), rec2)
		s2.Engine.Now = time.Now
		startScheduler(t, s2, rotation.Schedule{Target: e.target, Spec: "@every 1h"})
		if got := logged(t, e.logs, msgJournal, targetName); got != 1 {
			t.Errorf("journal at start logged %d times, want 1", got)
		}
		waitFor(t, "the journal to be finished", func() bool { return len(rec2.rotationsOf(targetName)) > 0 })
		if c := rec2.rotationsOf(targetName)[0]; c.err != nil {
			t.Fatalf("finishing the journal: %v", c.err)
		}
		stopWithin(s2, waitLong)
		if got := len(e.apiKeys()); got != 1 {
			t.Errorf("%d keys made, want 1", got)
		}
		e.checkInvariants()
	})

	t.Run("idle", func(t *testing.T) {
		t.Parallel()
		var never rotation.Scheduler
		never.Stop(context.Background()) // never started: nothing to do

		e := newEnv(t, envConfig{})
		rec := &schedRecorder{}
		s := newTestScheduler(e, e.onWallClock(), rec)
		startScheduler(t, s, rotation.Schedule{Target: e.target, Spec: "@every 1h"})
		if d := stopWithin(s, waitLong); d > time.Second {
			t.Errorf("Stop with nothing running took %s", d)
		}
		if d := stopWithin(s, waitLong); d > 100*time.Millisecond {
			t.Errorf("a second Stop took %s, want a no-op", d)
		}
		if _, err := s.RotateNow(targetName, rotation.Options{}); err == nil {
			t.Error("RotateNow after Stop succeeded, want a refusal")
		}
		if got := len(e.apiKeys()); got != 0 {
			t.Errorf("%d keys made by a scheduler stopped at once, want 0", got)
		}
	})
}

// TestSchedulerAlive: the heartbeat that feeds the watchdog beats while
// the scheduler runs and stops with it.
func TestSchedulerAlive(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	s := newTestScheduler(e, e.onWallClock(), &schedRecorder{})
	started := time.Now()
	startScheduler(t, s, rotation.Schedule{Target: e.target, Spec: "@every 1h"})
	if !s.Alive(2 * time.Second) {
		t.Error("Alive(2s) = false right after Start")
	}
	// Start beat once; a beat fresher than Start itself comes from the
	// cron loop.
	waitFor(t, "a heartbeat from the cron loop", func() bool {
		age := time.Since(started) - 100*time.Millisecond
		return age > 0 && s.Alive(age)
	})
	stopWithin(s, waitLong)
	waitFor(t, "the heartbeat to go stale after Stop", func() bool { return !s.Alive(300 * time.Millisecond) })
}
