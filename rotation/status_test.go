package rotation_test

import (
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/store"
)

func TestTargetStatus(t *testing.T) {
	now := epoch.Add(90 * time.Minute)
	st := store.Target{Keys: []store.Key{
		{ID: "late", State: store.KeyRetiring, DeleteAfter: epoch.Add(3 * time.Hour)},
		{ID: "gone", State: store.KeyDeleted},
		{ID: "cur", State: store.KeyActive, Published: epoch},
		{ID: "soon", State: store.KeyRetiring, DeleteAfter: epoch.Add(time.Hour)},
		{ID: "pend", State: store.KeyPending},
	}}
	s := rotation.TargetStatus(st, now)
	if s.Current == nil || s.Current.ID != "cur" {
		t.Fatalf("current: got %+v, want cur", s.Current)
	}
	if got, want := s.Age, 90*time.Minute; got != want {
		t.Errorf("age: got %v, want %v", got, want)
	}
	var ids []string
	for _, k := range s.Retiring {
		ids = append(ids, k.ID)
	}
	if got, want := len(ids), 2; got != want || ids[0] != "soon" || ids[1] != "late" {
		t.Errorf("retiring: got %v, want [soon late] (the first to go first)", ids)
	}

	empty := rotation.TargetStatus(store.Target{}, now)
	if empty.Current != nil || empty.Age != 0 || empty.Retiring == nil || len(empty.Retiring) != 0 {
		t.Errorf("no keys: got %+v, want no current key and an empty retiring list", empty)
	}
	unpublished := rotation.TargetStatus(store.Target{Keys: []store.Key{{ID: "a", State: store.KeyActive}}}, now)
	if unpublished.Age != 0 {
		t.Errorf("active key with no publish time: age %v, want 0", unpublished.Age)
	}
}

func TestClassifyKeys(t *testing.T) {
	target := rotation.Target{Name: targetName, Prefix: prefix}
	st := store.Target{VaultVersion: 1, Keys: []store.Key{
		{ID: "made", Origin: store.OriginCreated, State: store.KeyActive, Fingerprint: rotation.Fingerprint(nil, "raw-made")},
		{ID: "boot", Origin: store.OriginAdopted, State: store.KeyRetiring},
		{ID: "seen", Origin: store.OriginForeign, State: store.KeyForeign},
	}}
	names := rotation.NamesOf(target, "aaaaaa")
	st.Tag = names.Tag
	listing := []rotation.Key{
		{ID: "made", Name: names.New(time.Now())},
		{ID: "boot", Name: "bootstrap"},
		{ID: "seen", Name: "a person's key"},
		{ID: "portal", Name: "made-by-a-person"},
		{ID: "lookalike", Name: prefix + "by-hand"},
		{ID: "orphan", Name: names.New(time.Now())},
		{ID: "sibling", Name: rotation.NamesOf(rotation.Target{Name: "other", Prefix: prefix}, "bbbbbb").New(time.Now())},
	}
	tests := []struct {
		id    string
		class rotation.Class
		state store.KeyState
	}{
		{"made", rotation.ClassManaged, store.KeyActive},
		{"boot", rotation.ClassAdopted, store.KeyRetiring},
		{"seen", rotation.ClassForeign, store.KeyForeign},
		{"portal", rotation.ClassForeign, ""},
		{"lookalike", rotation.ClassForeign, ""},
		{"orphan", rotation.ClassOrphan, ""},
		{"sibling", rotation.ClassForeign, ""},
	}
	classify := func(cur rotation.Current) []rotation.ClassifiedKey {
		seen := rotation.See(listing, cur, st, nil)
		classes := rotation.Classify(st, seen, names)
		var out []rotation.ClassifiedKey
		for _, k := range listing {
			c := rotation.ClassifiedKey{Key: k, Class: classes[k.ID], Served: seen.Served.May(k.ID)}
			if rec := st.Key(k.ID); rec != nil {
				c.State = rec.State
			}
			out = append(out, c)
		}
		return out
	}
	// The listing shows no raw values: the served key is told by the
	// fingerprint the state records.
	got := classify(rotation.Current{Secret: &rotation.Published{KeyID: "made", APIKey: "raw-made"}, Version: 1})
	if len(got) != len(tests) {
		t.Fatalf("got %d keys, want %d", len(got), len(tests))
	}
	for i, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			c := got[i]
			if c.Key.ID != tt.id {
				t.Fatalf("key %d: got %s, want %s (the listing's order)", i, c.Key.ID, tt.id)
			}
			if c.Class != tt.class || c.State != tt.state {
				t.Errorf("got %s/%q, want %s/%q", c.Class, c.State, tt.class, tt.state)
			}
			if want := tt.id == "made"; c.Served != want {
				t.Errorf("served: got %v, want %v", c.Served, want)
			}
		})
	}

	for _, c := range classify(rotation.Current{}) {
		if c.Served {
			t.Errorf("no served secret, yet %s is marked served", c.Key.ID)
		}
	}
}
