package rotation

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Targets whose Codat client this process does not know yet: no key
// recorded in their state, none listed since start (a fleet's first
// rotations, a state file new after a move where a target nobody took
// over has no state). Nothing says they are on another client, so the
// delete path reads their secrets too before it deletes a key
// (servedElsewhere). A fleet's first rotations would read every such
// secret on every delete, so what they serve is read at most once per
// unplacedFor, a round of reads at a time, shared by every delete in
// that window; the targets known to share the client are read fresh on
// every delete.

// unplacedFor is how long a read of an unplaced target's secret stands.
const unplacedFor = 30 * time.Second

// unplacedReads is how many of those reads run at once.
const unplacedReads = 16

// unplaced is what the unplaced targets' secrets served when last read.
type unplaced struct {
	mu   sync.Mutex // one round of reads at a time
	seen map[string]unplacedSecret
}

type unplacedSecret struct {
	print, keyID string // the fingerprint of its api_key, and its key_id
	at           time.Time
}

// unplacedTargets returns the configured targets other than t, at
// another Vault location, of which this process knows no key and which
// are not in t's group. The caller holds e.mu.
func (e *Engine) unplacedTargets(t Target, group []string) []Target {
	var out []Target
	for name, d := range e.defs {
		if name == t.Name || d.Vault == t.Vault || len(e.slots.seen[name]) > 0 {
			continue
		}
		known := false
		for _, g := range group {
			known = known || g == name
		}
		if !known {
			out = append(out, d)
		}
	}
	return out
}

// unplacedServing returns the unplaced target among defs whose secret
// serves key id (by print when known, else by key_id).
func (e *Engine) unplacedServing(ctx context.Context, defs []Target, id, print string) (string, error) {
	seen, err := e.unplacedSecrets(ctx, defs)
	if err != nil {
		return "", fmt.Errorf("%w, which may serve key %s", err, id)
	}
	for _, d := range defs {
		s := seen[d.Name]
		if (print != "" && s.print == print) || (print == "" && s.keyID != "" && s.keyID == id) {
			return d.Name, nil
		}
	}
	return "", nil
}

// placeUnplaced puts into t's group every unplaced target whose secret
// serves a key t's listing holds: the two share a Codat client, so the
// strictest reserve applies to both from now (Know's rule), and the
// delete path reads that secret on every delete. A secret that cannot be
// read places nothing; the delete path, which reads it again, fails
// closed.
func (e *Engine) placeUnplaced(ctx context.Context, t Target, keys []Key) {
	e.mu.Lock()
	defs := e.unplacedTargets(t, e.slots.group(t.Name))
	e.mu.Unlock()
	if len(defs) == 0 || len(keys) == 0 {
		return
	}
	seen, err := e.unplacedSecrets(ctx, defs)
	if err != nil {
		e.log().Debug("could not read every target whose codat client is not known", "target", t.Name, "error", err)
	}
	listed := make(map[string]bool, len(keys))
	for _, k := range keys {
		listed[k.ID] = true
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, d := range defs {
		if s, ok := seen[d.Name]; ok && listed[s.keyID] && len(e.slots.seen[d.Name]) == 0 {
			e.slots.noteKeys(d.Name, []string{s.keyID})
		}
	}
}

// unplacedSecrets returns what the secrets of defs served, reading those
// whose last read is older than unplacedFor; on a read error, what it
// has.
func (e *Engine) unplacedSecrets(ctx context.Context, defs []Target) (map[string]unplacedSecret, error) {
	u := &e.unplaced
	u.mu.Lock()
	defer u.mu.Unlock()
	now := e.now()
	var stale []Target
	for _, d := range defs {
		if s, ok := u.seen[d.Name]; !ok || now.Sub(s.at) >= unplacedFor || s.at.After(now) {
			stale = append(stale, d)
		}
	}
	err := e.readUnplaced(ctx, stale, now)
	out := make(map[string]unplacedSecret, len(defs))
	for _, d := range defs {
		if s, ok := u.seen[d.Name]; ok {
			out[d.Name] = s
		}
	}
	return out, err
}

// readUnplaced reads the secrets of defs, unplacedReads at a time, into
// e.unplaced.seen. The caller holds e.unplaced.mu.
func (e *Engine) readUnplaced(ctx context.Context, defs []Target, now time.Time) error {
	if e.unplaced.seen == nil {
		e.unplaced.seen = map[string]unplacedSecret{}
	}
	var (
		mu     sync.Mutex
		first  error
		raised any // a read's panic, raised again in the caller
		wg     sync.WaitGroup
		sem    = make(chan struct{}, unplacedReads)
	)
	for _, d := range defs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			defer func() {
				if p := recover(); p != nil {
					mu.Lock()
					raised = p
					mu.Unlock()
				}
			}()
			cur, err := e.Vault.Read(ctx, d.Vault)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if first == nil {
					first = fmt.Errorf("read %s: %w", d.Vault, err)
				}
				return
			}
			s := unplacedSecret{at: now}
			if cur.Secret != nil {
				s.print, s.keyID = e.fingerprint(cur.Secret.APIKey), cur.Secret.KeyID
			}
			e.unplaced.seen[d.Name] = s
		}()
	}
	wg.Wait()
	if raised != nil {
		panic(raised)
	}
	return first
}
