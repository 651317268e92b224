package rotation

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/codat-rotator/codat-rotator/store"
)

// Takeover is what a takeover found and did.
type Takeover struct {
	Target string
	// Previous is the owner recorded before (zero when none was).
	Previous Claim
	// Rebuilt are the keys the state took on from Vault's history and
	// the target's name shape, with when each retires.
	Rebuilt []store.Key
	// Foreign are the keys at Codat the target cannot attribute: left
	// alone, counted toward the cap.
	Foreign []string
	// Versions is how many versions of the secret were read.
	Versions int
}

// Takeover makes this engine's state file the owner of t's secret and
// rebuilds the state from what Vault and Codat hold
// (docs/design.md#ownership): every version of the secret still in
// Vault says which keys it served and when they were superseded, and
// keys in the target's own name shape are its own. Keys it takes on get
// their remaining grace from the recorded times, never less; keys it
// cannot attribute stay foreign. The operator runs it after stopping the
// daemon that owned the target: a daemon still running would be blocked
// at its next look at Vault, but a publish already in flight could land.
func (e *Engine) Takeover(ctx context.Context, t Target) (Takeover, error) {
	out := Takeover{Target: t.Name}
	e.noteTarget(t)
	if e.Owner.ID == "" {
		return out, errors.New("takeover: this engine has no state file identity")
	}
	release, err := e.acquire(t.Name)
	if err != nil {
		return out, err
	}
	defer release()
	v, err := e.look(ctx, t, lookOpts{anyOwner: true, history: true,
		noSecret: fmt.Sprintf("takeover: %s holds no secret, so there is nothing to take over; the first rotation publishes the bootstrap key and claims the target", t.Vault)})
	out.Previous = ClaimOf(v.Cur.CustomMetadata)
	if err != nil {
		return out, err
	}
	out.Versions = len(v.History)
	if !v.Served.Known {
		return out, servedUnknown(t, false, len(v.Keys), v.Served)
	}
	st, err := e.Store.Load(t.Name)
	if err != nil {
		return out, err
	}
	apply, err := e.settle(ctx, t, &v, st, "takeover", false)
	if err != nil {
		return out, fmt.Errorf("takeover: %w", err)
	}
	tag := e.tagFor(t, st, v.Metadata)
	if md := e.metadata(t, v.Cur.CustomMetadata, tag, e.now()); md != nil {
		if err := e.Vault.SetMetadata(ctx, t.Vault, md); err != nil {
			return out, fmt.Errorf("takeover: record the owner in %s's custom metadata: %w", t.Vault, err)
		}
	}
	err = e.Store.Update(t.Name, func(st *store.Target) error {
		out.Foreign, out.Rebuilt = nil, nil // fn may run again (store.Update)
		known := map[string]bool{}
		for _, k := range st.Keys {
			if k.Origin.Managed() && k.State != store.KeyDeleted {
				known[k.ID] = true
			}
		}
		// Orphans are left to the next rotation, which deletes them
		// under its journal.
		if st.Tag == "" {
			st.Tag = tag
		}
		_ = apply(st)
		st.Unclaimed = ""
		for _, k := range st.Keys {
			switch {
			case k.State == store.KeyDeleted:
			case !k.Origin.Managed():
				out.Foreign = append(out.Foreign, k.ID)
			case !known[k.ID]:
				out.Rebuilt = append(out.Rebuilt, k)
			}
		}
		st.Blocked, st.BlockedAt = "", time.Time{}
		return nil
	})
	return out, err
}
