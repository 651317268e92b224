package rotation_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/codat-rotator/codat-rotator/codat/emulator"
	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/store"
	"github.com/codat-rotator/codat-rotator/vault"
)

// opsOf lists the events as "op:key id", in order.
func opsOf(events []emulator.Event) []string {
	var out []string
	for _, ev := range events {
		out = append(out, fmt.Sprintf("%s:%s:%d", ev.Op, ev.KeyID, ev.Status))
	}
	return out
}

// TestRoutineRotationRoundTrips: a routine rotation of a daemon that
// rotated the target before makes the 5 round trips a rotation cannot
// avoid and one Vault read: Codat list (started beside the read, with
// the key the engine saw served), create and verify; Vault read, write
// and read-back. The custom metadata is already right, so no metadata
// request follows the write.
func TestRoutineRotationRoundTrips(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	e.mustRotate(rotation.Options{}) // bootstrap, mount check, first rotation
	served := e.mustServe().Data[vault.FieldKeyID]
	seq := e.lastSeq()
	vaultBefore, _ := e.proxy.counts()

	res := e.mustRotate(rotation.Options{})

	got := opsOf(e.eventsSince(seq))
	want := []string{
		"list:" + served + ":200",
		"create:" + served + ":201",
		"list:" + res.NewKey.ID + ":200",
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("codat requests:\n got %v\nwant %v", got, want)
	}
	if vaultAfter, _ := e.proxy.counts(); vaultAfter-vaultBefore != 3 {
		t.Errorf("vault requests: got %d, want 3 (read, write, read-back; no metadata request)", vaultAfter-vaultBefore)
	}
	md, err := e.root.KVv2(e.mount).GetMetadata(context.Background(), secretPath)
	if err != nil {
		t.Fatal(err)
	}
	if md.CustomMetadata[rotation.MetadataOwner] == "" || md.CustomMetadata[rotation.MetadataTarget] != targetName {
		t.Errorf("custom metadata: %v", md.CustomMetadata)
	}
	e.checkInvariants()
}

// TestEarlyListingNoticesAHandWrittenSecret: the listing that starts
// beside the Vault read uses the key the engine last published; when an
// operator has written another key by hand since, that listing is
// dropped and Codat is listed again with the key Vault serves, before
// anything is created. With a real Vault and the emulator.
func TestEarlyListingNoticesAHandWrittenSecret(t *testing.T) {
	for _, deleteOld := range []bool{false, true} {
		name := "hand-written key"
		if deleteOld {
			name += ", the old key deleted in the portal"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envConfig{})
			first := e.mustRotate(rotation.Options{}).NewKey.ID // the engine remembers this key
			// The operator makes a key in the Portal and publishes it by
			// hand, without key_id.
			handID, handRaw, err := e.emu.AddPortalKey("by hand")
			if err != nil {
				t.Fatal(err)
			}
			e.raw.add(handRaw)
			if _, err := e.root.KVv2(e.mount).Put(context.Background(), secretPath, map[string]any{vault.FieldAPIKey: handRaw}); err != nil {
				t.Fatal(err)
			}
			if deleteOld {
				if err := e.emu.DeletePortalKey(first); err != nil {
					t.Fatal(err)
				}
			}
			seq := e.lastSeq()

			res := e.mustRotate(rotation.Options{})

			events := e.eventsSince(seq)
			created := -1
			for i, ev := range events {
				if ev.Op == emulator.OpCreate {
					created = i
					if ev.KeyID != handID {
						t.Errorf("the create authenticated with %s, want the hand-written key %s", ev.KeyID, handID)
					}
					break
				}
			}
			if created < 0 {
				t.Fatalf("no create: %v", opsOf(events))
			}
			// Before the create: the early listing with the old key (401
			// once deleted), then a listing with the key Vault serves.
			before := opsOf(events[:created])
			wantOld := "list:" + first + ":200"
			if deleteOld {
				wantOld = "list::401" // a deleted key authenticates as no key
			}
			if len(before) != 2 || before[0] != wantOld || before[1] != "list:"+handID+":200" {
				t.Errorf("codat requests before the create: got %v, want [%s list:%s:200]", before, wantOld, handID)
			}
			for _, ev := range events[created:] {
				if ev.KeyID == first && ev.Op != emulator.OpList {
					t.Errorf("a %s after the plan used the key vault no longer serves", ev.Op)
				}
			}
			// The rotation superseded the key Vault served, found by its
			// raw value, not the one the engine remembered.
			p := e.mustServe()
			if got := p.Data[vault.FieldPreviousKeyID]; got != handID {
				t.Errorf("previous_key_id: got %s, want the hand-written key %s", got, handID)
			}
			if k := e.stateKey(handID); k == nil || k.State != store.KeyRetiring || k.Origin != store.OriginAdopted {
				t.Errorf("the hand-written key: %+v, want adopted and retiring", k)
			}
			if res.NewKey.ID == "" || p.Data[vault.FieldKeyID] != res.NewKey.ID {
				t.Errorf("vault serves %s, want the new key %s", p.Data[vault.FieldKeyID], res.NewKey.ID)
			}
			if deleteOld {
				// The early listing is the one request with the deleted
				// key, answered 401 and dropped; the emulator notes it.
				v := e.emu.Violations()
				if len(v) != 1 || v[0].Kind != emulator.ViolationDeletedKeyUsed || v[0].KeyID != first {
					t.Errorf("violations: %+v, want the one early listing with %s", v, first)
				}
				return
			}
			e.checkInvariants()
		})
	}
}
