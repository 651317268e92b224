package vault_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/codat-rotator/codat-rotator/vault"
	"github.com/codat-rotator/codat-rotator/vault/vaulttest"
)

// TestCheckPolicy: CheckPolicy names each capability a rotation needs
// and the token lacks, from Vault's own answer (sys/capabilities-self),
// against a real dev server.
func TestCheckPolicy(t *testing.T) {
	srv := vaulttest.Shared(t)
	loc := newLocation(t, srv)
	policy := func(data, metadata string, self bool) string {
		hcl := fmt.Sprintf("path %q { capabilities = [%s] }\npath %q { capabilities = [%s] }\n",
			loc.Mount+"/data/codat/*", data, loc.Mount+"/metadata/codat/*", metadata)
		if self {
			hcl += `path "sys/capabilities-self" { capabilities = ["update"] }` + "\n"
		}
		return hcl
	}
	for _, tt := range []struct {
		name    string
		token   func() string
		missing map[string]string // path: capabilities, "" for none
		denied  bool              // the token may not ask
	}{
		{"root", func() string { return srv.RootToken }, nil, false},
		{"the shipped policy's capabilities", func() string {
			return srv.Token(t, policy(`"create", "read", "update"`, `"read", "patch"`, true))
		}, nil, false},
		{"no patch on the metadata", func() string {
			return srv.Token(t, policy(`"create", "read", "update"`, `"read", "create", "update"`, true))
		}, map[string]string{loc.Mount + "/metadata/codat/production": "patch"}, false},
		{"read only", func() string {
			return srv.Token(t, policy(`"read"`, `"read"`, true))
		}, map[string]string{loc.Mount + "/data/codat/production": "create, update", loc.Mount + "/metadata/codat/production": "patch"}, false},
		{"denied on the metadata", func() string {
			return srv.Token(t, policy(`"create", "read", "update"`, `"deny"`, true))
		}, map[string]string{loc.Mount + "/metadata/codat/production": "read, patch"}, false},
		{"may not ask", func() string {
			return srv.Token(t, policy(`"create", "read", "update"`, `"read", "patch"`, false))
		}, nil, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := newClient(t, srv.Addr, tt.token()).CheckPolicy(context.Background(), loc)
			var pe *vault.PolicyError
			switch {
			case tt.denied:
				if !errors.Is(err, vault.ErrPermissionDenied) || errors.As(err, &pe) {
					t.Errorf("got %v, want permission denied on sys/capabilities-self", err)
				}
			case tt.missing == nil:
				if err != nil {
					t.Errorf("got %v, want none missing", err)
				}
			case !errors.As(err, &pe):
				t.Errorf("got %v, want a *vault.PolicyError", err)
			default:
				got := map[string]string{}
				for p, caps := range pe.Missing {
					got[p] = strings.Join(caps, ", ")
				}
				if fmt.Sprint(got) != fmt.Sprint(tt.missing) {
					t.Errorf("missing %v, want %v", got, tt.missing)
				}
				if pe.Retryable() {
					t.Error("a policy error is retryable; a policy changes by a person's hand")
				}
			}
		})
	}
}

// TestFixedTokenRefused: a token given as it is (VAULT_TOKEN) that Vault
// refuses is reported as such and is not worth a retry: logging in again
// gives the same token. A token read from a file is read again instead.
func TestFixedTokenRefused(t *testing.T) {
	srv := vaulttest.Shared(t)
	loc := newLocation(t, srv)
	_, err := newClient(t, srv.Addr, "hvs.not-a-token-of-this-vault").Read(context.Background(), loc)
	var fe *vault.FixedTokenError
	if !errors.As(err, &fe) || fe.Retryable() || !errors.Is(err, vault.ErrTokenInvalid) ||
		!strings.Contains(err.Error(), "VAULT_TOKEN is a fixed token: logging in again cannot fix it") {
		t.Errorf("a refused fixed token: got %v; want a FixedTokenError, not retryable, matching ErrTokenInvalid", err)
	}
	file := t.TempDir() + "/token"
	if err := os.WriteFile(file, []byte("hvs.not-a-token-of-this-vault\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := vault.New(vault.Config{Address: srv.Addr, TokenFile: file})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(context.Background(), loc); !errors.Is(err, vault.ErrTokenInvalid) || errors.As(err, &fe) {
		t.Errorf("a refused token from a file: got %v; want ErrTokenInvalid, not a fixed token's error (the file may change)", err)
	}
}
