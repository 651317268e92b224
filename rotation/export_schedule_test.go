package rotation

// ForgetIntervals empties ShortestInterval's cache, for benchmarks of
// the first computation.
func ForgetIntervals() {
	intervals.Lock()
	clear(intervals.m)
	intervals.Unlock()
}
