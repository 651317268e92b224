package codatauth_test

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/codat-rotator/codat-rotator/codatauth"
	"github.com/codat-rotator/codat-rotator/secret"
	"github.com/codat-rotator/codat-rotator/vault/vaulttest"
)

// vaultWorld is a real Vault dev server with a fresh KV v2 mount, and a
// policy that may only read the consumer's secret.
type vaultWorld struct {
	srv   *vaulttest.Server
	root  *api.Client
	mount string
	path  string
	read  string // policy HCL: read on the secret, nothing else
}

func newVaultWorld(tb testing.TB) *vaultWorld {
	tb.Helper()
	srv := vaulttest.Shared(tb)
	v := &vaultWorld{srv: srv, root: srv.Client(tb), mount: srv.NewKV(tb), path: "codat/production"}
	v.read = fmt.Sprintf(`path "%s/data/%s" { capabilities = ["read"] }`, v.mount, v.path)
	return v
}

// publish writes the secret as codat-rotator does
// (docs/design.md#vault-layout).
func (v *vaultWorld) publish(tb testing.TB, keyID, raw string, next time.Time) {
	tb.Helper()
	_, err := v.root.KVv2(v.mount).Put(context.Background(), v.path, map[string]any{
		"api_key":              raw,
		"authorization_header": header(raw),
		"key_id":               keyID,
		"key_name":             "codat-rotator-20260301T030000Z-abcdef",
		"created_at":           "2026-03-01T03:00:00Z",
		"rotated_at":           "2026-03-01T03:00:01Z",
		"previous_key_id":      "",
		"previous_expires_at":  "",
		"next_rotation_at":     next.UTC().Format(time.RFC3339),
	})
	if err != nil {
		tb.Fatalf("publish: %v", err)
	}
}

// client returns an API client for the dev server with no token.
func (v *vaultWorld) client(tb testing.TB) *api.Client {
	tb.Helper()
	conf := api.DefaultConfig()
	conf.Address = v.srv.Addr
	c, err := api.NewClient(conf)
	if err != nil {
		tb.Fatal(err)
	}
	c.ClearToken()
	return c
}

func (v *vaultWorld) source(tb testing.TB, auth codatauth.VaultAuth) *codatauth.VaultSource {
	tb.Helper()
	s, err := codatauth.NewVaultSource(codatauth.VaultConfig{Client: v.client(tb), Mount: v.mount, Path: v.path, Auth: auth})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func writeSecretFile(tb testing.TB, dir, name, content string) string {
	tb.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}

// TestVaultSourceReadsTheLayout: a token that may only read the secret
// gets the header, the key id, rotated_at and next_rotation_at.
func TestVaultSourceReadsTheLayout(t *testing.T) {
	v := newVaultWorld(t)
	next := time.Date(2026, 3, 2, 3, 0, 0, 0, time.UTC)
	v.publish(t, "key-1", docKey, next)
	src := v.source(t, codatauth.TokenAuth{Token: secret.Value(v.srv.Token(t, v.read))})
	got, err := src.Load(context.Background())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := codatauth.Credential{Header: docHeader, KeyID: "key-1", RotatedAt: time.Date(2026, 3, 1, 3, 0, 1, 0, time.UTC), NextRotationAt: next}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if got, want := src.String(), "vault secret "+v.mount+"/data/codat/production"; got != want {
		t.Errorf("String: got %q, want %q", got, want)
	}
}

// TestVaultSourceErrors: each way the secret can be wrong or out of reach
// gets an error that names the path, matches its sentinel and shows no
// secret.
func TestVaultSourceErrors(t *testing.T) {
	v := newVaultWorld(t)
	ctx := context.Background()
	where := "vault secret " + v.mount + "/data/" + v.path
	reader := codatauth.TokenAuth{Token: secret.Value(v.srv.Token(t, v.read))}
	for _, tt := range []struct {
		name  string
		setup func(t *testing.T)
		auth  codatauth.VaultAuth
		is    error
		want  []string
	}{
		{"never written", func(*testing.T) {}, reader, codatauth.ErrNotFound, []string{where, "no secret there, or its latest version is deleted"}},
		{"latest version deleted", func(t *testing.T) {
			v.publish(t, "key-1", docKey, time.Now())
			if err := v.root.KVv2(v.mount).Delete(ctx, v.path); err != nil {
				t.Fatal(err)
			}
		}, reader, codatauth.ErrNotFound, []string{where, "codat credential not found"}},
		{"written by hand without the header", func(t *testing.T) {
			if _, err := v.root.KVv2(v.mount).Put(ctx, v.path, map[string]any{"api_key": docKey}); err != nil {
				t.Fatal(err)
			}
		}, reader, codatauth.ErrNoHeader, []string{where, "no authorization_header field (fields there: api_key)"}},
		{"header not matching the key", func(t *testing.T) {
			if _, err := v.root.KVv2(v.mount).Put(ctx, v.path, map[string]any{"api_key": "another-key-0123456789", "authorization_header": docHeader}); err != nil {
				t.Fatal(err)
			}
		}, reader, codatauth.ErrMalformed, []string{where, "authorization_header does not match api_key"}},
		{"no read on the path", func(t *testing.T) { v.publish(t, "key-1", docKey, time.Now()) },
			codatauth.TokenAuth{Token: secret.Value(v.srv.Token(t, `path "elsewhere/*" { capabilities = ["read"] }`))},
			codatauth.ErrVault, []string{where, "403", `do not grant "read" on ` + v.mount + "/data/" + v.path}},
		{"no token", func(*testing.T) {}, codatauth.TokenAuth{}, nil, []string{where, "vault token: not set"}},
		{"token file missing", func(*testing.T) {}, codatauth.TokenAuth{File: filepath.Join(t.TempDir(), "sink")}, os.ErrNotExist, []string{where, "vault token file"}},
		{"approle id file missing", func(*testing.T) {}, codatauth.AppRoleAuth{RoleIDFile: filepath.Join(t.TempDir(), "role-id")}, os.ErrNotExist, []string{where, "approle role id file"}},
		{"kubernetes role unset", func(*testing.T) {}, codatauth.KubernetesAuth{}, nil, []string{where, "KubernetesAuth.Role is not set"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_ = v.root.KVv2(v.mount).DeleteMetadata(ctx, v.path)
			tt.setup(t)
			_, err := v.source(t, tt.auth).Load(ctx)
			if err == nil {
				t.Fatal("Load: no error")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v does not match %v", err, tt.is)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			noSecret(t, err.Error(), docKey, docHeader)
		})
	}

	for _, tt := range []struct {
		name string
		cfg  codatauth.VaultConfig
		want string
	}{
		{"no client", codatauth.VaultConfig{Mount: "secret", Path: "codat/x"}, "VaultConfig.Client is nil"},
		{"no path", codatauth.VaultConfig{Client: v.client(t), Mount: "secret"}, `VaultConfig.Mount "secret" and Path "": both are needed`},
	} {
		if _, err := codatauth.NewVaultSource(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want %q", tt.name, err, tt.want)
		}
	}
}

// TestVaultSourceTokenFile: when Vault refuses the token, the source
// reads the token file again (a Vault Agent sink that has a new one).
func TestVaultSourceTokenFile(t *testing.T) {
	v := newVaultWorld(t)
	v.publish(t, "key-1", docKey, time.Now())
	old := v.srv.Token(t, v.read)
	sink := writeSecretFile(t, t.TempDir(), "sink", old+"\n")
	src := v.source(t, codatauth.TokenAuth{File: sink})
	if _, err := src.Load(context.Background()); err != nil {
		t.Fatalf("first Load: %v", err)
	}
	if err := v.root.Auth().Token().RevokeOrphan(old); err != nil {
		t.Fatal(err)
	}
	writeSecretFile(t, filepath.Dir(sink), "sink", v.srv.Token(t, v.read))
	if _, err := src.Load(context.Background()); err != nil {
		t.Fatalf("Load after the token was revoked and the sink rewritten: %v", err)
	}
}

// TestVaultSourceAppRole: the source logs in with AppRole, logs in again
// when its token is revoked, and when it has expired.
func TestVaultSourceAppRole(t *testing.T) {
	v := newVaultWorld(t)
	v.publish(t, "key-1", docKey, time.Now())
	mount, roleID, secretID := v.srv.AppRole(t, v.read, "2s")
	dir := t.TempDir()
	src := v.source(t, codatauth.AppRoleAuth{Mount: mount, RoleIDFile: writeSecretFile(t, dir, "role-id", roleID+"\n"), SecretIDFile: writeSecretFile(t, dir, "secret-id", secretID+"\n")})
	ctx := context.Background()
	if c, err := src.Load(ctx); err != nil || c.KeyID != "key-1" {
		t.Fatalf("Load: %+v, %v", c, err)
	}
	if err := v.root.Sys().RevokePrefix("auth/" + mount); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Load(ctx); err != nil {
		t.Fatalf("Load after the token was revoked: %v", err)
	}
	time.Sleep(2500 * time.Millisecond) // past the token's TTL
	if _, err := src.Load(ctx); err != nil {
		t.Fatalf("Load after the token expired: %v", err)
	}
	t.Run("refused login", func(t *testing.T) {
		bad := v.source(t, codatauth.AppRoleAuth{Mount: mount, RoleIDFile: writeSecretFile(t, dir, "role-id", roleID), SecretIDFile: writeSecretFile(t, dir, "bad-secret-id", "not-the-secret-id")})
		_, err := bad.Load(ctx)
		if !errors.Is(err, codatauth.ErrVault) || !strings.Contains(err.Error(), "vault login auth/"+mount+"/login") {
			t.Fatalf("Load: got %v, want Vault's refusal of the login", err)
		}
		noSecret(t, err.Error(), secretID, "not-the-secret-id")
	})
}

// TestVaultSourceKubernetes: the source logs in with the pod's
// service-account token against Vault's Kubernetes auth.
func TestVaultSourceKubernetes(t *testing.T) {
	v := newVaultWorld(t)
	v.publish(t, "key-1", docKey, time.Now())
	tr := vaulttest.NewTokenReviewer(t)
	mount := "kubernetes-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))
	if err := v.root.Sys().EnableAuthWithOptions(mount, &api.EnableAuthOptions{Type: "kubernetes"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.root.Sys().DisableAuth(mount) })
	if _, err := v.root.Logical().Write("auth/"+mount+"/config", map[string]any{
		"kubernetes_host":      tr.URL,
		"kubernetes_ca_cert":   string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tr.Certificate().Raw})),
		"disable_local_ca_jwt": true,
	}); err != nil {
		t.Fatal(err)
	}
	if err := v.root.Sys().PutPolicy("consumer-"+mount, v.read); err != nil {
		t.Fatal(err)
	}
	if _, err := v.root.Logical().Write("auth/"+mount+"/role/consumer", map[string]any{
		"bound_service_account_names":      "codat-rotator",
		"bound_service_account_namespaces": "codat-rotator",
		"token_policies":                   []string{"consumer-" + mount},
	}); err != nil {
		t.Fatal(err)
	}
	const uid = "4d2ad3f5-8a3c-4e0b-9a55-0c1d2e3f4a5b"
	jwt := vaulttest.ServiceAccountJWT(t, "codat-rotator", "codat-rotator", uid)
	tr.Know(jwt, uid)
	src := v.source(t, codatauth.KubernetesAuth{Mount: mount, Role: "consumer", TokenFile: writeSecretFile(t, t.TempDir(), "token", jwt)})
	c, err := src.Load(context.Background())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.Header.Reveal() != docHeader {
		t.Error("Load did not return the published header")
	}
	if n, bearers := tr.Count(); n != 1 || bearers[0] != "Bearer "+jwt {
		t.Errorf("token reviews: %d, want one with the pod's JWT", n)
	}
}
