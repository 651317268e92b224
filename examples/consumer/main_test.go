package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/codat-rotator/codat-rotator/codat/emulator"
	"github.com/codat-rotator/codat-rotator/secret"
	"github.com/codat-rotator/codat-rotator/vault/vaulttest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	vaulttest.StopShared()
	os.Exit(code)
}

// emulate starts Codat's emulator and returns its URL and the header of
// its key.
func emulate(t *testing.T) (url, key, header string) {
	t.Helper()
	emu, err := emulator.New(emulator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	t.Cleanup(emu.Close)
	key = emu.InitialKey()
	return srv.URL, key, secret.AuthorizationHeader(secret.Value(key)).Reveal()
}

// TestExample runs the example against the emulator, with the key in a
// file and in a real Vault: every call succeeds, and the output names
// the key in use by id, never by value.
func TestExample(t *testing.T) {
	url, key, header := emulate(t)
	file := filepath.Join(t.TempDir(), "codat-authorization")
	if err := os.WriteFile(file, []byte(header+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	vs := vaulttest.Shared(t)
	mount := vs.NewKV(t)
	if _, err := vs.Client(t).KVv2(mount).Put(context.Background(), "codat/production", map[string]any{
		"api_key": key, "authorization_header": header, "key_id": "key-1",
	}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
	}{
		{"file", []string{"-file", file}, nil},
		{"vault", []string{"-vault-mount", mount, "-vault-path", "codat/production"},
			map[string]string{"VAULT_ADDR": vs.Addr, "VAULT_TOKEN": vs.Token(t, fmt.Sprintf(`path "%s/data/codat/production" { capabilities = ["read"] }`, mount))}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var out bytes.Buffer
			args := append(tc.args, "-codat-url", url, "-every", "10ms", "-count", "3")
			if err := run(context.Background(), args, &out); err != nil {
				t.Fatalf("run: %v\n%s", err, out.String())
			}
			got := out.String()
			if n := strings.Count(got, `"msg":"listed companies","status":200`); n != 3 {
				t.Errorf("want 3 successful calls, got %d in:\n%s", n, got)
			}
			if !strings.Contains(got, `"msg":"codat key: now in use"`) {
				t.Errorf("no line for the key taken into use:\n%s", got)
			}
			for _, s := range []string{key, header, strings.TrimPrefix(header, "Basic ")} {
				if strings.Contains(got, s) {
					t.Errorf("the output holds the key or its header")
				}
			}
		})
	}
}

func TestExampleUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "-vault-path or -file: say where the key is"},
		{[]string{"-vault-path", "codat/x", "-vault-auth", "ldap"}, `-vault-auth "ldap": want token, approle or kubernetes`},
		{[]string{"-file", "/nonexistent/codat"}, "codat credential not found"},
	} {
		var out bytes.Buffer
		err := run(context.Background(), tc.args, &out)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want %q", tc.args, err, tc.want)
		}
	}
}
