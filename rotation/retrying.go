package rotation

import (
	"sync"
	"time"
)

// Retrying is a rotation waiting between two attempts: the last one
// failed on an error worth retrying, and the next starts at At. Between
// them the state file says nothing new (the journal is cleared, the
// result not yet recorded), so status asks the engine.
type Retrying struct {
	// Next is the attempt that follows, of Attempts.
	Next, Attempts int
	// At is when the next attempt starts.
	At time.Time
	// Err is why the attempt before Next failed.
	Err string
}

// retrying holds the rotations of this process waiting to retry, by
// target.
type retrying struct {
	mu sync.Mutex
	m  map[string]Retrying
}

func (r *retrying) set(name string, v Retrying) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[string]Retrying{}
	}
	r.m[name] = v
}

func (r *retrying) clear(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.m, name)
}

// Retrying says whether the named target's rotation waits to retry in
// this process, and for which attempt.
func (e *Engine) Retrying(name string) (Retrying, bool) {
	e.retrying.mu.Lock()
	defer e.retrying.mu.Unlock()
	v, ok := e.retrying.m[name]
	return v, ok
}
