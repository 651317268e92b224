package rotation_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/codat"
	"github.com/codat-rotator/codat-rotator/codat/emulator"
	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/store"
	"github.com/codat-rotator/codat-rotator/vault"
	"github.com/codat-rotator/codat-rotator/vault/vaulttest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	vaulttest.StopShared()
	os.Exit(code)
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func sorted(ids []string) []string {
	out := slices.Clone(ids)
	slices.Sort(out)
	return out
}

// TestFirstRunBootstraps: Vault is empty and the bootstrap key is the
// emulator's initial key. One rotation publishes the bootstrap key, then
// a new key with every field of docs/design.md#vault-layout.
func TestFirstRunBootstraps(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	if p := e.served(); p != nil {
		t.Fatalf("vault holds a secret before the first run: %v", p.Data[vault.FieldKeyID])
	}
	initial := e.initialID()

	res := e.mustRotate(rotation.Options{})
	now := e.clock.Now()

	if !res.Bootstrapped {
		t.Error("Result.Bootstrapped = false, want true")
	}
	p := e.mustServe()
	d := p.Data
	apiKey := d[vault.FieldAPIKey]
	if apiKey == "" || apiKey == e.emu.InitialKey() {
		t.Fatalf("api_key is empty or still the bootstrap key")
	}
	if got, want := d[vault.FieldHeader], "Basic "+base64.StdEncoding.EncodeToString([]byte(apiKey)); got != want {
		t.Errorf("authorization_header is not Basic + padded standard base64 of api_key")
	}
	newID := d[vault.FieldKeyID]
	if got, want := newID, res.NewKey.ID; got != want {
		t.Errorf("key_id = %q, Result.NewKey.ID = %q", got, want)
	}
	rec := e.keyRecord(newID)
	if rec.Origin != emulator.OriginAPI || rec.Deleted != nil {
		t.Errorf("the published key at codat: origin %s, deleted %v; want a live api key", rec.Origin, rec.Deleted)
	}
	checks := []struct{ field, got, want string }{
		{vault.FieldKeyName, d[vault.FieldKeyName], rec.Name},
		{vault.FieldCreatedAt, d[vault.FieldCreatedAt], rfc3339(rec.Created)},
		{vault.FieldRotatedAt, d[vault.FieldRotatedAt], rfc3339(now)},
		{vault.FieldPreviousKeyID, d[vault.FieldPreviousKeyID], initial},
		{vault.FieldPreviousExpiresAt, d[vault.FieldPreviousExpiresAt], rfc3339(now.Add(grace))},
		{vault.FieldNextRotationAt, d[vault.FieldNextRotationAt], rfc3339(now.Add(7 * 24 * time.Hour))},
		{"custom_metadata " + rotation.MetadataManagedBy, p.Custom[rotation.MetadataManagedBy], "codat-rotator"},
		{"custom_metadata " + rotation.MetadataTarget, p.Custom[rotation.MetadataTarget], targetName},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.field, c.got, c.want)
		}
	}
	if name := d[vault.FieldKeyName]; !strings.HasPrefix(name, prefix) || !e.names().Own(name) || len(name) > rotation.MaxNameLen {
		t.Errorf("key_name %q: want the daemon's shape under prefix %q, at most %d chars", name, prefix, rotation.MaxNameLen)
	}

	// Version 1 is the bootstrap key, published as-is; version 2 the new key.
	hist := e.vaultHistory()
	if len(hist) != 2 {
		t.Fatalf("vault holds %d versions, want 2 (bootstrap, rotation)", len(hist))
	}
	if hist[0][vault.FieldAPIKey] != e.emu.InitialKey() || hist[0][vault.FieldKeyID] != initial {
		t.Errorf("version 1 is not the bootstrap key with its id %s", initial)
	}

	// The published key authenticates and sees itself.
	keys, err := e.client.WithKey(codat.Secret(apiKey)).List(context.Background())
	if err != nil {
		t.Fatalf("list with the published key: %v", err)
	}
	if !slices.ContainsFunc(keys, func(k codat.Key) bool { return k.ID == newID }) {
		t.Errorf("listing with the published key does not show it")
	}

	// The bootstrap key is adopted and retiring: still at Codat in grace.
	if _, ok := e.activeKeys()[initial]; !ok {
		t.Errorf("the bootstrap key was deleted during its grace")
	}
	st := e.state()
	if k := st.Key(initial); k == nil || k.Origin != store.OriginAdopted || k.State != store.KeyRetiring || !k.DeleteAfter.Equal(now.Add(grace)) {
		t.Errorf("bootstrap key in state = %+v, want adopted, retiring, delete after %s", k, now.Add(grace))
	}
	if k := st.Key(newID); k == nil || k.Origin != store.OriginCreated || k.State != store.KeyActive {
		t.Errorf("new key in state = %+v, want created, active", k)
	}
	if len(res.Retiring) != 1 || res.Retiring[0].ID != initial {
		t.Errorf("Result.Retiring = %+v, want the bootstrap key", res.Retiring)
	}
	e.checkInvariants()
}

// TestGraceWithInjectedClock: the superseded key lives exactly its
// grace, measured on the injected clock, and after the rotation only the
// new key talks to Codat.
func TestGraceWithInjectedClock(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	initial := e.initialID()
	res := e.mustRotate(rotation.Options{})
	newID := res.NewKey.ID
	rotatedAt := e.clock.Now()

	postSeq := 0
	for _, ev := range e.emu.Events(0) {
		if ev.Op == emulator.OpCreate {
			postSeq = ev.Seq
		}
	}
	if postSeq == 0 {
		t.Fatal("no create reached the emulator")
	}

	if due, next := rotation.Due(e.state(), rotatedAt); len(due) != 0 || !next.Equal(rotatedAt.Add(grace)) {
		t.Errorf("Due right after the rotation = %d keys, next %s; want none, next %s", len(due), next, rotatedAt.Add(grace))
	}

	e.clock.Set(rotatedAt.Add(grace - time.Second))
	ids, err := e.retireDue()
	if err != nil || len(ids) != 0 {
		t.Fatalf("RetireDue 1s before grace ends = %v, %v; want nothing deleted", ids, err)
	}
	if _, ok := e.activeKeys()[initial]; !ok {
		t.Fatal("the old key is gone before its grace ended")
	}

	e.clock.Set(rotatedAt.Add(grace + time.Second))
	ids, err = e.retireDue()
	if err != nil {
		t.Fatalf("RetireDue after grace: %v", err)
	}
	if !slices.Equal(ids, []string{initial}) {
		t.Errorf("RetireDue after grace deleted %v, want [%s]", ids, initial)
	}
	rec := e.keyRecord(initial)
	if rec.Deleted == nil || rec.Deleted.Before(rotatedAt.Add(grace)) {
		t.Errorf("old key deleted at %v, want no earlier than %s (I4)", rec.Deleted, rotatedAt.Add(grace))
	}
	if k := e.stateKey(initial); k == nil || k.State != store.KeyDeleted {
		t.Errorf("old key in state = %+v, want deleted", k)
	}
	if v := e.emu.Violations(); len(v) != 0 {
		t.Errorf("violations: %+v", v)
	}
	after := e.eventsSince(postSeq)
	if len(after) == 0 {
		t.Fatal("no request after the create")
	}
	for _, ev := range after {
		if ev.KeyID != newID || ev.Status >= 300 || ev.Status == 0 {
			t.Errorf("request %d %s %s after the create: key %q, status %d; want the new key %s and success", ev.Seq, ev.Method, ev.Path, ev.KeyID, ev.Status, newID)
		}
	}
	if countOps(after, emulator.OpDelete) != 1 {
		t.Errorf("deletes after the rotation = %d, want 1", countOps(after, emulator.OpDelete))
	}
	e.checkInvariants()
}

// TestLostCreateResponse: Codat makes the key but the answer is lost.
// The daemon must find it by name, never POST again.
func TestLostCreateResponse(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	if err := e.emu.SetFaults(emulator.Faults{Create: emulator.OpFaults{LoseResponse: 1}}); err != nil {
		t.Fatal(err)
	}
	res := e.mustRotate(rotation.Options{})

	events := e.emu.Events(0)
	var posts []emulator.Event
	for _, ev := range events {
		if ev.Op == emulator.OpCreate {
			posts = append(posts, ev)
		}
	}
	if len(posts) != 1 {
		t.Fatalf("POSTs = %d, want exactly 1", len(posts))
	}
	if posts[0].Status != 0 || posts[0].Fault != "lose_response" {
		t.Errorf("the POST was answered (%d, fault %q): the fault did not apply", posts[0].Status, posts[0].Fault)
	}
	made := e.apiKeys()
	if len(made) != 1 {
		t.Fatalf("keys made through the API = %d, want 1 (no duplicate)", len(made))
	}
	if made[0].Deleted != nil {
		t.Errorf("the key made by the lost create was deleted")
	}
	if res.NewKey.ID != made[0].ID {
		t.Errorf("Result.NewKey = %s, want the key the lost create made, %s", res.NewKey.ID, made[0].ID)
	}
	if got := e.mustServe().Data[vault.FieldKeyID]; got != made[0].ID {
		t.Errorf("vault serves %s, want %s", got, made[0].ID)
	}
	if countOps(e.eventsSince(posts[0].Seq), emulator.OpList) == 0 {
		t.Error("no list after the lost create: the key was not looked up by name")
	}
	e.checkInvariants()
}

// TestVaultDownDuringPublish: Vault refuses the publish.
func TestVaultDownDuringPublish(t *testing.T) {
	t.Parallel()

	// Writes fail, reads work: Vault is known not to serve the new key,
	// so the new key is deleted with the old one.
	t.Run("writes fail", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, envConfig{})
		e.mustRotate(rotation.Options{})
		old := e.mustServe()
		e.clock.Advance(time.Hour)
		before := len(e.apiKeys())

		e.proxy.setMode(proxyFailWrites)
		_, err := e.rotate(rotation.Options{})
		if err == nil {
			t.Fatal("Rotate succeeded with vault refusing writes")
		}
		if !errors.Is(err, rotation.ErrRolledBack) {
			t.Errorf("error %v: want ErrRolledBack", err)
		}
		if _, failed := e.proxy.counts(); failed == 0 {
			t.Fatal("the proxy failed no request")
		}
		e.proxy.setMode(proxyPass)

		made := e.apiKeys()[before:]
		if len(made) == 0 {
			t.Fatal("no key was created, so the publish was never tried")
		}
		for _, k := range made {
			if k.Deleted == nil {
				t.Errorf("unpublished key %s was not deleted", k.ID)
			}
			if s := e.stateKey(k.ID); s == nil || s.State != store.KeyDeleted {
				t.Errorf("unpublished key %s in state = %+v, want deleted", k.ID, s)
			}
		}
		now := e.mustServe()
		if now.Version != old.Version || now.Data[vault.FieldKeyID] != old.Data[vault.FieldKeyID] {
			t.Errorf("vault moved from version %d (%s) to %d (%s)", old.Version, old.Data[vault.FieldKeyID], now.Version, now.Data[vault.FieldKeyID])
		}
		if err := e.authenticates(old.Data[vault.FieldAPIKey]); err != nil {
			t.Errorf("the old key no longer authenticates: %v", err)
		}
		if e.state().Journal != nil {
			t.Errorf("journal left after a rollback: %+v", e.state().Journal)
		}
		if v := e.emu.Violations(); len(v) != 0 {
			t.Errorf("violations: %+v", v)
		}
	})

	// Vault stops answering at all once the write is tried: whether it
	// holds the new key cannot be known, so the key stays (I3), and the
	// next rotation with Vault back recovers.
	t.Run("reads fail too", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, envConfig{})
		e.mustRotate(rotation.Options{})
		old := e.mustServe()
		e.clock.Advance(time.Hour)
		before := len(e.apiKeys())

		e.proxy.setMode(proxyFailAllAfterWrite)
		_, err := e.rotate(rotation.Options{})
		if err == nil {
			t.Fatal("Rotate succeeded with vault down")
		}
		if errors.Is(err, rotation.ErrRolledBack) {
			t.Errorf("error %v: rolled back although vault could not be read", err)
		}
		made := e.apiKeys()[before:]
		if len(made) != 1 {
			t.Fatalf("keys created = %d, want 1", len(made))
		}
		pending := made[0]
		if pending.Deleted != nil {
			t.Fatal("the new key was deleted although vault could not tell whether it serves it")
		}
		st := e.state()
		if st.Journal == nil || st.Journal.NewKeyID != pending.ID || st.Journal.Step != store.StepPublish {
			t.Fatalf("journal = %+v, want step publish naming %s", st.Journal, pending.ID)
		}

		e.proxy.setMode(proxyPass)
		if got := e.mustServe().Data[vault.FieldKeyID]; got != old.Data[vault.FieldKeyID] {
			t.Fatalf("vault serves %s, want the old key %s", got, old.Data[vault.FieldKeyID])
		}
		e.clock.Advance(time.Minute)
		// The failed run exhausted its budget and halted the target: an
		// operator's manual rotation is what runs next.
		res, err := e.rotate(rotation.Options{Manual: true})
		if err != nil {
			t.Fatalf("rotation with vault back: %v", err)
		}
		served := e.mustServe().Data[vault.FieldKeyID]
		if res.Recovered {
			if res.NewKey.ID != pending.ID || served != pending.ID {
				t.Errorf("recovered with key %s, vault serves %s; want the journaled key %s", res.NewKey.ID, served, pending.ID)
			}
		} else if e.keyRecord(pending.ID).Deleted == nil {
			t.Errorf("rolled back, but the journaled key %s still exists", pending.ID)
		}
		if e.state().Halted {
			t.Error("still halted after a successful manual rotation")
		}
		e.checkInvariants()
	})
}

// peakActive replays the creates and deletes after seq, starting from
// start keys, and returns the most keys held at once.
func peakActive(events []emulator.Event, start int) int {
	cur, peak := start, start
	for _, ev := range events {
		switch {
		case ev.Op == emulator.OpCreate && ev.Status == http.StatusCreated:
			cur++
		case ev.Op == emulator.OpDelete && ev.Status == http.StatusNoContent:
			cur--
		}
		peak = max(peak, cur)
	}
	return peak
}

// TestNoRoom: foreign keys fill the client. The emulator enforces a cap
// of 20 here, so that only the daemon keeps Codat's 10 (over_cap is a
// violation).
func TestNoRoom(t *testing.T) {
	t.Parallel()
	t.Run("9 foreign keys", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, envConfig{emuMaxKeys: 20})
		for i := range 9 {
			e.portal(fmt.Sprintf("portal-%d", i))
		}
		for _, opts := range []rotation.Options{{}, {Emergency: true}} {
			_, err := e.rotate(opts)
			if !errors.Is(err, rotation.ErrNoRoom) {
				t.Fatalf("Rotate(%+v) = %v, want ErrNoRoom", opts, err)
			}
			if !strings.Contains(err.Error(), "9 foreign") {
				t.Errorf("error %q does not name the 9 foreign keys", err)
			}
		}
		if n := countOps(e.emu.Events(0), emulator.OpCreate); n != 0 {
			t.Errorf("%d POSTs reached the emulator, want none", n)
		}
		if n := countOps(e.emu.Events(0), emulator.OpDelete); n != 0 {
			t.Errorf("%d DELETEs reached the emulator, want none", n)
		}
		if n := len(e.activeKeys()); n != 10 {
			t.Errorf("codat holds %d keys, want the 10 it started with", n)
		}
		if v := e.emu.Violations(); len(v) != 0 {
			t.Errorf("violations: %+v", v)
		}
	})

	t.Run("8 foreign keys", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, envConfig{emuMaxKeys: 20})
		var foreign []string
		for i := range 8 {
			foreign = append(foreign, e.portal(fmt.Sprintf("portal-%d", i)))
		}
		_, err := e.rotate(rotation.Options{})
		if !errors.Is(err, rotation.ErrNoRoom) {
			t.Fatalf("routine Rotate = %v, want ErrNoRoom (9 keys, limit 9)", err)
		}
		if !strings.Contains(err.Error(), "8 foreign") {
			t.Errorf("error %q does not name the 8 foreign keys", err)
		}
		if n := countOps(e.emu.Events(0), emulator.OpCreate); n != 0 {
			t.Fatalf("%d POSTs reached the emulator on a refused routine rotation", n)
		}

		seq := e.lastSeq()
		res, err := e.rotate(rotation.Options{Emergency: true})
		if err != nil {
			t.Fatalf("emergency Rotate: %v", err)
		}
		if peak := peakActive(e.eventsSince(seq), 9); peak != 10 {
			t.Errorf("peak keys during the emergency = %d, want 10 (the reserve slot, never more)", peak)
		}
		if got := e.mustServe().Data[vault.FieldKeyID]; got != res.NewKey.ID {
			t.Errorf("vault serves %s, want %s", got, res.NewKey.ID)
		}
		active := e.activeKeys()
		for _, id := range foreign {
			if _, ok := active[id]; !ok {
				t.Errorf("foreign key %s was deleted", id)
			}
		}
		if v := e.emu.Violations(); len(v) != 0 {
			t.Errorf("violations (over_cap among them): %+v", v)
		}
		e.checkInvariants()
	})
}

// TestEmergency: with two keys retiring within their grace and a foreign
// key, an emergency rotation deletes every other managed key right after
// the publish.
func TestEmergency(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	foreign := e.portal("ops-laptop")
	initial := e.initialID()
	k1 := e.mustRotate(rotation.Options{}).NewKey.ID
	e.clock.Advance(time.Hour)
	k2 := e.mustRotate(rotation.Options{}).NewKey.ID
	now := e.clock.Now()
	st := e.state()
	for _, id := range []string{initial, k1} {
		if k := st.Key(id); k == nil || k.State != store.KeyRetiring || !k.DeleteAfter.After(now) {
			t.Fatalf("key %s before the emergency = %+v, want retiring within grace", id, k)
		}
	}

	seq := e.lastSeq()
	res := e.mustRotate(rotation.Options{Emergency: true})
	k3 := res.NewKey.ID
	if !e.clock.Now().Equal(now) {
		t.Fatal("the clock moved")
	}

	if got, want := sorted(res.Deleted), sorted([]string{initial, k1, k2}); !slices.Equal(got, want) {
		t.Errorf("Result.Deleted = %v, want %v", got, want)
	}
	active := e.activeKeys()
	if len(active) != 2 {
		t.Errorf("codat holds %d keys, want 2 (the new key and the foreign key)", len(active))
	}
	for _, id := range []string{k3, foreign} {
		if _, ok := active[id]; !ok {
			t.Errorf("key %s is gone", id)
		}
	}
	deletes := 0
	for _, ev := range e.eventsSince(seq) {
		if ev.Op != emulator.OpDelete {
			continue
		}
		deletes++
		// Only the published new key may do the deleting: it is used
		// for Codat calls once activated, i.e. after the publish.
		if ev.KeyID != k3 || ev.Status != http.StatusNoContent {
			t.Errorf("delete %s by key %q answered %d; want by the new key %s, 204", ev.Path, ev.KeyID, ev.Status, k3)
		}
		if strings.HasSuffix(ev.Path, "/"+foreign) {
			t.Errorf("the foreign key was deleted")
		}
	}
	if deletes != 3 {
		t.Errorf("deletes = %d, want 3", deletes)
	}
	p := e.mustServe()
	if p.Data[vault.FieldKeyID] != k3 || p.Data[vault.FieldPreviousKeyID] != k2 {
		t.Errorf("vault serves %s (previous %s), want %s (previous %s)", p.Data[vault.FieldKeyID], p.Data[vault.FieldPreviousKeyID], k3, k2)
	}
	if p.Data[vault.FieldPreviousExpiresAt] != p.Data[vault.FieldRotatedAt] {
		t.Errorf("previous_expires_at = %s, want rotated_at %s (grace 0)", p.Data[vault.FieldPreviousExpiresAt], p.Data[vault.FieldRotatedAt])
	}
	e.checkInvariants()
}

// TestForeignKeyOnlyRevokedExplicitly: a Portal key survives rotations
// and retirements (I6) until an operator names it in an emergency.
func TestForeignKeyOnlyRevokedExplicitly(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	foreign := e.portal("alice-laptop")
	for range 5 {
		e.mustRotate(rotation.Options{})
		e.clock.Advance(grace + time.Hour)
		if _, err := e.retireDue(); err != nil {
			t.Fatalf("RetireDue: %v", err)
		}
	}
	if _, ok := e.activeKeys()[foreign]; !ok {
		t.Fatal("the foreign key was deleted without a revoke")
	}
	for _, ev := range e.emu.Events(0) {
		if ev.Op == emulator.OpDelete && strings.HasSuffix(ev.Path, "/"+foreign) {
			t.Errorf("a delete of the foreign key was sent: %+v", ev)
		}
	}
	if k := e.stateKey(foreign); k == nil || k.Origin != store.OriginForeign || k.State != store.KeyForeign {
		t.Errorf("foreign key in state = %+v, want foreign", k)
	}
	e.checkInvariants()

	t.Run("unknown id", func(t *testing.T) {
		seq := e.lastSeq()
		_, err := e.rotate(rotation.Options{Emergency: true, Revoke: "no-such-key"})
		if err == nil {
			t.Fatal("Rotate with --revoke of an unknown id succeeded")
		}
		if !strings.Contains(err.Error(), "no-such-key") {
			t.Errorf("error %q does not name the id", err)
		}
		after := e.eventsSince(seq)
		if n := countOps(after, emulator.OpCreate); n != 0 {
			t.Errorf("%d POSTs: the revoke was checked after the create", n)
		}
		if n := countOps(after, emulator.OpDelete); n != 0 {
			t.Errorf("%d DELETEs on a refused revoke", n)
		}
	})

	t.Run("named in an emergency", func(t *testing.T) {
		seq := e.lastSeq()
		res := e.mustRotate(rotation.Options{Emergency: true, Revoke: foreign})
		if e.keyRecord(foreign).Deleted == nil {
			t.Fatal("the revoked key still exists")
		}
		if !slices.Contains(res.Deleted, foreign) {
			t.Errorf("Result.Deleted = %v, want it to hold %s", res.Deleted, foreign)
		}
		for _, ev := range e.eventsSince(seq) {
			if ev.Op == emulator.OpDelete && strings.HasSuffix(ev.Path, "/"+foreign) && ev.KeyID != res.NewKey.ID {
				t.Errorf("the revoke was sent with key %s, before the new key %s was published", ev.KeyID, res.NewKey.ID)
			}
		}
		if got := e.mustServe().Data[vault.FieldKeyID]; got != res.NewKey.ID {
			t.Errorf("vault serves %s, want %s", got, res.NewKey.ID)
		}
		e.checkInvariants()
	})
}

// TestHaltAndResume: a rotation that exhausts its budget halts the
// target; scheduled rotations then refuse without a call; resume or a
// successful manual rotation clears it.
func TestHaltAndResume(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	e.engine.Attempts = 2
	e.mustRotate(rotation.Options{})
	e.clock.Advance(time.Hour)

	e.proxy.setMode(proxyFailWrites)
	before := len(e.apiKeys())
	_, err := e.rotate(rotation.Options{})
	if err == nil {
		t.Fatal("Rotate succeeded with vault refusing writes")
	}
	st := e.state()
	if !st.Halted || st.HaltReason == "" || !st.HaltedAt.Equal(e.clock.Now()) {
		t.Fatalf("state after the budget = halted %v, reason %q, at %s; want halted now", st.Halted, st.HaltReason, st.HaltedAt)
	}
	if got := len(e.apiKeys()) - before; got != 2 {
		t.Errorf("keys created = %d, want 2 (Attempts = 2)", got)
	}
	for _, k := range e.apiKeys()[before:] {
		if k.Deleted == nil {
			t.Errorf("key %s of a failed attempt was left at codat", k.ID)
		}
	}
	if !slices.Contains(e.sleeps.Durations(), retryBackoff) {
		t.Errorf("engine sleeps = %v, want the retry backoff %s between the attempts", e.sleeps.Durations(), retryBackoff)
	}

	seq := e.lastSeq()
	reqs, _ := e.proxy.counts()
	_, err = e.rotate(rotation.Options{})
	if !errors.Is(err, rotation.ErrHalted) {
		t.Fatalf("scheduled Rotate on a halted target = %v, want ErrHalted", err)
	}
	if n := len(e.eventsSince(seq)); n != 0 {
		t.Errorf("a halted scheduled rotation made %d codat calls", n)
	}
	if r, _ := e.proxy.counts(); r != reqs {
		t.Errorf("a halted scheduled rotation made %d vault calls", r-reqs)
	}
	if p, err := e.plan(rotation.Options{}); err != nil || !strings.Contains(p.Blocked, "halted") {
		t.Errorf("Plan of a halted target: blocked %q, %v; want it to say halted", p.Blocked, err)
	}
	if p, err := e.plan(rotation.Options{Manual: true}); err != nil || p.Blocked != "" {
		t.Errorf("Plan of a manual rotation of a halted target: blocked %q, %v; want not blocked", p.Blocked, err)
	}

	if err := e.engine.Resume(e.target); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	if st := e.state(); st.Halted || st.ConsecutiveFailures != 0 {
		t.Fatalf("after Resume: halted %v, failures %d", st.Halted, st.ConsecutiveFailures)
	}

	// Halt it again, then let a manual rotation through.
	if _, err := e.rotate(rotation.Options{}); err == nil || !e.state().Halted {
		t.Fatalf("second failing Rotate: %v, halted %v; want a halt", err, e.state().Halted)
	}
	e.proxy.setMode(proxyPass)
	res, err := e.rotate(rotation.Options{Manual: true})
	if err != nil {
		t.Fatalf("manual Rotate on a halted target: %v", err)
	}
	st = e.state()
	if st.Halted || st.LastResult != "success" {
		t.Errorf("after a manual success: halted %v, last result %q", st.Halted, st.LastResult)
	}
	if got := e.mustServe().Data[vault.FieldKeyID]; got != res.NewKey.ID {
		t.Errorf("vault serves %s, want %s", got, res.NewKey.ID)
	}
	e.checkInvariants()
}

// TestOrphans: an unknown key with the daemon's exact name shape is an
// orphan of a crash and goes (I5); a key that merely starts with the
// prefix is a person's and stays (I6).
func TestOrphans(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	e.mustRotate(rotation.Options{})
	served := e.mustServe().Data[vault.FieldAPIKey]
	orphan, err := e.client.WithKey(codat.Secret(served)).Create(context.Background(), e.names().New(e.clock.Now()))
	if err != nil {
		t.Fatalf("create the orphan: %v", err)
	}
	manual := e.portal(prefix + "manual")
	lookalike := e.portal(prefix + "20260101T000000Z-ABCDEF")
	e.clock.Advance(time.Hour)

	p, err := e.plan(rotation.Options{})
	if err != nil {
		t.Fatalf("Plan: %v", err)
	}
	if !slices.Equal(p.Orphans, []string{orphan.ID}) {
		t.Errorf("Plan.Orphans = %v, want [%s]", p.Orphans, orphan.ID)
	}

	res := e.mustRotate(rotation.Options{})
	if e.keyRecord(orphan.ID).Deleted == nil {
		t.Error("the orphan still exists")
	}
	if !slices.Contains(res.Deleted, orphan.ID) {
		t.Errorf("Result.Deleted = %v, want the orphan %s", res.Deleted, orphan.ID)
	}
	active := e.activeKeys()
	for _, id := range []string{manual, lookalike} {
		if _, ok := active[id]; !ok {
			t.Errorf("key %s (%s) was deleted", id, e.keyRecord(id).Name)
		}
		if k := e.stateKey(id); k == nil || k.Origin != store.OriginForeign {
			t.Errorf("key %s in state = %+v, want foreign", id, k)
		}
	}
	e.checkInvariants()
}

// TestVerifyFailure: the new key's verification lists all fail with 5xx.
// The faults are armed when the create has been answered, so that they
// hit the verify calls only (plan's list comes before the create).
func TestVerifyFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{codatAttempts: 1})
	e.mustRotate(rotation.Options{})
	old := e.mustServe()
	e.clock.Advance(time.Hour)
	e.engine.VerifyAttempts = 2

	before := len(e.apiKeys())
	e.capture.setAfterCreate(func() {
		if err := e.emu.SetFaults(emulator.Faults{List: emulator.OpFaults{Fail: 2, FailStatus: http.StatusServiceUnavailable}}); err != nil {
			t.Error(err)
		}
	})
	_, err := e.rotate(rotation.Options{})
	e.capture.setAfterCreate(nil)
	if !errors.Is(err, rotation.ErrRolledBack) {
		t.Fatalf("Rotate = %v, want ErrRolledBack", err)
	}
	made := e.apiKeys()[before:]
	if len(made) == 0 {
		t.Fatal("no key was created")
	}
	newIDs := map[string]bool{}
	for _, k := range made {
		newIDs[k.ID] = true
		if k.Deleted == nil {
			t.Errorf("unverified key %s was not deleted", k.ID)
		}
	}
	failed := 0
	for _, ev := range e.emu.Events(0) {
		if ev.Fault != "fail" {
			continue
		}
		failed++
		if ev.Op != emulator.OpList || !newIDs[ev.KeyID] {
			t.Errorf("fault hit %s by key %q, want only the new key's verify lists", ev.Op, ev.KeyID)
		}
	}
	if want := 2 * len(made); failed != want {
		t.Errorf("failed lists = %d, want %d (2 verify tries per key)", failed, want)
	}
	if f := e.emu.Faults(); f.List.Fail != 0 {
		t.Errorf("%d list faults left unconsumed", f.List.Fail)
	}
	if !slices.Contains(e.sleeps.Durations(), time.Second) {
		t.Errorf("engine sleeps = %v, want the verify interval between tries", e.sleeps.Durations())
	}
	now := e.mustServe()
	if now.Version != old.Version || now.Data[vault.FieldKeyID] != old.Data[vault.FieldKeyID] {
		t.Errorf("vault changed: version %d → %d, key %s → %s", old.Version, now.Version, old.Data[vault.FieldKeyID], now.Data[vault.FieldKeyID])
	}
	e.checkInvariants()
}

// TestRecoveryFromJournals crashes a rotation at each journaled step
// (the engine's goroutine panics at the chosen call, so none of its
// error paths run), then starts a new engine on the same state file and
// rotates again.
func TestRecoveryFromJournals(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		// setup runs after a first, clean rotation.
		setup func(e *env)
		at    func(call, *crasher) bool
		// step is the journal's step after the crash.
		step store.Step
		// newKey: the journal names the new key's id.
		newKey bool
		// recovered: the next rotation completes the crashed one.
		recovered bool
	}{
		{
			name: "create, before the POST",
			at:   func(c call, _ *crasher) bool { return c.svc == "codat" && c.op == "create" && !c.after },
			step: store.StepCreate,
		},
		{
			name:      "create, after the POST landed",
			at:        func(c call, _ *crasher) bool { return c.svc == "codat" && c.op == "create" && c.after },
			step:      store.StepCreate,
			recovered: true,
		},
		{
			name: "verify",
			at: func(c call, cr *crasher) bool {
				return c.svc == "codat" && c.op == "list" && !c.after && cr.created
			},
			step: store.StepVerify, newKey: true, recovered: true,
		},
		{
			name: "publish, before the write",
			at:   func(c call, _ *crasher) bool { return c.svc == "vault" && c.op == "write" && !c.after },
			step: store.StepPublish, newKey: true, recovered: true,
		},
		{
			name: "publish, after the write landed",
			at:   func(c call, _ *crasher) bool { return c.svc == "vault" && c.op == "write" && c.after },
			step: store.StepPublish, newKey: true, recovered: true,
		},
		{
			name: "make room, after the delete landed",
			setup: func(e *env) {
				// The bootstrap key is past its grace; portal keys fill the
				// routine limit, so the rotation must delete it first.
				e.clock.Advance(grace)
				for i := range 7 {
					e.portal(fmt.Sprintf("portal-%d", i))
				}
			},
			at:   func(c call, _ *crasher) bool { return c.svc == "codat" && c.op == "delete" && c.after },
			step: store.StepMakeRoom,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envConfig{})
			e.mustRotate(rotation.Options{})
			e.clock.Advance(time.Hour)
			if tc.setup != nil {
				tc.setup(e)
			}
			before := e.mustServe()
			apiBefore := len(e.apiKeys())
			seq := e.lastSeq()

			c := &crasher{at: tc.at}
			at, crashed := e.rotateUntilCrash(c, rotation.Options{})
			if !crashed {
				t.Fatalf("the rotation did not reach the crash point; calls: %+v", c.calls)
			}
			st := e.state()
			j := st.Journal
			if j == nil {
				t.Fatalf("no journal after a crash at %s", at)
			}
			if j.Step != tc.step {
				t.Errorf("journal step = %s, want %s", j.Step, tc.step)
			}
			if got := j.NewKeyID != ""; got != tc.newKey {
				t.Errorf("journal new key id = %q, want set: %v", j.NewKeyID, tc.newKey)
			}
			if tc.step == store.StepCreate && !e.names().Own(j.Name) {
				t.Errorf("journal name = %q, want the daemon's shape", j.Name)
			}
			// What the crashed run made, if anything.
			var crashedKey string
			if made := e.apiKeys()[apiBefore:]; len(made) == 1 {
				crashedKey = made[0].ID
				if tc.step == store.StepCreate && made[0].Name != j.Name {
					t.Errorf("the key made is named %q, the journal %q", made[0].Name, j.Name)
				}
			} else if len(made) > 1 {
				t.Fatalf("the crashed run made %d keys", len(made))
			}
			if tc.newKey && j.NewKeyID != crashedKey {
				t.Errorf("journal names %s, the crashed run made %q", j.NewKeyID, crashedKey)
			}

			e.clock.Advance(time.Minute)
			res, err := e.rotateWith(e.newEngine(nil), rotation.Options{})
			if err != nil {
				t.Fatalf("rotation after the crash at %s: %v", at, err)
			}
			if res.Recovered != tc.recovered {
				t.Errorf("Result.Recovered = %v, want %v", res.Recovered, tc.recovered)
			}
			served := e.mustServe()
			if tc.recovered && (res.NewKey.ID != crashedKey || served.Data[vault.FieldKeyID] != crashedKey) {
				t.Errorf("recovered with %s, vault serves %s; want the crashed run's key %s", res.NewKey.ID, served.Data[vault.FieldKeyID], crashedKey)
			}
			if served.Data[vault.FieldKeyID] == before.Data[vault.FieldKeyID] {
				t.Error("vault still serves the key from before the crash")
			}
			if served.Data[vault.FieldPreviousKeyID] != before.Data[vault.FieldKeyID] {
				t.Errorf("previous_key_id = %s, want %s", served.Data[vault.FieldPreviousKeyID], before.Data[vault.FieldKeyID])
			}
			if crashedKey != "" && !tc.recovered && e.keyRecord(crashedKey).Deleted == nil {
				t.Errorf("the crashed run's key %s was neither used nor deleted", crashedKey)
			}
			// Exactly one key made per rotation: the crash's, reused; or, when
			// the crash made none, the fresh one.
			if posts := countOps(e.eventsSince(seq), emulator.OpCreate); posts != 1 {
				t.Errorf("POSTs since the crashed rotation began = %d, want 1", posts)
			}
			e.checkInvariants()
		})
	}
}

// TestEmergencyAfterCrashIsHonoured: a routine rotation crashed at
// verify; the operator then asks for an emergency rotation with a revoke
// (a key leaked). Finishing the crashed routine rotation must not
// swallow the emergency: the revoked key goes, and no other managed key
// outlives the emergency.
func TestEmergencyAfterCrashIsHonoured(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	leaked := e.portal("leaked-laptop")
	e.mustRotate(rotation.Options{})
	e.clock.Advance(time.Hour)
	c := &crasher{at: func(c call, cr *crasher) bool { return c.svc == "codat" && c.op == "list" && !c.after && cr.created }}
	if _, crashed := e.rotateUntilCrash(c, rotation.Options{}); !crashed {
		t.Fatal("no crash")
	}
	res, err := e.rotateWith(e.newEngine(nil), rotation.Options{Emergency: true, Revoke: leaked})
	if err != nil {
		t.Fatalf("emergency rotation after the crash: %v", err)
	}
	if e.keyRecord(leaked).Deleted == nil {
		t.Errorf("the key named in --revoke still exists after a successful emergency rotation (Recovered=%v)", res.Recovered)
	}
	served := e.mustServe().Data[vault.FieldKeyID]
	for _, k := range e.state().Keys {
		if k.Origin.Managed() && k.ID != served && k.State != store.KeyDeleted {
			t.Errorf("managed key %s is %s (delete after %s) after an emergency; want deleted", k.ID, k.State, k.DeleteAfter)
		}
	}
	e.checkInvariants()
}

// TestSecretsNeverLeak runs a rotation through its success, failure and
// recovery paths, then scans the logs (JSON at debug), every error and
// result the engine returned, and the raw bytes of the state file for
// every raw key ever issued and its Authorization header (I7).
func TestSecretsNeverLeak(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	foreign := e.portal("bob-laptop")
	if err := e.emu.SetFaults(emulator.Faults{Create: emulator.OpFaults{LoseResponse: 1}}); err != nil {
		t.Fatal(err)
	}
	e.mustRotate(rotation.Options{}) // bootstrap, lost create
	e.clock.Advance(time.Hour)

	e.proxy.setMode(proxyFailWrites) // rollback, halt
	if _, err := e.rotate(rotation.Options{}); err == nil {
		t.Fatal("Rotate succeeded with vault refusing writes")
	}
	if _, err := e.rotate(rotation.Options{}); !errors.Is(err, rotation.ErrHalted) {
		t.Fatalf("Rotate on a halted target = %v, want ErrHalted", err)
	}
	e.proxy.setMode(proxyFailAllAfterWrite) // journal kept
	if _, err := e.rotate(rotation.Options{Manual: true}); err == nil {
		t.Fatal("Rotate succeeded with vault down")
	}
	e.proxy.setMode(proxyPass)
	e.mustRotate(rotation.Options{Manual: true}) // recovery
	if _, err := e.plan(rotation.Options{Emergency: true, Revoke: foreign}); err != nil {
		t.Fatalf("Plan: %v", err)
	}
	if _, err := e.rotate(rotation.Options{Revoke: "nope"}); err == nil {
		t.Fatal("revoke of an unknown key succeeded")
	}
	e.mustRotate(rotation.Options{Emergency: true, Revoke: foreign})
	e.clock.Advance(2 * grace)
	e.mustRotate(rotation.Options{})
	e.clock.Advance(2 * grace)
	if _, err := e.retireDue(); err != nil {
		t.Fatalf("RetireDue: %v", err)
	}
	e.checkInvariants()

	n := e.checkNoSecrets(t)
	if n < 8 {
		t.Errorf("the scan looked for %d raw keys, want at least 8 (initial, portal, every key made)", n)
	}
	logs := e.logs.String()
	// The scan reads the right logs: they hold debug lines and key ids.
	if !strings.Contains(logs, `"level":"DEBUG"`) {
		t.Error("the captured logs hold no debug line")
	}
	if id := e.mustServe().Data[vault.FieldKeyID]; !strings.Contains(logs, id) {
		t.Errorf("the captured logs never mention the served key id %s", id)
	}
	if !strings.Contains(e.saidText(), "halted") {
		t.Error("the recorded errors miss the halt")
	}
	if raw, err := os.ReadFile(e.db.Path()); err != nil || !bytes.Contains(raw, []byte(e.initialID())) {
		t.Errorf("the state file does not hold the key ids it should (%v)", err)
	}
}

// snapshot is everything a dry run must leave as it found.
type snapshot struct {
	file    []byte
	version int
	active  int
	seq     int
}

func (e *env) snapshot() snapshot {
	e.t.Helper()
	file, err := os.ReadFile(e.db.Path())
	if err != nil {
		e.t.Fatal(err)
	}
	return snapshot{file: file, version: e.vaultVersion(), active: len(e.activeKeys()), seq: e.lastSeq()}
}

func (e *env) assertUnchanged(before snapshot) {
	e.t.Helper()
	after := e.snapshot()
	if !bytes.Equal(before.file, after.file) {
		e.t.Error("Plan changed the state file")
	}
	if before.version != after.version {
		e.t.Errorf("Plan changed vault: version %d → %d", before.version, after.version)
	}
	if before.active != after.active {
		e.t.Errorf("Plan changed codat: %d → %d keys", before.active, after.active)
	}
	for _, ev := range e.eventsSince(before.seq) {
		if ev.Op != emulator.OpList {
			e.t.Errorf("Plan sent %s %s", ev.Method, ev.Path)
		}
	}
}

func keyIDs(keys []store.Key) []string {
	var out []string
	for _, k := range keys {
		out = append(out, k.ID)
	}
	return out
}

// TestPlanChangesNothing: a dry run reports what a rotation would do and
// touches neither the state file, nor Vault, nor Codat.
func TestPlanChangesNothing(t *testing.T) {
	t.Parallel()

	t.Run("bootstrap", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, envConfig{})
		e.portal("portal-a")
		e.portal("portal-b")
		initial := e.initialID()
		now := e.clock.Now()
		before := e.snapshot()
		p, err := e.plan(rotation.Options{})
		if err != nil {
			t.Fatalf("Plan: %v", err)
		}
		e.assertUnchanged(before)
		if e.served() != nil {
			t.Fatal("Plan published the bootstrap key")
		}
		if !p.Bootstrap || p.ServedKeyID != initial || p.Blocked != "" || len(p.MakeRoom) != 0 || len(p.Orphans) != 0 {
			t.Errorf("Plan = bootstrap %v, served %s, blocked %q, make room %v, orphans %v; want bootstrap of %s, nothing else",
				p.Bootstrap, p.ServedKeyID, p.Blocked, keyIDs(p.MakeRoom), p.Orphans, initial)
		}
		if p.CodatKeys != 3 || p.Limit != 9 {
			t.Errorf("Plan codat keys %d, limit %d; want 3, 9", p.CodatKeys, p.Limit)
		}
		if p.Foreign != 2 {
			t.Errorf("Plan.Foreign = %d, want 2 (the portal keys at codat)", p.Foreign)
		}
		if len(p.Retire) != 1 || p.Retire[0].ID != initial || !p.Retire[0].DeleteAfter.Equal(now.Add(grace)) {
			t.Errorf("Plan.Retire = %+v, want the bootstrap key at %s", p.Retire, now.Add(grace))
		}
		res := e.mustRotate(rotation.Options{})
		// The tag the first rotation gave the target is the one the dry
		// run showed.
		if !e.names().Own(strings.Replace(p.NewKeyName, "xxxxxx", "abcdef", 1)) {
			t.Errorf("Plan.NewKeyName = %q, not the daemon's shape (tag %q)", p.NewKeyName, e.names().Tag)
		}
		if !res.Bootstrapped || !slices.Equal(keyIDs(res.Retiring), keyIDs(p.Retire)) {
			t.Errorf("the rotation bootstrapped %v and retired %v; the plan said %v", res.Bootstrapped, keyIDs(res.Retiring), keyIDs(p.Retire))
		}
	})

	t.Run("make room and retire", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, envConfig{})
		initial := e.initialID()
		k1 := e.mustRotate(rotation.Options{}).NewKey.ID
		now := e.clock.Advance(grace + time.Hour)
		for i := range 7 {
			e.portal(fmt.Sprintf("portal-%d", i))
		}
		before := e.snapshot()
		p, err := e.plan(rotation.Options{})
		if err != nil {
			t.Fatalf("Plan: %v", err)
		}
		e.assertUnchanged(before)
		if p.Bootstrap || p.ServedKeyID != k1 || p.Blocked != "" {
			t.Errorf("Plan = bootstrap %v, served %s, blocked %q; want served %s", p.Bootstrap, p.ServedKeyID, p.Blocked, k1)
		}
		if p.CodatKeys != 9 || p.Limit != 9 {
			t.Errorf("Plan codat keys %d, limit %d; want 9, 9", p.CodatKeys, p.Limit)
		}
		if p.Foreign != 7 {
			t.Errorf("Plan.Foreign = %d, want 7 (the portal keys at codat)", p.Foreign)
		}
		if !slices.Equal(keyIDs(p.MakeRoom), []string{initial}) {
			t.Errorf("Plan.MakeRoom = %v, want the bootstrap key past its grace [%s]", keyIDs(p.MakeRoom), initial)
		}
		if len(p.Retire) != 1 || p.Retire[0].ID != k1 || !p.Retire[0].DeleteAfter.Equal(now.Add(grace)) {
			t.Errorf("Plan.Retire = %+v, want %s at %s", p.Retire, k1, now.Add(grace))
		}

		res := e.mustRotate(rotation.Options{})
		if !slices.Contains(res.Deleted, initial) {
			t.Errorf("the rotation deleted %v; the plan said it would make room with %s", res.Deleted, initial)
		}
		if !slices.Equal(keyIDs(res.Retiring), keyIDs(p.Retire)) || !res.Retiring[0].DeleteAfter.Equal(p.Retire[0].DeleteAfter) {
			t.Errorf("the rotation retires %+v; the plan said %+v", res.Retiring, p.Retire)
		}
		e.checkInvariants()
	})

	t.Run("blocked", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, envConfig{})
		for i := range 9 {
			e.portal(fmt.Sprintf("portal-%d", i))
		}
		before := e.snapshot()
		p, err := e.plan(rotation.Options{})
		if err != nil {
			t.Fatalf("Plan: %v", err)
		}
		e.assertUnchanged(before)
		if !strings.Contains(p.Blocked, "no room") {
			t.Errorf("Plan.Blocked = %q, want no room", p.Blocked)
		}
		if p.Foreign != 9 || !strings.Contains(p.Blocked, "9 foreign") {
			t.Errorf("Plan.Foreign = %d, blocked %q; want 9 foreign", p.Foreign, p.Blocked)
		}
		if e.served() != nil {
			t.Error("Plan published the bootstrap key")
		}
	})
}
