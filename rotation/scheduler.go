package rotation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/robfig/cron/v3"
)

// Schedule is when a target rotates.
type Schedule struct {
	Target Target
	// Spec is a 5-field cron spec, a descriptor (@daily, @every 30s), with
	// an optional CRON_TZ= prefix.
	Spec string
	// Jitter delays each scheduled run by a random duration up to it.
	Jitter time.Duration
	// Activate, when set, is called by the target's loop when it takes
	// this definition, before its first run with it. A run in flight
	// keeps what the previous definition set up: cmd installs the
	// target's Codat client here, so a reload never swaps the client
	// under a rotation.
	Activate func()
	// Fingerprint names the definition, for Apply: a target whose
	// Fingerprint, Spec and Jitter are those it runs with keeps its
	// loop as it is, parked or not. Empty: always taken as changed.
	Fingerprint string
}

// same reports whether sc defines what old does: a reload leaves it be.
func (sc Schedule) same(old Schedule) bool {
	return sc.Fingerprint != "" && sc.Fingerprint == old.Fingerprint && sc.Spec == old.Spec && sc.Jitter == old.Jitter
}

// cronParser reads the schedules the daemon accepts.
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ParseSchedule reads a 5-field cron spec, a descriptor (@daily,
// @every 30s) or either after a CRON_TZ= prefix. robfig/cron v3.0.1
// panics on some malformed specs ("CRON_TZ=" alone): that becomes an
// error here.
func ParseSchedule(spec string) (sched cron.Schedule, err error) {
	defer func() {
		if r := recover(); r != nil {
			sched, err = nil, fmt.Errorf("malformed schedule")
		}
	}()
	return cronParser.Parse(spec)
}

// Clock is the scheduler's time: what time it is, and a callback at a
// given time. Tests pass a fake whose callbacks run when the test moves
// it.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f once the clock reaches at (soon if it has),
	// never from within AfterFunc itself, unless stop is called first;
	// stop reports whether it prevented the call. An instant, not a
	// duration: a fake clock moved between reading the time and arming
	// the callback must not push the deadline back.
	AfterFunc(at time.Time, f func()) (stop func() bool)
}

// ErrRetireExhausted is reported to OnRetire when retiring a target's
// keys failed RetireAttempts times in a row: the scheduler stops retrying
// on a timer; the target's next rotation retires what is due.
var ErrRetireExhausted = errors.New("retiring keys: retry budget exhausted")

// Scheduler runs the rotations of several targets on their schedules,
// their retirements when the persisted delete_after passes, catch-up
// after downtime, and manual rotations.
//
// Each target has one loop: it waits for the earliest of its next
// scheduled run (jitter included), its next retirement and a manual
// request, then runs that work inline. Runs of a target never overlap,
// and nothing is dropped for being busy: a run that comes due while
// another runs starts when it ends. One target's failure or halt never
// stops the others.
//
// A loop that waits keeps no goroutine: it parks on a clock callback
// at its next event and its goroutine ends. The callback, a manual
// request, a reload that changes or removes the target and Stop
// unpark it, under mu, so a loop has at most one goroutine at a time.
// A thousand idle targets cost a thousand small structs and timers,
// not a thousand stacks.
type Scheduler struct {
	Engine *Engine
	Logger *slog.Logger
	// Clock is the scheduler's time (default: the engine's Now and real
	// timers).
	Clock Clock
	// OnRotation, when set, is called after every rotation that ran (not
	// for a halted target's skipped ticks).
	OnRotation func(target string, opts Options, res Result, err error, took time.Duration)
	// OnRetire, when set, is called after every retirement pass. Its
	// error wraps ErrRetireExhausted when the pass used up the budget.
	OnRetire func(target string, deleted []string, err error)
	// Jitter returns a random delay in [0, max); tests replace it.
	Jitter func(max time.Duration) time.Duration
	// StallAfter is how long a loop may stay in its own code (plans,
	// hooks, Activate) before Check reports it wedged (default 30s).
	// Idle loops are never asked: a loop waiting for its next event is
	// alive by construction.
	StallAfter time.Duration
	// CatchUpDelay is the wait before a catch-up rotation at start, so a
	// fleet restarting at once does not rotate at once (default: the
	// target's jitter).
	CatchUpDelay func(max time.Duration) time.Duration
	// RetireBackoff is the wait before retrying a failed retirement
	// (default 1m); it doubles up to RetireBackoffMax (default 1h).
	RetireBackoff, RetireBackoffMax time.Duration
	// RetireAttempts is how many retirement passes in a row may fail
	// before the scheduler gives up until the next rotation (default 10).
	RetireAttempts int

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the loops' goroutines

	mu      sync.Mutex
	started bool
	closing bool
	loops   map[string]*loop

	// wakeups counts loop goroutines started from parked.
	wakeups atomic.Uint64
	// probe is the Check in flight, shared by every caller until the
	// scheduler answers; guarded by probeMu, never by mu, so a wedged
	// mu costs one waiting goroutine, not one per probe.
	probeMu sync.Mutex
	probe   *probe
}

// probe is one Check's question to the scheduler; err is set before
// done closes.
type probe struct {
	done chan struct{}
	err  error
}

// loop is one target's loop. Its fields are guarded by the scheduler's
// mu, but for the last two: the loop's goroutine owns them (mu orders
// one goroutine's end before the next one's start); it writes
// activated under mu, for park.
type loop struct {
	name     string
	requests []request // manual rotations, served in order

	def     Schedule
	sched   cron.Schedule
	gen     int  // bumped by every Apply that changes def
	removed bool // leave after the run in flight

	// The plan, as Next and NextRetire report it.
	tick     time.Time // the scheduled time runAt serves; zero for a catch-up
	runAt    time.Time // when the next rotation starts, jitter included
	retireAt time.Time // when the next retirement pass runs; zero if none

	// inLoop is when the loop last left its wait or the engine's work
	// to run its own code (plans, hooks, Activate), zero while it waits
	// or the engine works: a loop that stays there is wedged.
	inLoop time.Time
	// parked: the loop has no goroutine; stop cancels the clock
	// callback that starts one, and seq tells that callback from the
	// callbacks of earlier parks.
	parked bool
	stop   func() bool
	seq    uint64
	// planned: plan read the state for the loop's first turn, which
	// then reads nothing; recheck asks for a look at the state file
	// within recheckEvery (nextRetire's, or plan's for the first turn).
	planned, recheck bool

	activated int         // the gen whose Activate ran
	rs        retireState // the retry of failed retirements
}

type request struct {
	opts Options
	// takeover asks for a takeover instead of a rotation.
	takeover bool
	reply    chan reply // buffered: the loop never blocks on it
}

type reply struct {
	res      Result
	takeover Takeover
	err      error
}

// Start begins scheduling: one loop per target. A target with an
// unfinished journal finishes it at once; one whose last success is
// older than its most recent scheduled time catches up soon.
func (s *Scheduler) Start(schedules []Schedule) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return errors.New("scheduler: already started; a stopped scheduler cannot start again")
	}
	s.started = true
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.loops = map[string]*loop{}
	s.mu.Unlock()
	return s.Apply(schedules)
}

// Apply replaces the schedules (a SIGHUP reload), all or nothing. A new
// target starts its loop; a changed target's loop takes the new
// definition for its next run; an unchanged one (Schedule.Fingerprint)
// is left as it is, parked if it was; a removed target's loop ends
// after the run in flight, which finishes with the definition it
// started with.
func (s *Scheduler) Apply(schedules []Schedule) error {
	parsed := make([]cron.Schedule, len(schedules))
	seen := map[string]bool{}
	for i, sc := range schedules {
		p, err := ParseSchedule(sc.Spec)
		if err != nil {
			return fmt.Errorf("target %s: schedule %q: %w", sc.Target.Name, sc.Spec, err)
		}
		if seen[sc.Target.Name] {
			return fmt.Errorf("target %s: scheduled twice", sc.Target.Name)
		}
		seen[sc.Target.Name] = true
		parsed[i] = p
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started || s.closing {
		return errors.New("scheduler: not running")
	}
	for name, l := range s.loops {
		if !seen[name] && !l.removed {
			l.removed = true
			if l.parked {
				// No run in flight and no request queued: the loop ends
				// here.
				s.unpark(l, false)
				delete(s.loops, name)
			}
			s.log().Info("target removed", "target", name)
		}
	}
	now := s.now()
	for i, sc := range schedules {
		name := sc.Target.Name
		l := s.loops[name]
		if l == nil {
			l = &loop{name: name, def: sc, sched: parsed[i], activated: -1}
			s.plan(l, now)
			s.loops[name] = l
			if sc.Activate == nil {
				l.activated = l.gen // nothing to take up
			}
			// A loop whose first turn would only wait parks at once:
			// a fleet starting idle starts no goroutine.
			if s.park(l, l.wakeAt(now)) {
				l.planned = false
			} else {
				s.wg.Add(1)
				go s.run(l)
			}
		} else if !l.removed && sc.same(l.def) {
			continue // unchanged: not woken, not replanned
		} else {
			old := l.def
			l.def, l.sched, l.removed = sc, parsed[i], false
			l.gen++
			if (sc.Spec != old.Spec || sc.Jitter != old.Jitter) && !l.tick.IsZero() {
				// A changed schedule replans the next tick; a catch-up or
				// an unfinished journal stays due.
				s.planTick(l, now)
			}
			s.unpark(l, true)
		}
		s.log().Info("target scheduled", "target", name, "schedule", sc.Spec, "jitter", sc.Jitter, "next", l.runAt)
	}
	return nil
}

// plan decides a new loop's first run from the state file: finish a
// journal now, catch up soon, or wait for the next tick. The caller
// holds mu.
func (s *Scheduler) plan(l *loop, now time.Time) {
	// A plain logger with the target as an attribute: no handler clone
	// per target at start.
	log := s.log()
	st, err := s.Engine.Store.Load(l.name)
	if err != nil {
		// The loop retries on every turn; plan as if nothing were owed.
		log.Error("load state", "target", l.name, "error", err)
	}
	switch {
	case err != nil:
		s.planTick(l, now)
	case st.Journal != nil && !st.Halted:
		log.Warn("an interrupted rotation is in the journal; finishing it now", "target", l.name, "step", string(st.Journal.Step))
		l.tick, l.runAt = time.Time{}, now
	case st.Halted:
		log.Warn("target is halted; no scheduled rotation until `codat-rotator resume`", "target", l.name, "reason", st.HaltReason)
		s.planTick(l, now)
	case !l.sched.Next(st.LastSuccess).After(now):
		// A scheduled run was missed while the daemon was down (or it
		// never rotated): catch up soon.
		delay := s.catchUpDelay(l.def.Jitter)
		log.Info("a scheduled rotation was missed; catching up", "target", l.name, "last_success", st.LastSuccess, "in", delay)
		l.tick, l.runAt = time.Time{}, now.Add(delay)
	default:
		s.planTick(l, now)
	}
	l.planned, l.recheck = true, err != nil || st.Halted || st.Journal != nil
	if !l.recheck {
		due, next := Due(st, now)
		if len(due) > 0 {
			next = now
		}
		l.retireAt = next
	}
}

// retireState is a loop's retry of failed retirements.
type retireState struct {
	failures  int
	exhausted bool
	// retryAt holds back another pass over the keys due up to tried (the
	// newest delete_after a pass saw): a key that falls due later is
	// retired when it falls due.
	retryAt time.Time
	tried   time.Time
	// due is the newest delete_after due when the loop last looked.
	due time.Time
}

// wait holds back a retry of what is due now until d from now.
func (rs *retireState) wait(now time.Time, d time.Duration) {
	rs.retryAt, rs.tried = now.Add(d), rs.due
}

// run is a loop's goroutine: it runs the work due, one piece at a time,
// then parks the loop and ends; it also ends when the target is removed
// or the scheduler stops. Its caller did wg.Add.
func (s *Scheduler) run(l *loop) {
	defer s.wg.Done()
	// Built per goroutine, not per target: a parked loop holds no logger.
	log := s.log().With("target", l.name)
	for {
		now := s.now()
		s.mu.Lock()
		if s.closing || l.removed {
			s.leave(l)
			s.mu.Unlock()
			return
		}
		def, gen := l.def, l.gen
		planned, retireAt, recheck := l.planned, l.retireAt, l.recheck
		l.planned, l.inLoop = false, now
		s.mu.Unlock()
		if gen != l.activated {
			s.guard(log, "activating a target definition", func() {
				if def.Activate != nil {
					def.Activate()
				}
			})
			l.rs = retireState{} // a new definition may have fixed what failed
		}
		if !planned {
			retireAt, recheck = s.nextRetire(l.name, now, &l.rs, log)
		}

		// The work due now, a rotation first: it retires what is due
		// too. Manual requests come when nothing is due; none waits
		// long, since each run plans the next one later.
		s.mu.Lock()
		l.activated = gen
		l.retireAt, l.recheck = retireAt, recheck
		var req *request
		due := !now.Before(l.runAt)
		retireDue := !due && !retireAt.IsZero() && !now.Before(retireAt)
		if !due && !retireDue && len(l.requests) > 0 {
			req = &l.requests[0]
			l.requests = l.requests[1:]
		}
		if !due && !retireDue && req == nil && s.park(l, l.wakeAt(now)) {
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		switch {
		case due:
			s.tick(l, log)
		case retireDue:
			s.retire(l, log)
		case req != nil:
			s.serve(l, log, *req)
		}
	}
}

// wakeAt is when a loop with nothing due at now next has work: its next
// rotation, its next retirement or, for a halted or journaled target,
// its next look at the state file. The caller holds mu.
func (l *loop) wakeAt(now time.Time) time.Time {
	at := l.runAt
	if !l.retireAt.IsZero() && l.retireAt.Before(at) {
		at = l.retireAt
	}
	if l.recheck && now.Add(recheckEvery).Before(at) {
		at = now.Add(recheckEvery)
	}
	return at
}

// park arms the clock to unpark l at at, and reports true: the caller
// ends l's goroutine, or starts none. It reports false, arming nothing,
// when l has work now: a request, a definition to take up, a removal,
// a stop, or at already passed. The caller holds mu.
func (s *Scheduler) park(l *loop, at time.Time) bool {
	if s.closing || l.removed || l.gen != l.activated || len(l.requests) > 0 || !s.now().Before(at) {
		return false
	}
	l.parked, l.inLoop = true, time.Time{}
	l.seq++
	seq := l.seq
	l.stop = s.clock().AfterFunc(at, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if l.seq == seq {
			s.unpark(l, true)
		}
	})
	return true
}

// unpark stops a parked loop's clock callback and, if run, starts its
// goroutine again; a loop that is not parked already has one, which
// sees what changed before it parks. The caller holds mu.
func (s *Scheduler) unpark(l *loop, run bool) {
	if !l.parked {
		return
	}
	l.parked = false
	l.stop()
	l.stop = nil
	if run && !s.closing {
		s.wakeups.Add(1)
		s.wg.Add(1)
		go s.run(l)
	}
}

// leave ends a loop whose target was removed or whose scheduler stops:
// the requests queued behind the run that just ended are refused. The
// caller holds mu.
func (s *Scheduler) leave(l *loop) {
	err := errors.New("the daemon is shutting down")
	if !s.closing {
		err = fmt.Errorf("no target %q: removed", l.name)
	}
	if l.removed && s.loops[l.name] == l {
		delete(s.loops, l.name)
	}
	for _, r := range l.requests {
		r.reply <- reply{err: err}
	}
	l.requests = nil
}

// recheckEvery is how often a loop that retires nothing on a timer
// (a halted target, an unfinished journal, an unreadable state) reads
// its state again, to notice a resume.
const recheckEvery = time.Minute

// nextRetire is when the loop next retires keys: the earliest persisted
// delete_after, later after failures; never for a halted target or one
// with an unfinished journal (its next rotation or resume retires), nor
// once the retry budget is spent. recheck asks for a look at the state
// file within recheckEvery.
func (s *Scheduler) nextRetire(name string, now time.Time, rs *retireState, log *slog.Logger) (at time.Time, recheck bool) {
	st, err := s.Engine.Store.Load(name)
	if err != nil {
		log.Error("load state", "error", err)
		return time.Time{}, true
	}
	if st.Halted || st.Journal != nil {
		return time.Time{}, true
	}
	if rs.exhausted {
		return time.Time{}, false
	}
	due, next := Due(st, now)
	if len(due) == 0 {
		return next, false
	}
	rs.due = due[len(due)-1].DeleteAfter
	if rs.due.After(rs.tried) {
		return now, false // a key fell due since the last pass
	}
	if rs.retryAt.After(now) {
		return rs.retryAt, false
	}
	return now, false
}

// tick runs the scheduled rotation. It plans the following run first,
// so that the rotation publishes, as next_rotation_at, the run the loop
// will really make, and status shows it while this one runs.
func (s *Scheduler) tick(l *loop, log *slog.Logger) {
	started := s.now()
	s.mu.Lock()
	// This run covers every tick due when it started, less its jitter:
	// one run for ticks missed while the target was busy. A catch-up goes
	// on from when it ran.
	base := started
	if !l.tick.IsZero() {
		base = started.Add(-l.runAt.Sub(l.tick))
		if base.Before(l.tick) {
			base = l.tick
		}
	}
	s.planTick(l, base)
	s.mu.Unlock()
	s.rotate(l, log, Options{})
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if l.runAt.After(now) {
		return // the planned run, or the one Apply planned meanwhile
	}
	// The following run came due while the rotation ran: one more run,
	// now, for every tick that passed, never a silent drop.
	log.Info("a scheduled rotation came due while the target was busy; running it now", "due", l.runAt)
	l.tick, l.runAt = now, now
}

// planTick sets the loop's next scheduled run: the schedule's first tick
// after base, delayed by a fresh jitter. It is the one place that
// decides when the target next rotates on schedule; Next reads what it
// set, for status, the next_rotation metric and the next_rotation_at a
// rotation publishes (docs/design.md#scheduling). The caller holds mu.
func (s *Scheduler) planTick(l *loop, base time.Time) {
	l.tick = l.sched.Next(base)
	l.runAt = l.tick.Add(s.jitter(l.def.Jitter))
}

// serve runs a manual rotation for RotateNow.
func (s *Scheduler) serve(l *loop, log *slog.Logger, req request) {
	var r reply
	defer func() { req.reply <- r }()
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if closing {
		r.err = errors.New("the daemon is shutting down")
		return
	}
	if req.takeover {
		s.mu.Lock()
		t := l.def.Target
		s.mu.Unlock()
		s.busy(l, log, "a takeover", func() { r.takeover, r.err = s.Engine.Takeover(s.ctx, t) })
		l.rs = retireState{} // rebuilt keys retire on their own times
		return
	}
	r.res, r.err = s.rotate(l, log, req.opts)
}

// rotate runs one rotation inline; the caller is the target's loop.
func (s *Scheduler) rotate(l *loop, log *slog.Logger, opts Options) (res Result, err error) {
	rs := &l.rs
	s.mu.Lock()
	t := l.def.Target
	s.mu.Unlock()
	// The secret's next_rotation_at is the loop's own next run, as
	// planned when the rotation publishes.
	t.NextRotation = func(time.Time) time.Time { return s.Next(l.name) }
	start := s.now()
	err = errors.New("rotation panicked")
	s.busy(l, log, "a rotation", func() { res, err = s.Engine.Rotate(s.ctx, t, opts) })
	// A rotation retires what is due at its end: a fresh budget, and no
	// second attempt at once when its retirement failed.
	*rs = retireState{due: rs.due}
	if err != nil {
		rs.failures = 1
		rs.wait(s.now(), s.retireBackoff(1))
	}
	if errors.Is(err, ErrHalted) {
		log.Warn("rotation skipped: target halted", "error", err)
		return res, err
	}
	if errors.Is(err, ErrCancelledWaiting) {
		// Stopped while it waited for a slot of the engine's bound:
		// nothing was tried, so nothing failed; the next start catches up.
		return res, err
	}
	if s.OnRotation != nil {
		took := s.now().Sub(start)
		s.guard(log, "the rotation hook", func() { s.OnRotation(l.name, opts, res, err, took) })
	}
	return res, err
}

// retire runs a retirement pass inline, with backoff and a budget.
func (s *Scheduler) retire(l *loop, log *slog.Logger) {
	rs := &l.rs
	s.mu.Lock()
	t := l.def.Target
	s.mu.Unlock()
	var deleted []string
	err := errors.New("retirement panicked")
	s.busy(l, log, "a retirement", func() { deleted, err = s.Engine.RetireDue(s.ctx, t) })
	switch {
	case err == nil:
		// A clean pass may leave keys due that the invariants kept (the
		// served key, the last key): look again later, not at once.
		*rs = retireState{due: rs.due}
		rs.wait(s.now(), s.retireBackoff(s.retireAttempts()))
	case s.ctx.Err() != nil:
		return // shutting down: the next start retires what is due
	default:
		rs.failures++
		budget := s.retireAttempts()
		if rs.failures >= budget {
			rs.exhausted = true
			log.Error("retiring keys failed; giving up until the next rotation", "attempts", rs.failures, "error", err)
			err = fmt.Errorf("%w after %d attempts: %w", ErrRetireExhausted, rs.failures, err)
			break
		}
		wait := s.retireBackoff(rs.failures)
		rs.wait(s.now(), wait)
		log.Warn("retiring keys failed; will retry", "attempt", rs.failures, "of", budget, "in", wait, "error", err)
	}
	if s.OnRetire != nil {
		s.guard(log, "the retirement hook", func() { s.OnRetire(l.name, deleted, err) })
	}
}

func (s *Scheduler) retireBackoff(failures int) time.Duration {
	base := s.RetireBackoff
	if base <= 0 {
		base = time.Minute
	}
	limit := s.RetireBackoffMax
	if limit <= 0 {
		limit = time.Hour
	}
	d := base
	for i := 1; i < failures && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

func (s *Scheduler) retireAttempts() int {
	if s.RetireAttempts > 0 {
		return s.RetireAttempts
	}
	return 10
}

// busy runs the engine's work fn, during which the loop counts as
// alive: the engine's calls have their own timeouts. Hooks run outside
// it, so a wedged hook shows in Alive.
func (s *Scheduler) busy(l *loop, log *slog.Logger, what string, fn func()) {
	s.mu.Lock()
	l.inLoop = time.Time{}
	s.mu.Unlock()
	defer func() {
		now := s.now()
		s.mu.Lock()
		l.inLoop = now
		s.mu.Unlock()
	}()
	s.guard(log, what, fn)
}

// guard runs fn and logs a panic instead of crashing the daemon or
// ending the loop.
func (s *Scheduler) guard(log *slog.Logger, what string, fn func()) {
	defer func() {
		if r := recover(); r != nil {
			log.Error("panic in "+what, "error", fmt.Sprint(r))
		}
	}()
	fn()
}

// RotateNow queues a manual rotation to the target's loop and waits for
// its result: after the run in flight, if any. It runs in the
// scheduler's lifetime, not the caller's: a client that hangs up does
// not cut a rotation short.
func (s *Scheduler) RotateNow(name string, opts Options) (Result, error) {
	r := s.ask(name, request{opts: opts})
	return r.res, r.err
}

// TakeoverNow queues a takeover of the target to its loop and waits for
// its result; the loop then retires the keys it rebuilt when they fall
// due.
func (s *Scheduler) TakeoverNow(name string) (Takeover, error) {
	r := s.ask(name, request{takeover: true})
	return r.takeover, r.err
}

// ask queues req to the named target's loop and waits for the reply.
func (s *Scheduler) ask(name string, req request) reply {
	s.mu.Lock()
	l, ok := s.loops[name]
	closing := s.closing || !s.started
	ok = ok && !l.removed
	switch {
	case closing:
		s.mu.Unlock()
		return reply{err: errors.New("the daemon is shutting down")}
	case !ok:
		s.mu.Unlock()
		return reply{err: fmt.Errorf("no target %q", name)}
	}
	// The loop answers every request it takes: it serves it, or refuses
	// it when it leaves (a removal, a stop).
	req.reply = make(chan reply, 1)
	l.requests = append(l.requests, req)
	s.unpark(l, true)
	s.mu.Unlock()
	return <-req.reply
}

// Target returns the named target's current definition.
func (s *Scheduler) Target(name string) (Target, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.loops[name]
	if !ok || l.removed {
		return Target{}, false
	}
	return l.def.Target, true
}

// Names returns the scheduled targets' names, sorted.
func (s *Scheduler) Names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for name, l := range s.loops {
		if !l.removed {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// Next returns when the target's loop will start its next scheduled
// rotation, jitter included; zero for an unknown target.
func (s *Scheduler) Next(name string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l, ok := s.loops[name]; ok && !l.removed {
		return l.runAt
	}
	return time.Time{}
}

// NextRetire returns when the target's loop next retires keys, zero if
// it has none to retire on a timer.
func (s *Scheduler) NextRetire(name string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l, ok := s.loops[name]; ok && !l.removed {
		return l.retireAt
	}
	return time.Time{}
}

// Idle reports whether every loop is parked until its next event: no
// rotation or retirement runs, and the loop of every removed target has
// ended.
func (s *Scheduler) Idle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.loops {
		if !l.parked {
			return false
		}
	}
	return true
}

// Wakeups is how many times a parked loop got a goroutine again, for
// any reason: its next event came due, a manual rotation, a reload
// that changed or removed its target. An idle daemon's count does not
// move between due events.
func (s *Scheduler) Wakeups() uint64 { return s.wakeups.Load() }

// Alive reports that no loop is wedged: each waits for its next event,
// runs the engine's work, or has been in its own code for at most max.
// False before Start and after Stop. It waits for the scheduler's
// lock: Check is the probe that cannot hang.
func (s *Scheduler) Alive(max time.Duration) bool { return s.stalled(max) == nil }

// stalled is Alive's answer with the reason.
func (s *Scheduler) stalled(max time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started || s.closing {
		return errors.New("scheduler: not running")
	}
	now := s.now()
	for _, l := range s.loops {
		if since := now.Sub(l.inLoop); !l.inLoop.IsZero() && since > max {
			return fmt.Errorf("scheduler: target %s: loop stuck in its own code for %s", l.name, since.Round(time.Second))
		}
	}
	return nil
}

// Check asks the scheduler to answer, for /healthz and the systemd
// watchdog: nil when no loop is wedged (Alive with StallAfter); an
// error when one is, when the scheduler is not running, or when it
// does not answer before ctx ends, its lock held by a wedged goroutine.
// It takes the lock every loop takes at every turn, and wakes no parked
// loop, so probing an idle daemon costs the probe alone.
func (s *Scheduler) Check(ctx context.Context) error {
	s.probeMu.Lock()
	p := s.probe
	if p == nil {
		p = &probe{done: make(chan struct{})}
		s.probe = p
		go func() {
			p.err = s.stalled(s.stallAfter())
			s.probeMu.Lock()
			s.probe = nil
			s.probeMu.Unlock()
			close(p.done)
		}()
	}
	s.probeMu.Unlock()
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return fmt.Errorf("scheduler: no answer: %w", ctx.Err())
	}
}

func (s *Scheduler) stallAfter() time.Duration {
	if s.StallAfter > 0 {
		return s.StallAfter
	}
	return 30 * time.Second
}

// Stop stops scheduling, lets running rotations finish until ctx is
// done, then cancels them (they leave their journal) and waits. Parked
// loops' clock callbacks are stopped.
func (s *Scheduler) Stop(ctx context.Context) {
	s.mu.Lock()
	if !s.started || s.closing {
		s.mu.Unlock()
		return
	}
	s.closing = true
	for _, l := range s.loops {
		s.unpark(l, false)
	}
	s.mu.Unlock()
	waited := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(waited)
	}()
	select {
	case <-waited:
	case <-ctx.Done():
		s.log().Warn("shutdown: cancelling the running rotation; its journal is kept for the next start")
	}
	s.cancel()
	<-waited
}

func (s *Scheduler) now() time.Time { return s.clock().Now().UTC() }

func (s *Scheduler) clock() Clock {
	if s.Clock != nil {
		return s.Clock
	}
	return realClock{now: s.Engine.clock()}
}

// realClock is the engine's Now with the runtime's timers.
type realClock struct{ now func() time.Time }

func (c realClock) Now() time.Time { return c.now() }

func (c realClock) AfterFunc(at time.Time, f func()) func() bool {
	return time.AfterFunc(at.Sub(c.now()), f).Stop
}

func (s *Scheduler) jitter(max time.Duration) time.Duration {
	if max <= 0 {
		return 0
	}
	if s.Jitter != nil {
		return s.Jitter(max)
	}
	d := rand.N(max)
	if max >= time.Second {
		// Whole seconds, as next_rotation_at is published: the secret,
		// status and the metric then show the very instant of the run.
		d = d.Truncate(time.Second)
	}
	return d
}

func (s *Scheduler) catchUpDelay(max time.Duration) time.Duration {
	if s.CatchUpDelay != nil {
		return s.CatchUpDelay(max)
	}
	return s.jitter(max)
}

func (s *Scheduler) log() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.New(slog.DiscardHandler)
}
