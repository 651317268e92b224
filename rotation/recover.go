package rotation

import (
	"context"
	"errors"
	"fmt"

	"github.com/codat-rotator/codat-rotator/store"
)

// recover finishes or rolls back the rotation a crash left in the
// journal. It reports done when it completed that rotation (no new one
// should start), and not done when it rolled back or found nothing to
// finish (a fresh rotation follows). An error leaves the journal for the
// next attempt.
func (r *run) recover(ctx context.Context, j store.Journal) (done bool, err error) {
	log := r.log.With("step", string(j.Step), "journal_rotation", j.RotationID)
	log.Warn("resuming a rotation left by a crash")
	r.id, r.res.RotationID = j.RotationID, j.RotationID
	r.opts.Emergency, r.opts.Revoke = j.Emergency, j.Revoke

	if j.Step == store.StepMakeRoom {
		// The delete happened or not; plan reconciles either way and
		// makes room again if it must.
		return false, r.clearJournal()
	}

	v, err := r.e.look(ctx, r.t, lookOpts{early: true,
		noSecret: fmt.Sprintf("%s holds no secret, so no key can reach codat to finish the rotation", r.t.Vault)})
	if err != nil {
		return false, err
	}
	cur := v.Cur
	r.view, r.meta = v, v.Metadata
	r.secret, r.version, r.written = *cur.Secret, cur.Version, cur.Written
	r.client, r.keys, r.served = v.Client, v.Keys, v.Served
	st, err := r.e.Store.Load(r.t.Name)
	if err != nil {
		return false, err
	}
	r.names = NamesOf(r.t, r.e.tagFor(r.t, st, v.Metadata)).withMetadata(v.Metadata)
	keys := r.keys

	if j.NewKeyID != "" && r.served.Is(j.NewKeyID) && r.secret.KeyID == j.NewKeyID {
		// The publish landed before the crash: finish from activate,
		// once the state is in line with the look (a state restored
		// from a backup does not know the keys made since).
		log.Info("vault already serves the new key; activating", "key_id", j.NewKeyID)
		if err := r.reconcile(ctx); err != nil {
			return false, err
		}
		if r.opts.Emergency && !EmergencyStands(j, cur) {
			log.Warn("vault was written after the emergency's publish; the keys it supersedes get the full grace",
				"journal_version", j.VaultVersion, "vault_version", cur.Version)
			r.opts.Emergency = false
		}
		k := Key{ID: j.NewKeyID, APIKey: cur.Secret.APIKey, Name: cur.Secret.KeyName, Created: cur.Secret.CreatedAt}
		if err := r.activate(k); err != nil {
			return false, err
		}
		return true, r.revoke(ctx)
	}
	if j.Step == store.StepRetire {
		// Activated, but Vault no longer serves that key: someone
		// published another since. The state learns what Vault serves
		// (the look a rotation's plan makes), and only the revoke was
		// left.
		if r.served.Known {
			if err := r.reconcile(ctx); err != nil {
				return false, err
			}
		}
		return true, r.revoke(ctx)
	}
	// Vault moved since the journal began: by version number, or by the
	// time Vault wrote the version the state saw (`vault kv metadata
	// delete` restarts the numbers, and two writes since can land on
	// the journal's number).
	moved := cur.Version != j.VaultVersion || (st.VaultVersion == j.VaultVersion && Stale(st, cur))
	if moved {
		maySupersede := MaySupersede(j)
		for _, k := range journaled(keys, j) {
			if rec := st.Key(k.ID); rec != nil && rec.Origin.Managed() && (rec.State == store.KeyActive || rec.State == store.KeyRetiring) {
				// The state (a takeover's look at the versions, say)
				// already holds the key as served once: never rolled back.
				maySupersede = true
			}
		}
		if !maySupersede {
			// Before its publish, the journal's key cannot have been
			// served, unless the journal is older than the world: a state
			// file restored from a backup taken mid-rotation, whose key
			// a later run published. Vault's versions since tell.
			if maySupersede, err = r.publishedSince(ctx, j, journaled(keys, j)); err != nil {
				return false, err
			}
		}
		if maySupersede {
			return false, r.supersedeJournaled(j, journaled(keys, j))
		}
	}

	k, found, err := r.findJournaled(ctx, j.Name, j.NewKeyID)
	if err != nil {
		return false, err
	}
	if !found {
		log.Info("the journaled key does not exist (or was unusable); starting afresh", "name", j.Name, "key_id", j.NewKeyID)
		return false, r.forget(j)
	}
	if moved {
		// Vault changed before anything was published: publishing would
		// race whoever wrote it. Roll back and start afresh.
		log.Warn("vault changed since the rotation began; rolling back", "journal_version", j.VaultVersion, "vault_version", cur.Version)
		err := r.rollback(ctx, k, fmt.Errorf("%w: %s moved from version %d to %d", ErrCASConflict, r.t.Vault, j.VaultVersion, cur.Version))
		if errors.Is(err, ErrRolledBack) {
			return false, nil
		}
		return false, err
	}
	if err := r.recordNewKey(k); err != nil {
		return false, err
	}
	log.Info("resuming with the journaled key", "key_id", k.ID)
	if err := r.finish(ctx, k); err != nil {
		return false, err
	}
	return true, nil
}

// journaled returns the keys at Codat the journal's rotation made: by id
// when it is known, else by its name.
func journaled(keys []Key, j store.Journal) []Key {
	var out []Key
	for _, k := range keys {
		if (j.NewKeyID != "" && k.ID == j.NewKeyID) || (j.NewKeyID == "" && j.Name != "" && k.Name == j.Name) {
			out = append(out, k)
		}
	}
	return out
}

// publishedSince reports whether any of keys may have been published in
// a version of the secret after the journal's: a version names it, or
// names no key at all (written by hand) when its raw value cannot be
// compared, or a version since is gone (deleted, pruned), so nobody can
// tell.
func (r *run) publishedSince(ctx context.Context, j store.Journal, keys []Key) (bool, error) {
	if len(keys) == 0 {
		return false, nil
	}
	history, err := r.e.Vault.History(ctx, r.t.Vault)
	if err != nil {
		return false, fmt.Errorf("read the versions of %s: %w", r.t.Vault, err)
	}
	seen := 0
	for _, v := range history {
		if v.Version <= j.VaultVersion || v.Secret == nil {
			continue
		}
		seen++
		for _, k := range keys {
			switch {
			case v.Secret.KeyID == k.ID:
				return true, nil
			case v.Secret.KeyID == "" && (k.APIKey.Empty() || k.APIKey == v.Secret.APIKey):
				return true, nil
			}
		}
	}
	return seen < r.version-j.VaultVersion, nil
}

// supersedeJournaled retires the keys of an interrupted rotation that
// may have been served with the full grace instead of deleting them
// (I4), and clears the journal: a fresh rotation follows.
func (r *run) supersedeJournaled(j store.Journal, keys []Key) error {
	log := r.log.With("step", string(j.Step), "journal_rotation", j.RotationID)
	if len(keys) == 0 {
		log.Info("the journaled key is gone from codat", "key_id", j.NewKeyID, "name", j.Name)
		return r.forget(j)
	}
	now := r.e.now()
	for _, k := range keys {
		log.Warn("vault changed after the rotation's key may have been published; retiring it with grace", "key_id", k.ID,
			"journal_version", j.VaultVersion, "vault_version", r.version)
	}
	return r.update(func(st *store.Target) error {
		for _, k := range keys {
			until := now.Add(r.t.Grace)
			if rec := st.Key(k.ID); rec != nil && rec.State == store.KeyRetiring {
				until = later(until, rec.DeleteAfter)
			}
			supersede(recordCreated(st, k, j.RotationID, now), until)
		}
		st.Journal = nil
		return nil
	})
}

// forget clears the journal and marks its key, if recorded, deleted: it
// is not at Codat any more.
func (r *run) forget(j store.Journal) error {
	now := r.e.now()
	return r.update(func(st *store.Target) error {
		if j.NewKeyID != "" {
			if rec := st.Key(j.NewKeyID); rec != nil && rec.State == store.KeyPending {
				markDeleted(rec, now)
			}
		}
		st.Journal = nil
		return nil
	})
}
