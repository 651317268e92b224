package rotation_test

import (
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/rotation"
)

// TestReloadLeavesUnchangedTargetsParked: a reload that changes one
// target of three wakes that one loop; the two whose definition is the
// same (Fingerprint) stay parked, their plan untouched.
func TestReloadLeavesUnchangedTargetsParked(t *testing.T) {
	t.Parallel()
	e := newSchedEnv(t, "a", "b", "c")
	for _, n := range []string{"a", "b", "c"} {
		e.rotate(n)
	}
	def := func(name, spec, fp string) rotation.Schedule {
		sc := e.schedule(name, spec)
		sc.Fingerprint = fp
		return sc
	}
	s := e.newScheduler()
	e.start(s, def("a", "@every 1h", "a1"), def("b", "@every 1h", "b1"), def("c", "@every 1h", "c1"))
	e.clock.waitParked(t, 3)
	nextB, nextC := s.Next("b"), s.Next("c")
	before := s.Wakeups()
	if err := s.Apply([]rotation.Schedule{def("a", "@every 1h", "a2"), def("b", "@every 1h", "b1"), def("c", "@every 1h", "c1")}); err != nil {
		t.Fatal(err)
	}
	e.clock.waitParked(t, 3)
	if got := s.Wakeups() - before; got != 1 {
		t.Errorf("a reload that changed one target of three woke %d loops, want 1", got)
	}
	if s.Next("b") != nextB || s.Next("c") != nextC {
		t.Errorf("unchanged targets were replanned: b %v→%v, c %v→%v", nextB, s.Next("b"), nextC, s.Next("c"))
	}
	// A changed schedule, same fingerprint, is a change.
	before = s.Wakeups()
	if err := s.Apply([]rotation.Schedule{def("a", "@every 1h", "a2"), def("b", "@every 2h", "b1"), def("c", "@every 1h", "c1")}); err != nil {
		t.Fatal(err)
	}
	e.clock.waitParked(t, 3)
	if got := s.Wakeups() - before; got != 1 {
		t.Errorf("a reload that changed b's schedule woke %d loops, want 1", got)
	}
	if s.Next("b").Sub(nextB) < 59*time.Minute {
		t.Errorf("b's new schedule not planned: next %v, was %v", s.Next("b"), nextB)
	}
}
