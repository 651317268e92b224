package rotation_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/codat-rotator/codat-rotator/codat/emulator"
	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/secret"
	"github.com/codat-rotator/codat-rotator/store"
	"github.com/codat-rotator/codat-rotator/vault"
)

// The chaos steps of the identity families (docs/design.md#key-names,
// #served-by-value, #shared-keys): what another deployment, an operator's
// hand edits, a rename and a copy of the state file do to a daemon that
// must never delete a key someone serves. The invariant checks are the
// schedule's own (chaos_test.go): they judge every secret by the key
// whose raw value it holds.

// neighbourStep: the second deployment, with its own state file and
// path on the same Codat client, rotates, runs an emergency or retires.
func (s *chaosRun) neighbourStep(ctx context.Context) bool {
	nb := s.nb
	what := []string{"rotate", "rotate", "rotate", "emergency", "retire"}[s.rng.IntN(5)]
	s.stepDesc += " " + what
	s.note("step %d: %s", s.step, s.stepDesc)
	eng := s.engineOn(nb.db, nil)
	_ = eng.Know(nb.target)
	label := "neighbour " + nb.target.Name
	emergency := what == "emergency"
	if emergency {
		// Its emergency may retire its own keys at once, not the others'.
		for _, k := range s.emu.Keys() {
			if k.Deleted == nil && s.keyOwner(k.ID, k.Name) == label {
				s.exempt[k.ID] = true
			}
		}
	}
	before := len(s.emu.Keys())
	s.front.setRoutine(!emergency, nb.target.ReserveSlots)
	var err error
	switch what {
	case "retire":
		var ids []string
		ids, err = eng.RetireDue(ctx, nb.target)
		s.record(ids, err)
	default:
		var res rotation.Result
		res, err = eng.Rotate(ctx, nb.target, rotation.Options{Emergency: emergency, Manual: emergency})
		s.record(res, err)
	}
	if emergency {
		for _, k := range s.emu.Keys()[before:] {
			s.exempt[k.ID] = true
		}
	}
	s.note("  err=%v", err)
	s.stats[fmt.Sprintf("neighbour-%s:%v", what, err == nil)]++
	s.check(false, false)
	return true
}

// writeHand writes data to path as `vault kv put` does, and records
// what it wrote (with the key it really serves: the one whose raw value
// it holds) for the invariant checks.
func (s *chaosRun) writeHand(ctx context.Context, path string, data map[string]any, served chaosVersion) error {
	sec, err := s.sh.root.KVv2(s.sh.mount).Put(ctx, path, data)
	if err != nil {
		return err
	}
	if sec.VersionMetadata == nil {
		return fmt.Errorf("vault kv put %s: no version in the answer", path)
	}
	served.rotatedAt = s.clock.Now()
	switch {
	case path == s.path:
		s.opWrites[s.vbase+sec.VersionMetadata.Version] = served
	case s.sib != nil && path == s.sib.path:
		s.sib.opWrites[sec.VersionMetadata.Version] = served
	default:
		return fmt.Errorf("harness: no record of hand writes to %s", path)
	}
	return s.readVersions(ctx)
}

// copySecretStep: an operator seeds one target's path with a copy of
// the other target's secret (the README invites several targets on one
// client), or, when such a copy is outstanding, fixes it by giving the
// victim a key of its own again. Meanwhile the victim refuses the key
// and its owner must not delete it.
func (s *chaosRun) copySecretStep(ctx context.Context) bool {
	fail := func(err error) bool {
		s.violations = append(s.violations, fmt.Sprintf("step %d: harness: %s: %v", s.step, s.stepDesc, err))
		return false
	}
	if c := s.copied; c != nil {
		s.stepDesc += " fix " + s.victim().Name
		s.note("step %d: %s", s.step, s.stepDesc)
		if err := s.fixCopy(ctx); err != nil {
			return fail(err)
		}
		s.check(false, true)
		return true
	}
	if len(s.versions) == 0 || len(s.sib.versions) == 0 {
		s.note("step %d: %s skipped", s.step, s.stepDesc)
		return true
	}
	from, to := s.sib.versions[len(s.sib.versions)-1], s.target
	victimVersions := s.versions
	if s.rng.IntN(2) == 0 {
		from, to, victimVersions = s.versions[len(s.versions)-1], s.sib.target, s.sib.versions
	}
	s.stepDesc += fmt.Sprintf(" %s's key %s into %s", map[bool]string{true: s.target.Name, false: s.sib.target.Name}[to.Name != s.target.Name], from.keyID, to.Vault.Path)
	s.note("step %d: %s", s.step, s.stepDesc)
	if !s.live(from.keyID) {
		s.note("  skipped: the key is gone")
		return true
	}
	data := map[string]any{vault.FieldAPIKey: from.apiKey, vault.FieldKeyID: from.keyID,
		vault.FieldHeader: secret.AuthorizationHeader(secret.Value(from.apiKey)).Reveal()}
	if err := s.writeHand(ctx, to.Vault.Path, data, chaosVersion{keyID: from.keyID, apiKey: from.apiKey, copied: true}); err != nil {
		return fail(err)
	}
	s.copied = &chaosCopy{sib: to.Name != s.target.Name, before: victimVersions[len(victimVersions)-1]}
	s.stats["secret-copied"]++
	s.check(false, true)
	return true
}

// victim is the target whose path holds a copy of the other's secret,
// as it is defined now.
func (s *chaosRun) victim() rotation.Target {
	if s.copied != nil && s.copied.sib {
		return s.sib.target
	}
	return s.target
}

// fixCopy gives the victim of a copied secret a key of its own again:
// what it served before the copy, or a new Portal key if that is gone.
// Codat's Portal, like its API, makes no key while the client holds
// its cap ("delete an unused key and try again"), so the operator
// deletes a person's key first: the emulator's cap is raised only to
// record a daemon's overshoot (I1), never to let the harness make one.
func (s *chaosRun) fixCopy(ctx context.Context) error {
	c := s.copied
	v := c.before
	if !s.live(v.keyID) {
		if n := s.emu.ActiveKeys(); n >= chaosMaxKeys {
			live := s.livePortal()
			if len(live) == 0 {
				return fmt.Errorf("codat holds %d keys, none a person's to delete for the victim's own", n)
			}
			if err := s.emu.DeletePortalKey(live[0]); err != nil {
				return err
			}
			s.portalDeleted[live[0]] = true
			s.stats["portal-full-for-fix"]++
		}
		id, raw, err := s.emu.AddPortalKey("the victim's own")
		if err != nil {
			return err
		}
		s.raw.add(raw)
		s.adopted[id] = true
		v = chaosVersion{keyID: id, apiKey: raw}
	}
	data := map[string]any{vault.FieldAPIKey: v.apiKey, vault.FieldKeyID: v.keyID}
	if err := s.writeHand(ctx, s.victim().Vault.Path, data, chaosVersion{keyID: v.keyID, apiKey: v.apiKey}); err != nil {
		return err
	}
	s.copied = nil
	s.stats["secret-copy-fixed"]++
	return nil
}

// patchStep: an operator patches api_key (and its header) by hand to an
// older key still at Codat: a hand rollback that leaves key_id as it
// was, or sets a wrong one (the daemon's own error asked for one).
func (s *chaosRun) patchStep(ctx context.Context) bool {
	n := len(s.versions)
	if n == 0 {
		s.note("step %d: %s skipped", s.step, s.stepDesc)
		return true
	}
	cur := s.versions[n-1]
	var cands []chaosVersion
	for _, v := range s.versions[:n-1] {
		if v.apiKey != "" && !v.copied && v.keyID != cur.keyID && s.live(v.keyID) && !slices.ContainsFunc(cands, func(c chaosVersion) bool { return c.keyID == v.keyID }) {
			cands = append(cands, v)
		}
	}
	if len(cands) == 0 {
		s.note("step %d: %s skipped", s.step, s.stepDesc)
		return true
	}
	v := cands[s.rng.IntN(len(cands))]
	data := map[string]any{vault.FieldAPIKey: v.apiKey, vault.FieldHeader: secret.AuthorizationHeader(secret.Value(v.apiKey)).Reveal()}
	how := "key_id kept"
	if s.rng.IntN(3) == 0 {
		// A wrong key_id: another live key's.
		var others []string
		for _, k := range s.emu.Keys() {
			if k.Deleted == nil && k.ID != v.keyID {
				others = append(others, k.ID)
			}
		}
		if len(others) > 0 {
			data[vault.FieldKeyID] = others[s.rng.IntN(len(others))]
			how = "wrong key_id " + data[vault.FieldKeyID].(string)
		}
	}
	s.stepDesc += fmt.Sprintf(" api_key of %s, %s", v.keyID, how)
	s.note("step %d: %s", s.step, s.stepDesc)
	sec, err := s.sh.root.KVv2(s.sh.mount).Patch(ctx, s.path, data)
	if err != nil || sec.VersionMetadata == nil {
		s.violations = append(s.violations, fmt.Sprintf("step %d: harness: vault kv patch: %v", s.step, err))
		return false
	}
	s.opWrites[s.vbase+sec.VersionMetadata.Version] = chaosVersion{keyID: v.keyID, apiKey: v.apiKey, rotatedAt: s.clock.Now()}
	s.stats["operator-patch"]++
	s.check(false, true)
	return true
}

// renameStep: the target is renamed in the config, same Vault path (or
// renamed back to a name it had).
func (s *chaosRun) renameStep() bool {
	var names []string
	for _, n := range []string{chaosTarget, chaosTarget + "-r1", chaosTarget + "-r2"} {
		if n != s.target.Name {
			names = append(names, n)
		}
	}
	old := s.target.Name
	s.target.Name = names[s.rng.IntN(len(names))]
	st, _ := s.db.Load(s.target.Name)
	md, err := s.sh.root.KVv2(s.sh.mount).GetMetadata(context.Background(), s.path)
	if st.Tag == "" && (err != nil || md.CustomMetadata[rotation.MetadataKeyTag] == nil) {
		// The metadata that held the tag was deleted: the renamed target
		// cannot tell its old keys from anyone's, and leaves them foreign.
		s.tags = map[string]bool{}
	}
	s.stepDesc += fmt.Sprintf(" %s to %s", old, s.target.Name)
	s.note("step %d: %s", s.step, s.stepDesc)
	s.stats["renamed"]++
	s.check(false, true)
	return true
}

// metaDeleteStep: `vault kv metadata delete`, then the operator writes
// the secret back by hand: the versions restart at 1, and with two
// writes (an older key served again, then the current one) the number
// comes back to one the daemon may have seen.
func (s *chaosRun) metaDeleteStep(ctx context.Context) bool {
	n := len(s.versions)
	if n == 0 || !s.live(s.versions[n-1].keyID) {
		s.note("step %d: %s skipped", s.step, s.stepDesc)
		return true
	}
	cur := s.versions[n-1]
	var older *chaosVersion
	for i := n - 2; i >= 0; i-- {
		if v := s.versions[i]; v.apiKey != "" && v.keyID != cur.keyID && s.live(v.keyID) {
			older = &v
			break
		}
	}
	if err := s.sh.root.KVv2(s.sh.mount).DeleteMetadata(ctx, s.path); err != nil {
		s.violations = append(s.violations, fmt.Sprintf("step %d: harness: delete metadata: %v", s.step, err))
		return false
	}
	s.vbase = n
	// The versions that named keys a takeover could attribute are gone.
	s.recoverable = nil
	if st, err := s.db.Load(s.target.Name); err == nil && st.Tag == "" {
		// And the tag with them, for a target (just renamed) that has not
		// taken it into its state yet: its old keys stay foreign.
		s.tags = map[string]bool{}
	}
	if older != nil && s.rng.IntN(2) == 0 {
		s.stepDesc += " then " + older.keyID
		if err := s.rewrite(*older); err != nil {
			s.violations = append(s.violations, "harness: "+err.Error())
			return false
		}
	}
	s.stepDesc += " then " + cur.keyID
	if err := s.rewrite(cur); err != nil {
		s.violations = append(s.violations, "harness: "+err.Error())
		return false
	}
	s.note("step %d: %s", s.step, s.stepDesc)
	s.stats["metadata-deleted"]++
	s.check(false, true)
	return true
}

// rewrite writes v back by hand after a metadata delete. A copy of
// another target's secret stays a copy: its key is still the other's.
func (s *chaosRun) rewrite(v chaosVersion) error {
	if err := s.operatorWrite(v.apiKey, v.keyID, true); err != nil {
		return err
	}
	n := len(s.versions)
	s.versions[n-1].copied = v.copied
	w := s.opWrites[n]
	w.copied = v.copied
	s.opWrites[n] = w
	return nil
}

// stateCopyStep: a copy of the state file runs beside the original (a
// backup restored on another host while the first still runs). Once
// the copy publishes, the original must be blocked; then the operator
// stops one of the two (and runs takeover when the original stays).
func (s *chaosRun) stateCopyStep(ctx context.Context) bool {
	fail := func(err error) bool {
		s.violations = append(s.violations, fmt.Sprintf("step %d: harness: %s: %v", s.step, s.stepDesc, err))
		return false
	}
	b, err := os.ReadFile(s.dbPath)
	if err != nil {
		return fail(err)
	}
	copyPath := filepath.Join(s.sh.dir, fmt.Sprintf("s%d-copy-%d.db", s.seed, s.step))
	if err := os.WriteFile(copyPath, b, 0o600); err != nil {
		return fail(err)
	}
	cp, err := store.Open(copyPath, store.Options{})
	if err != nil {
		return fail(err)
	}
	s.note("step %d: %s", s.step, s.stepDesc)
	if err := s.readVersions(ctx); err != nil {
		return fail(err)
	}
	version := len(s.versions)
	s.front.setRoutine(true, s.reserve())
	res, cerr := s.engineOn(cp, nil).Rotate(ctx, s.target, rotation.Options{})
	s.record(res, cerr)
	if err := s.readVersions(ctx); err != nil {
		return fail(err)
	}
	published := len(s.versions) > version
	s.note("  the copy rotates: err=%v, published=%v", cerr, published)
	if published {
		seq, v := len(s.emu.Events(0)), len(s.versions)
		_, oerr := s.newEngine(nil).Rotate(ctx, s.target, rotation.Options{})
		s.record(nil, oerr)
		s.note("  the original rotates: err=%v", oerr)
		if !errors.Is(oerr, rotation.ErrNotOwner) {
			s.violate("the original state file rotated after a copy of it published: %v", oerr)
		}
		for _, ev := range s.emu.Events(seq + 1) {
			if ev.Op == emulator.OpCreate || ev.Op == emulator.OpDelete {
				s.violate("the original state file changed codat after a copy of it published: %s %s", ev.Method, ev.Path)
			}
		}
		if err := s.readVersions(ctx); err != nil {
			return fail(err)
		}
		if len(s.versions) != v {
			s.violate("the original state file wrote to vault after a copy of it published")
		}
		s.stats["state-copy-blocked"]++
	}
	if published && s.rng.IntN(2) == 0 {
		// The operator keeps the copy and stops the original for good.
		if err := s.db.Close(); err != nil {
			return fail(err)
		}
		_ = os.Remove(s.dbPath)
		s.db, s.dbPath = cp, copyPath
		s.note("  the copy stays, the original is removed")
		s.check(false, false)
		return true
	}
	// The operator stops the copy; the original takes the target back.
	if err := cp.Close(); err != nil {
		return fail(err)
	}
	_ = os.Remove(copyPath)
	if published {
		tk, err := s.newEngine(nil).Takeover(ctx, s.target)
		s.record(tk, err)
		s.note("  the copy is stopped; takeover: err=%v", err)
		if err != nil {
			s.violate("takeover after stopping a copy of the state file failed: %v", err)
		} else {
			s.recoverable = s.attributable(ctx)
		}
	}
	s.check(false, false)
	return true
}

// live reports whether Codat holds the key id.
func (s *chaosRun) live(id string) bool {
	for _, k := range s.emu.Keys() {
		if k.ID == id {
			return k.Deleted == nil
		}
	}
	return false
}
