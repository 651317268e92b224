package rotation_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/codat"
	"github.com/codat-rotator/codat-rotator/rotation"
)

// checks prints CheckTarget's findings one per line, "ok" or "FAIL".
func checks(cs []rotation.Check) string {
	var b strings.Builder
	for _, c := range cs {
		if c.Err != nil {
			fmt.Fprintf(&b, "FAIL %s: %v\n", c.What, c.Err)
		} else {
			fmt.Fprintf(&b, "ok %s: %s\n", c.What, c.Detail)
		}
	}
	return b.String()
}

// TestCheckTarget: the check reaches Vault and Codat with the key a
// rotation would use, says what it found, stops at the first failure,
// and changes nothing.
func TestCheckTarget(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	ctx := context.Background()
	loc := e.mount + "/" + secretPath

	got := checks(e.engine.CheckTarget(ctx, e.target))
	want := "ok owner: no owner recorded yet; the next publish records this state file\n" +
		"ok vault: " + loc + " holds no secret yet; the bootstrap key will be published\n" +
		"ok codat: key accepted; 1 of 10 keys used\n"
	if got != want {
		t.Errorf("before the first rotation:\n%s\nwant:\n%s", got, want)
	}
	if e.served() != nil || len(e.apiKeys()) != 0 {
		t.Fatal("the check published a key or made one at Codat")
	}

	noBootstrap := e.target
	noBootstrap.Bootstrap = nil
	want = "ok owner: no owner recorded yet; the next publish records this state file\n" +
		"FAIL vault: " + loc + " holds no secret and no bootstrap key is configured (bootstrap_key_file or bootstrap_key_env)\n"
	if got := checks(e.engine.CheckTarget(ctx, noBootstrap)); got != want {
		t.Errorf("no secret, no bootstrap key:\n%s\nwant:\n%s", got, want)
	}

	badBootstrap := e.target
	badBootstrap.Bootstrap = func() (codat.Secret, error) { return "", errors.New("bootstrap_key_env: $X is not set") }
	want = "ok owner: no owner recorded yet; the next publish records this state file\n" +
		"FAIL bootstrap: bootstrap_key_env: $X is not set\n"
	if got := checks(e.engine.CheckTarget(ctx, badBootstrap)); got != want {
		t.Errorf("unreadable bootstrap key:\n%s\nwant:\n%s", got, want)
	}

	wrongKey := e.target
	wrongKey.Bootstrap = func() (codat.Secret, error) { return "not-a-codat-key", nil }
	cs := e.engine.CheckTarget(ctx, wrongKey)
	if len(cs) != 3 || cs[0].Err != nil || cs[1].Err != nil || cs[2].What != "codat" || !errors.Is(cs[2].Err, codat.ErrUnauthorized) ||
		!errors.Is(cs[2].Err, rotation.ErrKeyRejected) {
		t.Errorf("a key Codat refuses:\n%s\nwant vault ok, then codat failing as unauthorized (and rejected, to the engine)", checks(cs))
	}

	e.mustRotate(rotation.Options{})
	served := e.mustServe()
	got = checks(e.engine.CheckTarget(ctx, e.target))
	id, _ := e.db.Identity()
	want = fmt.Sprintf("ok owner: owned by this state file (state file %s on host test-host since %s)\nok vault: %s serves key %s (version %d)\nok codat: key accepted; 2 of 10 keys used\n",
		id, e.clock.Now().UTC().Format(time.RFC3339), loc, served.Data["key_id"], served.Version)
	if got != want {
		t.Errorf("after a rotation:\n%s\nwant:\n%s", got, want)
	}

	// Another state file's engine: the check fails, naming the owner.
	other := e.newEngine(nil)
	other.Owner = rotation.Owner{ID: "0123456789abcdef", Host: "elsewhere"}
	cs = other.CheckTarget(ctx, e.target)
	if len(cs) != 1 || cs[0].What != "owner" || !errors.Is(cs[0].Err, rotation.ErrNotOwner) || !strings.Contains(cs[0].Err.Error(), id) {
		t.Errorf("another state file's check:\n%s\nwant owner failing with ErrNotOwner, naming %s", checks(cs), id)
	}
}
