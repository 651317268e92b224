package rotation_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

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
	want := "ok vault: " + loc + " holds no secret yet; the bootstrap key will be published\n" +
		"ok codat: key accepted; 1 of 10 keys used\n"
	if got != want {
		t.Errorf("before the first rotation:\n%s\nwant:\n%s", got, want)
	}
	if e.served() != nil || len(e.apiKeys()) != 0 {
		t.Fatal("the check published a key or made one at Codat")
	}

	noBootstrap := e.target
	noBootstrap.Bootstrap = nil
	want = "FAIL vault: " + loc + " holds no secret and no bootstrap key is configured (bootstrap_key_file or bootstrap_key_env)\n"
	if got := checks(e.engine.CheckTarget(ctx, noBootstrap)); got != want {
		t.Errorf("no secret, no bootstrap key:\n%s\nwant:\n%s", got, want)
	}

	badBootstrap := e.target
	badBootstrap.Bootstrap = func() (codat.Secret, error) { return "", errors.New("bootstrap_key_env: $X is not set") }
	want = "FAIL bootstrap: bootstrap_key_env: $X is not set\n"
	if got := checks(e.engine.CheckTarget(ctx, badBootstrap)); got != want {
		t.Errorf("unreadable bootstrap key:\n%s\nwant:\n%s", got, want)
	}

	wrongKey := e.target
	wrongKey.Bootstrap = func() (codat.Secret, error) { return "not-a-codat-key", nil }
	cs := e.engine.CheckTarget(ctx, wrongKey)
	if len(cs) != 2 || cs[0].Err != nil || cs[1].What != "codat" || !errors.Is(cs[1].Err, codat.ErrUnauthorized) ||
		!errors.Is(cs[1].Err, rotation.ErrKeyRejected) {
		t.Errorf("a key Codat refuses:\n%s\nwant vault ok, then codat failing as unauthorized (and rejected, to the engine)", checks(cs))
	}

	e.mustRotate(rotation.Options{})
	served := e.mustServe()
	got = checks(e.engine.CheckTarget(ctx, e.target))
	want = fmt.Sprintf("ok vault: %s serves key %s (version %d)\nok codat: key accepted; 2 of 10 keys used\n", loc, served.Data["key_id"], served.Version)
	if got != want {
		t.Errorf("after a rotation:\n%s\nwant:\n%s", got, want)
	}
}
