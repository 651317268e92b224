package rotation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"time"

	"github.com/codat-rotator/codat-rotator/codat"
	"github.com/codat-rotator/codat-rotator/store"
	"github.com/codat-rotator/codat-rotator/vault"
)

// Custom metadata set on every published secret.
const (
	MetadataManagedBy = "managed-by"
	MetadataTarget    = "target"
	ManagedByValue    = "codat-rotator"
)

// errRevoke marks a bad --revoke; retrying does not help.
var errRevoke = errors.New("cannot revoke")

// run is one attempt at a rotation.
type run struct {
	e    *Engine
	t    Target
	opts Options
	id   string
	log  *slog.Logger

	// Set by plan: what Vault serves, at which version, a Codat client
	// holding that key, and Codat's keys.
	served  vault.Secret
	version int
	client  Codat
	keys    []codat.Key

	res Result
}

func (r *run) update(fn func(*store.Target) error) error {
	return r.e.Store.Update(r.t.Name, fn)
}

func (r *run) step(s store.Step) *slog.Logger { return r.log.With("step", string(s)) }

// rotate is one attempt: recover a crash's journal, then plan, make room,
// create, verify, publish, activate.
func (r *run) rotate(ctx context.Context) (Result, error) {
	r.res = Result{RotationID: r.id}
	st, err := r.e.Store.Load(r.t.Name)
	if err != nil {
		return r.res, err
	}
	if st.Journal != nil {
		// Recovery finishes the interrupted rotation with the options it
		// was started with; the caller's own options apply afterwards.
		want, id, j := r.opts, r.id, *st.Journal
		done, err := r.recover(ctx, j)
		if err != nil {
			return r.res, fmt.Errorf("recover rotation %s (step %s): %w", j.RotationID, j.Step, err)
		}
		r.opts = want
		// The finished rotation answers the call when it was at least what
		// was asked: a rerun of the same emergency must not rotate twice.
		if done && (!want.Emergency || j.Emergency) && (want.Revoke == "" || want.Revoke == j.Revoke) {
			r.res.Recovered = true
			return r.res, nil
		}
		if done {
			// An emergency asked for now is not satisfied by finishing a
			// routine rotation: it gets a rotation of its own.
			r.log.Info("the interrupted rotation is finished; now the emergency rotation asked for")
		}
		r.id = id
		r.res = Result{RotationID: id, Deleted: r.res.Deleted}
		r.log = r.e.log().With("target", r.t.Name, "rotation", id)
	}
	if err := r.plan(ctx); err != nil {
		return r.res, fmt.Errorf("plan: %w", err)
	}
	if err := r.checkRevoke(); err != nil {
		return r.res, err
	}
	if r.opts.Revoke != "" && !slices.ContainsFunc(r.keys, func(k codat.Key) bool { return k.ID == r.opts.Revoke }) {
		r.log.Info("the key to revoke is already deleted; rotating without it", "key_id", r.opts.Revoke)
		r.opts.Revoke = ""
	}
	if err := r.makeRoom(ctx); err != nil {
		return r.res, fmt.Errorf("make room: %w", err)
	}
	k, err := r.create(ctx)
	if err != nil {
		return r.res, fmt.Errorf("create key: %w", err)
	}
	return r.res, r.finish(ctx, k)
}

// finish takes a new key (with its raw value) through verify, publish,
// activate and the revoke of an emergency.
func (r *run) finish(ctx context.Context, k codat.Key) error {
	if err := r.verify(ctx, k); err != nil {
		return fmt.Errorf("verify new key %s: %w", k.ID, err)
	}
	if err := r.publish(ctx, k); err != nil {
		return fmt.Errorf("publish new key %s: %w", k.ID, err)
	}
	if err := r.activate(k); err != nil {
		return fmt.Errorf("activate new key %s: %w", k.ID, err)
	}
	if err := r.revoke(ctx); err != nil {
		return fmt.Errorf("revoke %s: %w", r.opts.Revoke, err)
	}
	return nil
}

// plan reads what Vault serves (publishing the bootstrap key on the very
// first run), lists Codat's keys with it and reconciles the state.
func (r *run) plan(ctx context.Context) error {
	log := r.step(store.StepPlan)
	if err := r.e.checkMount(ctx, r.t.Vault); err != nil {
		return err
	}
	cur, err := r.e.Vault.Read(ctx, r.t.Vault)
	if err != nil {
		return err
	}
	if cur.Secret == nil {
		if cur, err = r.bootstrap(ctx, cur); err != nil {
			return fmt.Errorf("bootstrap: %w", err)
		}
	}
	r.served, r.version = *cur.Secret, cur.Version
	r.client = r.e.Codat(r.t.Name, r.served.APIKey)
	keys, err := r.client.List(ctx)
	if errors.Is(err, codat.ErrUnauthorized) {
		return fmt.Errorf("%w: the key at %s (id %q): %w", ErrServedKeyRejected, r.t.Vault, r.served.KeyID, err)
	}
	if err != nil {
		return err
	}
	r.keys = keys
	if r.served.KeyID == "" {
		// A secret written by hand: find the key's id by the key itself.
		id, err := idOfKey(keys, r.served.APIKey)
		if err != nil {
			return fmt.Errorf("the secret at %s has no key_id: %w", r.t.Vault, err)
		}
		r.served.KeyID = id
	}
	log.Debug("planned", "served_key_id", r.served.KeyID, "vault_version", r.version, "codat_keys", len(keys))
	return r.reconcile(ctx)
}

// idOfKey finds the id of a raw key in a listing that carries raw keys.
func idOfKey(keys []codat.Key, raw codat.Secret) (string, error) {
	for _, k := range keys {
		if k.APIKey == raw {
			return k.ID, nil
		}
	}
	return "", errors.New("codat's listing does not show which key it is")
}

// bootstrap publishes the configured first key to Vault as-is and adopts
// it (design §4). A crash after the write is harmless: the next plan
// finds the key in Vault and adopts it then.
func (r *run) bootstrap(ctx context.Context, cur vault.Current) (vault.Current, error) {
	log := r.step(store.StepPlan)
	if r.t.Bootstrap == nil {
		return cur, fmt.Errorf("%w: %s holds no secret; set bootstrap_key_file or bootstrap_key_env", ErrNoBootstrap, r.t.Vault)
	}
	key, err := r.t.Bootstrap()
	if err != nil {
		return cur, fmt.Errorf("%w: %w", ErrNoBootstrap, err)
	}
	keys, err := r.e.Codat(r.t.Name, key).List(ctx)
	if err != nil {
		if errors.Is(err, codat.ErrUnauthorized) {
			return cur, fmt.Errorf("%w: codat rejects the bootstrap key: %w", ErrServedKeyRejected, err)
		}
		return cur, err
	}
	var k codat.Key
	if id, err := idOfKey(keys, key); err == nil {
		for _, kk := range keys {
			if kk.ID == id {
				k = kk
			}
		}
	} else if len(keys) == 1 {
		k = keys[0] // the only key must be the one that listed it
	} else {
		return cur, fmt.Errorf("cannot tell which of codat's %d keys is the bootstrap key: %w", len(keys), err)
	}
	now := r.e.now()
	s := vault.Secret{APIKey: key, KeyID: k.ID, KeyName: k.Name, CreatedAt: k.Created, RotatedAt: now, NextRotationAt: r.nextRotation(now)}
	if _, err := r.e.Vault.Write(ctx, r.t.Vault, s, cur.Version, r.metadata()); err != nil && !errors.Is(err, vault.ErrMetadata) {
		return cur, fmt.Errorf("publish bootstrap key: %w", err)
	}
	after, err := r.e.Vault.Read(ctx, r.t.Vault)
	if err != nil {
		return cur, fmt.Errorf("read back bootstrap key: %w", err)
	}
	if after.Secret == nil || after.Secret.KeyID != k.ID || after.Secret.APIKey != key {
		return cur, fmt.Errorf("read back bootstrap key: %s does not hold key %s", r.t.Vault, k.ID)
	}
	err = r.update(func(st *store.Target) error {
		if rec := st.Key(k.ID); rec != nil {
			rec.Origin, rec.State, rec.Published = store.OriginAdopted, store.KeyActive, now
			return nil
		}
		st.Keys = append(st.Keys, store.Key{ID: k.ID, Name: k.Name, Origin: store.OriginAdopted, State: store.KeyActive,
			Created: k.Created, Published: now, RotationID: r.id})
		return nil
	})
	if err != nil {
		return cur, err
	}
	log.Info("bootstrap key published and adopted", "key_id", k.ID)
	r.res.Bootstrapped = true
	return after, nil
}

// reconcile brings the state in line with Codat: every key is managed,
// adopted or foreign; keys gone from Codat are marked deleted; keys that
// carry the daemon's own name shape but are unknown (orphans of a crash)
// are deleted (I5).
func (r *run) reconcile(ctx context.Context) error {
	log := r.step(store.StepPlan)
	now := r.e.now()
	live := map[string]bool{}
	var orphans []codat.Key
	err := r.update(func(st *store.Target) error {
		orphans = orphans[:0]
		st.CodatKeys = len(r.keys)
		for _, k := range r.keys {
			live[k.ID] = true
			if rec := st.Key(k.ID); rec != nil {
				if rec.State == store.KeyDeleted {
					// Recorded as deleted, yet still there: delete again soon.
					rec.State, rec.DeleteAfter, rec.Deleted = store.KeyRetiring, now, time.Time{}
				}
				if rec.Name == "" {
					rec.Name = k.Name
				}
				continue
			}
			switch {
			case k.ID == r.served.KeyID:
				st.Keys = append(st.Keys, store.Key{ID: k.ID, Name: k.Name, Origin: store.OriginAdopted, State: store.KeyActive,
					Created: k.Created, Published: r.served.RotatedAt, RotationID: r.id})
				log.Info("adopted the key vault serves", "key_id", k.ID)
			case k.ID == r.served.PreviousKeyID && r.served.PreviousKeyID != "":
				after := r.served.PreviousExpiresAt
				if after.IsZero() {
					after = now.Add(r.t.Grace)
				}
				st.Keys = append(st.Keys, store.Key{ID: k.ID, Name: k.Name, Origin: store.OriginAdopted, State: store.KeyRetiring,
					Created: k.Created, DeleteAfter: after, RotationID: r.id})
				log.Info("adopted the previous key vault names", "key_id", k.ID, "delete_after", after)
			case OwnName(r.t.Prefix, k.Name):
				orphans = append(orphans, k)
			default:
				st.Keys = append(st.Keys, store.Key{ID: k.ID, Name: k.Name, Origin: store.OriginForeign, State: store.KeyForeign, Created: k.Created})
			}
		}
		for i := range st.Keys {
			rec := &st.Keys[i]
			switch {
			case rec.State == store.KeyDeleted:
			case !live[rec.ID]:
				rec.State, rec.Deleted = store.KeyDeleted, now
			case rec.ID == r.served.KeyID:
				if rec.Origin == store.OriginForeign {
					rec.Origin = store.OriginAdopted // someone published it: it is the daemon's now
				}
				rec.State, rec.DeleteAfter = store.KeyActive, time.Time{}
			case rec.State == store.KeyActive:
				// Vault serves another key: this one is superseded.
				rec.State, rec.DeleteAfter = store.KeyRetiring, now.Add(r.t.Grace)
			case rec.State == store.KeyPending:
				// Created, never published, and no journal names it.
				orphans = append(orphans, codat.Key{ID: rec.ID, Name: rec.Name})
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range orphans {
		log.Warn("deleting orphan key", "key_id", k.ID, "name", k.Name)
		if err := r.deleteKey(ctx, r.client, k.ID); err != nil {
			return fmt.Errorf("delete orphan key %s: %w", k.ID, err)
		}
		r.res.Deleted = append(r.res.Deleted, k.ID)
	}
	return nil
}

// deleteKey deletes a key at Codat (a 404 counts as done) and marks it
// deleted in the state. It refuses the served key and the last key.
func (r *run) deleteKey(ctx context.Context, c Codat, id string) error {
	if id == r.served.KeyID {
		return fmt.Errorf("refusing to delete %s: it is the key vault serves", id)
	}
	live := 0
	for _, k := range r.keys {
		if k.ID != id {
			live++
		}
	}
	if live == 0 {
		return fmt.Errorf("refusing to delete %s: it is the last key", id)
	}
	if err := c.Delete(ctx, id); err != nil && !errors.Is(err, codat.ErrNotFound) {
		return err
	}
	kept := r.keys[:0]
	for _, k := range r.keys {
		if k.ID != id {
			kept = append(kept, k)
		}
	}
	r.keys = kept
	now := r.e.now()
	return r.update(func(st *store.Target) error {
		if rec := st.Key(id); rec != nil {
			rec.State, rec.Deleted = store.KeyDeleted, now
		}
		st.CodatKeys = len(r.keys)
		if st.Journal != nil && st.Journal.Step == store.StepMakeRoom {
			st.Journal = nil
		}
		return nil
	})
}

// checkRevoke refuses a --revoke that names no key at Codat, before
// anything is created, unless the state shows the daemon deleted it: the
// rerun of an emergency whose revoke already happened.
func (r *run) checkRevoke() error {
	if r.opts.Revoke == "" {
		return nil
	}
	for _, k := range r.keys {
		if k.ID == r.opts.Revoke {
			return nil
		}
	}
	st, err := r.e.Store.Load(r.t.Name)
	if err != nil {
		return err
	}
	if rec := st.Key(r.opts.Revoke); rec != nil && rec.State == store.KeyDeleted {
		return nil
	}
	return fmt.Errorf("%w %q: codat holds no key with that id", errRevoke, r.opts.Revoke)
}

// makeRoom deletes the oldest managed keys past their grace (any retiring
// key in an emergency) until a create stays within the limit: max_keys
// less reserve_slots, or max_keys in an emergency (I1).
func (r *run) makeRoom(ctx context.Context) error {
	log := r.step(store.StepMakeRoom)
	limit := r.t.MaxKeys - r.t.ReserveSlots
	kind := "routine"
	if r.opts.Emergency {
		limit, kind = r.t.MaxKeys, "emergency"
	}
	need := len(r.keys) + 1 - limit
	if need <= 0 {
		return nil
	}
	st, err := r.e.Store.Load(r.t.Name)
	if err != nil {
		return err
	}
	now := r.e.now()
	candidates, foreign := roomCandidates(st, r.keys, r.served.KeyID, r.opts.Emergency, now)
	if len(candidates) < need {
		return fmt.Errorf("%w: codat holds %d keys (%d foreign), a %s rotation may use %d of the %d slots, and only %d managed key(s) are past their grace",
			ErrNoRoom, len(r.keys), foreign, kind, limit, r.t.MaxKeys, len(candidates))
	}
	for _, k := range candidates[:need] {
		err := r.update(func(st *store.Target) error {
			st.Journal = &store.Journal{RotationID: r.id, Step: store.StepMakeRoom, Started: now, Updated: now, RoomKeyID: k.ID}
			return nil
		})
		if err != nil {
			return err
		}
		log.Info("deleting a key past its grace to make room", "key_id", k.ID)
		if err := r.deleteKey(ctx, r.client, k.ID); err != nil {
			return fmt.Errorf("delete key %s: %w", k.ID, err)
		}
		r.res.Deleted = append(r.res.Deleted, k.ID)
	}
	return nil
}

// roomCandidates returns the keys make-room may delete, oldest
// delete-after first: managed, retiring, not served, at Codat, and past
// their grace (any retiring key in an emergency). It also counts the
// foreign keys at Codat.
func roomCandidates(st store.Target, keys []codat.Key, servedID string, emergency bool, now time.Time) (candidates []store.Key, foreign int) {
	live := map[string]bool{}
	for _, k := range keys {
		live[k.ID] = true
	}
	for _, k := range st.Keys {
		if !live[k.ID] {
			continue
		}
		if !k.Origin.Managed() {
			foreign++
			continue
		}
		if k.State == store.KeyRetiring && k.ID != servedID && (emergency || !k.DeleteAfter.After(now)) {
			candidates = append(candidates, k)
		}
	}
	sort.Slice(candidates, func(i, j int) bool { return candidates[i].DeleteAfter.Before(candidates[j].DeleteAfter) })
	return candidates, foreign
}

// create journals the new key's name, then asks Codat for it. When the
// answer is lost the key is looked up by name, never created again.
func (r *run) create(ctx context.Context) (codat.Key, error) {
	log := r.step(store.StepCreate)
	now := r.e.now()
	name := NewKeyName(r.t.Prefix, now)
	err := r.update(func(st *store.Target) error {
		st.Journal = &store.Journal{RotationID: r.id, Step: store.StepCreate, Started: now, Updated: now,
			Emergency: r.opts.Emergency, Revoke: r.opts.Revoke, Name: name, PrevKeyID: r.served.KeyID, VaultVersion: r.version}
		return nil
	})
	if err != nil {
		return codat.Key{}, err
	}
	k, err := r.client.Create(ctx, name)
	if errors.Is(err, codat.ErrOutcomeUnknown) {
		log.Warn("create outcome unknown; looking the key up by name", "name", name, "error", err)
		found, ok, lerr := r.findJournaled(ctx, name, "")
		if lerr != nil {
			return codat.Key{}, fmt.Errorf("%w; and the lookup by name failed: %w", err, lerr) // the journal stays for recovery
		}
		if !ok {
			if cerr := r.clearJournal(); cerr != nil {
				return codat.Key{}, cerr
			}
			return codat.Key{}, err
		}
		k, err = found, nil
	}
	if err != nil {
		if cerr := r.clearJournal(); cerr != nil {
			return codat.Key{}, cerr
		}
		return codat.Key{}, err
	}
	if err := r.recordNewKey(k); err != nil {
		return codat.Key{}, err
	}
	r.keys = append(r.keys, k)
	log.Info("key created", "key_id", k.ID, "name", k.Name)
	return k, nil
}

// recordNewKey records a new key as pending and names it in the journal.
func (r *run) recordNewKey(k codat.Key) error {
	now := r.e.now()
	created := k.Created
	if created.IsZero() {
		created = now
	}
	return r.update(func(st *store.Target) error {
		if st.Journal == nil {
			return errors.New("the journal vanished during the rotation")
		}
		st.Journal.NewKeyID, st.Journal.Step, st.Journal.Updated = k.ID, store.StepVerify, now
		st.CodatKeys = len(r.keys)
		if !slices.ContainsFunc(r.keys, func(c codat.Key) bool { return c.ID == k.ID }) {
			st.CodatKeys++
		}
		if rec := st.Key(k.ID); rec != nil {
			rec.Origin, rec.State = store.OriginCreated, store.KeyPending
			return nil
		}
		st.Keys = append(st.Keys, store.Key{ID: k.ID, Name: k.Name, Origin: store.OriginCreated, State: store.KeyPending,
			Created: created, RotationID: r.id})
		return nil
	})
}

// findJournaled lists Codat's keys and finds the rotation's new key, by
// id when known, else by its journaled name. A key found without its raw
// value cannot be published: it is deleted and reported as not found.
func (r *run) findJournaled(ctx context.Context, name, id string) (codat.Key, bool, error) {
	keys, err := r.client.List(ctx)
	if err != nil {
		return codat.Key{}, false, err
	}
	r.keys = keys
	var matches []codat.Key
	for _, k := range keys {
		if (id != "" && k.ID == id) || (id == "" && k.Name == name) {
			matches = append(matches, k)
		}
	}
	var found codat.Key
	ok := false
	for _, k := range matches {
		if !ok && !k.APIKey.Empty() {
			found, ok = k, true
			continue
		}
		// A duplicate, or a key whose raw value cannot be had: it was
		// made by this rotation and is of no use, so it goes (I5).
		r.log.Warn("deleting a key made by this rotation that cannot be used", "key_id", k.ID, "name", k.Name)
		if err := r.deleteKey(ctx, r.client, k.ID); err != nil {
			return codat.Key{}, false, fmt.Errorf("delete unusable key %s: %w", k.ID, err)
		}
		r.res.Deleted = append(r.res.Deleted, k.ID)
	}
	return found, ok, nil
}

func (r *run) clearJournal() error {
	return r.update(func(st *store.Target) error {
		st.Journal = nil
		return nil
	})
}

func (r *run) setStep(s store.Step) error {
	now := r.e.now()
	return r.update(func(st *store.Target) error {
		if st.Journal == nil {
			return errors.New("the journal vanished during the rotation")
		}
		st.Journal.Step, st.Journal.Updated = s, now
		return nil
	})
}

// verify calls Codat with the new key until it authenticates and sees
// itself, within a bound; otherwise the new key is rolled back.
func (r *run) verify(ctx context.Context, k codat.Key) error {
	log := r.step(store.StepVerify)
	if err := r.setStep(store.StepVerify); err != nil {
		return err
	}
	c := r.e.Codat(r.t.Name, k.APIKey)
	attempts := orDefault(r.e.VerifyAttempts, 5)
	var last error
	for i := 1; i <= attempts; i++ {
		keys, err := c.List(ctx)
		if err == nil {
			for _, kk := range keys {
				if kk.ID == k.ID {
					log.Info("new key authenticates", "key_id", k.ID)
					return nil
				}
			}
			err = fmt.Errorf("codat's listing with the new key does not show it")
		}
		last = err
		if ctx.Err() != nil {
			break
		}
		if i < attempts {
			if serr := r.e.sleep(ctx, orDefault(r.e.VerifyInterval, 2*time.Second)); serr != nil {
				break
			}
		}
	}
	return r.rollback(ctx, k, fmt.Errorf("new key does not authenticate after %d tries: %w", attempts, last))
}

// rollback deletes a new key that was never published, with the key
// Vault still serves. If the delete fails the journal stays, and the
// next attempt's recovery finishes the job.
func (r *run) rollback(ctx context.Context, k codat.Key, cause error) error {
	r.log.Warn("rolling back the new key", "key_id", k.ID, "error", cause)
	if err := r.deleteKey(ctx, r.client, k.ID); err != nil {
		return fmt.Errorf("%w; rolling back, deleting new key %s failed: %v", cause, k.ID, err)
	}
	if err := r.clearJournal(); err != nil {
		return fmt.Errorf("%w; rolled back, but clearing the journal failed: %v", cause, err)
	}
	r.res.Deleted = append(r.res.Deleted, k.ID)
	return fmt.Errorf("%w: %w", ErrRolledBack, cause)
}

func (r *run) grace() time.Duration {
	if r.opts.Emergency {
		return 0
	}
	return r.t.Grace
}

func (r *run) nextRotation(now time.Time) time.Time {
	if r.t.NextRotation == nil {
		return time.Time{}
	}
	return r.t.NextRotation(now)
}

func (r *run) metadata() map[string]string {
	return map[string]string{MetadataManagedBy: ManagedByValue, MetadataTarget: r.t.Name}
}

// publish writes the new key to Vault with check-and-set on the version
// read at plan and reads it back. It retries within a bound; when Vault
// is known not to serve the new key, it rolls the key back. When that
// cannot be known (Vault unreadable), nothing is deleted: the journal
// stays and recovery decides (I3).
func (r *run) publish(ctx context.Context, k codat.Key) error {
	log := r.step(store.StepPublish)
	if err := r.setStep(store.StepPublish); err != nil {
		return err
	}
	now := r.e.now()
	s := vault.Secret{
		APIKey: k.APIKey, KeyID: k.ID, KeyName: k.Name, CreatedAt: k.Created, RotatedAt: now,
		PreviousKeyID: r.served.KeyID, PreviousExpiresAt: now.Add(r.grace()), NextRotationAt: r.nextRotation(now),
	}
	attempts := orDefault(r.e.PublishAttempts, 3)
	var last error
	for i := 1; i <= attempts; i++ {
		if i > 1 {
			if err := r.e.sleep(ctx, time.Duration(i-1)*time.Second); err != nil {
				break
			}
		}
		_, err := r.e.Vault.Write(ctx, r.t.Vault, s, r.version, r.metadata())
		if errors.Is(err, vault.ErrMetadata) {
			log.Warn("published, but custom metadata not set", "error", err)
			err = nil
		}
		if err == nil || errors.Is(err, vault.ErrCASConflict) {
			// A conflict may be our own earlier write whose answer was
			// lost: the read-back tells.
			served, rerr := r.readBack(ctx)
			if rerr == nil && served == k.ID {
				log.Info("published and read back", "key_id", k.ID)
				return nil
			}
			if rerr == nil && errors.Is(err, vault.ErrCASConflict) {
				return r.rollback(ctx, k, err) // someone else published
			}
			if err == nil {
				err = rerr
				if rerr == nil {
					err = fmt.Errorf("read back: %s serves key %s, not the new key", r.t.Vault, served)
				}
			}
		}
		last = err
		log.Warn("publish attempt failed", "attempt", i, "error", err)
		if !Retryable(err) || ctx.Err() != nil {
			break
		}
	}
	// Roll back only when Vault is known not to serve the new key.
	served, rerr := r.readBack(ctx)
	if rerr != nil {
		return fmt.Errorf("%w; vault cannot be read to decide, so the new key stays for recovery: %v", last, rerr)
	}
	if served == k.ID {
		return nil
	}
	return r.rollback(ctx, k, last)
}

// readBack returns the id of the key Vault serves.
func (r *run) readBack(ctx context.Context) (string, error) {
	cur, err := r.e.Vault.Read(ctx, r.t.Vault)
	if err != nil {
		return "", err
	}
	if cur.Secret == nil {
		return "", nil
	}
	return cur.Secret.KeyID, nil
}

// activate makes the new key the daemon's own credential and sets every
// other managed key retiring: after grace, or at once in an emergency.
func (r *run) activate(k codat.Key) error {
	now := r.e.now()
	deleteAfter := now.Add(r.grace())
	var retiring []store.Key
	var active store.Key
	err := r.update(func(st *store.Target) error {
		retiring = retiring[:0]
		rec := st.Key(k.ID)
		if rec == nil {
			st.Keys = append(st.Keys, store.Key{ID: k.ID, Name: k.Name, Origin: store.OriginCreated, Created: k.Created, RotationID: r.id})
			rec = &st.Keys[len(st.Keys)-1]
		}
		rec.State, rec.Published, rec.DeleteAfter = store.KeyActive, now, time.Time{}
		active = *rec
		for i := range st.Keys {
			o := &st.Keys[i]
			if o.ID == k.ID || !o.Origin.Managed() {
				continue
			}
			switch o.State {
			case store.KeyActive, store.KeyPending:
				o.State, o.DeleteAfter = store.KeyRetiring, deleteAfter
			case store.KeyRetiring:
				if deleteAfter.Before(o.DeleteAfter) {
					o.DeleteAfter = deleteAfter
				}
			default:
				continue
			}
			retiring = append(retiring, *o)
		}
		if r.opts.Revoke != "" && st.Journal != nil {
			st.Journal.Step, st.Journal.NewKeyID, st.Journal.Updated = store.StepRetire, k.ID, now
		} else {
			st.Journal = nil
		}
		return nil
	})
	if err != nil {
		return err
	}
	r.step(store.StepActivate).Info("new key active", "key_id", k.ID, "retiring", len(retiring), "delete_after", deleteAfter)
	r.res.NewKey, r.res.Retiring = active, retiring
	r.served = vault.Secret{APIKey: k.APIKey, KeyID: k.ID, KeyName: k.Name}
	r.client = r.e.Codat(r.t.Name, k.APIKey)
	return nil
}

// revoke deletes the key an operator named with --revoke, once the new
// key is published. It is the one delete that may touch a foreign key.
func (r *run) revoke(ctx context.Context) error {
	id := r.opts.Revoke
	if id == "" {
		return nil
	}
	if id == r.served.KeyID {
		return fmt.Errorf("%w %s: it is the key just published", errRevoke, id)
	}
	if len(r.keys) < 2 {
		keys, err := r.client.List(ctx)
		if err != nil {
			return err
		}
		r.keys = keys
	}
	r.log.Warn("revoking key", "step", string(store.StepRetire), "key_id", id)
	if err := r.deleteKey(ctx, r.client, id); err != nil {
		return err
	}
	r.res.Deleted = append(r.res.Deleted, id)
	return r.update(func(st *store.Target) error {
		if rec := st.Key(id); rec == nil {
			st.Keys = append(st.Keys, store.Key{ID: id, Origin: store.OriginForeign, State: store.KeyDeleted, Deleted: r.e.now()})
		}
		st.Journal = nil
		return nil
	})
}
