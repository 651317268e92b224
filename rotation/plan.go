package rotation

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

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
	// ServedDoubt says why that is not certain (see Served.Doubt).
	ServedDoubt string
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
	// RetireNow are the keys the retire pass after the rotation would
	// delete at once (an emergency's, or keys already past their grace).
	RetireNow []string
	// Revoke is the key an emergency would also delete.
	Revoke string
	// Blocked says why the rotation could not proceed, empty if it could.
	Blocked string
}

// Plan computes what Rotate would do now: the policy's functions
// (FindServed, Reconcile, Room, Activate, Due, Retirement) applied to a
// copy of the state, so the dry run and the run cannot disagree.
func (e *Engine) Plan(ctx context.Context, t Target, opts Options) (Plan, error) {
	e.noteTarget(t)
	now := e.now()
	p := Plan{Target: t.Name, Revoke: opts.Revoke}
	st, err := e.load(t.Name)
	if err != nil {
		return p, err
	}
	p.Journal = st.Journal
	if st.Halted && !opts.Manual {
		p.Blocked = fmt.Sprintf("target is halted: %s", st.HaltReason)
	}
	v, err := e.look(ctx, t, lookOpts{pretend: true})
	if errors.Is(err, ErrNotOwner) {
		p.Blocked = err.Error()
		return p, nil
	}
	if err != nil {
		return p, err
	}
	p.Bootstrap = v.Bootstrap
	served := v.Served
	if !served.Known || (p.Bootstrap && served.Doubt != "") {
		return p, servedUnknown(t, p.Bootstrap, len(v.Keys), served)
	}
	p.ServedKeyID, p.ServedDoubt = served.ID, served.Doubt
	if p.Bootstrap {
		// The run publishes it with its id before it plans.
		v.Secret = &Published{APIKey: v.Secret.APIKey, KeyID: served.ID, RotatedAt: now}
		v.Version++
		st.VaultVersion, st.VaultWritten = v.Version, v.Written
		notePrint(adopt(&st, Key{ID: served.ID}, store.KeyActive, now, time.Time{}, "dry-run"), v.SecretPrint)
		if claims, err := e.allClaims(t, []string{served.ID}); err != nil {
			return p, err
		} else if other, ok := claims.Serve[served.ID]; ok {
			p.Blocked = sharedKey(t, &v, served.ID, other).Error()
			return p, nil
		}
	}
	keys := v.Keys
	apply, err := e.settle(ctx, t, &v, st, "dry-run", true)
	if errors.Is(err, ErrKeyShared) {
		p.Blocked = err.Error()
		return p, nil
	}
	if err != nil {
		return p, err
	}
	out := apply(&st)
	p.NewKeyName = out.Names.Example(now)
	gone := map[string]bool{}
	for _, k := range out.Orphans {
		p.Orphans = append(p.Orphans, k.ID)
		gone[k.ID] = true
		if rec := st.Key(k.ID); rec != nil {
			markDeleted(rec, now)
		}
	}
	kept := slices.DeleteFunc(slices.Clone(keys), func(k Key) bool { return gone[k.ID] })
	p.CodatKeys = len(keys)
	cap := e.strictest(t)
	p.Limit, _ = Limit(cap, opts.Emergency)
	if opts.Revoke != "" {
		if err := checkRevoke(st, kept, opts.Revoke); err != nil {
			p.Blocked = err.Error()
		} else if !slices.ContainsFunc(kept, func(k Key) bool { return k.ID == opts.Revoke }) {
			p.Revoke = "" // a rerun: the daemon deleted it already
		}
	}
	held, err := e.heldElsewhere(t, st, now)
	if err != nil {
		return p, err
	}
	room, foreign, err := Room(st, kept, served, cap, opts.Emergency, now, held)
	p.Foreign = foreign
	if err != nil {
		p.Blocked = err.Error()
	}
	p.MakeRoom = room
	for _, k := range room {
		gone[k.ID] = true
		markDeleted(st.Key(k.ID), now)
	}
	kept = slices.DeleteFunc(kept, func(k Key) bool { return gone[k.ID] })

	// The new key, as activate will see it, then the retire pass that
	// follows a successful rotation.
	const newID = "(new key)"
	p.Retire = Activate(&st, newID, served, now, now.Add(Grace(t, opts)))
	after := append(slices.Clone(kept), Key{ID: newID})
	if p.Revoke != "" {
		after = slices.DeleteFunc(after, func(k Key) bool { return k.ID == p.Revoke })
		if rec := st.Key(p.Revoke); rec != nil {
			markDeleted(rec, now)
		}
	}
	due, _ := Due(st, now)
	del, _, _ := Retirement(due, after, FindServed(after, &Published{KeyID: newID}, nil, ""))
	for _, k := range del {
		p.RetireNow = append(p.RetireNow, k.ID)
	}
	return p, nil
}

// servedUnknown is the error of a rotation that cannot tell which key
// Vault serves (or which key is the bootstrap key).
func servedUnknown(t Target, bootstrap bool, n int, served Served) error {
	if bootstrap {
		return fmt.Errorf("%w: cannot tell which of codat's %d keys is the bootstrap key: the listing shows no raw keys", ErrServedUnknown, n)
	}
	if served.Doubt != "" {
		return fmt.Errorf("%w: %s; check which key %s serves (its api_key), then publish it whole with its key_id (`vault kv put %s api_key=<key> key_id=<id>`)",
			ErrServedUnknown, served.Doubt, t.Vault, t.Vault)
	}
	return fmt.Errorf("%w: the secret at %s has no key_id and codat's listing shows no raw keys, so which of its keys vault serves cannot be told; add it with `vault kv patch %s key_id=<id>`",
		ErrServedUnknown, t.Vault, t.Vault)
}

// checkRevoke refuses a --revoke that names no key at Codat, unless the
// state shows the daemon deleted it: the rerun of an emergency whose
// revoke already happened.
func checkRevoke(st store.Target, keys []Key, id string) error {
	if id == "" || slices.ContainsFunc(keys, func(k Key) bool { return k.ID == id }) {
		return nil
	}
	if rec := st.Key(id); rec != nil && rec.State == store.KeyDeleted {
		return nil
	}
	return fmt.Errorf("%w %q: codat holds no key with that id", errRevoke, id)
}
