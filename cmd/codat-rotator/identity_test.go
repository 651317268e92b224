package main

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/codat/emulator"
)

// Identity through the real binary (docs/design.md#key-names,
// #shared-keys, #served-by-value): the three situations that let a
// daemon delete a key Vault serves for someone else, with one emulator
// and one Vault.

// alive reports whether the emulator still holds key id.
func (w *ownWorld) alive(id string) bool {
	for _, k := range w.emu.Keys() {
		if k.ID == id {
			return k.Deleted == nil
		}
	}
	return false
}

// servedAt returns the key id and raw key the secret at path serves.
func (w *ownWorld) servedAt(t *testing.T, path string) (id, raw string) {
	t.Helper()
	vs := w.versions(t, path)
	if len(vs) == 0 {
		t.Fatalf("%s holds no secret", path)
	}
	last := vs[len(vs)-1]
	return last.str("key_id"), last.str("api_key")
}

// mustCLI runs a command and fails the test on a non-zero exit.
func (w *ownWorld) mustCLI(t *testing.T, c ownConfig, env []string, args ...string) string {
	t.Helper()
	code, stdout, stderr := w.cli(t, c, env, args...)
	if code != 0 {
		t.Fatalf("%s: exit %d\n%s%s", strings.Join(args, " "), code, stdout, stderr)
	}
	return stdout
}

// TestIdentitySameTargetNameTwoDeployments: two deployments, each with
// its own state file and Vault path, both call their target prod, on
// one Codat client. The second one's rotations leave the first one's
// served key alone.
func TestIdentitySameTargetNameTwoDeployments(t *testing.T) {
	t.Parallel()
	w := newOwnWorld(t)
	_, bRaw, err := w.emu.AddPortalKey("given to deployment b")
	if err != nil {
		t.Fatal(err)
	}
	a := w.config(t, "a", listenNothing, ownTarget{name: "prod", path: "codat/a", bootstrapEnv: "CODAT_BOOTSTRAP_API_KEY", schedule: "@every 1h", grace: "1s"})
	b := w.config(t, "b", listenNothing, ownTarget{name: "prod", path: "codat/b", bootstrapEnv: "B_BOOTSTRAP_API_KEY", schedule: "@every 1h", grace: "1s"})
	envB := []string{"B_BOOTSTRAP_API_KEY=" + bRaw}
	w.mustCLI(t, a, nil, "rotate", "--target", "prod")
	aID, aRaw := w.servedAt(t, "codat/a")
	for i := range 3 {
		time.Sleep(1100 * time.Millisecond) // past every grace
		w.mustCLI(t, b, envB, "rotate", "--target", "prod")
		if !w.alive(aID) {
			t.Fatalf("deployment b's rotation %d deleted deployment a's served key %s", i+1, aID)
		}
	}
	bID, _ := w.servedAt(t, "codat/b")
	if !w.alive(bID) {
		t.Errorf("deployment b's own served key %s is gone", bID)
	}
	// a goes on as if b did not exist.
	w.mustCLI(t, a, nil, "rotate", "--target", "prod")
	if !w.alive(bID) {
		t.Errorf("deployment a's rotation deleted deployment b's served key %s", bID)
	}
	_, bRaw2 := w.servedAt(t, "codat/b")
	w.checkNoSecrets(t, []string{"codat/a", "codat/b"}, aRaw, bRaw, bRaw2)
}

// TestIdentityKeySharedBetweenTargets: a second target of one daemon
// bootstrapped with the key the first serves, then seeded with a copy
// of the first one's secret: refused with an error naming both, and the
// first target keeps the key while the second's secret serves it.
func TestIdentityKeySharedBetweenTargets(t *testing.T) {
	t.Parallel()
	w := newOwnWorld(t)
	alpha := ownTarget{name: "alpha", path: "codat/alpha", bootstrapEnv: "CODAT_BOOTSTRAP_API_KEY", schedule: "@every 1h", grace: "1s"}
	beta := ownTarget{name: "beta", path: "codat/beta", bootstrapEnv: "BETA_BOOTSTRAP_API_KEY", schedule: "@every 1h", grace: "1s"}
	cfg := w.config(t, "both", listenNothing, alpha, beta)
	w.mustCLI(t, cfg, nil, "rotate", "--target", "alpha")
	aID, aRaw := w.servedAt(t, alpha.path)

	code, stdout, stderr := w.cli(t, cfg, []string{"BETA_BOOTSTRAP_API_KEY=" + aRaw}, "rotate", "--target", "beta")
	if code == 0 || !strings.Contains(stdout+stderr, "alpha") || !strings.Contains(stdout+stderr, "beta") || !strings.Contains(stdout+stderr, aID) {
		t.Fatalf("beta bootstrapped with alpha's key: exit %d, want a failure naming alpha, beta and %s\n%s%s", code, aID, stdout, stderr)
	}

	// Seeded by copying alpha's secret.
	_, err := w.api.KVv2(w.mount).Put(context.Background(), beta.path, map[string]any{
		"api_key": aRaw, "key_id": aID, "authorization_header": "Basic " + base64.StdEncoding.EncodeToString([]byte(aRaw))})
	if err != nil {
		t.Fatal(err)
	}
	if code, stdout, stderr := w.cli(t, cfg, []string{"BETA_BOOTSTRAP_API_KEY=unused"}, "rotate", "--target", "beta"); code == 0 || !strings.Contains(stdout+stderr, "alpha") {
		t.Fatalf("beta seeded with a copy of alpha's secret: exit %d, want a failure naming alpha\n%s%s", code, stdout, stderr)
	}
	w.mustCLI(t, cfg, nil, "rotate", "--target", "alpha") // aID retires
	time.Sleep(1100 * time.Millisecond)
	code, stdout, stderr = w.cli(t, cfg, nil, "rotate", "--target", "alpha") // its retire pass: aID is due
	if !w.alive(aID) {
		t.Fatalf("alpha deleted %s, which beta's secret serves (exit %d)\n%s%s", aID, code, stdout, stderr)
	}
	if !strings.Contains(stdout+stderr, "beta") {
		t.Errorf("alpha's retire pass does not say why it keeps %s:\n%s%s", aID, stdout, stderr)
	}
	_, a2 := w.servedAt(t, alpha.path)
	w.checkNoSecrets(t, []string{alpha.path, beta.path}, aRaw, a2)
}

// TestIdentityHandPatchedSecretBlindListing: Codat's listing shows no
// raw keys; an operator rolls the secret back by hand to the previous
// key's value and leaves key_id as it was. The daemon's retire pass
// keeps the key whose value Vault serves, and status says the served
// key is in doubt.
func TestIdentityHandPatchedSecretBlindListing(t *testing.T) {
	t.Parallel()
	w := newOwnWorld(t, emulator.Options{ListOmitsRawKeys: true})
	tg := ownTarget{name: "prod", path: "codat/prod", bootstrapEnv: "CODAT_BOOTSTRAP_API_KEY", schedule: "@every 1h", grace: "2s"}
	cfg := w.config(t, "prod", listenAll, tg) // a metrics port of its own
	d := w.run(t, cfg)
	d.waitRunning(t)
	d.waitRotations(t, 15*time.Second, 1)
	w.mustCLI(t, cfg, nil, "rotate", "--target", "prod")
	oldID, oldRaw := w.servedAt(t, tg.path)
	w.mustCLI(t, cfg, nil, "rotate", "--target", "prod")
	newID, newRaw := w.servedAt(t, tg.path)
	// vault kv patch codat/prod api_key=<older> authorization_header=<its header>
	if _, err := w.api.KVv2(w.mount).Patch(context.Background(), tg.path, map[string]any{
		"api_key": oldRaw, "authorization_header": "Basic " + base64.StdEncoding.EncodeToString([]byte(oldRaw))}); err != nil {
		t.Fatal(err)
	}
	// oldID's grace ends 2 s after newID was published; the retire
	// timer fires then, and again a minute later at most.
	d.until(t, 20*time.Second, "a retire pass after the patch", func() bool {
		return d.count(func(r logRecord) bool {
			return r.str("msg") == "the key vault serves is in doubt; every key that may be it is kept" ||
				(r.str("msg") == "deleting retired key" && r.str("key_id") == oldID)
		}) > 0
	})
	time.Sleep(3 * time.Second)
	if !w.alive(oldID) {
		t.Fatalf("the daemon deleted %s, whose value vault serves", oldID)
	}
	if !w.alive(newID) {
		t.Fatalf("the daemon deleted %s, which the secret's key_id names", newID)
	}
	st := w.status(t, cfg, "prod")
	if !strings.Contains(st.ServedDoubt, oldID) {
		t.Errorf("status: served_doubt %q, want it to name %s", st.ServedDoubt, oldID)
	}
	_, text, _ := w.cli(t, cfg, nil, "status")
	if !strings.Contains(text, "IN DOUBT") {
		t.Errorf("status text does not show the doubt:\n%s", text)
	}
	d.stop(t)
	w.checkNoSecrets(t, []string{tg.path}, oldRaw, newRaw)
}

// TestIdentityRenamedTarget: a target renamed in the config (same Vault
// path, same state file) keeps what its old name recorded. Before any
// run, status (read-only) shows the old name's keys under the new name;
// the first rotation moves the state, and the old keys retire after
// their grace, the bootstrap key among them.
func TestIdentityRenamedTarget(t *testing.T) {
	t.Parallel()
	w := newOwnWorld(t)
	prod := ownTarget{name: "prod", path: "codat/prod", bootstrapEnv: "CODAT_BOOTSTRAP_API_KEY", schedule: "@every 1h", grace: "1s"}
	cfg := w.config(t, "rename", listenNothing, prod)
	w.mustCLI(t, cfg, nil, "rotate", "--target", "prod")
	var bootstrapID string
	for _, k := range w.emu.Keys() {
		if k.Origin == emulator.OriginInitial {
			bootstrapID = k.ID
		}
	}
	servedID, raw := w.servedAt(t, prod.path)

	renamed := prod
	renamed.name = "production"
	cfg = w.config(t, "rename", listenNothing, renamed) // same state file
	st := w.status(t, cfg, "production")
	if st.CurrentKey == nil || st.CurrentKey.ID != servedID || len(st.Retiring) != 1 || st.Retiring[0].ID != bootstrapID {
		t.Fatalf("status of the renamed target before its first run: current %+v, retiring %+v; want %s current and the bootstrap key %s retiring", st.CurrentKey, st.Retiring, servedID, bootstrapID)
	}
	time.Sleep(1100 * time.Millisecond) // past the grace
	w.mustCLI(t, cfg, nil, "rotate", "--target", "production")
	if w.alive(bootstrapID) {
		t.Errorf("the bootstrap key %s outlived its grace after the rename", bootstrapID)
	}
	if !w.alive(servedID) {
		t.Errorf("the key served until this rotation, %s, is gone within its grace", servedID)
	}
	_, raw2 := w.servedAt(t, prod.path)
	w.checkNoSecrets(t, []string{prod.path}, raw, raw2)
}
