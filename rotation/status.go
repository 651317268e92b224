package rotation

import (
	"sort"
	"time"

	"github.com/codat-rotator/codat-rotator/codat"
	"github.com/codat-rotator/codat-rotator/store"
	"github.com/codat-rotator/codat-rotator/vault"
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

// Marking says whose a key at Codat is.
type Marking string

const (
	// MarkManaged: the daemon created the key.
	MarkManaged Marking = "managed"
	// MarkAdopted: the daemon adopted the key (the bootstrap key, or the
	// key Vault served when it found it) and manages it.
	MarkAdopted Marking = "adopted"
	// MarkForeign: someone else's key; never touched without a revoke.
	MarkForeign Marking = "foreign"
	// MarkUnknown: not in the state, yet named as the daemon names keys.
	MarkUnknown Marking = "unknown"
)

// ClassifiedKey is one key of a Codat listing with its marking.
type ClassifiedKey struct {
	Key     codat.Key
	Marking Marking
	// State is the key's state in the state file, empty when unknown.
	State store.KeyState
	// Served: Vault serves this key.
	Served bool
}

// ClassifyKeys marks each key of a Codat listing against the target's
// state and the secret Vault serves (nil when none): managed, adopted,
// foreign or unknown, in the listing's order.
func ClassifyKeys(t Target, st store.Target, listing []codat.Key, served *vault.Secret) []ClassifiedKey {
	out := make([]ClassifiedKey, 0, len(listing))
	for _, k := range listing {
		c := ClassifiedKey{Key: k, Marking: MarkUnknown, Served: served != nil && k.ID == served.KeyID}
		if rec := st.Key(k.ID); rec != nil {
			c.State = rec.State
			switch rec.Origin {
			case store.OriginCreated:
				c.Marking = MarkManaged
			default:
				c.Marking = Marking(rec.Origin)
			}
		} else if !OwnName(t.Prefix, k.Name) {
			c.Marking = MarkForeign
		}
		out = append(out, c)
	}
	return out
}
