package rotation_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/codat"
	"github.com/codat-rotator/codat-rotator/codat/emulator"
	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/rotation/adapt"
	"github.com/codat-rotator/codat-rotator/store"
	"github.com/codat-rotator/codat-rotator/store/storetest"
	"github.com/codat-rotator/codat-rotator/vault"
)

// The scheduler runs on a fake clock: its timers fire when a test moves
// the clock, so no scheduler test sleeps. Rotations are the real engine
// on the real state file against the Codat emulator; Vault is an
// in-memory KV v2, since the scheduler's behaviour does not depend on it.

// waitLong bounds every wait for something a goroutine must do.
const waitLong = 10 * time.Second

// What the scheduler logs, as operators read it.
const (
	msgCatchUp       = "a scheduled rotation was missed; catching up"
	msgJournal       = "an interrupted rotation is in the journal; finishing it now"
	msgHaltedAtStart = "target is halted; no scheduled rotation until `codat-rotator resume`"
	msgSkipHalted    = "rotation skipped: target halted"
	msgShutdown      = "shutdown: cancelling the running rotation; its journal is kept for the next start"
	msgRetireRetry   = "retiring keys failed; will retry"
	msgRetireGaveUp  = "retiring keys failed; giving up until the next rotation"
)

// schedClock is a fake Clock: Advance moves it and runs the callbacks
// due. A loop parked until its next event is one pending callback.
type schedClock struct {
	mu      sync.Mutex
	now     time.Time
	timers  map[*schedTimer]bool
	changed chan struct{} // signalled when the set of timers changes
}

type schedTimer struct {
	at time.Time
	f  func()
}

func newSchedClock(start time.Time) *schedClock {
	return &schedClock{now: start, timers: map[*schedTimer]bool{}, changed: make(chan struct{}, 1)}
}

func (c *schedClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *schedClock) AfterFunc(at time.Time, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !at.After(c.now) {
		go f() // never from within AfterFunc: its caller may hold a lock f takes
		return func() bool { return false }
	}
	t := &schedTimer{at: at, f: f}
	c.timers[t] = true
	c.signal()
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		pending := c.timers[t]
		delete(c.timers, t)
		c.signal()
		return pending
	}
}

func (c *schedClock) signal() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// Advance moves the clock by d and runs every callback that falls due,
// earliest first, before it returns.
func (c *schedClock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	c.now = c.now.Add(d)
	now := c.now
	var due []*schedTimer
	for t := range c.timers {
		if !t.at.After(now) {
			due = append(due, t)
			delete(c.timers, t)
		}
	}
	c.signal()
	c.mu.Unlock()
	// Outside the lock: a callback asks the time and arms callbacks.
	slices.SortFunc(due, func(a, b *schedTimer) int { return a.at.Compare(b.at) })
	for _, t := range due {
		t.f()
	}
	return now
}

// waitParked waits until n loops are parked on the clock: everything
// the last move of the clock set off has run.
func (c *schedClock) waitParked(tb testing.TB, n int) {
	tb.Helper()
	deadline := time.After(waitLong)
	for {
		c.mu.Lock()
		got := len(c.timers)
		c.mu.Unlock()
		if got == n {
			return
		}
		select {
		case <-c.changed:
		case <-deadline:
			tb.Fatalf("gave up waiting for %d loops to wait on the clock; %d do", n, got)
		}
	}
}

// memVault is an in-memory KV v2 with check-and-set.
type memVault struct {
	mu   sync.Mutex
	docs map[vault.Location]*memDoc
	fail error // when set, every call fails with it
}

type memDoc struct {
	versions []vault.Secret
	md       map[string]string
}

func (v *memVault) setFail(err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.fail = err
}

func (v *memVault) CheckMount(context.Context, vault.Location) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.fail
}

func (v *memVault) Read(_ context.Context, loc vault.Location) (vault.Current, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.fail != nil {
		return vault.Current{}, v.fail
	}
	d := v.docs[loc]
	if d == nil {
		return vault.Current{}, nil
	}
	s := d.versions[len(d.versions)-1]
	md := map[string]string{}
	for k, val := range d.md {
		md[k] = val
	}
	return vault.Current{Secret: &s, Version: len(d.versions), CustomMetadata: md}, nil
}

func (v *memVault) Write(_ context.Context, loc vault.Location, s vault.Secret, cas int, md map[string]string) (int, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.fail != nil {
		return 0, v.fail
	}
	if v.docs == nil {
		v.docs = map[vault.Location]*memDoc{}
	}
	d := v.docs[loc]
	if d == nil {
		d = &memDoc{md: map[string]string{}}
		v.docs[loc] = d
	}
	if cas != len(d.versions) {
		return 0, &vault.CASConflictError{Path: loc.String(), Expected: cas, Current: len(d.versions)}
	}
	d.versions = append(d.versions, s)
	for k, val := range md {
		d.md[k] = val
	}
	return len(d.versions), nil
}

func (v *memVault) History(_ context.Context, loc vault.Location) ([]vault.Version, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.fail != nil {
		return nil, v.fail
	}
	var out []vault.Version
	if d := v.docs[loc]; d != nil {
		for i, s := range d.versions {
			out = append(out, vault.Version{Version: i + 1, Secret: s})
		}
	}
	return out, nil
}

func (v *memVault) PatchMetadata(_ context.Context, loc vault.Location, md map[string]string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.fail != nil {
		return v.fail
	}
	if d := v.docs[loc]; d != nil {
		for k, val := range md {
			d.md[k] = val
		}
	}
	return nil
}

// gate holds a target's Codat calls of one operation until released, and
// counts the target's calls in flight to catch overlapping runs.
type gate struct {
	mu       sync.Mutex
	held     map[string]chan struct{} // target/op (or */op) -> closed on release
	entered  chan string              // receives op when a held call arrives
	inFlight map[string]int
	peak     map[string]int
}

func newGate() *gate {
	return &gate{held: map[string]chan struct{}{}, entered: make(chan string, 64), inFlight: map[string]int{}, peak: map[string]int{}}
}

// hold makes the calls of op (create, list, delete) of every target
// wait for release.
func (g *gate) hold(op string) (release func()) { return g.holdFor("*", op) }

// holdFor makes target's calls of op wait for release.
func (g *gate) holdFor(target, op string) (release func()) {
	c := make(chan struct{})
	key := target + "/" + op
	g.mu.Lock()
	g.held[key] = c
	g.mu.Unlock()
	return func() {
		g.mu.Lock()
		if g.held[key] == c {
			delete(g.held, key)
		}
		g.mu.Unlock()
		close(c)
	}
}

func (g *gate) call(ctx context.Context, target, op string) (done func(), err error) {
	g.mu.Lock()
	g.inFlight[target]++
	g.peak[target] = max(g.peak[target], g.inFlight[target])
	total := 0
	for _, n := range g.inFlight {
		total += n
	}
	g.peak["*total"] = max(g.peak["*total"], total) // over every target: peakTotal
	c := g.held["*/"+op]
	if c == nil {
		c = g.held[target+"/"+op]
	}
	g.mu.Unlock()
	done = func() {
		g.mu.Lock()
		g.inFlight[target]--
		g.mu.Unlock()
	}
	if c != nil {
		g.entered <- op
		select {
		case <-c:
		case <-ctx.Done():
			done()
			return func() {}, ctx.Err()
		}
	}
	return done, nil
}

func (g *gate) peakOf(target string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.peak[target]
}

// waitEntered waits for a held call of op to arrive.
func (g *gate) waitEntered(tb testing.TB, op string) {
	tb.Helper()
	select {
	case got := <-g.entered:
		if got != op {
			tb.Fatalf("held call %s arrived, want %s", got, op)
		}
	case <-time.After(waitLong):
		tb.Fatalf("gave up waiting for a %s call", op)
	}
}

type gatedCodat struct {
	inner  adapt.CodatClient
	g      *gate
	target string
}

func (c gatedCodat) List(ctx context.Context) ([]codat.Key, error) {
	done, err := c.g.call(ctx, c.target, "list")
	if err != nil {
		return nil, err
	}
	defer done()
	return c.inner.List(ctx)
}

func (c gatedCodat) Create(ctx context.Context, name string) (codat.Key, error) {
	done, err := c.g.call(ctx, c.target, "create")
	if err != nil {
		return codat.Key{}, err
	}
	defer done()
	return c.inner.Create(ctx, name)
}

func (c gatedCodat) Delete(ctx context.Context, id string) error {
	done, err := c.g.call(ctx, c.target, "delete")
	if err != nil {
		return err
	}
	defer done()
	return c.inner.Delete(ctx, id)
}

// schedEnv is targets, each with its own emulator, sharing one state
// file, one engine and one fake clock, as a daemon runs them.
type schedEnv struct {
	t      testing.TB
	clock  *schedClock
	db     *store.DB
	vault  *memVault
	gate   *gate
	engine *rotation.Engine
	logs   *syncBuffer
	rec    *schedRecorder

	mu      sync.Mutex
	emus    map[string]*emulator.Server
	clients map[string]*codat.Client
	targets map[string]rotation.Target
}

func newSchedEnv(tb testing.TB, names ...string) *schedEnv {
	tb.Helper()
	e := &schedEnv{t: tb, clock: newSchedClock(epoch), db: storetest.MustOpen(tb), vault: &memVault{}, gate: newGate(),
		logs: &syncBuffer{}, emus: map[string]*emulator.Server{}, clients: map[string]*codat.Client{},
		targets: map[string]rotation.Target{}}
	e.rec = &schedRecorder{now: e.clock.Now}
	for _, name := range names {
		e.addTarget(name)
	}
	e.engine = &rotation.Engine{
		Store: e.db, Vault: adapt.Vault(e.vault),
		Codat: func(target string, key codat.Secret) rotation.Codat {
			e.mu.Lock()
			c := e.clients[target]
			e.mu.Unlock()
			return adapt.Codat(gatedCodat{inner: c.WithKey(key), g: e.gate, target: target})
		},
		Logger:   slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:      e.clock.Now,
		Sleep:    func(ctx context.Context, _ time.Duration) error { return ctx.Err() },
		Attempts: 2, RetryBackoff: time.Minute, VerifyAttempts: 2, VerifyInterval: time.Second, PublishAttempts: 2,
	}
	return e
}

// addTarget makes a target with its own emulator (grace 30m).
func (e *schedEnv) addTarget(name string) rotation.Target {
	e.t.Helper()
	emu, err := emulator.New(emulator.Options{Now: e.clock.Now})
	if err != nil {
		e.t.Fatalf("emulator.New: %v", err)
	}
	hs := httptest.NewServer(emu)
	e.t.Cleanup(func() { emu.Close(); hs.Close() })
	c, err := codat.New(codat.Secret(emu.InitialKey()), codat.Options{BaseURL: hs.URL, MaxAttempts: 1, RequestTimeout: waitLong,
		Now: e.clock.Now, Sleep: func(ctx context.Context, _ time.Duration) error { return ctx.Err() }})
	if err != nil {
		e.t.Fatalf("codat.New: %v", err)
	}
	t := rotation.Target{
		Name: name, Vault: rotation.Location{Mount: "secret", Path: "codat/" + name}, Prefix: prefix,
		MaxKeys: 10, ReserveSlots: 1, Grace: 30 * time.Minute,
		Bootstrap: func() (codat.Secret, error) { return codat.Secret(emu.InitialKey()), nil },
	}
	e.mu.Lock()
	e.emus[name], e.clients[name], e.targets[name] = emu, c, t
	e.mu.Unlock()
	return t
}

func (e *schedEnv) target(name string) rotation.Target {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.targets[name]
}

func (e *schedEnv) emu(name string) *emulator.Server {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.emus[name]
}

func (e *schedEnv) schedule(name, spec string) rotation.Schedule {
	return rotation.Schedule{Target: e.target(name), Spec: spec}
}

// newScheduler returns a scheduler on the env's engine and clock, with
// no jitter and no catch-up delay unless the test sets them.
func (e *schedEnv) newScheduler() *rotation.Scheduler {
	return &rotation.Scheduler{
		Engine:       e.engine,
		Clock:        e.clock,
		Logger:       e.engine.Logger,
		OnRotation:   e.rec.onRotation,
		OnRetire:     e.rec.onRetire,
		Jitter:       func(time.Duration) time.Duration { return 0 },
		CatchUpDelay: func(time.Duration) time.Duration { return 0 },
	}
}

// start starts s and stops it when the test ends.
func (e *schedEnv) start(s *rotation.Scheduler, schedules ...rotation.Schedule) {
	e.t.Helper()
	if err := s.Start(schedules); err != nil {
		e.t.Fatalf("Start: %v", err)
	}
	e.t.Cleanup(func() { stopWithin(s, waitLong) })
}

// rotate runs one rotation of name with the engine, outside a scheduler.
func (e *schedEnv) rotate(name string) rotation.Result {
	e.t.Helper()
	res, err := e.engine.Rotate(context.Background(), e.target(name), rotation.Options{})
	if err != nil {
		e.t.Fatalf("rotate %s: %v", name, err)
	}
	return res
}

func (e *schedEnv) state(name string) store.Target {
	e.t.Helper()
	st, err := e.db.Load(name)
	if err != nil {
		e.t.Fatalf("load state of %s: %v", name, err)
	}
	return st
}

func (e *schedEnv) update(name string, fn func(*store.Target)) {
	e.t.Helper()
	if err := e.db.Update(name, func(st *store.Target) error { fn(st); return nil }); err != nil {
		e.t.Fatalf("update state of %s: %v", name, err)
	}
}

// served is the key id Vault serves for name.
func (e *schedEnv) served(name string) string {
	e.t.Helper()
	cur, err := e.vault.Read(context.Background(), adapt.VaultLocation(e.target(name).Vault))
	if err != nil || cur.Secret == nil {
		return ""
	}
	return cur.Secret.KeyID
}

// liveKeys are the ids of name's keys at Codat.
func (e *schedEnv) liveKeys(name string) []string {
	var out []string
	for _, k := range e.emu(name).Keys() {
		if k.Deleted == nil {
			out = append(out, k.ID)
		}
	}
	return out
}

// rotationCall is one OnRotation call.
type rotationCall struct {
	target string
	opts   rotation.Options
	res    rotation.Result
	err    error
	// started is when the rotation began on the scheduler's clock.
	started time.Time
}

// retireCall is one OnRetire call.
type retireCall struct {
	target  string
	deleted []string
	err     error
}

// schedRecorder records what a scheduler reports through its hooks.
type schedRecorder struct {
	now       func() time.Time
	mu        sync.Mutex
	rotations []rotationCall
	retires   []retireCall
	changed   chan struct{}
}

func (r *schedRecorder) signal() {
	r.mu.Lock()
	if r.changed == nil {
		r.changed = make(chan struct{}, 1)
	}
	c := r.changed
	r.mu.Unlock()
	select {
	case c <- struct{}{}:
	default:
	}
}

func (r *schedRecorder) onRotation(target string, opts rotation.Options, res rotation.Result, err error, took time.Duration) {
	started := r.now().Add(-took)
	r.mu.Lock()
	r.rotations = append(r.rotations, rotationCall{target: target, opts: opts, res: res, err: err, started: started})
	r.mu.Unlock()
	r.signal()
}

func (r *schedRecorder) onRetire(target string, deleted []string, err error) {
	r.mu.Lock()
	r.retires = append(r.retires, retireCall{target: target, deleted: slices.Clone(deleted), err: err})
	r.mu.Unlock()
	r.signal()
}

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

// waitRotations waits until target has n rotations reported.
func (r *schedRecorder) waitRotations(tb testing.TB, target string, n int) []rotationCall {
	tb.Helper()
	return r.waitRotationsWithin(tb, target, n, waitLong)
}

// waitRotationsWithin is waitRotations with its own bound: a thousand
// rotations through the race detector on two shared cores take longer
// than one.
func (r *schedRecorder) waitRotationsWithin(tb testing.TB, target string, n int, d time.Duration) []rotationCall {
	tb.Helper()
	r.signal() // make sure the channel exists
	deadline := time.After(d)
	for {
		if got := r.rotationsOf(target); len(got) >= n {
			return got
		}
		r.mu.Lock()
		c := r.changed
		r.mu.Unlock()
		select {
		case <-c:
		case <-deadline:
			tb.Fatalf("gave up waiting for %d rotations of %s; %d reported", n, target, len(r.rotationsOf(target)))
		}
	}
}

// stopWithin stops s, giving running rotations d to finish.
func stopWithin(s *rotation.Scheduler, d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	s.Stop(ctx)
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

func logged(tb testing.TB, logs *syncBuffer, msg, target string) int {
	tb.Helper()
	return len(logRecords(tb, logs, msg, target))
}

// noErrBusy fails the test if any run reported ErrBusy: runs overlapped.
func (e *schedEnv) noErrBusy() {
	e.t.Helper()
	e.rec.mu.Lock()
	defer e.rec.mu.Unlock()
	for _, c := range e.rec.rotations {
		if errors.Is(c.err, rotation.ErrBusy) {
			e.t.Errorf("%s: a rotation was refused as busy: %v", c.target, c.err)
		}
	}
	for _, c := range e.rec.retires {
		if errors.Is(c.err, rotation.ErrBusy) {
			e.t.Errorf("%s: a retirement was refused as busy: %v", c.target, c.err)
		}
	}
}

// TestSchedulerNextIsThePlannedRun: Next is when the loop will really
// start the rotation, jitter included, and the rotation starts then, not
// earlier.
func TestSchedulerNextIsThePlannedRun(t *testing.T) {
	t.Parallel()
	e := newSchedEnv(t, "prod")
	e.rotate("prod") // rotated just now: no catch-up
	s := e.newScheduler()
	const jitter = 7 * time.Minute
	var asked []time.Duration
	var mu sync.Mutex
	s.Jitter = func(max time.Duration) time.Duration {
		mu.Lock()
		asked = append(asked, max)
		mu.Unlock()
		return jitter
	}
	e.start(s, rotation.Schedule{Target: e.target("prod"), Spec: "@every 1h", Jitter: 10 * time.Minute})
	e.clock.waitParked(t, 1)
	now := e.clock.Now()
	want := now.Add(time.Hour + jitter)
	if got := s.Next("prod"); !got.Equal(want) {
		t.Fatalf("Next = %s, want the tick plus its jitter %s", got, want)
	}
	if got := s.Next("prod"); !got.Equal(want) {
		t.Errorf("Next asked again = %s, want the same planned run %s", got, want)
	}
	e.clock.Advance(time.Hour + jitter - time.Second)
	e.clock.waitParked(t, 1)
	if got := len(e.rec.rotationsOf("prod")); got != 0 {
		t.Fatalf("%d rotations a second before the planned run, want 0", got)
	}
	e.clock.Advance(time.Second)
	calls := e.rec.waitRotations(t, "prod", 1)
	if calls[0].err != nil {
		t.Fatalf("scheduled rotation: %v", calls[0].err)
	}
	e.clock.waitParked(t, 1)
	if got, want := s.Next("prod"), now.Add(2*time.Hour+jitter); !got.Equal(want) {
		t.Errorf("Next after the run = %s, want the following tick plus jitter %s", got, want)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(asked) < 2 || asked[0] != 10*time.Minute {
		t.Errorf("jitter drawn with %v, want the schedule's 10m once per tick", asked)
	}
}

// TestNextRotationAtIsTheLoopsRun (issue 16): for cron and @every
// schedules, with jitter, the next_rotation_at a scheduled or manual
// rotation publishes is what Next says (status and the metric read
// Next), and the loop's next rotation starts exactly then, however long
// the rotation that published it took.
func TestNextRotationAtIsTheLoopsRun(t *testing.T) {
	t.Parallel()
	for _, spec := range []string{"@every 1h", "20 * * * *"} {
		t.Run(spec, func(t *testing.T) {
			t.Parallel()
			e := newSchedEnv(t, "prod")
			e.rotate("prod") // rotated just now: no catch-up
			s := e.newScheduler()
			var mu sync.Mutex
			draws := 0
			s.Jitter = func(max time.Duration) time.Duration {
				mu.Lock()
				defer mu.Unlock()
				draws++
				return time.Duration(draws*7%11) * time.Minute // 7m, 3m, 10m, 6m...
			}
			// The target's own NextRotation, as cmd sets it for rotations
			// outside a daemon: the scheduler's runs must not use it.
			sched, err := rotation.ParseSchedule(spec)
			if err != nil {
				t.Fatal(err)
			}
			target := e.target("prod")
			target.NextRotation = sched.Next
			e.start(s, rotation.Schedule{Target: target, Spec: spec, Jitter: 15 * time.Minute})
			e.clock.waitParked(t, 1)

			published := func() time.Time {
				t.Helper()
				cur, err := e.vault.Read(context.Background(), adapt.VaultLocation(e.target("prod").Vault))
				if err != nil || cur.Secret == nil {
					t.Fatalf("read the secret: %v", err)
				}
				return cur.Secret.NextRotationAt
			}
			for round := 1; round <= 3; round++ {
				next := s.Next("prod")
				if !next.After(e.clock.Now()) {
					t.Fatalf("round %d: Next = %s, not after now %s", round, next, e.clock.Now())
				}
				// The rotation takes 90 s on the clock: a next run computed
				// from the publish would land 90 s late.
				release := e.gate.hold("create")
				e.clock.Advance(next.Sub(e.clock.Now()))
				e.gate.waitEntered(t, "create")
				calls := e.rec.rotationsOf("prod")
				e.clock.Advance(90 * time.Second)
				release()
				calls = e.rec.waitRotations(t, "prod", len(calls)+1)
				e.clock.waitParked(t, 1)
				c := calls[len(calls)-1]
				if c.err != nil {
					t.Fatalf("round %d: rotation: %v", round, c.err)
				}
				if !c.started.Equal(next) {
					t.Errorf("round %d: the rotation started at %s, want %s, the Next planned before it", round, c.started, next)
				}
				if got, want := published(), s.Next("prod"); !got.Equal(want) {
					t.Errorf("round %d: next_rotation_at = %s, want Next = %s", round, got, want)
				}
			}

			// A manual rotation publishes the loop's next run too, and
			// leaves it where it was.
			next := s.Next("prod")
			e.clock.Advance(5 * time.Minute)
			if _, err := s.RotateNow("prod", rotation.Options{Manual: true}); err != nil {
				t.Fatalf("manual rotation: %v", err)
			}
			e.clock.waitParked(t, 1)
			if got := published(); !got.Equal(next) {
				t.Errorf("manual rotation published next_rotation_at = %s, want the loop's next run %s", got, next)
			}
			if got := s.Next("prod"); !got.Equal(next) {
				t.Errorf("after the manual rotation Next = %s, want it unchanged at %s", got, next)
			}
			n := len(e.rec.rotationsOf("prod"))
			e.clock.Advance(next.Sub(e.clock.Now()))
			calls := e.rec.waitRotations(t, "prod", n+1)
			if got := calls[len(calls)-1].started; !got.Equal(next) {
				t.Errorf("the scheduled run after the manual one started at %s, want %s", got, next)
			}
		})
	}
}

// TestSchedulerCatchUp: at start, a target that never rotated, or whose
// last success is older than its most recent scheduled time, rotates
// after the catch-up delay; one that rotated since does not
// (docs/design.md#scheduling).
func TestSchedulerCatchUp(t *testing.T) {
	t.Parallel()
	const never, stale, fresh, staleCron = "never", "stale", "fresh", "stale-cron"
	e := newSchedEnv(t, never, stale, fresh, staleCron)
	for _, name := range []string{stale, fresh, staleCron} {
		e.rotate(name)
	}
	now := e.clock.Now()
	e.update(stale, func(st *store.Target) { st.LastSuccess = now.Add(-61 * time.Minute) })
	e.update(staleCron, func(st *store.Target) { st.LastSuccess = now.Truncate(time.Hour).Add(-time.Minute) })
	s := e.newScheduler()
	var mu sync.Mutex
	asked := map[time.Duration]int{}
	s.CatchUpDelay = func(max time.Duration) time.Duration {
		mu.Lock()
		asked[max]++
		mu.Unlock()
		return 3 * time.Minute
	}
	sc := func(name, spec string) rotation.Schedule {
		return rotation.Schedule{Target: e.target(name), Spec: spec, Jitter: 5 * time.Minute}
	}
	e.start(s, sc(never, "@every 1h"), sc(stale, "@every 1h"), sc(fresh, "@every 1h"), sc(staleCron, "0 * * * *"))
	// The decision is made and logged by Start itself.
	for name, want := range map[string]int{never: 1, stale: 1, fresh: 0, staleCron: 1} {
		if got := logged(t, e.logs, msgCatchUp, name); got != want {
			t.Errorf("%s: catch-up logged %d times, want %d", name, got, want)
		}
	}
	mu.Lock()
	if asked[5*time.Minute] != 3 {
		t.Errorf("CatchUpDelay asked %v, want 3 times with the targets' jitter 5m", asked)
	}
	mu.Unlock()
	e.clock.waitParked(t, 4)
	e.clock.Advance(3*time.Minute - time.Second)
	e.clock.waitParked(t, 4)
	if n := len(e.rec.rotations); n != 0 {
		t.Fatalf("%d rotations before the catch-up delay, want 0", n)
	}
	e.clock.Advance(time.Second)
	for _, name := range []string{never, stale, staleCron} {
		c := e.rec.waitRotations(t, name, 1)[0]
		if c.err != nil {
			t.Errorf("%s: catch-up rotation: %v", name, c.err)
			continue
		}
		if got := e.served(name); got != c.res.NewKey.ID {
			t.Errorf("%s: vault serves %s, want the catch-up's key %s", name, got, c.res.NewKey.ID)
		}
	}
	e.clock.waitParked(t, 4)
	if got := e.rec.rotationsOf(fresh); len(got) != 0 {
		t.Errorf("%s rotated %d times at start though it rotated after its most recent scheduled time", fresh, len(got))
	}
	if !e.rec.rotationsOf(never)[0].res.Bootstrapped {
		t.Errorf("%s: the first rotation did not publish the bootstrap key first", never)
	}
}

// TestSchedulerFinishesJournalAtStart: a journal a crash left is finished
// at once at start, before any tick, without a second rotation.
func TestSchedulerFinishesJournalAtStart(t *testing.T) {
	t.Parallel()
	e := newSchedEnv(t, "prod")
	e.rotate("prod")
	now := e.clock.Now()
	// A crash right after the create step was journaled, before Codat saw
	// the create.
	e.update("prod", func(st *store.Target) {
		st.Journal = &store.Journal{RotationID: "r-crashed", Step: store.StepCreate, Started: now, Updated: now,
			Name: prefix + "20260302T030000Z-abcd", PrevKeyID: e.served("prod")}
	})
	s := e.newScheduler()
	e.start(s, e.schedule("prod", "@every 1h"))
	recs := logRecords(t, e.logs, msgJournal, "prod")
	if len(recs) != 1 || recs[0]["step"] != string(store.StepCreate) {
		t.Errorf("journal at start logged as %v, want one record with step create", recs)
	}
	c := e.rec.waitRotations(t, "prod", 1)[0]
	if c.err != nil {
		t.Fatalf("finishing the journal: %v", c.err)
	}
	if st := e.state("prod"); st.Journal != nil {
		t.Errorf("journal after the run = %+v, want none", st.Journal)
	}
	if got := e.clock.Now(); !got.Equal(now) {
		t.Errorf("the journal was finished at %s, want at once (%s)", got, now)
	}
	e.clock.waitParked(t, 1)
	if got := len(e.rec.rotationsOf("prod")); got != 1 {
		t.Errorf("%d rotations at start, want the journal's only", got)
	}
}

// holdRetirement leaves name with a retiring key already past due, its
// last success older than its schedule, and Codat's deletes held.
func holdRetirement(e *schedEnv, name string) (retiring string, release func()) {
	e.t.Helper()
	res := e.rotate(name)
	if len(res.Retiring) != 1 {
		e.t.Fatalf("after the first rotation: retiring %+v, want the bootstrap key", res.Retiring)
	}
	e.clock.Advance(2 * time.Hour) // past the grace and the next tick
	return res.Retiring[0].ID, e.gate.hold("delete")
}

// TestSchedulerCatchUpDuringRetirement (issue 9, defect 3): at start the
// retirement of a key already past due holds the target when the
// catch-up comes due; the catch-up runs when the retirement ends, and a
// scheduled tick that comes due during a retirement does too. Neither is
// dropped as busy.
func TestSchedulerCatchUpDuringRetirement(t *testing.T) {
	t.Parallel()
	e := newSchedEnv(t, "prod")
	old, release := holdRetirement(e, "prod")
	s := e.newScheduler()
	s.CatchUpDelay = func(time.Duration) time.Duration { return time.Minute }
	e.start(s, e.schedule("prod", "@every 1h"))
	if got := logged(t, e.logs, msgCatchUp, "prod"); got != 1 {
		t.Fatalf("catch-up logged %d times, want 1", got)
	}
	e.gate.waitEntered(t, "delete") // the retirement holds the target
	e.clock.Advance(time.Minute)    // the catch-up comes due
	release()
	c := e.rec.waitRotations(t, "prod", 1)[0]
	if c.err != nil {
		t.Fatalf("catch-up rotation after the retirement: %v", c.err)
	}
	retires := e.rec.retiresOf("prod")
	if len(retires) == 0 || !slices.Contains(retires[0].deleted, old) {
		t.Errorf("retirements %+v, want the first to delete %s", retires, old)
	}
	e.clock.waitParked(t, 1)

	// A tick that comes due while a retirement holds the target.
	next := s.Next("prod")
	retiring := c.res.Retiring[0]
	release = e.gate.hold("delete")
	e.clock.Advance(retiring.DeleteAfter.Sub(e.clock.Now()))
	e.gate.waitEntered(t, "delete")
	e.clock.Advance(next.Sub(e.clock.Now()))
	release()
	c2 := e.rec.waitRotations(t, "prod", 2)[1]
	if c2.err != nil {
		t.Fatalf("scheduled rotation after the retirement: %v", c2.err)
	}
	e.clock.waitParked(t, 1)
	if got := len(e.rec.rotationsOf("prod")); got != 2 {
		t.Errorf("%d rotations, want the catch-up and the tick", got)
	}
	if !slices.Contains(e.rec.retiresOf("prod")[1].deleted, retiring.ID) {
		t.Errorf("the second retirement did not delete %s", retiring.ID)
	}
	if got := e.served("prod"); got != c2.res.NewKey.ID {
		t.Errorf("vault serves %s, want the tick's key %s", got, c2.res.NewKey.ID)
	}
	if p := e.gate.peakOf("prod"); p > 1 {
		t.Errorf("%d codat calls in flight at once: runs overlapped", p)
	}
	e.noErrBusy()
}

// TestSchedulerQueuesManualAndTicks: a manual rotation asked while a
// scheduled one runs waits for it and then runs; ticks that come due
// during a manual or a scheduled rotation run after it, once.
func TestSchedulerQueuesManualAndTicks(t *testing.T) {
	t.Parallel()
	e := newSchedEnv(t, "prod")
	e.rotate("prod")
	s := e.newScheduler()
	e.start(s, e.schedule("prod", "@every 1h"))
	e.clock.waitParked(t, 1)

	release := e.gate.hold("create")
	e.clock.Advance(time.Hour) // the tick
	e.gate.waitEntered(t, "create")
	manual := make(chan error, 1)
	go func() {
		_, err := s.RotateNow("prod", rotation.Options{Manual: true})
		manual <- err
	}()
	// The manual rotation waits behind the tick; the tick finishes.
	release()
	select {
	case err := <-manual:
		if err != nil {
			t.Fatalf("manual rotation queued behind a tick: %v", err)
		}
	case <-time.After(waitLong):
		t.Fatal("the manual rotation never ran")
	}
	calls := e.rec.waitRotations(t, "prod", 2)
	if calls[0].opts.Manual || !calls[1].opts.Manual {
		t.Errorf("rotations ran as %+v then %+v, want the tick then the manual one", calls[0].opts, calls[1].opts)
	}

	// A tick that comes due during a manual rotation.
	e.clock.waitParked(t, 1)
	release = e.gate.hold("create")
	go func() {
		_, err := s.RotateNow("prod", rotation.Options{Manual: true})
		manual <- err
	}()
	e.gate.waitEntered(t, "create")
	e.clock.Advance(3 * time.Hour) // three ticks pass: one run owed
	release()
	if err := <-manual; err != nil {
		t.Fatalf("second manual rotation: %v", err)
	}
	e.rec.waitRotations(t, "prod", 4)
	e.clock.waitParked(t, 1)
	calls = e.rec.rotationsOf("prod")
	if len(calls) != 4 || calls[3].opts.Manual {
		t.Errorf("%d rotations, want 4 with the last the tick owed after the manual one", len(calls))
	}
	for i, c := range calls {
		if c.err != nil {
			t.Errorf("rotation %d: %v", i, c.err)
		}
	}
	if got := s.Next("prod"); !got.After(e.clock.Now()) {
		t.Errorf("Next = %s, not after now %s: a run is still owed", got, e.clock.Now())
	}
	// A tick that comes due while a scheduled rotation runs: one more run.
	release = e.gate.hold("create")
	e.clock.Advance(s.Next("prod").Sub(e.clock.Now()))
	e.gate.waitEntered(t, "create")
	e.clock.Advance(2 * time.Hour) // two more ticks pass
	release()
	e.rec.waitRotations(t, "prod", 6)
	e.clock.waitParked(t, 1)
	if got := len(e.rec.rotationsOf("prod")); got != 6 {
		t.Errorf("%d rotations, want 6: the held tick and one for the ticks that passed during it", got)
	}
	if got, want := len(e.emu("prod").Keys()), 8; got != want {
		t.Errorf("codat holds %d keys ever made, want %d (the initial, the first rotation's and 6 more)", got, want)
	}
	if p := e.gate.peakOf("prod"); p > 1 {
		t.Errorf("%d codat calls in flight at once: runs overlapped", p)
	}
	e.noErrBusy()
}

// TestSchedulerApplyMidRotation (issue 9, defect 5): a reload that removes
// a target while it rotates lets the rotation finish with the definition
// and the Codat client it started with, then ends the target's loop; a
// reload that changes a target mid-rotation takes effect from its next
// run. Clients are installed as cmd installs them: by the definition's
// Activate, which the target's loop calls between two runs.
func TestSchedulerApplyMidRotation(t *testing.T) {
	t.Parallel()
	const gone, changed = "gone", "changed"
	e := newSchedEnv(t, gone, changed)
	e.rotate(gone)
	e.rotate(changed)
	type client struct {
		c   *codat.Client
		tag string
	}
	var mu sync.Mutex
	var activations []string
	clients := map[string]client{}
	used := map[string][]string{} // target -> tags of the clients its calls used
	e.engine.Codat = func(target string, key codat.Secret) rotation.Codat {
		mu.Lock()
		c := clients[target]
		used[target] = append(used[target], c.tag)
		mu.Unlock()
		return adapt.Codat(gatedCodat{inner: c.c.WithKey(key), g: e.gate, target: target})
	}
	sched := func(name string, grace time.Duration, tag string) rotation.Schedule {
		t := e.target(name)
		t.Grace = grace
		e.mu.Lock()
		c := e.clients[name]
		e.mu.Unlock()
		return rotation.Schedule{Target: t, Spec: "@every 1h", Activate: func() {
			mu.Lock()
			defer mu.Unlock()
			clients[name] = client{c, tag}
			activations = append(activations, tag)
		}}
	}
	usedTags := func(target string) []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Compact(slices.Clone(used[target]))
	}
	s := e.newScheduler()
	e.start(s, sched(gone, 30*time.Minute, "gone-1"), sched(changed, 30*time.Minute, "changed-1"))
	e.clock.waitParked(t, 2)

	// Both rotate manually; both hold at the create.
	release := e.gate.hold("create")
	results := make(chan error, 2)
	for _, name := range []string{gone, changed} {
		go func() {
			_, err := s.RotateNow(name, rotation.Options{Manual: true})
			results <- err
		}()
		e.gate.waitEntered(t, "create")
	}
	if err := s.Apply([]rotation.Schedule{sched(changed, 10*time.Minute, "changed-2")}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if got := s.Names(); !slices.Equal(got, []string{changed}) {
		t.Errorf("Names after the reload = %v, want [%s]", got, changed)
	}
	if _, err := s.RotateNow(gone, rotation.Options{}); err == nil {
		t.Errorf("RotateNow(%s) after its removal succeeded, want an error", gone)
	}
	release()
	for range 2 {
		select {
		case err := <-results:
			if err != nil {
				t.Errorf("a rotation in flight during the reload: %v", err)
			}
		case <-time.After(waitLong):
			t.Fatal("a rotation in flight during the reload never finished")
		}
	}
	e.clock.waitParked(t, 1) // the removed target's loop ended
	if st := e.state(gone); st.Journal != nil {
		t.Errorf("%s: journal after its last rotation = %+v, want none", gone, st.Journal)
	}
	if got, want := len(e.liveKeys(gone)), 3; got != want {
		t.Errorf("%s: %d live keys at codat, want %d (the bootstrap key in its grace and two rotations')", gone, got, want)
	}
	st := e.state(gone)
	for _, k := range e.liveKeys(gone) {
		if st.Key(k) == nil {
			t.Errorf("%s: key %s at codat is not in the state file", gone, k)
		}
	}
	// The rotations in flight kept their clients and their old grace.
	if got := usedTags(gone); !slices.Equal(got, []string{"gone-1"}) {
		t.Errorf("%s: calls used clients %v, want only its first", gone, got)
	}
	if got := usedTags(changed); !slices.Equal(got, []string{"changed-1"}) {
		t.Errorf("%s: the rotation in flight used clients %v, want only its first", changed, got)
	}
	first := e.rec.rotationsOf(changed)[0]
	if g := first.res.Retiring[0].DeleteAfter.Sub(e.clock.Now()); g != 30*time.Minute {
		t.Errorf("the rotation in flight retires with grace %s, want the old 30m", g)
	}
	// The next rotation of the changed target has its new definition.
	res, err := s.RotateNow(changed, rotation.Options{Manual: true})
	if err != nil {
		t.Fatalf("rotation after the reload: %v", err)
	}
	if g := res.Retiring[0].DeleteAfter.Sub(e.clock.Now()); g != 10*time.Minute {
		t.Errorf("the next rotation retires with grace %s, want the new 10m", g)
	}
	if got := usedTags(changed); !slices.Equal(got, []string{"changed-1", "changed-2"}) {
		t.Errorf("%s: calls used clients %v, want the first, then the reload's", changed, got)
	}
	mu.Lock()
	if n := len(activations); n != 3 || activations[2] != "changed-2" {
		t.Errorf("activations %v, want each first definition, then changed-2 after the run", activations)
	}
	mu.Unlock()
	// The removed target neither rotates nor retires any more.
	e.clock.Advance(3 * time.Hour)
	e.clock.waitParked(t, 1)
	if got := len(e.rec.rotationsOf(gone)); got != 1 {
		t.Errorf("%s rotated %d times, want only the one in flight at its removal", gone, got)
	}
	if got := e.rec.retiresOf(gone); len(got) != 0 {
		t.Errorf("%s retired after its removal: %+v", gone, got)
	}
	e.noErrBusy()
}

// TestSchedulerApplyReplans: a reload with a rarer schedule replans the
// next run from the new schedule; one that re-adds a target before its
// loop ended keeps a single loop; a bad reload changes nothing.
func TestSchedulerApplyReplans(t *testing.T) {
	t.Parallel()
	e := newSchedEnv(t, "prod")
	e.rotate("prod")
	s := e.newScheduler()
	e.start(s, e.schedule("prod", "@every 1m"))
	e.clock.waitParked(t, 1)
	if err := s.Apply([]rotation.Schedule{e.schedule("prod", "@every 1h")}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if got, want := s.Next("prod"), e.clock.Now().Add(time.Hour); !got.Equal(want) {
		t.Errorf("Next after the reload = %s, want %s", got, want)
	}
	e.clock.waitParked(t, 1)
	e.clock.Advance(59 * time.Minute)
	e.clock.waitParked(t, 1)
	if got := len(e.rec.rotationsOf("prod")); got != 0 {
		t.Errorf("%d rotations within the hour after the reload, want 0", got)
	}

	other := e.target("prod")
	other.Name = "other"
	for _, tc := range []struct {
		name      string
		schedules []rotation.Schedule
		wantErr   string
	}{
		{"bad spec", []rotation.Schedule{e.schedule("prod", "every hour")}, `target prod: schedule "every hour"`},
		{"bad spec of a new target", []rotation.Schedule{e.schedule("prod", "@every 1s"), {Target: other, Spec: "61 * * * *"}}, `target other: schedule "61 * * * *"`},
		{"a target twice", []rotation.Schedule{e.schedule("prod", "@every 1s"), e.schedule("prod", "@every 2s")}, "target prod: scheduled twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := s.Next("prod")
			err := s.Apply(tc.schedules)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Apply = %v, want an error containing %q", err, tc.wantErr)
			}
			if got := s.Names(); !slices.Equal(got, []string{"prod"}) {
				t.Errorf("Names = %v, want [prod]", got)
			}
			if got := s.Next("prod"); !got.Equal(before) {
				t.Errorf("Next = %s, want the old plan %s", got, before)
			}
		})
	}

	// Removed and re-added while a rotation runs: one loop, no overlap.
	release := e.gate.hold("create")
	done := make(chan error, 1)
	go func() {
		_, err := s.RotateNow("prod", rotation.Options{})
		done <- err
	}()
	e.gate.waitEntered(t, "create")
	if err := s.Apply(nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Apply([]rotation.Schedule{e.schedule("prod", "@every 1h")}); err != nil {
		t.Fatal(err)
	}
	queued := make(chan error, 1)
	go func() {
		_, err := s.RotateNow("prod", rotation.Options{})
		queued <- err
	}()
	release()
	for _, c := range []chan error{done, queued} {
		select {
		case err := <-c:
			if err != nil {
				t.Errorf("rotation around the remove and re-add: %v", err)
			}
		case <-time.After(waitLong):
			t.Fatal("a rotation around the remove and re-add never finished")
		}
	}
	e.clock.waitParked(t, 1)
	if p := e.gate.peakOf("prod"); p > 1 {
		t.Errorf("%d codat calls in flight at once: two loops ran the target", p)
	}
	e.noErrBusy()
}

// TestSchedulerRetireBackoff (issue 9, defect 8): failed retirements are
// retried after 1m, 2m, 4m... capped, then given up after the budget,
// reported once as ErrRetireExhausted and logged once; the next
// rotation retires what is due.
func TestSchedulerRetireBackoff(t *testing.T) {
	t.Parallel()
	e := newSchedEnv(t, "prod")
	res := e.rotate("prod")
	old := res.Retiring[0]
	s := e.newScheduler()
	s.RetireBackoff, s.RetireBackoffMax, s.RetireAttempts = time.Minute, 4*time.Minute, 5
	e.start(s, e.schedule("prod", "@every 24h"))
	e.clock.waitParked(t, 1)
	if got := s.NextRetire("prod"); !got.Equal(old.DeleteAfter) {
		t.Fatalf("NextRetire = %s, want the retiring key's delete_after %s", got, old.DeleteAfter)
	}
	e.vault.setFail(vault.ErrUnreachable)
	e.clock.Advance(old.DeleteAfter.Sub(e.clock.Now()))
	// Attempts at +0, +1m, +2m (wait 2m), +4m (wait 4m), +4m (capped).
	var gaps []time.Duration
	last := e.clock.Now()
	for attempt := 1; attempt <= 5; attempt++ {
		e.clock.waitParked(t, 1)
		if got := len(e.rec.retiresOf("prod")); got != attempt {
			t.Fatalf("after attempt %d: %d retirement passes reported", attempt, got)
		}
		next := s.NextRetire("prod")
		if attempt == 5 {
			if !next.IsZero() {
				t.Errorf("NextRetire after the budget = %s, want none", next)
			}
			break
		}
		gaps = append(gaps, next.Sub(last))
		e.clock.Advance(next.Sub(e.clock.Now()))
		last = next
	}
	if want := []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 4 * time.Minute}; !slices.Equal(gaps, want) {
		t.Errorf("waits between attempts %v, want %v", gaps, want)
	}
	retires := e.rec.retiresOf("prod")
	for i, c := range retires {
		exhausted := errors.Is(c.err, rotation.ErrRetireExhausted)
		if c.err == nil || exhausted != (i == len(retires)-1) {
			t.Errorf("retirement %d: error %v; want a failure, exhausted only on the last", i, c.err)
		}
	}
	if got := logged(t, e.logs, msgRetireRetry, "prod"); got != 4 {
		t.Errorf("retry logged %d times, want 4", got)
	}
	if got := logged(t, e.logs, msgRetireGaveUp, "prod"); got != 1 {
		t.Errorf("giving up logged %d times, want once", got)
	}
	// Given up: hours pass without another attempt or line.
	e.clock.Advance(6 * time.Hour)
	e.clock.waitParked(t, 1)
	if got := len(e.rec.retiresOf("prod")); got != 5 {
		t.Errorf("%d retirement passes after giving up, want still 5", got)
	}
	if got := logged(t, e.logs, msgRetireGaveUp, "prod"); got != 1 {
		t.Errorf("giving up logged %d times, want once", got)
	}
	// Vault is back; the next rotation retires the key.
	e.vault.setFail(nil)
	res2, err := s.RotateNow("prod", rotation.Options{})
	if err != nil {
		t.Fatalf("rotation after the outage: %v", err)
	}
	if !slices.Contains(res2.Deleted, old.ID) {
		t.Errorf("the rotation deleted %v, want %s among them", res2.Deleted, old.ID)
	}
}

// TestSchedulerNoRetireTimerWhenHaltedOrJournaled (issue 9, defect 8): a
// halted target, or one whose journal is unfinished, retires nothing on
// a timer and logs no retirement error, however long it waits.
func TestSchedulerNoRetireTimerWhenHaltedOrJournaled(t *testing.T) {
	t.Parallel()
	const halted, journaled = "halted", "journaled"
	e := newSchedEnv(t, halted, journaled)
	for _, name := range []string{halted, journaled} {
		e.rotate(name)
	}
	e.clock.Advance(time.Hour) // both retiring keys are past due
	now := e.clock.Now()
	e.update(halted, func(st *store.Target) { st.Halted, st.HaltReason, st.HaltedAt = true, "halted by the test", now })
	e.update(journaled, func(st *store.Target) {
		st.Halted, st.HaltReason, st.HaltedAt = true, "halted mid-rotation", now
		st.Journal = &store.Journal{RotationID: "r-x", Step: store.StepCreate, Started: now, Updated: now, Name: prefix + "x"}
	})
	s := e.newScheduler()
	e.start(s, e.schedule(halted, "@every 24h"), e.schedule(journaled, "@every 24h"))
	if got := logged(t, e.logs, msgHaltedAtStart, halted); got != 1 {
		t.Errorf("halted target logged %d times at start, want 1", got)
	}
	for range 120 {
		e.clock.waitParked(t, 2)
		e.clock.Advance(time.Minute)
	}
	e.clock.waitParked(t, 2)
	for _, name := range []string{halted, journaled} {
		if got := e.rec.retiresOf(name); len(got) != 0 {
			t.Errorf("%s: %d retirement passes in two hours, want none", name, len(got))
		}
		if !s.NextRetire(name).IsZero() {
			t.Errorf("%s: NextRetire = %s, want none", name, s.NextRetire(name))
		}
		if got := logged(t, e.logs, msgRetireRetry, name); got != 0 {
			t.Errorf("%s: retirement retries logged %d times", name, got)
		}
	}
	// Resumed, the halted target retires its due key within a minute.
	if err := e.engine.Resume(e.target(halted)); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Minute)
	e.clock.waitParked(t, 2)
	if got := e.rec.retiresOf(halted); len(got) != 1 || got[0].err != nil || len(got[0].deleted) != 1 {
		t.Errorf("after resume: retirements %+v, want one that deleted the due key", got)
	}
}

// TestSchedulerHaltedAndFailingTargets: a halted target's ticks are
// skipped and logged; a target whose Codat fails halts itself; a healthy
// target keeps rotating on schedule through both.
func TestSchedulerHaltedAndFailingTargets(t *testing.T) {
	t.Parallel()
	const healthy, halted, broken = "healthy", "halted", "broken"
	e := newSchedEnv(t, healthy, halted, broken)
	for _, name := range []string{healthy, halted, broken} {
		e.rotate(name)
	}
	now := e.clock.Now()
	e.update(halted, func(st *store.Target) { st.Halted, st.HaltReason, st.HaltedAt = true, "halted by the test", now })
	if err := e.emu(broken).SetFaults(emulator.Faults{List: emulator.OpFaults{Fail: 1 << 20, FailStatus: 503}}); err != nil {
		t.Fatal(err)
	}
	s := e.newScheduler()
	e.start(s, e.schedule(healthy, "@every 1h"), e.schedule(halted, "@every 1h"), e.schedule(broken, "@every 1h"))
	for range 3 {
		e.clock.waitParked(t, 3)
		e.clock.Advance(time.Hour)
	}
	e.clock.waitParked(t, 3)
	if got := len(e.rec.rotationsOf(healthy)); got != 3 {
		t.Errorf("healthy target rotated %d times in 3 hours, want 3", got)
	}
	for _, c := range e.rec.rotationsOf(healthy) {
		if c.err != nil {
			t.Errorf("healthy target: %v", c.err)
		}
	}
	if got := len(e.rec.rotationsOf(halted)); got != 0 {
		t.Errorf("halted target: %d rotations reported, want 0", got)
	}
	if got := logged(t, e.logs, msgSkipHalted, halted); got != 3 {
		t.Errorf("halted target: %d skipped ticks logged, want 3", got)
	}
	if !e.state(broken).Halted {
		t.Error("the broken target did not halt")
	}
	if bc := e.rec.rotationsOf(broken); len(bc) != 1 || bc[0].err == nil {
		t.Errorf("broken target: %d rotations reported, want one failure, then halted", len(bc))
	}
}

// TestSchedulerPanicDoesNotStopTheLoop: a panicking hook is logged and
// the target keeps its schedule.
func TestSchedulerPanicDoesNotStopTheLoop(t *testing.T) {
	t.Parallel()
	e := newSchedEnv(t, "prod")
	e.rotate("prod")
	s := e.newScheduler()
	var once sync.Once
	s.OnRotation = func(target string, opts rotation.Options, res rotation.Result, err error, took time.Duration) {
		e.rec.onRotation(target, opts, res, err, took)
		once.Do(func() { panic("hook exploded") })
	}
	e.start(s, e.schedule("prod", "@every 1h"))
	for range 2 {
		e.clock.waitParked(t, 1)
		e.clock.Advance(time.Hour)
	}
	e.rec.waitRotations(t, "prod", 2)
	recs := logRecords(t, e.logs, "panic in the rotation hook", "prod")
	if len(recs) != 1 || recs[0]["level"] != "ERROR" || !strings.Contains(fmt.Sprint(recs[0]["error"]), "hook exploded") {
		t.Errorf("panic records %v, want one ERROR naming the panic", recs)
	}
}

// TestSchedulerStop: Stop lets a running rotation run until its context
// ends, then cancels it, leaving the journal for the next start; idle, it
// returns at once; after it, manual rotations are refused.
func TestSchedulerStop(t *testing.T) {
	t.Parallel()
	e := newSchedEnv(t, "prod")
	e.rotate("prod")
	s := e.newScheduler()
	e.start(s, e.schedule("prod", "@every 1h"))
	e.clock.waitParked(t, 1)
	release := e.gate.hold("create")
	defer release()
	manual := make(chan error, 1)
	go func() {
		_, err := s.RotateNow("prod", rotation.Options{})
		manual <- err
	}()
	e.gate.waitEntered(t, "create")
	stopWithin(s, 50*time.Millisecond) // the create never returns
	// Stop waited for the rotation it cancelled.
	calls := e.rec.rotationsOf("prod")
	if len(calls) != 1 || !errors.Is(calls[0].err, context.Canceled) {
		t.Errorf("rotations reported when Stop returned: %+v, want one cancelled", calls)
	}
	// Whatever the cancelled run left, no key is lost track of.
	st := e.state("prod")
	for _, id := range e.liveKeys("prod") {
		if st.Key(id) == nil {
			t.Errorf("key %s at codat is not in the state file after Stop", id)
		}
	}
	if err := <-manual; !errors.Is(err, context.Canceled) {
		t.Errorf("the cancelled rotation returned %v, want context.Canceled", err)
	}
	if got := logged(t, e.logs, msgShutdown, ""); got != 1 {
		t.Errorf("shutdown cancellation logged %d times, want 1", got)
	}
	stopWithin(s, waitLong) // a second Stop does nothing
	if _, err := s.RotateNow("prod", rotation.Options{}); err == nil {
		t.Error("RotateNow after Stop succeeded, want a refusal")
	}
	if s.Alive(time.Hour) {
		t.Error("Alive after Stop = true")
	}
	var never rotation.Scheduler
	never.Stop(context.Background()) // never started: nothing to do
	if never.Alive(time.Hour) {
		t.Error("Alive before Start = true")
	}
}

// TestSchedulerAlive: loops waiting for their next event are alive
// however long they wait; a loop wedged outside the engine (here in a
// hook) shows as not alive, and alive again once it moves.
func TestSchedulerAlive(t *testing.T) {
	t.Parallel()
	e := newSchedEnv(t, "prod", "wedged")
	s := e.newScheduler()
	unwedge := make(chan struct{})
	wedged := make(chan struct{})
	sc := e.schedule("wedged", "@every 1h")
	var calls int
	sc.Activate = func() {
		calls++
		if calls == 2 { // the definition a reload brings
			close(wedged)
			<-unwedge
		}
	}
	e.start(s, e.schedule("prod", "@every 1h"), sc)
	e.clock.waitParked(t, 2)
	if !s.Alive(30 * time.Second) {
		t.Fatal("Alive = false right after Start")
	}
	for range 6 {
		e.clock.Advance(10 * time.Second)
		e.clock.waitParked(t, 2)
	}
	if !s.Alive(30 * time.Second) {
		t.Error("Alive = false with both loops idle a minute")
	}
	if err := s.Apply([]rotation.Schedule{e.schedule("prod", "@every 1h"), sc}); err != nil {
		t.Fatal(err)
	}
	<-wedged
	for range 6 {
		e.clock.waitParked(t, 1)
		e.clock.Advance(10 * time.Second)
	}
	if s.Alive(30 * time.Second) {
		t.Error("Alive = true with a loop wedged for a minute")
	}
	close(unwedge)
	e.clock.waitParked(t, 2)
	if !s.Alive(30 * time.Second) {
		t.Error("Alive = false after the wedged loop moved again")
	}
}

// idleStore is the state file with every idle-* target rotated at at
// and holding no keys: a thousand idle targets without a thousand
// durable writes.
type idleStore struct {
	rotation.Store
	at time.Time
}

func (s idleStore) Load(name string) (store.Target, error) {
	if strings.HasPrefix(name, "idle-") {
		return store.Target{LastSuccess: s.at}, nil
	}
	return s.Store.Load(name)
}

// goroutinesAtMost waits for the process to run at most max goroutines
// and returns how many it runs: a loop's goroutine ends just after it
// parks the loop, which Idle already reports.
func goroutinesAtMost(max int) int {
	deadline := time.Now().Add(waitLong)
	for {
		n := runtime.NumGoroutine()
		if n <= max || time.Now().After(deadline) {
			return n
		}
		runtime.Gosched()
	}
}

// TestSchedulerParksIdleLoops: a loop with nothing to do keeps no
// goroutine, so 1,000 idle targets add none once the scheduler is idle;
// a parked loop wakes for a manual rotation, a reload and its timer,
// and parks again after each.
func TestSchedulerParksIdleLoops(t *testing.T) {
	// Not parallel: it counts the whole process's goroutines.
	const idle = 1000
	// A few goroutines may come and go outside the scheduler (HTTP
	// connections of the rotations); a goroutine per target is 1,000.
	const slack = 10
	e := newSchedEnv(t, "prod")
	e.rotate("prod")
	e.engine.Store = idleStore{Store: e.engine.Store, at: e.clock.Now()}
	schedules := []rotation.Schedule{e.schedule("prod", "@every 1h")}
	for i := range idle {
		tg := e.target("prod")
		tg.Name = fmt.Sprintf("idle-%04d", i)
		tg.Vault.Path = "codat/" + tg.Name
		schedules = append(schedules, rotation.Schedule{Target: tg, Spec: "@every 24h"})
	}
	s := e.newScheduler()
	before := runtime.NumGoroutine()
	e.start(s, schedules...)
	parked := func(when string, loops int) {
		t.Helper()
		e.clock.waitParked(t, loops)
		if !s.Idle() {
			t.Fatalf("%s: %d loops parked on the clock, but Idle = false", when, loops)
		}
		if got := goroutinesAtMost(before + slack); got > before+slack {
			t.Fatalf("%s: %d goroutines with %d targets idle, %d before Start: the loops kept %d",
				when, got, loops, before, got-before)
		}
	}
	parked("after Start", 1+idle)

	// A manual rotation wakes the loop.
	res, err := s.RotateNow("prod", rotation.Options{Manual: true})
	if err != nil {
		t.Fatalf("manual rotation of a parked loop: %v", err)
	}
	if got := e.served("prod"); got != res.NewKey.ID {
		t.Errorf("vault serves %s after the manual rotation, want its key %s", got, res.NewKey.ID)
	}
	parked("after a manual rotation", 1+idle)

	// A reload wakes the loop it changes and ends the one it removes.
	var activated atomic.Int32
	sc := e.schedule("prod", "@every 2h")
	sc.Activate = func() { activated.Add(1) }
	schedules[0] = sc
	schedules = schedules[:len(schedules)-1]
	if err := s.Apply(schedules); err != nil {
		t.Fatal(err)
	}
	parked("after a reload", idle)
	if got := activated.Load(); got != 1 {
		t.Errorf("the reloaded definition was taken up %d times, want once", got)
	}
	if got, want := s.Next("prod"), e.clock.Now().Add(2*time.Hour); !got.Equal(want) {
		t.Errorf("Next after the reload = %s, want %s", got, want)
	}
	if got := len(s.Names()); got != idle {
		t.Errorf("%d targets after removing one, want %d", got, idle)
	}

	// Its timer wakes the loop: the retirement falls due, then the tick.
	e.clock.Advance(2 * time.Hour)
	calls := e.rec.waitRotations(t, "prod", 2)
	parked("after the timer", idle)
	if calls[1].opts.Manual || calls[1].err != nil {
		t.Errorf("the second rotation ran as %+v with error %v, want the scheduled tick, succeeded", calls[1].opts, calls[1].err)
	}
	if got := len(e.rec.rotations); got != 2 {
		t.Errorf("%d rotations, want prod's two: an idle target ran", got)
	}
	e.noErrBusy()
}

// TestSchedulerWakeups: parked loops cost no wake-up while nothing is
// due; each due event, manual rotation or reload that restarts a loop
// counts one.
func TestSchedulerWakeups(t *testing.T) {
	t.Parallel()
	e := newSchedEnv(t, "a", "b")
	e.rotate("a")
	e.rotate("b")
	s := e.newScheduler()
	e.start(s, e.schedule("a", "@every 1h"), e.schedule("b", "@every 1h"))
	e.clock.waitParked(t, 2)
	for range 29 {
		e.clock.Advance(time.Minute)
		e.clock.waitParked(t, 2)
	}
	if got := s.Wakeups(); got != 0 {
		t.Errorf("Wakeups after an idle 29 minutes = %d, want 0", got)
	}
	for _, step := range []struct {
		what string
		do   func()
		want uint64
	}{
		{"the bootstrap keys' retirement (grace 30m)", func() { e.clock.Advance(time.Minute) }, 2},
		{"the scheduled rotations", func() { e.clock.Advance(30 * time.Minute) }, 4},
		{"a manual rotation", func() {
			if _, err := s.RotateNow("a", rotation.Options{}); err != nil {
				t.Fatal(err)
			}
		}, 5},
	} {
		step.do()
		e.clock.waitParked(t, 2)
		if got := s.Wakeups(); got != step.want {
			t.Errorf("Wakeups after %s = %d, want %d", step.what, got, step.want)
		}
	}
}

// blockingClock is a schedClock whose AfterFunc, which the scheduler
// calls under its lock when a loop parks, blocks while hold is armed:
// a scheduler whose lock is wedged.
type blockingClock struct {
	*schedClock
	mu      sync.Mutex
	hold    chan struct{} // nil: AfterFunc does not block
	entered chan struct{}
}

func (c *blockingClock) AfterFunc(at time.Time, f func()) func() bool {
	c.mu.Lock()
	hold, entered := c.hold, c.entered
	c.hold, c.entered = nil, nil
	c.mu.Unlock()
	if hold != nil {
		close(entered)
		<-hold
	}
	return c.schedClock.AfterFunc(at, f)
}

// TestSchedulerCheck: Check answers nil for idle loops, an error for a
// loop wedged in its own code, and an error within its deadline, not
// a hang, when the scheduler's lock is held for good.
func TestSchedulerCheck(t *testing.T) {
	t.Parallel()
	e := newSchedEnv(t, "prod", "wedged")
	clk := &blockingClock{schedClock: e.clock}
	s := e.newScheduler()
	s.Clock = clk
	s.StallAfter = 30 * time.Second
	check := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		return s.Check(ctx)
	}
	if err := check(); err == nil {
		t.Error("Check before Start = nil, want an error")
	}
	unwedge := make(chan struct{})
	wedged := make(chan struct{})
	sc := e.schedule("wedged", "@every 1h")
	var calls int
	sc.Activate = func() {
		calls++
		if calls == 2 { // the definition a reload brings
			close(wedged)
			<-unwedge
		}
	}
	e.start(s, e.schedule("prod", "@every 1h"), sc)
	e.clock.waitParked(t, 2)
	if err := check(); err != nil {
		t.Errorf("Check right after Start = %v, want nil", err)
	}

	// A loop wedged in its own code.
	if err := s.Apply([]rotation.Schedule{e.schedule("prod", "@every 1h"), sc}); err != nil {
		t.Fatal(err)
	}
	<-wedged
	e.clock.waitParked(t, 1)
	e.clock.Advance(time.Minute)
	if err := check(); err == nil || !strings.Contains(err.Error(), "target wedged") {
		t.Errorf("Check with a loop wedged a minute = %v, want an error naming the target", err)
	}
	close(unwedge)
	e.clock.waitParked(t, 2)
	if err := check(); err != nil {
		t.Errorf("Check after the wedged loop moved = %v, want nil", err)
	}

	// The scheduler's lock held for good: the next loop to park holds
	// it inside AfterFunc.
	hold, entered := make(chan struct{}), make(chan struct{})
	clk.mu.Lock()
	clk.hold, clk.entered = hold, entered
	clk.mu.Unlock()
	manual := make(chan error, 1)
	go func() { _, err := s.RotateNow("prod", rotation.Options{}); manual <- err }()
	<-entered
	for range 3 { // every probe gives up, none hangs
		if err := check(); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Check with the lock held = %v, want a deadline error", err)
		}
	}
	close(hold)
	if err := <-manual; err != nil {
		t.Fatalf("manual rotation: %v", err)
	}
	e.clock.waitParked(t, 2)
	if err := check(); err != nil {
		t.Errorf("Check after the lock was released = %v, want nil", err)
	}
}
