package rotation

import (
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

// ClassifyKeys classes each key of a Codat listing against the target's
// state and the secret Vault serves (nil when none), in the listing's
// order: the same Classify a rotation acts on, so `keys` shows what the
// next rotation would do with each.
func ClassifyKeys(t Target, st store.Target, listing []Key, cur Current) []ClassifiedKey {
	seen := See(listing, cur)
	served := seen.Served
	classes := Classify(st, seen, NamesOf(t))
	out := make([]ClassifiedKey, 0, len(listing))
	for _, k := range listing {
		c := ClassifiedKey{Key: k, Class: classes[k.ID], Served: served.May(k.ID)}
		if rec := st.Key(k.ID); rec != nil {
			c.State = rec.State
		}
		out = append(out, c)
	}
	return out
}
