package rotation

import (
	"fmt"
	"maps"
	"slices"
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
	// ID is the served key's id: the key whose raw value the secret
	// holds, else the secret's key_id, else the one key it can be.
	// Empty when it cannot be told.
	ID string
	// Known is false when the served key could not be identified: the
	// secret has no key_id (or one its api_key contradicts), its api_key
	// matches no key the daemon knows, and several listed keys may be
	// it. A rotation refuses to start then; every key that may be it is
	// kept (I3).
	Known bool
	// Doubt says why the served key is not certain, empty when it is:
	// the secret's key_id and api_key name different keys, or its
	// api_key matches no key the daemon knows. Every key that may be the
	// served one is kept, and status, check and the logs say so.
	Doubt string
	// maybe holds every id that may be the served key.
	maybe map[string]bool
	// certain: ID was told by value or by elimination, so the secret's
	// api_key is that key's value (its fingerprint may be recorded).
	certain bool
	// bare: ID is the key_id label alone, and the secret's key_name is
	// not that key's listed name (a hand write or patch, not a version
	// the daemon wrote with the key's name).
	bare bool
	// labelOnly: bare, of a key the state does not hold as the target's,
	// while a key the target manages or takes on in the same look may
	// be the api_key's: the label is kept, never taken on (see Adopts,
	// Seen.withState).
	labelOnly bool
}

// May reports whether id may be the key Vault serves: such a key is
// never deleted (I3).
func (s Served) May(id string) bool { return id != "" && s.maybe[id] }

// Is reports whether id is the key taken as served: the one the state
// records active. Other keys that May be it are kept, not taken on.
func (s Served) Is(id string) bool { return id != "" && s.Known && id == s.ID }

// Adopts reports whether k, taken as served, becomes the target's own:
// the served key, unless only a bare key_id label names it while one of
// the target's keys may be the api_key's (a hand patch of api_key back
// to an older key under a wrong key_id, with a listing that shows no
// raw values) and its name is not in the target's own shape. Such a
// key is another's that the target keeps and never deletes (I3, I6);
// its own keys that may be served are kept too.
func (s Served) Adopts(k Key, names Names) bool {
	return s.Is(k.ID) && (!s.labelOnly || names.Own(k.Name))
}

// withState marks the served key of seen, taken by a bare label, as
// labelOnly while another key that may be the one served is the
// target's: one the state holds as its own, or one this look takes on
// (a key an earlier version of the secret or its previous_key_id names,
// a key in the target's own shape) unless a version the daemon wrote
// for it held another value (heldOther). A state file that lost its
// keys (a migration, a lost or restored file) meets them again in the
// secret's versions: the target is not new, and a bare label is no
// hand seed of a new target's. Reconcile and Classify call it, with
// the look's history in seen.
func (seen Seen) withState(st store.Target, names Names) Seen {
	s := seen.Served
	if !s.bare || seen.labelAdded() {
		return seen
	}
	if rec := st.Key(s.ID); rec != nil && rec.Origin.Managed() {
		return seen
	}
	for _, k := range seen.Keys {
		if k.ID == s.ID || !s.maybe[k.ID] {
			continue
		}
		if rec := st.Key(k.ID); rec != nil {
			s.labelOnly = rec.Origin.Managed() && rec.State != store.KeyDeleted
		} else {
			class, _ := attribute(st, k, seen, names, 0, time.Time{})
			s.labelOnly = class != ClassForeign && !seen.heldOther(k)
		}
		if s.labelOnly {
			break
		}
	}
	seen.Served = s
	return seen
}

// labelAdded reports whether the secret's key_id, written by hand (no
// key_name), is an operator's answer naming the key Vault serves, as a
// served key that cannot be told asks: the label added onto the raw value
// the version before already held (`vault kv patch key_id=…`), or a key
// published whole over a version the daemon wrote (`vault kv put
// api_key=… key_id=…`: a patch would have kept that version's key_name).
// A hand write over a hand write that changes value and label together
// (a patch of api_key back to an older key under another key's key_id)
// is no such answer.
func (seen Seen) labelAdded() bool {
	s, n := seen.Secret, len(seen.History)
	if s == nil || s.KeyName != "" || n < 2 || n > len(seen.HistoryPrints) || seen.History[n-1].Version != seen.Version {
		return false
	}
	prev := seen.History[n-2].Secret
	if prev == nil {
		return false
	}
	if prev.KeyName != "" && !prev.RotatedAt.IsZero() {
		return true
	}
	return prev.KeyID != s.KeyID && seen.HistoryPrints[n-2] != "" && seen.HistoryPrints[n-2] == seen.SecretPrint
}

// heldOther reports whether a version of the secret that the daemon
// wrote for k (k's key_id and listed name, and not a patch of the
// version before, which keeps its rotated_at and key_name) held another
// raw value than the secret holds now: k is not the key served now.
func (seen Seen) heldOther(k Key) bool {
	for i, v := range seen.History {
		s := v.Secret
		if s == nil || i >= len(seen.HistoryPrints) || s.KeyID != k.ID || s.KeyName == "" || s.KeyName != k.Name || s.RotatedAt.IsZero() {
			continue
		}
		if i > 0 {
			if prev := seen.History[i-1].Secret; prev != nil && prev.RotatedAt.Equal(s.RotatedAt) && prev.KeyName == s.KeyName {
				continue // a patch: it keeps both
			}
		}
		if p := seen.HistoryPrints[i]; p != "" && p != seen.SecretPrint {
			return true
		}
	}
	return false
}

// Maybe returns the ids that may be the served key, sorted.
func (s Served) Maybe() []string {
	out := make([]string, 0, len(s.maybe))
	for id, ok := range s.maybe {
		if ok {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

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

// FindServed identifies the key the secret serves among Codat's keys
// (docs/design.md#served-by-value), by value first, since the raw value
// is what consumers send: the listed key with the secret's raw value,
// else the key whose recorded fingerprint is fp (the fingerprint of the
// secret's api_key). Else by elimination: a listed key can be the
// served one only if its raw value is neither shown nor fingerprinted
// (a listing is made with the served key, so the served key is listed);
// one such key is it; among several, the secret's key_id names it but
// cannot be checked, and every one of them is kept. A key_id that the
// value contradicts is a doubt: both keys are kept, and the value
// decides which key is served.
func FindServed(keys []Key, s *Published, prints Prints, fp string) Served {
	out := Served{Known: true, maybe: map[string]bool{}}
	if s == nil {
		return out
	}
	byValue := ""
	for _, k := range keys {
		if !s.APIKey.Empty() && k.APIKey == s.APIKey {
			byValue = k.ID
			break
		}
	}
	if byValue == "" && fp != "" {
		for _, k := range keys {
			if prints[k.ID] == fp {
				byValue = k.ID
				break
			}
		}
	}
	if byValue != "" {
		out.ID, out.certain = byValue, true
		out.maybe[byValue] = true
		if s.KeyID != "" && s.KeyID != byValue {
			out.maybe[s.KeyID] = true
			out.Doubt = fmt.Sprintf("the secret's key_id names key %s, but its api_key is the value of key %s: both are kept, and %s is taken as served", s.KeyID, byValue, byValue)
		}
		return out
	}
	// Not told by value: the keys that may be it.
	var open []string
	for _, k := range keys {
		if k.APIKey.Empty() && prints[k.ID] == "" {
			open = append(open, k.ID)
		}
	}
	for _, id := range open {
		out.maybe[id] = true
	}
	idOpen := s.KeyID != "" && slices.Contains(open, s.KeyID)
	switch {
	case len(open) == 1:
		// The one key it can be.
		out.ID, out.certain = open[0], true
		if s.KeyID != "" && s.KeyID != open[0] {
			out.maybe[s.KeyID] = true
			out.Doubt = fmt.Sprintf("the secret's key_id names key %s, whose value is known and is not the secret's api_key; the api_key can only be key %s: both are kept", s.KeyID, open[0])
		}
	case idOpen:
		out.ID = s.KeyID
		// The daemon writes a key's listed name beside its id (a nameless
		// key's empty one too); a patch keeps the old key_name.
		out.bare = !slices.ContainsFunc(keys, func(k Key) bool { return k.ID == s.KeyID && k.Name == s.KeyName })
		out.Doubt = fmt.Sprintf("the secret's api_key matches no key this daemon made or published, and codat's listing shows no raw keys: key_id %s is taken as served, and every key that may be it is kept (%d keys)", s.KeyID, len(open))
	case s.KeyID != "" && len(open) == 0:
		// Every listed key's value is known and none is the api_key:
		// the listing lists the served key, so the key_id is all there is.
		out.ID = s.KeyID
		out.maybe[s.KeyID] = true
	default:
		out.Known = false
		if s.KeyID != "" {
			out.maybe[s.KeyID] = true
			out.Doubt = fmt.Sprintf("the secret's key_id names key %s, whose value is known and is not the secret's api_key, and codat's listing shows no raw keys: any of %d keys may be the one served, and all are kept", s.KeyID, len(open))
		} else {
			out.Doubt = fmt.Sprintf("the secret has no key_id, its api_key matches no key this daemon made or published, and codat's listing shows no raw keys: any of %d keys may be the one served, and all are kept", len(open))
		}
	}
	return out
}

// Stale reports whether Vault moved past the version of the secret the
// state last saw (I4, I5): someone else wrote it (an operator, a copy of
// the state file, a run the state never recorded), perhaps more than
// once, and may have served any key meanwhile. Versions restart at 1
// after `vault kv metadata delete`, so the time Vault wrote the version
// counts as well as its number; a state that never saw the secret is
// behind any secret that exists.
func Stale(st store.Target, cur Current) bool {
	if cur.Version == 0 {
		return false
	}
	if st.VaultVersion == 0 || st.VaultVersion != cur.Version {
		return true
	}
	return !st.VaultWritten.IsZero() && !cur.Written.IsZero() && !st.VaultWritten.Equal(cur.Written)
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
	seen = seen.withState(st, names)
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
		case rec.Origin == store.OriginAdopted, served.Adopts(k, names):
			return ClassAdopted, time.Time{}
		}
		return ClassForeign, time.Time{}
	}
	if served.Adopts(k, names) {
		return ClassAdopted, time.Time{}
	}
	if served.Is(k.ID) {
		// Its label alone names it, in this version and perhaps in
		// earlier ones, while a key of the target's may be served.
		return ClassForeign, time.Time{}
	}
	if secret != nil && secret.PreviousKeyID != "" && k.ID == secret.PreviousKeyID {
		at, ok := supersededUntil(*secret, seen.Written, k.ID, grace)
		if !ok {
			at = now.Add(grace)
		}
		// A hand patch keeps previous_key_id from an older version, and
		// the key may have been served since: the versions, when read,
		// may say later (never sooner).
		if hist, ok := servedBefore(seen, k, printOf(st, seen, k.ID), grace, now); ok {
			at = later(at, hist)
		}
		return ClassAdopted, at
	}
	if at, ok := servedBefore(seen, k, printOf(st, seen, k.ID), grace, now); ok {
		return ClassAdopted, at
	}
	if names.Own(k.Name) {
		if !Stale(st, Current{Version: seen.Version, Written: seen.Written}) && !seen.named(k, st) {
			return ClassOrphan, time.Time{}
		}
		return ClassAdopted, now.Add(grace)
	}
	return ClassForeign, time.Time{}
}

// servedBefore looks k up in the secret's earlier versions (oldest
// first), by the raw value they served (docs/design.md#served-by-value):
// k's listed raw value, else its fingerprint, and only when neither is
// known by the version's key_id label. When a version served it, the
// key retires when the version that superseded it says (its
// previous_expires_at), else a grace after that version's rotated_at;
// a key whose successor is not recorded gets a full grace from now.
func servedBefore(seen Seen, k Key, kprint string, grace time.Duration, now time.Time) (time.Time, bool) {
	history, id := seen.History, k.ID
	last := -1
	for i, v := range history {
		if v.Secret == nil {
			continue
		}
		var hprint string
		if i < len(seen.HistoryPrints) {
			hprint = seen.HistoryPrints[i]
		}
		var served bool
		switch {
		case !k.APIKey.Empty() && !v.Secret.APIKey.Empty():
			served = v.Secret.APIKey == k.APIKey
		case kprint != "" && hprint != "":
			served = hprint == kprint
		default:
			// Only the label is left: it names k unless the version's
			// raw value is known to be another key's, or its key_name is
			// another key's (a hand patch of api_key under a wrong
			// key_id keeps the key_name of the version it patched).
			served = v.Secret.KeyID == id && !seen.printOfAnother(hprint, id) &&
				(v.Secret.KeyName == "" || v.Secret.KeyName == k.Name)
		}
		if served {
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
	if prev := history[last].Secret; !prev.RotatedAt.IsZero() && next.Secret.RotatedAt.Equal(prev.RotatedAt) &&
		(next.Secret.PreviousKeyID != id || next.Secret.KeyName == prev.KeyName) {
		// The version that superseded it carries the same rotated_at and
		// does not name it, or names it but keeps the key name too: a
		// hand patch (`vault kv patch` keeps the fields it is not given,
		// a previous_key_id from an older version among them), whose
		// records say nothing of this supersede. The daemon's own write
		// in the same instant names the new key's name. A full grace
		// from now is never too short.
		return now.Add(grace), true
	}
	if at, ok := supersededUntil(*next.Secret, next.Written, id, grace); ok {
		return at, true
	}
	return now.Add(grace), true
}

// printOf is the fingerprint of key id's raw value, if known: recorded
// in the state, or seen in the listing.
func printOf(st store.Target, seen Seen, id string) string {
	if rec := st.Key(id); rec != nil && rec.Fingerprint != "" {
		return rec.Fingerprint
	}
	return seen.Prints[id]
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
	// they were read (a takeover reads them, and every look that finds
	// Vault ahead of the state, or an orphan to sweep); nil otherwise.
	History []Current
	// Prints are the fingerprints of the raw values the look saw: of the
	// listed keys that show one, of the secret's api_key (SecretPrint),
	// and of each version's api_key in History (HistoryPrints, in order).
	Prints        Prints
	SecretPrint   string
	HistoryPrints []string
	// Metadata is the secret's custom metadata.
	Metadata map[string]string
	// known are the fingerprints of every key whose raw value is known,
	// listed or recorded in the state, by id.
	known Prints
}

// printOfAnother reports whether print is the known raw value of a key
// other than id: a version holding it served that key, whatever its
// key_id label says.
func (s Seen) printOfAnother(print, id string) bool {
	if print == "" {
		return false
	}
	for other, p := range s.known {
		if other != id && p == print {
			return true
		}
	}
	return false
}

// named reports whether a version of the secret in History served k:
// such a key is never a crash's orphan (I5).
func (s Seen) named(k Key, st store.Target) bool {
	_, ok := servedBefore(s, k, printOf(st, s, k.ID), 0, time.Time{})
	return ok
}

// See makes a Seen from a listing and what Vault holds, telling the
// served key with the fingerprints st records; salt is the state file's.
func See(keys []Key, cur Current, st store.Target, salt []byte) Seen {
	seen := Seen{Keys: keys, Secret: cur.Secret, Version: cur.Version, Written: cur.Written, Metadata: cur.CustomMetadata, Prints: Prints{}}
	for _, k := range keys {
		if !k.APIKey.Empty() {
			seen.Prints[k.ID] = Fingerprint(salt, k.APIKey)
		}
	}
	if cur.Secret != nil {
		seen.SecretPrint = Fingerprint(salt, cur.Secret.APIKey)
	}
	seen.known = PrintsOf(st)
	maps.Copy(seen.known, seen.Prints)
	seen.Served = FindServed(keys, cur.Secret, PrintsOf(st), seen.SecretPrint)
	return seen
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
	seen = seen.withState(*st, names)
	keys, served, secret := seen.Keys, seen.Served, seen.Secret
	unseen := Stale(*st, Current{Version: seen.Version, Written: seen.Written})
	st.CodatKeys = len(keys)
	live := make(map[string]bool, len(keys))
	fresh := map[string]bool{} // taken on now: their times come from the records
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
			if served.Adopts(k, names) {
				adopt(st, k, store.KeyActive, secret.RotatedAt, time.Time{}, rotationID)
				continue
			}
			adopt(st, k, store.KeyRetiring, time.Time{}, after, rotationID)
			fresh[k.ID] = true
		case ClassOrphan:
			orphans = append(orphans, k)
		default:
			recordForeign(st, k)
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
		case rec.Origin == store.OriginForeign && served.Is(rec.ID) && !served.Adopts(Key{ID: rec.ID, Name: rec.Name}, names):
			// Named by a label only, while a key of the target's may be
			// the one served: kept as another's (Adopts).
		case served.Is(rec.ID):
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
		case rec.State == store.KeyRetiring && unseen && !fresh[rec.ID] && rec.DeleteAfter.Before(now.Add(grace)):
			supersede(rec, now.Add(grace))
		case rec.State == store.KeyForeign && rec.Origin == store.OriginForeign && seen.History != nil:
			// A takeover reads the secret's history: a key recorded as
			// foreign that an earlier version served is the daemon's.
			if after, ok := servedBefore(seen, listed[rec.ID], printOf(*st, seen, rec.ID), grace, now); ok {
				claim(rec)
				supersede(rec, after)
			}
		}
	}
	// What the look learnt of raw values, as fingerprints (never the
	// values): the listed keys that showed theirs, and the served key
	// when the secret's api_key is surely its value.
	for i := range st.Keys {
		rec := &st.Keys[i]
		if rec.Fingerprint != "" || rec.State == store.KeyDeleted || !rec.Origin.Managed() {
			continue
		}
		if p := seen.Prints[rec.ID]; p != "" {
			notePrint(rec, p)
		} else if served.certain && rec.ID == served.ID {
			notePrint(rec, seen.SecretPrint)
		}
	}
	st.VaultVersion, st.VaultWritten = seen.Version, seen.Written
	st.ServedDoubt = served.Doubt
	return orphans
}

// Room decides which keys a create must delete first to stay within
// limit (I1): managed, retiring, at Codat, not possibly served, and past
// their grace (any retiring key in an emergency), oldest delete-after
// first. It also counts the foreign keys. When there are not enough
// candidates it returns ErrNoRoom with the counts.
func Room(st store.Target, keys []Key, served Served, t Target, emergency bool, now time.Time, held map[string]bool) (del []store.Key, foreign int, err error) {
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
		if k.State == store.KeyRetiring && !served.May(k.ID) && !held[k.ID] && (emergency || !k.DeleteAfter.After(now)) {
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
// of their delete-after and the new one, except a key that may have been
// the served one (the secret was in doubt, served.May): Vault may have
// served it until now, so it keeps a full grace from now (I4), which
// only an emergency shortens. It returns the keys superseded.
func Activate(st *store.Target, newID string, served Served, now, deleteAfter time.Time) (retiring []store.Key) {
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
			if served.May(k.ID) && deleteAfter.After(k.DeleteAfter) {
				k.DeleteAfter = deleteAfter
			} else {
				retireBy(k, deleteAfter)
			}
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
		case served.Is(k.ID):
			held = append(held, Hold{k, "vault serves it"})
		case served.May(k.ID) && served.Doubt != "":
			held = append(held, Hold{k, "it may be the key vault serves: " + served.Doubt})
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

// EmergencyStands reports whether an interrupted emergency, whose key
// Vault serves, still supersedes the other keys with no grace when its
// recovery activates that key: only while Vault holds the version its
// own publish wrote, the one after the journal's. Past it, Vault was
// written since (an operator's way back to the key, or a journal
// restored from a backup taken before later rotations): a key served
// in between was superseded by those writes, not by the emergency, and
// keeps the full grace (I4).
func EmergencyStands(j store.Journal, cur Current) bool {
	return j.Emergency && cur.Version == j.VaultVersion+1
}

// DeleteKind is why a key is deleted; every delete at Codat names one
// and goes through MayDelete (docs/design.md#delete-path).
type DeleteKind string

const (
	DeleteRoom     DeleteKind = "make-room"
	DeleteRetire   DeleteKind = "retire"
	DeleteOrphan   DeleteKind = "orphan"
	DeleteRollback DeleteKind = "rollback"
	DeleteRevoke   DeleteKind = "revoke"
)

// MayDelete is the one check before every delete at Codat: never a key
// that is or may be the one Vault serves (I3), never the last key (I2),
// and only keys the daemon may touch for that kind of delete (I6): its
// own retiring keys to make room or retire, an unknown key of its own
// name shape or an unpublished key of its own as an orphan, a key it
// just made in a rollback, and any key an operator names to revoke.
func MayDelete(kind DeleteKind, id string, st store.Target, keys []Key, served Served) error {
	if served.May(id) {
		return fmt.Errorf("refusing to delete %s: it is, or may be, the key vault serves", id)
	}
	others := 0
	for _, k := range keys {
		if k.ID != id {
			others++
		}
	}
	if others == 0 {
		return fmt.Errorf("refusing to delete %s: it is the last key", id)
	}
	rec := st.Key(id)
	switch kind {
	case DeleteRevoke:
		return nil
	case DeleteOrphan:
		if rec == nil || (rec.Origin == store.OriginCreated && rec.State == store.KeyPending) {
			return nil
		}
	case DeleteRollback:
		if rec == nil || rec.Origin == store.OriginCreated {
			return nil
		}
	case DeleteRoom, DeleteRetire:
		if rec != nil && rec.Origin.Managed() && rec.State != store.KeyActive {
			return nil
		}
	}
	state := "unknown to the state"
	if rec != nil {
		state = fmt.Sprintf("%s and %s", rec.Origin, rec.State)
	}
	return fmt.Errorf("refusing to delete %s (%s): the key is %s", id, kind, state)
}

// Adoptions returns the keys after takes on that before did not hold as
// its own: keys it did not make, that a look at Vault made its own
// (served, named by the secret or its history). Before such a key is
// taken on, no other target may record it (docs/design.md#shared-keys).
func Adoptions(before, after store.Target) []string {
	var out []string
	for _, k := range after.Keys {
		if !k.Origin.Managed() || k.Origin == store.OriginCreated || k.State == store.KeyDeleted {
			continue
		}
		if rec := before.Key(k.ID); rec == nil || !rec.Origin.Managed() || rec.State == store.KeyDeleted {
			out = append(out, k.ID)
		}
	}
	return out
}
