package rotation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/codat-rotator/codat-rotator/internal/sentinel"
	"github.com/codat-rotator/codat-rotator/store"
)

// Custom metadata set on every published secret.
const (
	MetadataManagedBy = "managed-by"
	MetadataTarget    = "target"
	ManagedByValue    = "codat-rotator"
)

// errRevoke marks a bad --revoke; retrying does not help.
var errRevoke = sentinel.Permanent("cannot revoke")

// run is one attempt at a rotation.
type run struct {
	e    *Engine
	t    Target
	opts Options
	id   string
	log  *slog.Logger

	// Set by plan: the secret Vault serves, at which version, which of
	// Codat's keys it is, a Codat client holding that key, and Codat's
	// keys.
	secret  Published
	version int
	written time.Time         // when Vault wrote that version
	meta    map[string]string // the secret's custom metadata
	served  Served
	client  Codat
	keys    []Key
	// view is the plan's look; names the target's naming, with its tag.
	view  view
	names Names
	// published: this run wrote the secret; unclaimed says why its owner
	// claim could not be recorded, empty when it was.
	published bool
	unclaimed string
	// verifying is the verify step's first listing, started with the
	// new key while its record commits (a listing is no side effect).
	verifying *early

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
	// From the look at Codat's keys to the create, no other target on
	// the same Codat client is between those steps (clients.go).
	hold, err := r.e.holdSlots(ctx, r.t.Name)
	if err != nil {
		return r.res, fmt.Errorf("plan: %w", err)
	}
	defer func() { hold.release() }()
	for {
		if err := r.plan(ctx); err != nil {
			return r.res, fmt.Errorf("plan: %w", err)
		}
		if hold.covers(r.t.Name) {
			break
		}
		// The listing showed a target on the same client this rotation
		// did not hold: hold it too and look again.
		hold.release()
		if hold, err = r.e.holdSlots(ctx, r.t.Name); err != nil {
			return r.res, fmt.Errorf("plan: %w", err)
		}
	}
	if err := r.checkRevoke(); err != nil {
		return r.res, err
	}
	if r.opts.Revoke != "" && !slices.ContainsFunc(r.keys, func(k Key) bool { return k.ID == r.opts.Revoke }) {
		r.log.Info("the key to revoke is already deleted; rotating without it", "key_id", r.opts.Revoke)
		r.opts.Revoke = ""
	}
	if err := r.makeRoom(ctx); err != nil {
		return r.res, fmt.Errorf("make room: %w", err)
	}
	defer func() { r.verifying.drop() }()
	k, err := r.create(ctx)
	hold.release()
	if err != nil {
		return r.res, fmt.Errorf("create key: %w", err)
	}
	return r.res, r.finish(ctx, k)
}

// finish takes a new key (with its raw value) through verify, publish,
// activate and the revoke of an emergency.
func (r *run) finish(ctx context.Context, k Key) error {
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

// plan looks at Vault and Codat (publishing the bootstrap key on the
// very first run) and brings the state in line with what it saw.
func (r *run) plan(ctx context.Context) error {
	log := r.step(store.StepPlan)
	v, err := r.e.look(ctx, r.t, lookOpts{early: true, publish: r.bootstrap})
	if err != nil {
		return err
	}
	r.view = v
	r.secret, r.version, r.written = *v.Secret, v.Version, v.Written
	r.meta = v.Metadata
	r.client, r.keys, r.served = v.Client, v.Keys, v.Served
	if !r.served.Known {
		return servedUnknown(r.t, false, len(r.keys), r.served)
	}
	log.Debug("planned", "served_key_id", r.served.ID, "vault_version", r.version, "codat_keys", len(r.keys))
	return r.reconcile(ctx)
}

// bootstrap publishes the configured first key to Vault as-is and adopts
// it (docs/design.md#bootstrap). A crash after the write is harmless: the next plan
// finds the key in Vault and adopts it then.
func (r *run) bootstrap(ctx context.Context, cur Current) (Current, error) {
	log := r.step(store.StepPlan)
	key, err := bootstrapKey(r.t)
	if err != nil {
		return cur, err
	}
	keys, err := r.e.Codat(r.t.Name, key).List(ctx)
	if err != nil {
		if errors.Is(err, ErrKeyRejected) {
			return cur, bootstrapRejected(r.t, err)
		}
		return cur, err
	}
	st, err := r.e.Store.Load(r.t.Name)
	if err != nil {
		return cur, err
	}
	print := r.e.fingerprint(key)
	served := FindServed(keys, &Published{APIKey: key}, PrintsOf(st), print)
	if !served.Known || served.Doubt != "" {
		return cur, servedUnknown(r.t, true, len(keys), served)
	}
	// Never another target's key (docs/design.md#shared-keys).
	claims, err := r.e.allClaims(r.t, []string{served.ID})
	if err != nil {
		return cur, err
	}
	if other, ok := claims.Serve[served.ID]; ok {
		return cur, sharedKey(r.t, &view{Bootstrap: true}, served.ID, other)
	}
	k := Key{ID: served.ID}
	for _, l := range keys {
		if l.ID == served.ID {
			k = l
		}
	}
	now := r.e.now()
	s := Published{APIKey: key, KeyID: k.ID, KeyName: k.Name, CreatedAt: k.Created, RotatedAt: now, NextRotationAt: r.nextRotation(now)}
	tag := r.e.tagFor(r.t, st, cur.CustomMetadata)
	_, err = r.e.Vault.Write(ctx, r.t.Vault, s, cur.Version, r.e.metadata(r.t, cur.CustomMetadata, tag, now))
	r.unclaimed = ""
	if errors.Is(err, ErrMetadataNotSet) {
		log.Warn("published, but the owner claim could not be recorded", "error", err)
		r.unclaimed, err = err.Error(), nil
	}
	if err != nil {
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
		notePrint(adopt(st, k, store.KeyActive, now, time.Time{}, r.id), print)
		if st.Tag == "" {
			st.Tag = tag
		}
		// Where it publishes: a rename keeps this state its own (Claims).
		st.Vault = r.t.Vault.String()
		st.VaultVersion, st.VaultWritten = after.Version, after.Written
		st.Unclaimed = r.unclaimed
		return nil
	})
	if err != nil {
		return cur, err
	}
	log.Info("bootstrap key published and adopted", "key_id", k.ID)
	r.res.Bootstrapped = true
	return after, nil
}

// bootstrapRejected is Codat's refusal of the bootstrap key, naming
// where the key came from.
func bootstrapRejected(t Target, err error) error {
	from := t.BootstrapFrom
	if from == "" {
		from = "the configured bootstrap key"
	}
	return fmt.Errorf("%w from %s: %w; set %s to a working key of this Codat client (one made in the Codat Portal, say)", ErrBootstrapRejected, from, err, from)
}

// reconcile brings the state in line with the plan's look (settle)
// and deletes the orphans it finds (I5).
func (r *run) reconcile(ctx context.Context) error {
	log := r.step(store.StepPlan)
	st, err := r.e.Store.Load(r.t.Name)
	if err != nil {
		return err
	}
	apply, err := r.e.settle(ctx, r.t, &r.view, st, r.id, false)
	if err != nil {
		return err
	}
	var out settled
	err = r.update(func(st *store.Target) error {
		out = apply(st)
		return nil
	})
	if err != nil {
		return err
	}
	r.names = out.Names
	for _, k := range out.Orphans {
		log.Warn("deleting orphan key", "key_id", k.ID, "name", k.Name)
		if err := r.deleteKey(ctx, DeleteOrphan, k.ID); err != nil {
			return fmt.Errorf("delete orphan key %s: %w", k.ID, err)
		}
		r.res.Deleted = append(r.res.Deleted, k.ID)
	}
	return nil
}

// deleteKey deletes a key through the one delete path (delete.go).
func (r *run) deleteKey(ctx context.Context, kind DeleteKind, id string) error {
	keys, err := r.e.deleteKey(ctx, r.t, r.client, kind, id, r.keys, r.served)
	r.keys = keys
	return err
}

// checkRevoke refuses a --revoke that names no key at Codat, before
// anything is created (see checkRevoke in plan.go).
func (r *run) checkRevoke() error {
	st, err := r.e.Store.Load(r.t.Name)
	if err != nil {
		return err
	}
	return checkRevoke(st, r.keys, r.opts.Revoke)
}

// makeRoom deletes the keys Room names, each journaled first, so that
// a create stays within the limit (I1).
func (r *run) makeRoom(ctx context.Context) error {
	log := r.step(store.StepMakeRoom)
	st, err := r.e.Store.Load(r.t.Name)
	if err != nil {
		return err
	}
	now := r.e.now()
	held, err := r.e.heldElsewhere(r.t, st, now)
	if err != nil {
		return err
	}
	del, _, err := Room(st, r.keys, r.served, r.e.strictest(r.t), r.opts.Emergency, now, held)
	if err != nil {
		return err
	}
	for _, k := range del {
		err := r.update(func(st *store.Target) error {
			st.Journal = &store.Journal{RotationID: r.id, Step: store.StepMakeRoom, Started: now, Updated: now, RoomKeyID: k.ID}
			return nil
		})
		if err != nil {
			return err
		}
		log.Info("deleting a key past its grace to make room", "key_id", k.ID)
		if err := r.deleteKey(ctx, DeleteRoom, k.ID); err != nil {
			return fmt.Errorf("delete key %s: %w", k.ID, err)
		}
		r.res.Deleted = append(r.res.Deleted, k.ID)
	}
	return nil
}

// create journals the new key's name, then asks Codat for it. When the
// answer is lost the key is looked up by name, never created again.
func (r *run) create(ctx context.Context) (Key, error) {
	log := r.step(store.StepCreate)
	now := r.e.now()
	name := r.names.New(now)
	err := r.update(func(st *store.Target) error {
		st.Journal = &store.Journal{RotationID: r.id, Step: store.StepCreate, Started: now, Updated: now,
			Emergency: r.opts.Emergency, Revoke: r.opts.Revoke, Name: name, PrevKeyID: r.served.ID, VaultVersion: r.version}
		return nil
	})
	if err != nil {
		return Key{}, err
	}
	k, err := r.client.Create(ctx, name)
	if errors.Is(err, ErrOutcomeUnknown) {
		log.Warn("create outcome unknown; looking the key up by name", "name", name, "error", err)
		found, ok, lerr := r.findJournaled(ctx, name, "")
		if lerr != nil {
			// The journal stays for recovery.
			return Key{}, fmt.Errorf("%w; and listing codat's keys to look for it failed too: %w; a key named %q may be left at codat: its name is journaled, and the next run looks for it first and uses or deletes it", err, lerr, name)
		}
		if !ok {
			if cerr := r.clearJournal(); cerr != nil {
				return Key{}, cerr
			}
			return Key{}, fmt.Errorf("%w; codat lists no key of that name, so none was made and none is left behind; another attempt creates a new one", err)
		}
		k, err = found, nil
	}
	if err != nil {
		if cerr := r.clearJournal(); cerr != nil {
			return Key{}, cerr
		}
		return Key{}, err
	}
	// Verify's first listing goes out while the key's record commits;
	// nothing is decided from it before the commit is on disk.
	r.verifying = r.e.startList(ctx, r.t, k.APIKey)
	if err := r.recordNewKey(k); err != nil {
		return Key{}, err
	}
	r.keys = append(r.keys, k)
	log.Info("key created", "key_id", k.ID, "name", k.Name)
	return k, nil
}

// recordNewKey records a new key as pending and names it in the journal.
func (r *run) recordNewKey(k Key) error {
	now := r.e.now()
	return r.update(func(st *store.Target) error {
		if st.Journal == nil {
			return errors.New("the journal vanished during the rotation")
		}
		st.Journal.NewKeyID, st.Journal.Step, st.Journal.Updated = k.ID, store.StepVerify, now
		st.CodatKeys = len(r.keys)
		if !slices.ContainsFunc(r.keys, func(c Key) bool { return c.ID == k.ID }) {
			st.CodatKeys++
		}
		notePrint(recordCreated(st, k, r.id, now), r.e.fingerprint(k.APIKey))
		return nil
	})
}

// findJournaled lists Codat's keys and finds the rotation's new key, by
// id when known, else by its journaled name. It is called only while
// that key cannot have been published. A key found without its raw
// value cannot be published: it is deleted and reported as not found.
func (r *run) findJournaled(ctx context.Context, name, id string) (Key, bool, error) {
	keys, err := r.client.List(ctx)
	if err != nil {
		return Key{}, false, err
	}
	r.keys = keys
	var matches []Key
	for _, k := range keys {
		if (id != "" && k.ID == id) || (id == "" && k.Name == name) {
			matches = append(matches, k)
		}
	}
	var found Key
	ok := false
	for _, k := range matches {
		// Made by this rotation and never published (its publish, if it
		// began, did not land: Vault's version is the one journaled), so
		// Vault cannot serve it, whatever a blind listing leaves open.
		r.served = r.served.NeverPublished(k.ID)
		if !ok && !k.APIKey.Empty() {
			found, ok = k, true
			continue
		}
		// A duplicate, or a key whose raw value cannot be had: it was
		// made by this rotation and is of no use, so it goes (I5).
		r.log.Warn("deleting a key made by this rotation that cannot be used", "key_id", k.ID, "name", k.Name)
		if err := r.deleteKey(ctx, DeleteRollback, k.ID); err != nil {
			return Key{}, false, fmt.Errorf("delete unusable key %s: %w", k.ID, err)
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
		if st.Journal.Step == s {
			return nil // already there (recordNewKey moves it to verify): no commit
		}
		st.Journal.Step, st.Journal.Updated = s, now
		return nil
	})
}

// verify calls Codat with the new key until it authenticates and sees
// itself, within a bound; otherwise the new key is rolled back.
func (r *run) verify(ctx context.Context, k Key) error {
	log := r.step(store.StepVerify)
	if err := r.setStep(store.StepVerify); err != nil {
		return err
	}
	c := r.e.Codat(r.t.Name, k.APIKey)
	attempts := orDefault(r.e.VerifyAttempts, 5)
	var last error
	for i := 1; i <= attempts; i++ {
		var keys []Key
		var err error
		if x := r.verifying; x != nil && i == 1 {
			r.verifying = nil
			keys, _, err = x.take(k.APIKey)
		} else {
			keys, err = c.List(ctx)
		}
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
func (r *run) rollback(ctx context.Context, k Key, cause error) error {
	r.log.Warn("rolling back the new key", "key_id", k.ID, "error", cause)
	if err := r.deleteKey(ctx, DeleteRollback, k.ID); err != nil {
		return fmt.Errorf("%w; rolling back, deleting new key %s failed: %v", cause, k.ID, err)
	}
	if err := r.clearJournal(); err != nil {
		return fmt.Errorf("%w; rolled back, but clearing the journal failed: %v", cause, err)
	}
	r.res.Deleted = append(r.res.Deleted, k.ID)
	return fmt.Errorf("%w: %w", ErrRolledBack, cause)
}

func (r *run) nextRotation(now time.Time) time.Time {
	if r.t.NextRotation == nil {
		return time.Time{}
	}
	return r.t.NextRotation(now)
}

func (r *run) metadata(now time.Time) map[string]string {
	return r.e.metadata(r.t, r.meta, r.names.Tag, now)
}

// publish writes the new key to Vault with check-and-set on the version
// read at plan and reads it back. It retries within a bound; when Vault
// is known not to serve the new key, it rolls the key back. When that
// cannot be known (Vault unreadable), nothing is deleted: the journal
// stays and recovery decides (I3).
func (r *run) publish(ctx context.Context, k Key) error {
	log := r.step(store.StepPublish)
	if err := r.setStep(store.StepPublish); err != nil {
		return err
	}
	now := r.e.now()
	s := Published{
		APIKey: k.APIKey, KeyID: k.ID, KeyName: k.Name, CreatedAt: k.Created, RotatedAt: now,
		NextRotationAt: r.nextRotation(now),
	}
	st, err := r.e.Store.Load(r.t.Name)
	if err != nil {
		return err
	}
	if rec := st.Key(r.served.ID); rec != nil && rec.Origin.Managed() {
		// The key superseded, named only when it is the target's: a
		// label kept as another's (Served.Adopts) would make a later
		// takeover take that key on through previous_key_id (I6).
		s.PreviousKeyID, s.PreviousExpiresAt = r.served.ID, now.Add(Grace(r.t, r.opts))
	}
	attempts := orDefault(r.e.PublishAttempts, 3)
	var last error
	for i := 1; i <= attempts; i++ {
		if i > 1 {
			if err := r.e.sleep(ctx, time.Duration(i-1)*time.Second); err != nil {
				break
			}
		}
		_, err := r.e.Vault.Write(ctx, r.t.Vault, s, r.version, r.metadata(now))
		if err == nil {
			r.unclaimed = ""
		}
		if errors.Is(err, ErrMetadataNotSet) {
			// The protection against a second daemon is off until a
			// publish records the owner: a state of the target, shown by
			// status and a metric (docs/design.md#ownership).
			log.Warn("published, but the owner claim could not be recorded", "error", err)
			r.unclaimed, err = err.Error(), nil
		}
		if err == nil {
			r.published = true
		}
		if err == nil || errors.Is(err, ErrCASConflict) {
			// A conflict may be our own earlier write whose answer was
			// lost: the read-back tells.
			served, rerr := r.readBack(ctx, k)
			if rerr == nil && served == k.ID {
				log.Info("published and read back", "key_id", k.ID)
				return nil
			}
			if rerr == nil && errors.Is(err, ErrCASConflict) {
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
	served, rerr := r.readBack(ctx, k)
	if rerr != nil {
		return fmt.Errorf("%w; vault cannot be read to decide, so the new key stays for recovery: %v", last, rerr)
	}
	if served == k.ID {
		return nil
	}
	return r.rollback(ctx, k, last)
}

// readBack returns the id of the key Vault serves; when it is the new
// key, its version is the one the daemon has now seen.
// The new key is served only when the secret holds its raw value, not
// merely its id (docs/design.md#served-by-value).
func (r *run) readBack(ctx context.Context, k Key) (string, error) {
	cur, err := r.e.Vault.Read(ctx, r.t.Vault)
	if err != nil {
		return "", err
	}
	if cur.Secret == nil {
		return "", nil
	}
	if cur.Secret.KeyID == k.ID && cur.Secret.APIKey == k.APIKey {
		r.version, r.written = cur.Version, cur.Written
		return k.ID, nil
	}
	if cur.Secret.KeyID == k.ID {
		return "another key under the new key's id", nil
	}
	return cur.Secret.KeyID, nil
}

// activate makes the new key the daemon's own credential and
// supersedes every other managed key: after grace, or at once in an
// emergency.
func (r *run) activate(k Key) error {
	now := r.e.now()
	deleteAfter := now.Add(Grace(r.t, r.opts))
	var retiring []store.Key
	var active store.Key
	err := r.update(func(st *store.Target) error {
		if st.Key(k.ID) == nil {
			recordCreated(st, k, r.id, now)
		}
		retiring = Activate(st, k.ID, r.served, now, deleteAfter)
		rec := st.Key(k.ID)
		notePrint(rec, r.e.fingerprint(k.APIKey))
		active = *rec
		st.VaultVersion, st.VaultWritten = r.version, r.written
		st.ServedDoubt = ""
		if r.published {
			st.Unclaimed = r.unclaimed
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
	r.secret = Published{APIKey: k.APIKey, KeyID: k.ID, KeyName: k.Name}
	r.served = FindServed(nil, &r.secret, nil, "")
	r.client = r.e.Codat(r.t.Name, k.APIKey)
	r.e.remember(r.t.Name, k.APIKey)
	return nil
}

// revoke deletes the key an operator named with --revoke, once the new
// key is published. It is the one delete that may touch a foreign key.
func (r *run) revoke(ctx context.Context) error {
	id := r.opts.Revoke
	if id == "" {
		return nil
	}
	if r.served.May(id) {
		// Someone published the key to revoke after the rotation began
		// (an operator's way back): deleting it would break every
		// consumer (I3). The rotation is done; its revoke is not, and
		// the journal must not hold the target for ever.
		if err := r.clearJournal(); err != nil {
			return err
		}
		return fmt.Errorf("%w %s: vault serves it again (published by someone else since the rotation began), so it was not deleted; publish another key or rotate, then revoke it", ErrRevokeServed, id)
	}
	if len(r.keys) < 2 {
		keys, err := r.client.List(ctx)
		if err != nil {
			return err
		}
		r.keys = keys
	}
	r.log.Warn("revoking key", "step", string(store.StepRetire), "key_id", id)
	if err := r.deleteKey(ctx, DeleteRevoke, id); err != nil {
		return err
	}
	r.res.Deleted = append(r.res.Deleted, id)
	return r.clearJournal()
}
