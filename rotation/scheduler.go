package rotation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
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

// Scheduler runs the rotations of several targets on their schedules, a
// persisted retire timer per target, catch-up after downtime, and manual
// rotations. One target's failure or halt never stops the others.
type Scheduler struct {
	Engine *Engine
	Logger *slog.Logger
	// OnRotation, when set, is called after every rotation attempt that
	// ran (not for skipped ticks or halted targets).
	OnRotation func(target string, opts Options, res Result, err error, took time.Duration)
	// OnRetire, when set, is called after every retirement pass.
	OnRetire func(target string, deleted []string, err error)
	// Jitter returns a random delay in [0, max); tests replace it.
	Jitter func(max time.Duration) time.Duration
	// Heartbeat is how often the scheduler loop proves it is alive, for
	// the systemd watchdog and /healthz (default 10s; at least 1s).
	Heartbeat time.Duration
	// CatchUpDelay is the wait before a catch-up rotation at start, so a
	// fleet restarting at once does not rotate at once (default: the
	// target's jitter).
	CatchUpDelay func(max time.Duration) time.Duration

	ctx      context.Context
	cancel   context.CancelFunc
	stopping chan struct{} // closed when Stop begins: no new work starts
	wg       sync.WaitGroup
	cron     *cron.Cron
	beat     atomic.Int64 // unix nanos of the scheduler loop's last heartbeat

	mu      sync.Mutex
	closing bool
	targets map[string]*scheduled
}

// enter counts a piece of work Stop must wait for; false once stopping.
func (s *Scheduler) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.enterLocked()
}

func (s *Scheduler) enterLocked() bool {
	if s.closing {
		return false
	}
	s.wg.Add(1)
	return true
}

type scheduled struct {
	Schedule
	sched   cron.Schedule
	entry   cron.EntryID
	retire  *time.Timer
	retireT time.Time
}

// Start begins scheduling. It arms each target's retire timer from the
// state file, finishes a crash's journal, and catches up on rotations
// missed while the daemon was down.
func (s *Scheduler) Start(schedules []Schedule) error {
	s.mu.Lock()
	stopped := s.closing
	s.mu.Unlock()
	if stopped {
		return errors.New("scheduler: cannot start again after Stop; make a new one")
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.stopping = make(chan struct{})
	s.targets = map[string]*scheduled{}
	s.cron = cron.New(cron.WithParser(cronParser), cron.WithLocation(time.UTC), cron.WithLogger(cronLogger{s.log()}))
	// The heartbeat proves the cron loop runs: the systemd watchdog is fed
	// from it.
	s.beat.Store(time.Now().UnixNano())
	beat := max(s.HeartbeatInterval(), time.Second)
	s.cron.Schedule(cron.Every(beat), cron.FuncJob(func() { s.beat.Store(time.Now().UnixNano()) }))
	if err := s.apply(schedules, true); err != nil {
		return err
	}
	s.cron.Start()
	return nil
}

// Apply replaces the schedules (a SIGHUP reload). Targets that keep their
// name keep their running rotation and retire timer.
func (s *Scheduler) Apply(schedules []Schedule) error { return s.apply(schedules, false) }

func (s *Scheduler) apply(schedules []Schedule, starting bool) error {
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
	for name, t := range s.targets {
		if !seen[name] {
			s.cron.Remove(t.entry)
			if t.retire != nil {
				t.retire.Stop()
			}
			delete(s.targets, name)
			s.log().Info("target removed", "target", name)
		}
	}
	for i, sc := range schedules {
		name := sc.Target.Name
		old := s.targets[name]
		t := &scheduled{Schedule: sc, sched: parsed[i]}
		if old != nil {
			s.cron.Remove(old.entry)
			t.retire, t.retireT = old.retire, old.retireT
		}
		job := cron.NewChain(cron.SkipIfStillRunning(cronLogger{s.log().With("target", name)}), cron.Recover(cronLogger{s.log().With("target", name)})).
			Then(cron.FuncJob(func() { s.tick(name) }))
		t.entry = s.cron.Schedule(parsed[i], job)
		s.targets[name] = t
		if old == nil || starting {
			s.startTarget(t)
		}
		s.log().Info("target scheduled", "target", name, "schedule", sc.Spec, "jitter", sc.Jitter, "next", parsed[i].Next(s.Engine.now()))
	}
	return nil
}

// startTarget arms the retire timer and decides on a catch-up or a
// recovery at start; the caller holds mu.
func (s *Scheduler) startTarget(t *scheduled) {
	name := t.Target.Name
	st, err := s.Engine.Store.Load(name)
	if err != nil {
		s.log().Error("load state", "target", name, "error", err)
		return
	}
	now := s.Engine.now()
	switch {
	case st.Journal != nil && !st.Halted:
		s.log().Warn("an interrupted rotation is in the journal; finishing it now", "target", name, "step", string(st.Journal.Step))
		s.laterLocked(0, func() { s.rotate(name, Options{}) })
		// The rotation retires what is due and re-arms the timer when it
		// ends; a timer armed now would race it for the target.
		return
	case st.Halted:
		s.log().Warn("target is halted; no scheduled rotation until `codat-rotator resume`", "target", name, "reason", st.HaltReason)
	case !t.sched.Next(st.LastSuccess).After(now):
		// A scheduled run was missed while the daemon was down (or it never
		// rotated): catch up soon.
		delay := s.catchUpDelay(t.Jitter)
		s.log().Info("a scheduled rotation was missed; catching up", "target", name, "last_success", st.LastSuccess, "in", delay)
		s.laterLocked(delay, func() { s.rotate(name, Options{}) })
		if delay == 0 {
			return // as above: the rotation arms the timer
		}
	}
	s.armRetireLocked(t)
}

// guard logs a panic in background work instead of crashing the daemon,
// as cron's Recover does for ticks.
func (s *Scheduler) guard(what, target string) {
	if r := recover(); r != nil {
		s.log().Error("panic in "+what, "target", target, "panic", fmt.Sprint(r))
	}
}

// laterLocked runs fn after d unless the scheduler stops first; the
// caller holds mu.
func (s *Scheduler) laterLocked(d time.Duration, fn func()) {
	if !s.enterLocked() {
		return
	}
	go func() {
		defer s.wg.Done()
		defer s.guard("a start-up rotation", "")
		if !s.wait(d) {
			return
		}
		fn()
	}()
}

// wait sleeps d, or returns false as soon as the scheduler stops.
func (s *Scheduler) wait(d time.Duration) bool {
	if d <= 0 {
		select {
		case <-s.stopping:
			return false
		default:
			return true
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-s.stopping:
		return false
	case <-t.C:
		return true
	}
}

// tick is a scheduled run: jitter, then a rotation.
func (s *Scheduler) tick(name string) {
	s.mu.Lock()
	t, ok := s.targets[name]
	s.mu.Unlock()
	if !ok || !s.enter() {
		return
	}
	defer s.wg.Done()
	if !s.wait(s.jitter(t.Jitter)) {
		return
	}
	if _, err := s.rotate(name, Options{}); errors.Is(err, ErrBusy) {
		s.log().Info("rotation skipped: one is already running", "target", name)
	}
}

// rotate runs one rotation of the named target and re-arms its retire
// timer.
func (s *Scheduler) rotate(name string, opts Options) (Result, error) {
	s.mu.Lock()
	t, ok := s.targets[name]
	s.mu.Unlock()
	if !ok {
		return Result{}, fmt.Errorf("no target %q", name)
	}
	log := s.log().With("target", name)
	start := time.Now()
	res, err := s.Engine.Rotate(s.ctx, t.Target, opts)
	switch {
	case errors.Is(err, ErrBusy):
		return res, err // the caller decides whether that is worth a line
	case errors.Is(err, ErrHalted):
		log.Warn("rotation skipped: target halted", "error", err)
		return res, err
	}
	if s.OnRotation != nil {
		s.OnRotation(name, opts, res, err, time.Since(start))
	}
	s.ArmRetire(name)
	return res, err
}

// RotateNow runs a rotation at once (the admin socket's rotate). It runs
// in the scheduler's lifetime, not the caller's: a client that hangs up
// does not cut a rotation short.
func (s *Scheduler) RotateNow(name string, opts Options) (Result, error) {
	if !s.enter() {
		return Result{}, errors.New("the daemon is shutting down")
	}
	defer s.wg.Done()
	// A retirement pass holds the target for a moment: wait it out rather
	// than refuse an operator's rotation. A rotation that is really
	// running still refuses after the wait.
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := s.rotate(name, opts)
		if !errors.Is(err, ErrBusy) || time.Now().After(deadline) || !s.wait(200*time.Millisecond) {
			return res, err
		}
	}
}

// Target returns the named target's current definition.
func (s *Scheduler) Target(name string) (Target, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.targets[name]
	if !ok {
		return Target{}, false
	}
	return t.Target, true
}

// Names returns the scheduled targets' names.
func (s *Scheduler) Names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for name := range s.targets {
		out = append(out, name)
	}
	return out
}

// Next returns when the target next rotates on schedule (jitter aside).
func (s *Scheduler) Next(name string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.targets[name]
	if !ok {
		return time.Time{}
	}
	return t.sched.Next(s.Engine.now())
}

// NextRetire returns when the target's retire timer fires, zero if unarmed.
func (s *Scheduler) NextRetire(name string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.targets[name]; ok {
		return t.retireT
	}
	return time.Time{}
}

// ArmRetire (re)arms the target's retire timer from the state file: the
// timer is the persisted delete_after of its keys, never a sleeping
// goroutine a restart would forget. Keys already due are retired now.
func (s *Scheduler) ArmRetire(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.targets[name]; ok {
		s.armRetireLocked(t)
	}
}

func (s *Scheduler) armRetireLocked(t *scheduled) {
	name := t.Target.Name
	if t.retire != nil {
		t.retire.Stop()
		t.retire, t.retireT = nil, time.Time{}
	}
	st, err := s.Engine.Store.Load(name)
	if err != nil {
		s.log().Error("load state", "target", name, "error", err)
		return
	}
	now := s.Engine.now()
	due, next := Due(st, now)
	if len(due) > 0 {
		next = now
	}
	if next.IsZero() || s.ctx.Err() != nil || s.closing {
		return
	}
	t.retireT = next
	t.retire = time.AfterFunc(next.Sub(now), func() {
		if !s.enter() {
			return
		}
		defer s.wg.Done()
		defer s.guard("retirement", name)
		s.retireNow(name)
	})
}

func (s *Scheduler) retireNow(name string) {
	t, ok := s.Target(name)
	if !ok {
		return
	}
	deleted, err := s.Engine.RetireDue(s.ctx, t)
	log := s.log().With("target", name)
	switch {
	case errors.Is(err, ErrBusy):
		// A rotation runs; it retires what is due when it ends.
		return
	case err != nil:
		log.Error("retiring keys failed; will retry", "error", err)
	}
	if s.OnRetire != nil {
		s.OnRetire(name, deleted, err)
	}
	if err != nil {
		// Retry later rather than spin: a minute, or the next rearm.
		s.mu.Lock()
		if st, ok := s.targets[name]; ok && s.ctx.Err() == nil && !s.closing {
			if st.retire != nil {
				st.retire.Stop()
			}
			st.retireT = s.Engine.now().Add(time.Minute)
			st.retire = time.AfterFunc(time.Minute, func() {
				if !s.enter() {
					return
				}
				defer s.wg.Done()
				defer s.guard("retirement", name)
				s.retireNow(name)
			})
		}
		s.mu.Unlock()
		return
	}
	s.ArmRetire(name)
}

// HeartbeatInterval is the heartbeat's period.
func (s *Scheduler) HeartbeatInterval() time.Duration {
	if s.Heartbeat > 0 {
		return s.Heartbeat
	}
	return 10 * time.Second
}

// Alive reports whether the scheduler's loop ticked within max: the
// watchdog feeds systemd only while this holds.
func (s *Scheduler) Alive(max time.Duration) bool {
	return time.Since(time.Unix(0, s.beat.Load())) <= max
}

// Stop stops scheduling, lets running rotations finish until ctx is
// done, then cancels them (they leave their journal) and waits.
func (s *Scheduler) Stop(ctx context.Context) {
	if s.cron == nil {
		return
	}
	cronDone := s.cron.Stop()
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return
	}
	s.closing = true
	close(s.stopping)
	for _, t := range s.targets {
		if t.retire != nil {
			t.retire.Stop()
		}
	}
	s.mu.Unlock()
	waited := make(chan struct{})
	go func() {
		<-cronDone.Done()
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

func (s *Scheduler) jitter(max time.Duration) time.Duration {
	if max <= 0 {
		return 0
	}
	if s.Jitter != nil {
		return s.Jitter(max)
	}
	return rand.N(max)
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

// cronLogger adapts slog to robfig/cron's logr-shaped Logger.
type cronLogger struct{ l *slog.Logger }

func (c cronLogger) Info(msg string, kv ...any) {
	switch msg {
	case "skip":
		c.l.Info("scheduled tick skipped: the previous rotation is still running")
	case "wake", "run", "added", "schedule", "start", "stop", "removed":
		c.l.Debug("cron "+msg, kv...)
	default:
		c.l.Info("cron "+msg, kv...)
	}
}

func (c cronLogger) Error(err error, msg string, kv ...any) {
	c.l.Error("cron "+msg, append(kv, "error", err)...)
}
