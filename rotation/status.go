package rotation

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/codat-rotator/codat-rotator/store"
)

// Status is one target's keys as an operator sees them: what `status`
// reports, read from the state alone.
type Status struct {
	// Current is the active key, nil before the first rotation.
	Current *store.Key
	// Age is how long Current has been published (zero if unknown).
	Age time.Duration
	// Retiring are the superseded keys, the first to be deleted first.
	Retiring []store.Key
}

// TargetStatus reads a target's status from its state at now.
func TargetStatus(st store.Target, now time.Time) Status {
	s := Status{Retiring: []store.Key{}}
	for _, k := range st.Keys {
		switch k.State {
		case store.KeyActive:
			s.Current = &k
			if !k.Published.IsZero() {
				s.Age = now.Sub(k.Published)
			}
		case store.KeyRetiring:
			s.Retiring = append(s.Retiring, k)
		}
	}
	sort.SliceStable(s.Retiring, func(i, j int) bool { return s.Retiring[i].DeleteAfter.Before(s.Retiring[j].DeleteAfter) })
	return s
}

// ClassifiedKey is one key of a Codat listing as the policy classes it.
type ClassifiedKey struct {
	Key   Key
	Class Class
	// State is the key's state in the state file, empty when unknown.
	State store.KeyState
	// Served: Vault serves this key (or may: see Served.May).
	Served bool
}

// Keys looks at t's keys as a rotation would (one look, no change) and
// classes each of Codat's keys against the state: the same Classify a
// rotation acts on, so `keys` shows what the next rotation would do with
// each, in the listing's order.
func (e *Engine) Keys(ctx context.Context, t Target) ([]ClassifiedKey, Served, error) {
	e.noteTarget(t)
	v, err := e.look(ctx, t, lookOpts{anyOwner: true, noSecret: fmt.Sprintf("%s holds no secret yet, so there is no key to list Codat's keys with: the first rotation publishes the bootstrap key (`codat-rotator rotate --target %s`, or start the daemon)", t.Vault, t.Name)})
	if err != nil {
		return nil, Served{}, err
	}
	st, err := e.load(t.Name)
	if err != nil {
		return nil, Served{}, err
	}
	classes := Classify(st, v.Seen, NamesOf(t, st.Tag))
	out := make([]ClassifiedKey, 0, len(v.Keys))
	for _, k := range v.Keys {
		c := ClassifiedKey{Key: k, Class: classes[k.ID], Served: v.Served.May(k.ID)}
		if rec := st.Key(k.ID); rec != nil {
			c.State = rec.State
		}
		out = append(out, c)
	}
	return out, v.Served, nil
}
