package vault_test

// Regression tests for bugs the auth tests found, one per bug; each asserts the behaviour the fix
// gives.

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/codat-rotator/codat-rotator/vault"
	"github.com/codat-rotator/codat-rotator/vault/vaulttest"
)

// Bug 1: the login request drops the Vault namespace.
func TestRegressionLoginNamespace(t *testing.T) {
	srv := vaulttest.Shared(t)
	root := srv.Client(t)
	loc := newLocation(t, srv)
	mount := enableAuth(t, root, "approle")
	auth := appRole(t, root, mount, map[string]any{"token_policies": []string{kvPolicy(t, root, loc.Mount)}})
	target, _ := url.Parse(srv.Addr)
	var mu sync.Mutex
	namespaces := map[string]string{}
	proxy := httputil.NewSingleHostReverseProxy(target)
	ps := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		namespaces[r.URL.Path] = r.Header.Get("X-Vault-Namespace")
		mu.Unlock()
		proxy.ServeHTTP(w, r)
	}))
	defer ps.Close()
	c, err := vault.New(vault.Config{Address: ps.URL, Namespace: "team-a", Auth: auth})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(context.Background(), loc); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for path, ns := range namespaces {
		if ns != "team-a" {
			t.Errorf("%s sent with namespace %q, want team-a", path, ns)
		}
	}
}

// Bug 2: a missing local credential file is reported as "vault unreachable".
func TestRegressionMissingSecretIDFileNotUnreachable(t *testing.T) {
	srv := vaulttest.Shared(t)
	root := srv.Client(t)
	mount := enableAuth(t, root, "approle")
	auth := appRole(t, root, mount, map[string]any{"token_policies": []string{"default"}})
	auth.SecretIDFile = filepath.Join(t.TempDir(), "nope")
	c, err := vault.New(vault.Config{Address: srv.Addr, Auth: auth})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Login(context.Background())
	if errors.Is(err, vault.ErrUnreachable) || strings.Contains(err.Error(), "unreachable") {
		t.Errorf("Login = %v: a missing file is no unreachable Vault", err)
	}
}

// Bug 3: a refused login hides Vault's reason behind a policy hint.
func TestRegressionKubernetesRefusalReason(t *testing.T) {
	srv := vaulttest.Shared(t)
	root := srv.Client(t)
	mount := enableAuth(t, root, "kubernetes")
	tr := vaulttest.NewTokenReviewer(t)
	if _, err := root.Logical().Write("auth/"+mount+"/config", map[string]any{"kubernetes_host": tr.URL, "disable_local_ca_jwt": true}); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Logical().Write("auth/"+mount+"/role/codat-rotator", map[string]any{
		"bound_service_account_names": "codat-rotator", "bound_service_account_namespaces": "codat-rotator",
	}); err != nil {
		t.Fatal(err)
	}
	file := writeFile(t, t.TempDir(), "token", vaulttest.ServiceAccountJWT(t, "codat-rotator", "default", "uid-1"))
	c, err := vault.New(vault.Config{Address: srv.Addr, Auth: vault.KubernetesAuth{Mount: mount, Role: "codat-rotator", TokenFile: file}})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Login(context.Background())
	t.Logf("error: %v", err)
	if !strings.Contains(err.Error(), "namespace not authorized") {
		t.Errorf("Login = %v, want Vault's reason (namespace not authorized)", err)
	}
	if strings.Contains(err.Error(), "the token's policies must grant") {
		t.Errorf("Login = %v: a login involves no token policy", err)
	}
}
