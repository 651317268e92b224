package vault_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/codat-rotator/codat-rotator/internal/secretfile"
	"github.com/codat-rotator/codat-rotator/vault"
)

// chmodFile writes content to dir/name with exactly mode.
func chmodFile(tb testing.TB, dir, name, content string, mode os.FileMode) string {
	tb.Helper()
	path := writeFile(tb, dir, name, content)
	if err := os.Chmod(path, mode); err != nil {
		tb.Fatal(err)
	}
	return path
}

// TestSecretFilesChecked: every file the client reads to log in goes
// through secretfile's rule before it is read. A refused file fails before
// Vault is contacted (the address answers nothing); a readable one warns.
func TestSecretFilesChecked(t *testing.T) {
	const nowhere = "http://127.0.0.1:1"
	dir := t.TempDir()
	good := chmodFile(t, dir, "good", "s.token\n", 0o600)
	writable := chmodFile(t, dir, "writable", "s.token\n", 0o666)
	readable := chmodFile(t, dir, "readable", "s.token\n", 0o644)

	t.Run("token file writable by others", func(t *testing.T) {
		_, err := vault.New(vault.Config{Address: nowhere, TokenFile: writable})
		if !errors.Is(err, secretfile.ErrUnsafe) {
			t.Fatalf("New = %v, want a refusal", err)
		}
		assertContains(t, err.Error(), "vault.auth.token_file "+writable, "mode 0666", "chmod 600 it")
	})

	t.Run("token file readable by others warns", func(t *testing.T) {
		var warns []string
		if _, err := vault.New(vault.Config{Address: nowhere, TokenFile: readable, OnWarning: func(m string) { warns = append(warns, m) }}); err != nil {
			t.Fatal(err)
		}
		want := "vault.auth.token_file " + readable + ": mode 0644 lets other users read the Vault token; chmod 600 it"
		if len(warns) != 1 || warns[0] != want {
			t.Errorf("warnings %q, want [%q]", warns, want)
		}
	})

	for _, tc := range []struct {
		name  string
		auth  vault.Auth
		field string
	}{
		{"approle role id", vault.AppRoleAuth{RoleIDFile: writable, SecretIDFile: good}, "vault.auth.approle.role_id_file"},
		{"approle secret id", vault.AppRoleAuth{RoleIDFile: good, SecretIDFile: writable}, "vault.auth.approle.secret_id_file"},
		{"kubernetes token", vault.KubernetesAuth{Role: "r", TokenFile: writable}, "vault.auth.kubernetes.token_file"},
	} {
		t.Run(tc.name+" writable by others", func(t *testing.T) {
			c, err := vault.New(vault.Config{Address: nowhere, Auth: tc.auth})
			if err != nil {
				t.Fatal(err)
			}
			err = c.Login(context.Background())
			if !errors.Is(err, secretfile.ErrUnsafe) {
				t.Fatalf("Login = %v, want a refusal", err)
			}
			assertContains(t, err.Error(), tc.field+" "+writable, "mode 0666")
		})
	}

	t.Run("approle files readable by others warn", func(t *testing.T) {
		var warns []string
		c, err := vault.New(vault.Config{Address: nowhere, Auth: vault.AppRoleAuth{RoleIDFile: readable, SecretIDFile: readable},
			OnWarning: func(m string) { warns = append(warns, m) }})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Login(context.Background()); err == nil {
			t.Fatal("Login to nowhere succeeded")
		}
		got := strings.Join(warns, "\n")
		assertContains(t, got, "vault.auth.approle.role_id_file "+readable+": mode 0644", "vault.auth.approle.secret_id_file "+readable+": mode 0644")
	})

	t.Run("kubernetes projected token: no warning", func(t *testing.T) {
		if os.Getuid() != 0 {
			if os.Getenv("CI") == "true" {
				t.Fatal("needs root: a projected token is root-owned")
			}
			t.Skip("needs root: a projected token is root-owned")
		}
		sa := t.TempDir()
		ts := filepath.Join(sa, "..2024_01_02_03_04_05.1")
		if err := os.Mkdir(ts, 0o755); err != nil {
			t.Fatal(err)
		}
		chmodFile(t, ts, "token", "a.jwt.here", 0o644)
		if err := os.Symlink(filepath.Base(ts), filepath.Join(sa, "..data")); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("..data/token", filepath.Join(sa, "token")); err != nil {
			t.Fatal(err)
		}
		var warns []string
		c, err := vault.New(vault.Config{Address: nowhere, Auth: vault.KubernetesAuth{Role: "r", TokenFile: filepath.Join(sa, "token")},
			OnWarning: func(m string) { warns = append(warns, m) }})
		if err != nil {
			t.Fatal(err)
		}
		err = c.Login(context.Background())
		if err == nil || errors.Is(err, secretfile.ErrUnsafe) {
			t.Fatalf("Login = %v, want the token read and the (unreachable) Vault's error", err)
		}
		if len(warns) != 0 {
			t.Errorf("warnings %q for a projected token, want none", warns)
		}
	})
}
