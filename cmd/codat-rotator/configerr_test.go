package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/vault/vaulttest"
)

// TestConfigErrorsExit2 (issue 16): every mistake in the configuration,
// in the file or in the environment, makes every command that reads it
// exit 2 (usage: a restart cannot fix it, so systemd's
// RestartPreventExitStatus=2 holds) with a message naming what is wrong
// and what to set. The real binary, one row per mistake, each
// environment variable the daemon reads among them: its own
// (VAULT_ADDR, VAULT_TOKEN, VAULT_SKIP_VERIFY, VAULT_CACERT,
// VAULT_CAPATH, VAULT_CLIENT_CERT, VAULT_CLIENT_KEY, the bootstrap key's
// and every ${NAME} of the file) and those the Vault library parses when
// the client is built. VAULT_NAMESPACE and VAULT_TLS_SERVER_NAME take
// any string, so nothing about them can be malformed.
func TestConfigErrorsExit2(t *testing.T) {
	vs := vaulttest.Shared(t)
	mount := vs.NewKV(t)
	dir, err := os.MkdirTemp("", "cr") // short: the admin socket's path
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	notPEM := filepath.Join(dir, "not-a-cert.pem")
	unsafeToken := filepath.Join(dir, "token")
	for path, mode := range map[string]os.FileMode{notPEM: 0o644, unsafeToken: 0o666} {
		if err := os.WriteFile(path, []byte("not what it should be\n"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
	}
	missing := filepath.Join(dir, "missing")

	// config writes a config whose vault: section is vault (indented
	// two spaces) and returns its path.
	n := 0
	config := func(t *testing.T, vault, extra string) string {
		t.Helper()
		n++
		path := filepath.Join(dir, "config"+strings.Repeat("x", n%3)+".yaml")
		cfg := "state_path: " + filepath.Join(dir, "state.db") + "\n" +
			"listen: {metrics: \"\", admin_socket: " + filepath.Join(dir, "admin.sock") + "}\n" +
			"vault:\n" + vault +
			"targets:\n" +
			"  - name: crash\n" +
			"    codat: {base_url: http://127.0.0.1:1, bootstrap_key_env: CODAT_BOOTSTRAP_API_KEY}\n" +
			"    vault: {mount: " + mount + ", path: codat/crash}\n" + extra
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	const noVault = "  auth: {method: token}\n"
	env := func(extra ...string) []string {
		return append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "VAULT_ADDR=" + vs.Addr, "VAULT_TOKEN=" + vs.RootToken}, extra...)
	}
	without := func(name string, extra ...string) []string {
		var out []string
		for _, kv := range env(extra...) {
			if !strings.HasPrefix(kv, name+"=") {
				out = append(out, kv)
			}
		}
		return out
	}

	every := []string{"run", "rotate", "status", "keys", "resume", "takeover", "check"}
	tests := []struct {
		name     string
		vault    string // the config's vault: section
		extra    string // more of the target
		env      []string
		commands []string // default: every
		want     string
		notWant  string // a secret of the environment the output must not hold
		code     int    // default: exitUsage
	}{
		{name: "VAULT_ADDR unset", vault: noVault, env: without("VAULT_ADDR"),
			want: "vault.address is not set and VAULT_ADDR is empty: set VAULT_ADDR"},
		{name: "VAULT_ADDR not a URL", vault: noVault, env: env("VAULT_ADDR=vault:8200"),
			want: `vault.address ($VAULT_ADDR): (a value that is not a URL) is not an http(s) URL such as https://vault.example:8200`},
		{name: "VAULT_AGENT_ADDR in clear", vault: noVault, env: env("VAULT_AGENT_ADDR=http://agent.example:8100"),
			want: "vault.address ($VAULT_AGENT_ADDR): http://agent.example:8100 sends the Vault token in clear"},
		{name: "a plain-http Vault through a proxy", vault: noVault, env: env("VAULT_PROXY_ADDR=http://user:pr0xy-pw@proxy.example:3128"),
			want: "$VAULT_PROXY_ADDR: vault.address ($VAULT_ADDR) goes through the proxy http://proxy.example:3128 in plain http, which sends the Vault token in clear", notWant: "pr0xy-pw"},
		{name: "a plain-http Vault through the older proxy variable", vault: noVault, env: env("VAULT_HTTP_PROXY=http://proxy.example:3128"),
			want: "$VAULT_HTTP_PROXY: vault.address ($VAULT_ADDR) goes through the proxy http://proxy.example:3128 in plain http"},
		{name: "VAULT_ADDR in clear", vault: noVault, env: env("VAULT_ADDR=http://vault.example:8200"),
			want: "vault.address ($VAULT_ADDR): http://vault.example:8200 sends the Vault token in clear"},
		{name: "VAULT_TOKEN unset", vault: noVault, env: without("VAULT_TOKEN"),
			want: "vault.auth.method is token, but VAULT_TOKEN is empty and vault.auth.token_file is not set: set VAULT_TOKEN"},
		{name: "VAULT_SKIP_VERIFY malformed", vault: noVault, env: env("VAULT_SKIP_VERIFY=maybe"),
			want: `VAULT_SKIP_VERIFY="maybe": want true or false`},
		{name: "VAULT_SRV_LOOKUP malformed", vault: noVault, env: env("VAULT_SRV_LOOKUP=yes please"),
			want: `VAULT_SRV_LOOKUP="yes please": want true or false`},
		{name: "VAULT_DISABLE_REDIRECTS malformed", vault: noVault, env: env("VAULT_DISABLE_REDIRECTS=2"),
			want: `VAULT_DISABLE_REDIRECTS="2": want true or false`},
		{name: "VAULT_MAX_RETRIES malformed", vault: noVault, env: env("VAULT_MAX_RETRIES=-1"),
			want: `VAULT_MAX_RETRIES="-1": want a whole number`},
		{name: "VAULT_CLIENT_TIMEOUT malformed", vault: noVault, env: env("VAULT_CLIENT_TIMEOUT=soon"),
			want: `VAULT_CLIENT_TIMEOUT="soon": want a duration such as 30s`},
		{name: "VAULT_RATE_LIMIT malformed", vault: noVault, env: env("VAULT_RATE_LIMIT=fast"),
			want: `VAULT_RATE_LIMIT="fast": want requests per second, with an optional burst: 10 or 10:20`},
		{name: "VAULT_HTTP_PROXY malformed", vault: noVault, env: env("VAULT_HTTP_PROXY=user:pr0xy-pw@proxy"),
			want: `VAULT_HTTP_PROXY is malformed (its value is not shown: it may hold credentials): want a proxy URL`, notWant: "pr0xy-pw"},
		{name: "VAULT_PROXY_ADDR malformed", vault: noVault, env: env("VAULT_PROXY_ADDR=:3128"),
			want: `VAULT_PROXY_ADDR is malformed (its value is not shown: it may hold credentials): want a proxy URL`},
		{name: "VAULT_AGENT_ADDR malformed", vault: noVault, env: env("VAULT_AGENT_ADDR=agent"),
			want: `VAULT_AGENT_ADDR is malformed (its value is not shown: it may hold credentials): want a Vault Agent URL`},
		{name: "VAULT_HEADERS malformed", vault: noVault, env: env(`VAULT_HEADERS={"X-Vault-Token":"t0ken-in-header"}`),
			want: `VAULT_HEADERS is malformed (its value is not shown: it may hold credentials): want a JSON object of header names and string values, none starting X-Vault-`, notWant: "t0ken-in-header"},
		{name: "VAULT_HEADERS not JSON", vault: noVault, env: env(`VAULT_HEADERS={"Authorization": "Bearer t0ken-in-header"`),
			want: `VAULT_HEADERS is malformed`, notWant: "t0ken-in-header"},
		{name: "VAULT_CACERT missing", vault: noVault, env: env("VAULT_CACERT=" + missing),
			want: "$VAULT_CACERT: stat " + missing + ": no such file or directory; it should name the PEM certificate of the CA"},
		{name: "VAULT_CACERT not PEM", vault: noVault, env: env("VAULT_CACERT=" + notPEM),
			want: "Couldn't parse PEM in: " + notPEM},
		{name: "VAULT_CAPATH missing", vault: noVault, env: env("VAULT_CAPATH=" + missing),
			want: "$VAULT_CAPATH: stat " + missing + ": no such file or directory; it should name a directory of PEM CA certificates"},
		{name: "VAULT_CLIENT_CERT without its key", vault: noVault, env: env("VAULT_CLIENT_CERT=" + notPEM),
			want: "a client certificate needs both its certificate and its key"},
		{name: "VAULT_CLIENT_KEY missing", vault: noVault, env: env("VAULT_CLIENT_CERT="+notPEM, "VAULT_CLIENT_KEY="+missing),
			want: "$VAULT_CLIENT_KEY: stat " + missing + ": no such file or directory"},
		{name: "vault.tls.ca_cert missing", vault: noVault + "  tls: {ca_cert: " + missing + "}\n", env: env(),
			want: "vault.tls.ca_cert: stat " + missing + ": no such file or directory"},
		{name: "a ${NAME} of the file unset", vault: "  namespace: ${TEAM_NAMESPACE}\n", env: env(),
			want: "line 4: ${TEAM_NAMESPACE} is not set"},
		{name: "approle without its files", vault: "  auth: {method: approle}\n", env: env(),
			want: "vault.auth.method is approle, but vault.auth.approle.role_id_file and secret_id_file is not set"},
		{name: "approle without its secret id file", vault: "  auth: {method: approle, approle: {role_id_file: " + notPEM + "}}\n", env: env(),
			want: "vault.auth.approle.secret_id_file is not set"},
		{name: "kubernetes without a role", vault: "  auth: {method: kubernetes}\n", env: env(),
			want: "vault.auth.method is kubernetes, but vault.auth.kubernetes.role is not set"},
		{name: "an unknown auth method", vault: "  auth: {method: ldap}\n", env: env(),
			want: `vault.auth.method: "ldap": want token, approle or kubernetes`},
		{name: "a token file others can write", vault: "  auth: {method: token, token_file: " + unsafeToken + "}\n", env: without("VAULT_TOKEN"),
			want: "vault.auth.token_file " + unsafeToken + ": mode 0666 lets other users replace the Vault token; chmod 600 it"},
		{name: "a misspelt field", vault: noVault, extra: "    schedul: \"@daily\"\n", env: env(),
			want: "line 9: targets[0]: unknown field schedul (did you mean schedule?)"},
		{name: "the bootstrap key's variable unset", vault: noVault, env: env(), commands: []string{"rotate"},
			want: "bootstrap_key_env names $CODAT_BOOTSTRAP_API_KEY, which is not set: for the first run, set it to a key of this Codat client"},
		// Not a configuration error: a token file that is not there yet
		// (a Vault Agent sink) may appear, so a restart may help: exit 1.
		{name: "a token file not written yet", vault: "  auth: {method: token, token_file: " + missing + "}\n", env: without("VAULT_TOKEN"),
			commands: []string{"run", "rotate", "status", "keys", "resume", "takeover"}, code: exitError,
			want: "vault.auth.token_file " + missing + " does not exist (yet?)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config(t, tt.vault, tt.extra)
			commands, code := tt.commands, tt.code
			if commands == nil {
				commands = every
			}
			if code == 0 {
				code = exitUsage
			}
			for _, c := range commands {
				args := []string{c, "--config", cfg}
				if c == "resume" || c == "takeover" {
					args = append(args, "--target", "crash")
				}
				got, out := runEnv(t, tt.env, args...)
				if got != code || !strings.Contains(out, tt.want) {
					t.Errorf("%s: exit %d, want %d with %q in:\n%s", c, got, code, tt.want, out)
				}
				if tt.notWant != "" && strings.Contains(out, tt.notWant) {
					t.Errorf("%s: the output holds %q, a secret of the environment:\n%s", c, tt.notWant, out)
				}
			}
		})
	}
}

// runEnv runs the binary with exactly env and returns its exit code and
// its stdout and stderr together.
func runEnv(tb testing.TB, env []string, args ...string) (int, string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return runEnvCtx(tb, ctx, env, args...)
}

// runEnvCtx is runEnv until ctx ends.
func runEnvCtx(tb testing.TB, ctx context.Context, env []string, args ...string) (int, string) {
	tb.Helper()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = env
	b, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), string(b)
	}
	if err != nil {
		tb.Fatalf("%s: %v", strings.Join(args, " "), err)
	}
	return 0, string(b)
}
