package main

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/codat/emulator"
	"github.com/codat-rotator/codat-rotator/vault/vaulttest"
)

// TestFirstErrors (issue 24): the errors of an operator's first hour,
// through the real binary against a real Vault and the emulator. Each
// message names the fix, and every command that meets the mistake exits
// with the same code: 2 for settings to change before anything can
// work, 1 for an answer from Vault or Codat a later try may change. None
// of them retries what no retry can fix: each command ends within
// seconds.
func TestFirstErrors(t *testing.T) {
	vs := vaulttest.Shared(t)
	emu, err := emulator.New(emulator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	codatSrv := httptest.NewServer(emu)
	t.Cleanup(func() { emu.Close(); codatSrv.Close() })

	dir, err := os.MkdirTemp("", "cr") // short: the admin socket's path
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	aFile := filepath.Join(dir, "a-file")
	if err := os.WriteFile(aFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	// world is one row's Vault, config and environment.
	type world struct {
		vaultAddr, mount, path string
		codatURL, state, sock  string
		vaultExtra             string // more of the config's vault: section
		env                    []string
	}
	n := 0
	config := func(t *testing.T, w world) string {
		t.Helper()
		n++
		p := filepath.Join(dir, fmt.Sprintf("config-%d.yaml", n))
		cfg := "state_path: " + w.state + "\n" +
			"listen: {metrics: \"\", admin_socket: " + w.sock + "}\n" +
			"vault:\n  auth: {method: token}\n" + w.vaultExtra +
			"targets:\n" +
			"  - name: production\n" +
			"    codat: {base_url: " + w.codatURL + ", bootstrap_key_env: CODAT_BOOTSTRAP_API_KEY}\n" +
			"    vault: {mount: " + w.mount + ", path: " + w.path + "}\n" +
			"    schedule: \"@every 1h\"\n    grace: 1s\n"
		if w.vaultAddr != "" {
			cfg = strings.Replace(cfg, "vault:\n", "vault:\n  address: "+w.vaultAddr+"\n", 1)
		}
		if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fresh := func(t *testing.T) world {
		n++
		return world{
			vaultAddr: vs.Addr, mount: vs.NewKV(t), path: "codat/production",
			codatURL: codatSrv.URL,
			state:    filepath.Join(dir, fmt.Sprintf("state-%d.db", n)),
			sock:     filepath.Join(dir, fmt.Sprintf("admin-%d.sock", n)),
			env: []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "VAULT_TOKEN=" + vs.RootToken,
				"CODAT_BOOTSTRAP_API_KEY=" + emu.InitialKey()},
		}
	}
	without := func(env []string, name string) []string {
		var out []string
		for _, kv := range env {
			if !strings.HasPrefix(kv, name+"=") {
				out = append(out, kv)
			}
		}
		return out
	}
	every := []string{"run", "rotate", "rotate --dry-run", "status", "keys", "resume", "takeover", "check"}

	tests := []struct {
		name     string
		setup    func(t *testing.T) world
		commands []string
		code     int
		want     string // the fix, in every command's output
	}{
		{
			name: "the bootstrap key's variable unset while Vault holds no key",
			setup: func(t *testing.T) world {
				w := fresh(t)
				w.env = without(w.env, "CODAT_BOOTSTRAP_API_KEY")
				return w
			},
			commands: []string{"run", "rotate", "rotate --dry-run", "check"},
			code:     exitUsage,
			want:     "bootstrap_key_env names $CODAT_BOOTSTRAP_API_KEY, which is not set",
		},
		{
			name: "a fixed VAULT_TOKEN that Vault refuses",
			setup: func(t *testing.T) world {
				w := fresh(t)
				w.env = append(without(w.env, "VAULT_TOKEN"), "VAULT_TOKEN=hvs.not-a-token-of-this-vault")
				return w
			},
			commands: []string{"rotate", "keys", "takeover", "check"},
			code:     exitError,
			want:     "VAULT_TOKEN is a fixed token: logging in again cannot fix it",
		},
		{
			name: "a policy without patch on the metadata path",
			setup: func(t *testing.T) world {
				w := fresh(t)
				hcl := withoutCapability(t, shippedPolicy(t, w.mount), w.mount+"/metadata/codat/*", "patch")
				w.env = append(without(w.env, "VAULT_TOKEN"), "VAULT_TOKEN="+vs.Token(t, hcl))
				return w
			},
			commands: []string{"check"},
			code:     exitError,
			want:     `lack "patch" on MOUNT/metadata/codat/production: without patch on the metadata path the owner is never recorded`,
		},
		{
			name: "VAULT_ADDR ending in /v1",
			setup: func(t *testing.T) world {
				w := fresh(t)
				w.vaultAddr = "" // from the environment, as the Vault CLI reads it
				w.env = append(w.env, "VAULT_ADDR="+vs.Addr+"/v1")
				return w
			},
			commands: every,
			code:     exitUsage,
			want:     "ends in /v1, the API's prefix, which the Vault client adds itself (it would call " + vs.Addr + "/v1/v1/…); set it to " + vs.Addr,
		},
		{
			name: "the mount repeated in vault.path",
			setup: func(t *testing.T) world {
				w := fresh(t)
				w.path = w.mount + "/codat/production"
				return w
			},
			commands: every,
			code:     exitUsage,
			want:     "starts with the mount MOUNT/, which vault.mount already names: the daemon would write MOUNT/data/MOUNT/codat/production; write path: codat/production",
		},
		{
			name: "data/ in vault.mount",
			setup: func(t *testing.T) world {
				w := fresh(t)
				w.mount += "/data"
				return w
			},
			commands: every,
			code:     exitUsage,
			want:     "ends in /data, which the daemon adds itself: it would write MOUNT/data/data/codat/production; write mount: MOUNT",
		},
		{
			name: "Vault over TLS without its CA",
			setup: func(t *testing.T) world {
				w := fresh(t)
				tv := startTLSVault(t)
				w.vaultAddr, w.mount = tv.Addr, "secret"
				w.env = append(without(w.env, "VAULT_TOKEN"), "VAULT_TOKEN="+tv.RootToken)
				return w
			},
			commands: []string{"rotate", "keys", "takeover", "check"},
			code:     exitError,
			want:     "certificate signed by unknown authority: Vault's TLS certificate is not signed by a CA this host trusts; name Vault's CA with vault.tls.ca_cert or VAULT_CACERT",
		},
		{
			name: "Codat unreachable",
			setup: func(t *testing.T) world {
				w := fresh(t)
				w.codatURL = "http://127.0.0.1:1"
				return w
			},
			commands: []string{"check"},
			code:     exitError,
			want:     "codat unreachable at http://127.0.0.1:1 (is targets[].codat.base_url right",
		},
		{
			name: "a state directory this user cannot make",
			setup: func(t *testing.T) world {
				w := fresh(t)
				w.state = filepath.Join(aFile, "state.db")
				return w
			},
			commands: []string{"run", "rotate"},
			code:     exitUsage,
			want:     "state directory: mkdir " + aFile + ": not a directory: set state_path to a path in a directory this user can write",
		},
		{
			name: "an admin socket directory this user cannot make",
			setup: func(t *testing.T) world {
				w := fresh(t)
				w.sock = filepath.Join(aFile, "admin.sock")
				return w
			},
			commands: []string{"run"},
			code:     exitUsage,
			want:     "admin socket: mkdir " + aFile + ": not a directory: set listen.admin_socket to a path in a directory this user can write",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := tt.setup(t)
			cfg := config(t, w)
			want := strings.ReplaceAll(tt.want, "MOUNT", strings.TrimSuffix(w.mount, "/data"))
			for _, c := range tt.commands {
				args := append(strings.Fields(c), "--config", cfg)
				if c == "resume" || c == "takeover" {
					args = append(args, "--target", "production")
				}
				start := time.Now()
				code, out := runEnvFor(t, 60*time.Second, w.env, args...)
				took := time.Since(start)
				if code != tt.code || !strings.Contains(out, want) {
					t.Errorf("%s: exit %d, want %d with %q in:\n%s", c, code, tt.code, want, out)
				}
				if took > 20*time.Second {
					t.Errorf("%s: took %s: a mistake no retry can fix must not be retried", c, took.Round(time.Second))
				}
			}
		})
	}
}

// startTLSVault starts a Vault dev server over TLS (`vault server
// -dev-tls`), stopped when the test ends.
func startTLSVault(t *testing.T) *vaulttest.Server {
	t.Helper()
	tv, err := vaulttest.StartTLS(t.TempDir())
	if err != nil {
		t.Fatalf("vault -dev-tls: %v", err)
	}
	t.Cleanup(tv.Stop)
	return tv
}

// runEnvFor runs the binary with exactly env, within timeout, and
// returns its exit code and its stdout and stderr together. A run that
// does not end in time is killed and fails the test.
func runEnvFor(tb testing.TB, timeout time.Duration, env []string, args ...string) (int, string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	code, out := runEnvCtx(tb, ctx, env, args...)
	if ctx.Err() != nil {
		tb.Fatalf("%s: still running after %s:\n%s", strings.Join(args, " "), timeout, out)
	}
	return code, out
}

// TestVaultOverTLS: the daemon's commands against a Vault that serves
// TLS (`vault server -dev-tls`), with its CA named as the hint of
// TestFirstErrors says: VAULT_CACERT, or vault.tls.ca_cert. check passes
// and a rotation publishes.
func TestVaultOverTLS(t *testing.T) {
	tv := startTLSVault(t)
	emu, err := emulator.New(emulator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	codatSrv := httptest.NewServer(emu)
	t.Cleanup(func() { emu.Close(); codatSrv.Close() })
	dir := t.TempDir()
	for _, tt := range []struct{ name, tls, env string }{
		{"VAULT_CACERT", "", "VAULT_CACERT=" + tv.CACert},
		{"vault.tls.ca_cert", "  tls: {ca_cert: " + tv.CACert + "}\n", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := filepath.Join(dir, tt.name+".yaml")
			path := "codat/" + strings.ReplaceAll(tt.name, ".", "-")
			body := "state_path: " + filepath.Join(dir, tt.name+".db") + "\n" +
				"listen: {metrics: \"\", admin_socket: \"\"}\n" +
				"vault:\n  address: " + tv.Addr + "\n" + tt.tls +
				"targets:\n  - name: production\n" +
				"    codat: {base_url: " + codatSrv.URL + ", bootstrap_key_env: CODAT_BOOTSTRAP_API_KEY}\n" +
				"    vault: {mount: secret, path: " + path + "}\n"
			if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "VAULT_TOKEN=" + tv.RootToken, "CODAT_BOOTSTRAP_API_KEY=" + emu.InitialKey()}
			if tt.env != "" {
				env = append(env, tt.env)
			}
			for _, args := range [][]string{{"check"}, {"rotate"}} {
				code, out := runEnvFor(t, 60*time.Second, env, append(args, "--config", cfg)...)
				if code != exitOK {
					t.Errorf("%s over TLS with the CA in %s: exit %d\n%s", args[0], tt.name, code, out)
				}
			}
			sec, err := tv.Client(t).KVv2("secret").Get(context.Background(), path)
			if err != nil || sec.Data["key_id"] == nil {
				t.Errorf("the rotation published nothing at secret/%s over TLS: %v", path, err)
			}
		})
	}
}
