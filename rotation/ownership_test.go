package rotation_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/codat"
	"github.com/codat-rotator/codat-rotator/codat/emulator"
	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/store"
	"github.com/codat-rotator/codat-rotator/store/storetest"
)

// otherInstance is a second copy of the daemon: the same target and
// Vault, its own state file (so its own identity) and host.
func (e *env) otherInstance() (*rotation.Engine, *store.DB) {
	e.t.Helper()
	db := storetest.MustOpen(e.t)
	id, err := db.Identity()
	if err != nil || id == "" {
		e.t.Fatalf("identity of a new state file: %q, %v", id, err)
	}
	inc, err := db.Incarnation()
	if err != nil {
		e.t.Fatalf("incarnation of a new state file: %v", err)
	}
	eng := e.newEngine(nil)
	eng.Store, eng.Salt = db, db.Salt()
	eng.Owner = rotation.Owner{ID: id, Host: "host-b", Incarnation: inc, Known: db.KnownIncarnation}
	return eng, db
}

// TestSecondInstanceIsBlocked: a second daemon with its own state file
// changes nothing for a target another state file owns, at Codat or in
// Vault, and says who owns it and since when; the owner keeps rotating;
// after a takeover the roles swap.
func TestSecondInstanceIsBlocked(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	ctx := context.Background()
	e.mustRotate(rotation.Options{})
	since := e.clock.Now().UTC().Format(time.RFC3339)
	idA, _ := e.db.Identity()
	if md := e.mustServe().Custom; md[rotation.MetadataOwner] != idA || md[rotation.MetadataOwnerHost] != "test-host" || md[rotation.MetadataOwnerSince] != since {
		t.Fatalf("custom metadata after the first publish: %v, want owner %s on test-host since %s", md, idA, since)
	}

	b, dbB := e.otherInstance()
	e.clock.Advance(time.Hour)
	seq, version := e.lastSeq(), e.vaultVersion()
	for _, what := range []string{"rotate", "emergency"} {
		var err error
		switch what {
		case "rotate":
			_, err = b.Rotate(ctx, e.target, rotation.Options{})
		case "emergency":
			_, err = b.Rotate(ctx, e.target, rotation.Options{Emergency: true, Manual: true})
		}
		e.record(nil, err)
		if !errors.Is(err, rotation.ErrNotOwner) {
			t.Fatalf("%s by a second state file: %v, want ErrNotOwner", what, err)
		}
		for _, want := range []string{idA, "test-host", since, "takeover --target " + targetName} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: the error does not say %q: %v", what, want, err)
			}
		}
	}
	for _, ev := range e.eventsSince(seq) {
		if ev.Op != emulator.OpList {
			t.Errorf("a blocked instance made a change at codat: %+v", ev)
		}
	}
	if v := e.vaultVersion(); v != version {
		t.Errorf("a blocked instance wrote to vault: version %d, want %d", v, version)
	}
	stB, _ := dbB.Load(targetName)
	if stB.Blocked == "" || stB.BlockedAt.IsZero() || stB.Halted || stB.ConsecutiveFailures != 0 {
		t.Errorf("blocked state: %+v, want blocked, not halted, no failure counted", stB)
	}
	if p, err := b.Plan(ctx, e.target, rotation.Options{}); err != nil || !strings.Contains(p.Blocked, idA) {
		t.Errorf("dry run of a blocked instance: blocked %q, err %v; want it blocked, naming %s", p.Blocked, err, idA)
	}

	// A keeps rotating.
	e.mustRotate(rotation.Options{})
	if md := e.mustServe().Custom; md[rotation.MetadataOwnerSince] != since {
		t.Errorf("owner-since moved on a later publish: %v, want %s", md, since)
	}

	// A stops; the operator moves the target to B.
	tk, err := b.Takeover(ctx, e.target)
	e.record(tk, err)
	if err != nil {
		t.Fatalf("takeover: %v", err)
	}
	if tk.Previous.ID != idA {
		t.Errorf("takeover's previous owner: %+v, want %s", tk.Previous, idA)
	}
	if _, err := e.rotate(rotation.Options{}); !errors.Is(err, rotation.ErrNotOwner) {
		t.Errorf("the old owner after a takeover: %v, want ErrNotOwner", err)
	}
	// The old owner's keys fall due: its retire pass deletes nothing.
	e.clock.Advance(2 * grace)
	seq = e.lastSeq()
	if ids, err := e.retireDue(); !errors.Is(err, rotation.ErrNotOwner) || len(ids) != 0 {
		t.Errorf("the old owner's retire pass after a takeover: deleted %v, %v; want nothing, ErrNotOwner", ids, err)
	}
	if n := countOps(e.eventsSince(seq), emulator.OpDelete); n != 0 {
		t.Errorf("the old owner deleted %d key(s) after the takeover", n)
	}
	if _, err := b.Rotate(ctx, e.target, rotation.Options{}); err != nil {
		t.Fatalf("the new owner rotates: %v", err)
	}
	if st, _ := dbB.Load(targetName); st.Blocked != "" {
		t.Errorf("blocked after a successful rotation: %q", st.Blocked)
	}
}

// TestTakeoverAfterLostState: the state file is lost mid-grace. The new
// state file is blocked until a takeover; the takeover rebuilds every
// key the old one managed from Vault's versions and the target's name
// shape, each with the delete-after the old state had (never sooner),
// leaves nothing the daemon made as foreign, and the retire pass
// deletes them when due and not before.
func TestTakeoverAfterLostState(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	// Vault records when it wrote each version by its own (real) clock,
	// and a takeover counts a grace from that write: the fake clock
	// starts at the real time, as the daemon's clock would be.
	e.clock.Set(time.Now().UTC())
	ctx := context.Background()
	portal := e.portal("a person's key")
	for range 3 {
		e.mustRotate(rotation.Options{})
		e.clock.Advance(grace / 4)
	}
	old := e.state()
	want := map[string]time.Time{}
	for _, k := range old.Keys {
		if k.Origin.Managed() && k.State == store.KeyRetiring {
			want[k.ID] = k.DeleteAfter
		}
	}
	if len(want) != 3 { // the bootstrap key and two made keys
		t.Fatalf("setup: %d retiring keys, want 3: %+v", len(want), old.Keys)
	}

	// The volume is lost: a new state file, a new identity.
	lost, db := e.otherInstance()
	if _, err := lost.Rotate(ctx, e.target, rotation.Options{}); !errors.Is(err, rotation.ErrNotOwner) {
		t.Fatalf("a rotation on an empty state file of another identity: %v, want ErrNotOwner", err)
	}
	tk, err := lost.Takeover(ctx, e.target)
	e.record(tk, err)
	if err != nil {
		t.Fatalf("takeover: %v", err)
	}
	st, _ := db.Load(targetName)
	got := map[string]time.Time{}
	for id, after := range want {
		k := st.Key(id)
		if k == nil || !k.Origin.Managed() || k.State != store.KeyRetiring {
			t.Errorf("key %s after takeover: %+v, want managed and retiring", id, k)
			continue
		}
		got[id] = k.DeleteAfter
		// Never sooner than the old state had it; later only by what the
		// secret's whole seconds and Vault's write times leave open.
		if k.DeleteAfter.Before(after) || k.DeleteAfter.After(after.Add(3*time.Second)) {
			t.Errorf("key %s retires at %s after takeover; the old state had %s", id, k.DeleteAfter, after)
		}
	}
	if k := st.Key(portal); k == nil || k.Origin != store.OriginForeign {
		t.Errorf("the person's key after takeover: %+v, want foreign", k)
	}
	if len(tk.Foreign) != 1 || tk.Foreign[0] != portal {
		t.Errorf("takeover's foreign keys: %v, want just %s", tk.Foreign, portal)
	}

	// Nothing goes before its time; everything goes when due.
	e.engine = lost
	e.db = db
	for _, id := range sortedByTime(got) {
		e.clock.Set(got[id].Add(-time.Second))
		seq := e.lastSeq()
		if _, err := e.retireDue(); err != nil {
			t.Fatalf("retire: %v", err)
		}
		if n := countOps(e.eventsSince(seq), emulator.OpDelete); n != 0 {
			t.Fatalf("a key was deleted a second before its rebuilt delete-after %s", got[id])
		}
		e.clock.Set(got[id])
		if _, err := e.retireDue(); err != nil {
			t.Fatalf("retire: %v", err)
		}
		if r := e.keyRecord(id); r.Deleted == nil {
			t.Errorf("key %s still at codat once due", id)
		}
	}
	e.mustRotate(rotation.Options{})
	e.checkInvariants()
}

func sortedByTime(m map[string]time.Time) []string {
	var ids []string
	for id := range m {
		ids = append(ids, id)
	}
	for i := range ids {
		for j := i + 1; j < len(ids); j++ {
			if m[ids[j]].Before(m[ids[i]]) {
				ids[i], ids[j] = ids[j], ids[i]
			}
		}
	}
	return ids
}

// TestSharedClientKeepsReserve: two targets on one Codat client, each
// publishing to its own path. Neither touches the other's keys, and two
// routine rotations at the same moment, which each see room for one
// more key, do not both take it: the second looks again once the first
// has created its key, and the reserve stays free.
func TestSharedClientKeepsReserve(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	ctx := context.Background()
	_, rawB, err := e.emu.AddPortalKey("given to the second application")
	if err != nil {
		t.Fatal(err)
	}
	e.raw.add(rawB)
	b := e.target
	b.Name, b.Vault.Path = "second", "codat/second"
	b.Bootstrap = func() (codat.Secret, error) { return codat.Secret(rawB), nil }

	e.mustRotate(rotation.Options{})
	if _, err := e.engine.Rotate(ctx, b, rotation.Options{}); err != nil {
		t.Fatalf("rotate the second target: %v", err)
	}
	if got := e.engine.SharesClient(targetName); len(got) != 1 || got[0] != "second" {
		t.Errorf("SharesClient(%s) = %v, want [second]", targetName, got)
	}
	stA, stB := e.state(), mustLoad(t, e.db, "second")
	if got := rotation.SharedClients(map[string]store.Target{targetName: stA, "second": stB}); len(got[targetName]) != 1 || len(got["second"]) != 1 {
		t.Errorf("SharedClients from the states: %v", got)
	}
	for _, k := range stA.Keys {
		if rec := stB.Key(k.ID); k.Origin.Managed() && k.State != store.KeyDeleted && (rec == nil || rec.Origin.Managed()) {
			t.Errorf("the second target does not count %s, the first's key, as foreign: %+v", k.ID, rec)
		}
	}

	// Fill the client so that one more routine key fits and two do not.
	for n := len(e.activeKeys()); n < 8; n++ {
		e.portal("filler")
	}
	e.clock.Advance(time.Hour) // within grace: nothing may be deleted to make room
	if err := e.emu.SetFaults(emulator.Faults{Create: emulator.OpFaults{Latency: emulator.Duration(300 * time.Millisecond)}}); err != nil {
		t.Fatal(err)
	}
	fresh := e.newEngine(nil) // a restarted daemon: it knows the sharing from the state file alone
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, tg := range []rotation.Target{e.target, b} {
		wg.Go(func() { _, errs[i] = fresh.Rotate(ctx, tg, rotation.Options{}) })
	}
	wg.Wait()
	e.record(nil, errors.Join(errs...))
	ok, noRoom := 0, 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, rotation.ErrNoRoom):
			noRoom++
		default:
			t.Errorf("concurrent rotation: %v", err)
		}
	}
	if ok != 1 || noRoom != 1 {
		t.Errorf("concurrent routine rotations on a shared client: %d succeeded, %d found no room (%v); want 1 and 1", ok, noRoom, errs)
	}
	if n := len(e.activeKeys()); n > e.target.MaxKeys-e.target.ReserveSlots {
		t.Errorf("codat holds %d keys after routine rotations, the reserve of %d is taken", n, e.target.ReserveSlots)
	}
	if v := e.emu.Violations(); len(v) != 0 {
		t.Errorf("emulator violations: %+v", v)
	}
}

func mustLoad(t *testing.T, db *store.DB, name string) store.Target {
	t.Helper()
	st, err := db.Load(name)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestRestoredBackupKeepsAPublishedKey: a backup of the state file taken
// while a crash's journal named a new key, restored after a later run
// published that key and an operator moved Vault on. The restored
// journal says the key was never published; Vault's versions say it
// was. It retires with the full grace, never at once (I4). Chaos found
// this (state-restore).
func TestRestoredBackupKeepsAPublishedKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	e.mustRotate(rotation.Options{})
	first, firstRaw := e.mustServe().Data["key_id"], e.mustServe().Data["api_key"]

	c := &crasher{at: func(cl call, _ *crasher) bool { return cl.svc == "codat" && cl.op == "create" && cl.after }}
	if _, crashed := e.rotateUntilCrash(c, rotation.Options{}); !crashed {
		t.Fatal("the rotation did not crash after its create")
	}
	path := e.db.Path()
	if err := e.db.Close(); err != nil {
		t.Fatal(err)
	}
	backup, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	e.db = storetest.MustOpenPath(t, path)
	e.engine = e.newEngine(nil)
	res := e.mustRotate(rotation.Options{}) // finishes the crashed rotation: its key is published
	published := res.NewKey.ID
	if e.mustServe().Data["key_id"] != published {
		t.Fatalf("setup: vault does not serve the recovered key %s", published)
	}

	// The backup comes back; an operator rolls Vault back to the first key.
	if err := e.db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, backup, 0o600); err != nil {
		t.Fatal(err)
	}
	e.db = storetest.MustOpenPath(t, path)
	e.engine = e.newEngine(nil)
	if _, err := e.root.KVv2(e.mount).Put(context.Background(), secretPath, map[string]any{"api_key": firstRaw, "key_id": first}); err != nil {
		t.Fatal(err)
	}
	supersededAt := e.clock.Now()
	e.clock.Advance(time.Minute)
	// The process that published after the backup was taken is one the
	// restored file never was: it is blocked as a copy until the
	// operator runs takeover, which rebuilds the state from Vault.
	if _, err := e.rotate(rotation.Options{}); !errors.Is(err, rotation.ErrNotOwner) {
		t.Fatalf("a restored backup behind a later process's publish: %v, want ErrNotOwner", err)
	}
	if _, err := e.engine.Takeover(context.Background(), e.target); err != nil {
		t.Fatalf("takeover: %v", err)
	}
	e.mustRotate(rotation.Options{})
	if r := e.keyRecord(published); r.Deleted != nil && r.Deleted.Before(supersededAt.Add(grace)) {
		t.Fatalf("I4: key %s, served until %s, was deleted at %s", published, supersededAt, r.Deleted)
	}
	if k := e.stateKey(published); k == nil || k.State != store.KeyRetiring || k.DeleteAfter.Before(supersededAt.Add(grace)) {
		t.Errorf("the published key after recovery: %+v, want retiring no sooner than %s", k, supersededAt.Add(grace))
	}
	e.checkInvariants()
}
