package rotation_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/secret"
	"github.com/codat-rotator/codat-rotator/store"
)

// The policy's decisions are plain functions: these tables need no
// Vault and no Codat.

var t0 = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func listing(raw bool, ids ...string) []rotation.Key {
	var out []rotation.Key
	for _, id := range ids {
		k := rotation.Key{ID: id, Name: "k-" + id}
		if raw {
			k.APIKey = secret.Value("raw-" + id)
		}
		out = append(out, k)
	}
	return out
}

// withRaw gives each key its raw value in the listing, as Codat shows
// them by default.
func withRaw(keys []rotation.Key) []rotation.Key {
	for i := range keys {
		keys[i].APIKey = secret.Value("raw-" + keys[i].ID)
	}
	return keys
}

func rawOf(id string) secret.Value { return secret.Value("raw-" + id) }

func TestFindServed(t *testing.T) {
	salt := []byte("salt")
	fp := func(raw string) string { return rotation.Fingerprint(salt, secret.Value(raw)) }
	// What the daemon knows of the values of a and b: it made or
	// published them. c is a key made in the Portal.
	known := rotation.Prints{"a": fp("raw-a"), "b": fp("raw-b")}
	tests := []struct {
		name      string
		keys      []rotation.Key
		secret    *rotation.Published
		prints    rotation.Prints
		wantID    string
		wantKnown bool
		doubt     bool
		may, not  []string
	}{
		{"no secret", listing(true, "a"), nil, nil, "", true, false, nil, []string{"a"}},
		{"by key_id and value", listing(true, "a", "b"), &rotation.Published{KeyID: "b", APIKey: "raw-b"}, nil, "b", true, false, []string{"b"}, []string{"a"}},
		{"by raw value: a secret written by hand", listing(true, "a", "b"), &rotation.Published{APIKey: "raw-a"}, nil, "a", true, false, []string{"a"}, []string{"b"}},
		{"key_id and raw value disagree: the value is served, both kept", listing(true, "a", "b"), &rotation.Published{KeyID: "b", APIKey: "raw-a"}, nil, "a", true, true, []string{"a", "b"}, nil},
		{"no key_id, listing without raw keys, one key", listing(false, "a"), &rotation.Published{APIKey: "raw-a"}, nil, "a", true, false, []string{"a"}, nil},
		{"no key_id, listing without raw keys: unknown, every key may be it", listing(false, "a", "b"), &rotation.Published{APIKey: "raw-a"}, nil, "", false, true, []string{"a", "b"}, nil},
		{"key_id, blind listing, no fingerprints: key_id taken, every key kept", listing(false, "a", "b"), &rotation.Published{KeyID: "a", APIKey: "raw-a"}, nil, "a", true, true, []string{"a", "b"}, nil},
		{"blind listing, told by fingerprint", listing(false, "a", "b"), &rotation.Published{KeyID: "a", APIKey: "raw-a"}, known, "a", true, false, []string{"a"}, []string{"b"}},
		{"blind listing, no key_id, told by fingerprint", listing(false, "a", "b", "c"), &rotation.Published{APIKey: "raw-b"}, known, "b", true, false, []string{"b"}, []string{"a", "c"}},
		{"hand rollback: key_id b, api_key a's value", listing(false, "a", "b"), &rotation.Published{KeyID: "b", APIKey: "raw-a"}, known, "a", true, true, []string{"a", "b"}, nil},
		{"wrong key_id added: api_key is a Portal key's", listing(false, "a", "b", "c"), &rotation.Published{KeyID: "a", APIKey: "raw-c"}, known, "c", true, true, []string{"a", "c"}, []string{"b"}},
		{"wrong key_id, several unknown keys: unknown", listing(false, "a", "b", "c", "d"), &rotation.Published{KeyID: "a", APIKey: "raw-c"}, known, "", false, true, []string{"a", "c", "d"}, []string{"b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			print := ""
			if tt.secret != nil {
				print = fp(tt.secret.APIKey.Reveal())
			}
			got := rotation.FindServed(tt.keys, tt.secret, tt.prints, print)
			if got.ID != tt.wantID || got.Known != tt.wantKnown || (got.Doubt != "") != tt.doubt {
				t.Errorf("FindServed = {ID:%q Known:%v Doubt:%q}, want {ID:%q Known:%v doubt:%v}", got.ID, got.Known, got.Doubt, tt.wantID, tt.wantKnown, tt.doubt)
			}
			for _, id := range tt.may {
				if !got.May(id) {
					t.Errorf("May(%s) = false, want true", id)
				}
			}
			for _, id := range tt.not {
				if got.May(id) {
					t.Errorf("May(%s) = true, want false", id)
				}
			}
		})
	}
}

func TestClassify(t *testing.T) {
	names := rotation.Names{Prefix: "rot-", Tag: "aaaaaa"}
	other := rotation.Names{Prefix: "rot-", Tag: "bbbbbb"}
	st := store.Target{VaultVersion: 4, Keys: []store.Key{
		{ID: "made", Origin: store.OriginCreated, State: store.KeyRetiring},
		{ID: "boot", Origin: store.OriginAdopted, State: store.KeyActive},
		{ID: "portal", Origin: store.OriginForeign, State: store.KeyForeign},
	}}
	keys := []rotation.Key{
		{ID: "made"}, {ID: "boot"}, {ID: "portal"}, {ID: "served"}, {ID: "prev"},
		{ID: "crash", Name: names.New(t0)}, {ID: "person", Name: "rot-manual"},
		{ID: "sibling", Name: other.New(t0)},                     // another target on the same client
		{ID: "legacy", Name: "rot-20261130T120000Z-abc123"},      // the shape before tags: only the state vouches
		{ID: "served-once", Name: "rot-20261101T120000Z-abc123"}, // named by an earlier version
	}
	keys = withRaw(keys)
	secret := &rotation.Published{KeyID: "served", APIKey: rawOf("served"), PreviousKeyID: "prev"}
	seen := rotation.See(keys, rotation.Current{Secret: secret, Version: 4}, st, nil)
	seen.History = []rotation.Current{{Secret: &rotation.Published{KeyID: "served-once"}}, {Secret: &rotation.Published{KeyID: "prev"}}, {Secret: secret}}
	got := rotation.Classify(st, seen, names)
	want := map[string]rotation.Class{
		"made": rotation.ClassManaged, "boot": rotation.ClassAdopted, "portal": rotation.ClassForeign,
		"served": rotation.ClassAdopted, "prev": rotation.ClassAdopted, "crash": rotation.ClassOrphan, "person": rotation.ClassForeign,
		"sibling": rotation.ClassForeign, "legacy": rotation.ClassForeign, "served-once": rotation.ClassAdopted,
	}
	for id, w := range want {
		if got[id] != w {
			t.Errorf("Classify[%s] = %q, want %q", id, got[id], w)
		}
	}
	// A version the daemon never saw (a lost or restored state file) may
	// have served a key in its own shape: it is taken on, not deleted.
	seen.Version = 5
	if c := rotation.Classify(st, seen, names)["crash"]; c != rotation.ClassAdopted {
		t.Errorf("own-shape key after an unseen write: %q, want %q", c, rotation.ClassAdopted)
	}
}

// TestReconcileRebuildsFromHistory: a state file lost, the secret's
// versions say which keys were served and when they were superseded.
// Keys taken on keep the grace those records give them, never less; a
// key in the target's own shape that no version names may have been
// served in a version pruned since, so it gets a full grace from now.
func TestReconcileRebuildsFromHistory(t *testing.T) {
	names := rotation.Names{Prefix: "rot-", Tag: "aaaaaa"}
	g := 24 * time.Hour
	keys := []rotation.Key{
		{ID: "boot", Name: ""}, {ID: "k2", Name: names.New(t0)}, {ID: "k3", Name: names.New(t0)}, {ID: "k4", Name: names.New(t0)},
		{ID: "pruned", Name: names.New(t0)}, {ID: "portal", Name: "portal"},
	}
	keys = withRaw(keys)
	// Whole seconds, as the secret holds them; Vault's own write times
	// are exact, and a write lands after rotated_at was taken.
	history := []rotation.Current{
		{Version: 1, Secret: &rotation.Published{KeyID: "boot", RotatedAt: t0.Add(-72 * time.Hour)}},
		{Version: 2, Secret: &rotation.Published{KeyID: "k2", RotatedAt: t0.Add(-48 * time.Hour), PreviousKeyID: "boot", PreviousExpiresAt: t0.Add(-24 * time.Hour)}},
		// Written without previous_*: a grace after rotated_at.
		{Version: 3, Secret: &rotation.Published{KeyID: "k3", RotatedAt: t0.Add(-2 * time.Hour)}},
		// Written 1.5 s after its rotated_at (a slow write across a
		// second's end): the grace it granted counts from the write.
		{Version: 4, Secret: &rotation.Published{KeyID: "k4", APIKey: rawOf("k4"), RotatedAt: t0.Add(-time.Hour), PreviousKeyID: "k3", PreviousExpiresAt: t0.Add(23 * time.Hour)},
			Written: t0.Add(-time.Hour + 1500*time.Millisecond)},
	}
	seen := rotation.See(keys, history[3], store.Target{}, nil)
	seen.History = history
	var st store.Target
	orphans := rotation.Reconcile(&st, seen, names, g, t0, "takeover")
	if len(orphans) != 0 {
		t.Errorf("orphans = %v, want none: a rebuilt state deletes nothing at once", orphans)
	}
	for _, tt := range []struct {
		id     string
		origin store.Origin
		state  store.KeyState
		after  time.Time
	}{
		// The secret's times are cut to the second: a key taken on from
		// them waits for the end of that second (I4).
		{"boot", store.OriginAdopted, store.KeyRetiring, t0.Add(-24*time.Hour + time.Second)},
		{"k2", store.OriginAdopted, store.KeyRetiring, t0.Add(-2*time.Hour + time.Second + g)},
		{"k3", store.OriginAdopted, store.KeyRetiring, t0.Add(23*time.Hour + 2500*time.Millisecond)},
		{"k4", store.OriginAdopted, store.KeyActive, time.Time{}},
		{"pruned", store.OriginAdopted, store.KeyRetiring, t0.Add(g)},
		{"portal", store.OriginForeign, store.KeyForeign, time.Time{}},
	} {
		k := st.Key(tt.id)
		if k == nil {
			t.Errorf("%s: not recorded", tt.id)
			continue
		}
		if k.Origin != tt.origin || k.State != tt.state || !k.DeleteAfter.Equal(tt.after) {
			t.Errorf("%s = %s/%s delete_after %v, want %s/%s %v", tt.id, k.Origin, k.State, k.DeleteAfter, tt.origin, tt.state, tt.after)
		}
	}
	if st.VaultVersion != 4 {
		t.Errorf("VaultVersion = %d, want 4", st.VaultVersion)
	}
}

func TestReconcile(t *testing.T) {
	names := rotation.Names{Prefix: "rot-", Tag: "aaaaaa"}
	st := store.Target{VaultVersion: 1, Keys: []store.Key{
		{ID: "old", Origin: store.OriginCreated, State: store.KeyActive},
		{ID: "gone", Origin: store.OriginCreated, State: store.KeyRetiring, DeleteAfter: t0},
		{ID: "pend", Name: "rot-x-20261130T110000Z-aaaaaa", Origin: store.OriginCreated, State: store.KeyPending},
		{ID: "back", Origin: store.OriginCreated, State: store.KeyDeleted, Deleted: t0.Add(-time.Hour)},
	}}
	keys := []rotation.Key{
		{ID: "old"}, {ID: "pend"}, {ID: "back"}, {ID: "new", Name: "x"},
		{ID: "orphan", Name: names.New(t0)}, {ID: "portal", Name: "rot-mine"},
	}
	keys = withRaw(keys)
	secret := &rotation.Published{KeyID: "new", APIKey: rawOf("new"), RotatedAt: t0.Add(-time.Minute)}
	orphans := rotation.Reconcile(&st, rotation.See(keys, rotation.Current{Secret: secret, Version: 1}, st, nil), names, time.Hour, t0, "r-1")
	var ids []string
	for _, k := range orphans {
		ids = append(ids, k.ID)
	}
	slices.Sort(ids)
	if want := []string{"orphan", "pend"}; !slices.Equal(ids, want) {
		t.Errorf("orphans = %v, want %v", ids, want)
	}
	check := func(id string, origin store.Origin, state store.KeyState, after time.Time) {
		t.Helper()
		k := st.Key(id)
		if k == nil {
			t.Fatalf("no record of %s", id)
		}
		if k.Origin != origin || k.State != state || !k.DeleteAfter.Equal(after) {
			t.Errorf("%s = %s/%s delete_after %v, want %s/%s %v", id, k.Origin, k.State, k.DeleteAfter, origin, state, after)
		}
	}
	check("new", store.OriginAdopted, store.KeyActive, time.Time{})
	check("old", store.OriginCreated, store.KeyRetiring, t0.Add(time.Hour))
	check("gone", store.OriginCreated, store.KeyDeleted, t0)
	check("back", store.OriginCreated, store.KeyRetiring, t0)
	check("portal", store.OriginForeign, store.KeyForeign, time.Time{})
	if st.Key("orphan") != nil {
		t.Errorf("the orphan was recorded; it is deleted instead")
	}
	if st.CodatKeys != len(keys) {
		t.Errorf("CodatKeys = %d, want %d", st.CodatKeys, len(keys))
	}
}

func TestRoom(t *testing.T) {
	tg := rotation.Target{MaxKeys: 4, ReserveSlots: 1}
	st := store.Target{Keys: []store.Key{
		{ID: "served", Origin: store.OriginCreated, State: store.KeyActive},
		{ID: "late", Origin: store.OriginCreated, State: store.KeyRetiring, DeleteAfter: t0.Add(-time.Minute)},
		{ID: "early", Origin: store.OriginCreated, State: store.KeyRetiring, DeleteAfter: t0.Add(-time.Hour)},
		{ID: "grace", Origin: store.OriginCreated, State: store.KeyRetiring, DeleteAfter: t0.Add(time.Hour)},
		{ID: "portal", Origin: store.OriginForeign, State: store.KeyForeign},
	}}
	served := rotation.FindServed(nil, &rotation.Published{KeyID: "served"}, nil, "")
	tests := []struct {
		name      string
		ids       []string
		emergency bool
		want      []string
		foreign   int
		err       bool
	}{
		{"room to spare", []string{"served", "late"}, false, nil, 0, false},
		{"the oldest past grace goes first", []string{"served", "late", "early", "grace"}, false, []string{"early", "late"}, 0, false},
		{"keys in grace are not candidates", []string{"served", "grace", "portal", "late"}, false, nil, 1, true},
		{"an emergency may take keys in grace and the reserve", []string{"served", "grace", "portal", "late"}, true, []string{"late"}, 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			del, foreign, err := rotation.Room(st, listing(true, tt.ids...), served, tg, tt.emergency, t0, nil)
			var got []string
			for _, k := range del {
				got = append(got, k.ID)
			}
			if !slices.Equal(got, tt.want) || foreign != tt.foreign || (err != nil) != tt.err {
				t.Errorf("Room = %v, %d foreign, err %v; want %v, %d, err %v", got, foreign, err, tt.want, tt.foreign, tt.err)
			}
			if err != nil && !errors.Is(err, rotation.ErrNoRoom) {
				t.Errorf("err = %v, want ErrNoRoom", err)
			}
		})
	}
}

func TestActivate(t *testing.T) {
	st := store.Target{Keys: []store.Key{
		{ID: "new", Origin: store.OriginCreated, State: store.KeyPending},
		{ID: "cur", Origin: store.OriginAdopted, State: store.KeyActive},
		{ID: "soon", Origin: store.OriginCreated, State: store.KeyRetiring, DeleteAfter: t0.Add(time.Minute)},
		{ID: "later", Origin: store.OriginCreated, State: store.KeyRetiring, DeleteAfter: t0.Add(48 * time.Hour)},
		{ID: "portal", Origin: store.OriginForeign, State: store.KeyForeign},
	}}
	after := t0.Add(24 * time.Hour)
	retiring := rotation.Activate(&st, "new", rotation.Served{}, t0, after)
	got := map[string]time.Time{}
	for _, k := range retiring {
		got[k.ID] = k.DeleteAfter
	}
	want := map[string]time.Time{"cur": after, "soon": t0.Add(time.Minute), "later": after}
	if len(got) != len(want) {
		t.Errorf("retiring = %v, want %v", got, want)
	}
	for id, w := range want {
		if !got[id].Equal(w) {
			t.Errorf("%s delete_after = %v, want %v", id, got[id], w)
		}
	}
	if k := st.Key("new"); k.State != store.KeyActive || !k.Published.Equal(t0) {
		t.Errorf("new = %+v, want active, published now", *k)
	}
	if k := st.Key("portal"); k.State != store.KeyForeign {
		t.Errorf("a foreign key was superseded: %+v", *k)
	}
}

// A secret in doubt (a hand patch of api_key, a listing without raw
// keys, no fingerprints after a takeover) may have served any retiring
// key until the new one replaced it: each keeps a full grace from now,
// and an emergency still retires them at once.
func TestActivateAfterDoubt(t *testing.T) {
	// Blind listing, no prints: the secret's key_id names cur, its
	// api_key matches nothing known, so cur and old both may be served.
	served := rotation.FindServed(listing(false, "cur", "old", "new"), &rotation.Published{KeyID: "cur", APIKey: "raw-of-old"}, nil, "print-of-old")
	if served.Doubt == "" || !served.May("old") {
		t.Fatalf("served = %+v, want old in doubt", served)
	}
	for _, emergency := range []bool{false, true} {
		st := store.Target{Keys: []store.Key{
			{ID: "new", Origin: store.OriginCreated, State: store.KeyPending},
			{ID: "cur", Origin: store.OriginAdopted, State: store.KeyActive},
			{ID: "old", Origin: store.OriginAdopted, State: store.KeyRetiring, DeleteAfter: t0.Add(time.Hour)},
		}}
		after := t0.Add(24 * time.Hour)
		if emergency {
			after = t0
		}
		rotation.Activate(&st, "new", served, t0, after)
		for _, id := range []string{"cur", "old"} {
			if k := st.Key(id); k.State != store.KeyRetiring || !k.DeleteAfter.Equal(after) {
				t.Errorf("emergency=%v: %s = %s after %v, want retiring after %v", emergency, id, k.State, k.DeleteAfter, after)
			}
		}
	}
}

func TestRetirement(t *testing.T) {
	due := []store.Key{{ID: "a"}, {ID: "b"}, {ID: "gone"}}
	tests := []struct {
		name            string
		keys            []rotation.Key
		secret          *rotation.Published
		del, gone, held []string
	}{
		{"served by key_id", listing(true, "a", "b", "c"), &rotation.Published{KeyID: "a", APIKey: "raw-a"}, []string{"b"}, []string{"gone"}, []string{"a"}},
		// A secret written by hand without key_id (I3): the raw value names the served key.
		{"served by raw value", listing(true, "a", "b", "c"), &rotation.Published{APIKey: "raw-a"}, []string{"b"}, []string{"gone"}, []string{"a"}},
		{"unknown: nothing that may be it", listing(false, "a", "b", "c"), &rotation.Published{APIKey: "raw-c"}, nil, []string{"gone"}, []string{"a", "b"}},
		{"never the last key", listing(true, "a", "b"), &rotation.Published{KeyID: "x"}, []string{"a"}, []string{"gone"}, []string{"b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			del, gone, held := rotation.Retirement(due, tt.keys, rotation.FindServed(tt.keys, tt.secret, nil, ""))
			ids := func(ks []store.Key) []string {
				var out []string
				for _, k := range ks {
					out = append(out, k.ID)
				}
				return out
			}
			var h []string
			for _, x := range held {
				h = append(h, x.Key.ID)
			}
			if !slices.Equal(ids(del), tt.del) || !slices.Equal(ids(gone), tt.gone) || !slices.Equal(h, tt.held) {
				t.Errorf("Retirement = del %v gone %v held %v; want %v %v %v", ids(del), ids(gone), h, tt.del, tt.gone, tt.held)
			}
		})
	}
}

func TestMaySupersede(t *testing.T) {
	for step, want := range map[store.Step]bool{
		store.StepCreate: false, store.StepVerify: false, store.StepPublish: true, store.StepRetire: true,
	} {
		if got := rotation.MaySupersede(store.Journal{Step: step, NewKeyID: "k"}); got != want {
			t.Errorf("MaySupersede(%s) = %v, want %v", step, got, want)
		}
	}
}

func TestEmergencyStands(t *testing.T) {
	j := store.Journal{Emergency: true, VaultVersion: 4, NewKeyID: "k"}
	for version, want := range map[int]bool{5: true, 6: false, 7: false} {
		if got := rotation.EmergencyStands(j, rotation.Current{Version: version}); got != want {
			t.Errorf("EmergencyStands(journal at 4, vault at %d) = %v, want %v", version, got, want)
		}
	}
	if rotation.EmergencyStands(store.Journal{VaultVersion: 4}, rotation.Current{Version: 5}) {
		t.Errorf("a routine journal's recovery has no emergency to keep")
	}
}

func TestNeverPublished(t *testing.T) {
	keys := listing(false, "a", "b", "new")
	s := rotation.FindServed(keys, &rotation.Published{APIKey: "raw-a"}, nil, "")
	if s.Known || !s.May("new") {
		t.Fatalf("a blind listing without key_id: want unknown, every key possibly served")
	}
	s = s.NeverPublished("new")
	if s.May("new") || !s.May("a") || !s.May("b") {
		t.Errorf("NeverPublished(new): May(new)=%v May(a)=%v May(b)=%v, want false true true", s.May("new"), s.May("a"), s.May("b"))
	}
	known := rotation.FindServed(keys, &rotation.Published{KeyID: "a"}, nil, "").NeverPublished("a")
	if !known.May("a") {
		t.Errorf("the identified served key must stay protected")
	}
}
