package rotation

import (
	"fmt"
	"sort"
	"time"

	"github.com/codat-rotator/codat-rotator/store"
)

// This file holds the decisions of a rotation as plain functions of the
// state, Codat's listing, the secret Vault serves and the time. The
// rotation, its recovery, the retire pass and the dry run all call them,
// so they cannot disagree (docs/design.md, "One policy").

// Served is what is known of the key Vault serves.
type Served struct {
	// ID is the served key's id: the secret's key_id, else the key whose
	// raw value the secret holds. Empty when it cannot be told.
	ID string
	// Known is false when the served key could not be identified: the
	// secret has no key_id and Codat's listing omits raw keys. Then every
	// listed key without a raw value may be the served one, and none of
	// them is deleted (I3).
	Known bool
	// maybe holds every id that may be the served key.
	maybe map[string]bool
}

// May reports whether id may be the key Vault serves: such a key is
// never deleted (I3).
func (s Served) May(id string) bool { return id != "" && s.maybe[id] }

// NeverPublished returns s knowing that id, a key the daemon made and
// never published, is not the served key.
func (s Served) NeverPublished(id string) Served {
	if !s.maybe[id] || s.ID == id {
		return s
	}
	maybe := make(map[string]bool, len(s.maybe))
	for k := range s.maybe {
		maybe[k] = k != id
	}
	s.maybe = maybe
	return s
}

// FindServed identifies the key the secret serves among Codat's keys:
// by key_id, else by raw value, else, when the listing was made with the
// served key and shows one key without a raw value, that key. Otherwise
// it is unknown. A secret whose key_id and raw value name different keys
// (edited by hand) protects both.
func FindServed(keys []Key, s *Published) Served {
	out := Served{Known: true, maybe: map[string]bool{}}
	if s == nil {
		return out
	}
	if s.KeyID != "" {
		out.ID = s.KeyID
		out.maybe[s.KeyID] = true
	}
	var blind []string // listed without a raw value
	for _, k := range keys {
		switch {
		case !s.APIKey.Empty() && k.APIKey == s.APIKey:
			if out.ID == "" {
				out.ID = k.ID
			}
			out.maybe[k.ID] = true
			return out
		case k.APIKey.Empty():
			blind = append(blind, k.ID)
		}
	}
	if out.ID != "" {
		return out
	}
	if len(blind) == 1 {
		out.ID = blind[0]
		out.maybe[blind[0]] = true
		return out
	}
	out.Known = false
	for _, id := range blind {
		out.maybe[id] = true
	}
	return out
}

// Class is how the daemon sees a key at Codat.
type Class string

const (
	// ClassManaged: the daemon made the key, and may retire it.
	ClassManaged Class = "managed"
	// ClassAdopted: the bootstrap key or a key Vault served; managed from
	// then on.
	ClassAdopted Class = "adopted"
	// ClassForeign: someone else's; counted toward the cap, never touched
	// unless an operator revokes it by id (I6).
	ClassForeign Class = "foreign"
	// ClassOrphan: unknown to the state but carrying the target's own
	// name shape: a crash's leftover, deleted (I5).
	ClassOrphan Class = "orphan"
)

// Classify says what each of Codat's keys is to the target, as
// Reconcile would record it (see attribute).
func Classify(st store.Target, seen Seen, names Names) map[string]Class {
	out := make(map[string]Class, len(seen.Keys))
	for _, k := range seen.Keys {
		out[k.ID], _ = attribute(st, k, seen, names, 0, time.Time{})
	}
	return out
}

// attribute decides what a key is to the target, and for a key the
// target takes on while it retires, when it may be deleted. By the state
// first; else the served key (adopted, active); else the previous key
// the secret names, or a key an earlier version of the secret served
// (adopted, retiring when the secret's records say, never sooner); else
// a key in the target's own name shape: a crash's orphan when the
// daemon saw every version of the secret, otherwise one it may have
// published in a version it never saw (a lost or restored state file),
// which retires with a full grace from now (I4); else foreign.
func attribute(st store.Target, k Key, seen Seen, names Names, grace time.Duration, now time.Time) (Class, time.Time) {
	served, secret := seen.Served, seen.Secret
	if rec := st.Key(k.ID); rec != nil {
		switch {
		case rec.Origin == store.OriginCreated:
			return ClassManaged, time.Time{}
		case rec.Origin == store.OriginAdopted, served.May(k.ID):
			return ClassAdopted, time.Time{}
		}
		return ClassForeign, time.Time{}
	}
	if served.May(k.ID) {
		return ClassAdopted, time.Time{}
	}
	if secret != nil && secret.PreviousKeyID != "" && k.ID == secret.PreviousKeyID {
		if at, ok := supersededUntil(*secret, seen.Written, k.ID, grace); ok {
			return ClassAdopted, at
		}
		return ClassAdopted, now.Add(grace)
	}
	if at, ok := servedBefore(seen.History, k, grace, now); ok {
		return ClassAdopted, at
	}
	if names.Own(k.Name) {
		if st.VaultVersion != 0 && st.VaultVersion == seen.Version {
			return ClassOrphan, time.Time{}
		}
		return ClassAdopted, now.Add(grace)
	}
	return ClassForeign, time.Time{}
}

// servedBefore looks k up in the secret's earlier versions (oldest
// first): by key_id, or by raw value in a version written without one.
// When a version served it, the key retires when the version that
// superseded it says (its previous_expires_at), else a grace after that
// version's rotated_at; a key whose successor is not recorded gets a
// full grace from now.
func servedBefore(history []Current, k Key, grace time.Duration, now time.Time) (time.Time, bool) {
	id := k.ID
	last := -1
	for i, v := range history {
		if v.Secret != nil && (v.Secret.KeyID == id || (v.Secret.KeyID == "" && !k.APIKey.Empty() && v.Secret.APIKey == k.APIKey)) {
			last = i
		}
	}
	if last < 0 {
		return time.Time{}, false
	}
	if last+1 >= len(history) || history[last+1].Secret == nil {
		return now.Add(grace), true
	}
	next := history[last+1]
	if at, ok := supersededUntil(*next.Secret, next.Written, id, grace); ok {
		return at, true
	}
	return now.Add(grace), true
}

// supersededUntil is when a key that version s superseded may go, from
// s's records and written, when Vault wrote s (zero if unknown):
// previous_expires_at when s names the key, else grace after s's
// rotated_at. Consumers could read s only once it was written, which
// is after rotated_at was taken: the grace counts from the write when
// that is later. Vault's write time only ever lengthens a grace. ok is
// false when s records no time of its own.
func supersededUntil(s Published, written time.Time, id string, grace time.Duration) (time.Time, bool) {
	var at time.Time
	switch {
	case s.PreviousKeyID == id && !s.PreviousExpiresAt.IsZero():
		at = recordedEnd(s.PreviousExpiresAt)
		if !written.IsZero() && !s.RotatedAt.IsZero() {
			// The grace s granted, at most a second more than exactly.
			at = later(at, written.Add(at.Sub(s.RotatedAt.Truncate(time.Second))))
		}
	case !s.RotatedAt.IsZero():
		at = recordedEnd(s.RotatedAt).Add(grace)
		if !written.IsZero() {
			at = later(at, written.Add(grace))
		}
	default:
		// Written by hand with no times: Vault's clock alone is not
		// trusted to shorten a grace (it may run behind ours).
		return time.Time{}, false
	}
	return at, true
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// recordedEnd is the latest instant a time in the secret may stand for.
// The secret holds its times to the second (docs/design.md#vault-layout),
// cut from the instant they record, which may be up to a second later: a
// key whose grace is taken from them waits for the end of that second,
// or it could go before its grace is over (I4).
func recordedEnd(t time.Time) time.Time {
	if t.Equal(t.Truncate(time.Second)) {
		return t.Add(time.Second)
	}
	return t
}

// Seen is what one look at Codat and Vault found.
type Seen struct {
	// Keys is Codat's listing.
	Keys []Key
	// Secret is what Vault serves (nil when none) and Version its version.
	Secret  *Published
	Version int
	// Served is FindServed(Keys, Secret); it must be known.
	Served Served
	// Written is when Vault wrote that version, zero when unknown.
	Written time.Time
	// History holds the secret's versions Vault keeps, oldest first, when
	// they were read (a takeover reads them); nil otherwise.
	History []Current
}

// See makes a Seen from a listing and what Vault holds.
func See(keys []Key, cur Current) Seen {
	return Seen{Keys: keys, Secret: cur.Secret, Version: cur.Version, Written: cur.Written, Served: FindServed(keys, cur.Secret)}
}

// Reconcile brings st in line with Codat's listing and the served
// secret, through the named key operations: a key unknown to the state
// is recorded as attribute decides (the served key active, keys the
// secret's records name retiring when those records say, foreign keys
// as foreign), a key gone from Codat is deleted, an active key Vault no
// longer serves is superseded, and a key recorded as deleted but still
// listed retires at once. When the secret's version moved past the one
// the daemon last saw, someone else wrote to Vault and may have served
// any of the daemon's keys in between: every retiring key then lives at
// least a full grace from now (I4). It returns the orphans to delete:
// unknown keys with the target's name shape while every version was
// seen, and pending keys no journal names (I5). Keys that may be the
// served one are never orphans. The served key must be known (a
// rotation refuses to start otherwise).
func Reconcile(st *store.Target, seen Seen, names Names, grace time.Duration, now time.Time, rotationID string) (orphans []Key) {
	keys, served, secret := seen.Keys, seen.Served, seen.Secret
	unseen := st.VaultVersion != 0 && seen.Version != st.VaultVersion
	st.CodatKeys = len(keys)
	live := make(map[string]bool, len(keys))
	for _, k := range keys {
		live[k.ID] = true
		if rec := st.Key(k.ID); rec != nil {
			if rec.Name == "" {
				rec.Name = k.Name
			}
			if rec.State == store.KeyDeleted {
				// Recorded as deleted, yet still there: delete again soon.
				supersede(rec, now)
			}
			continue
		}
		class, after := attribute(*st, k, seen, names, grace, now)
		switch class {
		case ClassAdopted:
			if served.May(k.ID) {
				adopt(st, k, store.KeyActive, secret.RotatedAt, time.Time{}, rotationID)
				continue
			}
			adopt(st, k, store.KeyRetiring, time.Time{}, after, rotationID)
		case ClassOrphan:
			orphans = append(orphans, k)
		default:
			st.Keys = append(st.Keys, store.Key{ID: k.ID, Name: k.Name, Origin: store.OriginForeign, State: store.KeyForeign, Created: k.Created})
		}
	}
	listed := make(map[string]Key, len(keys))
	for _, k := range keys {
		listed[k.ID] = k
	}
	for i := range st.Keys {
		rec := &st.Keys[i]
		switch {
		case rec.State == store.KeyDeleted:
		case !live[rec.ID]:
			markDeleted(rec, now)
		case served.May(rec.ID):
			if rec.Origin == store.OriginForeign {
				claim(rec) // someone published it: the daemon's now
			}
			activate(rec, time.Time{})
		case rec.State == store.KeyActive:
			// Vault serves another key: this one is superseded.
			supersede(rec, now.Add(grace))
		case rec.State == store.KeyPending && unseen:
			// Created, and no journal names it; but Vault moved on behind
			// the state (a restored backup), and a run the state never
			// recorded may have published it: a full grace (I4).
			supersede(rec, now.Add(grace))
		case rec.State == store.KeyPending:
			// Created, never published, and no journal names it.
			orphans = append(orphans, Key{ID: rec.ID, Name: rec.Name})
		case rec.State == store.KeyRetiring && unseen && rec.DeleteAfter.Before(now.Add(grace)):
			supersede(rec, now.Add(grace))
		case rec.State == store.KeyForeign && rec.Origin == store.OriginForeign && seen.History != nil:
			// A takeover reads the secret's history: a key recorded as
			// foreign that an earlier version served is the daemon's.
			if after, ok := servedBefore(seen.History, listed[rec.ID], grace, now); ok {
				claim(rec)
				supersede(rec, after)
			}
		}
	}
	st.VaultVersion = seen.Version
	return orphans
}

// Room decides which keys a create must delete first to stay within
// limit (I1): managed, retiring, at Codat, not possibly served, and past
// their grace (any retiring key in an emergency), oldest delete-after
// first. It also counts the foreign keys. When there are not enough
// candidates it returns ErrNoRoom with the counts.
func Room(st store.Target, keys []Key, served Served, t Target, emergency bool, now time.Time) (del []store.Key, foreign int, err error) {
	limit, kind := Limit(t, emergency)
	live := make(map[string]bool, len(keys))
	for _, k := range keys {
		live[k.ID] = true
	}
	var candidates []store.Key
	for _, k := range st.Keys {
		if !live[k.ID] || k.State == store.KeyDeleted {
			continue
		}
		if !k.Origin.Managed() {
			foreign++
			continue
		}
		if k.State == store.KeyRetiring && !served.May(k.ID) && (emergency || !k.DeleteAfter.After(now)) {
			candidates = append(candidates, k)
		}
	}
	need := len(keys) + 1 - limit
	if need <= 0 {
		return nil, foreign, nil
	}
	sort.SliceStable(candidates, func(i, j int) bool { return candidates[i].DeleteAfter.Before(candidates[j].DeleteAfter) })
	if len(candidates) < need {
		return nil, foreign, fmt.Errorf("%w: codat holds %d keys (%d foreign), a %s rotation may use %d of the %d slots, and only %d managed key(s) are past their grace",
			ErrNoRoom, len(keys), foreign, kind, limit, t.MaxKeys, len(candidates))
	}
	return candidates[:need], foreign, nil
}

// Limit is how many keys a rotation may leave at Codat: max_keys less
// the reserve, or all of max_keys in an emergency (I1).
func Limit(t Target, emergency bool) (limit int, kind string) {
	if emergency {
		return t.MaxKeys, "emergency"
	}
	return t.MaxKeys - t.ReserveSlots, "routine"
}

// Grace is how long keys superseded by this rotation live.
func Grace(t Target, opts Options) time.Duration {
	if opts.Emergency {
		return 0
	}
	return t.Grace
}

// Activate makes newID the active key and supersedes every other managed
// key that is active or pending; keys already retiring keep the earlier
// of their delete-after and the new one. It returns the keys superseded.
func Activate(st *store.Target, newID string, now, deleteAfter time.Time) (retiring []store.Key) {
	for i := range st.Keys {
		k := &st.Keys[i]
		if k.ID == newID {
			activate(k, now)
			continue
		}
		if !k.Origin.Managed() {
			continue
		}
		switch k.State {
		case store.KeyActive, store.KeyPending:
			supersede(k, deleteAfter)
		case store.KeyRetiring:
			retireBy(k, deleteAfter)
		default:
			continue
		}
		retiring = append(retiring, *k)
	}
	return retiring
}

// Due returns the managed keys whose delete-after has passed, soonest
// first, and the earliest delete-after still to come (zero if none): the
// persisted timer a daemon arms.
func Due(st store.Target, now time.Time) (due []store.Key, next time.Time) {
	for _, k := range st.Keys {
		if !k.Origin.Managed() || k.State != store.KeyRetiring {
			continue
		}
		if !k.DeleteAfter.After(now) {
			due = append(due, k)
		} else if next.IsZero() || k.DeleteAfter.Before(next) {
			next = k.DeleteAfter
		}
	}
	sort.SliceStable(due, func(i, j int) bool { return due[i].DeleteAfter.Before(due[j].DeleteAfter) })
	return due, next
}

// Hold is a due key the retire pass keeps, and why.
type Hold struct {
	Key    store.Key
	Reason string
}

// Retirement decides, for the due keys, which to delete now: never one
// that may be the served key (I3), never the last key (I2). Keys gone
// from Codat need no delete and are returned as gone.
func Retirement(due []store.Key, keys []Key, served Served) (del, gone []store.Key, held []Hold) {
	live := make(map[string]bool, len(keys))
	for _, k := range keys {
		live[k.ID] = true
	}
	n := len(live)
	for _, k := range due {
		switch {
		case served.May(k.ID) && served.Known:
			held = append(held, Hold{k, "vault serves it"})
		case served.May(k.ID):
			held = append(held, Hold{k, "it may be the key vault serves: the secret has no key_id and codat's listing shows no raw keys"})
		case !live[k.ID]:
			gone = append(gone, k)
		case n <= 1:
			held = append(held, Hold{k, "it is the last key"})
		default:
			del = append(del, k)
			n--
		}
	}
	return del, gone, held
}

// MaySupersede reports whether the journaled key of an interrupted
// rotation may have been served: once its step reached publish, the
// write may have landed and consumers may hold the key, so it retires
// with the full grace instead of going at once (I4).
func MaySupersede(j store.Journal) bool {
	return j.NewKeyID != "" && (j.Step == store.StepPublish || j.Step == store.StepActivate || j.Step == store.StepRetire)
}
