package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// shippedPolicy returns configs/vault-policy.hcl rewritten for mount, as
// its comment tells operators to do.
func shippedPolicy(tb testing.TB, mount string) string {
	tb.Helper()
	hcl := strings.ReplaceAll(mustRead(tb, filepath.Join("..", "..", "configs", "vault-policy.hcl")), "secret/", mount+"/")
	for _, p := range []string{mount + "/data/codat/*", mount + "/metadata/codat/*", "auth/token/renew-self"} {
		if !strings.Contains(hcl, `path "`+p+`"`) {
			tb.Fatalf("the shipped policy has no path %q:\n%s", p, hcl)
		}
	}
	return hcl
}

// withoutCapability removes one capability from one path of a policy.
func withoutCapability(tb testing.TB, hcl, path, capability string) string {
	tb.Helper()
	start := strings.Index(hcl, `path "`+path+`"`)
	if start < 0 {
		tb.Fatalf("no path %q in the policy", path)
	}
	end := start + strings.Index(hcl[start:], "}")
	block := hcl[start:end]
	cut := strings.NewReplacer(`"`+capability+`", `, "", `, "`+capability+`"`, "").Replace(block)
	if cut == block {
		tb.Fatalf("path %q does not grant %q:\n%s", path, capability, block)
	}
	return hcl[:start] + cut + hcl[end:]
}

// setVaultAuth puts an auth: block (YAML flow mapping) under vault: in
// the env's config.
func (e *crashEnv) setVaultAuth(tb testing.TB, auth string) {
	tb.Helper()
	cfg := mustRead(tb, e.config)
	old := "vault:\n  address: " + e.vaultURL + "\n"
	if !strings.Contains(cfg, old) {
		tb.Fatalf("config has no %q:\n%s", old, cfg)
	}
	cfg = strings.Replace(cfg, old, old+"  auth: "+auth+"\n", 1)
	if err := os.WriteFile(e.config, []byte(cfg), 0o600); err != nil {
		tb.Fatal(err)
	}
}

// useTokenFile makes the binary authenticate with a token holding
// exactly hcl, from a token file (VAULT_TOKEN, the root token runRotate
// sets, is then ignored).
func (e *crashEnv) useTokenFile(tb testing.TB, hcl string) string {
	tb.Helper()
	token := e.vault.Token(tb, hcl)
	file := filepath.Join(e.dir, "vault-token")
	if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	e.setVaultAuth(tb, "{method: token, token_file: "+file+"}")
	return token
}

// vaultRequests runs f with the Vault proxy recording requests, and
// returns them ("METHOD /v1/path").
func (e *crashEnv) vaultRequests(f func()) []string {
	e.vaultKS.arm(nil, false, func(*http.Request) bool { return false })
	f()
	e.vaultKS.mu.Lock()
	defer e.vaultKS.mu.Unlock()
	e.vaultKS.armed = false
	return append([]string(nil), e.vaultKS.seen...)
}

func customMetadata(tb testing.TB, e *crashEnv) map[string]any {
	tb.Helper()
	md, err := e.vault.Client(tb).KVv2(e.mount).GetMetadata(context.Background(), "codat/crash")
	if err != nil {
		tb.Fatalf("read metadata: %v", err)
	}
	return md.CustomMetadata
}

func TestAuthPolicyRotation(t *testing.T) {
	dataPath := func(e *crashEnv) string { return e.mount + "/data/codat/crash" }
	metadataPath := func(e *crashEnv) string { return e.mount + "/metadata/codat/crash" }

	t.Run("exactly the shipped policy", func(t *testing.T) {
		e := newCrashEnv(t)
		token := e.useTokenFile(t, shippedPolicy(t, e.mount))
		var code int
		var out string
		reqs := e.vaultRequests(func() { code, out = e.runRotate(t) })
		if code != 0 {
			t.Fatalf("rotate: exit %d\n%s", code, out)
		}
		for _, want := range []string{"crash: bootstrap key published to " + e.mount + "/codat/crash", "crash: rotated: key "} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		e.checkInvariants(t)
		// check passes with the same token: the policy covers it too.
		if code, stdout, stderr := run(t, "check", "--config", e.config); code != 0 {
			t.Errorf("check: exit %d\n%s%s", code, stdout, stderr)
		}
		md := customMetadata(t, e)
		if md["managed-by"] != "codat-rotator" || md["target"] != "crash" {
			t.Errorf("custom metadata = %v, want managed-by=codat-rotator target=crash", md)
		}
		if strings.Contains(out, token) {
			t.Error("the output shows the Vault token")
		}
		// Every request went to a path the policy names.
		for _, r := range reqs {
			path := strings.SplitN(r, " ", 2)[1]
			if !strings.HasPrefix(path, "/v1/"+e.mount+"/data/codat/") && !strings.HasPrefix(path, "/v1/"+e.mount+"/metadata/codat/") &&
				!strings.HasPrefix(path, "/v1/auth/token/") && path != "/v1/sys/internal/ui/mounts/"+e.mount+"/codat/crash" {
				t.Errorf("request outside the policy: %s", r)
			}
		}
	})

	t.Run("no patch on metadata", func(t *testing.T) {
		e := newCrashEnv(t)
		e.useTokenFile(t, withoutCapability(t, shippedPolicy(t, e.mount), e.mount+"/metadata/codat/*", "patch"))
		code, out := e.runRotate(t)
		// The secret is written; only its custom metadata is missing, so
		// the rotation completes and says so in a warning.
		if code != 0 {
			t.Fatalf("rotate: exit %d\n%s", code, out)
		}
		if !strings.Contains(out, "crash: rotated: key ") {
			t.Errorf("output lacks the rotation:\n%s", out)
		}
		var warned bool
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, `"level":"WARN"`) && strings.Contains(line, "published, but the owner claim could not be recorded") {
				warned = true
				t.Logf("warning: %s", line)
				for _, want := range []string{metadataPath(e), `\"patch\"`, "permission denied"} {
					if !strings.Contains(line, want) {
						t.Errorf("warning lacks %q: %s", want, line)
					}
				}
			}
		}
		if !warned {
			t.Errorf("no warning that the custom metadata is not set:\n%s", out)
		}
		e.checkInvariants(t)
		if md := customMetadata(t, e); len(md) != 0 {
			t.Errorf("custom metadata = %v, want none without patch", md)
		}
		// The protection against a second daemon is off: a state of the
		// target, not a log line only.
		if code, stdout, stderr := run(t, "status", "--config", e.config); code != 0 || !strings.Contains(stdout, "owner:          NOT RECORDED") {
			t.Errorf("status after publishes without patch (exit %d) does not say the owner is unrecorded:\n%s%s", code, stdout, stderr)
		}
	})

	t.Run("no update on data", func(t *testing.T) {
		e := newCrashEnv(t)
		// create is enough to publish the bootstrap key (a new path), not
		// to replace it with the new key.
		e.useTokenFile(t, withoutCapability(t, shippedPolicy(t, e.mount), e.mount+"/data/codat/*", "update"))
		code, out := e.runRotate(t)
		if code != exitError {
			t.Fatalf("rotate: exit %d, want %d\n%s", code, exitError, out)
		}
		want := `crash: failed: `
		line := ""
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, want) {
				line = l
			}
		}
		if line == "" {
			t.Fatalf("output lacks %q:\n%s", want, out)
		}
		t.Logf("output: %s", line)
		for _, want := range []string{"vault write " + dataPath(e), "permission denied", `must grant "create, update" on "` + dataPath(e) + `"`} {
			if !strings.Contains(line, want) {
				t.Errorf("%q lacks %q", line, want)
			}
		}
		if !strings.Contains(out, "crash: bootstrap key published to "+e.mount+"/codat/crash") {
			t.Errorf("the bootstrap key was not published with create alone:\n%s", out)
		}
		// Vault still serves the bootstrap key, and no new key is left
		// behind at Codat.
		sec, err := e.vault.Client(t).KVv2(e.mount).Get(context.Background(), "codat/crash")
		if err != nil {
			t.Fatal(err)
		}
		if got, want := sec.VersionMetadata.Version, 1; got != want {
			t.Errorf("vault version = %d, want %d", got, want)
		}
		if got, want := sec.Data["api_key"], e.emu.InitialKey(); got != want {
			t.Error("vault does not serve the bootstrap key")
		}
		live := 0
		for _, k := range e.emu.Keys() {
			if k.Deleted == nil {
				live++
			}
		}
		if live != 1 {
			t.Errorf("live keys at codat = %d, want only the bootstrap key", live)
		}
		e.checkInvariants(t)
	})
}

// enableAppRole enables AppRole at a random path with a role holding the
// policy hcl, and returns the mount and the role id and secret id files.
func enableAppRole(t *testing.T, e *crashEnv, hcl string) (mount, roleIDFile, secretIDFile string) {
	t.Helper()
	mount, roleID, secretID := e.vault.AppRole(t, hcl, "1m")
	roleIDFile, secretIDFile = filepath.Join(e.dir, "role-id"), filepath.Join(e.dir, "secret-id")
	for file, v := range map[string]string{roleIDFile: roleID, secretIDFile: secretID} {
		if err := os.WriteFile(file, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return mount, roleIDFile, secretIDFile
}

func TestAuthAppRoleRotation(t *testing.T) {
	e := newCrashEnv(t)
	mount, roleIDFile, secretIDFile := enableAppRole(t, e, shippedPolicy(t, e.mount))
	e.setVaultAuth(t, "{method: approle, approle: {mount: "+mount+", role_id_file: "+roleIDFile+", secret_id_file: "+secretIDFile+"}}")

	var code int
	var out string
	reqs := e.vaultRequests(func() { code, out = e.runRotate(t) })
	if code != 0 {
		t.Fatalf("rotate: exit %d\n%s", code, out)
	}
	if !strings.Contains(out, "crash: rotated: key ") {
		t.Errorf("output lacks the rotation:\n%s", out)
	}
	if len(reqs) == 0 || reqs[0] != "PUT /v1/auth/"+mount+"/login" {
		t.Errorf("vault requests = %q, want an AppRole login first", reqs)
	}
	if n := strings.Count(strings.Join(reqs, "\n"), "/login"); n != 1 {
		t.Errorf("%d logins in one run, want 1: %q", n, reqs)
	}
	e.checkInvariants(t)
	secretID := strings.TrimSpace(mustRead(t, secretIDFile))
	if strings.Contains(e.output.String(), secretID) {
		t.Error("the output shows the AppRole secret id")
	}

	t.Run("wrong secret id", func(t *testing.T) {
		// check, not rotate: rotate retries a refused login for 90s and
		// then halts the target (reported as a bug).
		if err := os.WriteFile(secretIDFile, []byte("00000000-0000-0000-0000-000000000000\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		code, stdout, stderr := run(t, "check", "--config", e.config)
		if code != exitError {
			t.Errorf("check: exit %d, want %d\n%s%s", code, exitError, stdout, stderr)
		}
		want := fmt.Sprintf("FAIL %-28s %s", "vault", "vault login auth/"+mount+"/login: refused: 400 Bad Request: invalid role or secret ID")
		if !strings.Contains(stdout, want) {
			t.Errorf("check output lacks %q:\n%s", want, stdout)
		}
	})
}
