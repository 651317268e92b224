package rotation

import (
	"time"

	"github.com/codat-rotator/codat-rotator/store"
)

// The named changes of a key's record in the state. Every change of a
// key's origin or state goes through one of these (docs/design.md, "Key
// states").

// adopt records a key the daemon did not make as its own: the bootstrap
// key, the key Vault serves, or the previous key the secret names. A key
// already recorded (a foreign one someone published) becomes adopted.
func adopt(st *store.Target, k Key, state store.KeyState, published, deleteAfter time.Time, rotationID string) *store.Key {
	rec := st.Key(k.ID)
	if rec == nil {
		st.Keys = append(st.Keys, store.Key{ID: k.ID, Name: k.Name, Created: k.Created, RotationID: rotationID})
		rec = &st.Keys[len(st.Keys)-1]
	}
	rec.Origin, rec.State, rec.DeleteAfter, rec.Deleted = store.OriginAdopted, state, deleteAfter, time.Time{}
	if !published.IsZero() {
		rec.Published = published
	}
	return rec
}

// recordCreated records a key the daemon just made, not yet published.
func recordCreated(st *store.Target, k Key, rotationID string, now time.Time) *store.Key {
	rec := st.Key(k.ID)
	if rec == nil {
		created := k.Created
		if created.IsZero() {
			created = now
		}
		st.Keys = append(st.Keys, store.Key{ID: k.ID, Name: k.Name, Created: created, RotationID: rotationID})
		rec = &st.Keys[len(st.Keys)-1]
	}
	rec.Origin, rec.State = store.OriginCreated, store.KeyPending
	return rec
}

// activate marks the key Vault serves; published is when, or zero to
// keep what is recorded.
func activate(k *store.Key, published time.Time) {
	k.State, k.DeleteAfter, k.Deleted = store.KeyActive, time.Time{}, time.Time{}
	if !published.IsZero() {
		k.Published = published
	}
}

// supersede marks a key retiring: it is deleted once deleteAfter passes.
func supersede(k *store.Key, deleteAfter time.Time) {
	k.State, k.DeleteAfter, k.Deleted = store.KeyRetiring, deleteAfter, time.Time{}
}

// claim makes a foreign key the daemon's: someone published it to Vault,
// so it is managed (and retired) like the keys the daemon adopts.
func claim(k *store.Key) { k.Origin = store.OriginAdopted }

// retireBy brings a retiring key's delete-after forward to at, never
// back: an emergency shortens every grace, nothing lengthens one here.
func retireBy(k *store.Key, at time.Time) {
	if at.Before(k.DeleteAfter) {
		k.DeleteAfter = at
	}
}

// markDeleted records that a key is gone from Codat.
func markDeleted(k *store.Key, now time.Time) {
	k.State, k.Deleted = store.KeyDeleted, now
}

// markDeletedID records that the key with id is gone; an unknown id (a
// revoked key the daemon never saw) is recorded as a deleted foreign key.
func markDeletedID(st *store.Target, id string, now time.Time) {
	rec := st.Key(id)
	if rec == nil {
		st.Keys = append(st.Keys, store.Key{ID: id, Origin: store.OriginForeign})
		rec = &st.Keys[len(st.Keys)-1]
	}
	markDeleted(rec, now)
}

// recordForeign records a key the daemon did not make and may not touch
// (I6): a person's key, another target's.
func recordForeign(st *store.Target, k Key) *store.Key {
	if rec := st.Key(k.ID); rec != nil {
		return rec
	}
	st.Keys = append(st.Keys, store.Key{ID: k.ID, Name: k.Name, Origin: store.OriginForeign, State: store.KeyForeign, Created: k.Created})
	return &st.Keys[len(st.Keys)-1]
}

// disown leaves a key that another target records as its own foreign
// here: it is that target's to retire (docs/design.md#shared-keys).
func disown(k *store.Key) {
	k.Origin, k.State, k.DeleteAfter = store.OriginForeign, store.KeyForeign, time.Time{}
}

// notePrint records the fingerprint of a key's raw value, once known
// (docs/design.md#served-by-value); an empty one changes nothing.
func notePrint(k *store.Key, print string) {
	if print != "" {
		k.Fingerprint = print
	}
}
