package rotation_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/codat"
	"github.com/codat-rotator/codat-rotator/codat/emulator"
	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/secret"
	"github.com/codat-rotator/codat-rotator/store"
	"github.com/codat-rotator/codat-rotator/vault"
)

// Identity (docs/design.md#key-names, #served-by-value, #shared-keys):
// no other target, daemon or hand edit makes the daemon delete a key
// that Vault serves for someone. Each test is a situation that deleted
// a served key before random tags, fingerprints and the claims check.

// other returns t as another target: its own name and path.
func other(t rotation.Target, name, path string) rotation.Target {
	t.Name, t.Vault.Path = name, path
	return t
}

// servedAt returns the id and raw key the secret at path serves.
func (e *env) servedAt(path string) (id, raw string) {
	e.t.Helper()
	s, err := e.root.KVv2(e.mount).Get(context.Background(), path)
	if err != nil {
		e.t.Fatalf("read %s: %v", path, err)
	}
	id, _ = s.Data[vault.FieldKeyID].(string)
	raw, _ = s.Data[vault.FieldAPIKey].(string)
	return id, raw
}

// patchKey changes the secret's api_key (and its header) by hand to
// raw, as `vault kv patch` does, and its key_id to keyID when one is
// given; the other fields stay.
func (e *env) patchKey(raw, keyID string) {
	e.t.Helper()
	data := map[string]any{vault.FieldAPIKey: raw, vault.FieldHeader: secret.AuthorizationHeader(secret.Value(raw)).Reveal()}
	if keyID != "" {
		data[vault.FieldKeyID] = keyID
	}
	if _, err := e.root.KVv2(e.mount).Patch(context.Background(), secretPath, data); err != nil {
		e.t.Fatalf("vault kv patch %s: %v", secretPath, err)
	}
}

// put writes data at path by hand, as `vault kv put` does.
func (e *env) put(path string, data map[string]any) {
	e.t.Helper()
	if _, err := e.root.KVv2(e.mount).Put(context.Background(), path, data); err != nil {
		e.t.Fatalf("vault kv put %s: %v", path, err)
	}
}

// alive reports whether Codat still holds id.
func (e *env) alive(id string) bool {
	_, ok := e.activeKeys()[id]
	return ok
}

// portalRaw adds a Portal key and returns its id and raw value.
func (e *env) portalRaw(name string) (string, string) {
	e.t.Helper()
	id, raw, err := e.emu.AddPortalKey(name)
	if err != nil {
		e.t.Fatalf("AddPortalKey: %v", err)
	}
	e.raw.add(raw)
	return id, raw
}

// TestSameTargetNameInTwoStateFiles: two deployments (two state files,
// two Vault paths) both call their target "prod" on one Codat client.
// Neither recognises the other's keys as its own: the second one's
// rotations never delete the first one's served key as an orphan.
func TestSameTargetNameInTwoStateFiles(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	ctx := context.Background()
	e.mustRotate(rotation.Options{})
	e.mustRotate(rotation.Options{})
	aServed := e.mustServe().Data[vault.FieldKeyID]

	b, dbB := e.otherInstance()
	bootID, bootRaw := e.portalRaw("given to the second deployment")
	tb := other(e.target, targetName, "codat/prod-b") // the same name
	tb.Bootstrap = func() (codat.Secret, error) { return codat.Secret(bootRaw), nil }
	for i := range 3 {
		if _, err := b.Rotate(ctx, tb, rotation.Options{}); err != nil {
			t.Fatalf("second deployment, rotation %d: %v", i+1, err)
		}
		if !e.alive(aServed) {
			t.Fatalf("the second deployment deleted the first one's served key %s at its rotation %d", aServed, i+1)
		}
		e.mustRotate(rotation.Options{})
		aServed = e.mustServe().Data[vault.FieldKeyID]
		e.clock.Advance(grace + time.Minute)
	}
	bServed, _ := e.servedAt("codat/prod-b")
	if !e.alive(bServed) || !e.alive(aServed) {
		t.Errorf("a served key is gone: first %s alive %v, second %s alive %v", aServed, e.alive(aServed), bServed, e.alive(bServed))
	}
	stA, stB := e.state(), mustLoad(t, dbB, targetName)
	if stA.Tag == "" || stA.Tag == stB.Tag {
		t.Errorf("tags: first %q, second %q; want two different tags", stA.Tag, stB.Tag)
	}
	for _, k := range stB.Keys {
		if k.Origin.Managed() && k.ID != bootID && !strings.Contains(k.Name, stB.Tag) {
			t.Errorf("the second deployment manages key %s (%q), not of its own tag", k.ID, k.Name)
		}
	}
	// Each deleted only keys of its own.
	for _, k := range e.emu.Keys() {
		if k.Deleted != nil && k.Origin == emulator.OriginAPI {
			if rec := stB.Key(k.ID); strings.Contains(k.Name, stA.Tag) && rec != nil && rec.State == store.KeyDeleted && rec.Origin.Managed() {
				t.Errorf("the second deployment deleted the first one's key %s", k.ID)
			}
		}
	}
	e.checkInvariants()
}

// TestKeySharedBetweenTargets: a second target of the same daemon given
// the first one's served key, as its bootstrap key or by a copy of the
// first one's secret, refuses it with an error naming both; the first
// target's key is never deleted while the second serves it.
func TestKeySharedBetweenTargets(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	ctx := context.Background()
	e.mustRotate(rotation.Options{})
	aID, aRaw := e.servedAt(secretPath)

	// Bootstrapped with the key the first target serves.
	tb := other(e.target, "billing", "codat/billing")
	tb.Bootstrap = func() (codat.Secret, error) { return codat.Secret(aRaw), nil }
	seq, version := e.lastSeq(), e.vaultVersion()
	_, err := e.engine.Rotate(ctx, tb, rotation.Options{Manual: true})
	e.record(nil, err)
	if !errors.Is(err, rotation.ErrKeyShared) {
		t.Fatalf("bootstrap with the first target's key: %v, want ErrKeyShared", err)
	}
	for _, want := range []string{"billing", targetName, aID} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not name %q: %v", want, err)
		}
	}
	if n := countOps(e.eventsSince(seq), emulator.OpCreate) + countOps(e.eventsSince(seq), emulator.OpDelete); n != 0 {
		t.Errorf("the refused target changed codat (%d creates and deletes)", n)
	}
	if p := e.served(); p.Version != version {
		t.Errorf("vault version %d after the refusal, want %d", p.Version, version)
	}
	if p, err := e.engine.Plan(ctx, tb, rotation.Options{}); err != nil || !strings.Contains(p.Blocked, targetName) {
		t.Errorf("dry run: blocked %q, %v; want it blocked naming %s", p.Blocked, err, targetName)
	}

	// Seeded by a copy of the first target's secret.
	e.put("codat/billing", map[string]any{vault.FieldAPIKey: aRaw, vault.FieldKeyID: aID,
		vault.FieldHeader: secret.AuthorizationHeader(secret.Value(aRaw)).Reveal()})
	if _, err := e.engine.Rotate(ctx, tb, rotation.Options{Manual: true}); !errors.Is(err, rotation.ErrKeyShared) {
		t.Fatalf("a copy of the first target's secret: %v, want ErrKeyShared", err)
	}
	// The first target rotates on; its old key falls due but stays
	// while the second target's secret serves it.
	e.mustRotate(rotation.Options{})
	e.clock.Advance(grace + time.Minute)
	ids, err := e.retireDue()
	if !e.alive(aID) {
		t.Fatalf("the first target deleted key %s, which the second target's secret serves (retire: %v %v)", aID, ids, err)
	}
	if err == nil || !strings.Contains(err.Error(), "billing") {
		t.Errorf("retire pass: %v; want it to say the key is kept for billing", err)
	}
	// The operator gives the second target a key of its own: the first
	// target's old key goes at its next pass.
	ownID, ownRaw := e.portalRaw("billing's own")
	e.put("codat/billing", map[string]any{vault.FieldAPIKey: ownRaw, vault.FieldKeyID: ownID})
	if _, err := e.engine.Rotate(ctx, tb, rotation.Options{Manual: true}); err != nil {
		t.Fatalf("the second target with a key of its own: %v", err)
	}
	// billing's consumers held the key until now: a full grace first.
	if _, err := e.retireDue(); err != nil || !e.alive(aID) {
		t.Errorf("right after the fix: retire %v, key %s alive %v; want it kept a grace", err, aID, e.alive(aID))
	}
	e.clock.Advance(grace + time.Minute)
	if _, err := e.retireDue(); err != nil || e.alive(aID) {
		t.Errorf("a grace after the fix: retire %v, key %s alive %v; want it deleted", err, aID, e.alive(aID))
	}
	e.checkInvariants()
}

// TestHandPatchedSecretBlindListing: Codat's listing shows no raw keys,
// and an operator rolls the secret back by hand to an older key's value
// without changing key_id. The key whose value Vault serves is told by
// its fingerprint and kept, and the doubt is shown.
func TestHandPatchedSecretBlindListing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{listOmitsRawKeys: true})
	e.mustRotate(rotation.Options{})
	oldID, oldRaw := e.servedAt(secretPath)
	e.mustRotate(rotation.Options{})
	newID, _ := e.servedAt(secretPath)
	// vault kv patch api_key=<older key> authorization_header=<its header>
	e.patchKey(oldRaw, "")
	e.clock.Advance(grace + time.Minute)
	ids, err := e.retireDue()
	if !e.alive(oldID) {
		t.Fatalf("the key whose value vault serves (%s) was deleted by the retire pass: %v %v", oldID, ids, err)
	}
	if !e.alive(newID) {
		t.Fatalf("the key the secret's key_id names (%s) was deleted: %v %v", newID, ids, err)
	}
	st := e.state()
	if st.ServedDoubt == "" || !strings.Contains(st.ServedDoubt, oldID) || !strings.Contains(st.ServedDoubt, newID) {
		t.Errorf("served doubt %q, want it to name %s and %s", st.ServedDoubt, oldID, newID)
	}
	if !strings.Contains(e.logs.String(), "the key vault serves is in doubt") {
		t.Errorf("no log line about the doubt")
	}
	// A rotation publishes a key the daemon knows: the doubt ends, and
	// both keys retire with a full grace.
	e.mustRotate(rotation.Options{})
	if st := e.state(); st.ServedDoubt != "" {
		t.Errorf("doubt after a rotation: %q", st.ServedDoubt)
	}
	if !e.alive(oldID) {
		t.Errorf("the rotation deleted the key vault served until it published: %s", oldID)
	}
	e.clock.Advance(grace + time.Minute)
	if _, err := e.retireDue(); err != nil {
		t.Fatalf("retire after the grace: %v", err)
	}
	if e.alive(oldID) || e.alive(newID) {
		t.Errorf("after a full grace: %s alive %v, %s alive %v; want both deleted", oldID, e.alive(oldID), newID, e.alive(newID))
	}
	e.checkInvariants()
}

// TestWrongKeyIDFromTheError: a listing without raw keys; an operator
// rolls the secret back by hand to an older key of the daemon's, writing
// api_key alone, then adds a key_id, the wrong one (the current key's).
// The key whose value Vault serves is told by its fingerprint and kept
// past its grace; so is the key the key_id names.
func TestWrongKeyIDFromTheError(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{listOmitsRawKeys: true})
	e.mustRotate(rotation.Options{})
	oldID, oldRaw := e.servedAt(secretPath)
	e.mustRotate(rotation.Options{})
	curID, _ := e.servedAt(secretPath)
	e.put(secretPath, map[string]any{vault.FieldAPIKey: oldRaw})
	if p, err := e.plan(rotation.Options{}); err != nil || p.ServedKeyID != oldID {
		t.Fatalf("dry run of a secret without key_id: served %q, %v; want %s, told by its fingerprint", p.ServedKeyID, err, oldID)
	}
	e.put(secretPath, map[string]any{vault.FieldAPIKey: oldRaw, vault.FieldKeyID: curID})
	e.clock.Advance(grace + time.Minute)
	ids, err := e.retireDue()
	if !e.alive(oldID) {
		t.Fatalf("the key vault serves by value (%s) was deleted: %v %v", oldID, ids, err)
	}
	if !e.alive(curID) {
		t.Fatalf("the key the key_id names (%s) was deleted: %v %v", curID, ids, err)
	}
	if st := e.state(); !strings.Contains(st.ServedDoubt, curID) {
		t.Errorf("served doubt %q, want it to name the key_id %s", st.ServedDoubt, curID)
	}
	e.mustRotate(rotation.Options{Manual: true})
	if !e.alive(oldID) {
		t.Errorf("the rotation deleted %s, served until it published", oldID)
	}
	e.checkInvariants()
}

// TestRenamedTargetKeepsItsKeys: the target is renamed in the config,
// same Vault location: its keys stay its own (never foreign) and retire
// as they would have.
func TestRenamedTargetKeepsItsKeys(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	e.mustRotate(rotation.Options{})
	e.mustRotate(rotation.Options{})
	before := e.state()
	e.target.Name = "production" // same path
	e.mustRotate(rotation.Options{})
	st := mustLoad(t, e.db, "production")
	if st.Tag != before.Tag {
		t.Errorf("the renamed target's tag %q, want its old one %q from the secret", st.Tag, before.Tag)
	}
	for _, k := range before.Keys {
		if k.State == store.KeyDeleted {
			continue
		}
		rec := st.Key(k.ID)
		if rec == nil || !rec.Origin.Managed() {
			t.Errorf("key %s (%s before the rename) is %+v after it, want it managed", k.ID, k.State, rec)
		}
	}
	e.clock.Advance(grace + time.Minute)
	if _, err := e.engine.RetireDue(context.Background(), e.target); err != nil {
		t.Fatal(err)
	}
	for _, k := range before.Keys {
		if k.State != store.KeyDeleted && e.alive(k.ID) {
			t.Errorf("key %s of the old name outlived its grace after the rename", k.ID)
		}
	}
}

// TestStateRestoredFromBeforeTheFirstRun: a backup taken before the
// first rotation is restored after two: the state rebuilds from the
// secret's versions, and the bootstrap key still goes after its grace.
func TestStateRestoredFromBeforeTheFirstRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	backup := copyStateFile(t, e.db)
	boot := e.initialID()
	e.mustRotate(rotation.Options{})
	e.mustRotate(rotation.Options{})
	e.db = restoreStateFile(t, e.db, backup)
	e.engine = e.newEngine(nil)
	e.mustRotate(rotation.Options{})
	e.clock.Advance(grace + time.Minute)
	if _, err := e.retireDue(); err != nil {
		t.Fatalf("retire: %v", err)
	}
	if e.alive(boot) {
		t.Errorf("the bootstrap key %s was never deleted after the restore", boot)
	}
	e.checkInvariants()
}

// copyStateFile copies the state file's bytes, as a backup does (no
// write is under way: every update has committed).
func copyStateFile(t *testing.T, db *store.DB) []byte {
	t.Helper()
	b, err := os.ReadFile(db.Path())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// restoreStateFile puts a backup back in place of db's file and opens it
// as a new process would.
func restoreStateFile(t *testing.T, db *store.DB, backup []byte) *store.DB {
	t.Helper()
	path := db.Path()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, backup, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = out.Close() })
	return out
}

// TestMetadataDeleteRestartsVersions: `vault kv metadata delete`, then
// two hand writes bring the version number back to the one the state
// saw. The writes are seen (by Vault's write times): a key served in
// between retires with a full grace, not at its old deadline.
func TestMetadataDeleteRestartsVersions(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	boot, bootRaw := e.initialID(), e.emu.InitialKey()
	e.mustRotate(rotation.Options{}) // v1 the bootstrap key, v2 the new one
	curID, curRaw := e.servedAt(secretPath)
	if e.vaultVersion() != 2 {
		t.Fatalf("version %d, want 2 (bootstrap, one rotation)", e.vaultVersion())
	}
	e.clock.Advance(grace - time.Hour)
	if err := e.root.KVv2(e.mount).DeleteMetadata(context.Background(), secretPath); err != nil {
		t.Fatal(err)
	}
	e.put(secretPath, map[string]any{vault.FieldAPIKey: bootRaw, vault.FieldKeyID: boot}) // v1: served again
	e.put(secretPath, map[string]any{vault.FieldAPIKey: curRaw, vault.FieldKeyID: curID}) // v2, as the state saw
	e.clock.Advance(2 * time.Hour)                                                        // past the bootstrap key's old deadline
	if _, err := e.retireDue(); err != nil && !errors.Is(err, rotation.ErrRetireHeld) {
		t.Fatalf("retire: %v", err)
	}
	if !e.alive(boot) {
		t.Fatalf("the bootstrap key, served again an hour ago, went at its old deadline")
	}
	e.clock.Advance(grace)
	if _, err := e.retireDue(); err != nil {
		t.Fatalf("retire after a full grace: %v", err)
	}
	if e.alive(boot) {
		t.Errorf("the bootstrap key outlived a full grace after the hand writes")
	}
}

// TestSharedClientStrictestReserve: two targets on one client, with
// reserve_slots 1 and 0: the strictest applies to both, so routine
// rotations of either leave the reserve and an emergency finds room.
func TestSharedClientStrictestReserve(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{emuMaxKeys: 20})
	ctx := context.Background()
	e.target.ReserveSlots = 1
	e.target.Grace = time.Hour
	e.mustRotate(rotation.Options{})
	_, bRaw := e.portalRaw("b's first key")
	tb := other(e.target, "b", "codat/b")
	tb.ReserveSlots = 0
	tb.Bootstrap = func() (codat.Secret, error) { return codat.Secret(bRaw), nil }
	// Fill the client with routine rotations of b (their old keys in
	// grace): they must stop at max_keys - 1.
	for range 12 {
		if _, err := e.engine.Rotate(ctx, tb, rotation.Options{}); err != nil {
			if !errors.Is(err, rotation.ErrNoRoom) {
				t.Fatalf("b: %v", err)
			}
			break
		}
	}
	if n := len(e.activeKeys()); n > 9 {
		t.Fatalf("routine rotations of b filled the client to %d keys: the reserve of a is gone", n)
	}
	if _, err := e.rotate(rotation.Options{Emergency: true, Manual: true}); err != nil {
		t.Fatalf("the emergency of a found no room: %v", err)
	}
	capped, stricter := e.engine.Strictest(tb)
	if !stricter || capped.ReserveSlots != 1 {
		t.Errorf("Strictest(b) = %+v, %v; want reserve 1 from a", capped, stricter)
	}
}

// TestBlockedDaemonForgetsItsKey: after a takeover, the old daemon's
// looks present to Codat no key it has not just read from Vault: its
// remembered key, deleted by the new owner, is never sent again.
func TestBlockedDaemonForgetsItsKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	ctx := context.Background()
	e.mustRotate(rotation.Options{})
	b, _ := e.otherInstance()
	if _, err := b.Takeover(ctx, e.target); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Rotate(ctx, e.target, rotation.Options{Emergency: true, Manual: true}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := e.rotate(rotation.Options{}); !errors.Is(err, rotation.ErrNotOwner) {
			t.Fatalf("old owner, look %d: %v, want ErrNotOwner", i+1, err)
		}
	}
	used := 0
	for _, v := range e.emu.Violations() {
		if v.Kind == emulator.ViolationDeletedKeyUsed {
			used++
		}
	}
	if used > 1 {
		t.Errorf("the blocked daemon sent its deleted key to codat %d times, want at most once (the look that found it blocked)", used)
	}
}

// TestStateFileCopyIsBlocked: a copy of the state file runs beside the
// original (a backup restored on another host while the first runs).
// Once one of them publishes, the other is blocked, not rotating behind
// its back.
func TestStateFileCopyIsBlocked(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	e.mustRotate(rotation.Options{})
	// The copy: the same bytes, opened by another process.
	dir := t.TempDir()
	path := filepath.Join(dir, "copy.db")
	b, err := os.ReadFile(e.db.Path())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cp, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Close() })
	copyEng := e.newEngine(nil)
	inc, err := cp.Incarnation()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := cp.Identity()
	copyEng.Store, copyEng.Salt = cp, cp.Salt()
	copyEng.Owner = rotation.Owner{ID: id, Host: "host-copy", Incarnation: inc, Known: cp.KnownIncarnation}
	if _, err := copyEng.Rotate(context.Background(), e.target, rotation.Options{}); err != nil {
		t.Fatalf("the copy's first rotation: %v", err)
	}
	// The original now meets a claim by a process it never was.
	_, err = e.rotate(rotation.Options{})
	if !errors.Is(err, rotation.ErrNotOwner) || !strings.Contains(err.Error(), "copy of this state file") {
		t.Fatalf("the original after the copy published: %v, want it blocked as a copy", err)
	}
	if st := e.state(); st.Blocked == "" {
		t.Errorf("the original is not recorded blocked")
	}
}

// TestOwnerUnrecordedIsVisible: a Vault policy without patch on the
// metadata path: rotations succeed, and the target says that the
// protection against a second daemon is off until the claim is written.
func TestOwnerUnrecordedIsVisible(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	e.proxy.setMode(proxyFailMetadata)
	e.mustRotate(rotation.Options{})
	if st := e.state(); st.Unclaimed == "" {
		t.Fatalf("the owner claim failed, yet the state does not say so")
	}
	e.proxy.setMode(proxyPass)
	e.mustRotate(rotation.Options{})
	if st := e.state(); st.Unclaimed != "" {
		t.Errorf("the claim is recorded now, yet the state says %q", st.Unclaimed)
	}
}

// TestPatchUnderWrongLabelKeepsPortalKey: a listing without raw keys;
// an operator patches api_key back to an older key of the daemon's and
// sets key_id to a Portal key's id. The version served the older key
// (its fingerprint says so), never the Portal key: the Portal key is
// not taken on, and no rotation, not even an emergency, deletes it.
func TestPatchUnderWrongLabelKeepsPortalKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{listOmitsRawKeys: true})
	e.mustRotate(rotation.Options{})
	_, oldRaw := e.servedAt(secretPath)
	e.mustRotate(rotation.Options{})
	portalID, _ := e.portalRaw("someone's portal key")
	e.patchKey(oldRaw, portalID)
	e.mustRotate(rotation.Options{})
	st := e.state()
	if rec := st.Key(portalID); rec == nil || rec.Origin.Managed() {
		t.Errorf("the portal key only a wrong key_id named is recorded as %+v, want foreign", rec)
	}
	e.mustRotate(rotation.Options{Emergency: true, Manual: true})
	e.clock.Advance(grace + time.Minute)
	if _, err := e.retireDue(); err != nil {
		t.Fatalf("retire: %v", err)
	}
	if !e.alive(portalID) {
		t.Fatalf("the portal key %s, never served, was deleted", portalID)
	}
	e.checkInvariants()
}

// TestRetireWaitsForAnotherTargetsGrace: a's key was copied into b's
// path and b served it; once b has a key of its own again, b's
// consumers may still hold a's key for a grace. a's retire pass waits
// for that grace (the key's delete-after moves out to it) instead of
// failing on every pass, then deletes the key.
func TestRetireWaitsForAnotherTargetsGrace(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	ctx := context.Background()
	e.mustRotate(rotation.Options{})
	_, bOwnRaw := e.portalRaw("b's own")
	tb := other(e.target, "b", "codat/b")
	tb.Bootstrap = func() (codat.Secret, error) { return codat.Secret(bOwnRaw), nil }
	if _, err := e.engine.Rotate(ctx, tb, rotation.Options{Manual: true}); err != nil {
		t.Fatalf("b: %v", err)
	}
	bID, bRaw := e.servedAt("codat/b")
	aID, aRaw := e.servedAt(secretPath)
	e.put("codat/b", map[string]any{vault.FieldAPIKey: aRaw, vault.FieldKeyID: aID})
	// a's emergency: its old key is refused while b's secret serves it.
	if _, err := e.rotate(rotation.Options{Emergency: true, Manual: true}); err == nil || !strings.Contains(err.Error(), "b") {
		t.Fatalf("a's emergency with its key copied into b: %v, want the retire refused naming b", err)
	}
	if !e.alive(aID) {
		t.Fatalf("a deleted key %s, which b's secret serves", aID)
	}
	// The operator gives b its key back; b looks and keeps a's key a grace.
	e.put("codat/b", map[string]any{vault.FieldAPIKey: bRaw, vault.FieldKeyID: bID})
	if _, err := e.engine.Rotate(ctx, tb, rotation.Options{Manual: true}); err != nil {
		t.Fatalf("b with its own key again: %v", err)
	}
	until := e.clock.Now().Add(grace)
	if _, err := e.retireDue(); err != nil {
		t.Fatalf("a's retire pass while b keeps the key: %v, want a wait, not a failure", err)
	}
	if !e.alive(aID) {
		t.Fatalf("a deleted key %s within b's grace", aID)
	}
	st := e.state()
	if rec := st.Key(aID); rec == nil || rec.State != store.KeyRetiring || rec.DeleteAfter.Before(until) {
		t.Errorf("a's record of %s is %+v, want retiring until b's grace ends (%v)", aID, rec, until)
	}
	e.clock.Advance(grace + time.Minute)
	if _, err := e.retireDue(); err != nil {
		t.Fatalf("a's retire pass after b's grace: %v", err)
	}
	if e.alive(aID) {
		t.Errorf("key %s still alive a grace after b stopped serving it", aID)
	}
	e.checkInvariants()
}

// TestTakeoverAfterTwoHandPatches: an operator patches api_key back to
// an older key, then (later) forward again; both patches keep the
// previous_key_id the daemon wrote, which names that older key. A
// takeover that rebuilds from the versions must count the older key's
// grace from the second patch, not from the daemon's old record.
func TestTakeoverAfterTwoHandPatches(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	e.clock.Set(time.Now().UTC())
	ctx := context.Background()
	e.mustRotate(rotation.Options{})
	oldID, oldRaw := e.servedAt(secretPath)
	e.clock.Advance(time.Hour)
	e.mustRotate(rotation.Options{})
	_, curRaw := e.servedAt(secretPath)
	patch := func(raw string) {
		e.patchKey(raw, "")
	}
	e.clock.Advance(2 * grace)
	patch(oldRaw) // the older key is served again...
	e.clock.Advance(time.Hour)
	patch(curRaw) // ...until now
	supersededAt := e.clock.Now()

	lost, db := e.otherInstance()
	if _, err := lost.Takeover(ctx, e.target); err != nil {
		t.Fatalf("takeover: %v", err)
	}
	st, _ := db.Load(targetName)
	k := st.Key(oldID)
	if k == nil || k.State != store.KeyRetiring || k.DeleteAfter.Before(supersededAt.Add(grace)) {
		t.Fatalf("key %s after takeover: %+v; vault served it until %s, so it must live until %s", oldID, k, supersededAt, supersededAt.Add(grace))
	}
}

// forgetPrints leaves the state as a takeover with a listing that shows
// no raw keys leaves it: no key's fingerprint is known.
func (e *env) forgetPrints() {
	e.t.Helper()
	err := e.db.Update(targetName, func(st *store.Target) error {
		for i := range st.Keys {
			st.Keys[i].Fingerprint = ""
		}
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

// TestWrongLabelWithoutPrintsKeepsPortalKey: no fingerprint is known (a
// takeover with a blind listing), and an operator patches api_key back to
// an older key of the target's under a Portal key's key_id. The label
// alone names the Portal key while the target's own keys may be the
// value: the Portal key is never taken on, so the emergency that follows
// leaves it alone (I6).
func TestWrongLabelWithoutPrintsKeepsPortalKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{listOmitsRawKeys: true})
	e.mustRotate(rotation.Options{})
	_, oldRaw := e.servedAt(secretPath)
	e.mustRotate(rotation.Options{})
	e.forgetPrints()
	portalID, _ := e.portalRaw("someone's portal key")
	e.patchKey(oldRaw, portalID)
	e.mustRotate(rotation.Options{Emergency: true, Manual: true})
	if !e.alive(portalID) {
		t.Fatalf("the portal key %s, named only by a wrong key_id, was deleted", portalID)
	}
	st := e.state()
	if rec := st.Key(portalID); rec == nil || rec.Origin.Managed() {
		t.Errorf("the portal key is recorded as %+v, want foreign", rec)
	}
	e.checkInvariants()
}

// TestFreshStateWrongLabelKeepsPortalKey: the secret's metadata is
// deleted and its key written back by hand, then api_key is patched back
// to an older key of the target's under a Portal key's key_id (a name
// with the target's prefix, not its shape). A daemon on a new state
// file, with a listing without raw keys, meets it: the earlier version
// names a key the target takes on, which may be the value, so the label
// is no hand seed of a new target's. The Portal key stays foreign, and
// the emergency that follows leaves it (I6; chaos seed 51000334).
func TestFreshStateWrongLabelKeepsPortalKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{listOmitsRawKeys: true})
	ctx := context.Background()
	e.mustRotate(rotation.Options{})
	_, oldRaw := e.servedAt(secretPath)
	e.mustRotate(rotation.Options{})
	curID, curRaw := e.servedAt(secretPath)
	portalID, _ := e.portalRaw(prefix + "manual-1")
	kv := e.root.KVv2(e.mount)
	if err := kv.DeleteMetadata(ctx, secretPath); err != nil {
		t.Fatal(err)
	}
	e.put(secretPath, map[string]any{vault.FieldAPIKey: curRaw, vault.FieldKeyID: curID})
	if _, err := kv.Patch(ctx, secretPath, map[string]any{
		vault.FieldAPIKey: oldRaw, vault.FieldKeyID: portalID,
		vault.FieldHeader: secret.AuthorizationHeader(secret.Value(oldRaw)).Reveal(),
	}); err != nil {
		t.Fatal(err)
	}
	moved, db := e.otherInstance()
	if _, err := moved.Rotate(ctx, e.target, rotation.Options{Emergency: true, Manual: true}); err != nil {
		t.Fatalf("emergency on the new state file: %v", err)
	}
	if !e.alive(portalID) {
		t.Fatalf("the portal key %s, named only by a wrong key_id, was deleted", portalID)
	}
	st, err := db.Load(targetName)
	if err != nil {
		t.Fatal(err)
	}
	if rec := st.Key(portalID); rec == nil || rec.Origin.Managed() {
		t.Errorf("the portal key is recorded as %+v, want foreign", rec)
	}
}

// TestTakeoverWrongLabelInHistoryKeepsPortalKey: with a listing without
// raw keys and no fingerprint known, an operator patches api_key back to
// an older key under a Portal key's key_id; the patch keeps the key_name
// of the daemon's version it patched. The next rotations leave the
// Portal key foreign. A takeover that reads that version later finds the
// label contradicted by the version's own key_name: the Portal key was
// never served, is not taken on, and the new owner's emergency leaves it
// (I6; chaos seed 51004078).
func TestTakeoverWrongLabelInHistoryKeepsPortalKey(t *testing.T) {
	t.Parallel()
	// After one rotation the current version names the label's key as
	// previous_key_id unless the publish leaves it out; after two, only
	// an older version names it.
	for _, rotations := range []int{1, 2} {
		t.Run(fmt.Sprintf("rotations=%d", rotations), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envConfig{listOmitsRawKeys: true})
			ctx := context.Background()
			e.mustRotate(rotation.Options{})
			_, oldRaw := e.servedAt(secretPath)
			e.mustRotate(rotation.Options{})
			e.forgetPrints()
			portalID, _ := e.portalRaw(prefix + "manual-2")
			e.patchKey(oldRaw, portalID)
			for range rotations {
				e.mustRotate(rotation.Options{})
			}
			if prev := e.mustServe().Data[vault.FieldPreviousKeyID]; prev == portalID {
				t.Errorf("the publish names the portal key %s, kept as another's, as its previous key", portalID)
			}
			other, db := e.otherInstance()
			if _, err := other.Takeover(ctx, e.target); err != nil {
				t.Fatalf("takeover: %v", err)
			}
			st, err := db.Load(targetName)
			if err != nil {
				t.Fatal(err)
			}
			if rec := st.Key(portalID); rec == nil || rec.Origin.Managed() {
				t.Errorf("after the takeover the portal key is recorded as %+v, want foreign", rec)
			}
			if _, err := other.Rotate(ctx, e.target, rotation.Options{Emergency: true, Manual: true}); err != nil {
				t.Fatalf("emergency after the takeover: %v", err)
			}
			if !e.alive(portalID) {
				t.Fatalf("the portal key %s, named only by a wrong key_id in an earlier version, was deleted", portalID)
			}
		})
	}
}

// TestRetireWithServedUnknownSaysHow: the secret's api_key matches no
// key whose value is known and it has no key_id: the retire pass keeps
// every key that may be served and fails with ErrServedUnknown, whose
// message tells the operator to add the key_id (not only that keys were
// held).
func TestRetireWithServedUnknownSaysHow(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{listOmitsRawKeys: true})
	e.mustRotate(rotation.Options{})
	e.mustRotate(rotation.Options{})
	e.forgetPrints()
	_, raw := e.portalRaw("published by hand")
	e.put(secretPath, map[string]any{vault.FieldAPIKey: raw})
	e.clock.Advance(grace + time.Minute)
	before := e.activeKeys()
	_, err := e.retireDue()
	if !errors.Is(err, rotation.ErrServedUnknown) || !strings.Contains(err.Error(), "key_id") {
		t.Fatalf("retire with the served key unknown: %v, want ErrServedUnknown saying to add key_id", err)
	}
	for id := range before {
		if !e.alive(id) {
			t.Errorf("key %s, which may be the one served, was deleted", id)
		}
	}
}

// TestRecoveryAtRetireLearnsWhatVaultServes: a crash left an emergency
// at its revoke (the new key active), and an operator published another
// key by hand since. The recovery finishes the revoke, and the state
// learns the key Vault serves now: the published key is active, the
// rotation's key superseded.
func TestRecoveryAtRetireLearnsWhatVaultServes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	e.mustRotate(rotation.Options{})
	leakedID, _ := e.portalRaw("leaked")
	newID, _ := e.servedAt(secretPath)
	now := e.clock.Now()
	if err := e.db.Update(targetName, func(st *store.Target) error {
		st.Journal = &store.Journal{RotationID: "r-crashed", Step: store.StepRetire, Started: now, Updated: now,
			Emergency: true, Revoke: leakedID, NewKeyID: newID}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	pubID, pubRaw := e.portalRaw("published by hand")
	e.put(secretPath, map[string]any{vault.FieldAPIKey: pubRaw, vault.FieldKeyID: pubID})
	e.mustRotate(rotation.Options{Manual: true})
	if e.alive(leakedID) {
		t.Errorf("the revoke was not finished: %s is alive", leakedID)
	}
	st := e.state()
	if st.Journal != nil {
		t.Errorf("journal left: %+v", st.Journal)
	}
	if rec := st.Key(pubID); rec == nil || rec.State != store.KeyActive {
		t.Errorf("the key vault serves is recorded as %+v, want active", rec)
	}
	if rec := st.Key(newID); rec == nil || rec.State != store.KeyRetiring {
		t.Errorf("the rotation's key, no longer served, is %+v, want retiring", rec)
	}
	e.checkInvariants()
}

// readOnlyStore is the state file as status or a dry run opens it.
type readOnlyStore struct{ *store.DB }

func (readOnlyStore) Rename(string, string) error { return store.ErrReadOnly }

// TestRenameMovesTheState: a target renamed in the config (same Vault
// location) takes its old name's state whole when the process learns the
// config (Know: at start and at each reload), keys, fingerprints and
// timers, which the secret's versions could give back only in part (no
// fingerprint with a listing that shows no raw keys, no key served only
// in a version Vault pruned). A read-only process (a dry run, status)
// reads the old state in its place.
func TestRenameMovesTheState(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{listOmitsRawKeys: true})
	ctx := context.Background()
	e.mustRotate(rotation.Options{})
	initial := e.initialID()
	first := e.state()
	if rec := first.Key(initial); rec == nil || rec.State != store.KeyRetiring {
		t.Fatalf("the bootstrap key after the first rotation: %+v, want retiring", rec)
	}
	renamed := e.target
	renamed.Name = "production"

	ro := e.newEngine(nil)
	ro.Store = readOnlyStore{e.db}
	if err := ro.Know(renamed); err != nil {
		t.Fatal(err)
	}
	p, err := ro.Plan(ctx, renamed, rotation.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Foreign != 0 {
		t.Errorf("the dry run of the renamed target counts %d foreign keys, want 0 (its old state's keys)", p.Foreign)
	}

	e.engine = e.newEngine(nil)
	if err := e.engine.Know(renamed); err != nil {
		t.Fatal(err)
	}
	if old := mustLoad(t, e.db, targetName); !old.Fresh() {
		t.Errorf("the old name still has state after the rename: %+v", old)
	}
	st := mustLoad(t, e.db, renamed.Name)
	if rec := st.Key(initial); rec == nil || !rec.Origin.Managed() || rec.Fingerprint == "" {
		t.Errorf("the bootstrap key after the rename: %+v, want managed, with its fingerprint", rec)
	}
	e.target = renamed
	e.clock.Advance(grace + time.Minute)
	if _, err := e.engine.RetireDue(ctx, renamed); err != nil {
		t.Fatal(err)
	}
	if e.alive(initial) {
		t.Errorf("the bootstrap key outlived its grace after the rename")
	}
}

// TestRecoveryAfterPublishLearnsKeysMadeSince: a crash right after the
// publish left the journal, and Codat holds a key of the target's own
// shape that the state never recorded (made by a run a restored backup
// does not know). The recovery that finishes the rotation brings the
// state in line with its look first, as a plan does: the key is recorded
// and retires with a full grace (Vault moved past the state, so it may
// have been served), instead of staying unknown.
func TestRecoveryAfterPublishLearnsKeysMadeSince(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	e.mustRotate(rotation.Options{})
	c := &crasher{at: func(c call, _ *crasher) bool { return c.svc == "vault" && c.op == "write" && c.after }}
	if _, crashed := e.rotateUntilCrash(c, rotation.Options{}); !crashed {
		t.Fatal("no crash after the publish")
	}
	unknownID, _ := e.portalRaw(e.names().Example(e.clock.Now()))
	e.mustRotate(rotation.Options{Manual: true})
	st := e.state()
	rec := st.Key(unknownID)
	if rec == nil || !rec.Origin.Managed() || rec.State != store.KeyRetiring || rec.DeleteAfter.Before(e.clock.Now().Add(grace)) {
		t.Fatalf("the key of the target's shape after the recovery: %+v, want retiring a full grace from now", rec)
	}
	if !e.alive(unknownID) {
		t.Fatalf("the key %s, which a run the state never saw may have published, was deleted at once", unknownID)
	}
	e.clock.Advance(grace + time.Minute)
	if _, err := e.retireDue(); err != nil {
		t.Fatal(err)
	}
	if e.alive(unknownID) {
		t.Errorf("the key %s outlived its grace", unknownID)
	}
	e.checkInvariants()
}

// TestMovedStateReadsAnUnknownTargetsSecret: a's secret was copied into
// b's path (same Codat client), and b never published since, so b's
// secret names no owner. The daemon moves to a new state file; the
// operator takes over a (the only target another state file owns),
// so the new state knows nothing of b: no key recorded, none listed,
// hence no sign that b shares a's client. a's emergency must still not
// delete the key b's secret serves (I3). Found by TestChaos (seed
// 51003254: migrate, then a sibling's emergency).
func TestMovedStateReadsAnUnknownTargetsSecret(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	ctx := context.Background()
	e.mustRotate(rotation.Options{})
	aID, aRaw := e.servedAt(secretPath)
	tb := other(e.target, "b", "codat/b")
	e.put("codat/b", map[string]any{vault.FieldAPIKey: aRaw, vault.FieldKeyID: aID,
		vault.FieldHeader: secret.AuthorizationHeader(secret.Value(aRaw)).Reveal()})

	moved, db := e.otherInstance()
	if err := moved.Know(e.target, tb); err != nil {
		t.Fatal(err)
	}
	if _, err := moved.Takeover(ctx, e.target); err != nil {
		t.Fatalf("takeover of %s: %v", targetName, err)
	}
	if st := mustLoad(t, db, "b"); !st.Fresh() {
		t.Fatalf("b has state in the new file: %+v", st)
	}
	res, err := moved.Rotate(ctx, e.target, rotation.Options{Emergency: true, Manual: true})
	e.record(res, err)
	if !e.alive(aID) {
		t.Fatalf("I3: a's emergency deleted key %s, which b's secret serves (rotate: %v)", aID, err)
	}
	if err == nil || !strings.Contains(err.Error(), "the secret of target b serves it") {
		t.Errorf("a's emergency: %v; want its retire refused, naming b", err)
	}
}

// TestUnplacedTargetSharesTheStrictestReserve: b keeps one slot in
// reserve, a none, on one Codat client. The daemon moves to a new state
// file and only a is taken over: the new file knows nothing of b. a's
// first look reads b's secret (once, with every other target whose
// client is not known), finds it serves a key a's listing holds, and so
// applies b's reserve: a's routine rotations stop at max_keys - 1.
func TestUnplacedTargetSharesTheStrictestReserve(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{emuMaxKeys: 20})
	ctx := context.Background()
	e.target.ReserveSlots = 0
	e.target.Grace = time.Hour
	e.mustRotate(rotation.Options{})
	_, bRaw := e.portalRaw("b's first key")
	tb := other(e.target, "b", "codat/b")
	tb.ReserveSlots = 1
	tb.Bootstrap = func() (codat.Secret, error) { return codat.Secret(bRaw), nil }
	if _, err := e.engine.Rotate(ctx, tb, rotation.Options{Manual: true}); err != nil {
		t.Fatalf("b: %v", err)
	}
	moved, _ := e.otherInstance()
	if err := moved.Know(e.target, tb); err != nil {
		t.Fatal(err)
	}
	if _, err := moved.Takeover(ctx, e.target); err != nil {
		t.Fatalf("takeover of a: %v", err)
	}
	for range 12 {
		if _, err := moved.Rotate(ctx, e.target, rotation.Options{}); err != nil {
			if !errors.Is(err, rotation.ErrNoRoom) {
				t.Fatalf("a: %v", err)
			}
			break
		}
	}
	if n := len(e.activeKeys()); n > 9 {
		t.Fatalf("routine rotations of a filled the client to %d keys: b's reserve is gone", n)
	}
	if capped, stricter := moved.Strictest(e.target); !stricter || capped.ReserveSlots != 1 {
		t.Errorf("Strictest(a) = %+v, %v; want reserve 1 from b", capped, stricter)
	}
}

// TestOperatorPublishAfterLostPrintsIsTakenOn: no fingerprint is known
// (a takeover with a blind listing), and an operator publishes a Portal
// key whole with its key_id, as a served key in doubt asks (`vault kv
// put api_key=… key_id=…` over the daemon's version: no key_name). That
// label is the operator's answer, not a patch under a wrong key_id: the
// key is taken on, and retires after the next rotation's grace.
func TestOperatorPublishAfterLostPrintsIsTakenOn(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{listOmitsRawKeys: true})
	e.mustRotate(rotation.Options{})
	e.mustRotate(rotation.Options{})
	e.forgetPrints()
	portalID, portalRaw := e.portalRaw(prefix + "manual-1")
	e.put(secretPath, map[string]any{vault.FieldAPIKey: portalRaw, vault.FieldKeyID: portalID})
	e.mustRotate(rotation.Options{})
	st := e.state()
	if rec := st.Key(portalID); rec == nil || !rec.Origin.Managed() || rec.State != store.KeyRetiring {
		t.Fatalf("the key the operator published whole is recorded as %+v, want taken on and retiring", rec)
	}
	e.clock.Advance(grace + time.Minute)
	if _, err := e.retireDue(); err != nil {
		t.Fatal(err)
	}
	if e.alive(portalID) {
		t.Errorf("the key the operator published, superseded a grace ago, is still alive")
	}
	e.checkInvariants()
}

// TestTakeBackKnowsTheNewTag: the secret's metadata was deleted, and a
// daemon on another state file took the target on under a new tag (no
// tag left to read back). Taken back by the first state file, which
// keeps its own older tag, the target still knows keys in the tag the
// metadata now records as its own: a crash's leftover in that shape is
// its orphan, never left foreign (I5).
func TestTakeBackKnowsTheNewTag(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	ctx := context.Background()
	e.mustRotate(rotation.Options{})
	tagA := e.state().Tag
	id, raw := e.servedAt(secretPath)
	if err := e.root.KVv2(e.mount).DeleteMetadata(ctx, secretPath); err != nil {
		t.Fatal(err)
	}
	e.put(secretPath, map[string]any{vault.FieldAPIKey: raw, vault.FieldKeyID: id})
	moved, db := e.otherInstance()
	if _, err := moved.Rotate(ctx, e.target, rotation.Options{Manual: true}); err != nil {
		t.Fatalf("the other state file's rotation: %v", err)
	}
	tagB := mustLoad(t, db, targetName).Tag
	if tagB == "" || tagB == tagA {
		t.Fatalf("the other state file's tag %q, want a new one (first: %q)", tagB, tagA)
	}
	orphanID, _ := e.portalRaw(rotation.Names{Prefix: e.target.Prefix, Tag: tagB}.New(e.clock.Now()))
	if _, err := e.engine.Takeover(ctx, e.target); err != nil {
		t.Fatalf("take back: %v", err)
	}
	e.mustRotate(rotation.Options{Manual: true})
	st := e.state()
	if rec := st.Key(orphanID); e.alive(orphanID) && (rec == nil || !rec.Origin.Managed()) {
		t.Errorf("a key in the shape of the tag the metadata records is %+v and alive, want it the target's (an orphan, deleted)", rec)
	}
	e.checkInvariants()
}

// TestRecoveryAfterMetadataDeleteOnTheJournalsVersion: a crash right
// before the publish left the journal at Vault's version v. Then the
// metadata was deleted (versions restart at 1) and hand writes brought
// Vault back to version v, serving another key. The version number
// alone says nothing moved; the time Vault wrote it does. The recovery
// does not publish over those writes: the key Vault served meanwhile is
// recorded and keeps a full grace.
func TestRecoveryAfterMetadataDeleteOnTheJournalsVersion(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	ctx := context.Background()
	e.mustRotate(rotation.Options{})
	c := &crasher{at: func(c call, _ *crasher) bool { return c.svc == "vault" && c.op == "write" && !c.after }}
	if _, crashed := e.rotateUntilCrash(c, rotation.Options{}); !crashed {
		t.Fatal("no crash before the publish")
	}
	v := e.state().Journal.VaultVersion
	if err := e.root.KVv2(e.mount).DeleteMetadata(ctx, secretPath); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Minute)
	handID, handRaw := e.portalRaw("published by hand")
	for range v {
		e.put(secretPath, map[string]any{vault.FieldAPIKey: handRaw, vault.FieldKeyID: handID})
	}
	if got := e.vaultVersion(); got != v {
		t.Fatalf("vault at version %d, want the journal's %d", got, v)
	}
	e.mustRotate(rotation.Options{Manual: true})
	st := e.state()
	if rec := st.Key(handID); rec == nil || !rec.Origin.Managed() || rec.State != store.KeyRetiring || rec.DeleteAfter.Before(e.clock.Now().Add(grace)) {
		t.Errorf("the key vault served since the crash is %+v, want taken on and retiring a full grace from now", rec)
	}
	e.checkInvariants()
}
