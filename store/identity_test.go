package store_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/codat-rotator/codat-rotator/store"
	"github.com/codat-rotator/codat-rotator/store/storetest"
)

// TestIncarnations: each process that writes the file is an
// incarnation, recorded at its first use; a reopened file knows its
// predecessors, a copy knows only those before the copy, and a file
// opened read-only records none.
func TestIncarnations(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db := storetest.MustOpenPath(t, path)
	a, err := db.Incarnation()
	if err != nil || a == "" {
		t.Fatalf("first incarnation: %q, %v", a, err)
	}
	if again, _ := db.Incarnation(); again != a {
		t.Errorf("a second call gives %q, want the same %q", again, a)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(t.TempDir(), "copy.db")
	if err := os.WriteFile(copyPath, raw, 0o600); err != nil {
		t.Fatal(err)
	}

	db = storetest.MustOpenPath(t, path)
	b, _ := db.Incarnation()
	if b == a || !db.KnownIncarnation(a) || !db.KnownIncarnation(b) {
		t.Errorf("after a restart: incarnation %q (before %q), known a %v, b %v", b, a, db.KnownIncarnation(a), db.KnownIncarnation(b))
	}
	cp := storetest.MustOpenPath(t, copyPath)
	c, _ := cp.Incarnation()
	if !cp.KnownIncarnation(a) || cp.KnownIncarnation(b) {
		t.Errorf("the copy: knows a %v (want true), b %v (want false: made after the copy)", cp.KnownIncarnation(a), cp.KnownIncarnation(b))
	}
	if db.KnownIncarnation(c) {
		t.Errorf("the original knows the copy's incarnation")
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	ro, err := store.Open(path, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if inc, err := ro.Incarnation(); inc != "" || err != nil {
		t.Errorf("read-only: incarnation %q, %v; want none", inc, err)
	}
	if len(ro.Salt()) == 0 {
		t.Errorf("no fingerprint salt")
	}
}

// TestClaims: which other targets record a key as their own, or serve
// it; the target asking is left out.
func TestClaims(t *testing.T) {
	db := storetest.MustOpen(t)
	put := func(name string, st store.Target) {
		t.Helper()
		if err := db.Update(name, func(t *store.Target) error { *t = st; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	put("a", store.Target{Keys: []store.Key{
		{ID: "k1", Origin: store.OriginCreated, State: store.KeyActive},
		{ID: "k2", Origin: store.OriginAdopted, State: store.KeyRetiring},
		{ID: "k3", Origin: store.OriginCreated, State: store.KeyDeleted},
		{ID: "p", Origin: store.OriginForeign, State: store.KeyForeign},
	}})
	put("b", store.Target{SharedKey: "k1", Keys: []store.Key{{ID: "k1", Origin: store.OriginForeign, State: store.KeyForeign}}})
	c, err := db.Claims("b", "", []string{"k1", "k2", "k3", "p", "zz"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Own["k1"] != "a" || c.Own["k2"] != "a" || c.Own["k3"] != "" || c.Own["p"] != "" || len(c.Own) != 2 {
		t.Errorf("own = %v, want k1 and k2 of a", c.Own)
	}
	if c.Serve["k1"] != "a" || len(c.Serve) != 1 {
		t.Errorf("serve = %v, want k1 by a", c.Serve)
	}
	c, _ = db.Claims("a", "", []string{"k1"})
	if c.Serve["k1"] != "b" || len(c.Own) != 0 {
		t.Errorf("asked by a: %+v, want k1 served by b's secret (its shared key), owned by none", c)
	}
	// a renamed to a2, same location: its old state is not another target.
	if err := db.Update("a", func(t *store.Target) error { t.Vault = "secret/codat/a"; return nil }); err != nil {
		t.Fatal(err)
	}
	if c, _ = db.Claims("a2", "secret/codat/a", []string{"k1", "k2"}); len(c.Own) != 0 || c.Serve["k1"] != "b" {
		t.Errorf("asked by a renamed a2: %+v, want nothing of a's", c)
	}
}

// TestKeyIndexBuiltForOlderFiles: a file from before the key index (a
// version 1 file, say) gets it at its first open for writing, and Claims
// finds what the targets recorded then.
func TestKeyIndexBuiltForOlderFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db := storetest.MustOpenPath(t, path)
	if err := db.Update("a", func(t *store.Target) error {
		t.Keys = []store.Key{{ID: "k1", Origin: store.OriginCreated, State: store.KeyActive}}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket([]byte("key-index")) }); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	ro, err := store.Open(path, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	c, err := ro.Claims("b", "", []string{"k1"})
	_ = ro.Close()
	if err != nil || c.Own["k1"] != "a" {
		t.Fatalf("read-only, no index: %+v, %v; want k1 of a (every state read)", c, err)
	}
	db = storetest.MustOpenPath(t, path)
	if c, err := db.Claims("b", "", []string{"k1"}); err != nil || c.Own["k1"] != "a" || c.Serve["k1"] != "a" {
		t.Fatalf("after the index is built: %+v, %v; want k1 of a", c, err)
	}
}

// TestRename: a target renamed in the config takes its old name's state
// and history in one move, the key index with them; a target that has
// state of its own is never overwritten, and a read-only file refuses.
func TestRename(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db := storetest.MustOpenPath(t, path)
	old := store.Target{Tag: "abc123", Vault: "secret/codat/a", VaultVersion: 3, Keys: []store.Key{
		{ID: "k1", Origin: store.OriginCreated, State: store.KeyActive, Fingerprint: "f1"},
		{ID: "k2", Origin: store.OriginAdopted, State: store.KeyRetiring},
	}, Journal: &store.Journal{RotationID: "r-1", Step: store.StepRetire}}
	if err := db.Update("a", func(t *store.Target) error { *t = old; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := db.AddHistory("a", store.Rotation{ID: "r-0"}); err != nil {
		t.Fatal(err)
	}
	// A look that failed before the rename landed leaves a fresh state.
	if err := db.Update("a2", func(t *store.Target) error { t.LastError = "x"; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := db.Rename("a", "a2"); err != nil {
		t.Fatal(err)
	}
	got, err := db.Load("a2")
	if err != nil {
		t.Fatal(err)
	}
	if got.Tag != old.Tag || len(got.Keys) != 2 || got.Key("k1").Fingerprint != "f1" || got.Journal == nil || got.Journal.RotationID != "r-1" {
		t.Errorf("a2 after the rename: %+v, want a's state", got)
	}
	if names, _ := db.Targets(); slices.Contains(names, "a") {
		t.Errorf("targets %v still hold a", names)
	}
	if h, _ := db.History("a2", 10); len(h) != 1 || h[0].ID != "r-0" {
		t.Errorf("a2's history %+v, want a's rotation r-0", h)
	}
	if c, _ := db.Claims("b", "", []string{"k1"}); c.Own["k1"] != "a2" {
		t.Errorf("the key index after the rename: %+v, want k1 owned by a2", c)
	}
	// Never over a state of its own.
	if err := db.Update("b", func(t *store.Target) error { t.Tag = "zzz999"; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := db.Rename("a2", "b"); err == nil {
		t.Errorf("rename over b's own state: nil error")
	}
	if got, _ := db.Load("a2"); got.Tag != old.Tag {
		t.Errorf("a refused rename changed a2: %+v", got)
	}
	db.Close()
	ro, err := store.Open(path, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if err := ro.Rename("a2", "a3"); !errors.Is(err, store.ErrReadOnly) {
		t.Errorf("read-only rename: %v, want ErrReadOnly", err)
	}
}
