package rotation_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/codat/emulator"
	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/secret"
	"github.com/codat-rotator/codat-rotator/store"
	"github.com/codat-rotator/codat-rotator/vault"
)

// Operators change Vault behind the daemon's back. These scenarios are
// the ones the chaos model generates at random (chaos_test.go, the
// operator steps); here each is spelled out once.

// An operator rolls Vault back by hand to an older key, without key_id.
// The retire pass must recognise the served key by its raw value and
// keep it (I3), as the rotation's plan does.
func TestHandWrittenSecretKeepsItsKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	e.mustRotate(rotation.Options{}) // bootstrap, then a new key; the initial key retires
	initial := e.initialID()
	if k := e.stateKey(initial); k == nil || k.State != store.KeyRetiring {
		t.Fatalf("the initial key is %+v, want retiring", k)
	}
	_, err := e.root.KVv2(e.mount).Put(context.Background(), secretPath, map[string]any{vault.FieldAPIKey: e.emu.InitialKey()})
	if err != nil {
		t.Fatalf("operator's vault kv put: %v", err)
	}
	e.clock.Advance(grace + time.Minute)
	deleted, err := e.retireDue()
	if err != nil {
		t.Fatalf("retire: %v", err)
	}
	for _, id := range deleted {
		if id == initial {
			t.Fatalf("I3: the retire pass deleted %s, the key vault serves (a secret without key_id)", initial)
		}
	}
	if err := e.authenticates(e.emu.InitialKey()); err != nil {
		t.Fatalf("I3: the served key no longer authenticates: %v", err)
	}
	// The next rotation adopts the served key again and retires it with
	// grace like any other.
	res := e.mustRotate(rotation.Options{})
	found := false
	for _, k := range res.Retiring {
		found = found || k.ID == initial
	}
	if !found {
		t.Errorf("the rotation after the rollback does not retire %s: %+v", initial, res.Retiring)
	}
	e.checkInvariants()
}

// The publish lands, the process dies before the read-back, an operator
// publishes another key, and the daemon restarts against a Codat whose
// listing omits raw keys. The journaled key was served until the
// operator's write: it gets its full grace (I4), raw value or not.
func TestServedKeyKeepsGraceAfterCrashWithoutRawKeys(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{listOmitsRawKeys: true})
	e.mustRotate(rotation.Options{})
	served := e.mustServe()
	first, firstRaw := served.Data[vault.FieldKeyID], served.Data[vault.FieldAPIKey]
	c := &crasher{at: func(c call, _ *crasher) bool { return c.svc == "vault" && c.op == "write" && c.after }}
	if _, crashed := e.rotateUntilCrash(c, rotation.Options{}); !crashed {
		t.Fatal("the rotation did not crash after the publish")
	}
	j := e.state().Journal
	if j == nil || j.Step != store.StepPublish || j.NewKeyID == "" {
		t.Fatalf("journal = %+v, want step publish with the new key", j)
	}
	journaled := j.NewKeyID
	if got := e.mustServe().Data[vault.FieldKeyID]; got != journaled {
		t.Fatalf("vault serves %s, want the journaled key %s (the write landed)", got, journaled)
	}
	// The operator publishes the previous key again, with its key_id.
	_, err := e.root.KVv2(e.mount).Put(context.Background(), secretPath, map[string]any{
		vault.FieldAPIKey: firstRaw, vault.FieldKeyID: first,
	})
	if err != nil {
		t.Fatalf("operator's vault kv put: %v", err)
	}
	seq := e.lastSeq()
	e.mustRotate(rotation.Options{})
	for _, ev := range e.eventsSince(seq) {
		if ev.Op == emulator.OpDelete && strings.HasSuffix(ev.Path, "/"+journaled) {
			t.Fatalf("I4: recovery deleted %s at once; vault served it until the operator's write", journaled)
		}
	}
	k := e.stateKey(journaled)
	if k == nil || k.State != store.KeyRetiring || k.DeleteAfter.Before(e.clock.Now().Add(grace)) {
		t.Fatalf("the journaled key is %+v, want retiring with a full grace (%s)", k, grace)
	}
	e.clock.Advance(grace + time.Minute)
	if _, err := e.retireDue(); err != nil {
		t.Fatalf("retire after grace: %v", err)
	}
	if _, ok := e.activeKeys()[journaled]; ok {
		t.Errorf("the journaled key %s outlived its grace", journaled)
	}
	e.checkInvariants()
}

// Two hand writes the daemon never sees in between: a rollback to a
// retiring key long past its delete_after, then another key. Vault
// served the rolled-back key until the second write, so it must live a
// full grace from when the daemon notices (I4), found by the secret's
// version having moved past the one the daemon last saw.
func TestUnseenVaultWritesRegraceRetiringKeys(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	e.mustRotate(rotation.Options{})
	initial := e.initialID()
	e.clock.Advance(3 * grace) // the initial key is long past its delete_after
	kv := e.root.KVv2(e.mount)
	if _, err := kv.Put(context.Background(), secretPath, map[string]any{vault.FieldAPIKey: e.emu.InitialKey()}); err != nil {
		t.Fatalf("operator's rollback: %v", err)
	}
	portal, raw, err := e.emu.AddPortalKey("a person's key")
	if err != nil {
		t.Fatal(err)
	}
	e.raw.add(raw)
	if _, err := kv.Put(context.Background(), secretPath, map[string]any{vault.FieldAPIKey: raw, vault.FieldKeyID: portal}); err != nil {
		t.Fatalf("operator's second write: %v", err)
	}
	noticed := e.clock.Now()
	seq := e.lastSeq()
	e.mustRotate(rotation.Options{})
	for _, ev := range e.eventsSince(seq) {
		if ev.Op == emulator.OpDelete && strings.HasSuffix(ev.Path, "/"+initial) {
			t.Fatalf("I4: %s was deleted at once; vault served it until the operator's second write", initial)
		}
	}
	if k := e.stateKey(initial); k == nil || k.State != store.KeyRetiring || k.DeleteAfter.Before(noticed.Add(grace)) {
		t.Fatalf("the rolled-back key is %+v, want retiring until at least %s", k, noticed.Add(grace))
	}
	e.checkInvariants()
}

// An emergency with --revoke dies before its revoke; an operator then
// publishes the very key it was to revoke. Deleting it would break every
// consumer (I3): the revoke is reported, not done, and the journal does
// not hold the target for ever.
func TestRevokeOfAKeyPublishedAgainIsRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	e.mustRotate(rotation.Options{})
	leaked, raw, err := e.emu.AddPortalKey("leaked")
	if err != nil {
		t.Fatal(err)
	}
	e.raw.add(raw)
	c := &crasher{at: func(c call, _ *crasher) bool { return c.svc == "codat" && c.op == "delete" && !c.after }}
	if _, crashed := e.rotateUntilCrash(c, rotation.Options{Emergency: true, Revoke: leaked, Manual: true}); !crashed {
		t.Fatal("the emergency did not crash before its delete")
	}
	if _, err := e.root.KVv2(e.mount).Put(context.Background(), secretPath, map[string]any{vault.FieldAPIKey: raw, vault.FieldKeyID: leaked}); err != nil {
		t.Fatalf("operator's vault kv put: %v", err)
	}
	_, err = e.rotate(rotation.Options{Manual: true})
	if !errors.Is(err, rotation.ErrRevokeServed) {
		t.Fatalf("rotate after the operator published the key to revoke: %v, want ErrRevokeServed", err)
	}
	if _, ok := e.activeKeys()[leaked]; !ok {
		t.Fatalf("I3: %s, the key vault serves, was deleted", leaked)
	}
	if j := e.state().Journal; j != nil {
		t.Fatalf("the journal still holds the target: %+v", *j)
	}
	e.mustRotate(rotation.Options{Manual: true})
	e.checkInvariants()
}

// TestRestoredEmergencyJournalKeepsLaterKeysGrace: an emergency dies
// right after its publish and a backup of the state file is taken then;
// a rerun finishes the emergency, a routine rotation publishes a later
// key, and an operator rolls the secret back to the emergency's key.
// The backup is restored and the target taken over (the takeover reads
// the versions: the later key retires a full grace from the rollback).
// The restored journal's recovery finds Vault serving its key, but Vault
// moved past its publish: the later key was superseded by the rollback,
// not by the emergency, and must keep its grace (I4). Found by TestChaos
// (seed 51000528).
func TestRestoredEmergencyJournalKeepsLaterKeysGrace(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	ctx := context.Background()
	e.mustRotate(rotation.Options{})
	e.clock.Advance(time.Hour)
	c := &crasher{at: func(c call, _ *crasher) bool { return c.svc == "vault" && c.op == "write" && c.after }}
	if _, crashed := e.rotateUntilCrash(c, rotation.Options{Emergency: true, Manual: true}); !crashed {
		t.Fatal("no crash")
	}
	backup := copyStateFile(t, e.db)
	emergencyID, emergencyRaw := e.servedAt(secretPath)
	e.engine = e.newEngine(nil)
	e.mustRotate(rotation.Options{Emergency: true, Manual: true}) // the rerun finishes it
	e.clock.Advance(time.Hour)
	e.mustRotate(rotation.Options{})
	laterID, _ := e.servedAt(secretPath)
	e.clock.Advance(time.Hour)
	e.put(secretPath, map[string]any{vault.FieldAPIKey: emergencyRaw, vault.FieldKeyID: emergencyID,
		vault.FieldHeader: secret.AuthorizationHeader(secret.Value(emergencyRaw)).Reveal()})
	rolledBack := e.clock.Now()

	e.db = restoreStateFile(t, e.db, backup)
	e.engine = e.newEngine(nil)
	if _, err := e.engine.Takeover(ctx, e.target); err != nil {
		t.Fatalf("takeover after the restore: %v", err)
	}
	if j := e.state().Journal; j == nil || !j.Emergency {
		t.Fatalf("the restored state holds journal %+v, want the emergency's", j)
	}
	e.mustRotate(rotation.Options{})
	if !e.alive(laterID) {
		t.Fatalf("I4: key %s, served until the rollback at %s, was deleted at once by the restored emergency's recovery", laterID, rfc3339(rolledBack))
	}
	if k := e.stateKey(laterID); k == nil || k.State != store.KeyRetiring || k.DeleteAfter.Before(rolledBack.Add(grace)) {
		t.Errorf("key %s is %+v, want retiring until at least %s", laterID, k, rfc3339(rolledBack.Add(grace)))
	}
	e.checkInvariants()
}
