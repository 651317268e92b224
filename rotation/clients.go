package rotation

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/codat-rotator/codat-rotator/store"
)

// Targets that share a Codat client (docs/design.md#shared-clients).
// Two targets share a client when their listings hold the same key: no
// setting says so, Codat's listings do. Each target counts the other's
// keys as foreign toward the one cap, and a rotation's look at the keys,
// the room it makes and its create run while no other target on the
// same client is between those steps, so that rotations of all of them
// together never take the reserve.

// SharedClients returns, for each target that shares its Codat client
// with others, those others in name order: targets whose recorded keys
// (any origin, not deleted) have an id in common.
func SharedClients(states map[string]store.Target) map[string][]string {
	holders := map[string][]string{}
	for name, st := range states {
		for _, k := range st.Keys {
			if k.State != store.KeyDeleted {
				holders[k.ID] = append(holders[k.ID], name)
			}
		}
	}
	links := map[string]map[string]bool{}
	for _, names := range holders {
		for _, a := range names {
			for _, b := range names {
				if a == b {
					continue
				}
				if links[a] == nil {
					links[a] = map[string]bool{}
				}
				links[a][b] = true
			}
		}
	}
	out := make(map[string][]string, len(links))
	for a, bs := range links {
		for b := range bs {
			out[a] = append(out[a], b)
		}
		sort.Strings(out[a])
	}
	return out
}

// slots tracks which targets share a client, from the keys each last
// saw, and serialises their slot-taking steps.
type slots struct {
	holders map[string]map[string]bool // key id -> targets that saw it
	seen    map[string][]string        // target -> key ids it last saw
	lock    map[string]chan struct{}   // target -> its slot lock
}

// noteKeys records the key ids a target saw (a listing, or its state).
// The caller holds e.mu.
func (s *slots) noteKeys(target string, ids []string) {
	if s.holders == nil {
		s.holders, s.seen, s.lock = map[string]map[string]bool{}, map[string][]string{}, map[string]chan struct{}{}
	}
	for _, id := range s.seen[target] {
		delete(s.holders[id], target)
		if len(s.holders[id]) == 0 {
			delete(s.holders, id)
		}
	}
	s.seen[target] = ids
	for _, id := range ids {
		if s.holders[id] == nil {
			s.holders[id] = map[string]bool{}
		}
		s.holders[id][target] = true
	}
}

// group returns target and every target sharing its client, in name
// order. The caller holds e.mu.
func (s *slots) group(target string) []string {
	g := map[string]bool{target: true}
	for _, id := range s.seen[target] {
		for other := range s.holders[id] {
			g[other] = true
		}
	}
	out := make([]string, 0, len(g))
	for t := range g {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// noteListing records what a target's listing showed.
func (e *Engine) noteListing(target string, keys []Key) {
	ids := make([]string, 0, len(keys))
	for _, k := range keys {
		ids = append(ids, k.ID)
	}
	e.mu.Lock()
	e.slots.noteKeys(target, ids)
	e.mu.Unlock()
}

// SharesClient returns the targets this engine has seen share target's
// Codat client, from the latest listings.
func (e *Engine) SharesClient(target string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.DeleteFunc(e.slots.group(target), func(t string) bool { return t == target })
}

// slotHold is a held set of slot locks.
type slotHold struct {
	e    *Engine
	held []string
}

// holdSlots takes the slot locks of target and of every target known to
// share its client, in name order (so two holders never wait on each
// other). Before the target's first listing since start, what its state
// recorded stands for one.
func (e *Engine) holdSlots(ctx context.Context, target string) (*slotHold, error) {
	if err := e.noteState(target); err != nil {
		return nil, err
	}
	e.mu.Lock()
	group := e.slots.group(target)
	locks := make([]chan struct{}, len(group))
	for i, t := range group {
		if e.slots.lock[t] == nil {
			e.slots.lock[t] = make(chan struct{}, 1)
		}
		locks[i] = e.slots.lock[t]
	}
	e.mu.Unlock()
	h := &slotHold{e: e}
	for i, l := range locks {
		select {
		case l <- struct{}{}:
			h.held = append(h.held, group[i])
		case <-ctx.Done():
			h.release()
			return nil, ctx.Err()
		}
	}
	return h, nil
}

// covers reports whether the hold covers every target now known to
// share target's client; when not, the caller releases, holds again and
// looks at the keys again.
func (h *slotHold) covers(target string) bool {
	h.e.mu.Lock()
	defer h.e.mu.Unlock()
	for _, t := range h.e.slots.group(target) {
		if !slices.Contains(h.held, t) {
			return false
		}
	}
	return true
}

// release frees the locks; it may be called more than once.
func (h *slotHold) release() {
	if h == nil {
		return
	}
	h.e.mu.Lock()
	for _, t := range h.held {
		<-h.e.slots.lock[t]
	}
	h.e.mu.Unlock()
	h.held = nil
}

// Know tells the engine every configured target: their caps, and the
// keys their states record, so that targets sharing a Codat client
// agree on the cap (strictest) from the first rotation of any of them,
// before this process has listed the others' keys.
func (e *Engine) Know(ts ...Target) error {
	for _, t := range ts {
		e.noteTarget(t)
		if err := e.noteState(t.Name); err != nil {
			return err
		}
	}
	return e.noteRenamed(ts)
}

// noteRenamed finds each of ts that has no state yet while the state of
// a name the config no longer has records its Vault location: a target
// renamed in the config. That state becomes the renamed target's, moved
// to the new name in one transaction (store.DB.Rename), so the target
// keeps its keys, fingerprints, journal and timers; a read-only state
// file (status, a dry run) reads the old name's state in its place
// (renamedFrom). Its keys also say which client the target is on, so
// that the delete path reads its secret and the strictest cap applies
// before its first listing under the new name. ts is the whole config.
// One pass over the state file, and only when such a target exists.
func (e *Engine) noteRenamed(ts []Target) error {
	configured := make(map[string]bool, len(ts))
	for _, t := range ts {
		configured[t.Name] = true
	}
	e.mu.Lock()
	empty := map[string]string{} // Vault location -> target
	for _, t := range ts {
		if len(e.slots.seen[t.Name]) == 0 {
			empty[t.Vault.String()] = t.Name
		}
	}
	e.mu.Unlock()
	if len(empty) == 0 || e.Store == nil {
		return nil
	}
	names, err := e.Store.Targets()
	if err != nil {
		return err
	}
	for _, old := range names {
		if configured[old] {
			continue
		}
		st, err := e.Store.Load(old)
		if err != nil {
			return err
		}
		target, ok := empty[st.Vault]
		if !ok || st.Fresh() {
			continue
		}
		if err := e.rename(old, target); err != nil {
			return err
		}
		ids := stateIDs(st)
		e.mu.Lock()
		if len(e.slots.seen[target]) == 0 && len(ids) > 0 {
			e.slots.noteKeys(target, ids)
		}
		e.mu.Unlock()
	}
	return nil
}

// rename gives target the state old left, unless target has state of
// its own. Never under a run of either name (a reload may rename while
// the old name's last run finishes): then the target, at its first
// look, rebuilds what it can from the secret's versions instead.
func (e *Engine) rename(old, target string) error {
	for _, name := range []string{old, target} {
		release, err := e.acquire(name)
		if err != nil {
			e.log().Warn("target renamed in the config, but its old state is not moved: a run is in flight", "target", target, "from", old, "error", err)
			return nil
		}
		defer release()
	}
	cur, err := e.Store.Load(target)
	if err != nil || !cur.Fresh() {
		return err
	}
	err = e.Store.Rename(old, target)
	switch {
	case errors.Is(err, store.ErrReadOnly):
		e.mu.Lock()
		if e.renamed == nil {
			e.renamed = map[string]string{}
		}
		e.renamed[target] = old
		e.mu.Unlock()
		return nil
	case err != nil:
		return fmt.Errorf("target %s, renamed from %s in the config: %w", target, old, err)
	}
	e.log().Info("target renamed in the config: its state moves to the new name", "target", target, "from", old)
	return nil
}

// renamedFrom is the old name whose state a read-only engine reads for
// target (noteRenamed), or "".
func (e *Engine) renamedFrom(target string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.renamed[target]
}

// noteState stands a target's state in for a listing until this
// process lists its keys: the keys it records, and the other target's
// key its secret was found serving (SharedKey: refused, so not recorded
// as a key, yet proof that the two share a client even when the
// recorded keys are stale, as after a restored backup).
func (e *Engine) noteState(target string) error {
	e.mu.Lock()
	_, seen := e.slots.seen[target]
	e.mu.Unlock()
	if seen || e.Store == nil {
		return nil
	}
	st, err := e.Store.Load(target)
	if err != nil {
		return err
	}
	ids := stateIDs(st)
	e.mu.Lock()
	if _, ok := e.slots.seen[target]; !ok {
		e.slots.noteKeys(target, ids)
	}
	e.mu.Unlock()
	return nil
}

// stateIDs are the key ids a state stands in a listing's place with.
func stateIDs(st store.Target) []string {
	var ids []string
	for _, k := range st.Keys {
		if k.State != store.KeyDeleted {
			ids = append(ids, k.ID)
		}
	}
	if st.SharedKey != "" {
		ids = append(ids, st.SharedKey)
	}
	return ids
}

// noteTarget records t's definition, so that targets sharing its client
// agree on the cap (strictest).
func (e *Engine) noteTarget(t Target) {
	e.mu.Lock()
	if e.defs == nil {
		e.defs = map[string]Target{}
	}
	e.defs[t.Name] = t
	e.mu.Unlock()
}

// strictest returns t with the strictest cap of the targets this engine
// knows to share its Codat client (docs/design.md#shared-clients): the
// lowest max_keys, and the reserve that leaves routine rotations the
// fewest slots. Targets on one client share one cap, so an emergency of
// any of them finds the reserve the strictest of them keeps, whatever
// the others were configured with.
func (e *Engine) strictest(t Target) Target {
	e.mu.Lock()
	defer e.mu.Unlock()
	return strictestOf(t, e.slots.group(t.Name), e.defs)
}

// Strictest is strictest for callers outside a rotation (status, check):
// t with the cap that applies, and whether another target made it
// stricter than t's own.
func (e *Engine) Strictest(t Target) (Target, bool) {
	s := e.strictest(t)
	return s, s.MaxKeys != t.MaxKeys || s.ReserveSlots != t.ReserveSlots
}

// StrictestCap returns t with the strictest cap of t and others, the
// targets that share its Codat client.
func StrictestCap(t Target, others []Target) Target {
	defs := make(map[string]Target, len(others))
	group := make([]string, 0, len(others))
	for _, o := range others {
		defs[o.Name] = o
		group = append(group, o.Name)
	}
	return strictestOf(t, group, defs)
}

func strictestOf(t Target, group []string, defs map[string]Target) Target {
	maxKeys, routine := t.MaxKeys, t.MaxKeys-t.ReserveSlots
	for _, name := range group {
		d, ok := defs[name]
		if !ok || name == t.Name {
			continue
		}
		maxKeys = min(maxKeys, d.MaxKeys)
		routine = min(routine, d.MaxKeys-d.ReserveSlots)
	}
	t.MaxKeys, t.ReserveSlots = maxKeys, maxKeys-min(routine, maxKeys)
	return t
}
