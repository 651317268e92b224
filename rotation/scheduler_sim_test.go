package rotation_test

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/rotation"
)

var schedSeeds = flag.Int("sched.seeds", 12, "seeds of TestSchedulerSimulation")

// TestSchedulerSimulation drives a scheduler on the fake clock through
// random interleavings of ticks, retirements, manual rotations and
// reloads that add, remove and change targets, some of them while a
// rotation hangs at Codat, and checks after each step that no two runs
// of a target overlapped, that nothing requested was dropped (every
// manual rotation answered, no scheduled time passed without a rotation
// since, no key left past its delete_after) and that no rotation was
// left unfinished. A failure names its seed:
// go test -run 'TestSchedulerSimulation/seed=N' ./rotation/
func TestSchedulerSimulation(t *testing.T) {
	t.Parallel()
	for seed := 1; seed <= *schedSeeds; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Parallel()
			newSim(t, uint64(seed)).run(40)
		})
	}
}

var (
	simNames = []string{"a", "b", "c"}
	simSpecs = []string{"@every 1h", "@every 2h", "0 * * * *", "30 */3 * * *"}
)

// simTarget is a configured target as the simulation last applied it.
type simTarget struct {
	spec    string
	grace   time.Duration
	applied time.Time // when this spec was applied (or the target added)
}

type sim struct {
	t   *testing.T
	rnd *rand.Rand
	e   *schedEnv
	s   *rotation.Scheduler
	cfg map[string]simTarget

	wg     sync.WaitGroup // manual rotations in flight
	mu     sync.Mutex
	manual []simManual
}

// simManual is one RotateNow and what it answered.
type simManual struct {
	target string
	// removable: a reload removed the target before it was served, so
	// a "no target" refusal is a right answer.
	removable bool
	err       error
	done      bool
}

func newSim(t *testing.T, seed uint64) *sim {
	e := newSchedEnv(t, simNames...)
	m := &sim{t: t, rnd: rand.New(rand.NewPCG(seed, seed)), e: e, cfg: map[string]simTarget{}}
	m.s = e.newScheduler()
	var initial []rotation.Schedule
	for _, name := range simNames[:1+m.rnd.IntN(len(simNames))] {
		m.cfg[name] = m.randomTarget()
		initial = append(initial, m.schedule(name))
	}
	e.start(m.s, initial...)
	return m
}

func (m *sim) randomTarget() simTarget {
	return simTarget{spec: simSpecs[m.rnd.IntN(len(simSpecs))], grace: time.Duration(10+m.rnd.IntN(50)) * time.Minute, applied: m.e.clock.Now()}
}

func (m *sim) schedule(name string) rotation.Schedule {
	t := m.e.target(name)
	t.Grace = m.cfg[name].grace
	return rotation.Schedule{Target: t, Spec: m.cfg[name].spec}
}

func (m *sim) configured() []string {
	var out []string
	for name := range m.cfg {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

func (m *sim) run(steps int) {
	for step := range steps {
		m.settle()
		m.check(step)
		switch op := m.rnd.IntN(10); {
		case op < 4:
			m.advance()
		case op < 6:
			m.rotateNow()
		case op < 8:
			m.reload()
		default:
			m.busyWindow()
		}
	}
	m.settle()
	m.check(steps)
}

// advance moves the clock by a random step, firing what falls due.
func (m *sim) advance() {
	d := []time.Duration{time.Minute, 10 * time.Minute, 30 * time.Minute, time.Hour, 3 * time.Hour}[m.rnd.IntN(5)]
	m.e.clock.Advance(d)
}

// rotateNow asks for a manual rotation of a configured target without
// waiting for it.
func (m *sim) rotateNow() {
	names := m.configured()
	if len(names) == 0 {
		return
	}
	m.rotateNowOf(names[m.rnd.IntN(len(names))])
}

func (m *sim) rotateNowOf(name string) (done <-chan struct{}) {
	c := make(chan struct{})
	m.mu.Lock()
	m.manual = append(m.manual, simManual{target: name})
	i := len(m.manual) - 1
	m.mu.Unlock()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer close(c)
		_, err := m.s.RotateNow(name, rotation.Options{})
		m.mu.Lock()
		m.manual[i].err, m.manual[i].done = err, true
		m.mu.Unlock()
	}()
	return c
}

// reload applies a random config: targets added, removed or changed.
func (m *sim) reload() {
	next := map[string]simTarget{}
	for _, name := range simNames {
		old, had := m.cfg[name]
		switch r := m.rnd.IntN(4); {
		case had && r == 0: // removed
		case had && r == 1: // changed
			nt := m.randomTarget()
			if nt.spec == old.spec {
				nt.applied = old.applied
			}
			next[name] = nt
		case had: // kept
			next[name] = old
		case r < 2: // added
			next[name] = m.randomTarget()
		}
	}
	for name := range m.cfg {
		if _, kept := next[name]; !kept {
			m.mu.Lock()
			for i := range m.manual {
				if m.manual[i].target == name && !m.manual[i].done {
					m.manual[i].removable = true
				}
			}
			m.mu.Unlock()
		}
	}
	m.cfg = next
	var schedules []rotation.Schedule
	for _, name := range m.configured() {
		schedules = append(schedules, m.schedule(name))
	}
	if err := m.s.Apply(schedules); err != nil {
		m.t.Fatalf("Apply: %v", err)
	}
}

// busyWindow holds one target's rotation at Codat's create while other
// steps happen (ticks come due, manual rotations queue, reloads), then
// lets it go.
func (m *sim) busyWindow() {
	names := m.configured()
	if len(names) == 0 {
		return
	}
	name := names[m.rnd.IntN(len(names))]
	release := m.e.gate.holdFor(name, "create")
	// A held scheduled rotation reports when it ends; a removed target's
	// loop ends then, and settle cannot see it.
	heldTick := -1
	if m.rnd.IntN(2) == 0 {
		// Hold a manual rotation.
		select {
		case <-m.e.gate.entered:
		case <-m.rotateNowOf(name):
			release() // no room for a create: nothing to hold
			return
		case <-time.After(waitLong):
			m.t.Fatal("the held rotation neither reached its create nor ended")
		}
	} else {
		// Hold the target's next scheduled rotation.
		ran := len(m.e.rec.rotationsOf(name))
		m.e.clock.Advance(m.s.Next(name).Sub(m.e.clock.Now()))
		m.e.rec.signal()
		deadline := time.After(waitLong)
	wait:
		for {
			m.e.rec.mu.Lock()
			changed := m.e.rec.changed
			m.e.rec.mu.Unlock()
			select {
			case <-m.e.gate.entered:
				heldTick = ran
				break wait
			case <-changed:
				if len(m.e.rec.rotationsOf(name)) > ran {
					release() // it ended without a create (no room)
					return
				}
			case <-deadline:
				m.t.Fatal("the scheduled rotation neither reached its create nor ended")
			}
		}
	}
	for range 1 + m.rnd.IntN(3) {
		switch m.rnd.IntN(3) {
		case 0:
			m.advance()
		case 1:
			if slices.Contains(m.configured(), name) {
				m.rotateNowOf(name) // queued behind the held one
			}
		default:
			m.reload()
		}
	}
	release()
	if heldTick >= 0 {
		m.e.rec.waitRotations(m.t, name, heldTick+1)
	}
}

// settle waits for the manual rotations asked and for every loop to
// wait on the clock again.
func (m *sim) settle() {
	m.t.Helper()
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(waitLong):
		m.t.Fatal("manual rotations never answered")
	}
	// Every loop waits on the clock with nothing due, and the loops of
	// removed targets have ended.
	deadline := time.After(waitLong)
	for {
		m.e.clock.mu.Lock()
		parked := len(m.e.clock.timers)
		now := m.e.clock.now
		m.e.clock.mu.Unlock()
		idle := parked == len(m.cfg)
		for name := range m.cfg {
			next, retire := m.s.Next(name), m.s.NextRetire(name)
			idle = idle && next.After(now) && (retire.IsZero() || retire.After(now))
		}
		if idle && m.s.Idle() {
			return
		}
		if idle {
			// Only a removed target's loop is still ending, which moves
			// no clock and reports nothing: yield to it.
			select {
			case <-deadline:
				m.t.Fatal("a removed target's loop never ended")
			default:
			}
			runtime.Gosched()
			continue
		}
		select {
		case <-m.e.clock.changed:
		case <-deadline:
			var plans []string
			for _, name := range m.configured() {
				plans = append(plans, fmt.Sprintf("%s: next %s, retire %s", name, m.s.Next(name).Format(time.RFC3339), m.s.NextRetire(name).Format(time.RFC3339)))
			}
			m.t.Fatalf("the loops never settled at %s: %d wait on the clock, %d configured; %s", now.Format(time.RFC3339), parked, len(m.cfg), strings.Join(plans, "; "))
		}
	}
}

func (m *sim) check(step int) {
	m.t.Helper()
	now := m.e.clock.Now()
	fail := func(format string, args ...any) {
		m.t.Helper()
		m.t.Fatalf("step %d (%s): %s", step, now.Format(time.RFC3339), fmt.Sprintf(format, args...))
	}
	for _, name := range simNames {
		if p := m.e.gate.peakOf(name); p > 1 {
			fail("%s: %d codat calls in flight at once: runs overlapped", name, p)
		}
		if st := m.e.state(name); st.Journal != nil {
			fail("%s: a rotation was left unfinished: %+v", name, st.Journal)
		}
	}
	m.e.noErrBusy()
	m.mu.Lock()
	for _, c := range m.manual {
		switch {
		case !c.done:
			fail("%s: a manual rotation was never answered", c.target)
		case c.err != nil && !(c.removable && strings.Contains(c.err.Error(), "no target")) && !errors.Is(c.err, rotation.ErrNoRoom):
			fail("%s: manual rotation: %v", c.target, c.err)
		}
	}
	m.mu.Unlock()
	for _, name := range m.configured() {
		st := m.e.state(name)
		if st.Halted {
			fail("%s: halted: %s", name, st.HaltReason)
		}
		if next := m.s.Next(name); !next.After(now) {
			fail("%s: Next = %s, not after now: a run is owed", name, next)
		}
		sched, err := rotation.ParseSchedule(m.cfg[name].spec)
		if err != nil {
			m.t.Fatal(err)
		}
		// The most recent scheduled time must have a rotation that
		// started at or after it (one that failed, for no room while
		// keys in their grace fill the cap, counts: it was not dropped).
		since := m.cfg[name].applied
		for _, c := range m.e.rec.rotationsOf(name) {
			if c.started.After(since) {
				since = c.started
			}
		}
		if due := sched.Next(since); !due.After(now) {
			fail("%s: the run scheduled at %s (%s) never started", name, due, m.cfg[name].spec)
		}
		if due, _ := rotation.Due(st, now); len(due) > 0 {
			m.t.Logf("next %s nextRetire %s", m.s.Next(name), m.s.NextRetire(name))
			for line := range strings.SplitSeq(m.e.logs.String(), "\n") {
				if strings.Contains(line, `"target":"`+name+`"`) {
					m.t.Log(line)
				}
			}
			fail("%s: key %s is past its delete_after %s and not retired", name, due[0].ID, due[0].DeleteAfter)
		}
	}
	m.e.rec.mu.Lock()
	defer m.e.rec.mu.Unlock()
	for _, c := range m.e.rec.rotations {
		if c.err != nil && !errors.Is(c.err, rotation.ErrNoRoom) {
			fail("%s: rotation failed: %v", c.target, c.err)
		}
	}
}
