package rotation

import (
	"context"
	"errors"
	"fmt"

	"github.com/codat-rotator/codat-rotator/codat"
	"github.com/codat-rotator/codat-rotator/store"
)

// Plan is what a rotation would do, computed without changing anything:
// no write to Vault, Codat or the state file.
type Plan struct {
	Target string
	// Journal is a crash's unfinished rotation, which would be resumed
	// or rolled back first.
	Journal *store.Journal
	// Bootstrap: Vault holds no secret; the bootstrap key would be
	// published and adopted first.
	Bootstrap bool
	// ServedKeyID is the key Vault serves (or the bootstrap key).
	ServedKeyID string
	// CodatKeys, Foreign and Limit: keys at Codat, how many are not the
	// daemon's, and how many this rotation may hold.
	CodatKeys, Foreign, Limit int
	// NewKeyName shows the shape of the name the new key would get.
	NewKeyName string
	// Orphans are unknown keys with the daemon's name shape: deleted.
	Orphans []string
	// MakeRoom are the keys deleted first to stay within Limit.
	MakeRoom []store.Key
	// Retire are the managed keys that would be superseded, with the
	// time each would be deleted.
	Retire []store.Key
	// Revoke is the key an emergency would also delete.
	Revoke string
	// Blocked says why the rotation could not proceed, empty if it could.
	Blocked string
}

// Plan computes what Rotate would do now.
func (e *Engine) Plan(ctx context.Context, t Target, opts Options) (Plan, error) {
	now := e.now()
	p := Plan{Target: t.Name, Revoke: opts.Revoke, NewKeyName: t.Prefix + now.Format("20060102T150405Z") + "-xxxxxx"}
	st, err := e.Store.Load(t.Name)
	if err != nil {
		return p, err
	}
	p.Journal = st.Journal
	if st.Halted && !opts.Manual {
		p.Blocked = fmt.Sprintf("target is halted: %s", st.HaltReason)
	}
	if err := e.Vault.CheckMount(ctx, t.Vault); err != nil {
		return p, err
	}
	cur, err := e.Vault.Read(ctx, t.Vault)
	if err != nil {
		return p, err
	}
	var key codat.Secret
	var previous string
	if cur.Secret == nil {
		if t.Bootstrap == nil {
			return p, fmt.Errorf("%w: %s holds no secret; set bootstrap_key_file or bootstrap_key_env", ErrNoBootstrap, t.Vault)
		}
		if key, err = t.Bootstrap(); err != nil {
			return p, fmt.Errorf("%w: %w", ErrNoBootstrap, err)
		}
		p.Bootstrap = true
	} else {
		key, p.ServedKeyID, previous = cur.Secret.APIKey, cur.Secret.KeyID, cur.Secret.PreviousKeyID
	}
	keys, err := e.Codat(t.Name, key).List(ctx)
	if err != nil {
		if errors.Is(err, codat.ErrUnauthorized) {
			return p, fmt.Errorf("%w: %w", ErrServedKeyRejected, err)
		}
		return p, err
	}
	if p.ServedKeyID == "" {
		if id, err := idOfKey(keys, key); err == nil {
			p.ServedKeyID = id
		} else if len(keys) == 1 {
			p.ServedKeyID = keys[0].ID
		}
	}
	known := map[string]bool{}
	for _, k := range st.Keys {
		if k.State != store.KeyDeleted {
			known[k.ID] = true
		}
	}
	var kept []codat.Key
	for _, k := range keys {
		if !known[k.ID] && k.ID != p.ServedKeyID && k.ID != previous && OwnName(t.Prefix, k.Name) {
			p.Orphans = append(p.Orphans, k.ID)
			continue
		}
		kept = append(kept, k)
	}
	p.CodatKeys = len(keys)
	p.Limit = t.MaxKeys - t.ReserveSlots
	if opts.Emergency {
		p.Limit = t.MaxKeys
	}
	candidates, _ := roomCandidates(st, kept, p.ServedKeyID, opts.Emergency, now)
	// Foreign: at Codat, and neither managed in the state nor about to be
	// adopted (the served key and the previous key Vault names).
	managed := map[string]bool{p.ServedKeyID: true, previous: true}
	for _, k := range st.Keys {
		if k.Origin.Managed() {
			managed[k.ID] = true
		}
	}
	foreign := 0
	for _, k := range kept {
		if !managed[k.ID] {
			foreign++
		}
	}
	p.Foreign = foreign
	if need := len(kept) + 1 - p.Limit; need > 0 {
		if len(candidates) < need {
			p.Blocked = fmt.Sprintf("no room: %d keys at codat (%d foreign), limit %d, %d managed key(s) past their grace", len(keys), foreign, p.Limit, len(candidates))
		} else {
			p.MakeRoom = candidates[:need]
		}
	}
	if opts.Revoke != "" {
		found := false
		for _, k := range keys {
			found = found || k.ID == opts.Revoke
		}
		if !found {
			p.Blocked = fmt.Sprintf("--revoke %s: codat holds no key with that id", opts.Revoke)
		}
	}
	grace := t.Grace
	if opts.Emergency {
		grace = 0
	}
	deleteAfter := now.Add(grace)
	inRoom := map[string]bool{}
	for _, k := range p.MakeRoom {
		inRoom[k.ID] = true
	}
	live := map[string]bool{}
	for _, k := range kept {
		live[k.ID] = true
	}
	for _, k := range st.Keys {
		if !live[k.ID] || inRoom[k.ID] || !k.Origin.Managed() || k.State == store.KeyDeleted {
			continue
		}
		k.State = store.KeyRetiring
		if k.DeleteAfter.IsZero() || deleteAfter.Before(k.DeleteAfter) {
			k.DeleteAfter = deleteAfter
		}
		p.Retire = append(p.Retire, k)
	}
	if p.Bootstrap || !known[p.ServedKeyID] {
		// The served key is adopted at plan, then retired like the rest.
		for _, k := range keys {
			if k.ID == p.ServedKeyID {
				p.Retire = append(p.Retire, store.Key{ID: k.ID, Name: k.Name, Origin: store.OriginAdopted, State: store.KeyRetiring, DeleteAfter: deleteAfter})
			}
		}
	}
	return p, nil
}
