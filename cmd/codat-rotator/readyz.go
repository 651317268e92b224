package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/codat-rotator/codat-rotator/rotation/adapt"
	"github.com/codat-rotator/codat-rotator/store"
)

// How long /readyz and /healthz take at most, whatever Vault or Codat
// do: well inside the StatefulSet's probe timeouts (readiness 10s,
// liveness 5s, deploy/kubernetes/statefulset.yaml), so a probe never
// times out on a daemon that answers.
const (
	// readyAnswer bounds a /readyz answer; readyProbe, the checks behind
	// it (a slow Vault makes them fail with its reason before the answer
	// is due).
	readyAnswer = 5 * time.Second
	readyProbe  = 4 * time.Second
)

// readiness: the state file is open, at least one target can rotate
// (not every one blocked by another owner or halted), Vault
// authenticates the daemon, and every target has a served key. One
// check runs at a time, on its own deadline; every request waits for it
// up to its own, and the answer is kept for ttl so probes do not hammer
// Vault.
type readiness struct {
	app *app
	ttl time.Duration

	mu      sync.Mutex
	at      time.Time
	last    error
	running chan struct{} // closed when the check in flight ends; nil: none
}

func (r *readiness) check(ctx context.Context) error {
	r.mu.Lock()
	if r.running == nil {
		if time.Since(r.at) < r.ttl {
			defer r.mu.Unlock()
			return r.last
		}
		done := make(chan struct{})
		r.running = done
		go func() {
			pctx, cancel := context.WithTimeout(context.Background(), readyProbe)
			err := r.probe(pctx)
			cancel()
			r.mu.Lock()
			r.at, r.last, r.running = time.Now(), err, nil
			r.mu.Unlock()
			close(done)
		}()
	}
	done := r.running
	r.mu.Unlock()
	select {
	case <-done:
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.last
	case <-ctx.Done():
		return fmt.Errorf("the readiness checks did not finish in time: %w", ctx.Err())
	}
}

func (r *readiness) probe(ctx context.Context) error {
	if r.app.db == nil {
		return errors.New("state file not open")
	}
	targets := r.app.allTargets()
	states := make(map[string]store.Target, len(targets))
	for _, t := range targets {
		st, err := r.app.engine.Store.Load(t.Name)
		if err != nil {
			return fmt.Errorf("read state of %s: %w", t.Name, err)
		}
		states[t.Name] = st
	}
	if err := noTargetCanRotate(states); err != nil {
		return err
	}
	if err := r.app.vault.Ping(ctx); err != nil {
		return err
	}
	var missing []string
	for _, t := range targets {
		cur, err := r.app.vault.Read(ctx, adapt.VaultLocation(t.Vault))
		if err != nil {
			return err
		}
		if cur.Secret == nil {
			missing = append(missing, t.Name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("no key served yet for: %s", strings.Join(missing, ", "))
	}
	return nil
}

// noTargetCanRotate says why, when every target is blocked (another
// state file owns its secret: a second replica, a lost volume) or
// halted: such a daemon rotates nothing until an operator acts, and must
// not look ready. Nil when one target can rotate, or there is none.
func noTargetCanRotate(states map[string]store.Target) error {
	if len(states) == 0 {
		return nil
	}
	names := make([]string, 0, len(states))
	for name := range states {
		names = append(names, name)
	}
	slices.Sort(names)
	var why []string
	for _, name := range names {
		switch st := states[name]; {
		case st.Blocked != "":
			why = append(why, fmt.Sprintf("%s blocked: %s", name, st.Blocked))
		case st.Halted:
			why = append(why, fmt.Sprintf("%s halted: %s (run `codat-rotator resume --target %s`)", name, st.HaltReason, name))
		default:
			return nil
		}
	}
	return fmt.Errorf("no target can rotate: %s", strings.Join(why, "; "))
}
