package vault

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// tokenCatcher is a plain-http listener that counts the requests that
// carry a Vault token: where a redirect (or the environment) would
// send it.
func tokenCatcher(t *testing.T) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var got atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Vault-Token") != "" {
			got.Add(1)
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	return srv, &got
}

// TestTokenNeverFollowsARedirect: a Vault address that answers 307 to
// another listener (another port; in the issue, from an allowed
// loopback address to a plain one) gets an error; the other listener
// never sees the token.
func TestTokenNeverFollowsARedirect(t *testing.T) {
	catcher, caught := tokenCatcher(t)
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, catcher.URL+r.URL.RequestURI(), http.StatusTemporaryRedirect)
	}))
	t.Cleanup(redirector.Close)
	t.Setenv("VAULT_DISABLE_REDIRECTS", "false") // the library's default, said out loud
	c, err := New(Config{Address: redirector.URL, Token: "s.the-vault-token"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.Read(ctx, Location{Mount: "secret", Path: "codat/a"}); err == nil {
		t.Error("read through a 307: no error")
	}
	if err := c.Ping(ctx); err == nil {
		t.Error("ping through a 307: no error")
	}
	if n := caught.Load(); n != 0 {
		t.Errorf("the redirect's target received the Vault token %d time(s)", n)
	}
}

// TestAddressIsTheOneGiven: $VAULT_AGENT_ADDR, which the Vault library
// prefers to any address, does not take the token elsewhere: the
// caller chose (and checked) Address.
func TestAddressIsTheOneGiven(t *testing.T) {
	catcher, caught := tokenCatcher(t)
	vaultSrv, atVault := tokenCatcher(t)
	t.Setenv("VAULT_AGENT_ADDR", catcher.URL)
	c, err := New(Config{Address: vaultSrv.URL, Token: "s.the-vault-token"})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.Read(context.Background(), Location{Mount: "secret", Path: "codat/a"})
	if n := caught.Load(); n != 0 {
		t.Errorf("$VAULT_AGENT_ADDR received the Vault token %d time(s)", n)
	}
	if atVault.Load() == 0 {
		t.Error("the configured address received nothing")
	}
	if got := c.Address(); got != vaultSrv.URL {
		t.Errorf("Address: got %s, want %s", got, vaultSrv.URL)
	}
}
