package rotation

// Wake has the named target's loop look at its state file now instead
// of at its next planned time: after a resume, the keys a halted target
// kept past their delete_after are retired at once, not up to
// recheckEvery later. A busy loop looks when its work ends; an unknown
// target is ignored.
func (s *Scheduler) Wake(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l, ok := s.loops[name]; ok && !l.removed {
		s.unpark(l, true)
	}
}
