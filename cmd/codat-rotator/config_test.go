package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/codatauth"
	"github.com/codat-rotator/codat-rotator/internal/secretfile"
)

func noEnv(string) string { return "" }

func TestExampleConfigParses(t *testing.T) {
	f, err := os.Open("../../configs/codat-rotator.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg, err := ParseConfig(f, noEnv)
	if err != nil {
		t.Fatalf("the example config: %v", err)
	}
	// The example shows the defaults: parsing it must equal defaulting an
	// all-but-empty file.
	minimal, err := ParseConfig(strings.NewReader("targets:\n  - name: production\n    vault: {path: codat/production}\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	got, want := cfg.Targets[0], minimal.Targets[0]
	if got.Codat.BaseURL != want.Codat.BaseURL || got.Vault != want.Vault || got.Schedule != want.Schedule ||
		got.Grace != want.Grace || got.KeyNamePrefix != want.KeyNamePrefix || got.MaxKeys != want.MaxKeys ||
		*got.ReserveSlots != *want.ReserveSlots || got.Jitter != want.Jitter {
		t.Errorf("example target %+v differs from the defaults %+v", got, want)
	}
	// Every top-level field, as reload knows them: a new one is checked
	// without being listed here.
	ev, mv := reflect.ValueOf(cfg), reflect.ValueOf(minimal)
	for _, f := range topLevelFields() {
		if f.name == "targets" {
			continue
		}
		if got, want := ev.Field(f.index).Interface(), mv.Field(f.index).Interface(); !reflect.DeepEqual(got, want) {
			t.Errorf("example %s = %+v, the default is %+v", f.name, got, want)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	cfg, err := ParseConfig(strings.NewReader("targets:\n  - name: a\n    vault: {path: codat/a}\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	tc := cfg.Targets[0]
	if cfg.StatePath != DefaultStatePath || cfg.Listen.Metrics != DefaultMetricsListen || cfg.Listen.AdminSocket != DefaultAdminSocket ||
		cfg.Vault.Auth.Method != "token" || tc.Codat.BaseURL != "https://api.codat.io" || tc.Vault.Mount != "secret" ||
		tc.Schedule != DefaultSchedule || tc.Grace.D() != 24*time.Hour || tc.KeyNamePrefix != DefaultPrefix ||
		tc.MaxKeys != 10 || *tc.ReserveSlots != 1 {
		t.Errorf("defaults: got %+v / %+v", cfg, tc)
	}
}

func TestConfigEnvExpansion(t *testing.T) {
	env := map[string]string{"STATE_DIR": "/srv/rotator", "TARGET": "prod"}
	src := "# ${UNSET} in a comment is fine\nstate_path: ${STATE_DIR}/state.db\ntargets:\n  - name: ${TARGET}\n    vault: {path: codat/${TARGET}}\n"
	cfg, err := ParseConfig(strings.NewReader(src), func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.StatePath != "/srv/rotator/state.db" || cfg.Targets[0].Name != "prod" || cfg.Targets[0].Vault.Path != "codat/prod" {
		t.Errorf("got %+v", cfg)
	}
	_, err = ParseConfig(strings.NewReader("state_path: ${NOPE}/x\n"), noEnv)
	if err == nil || err.Error() != "line 1: ${NOPE} is not set" {
		t.Errorf("unset variable: got %v", err)
	}
}

// TestBadConfigs lists settings that cannot work with the exact message
// each gives: the field and the reason.
func TestBadConfigs(t *testing.T) {
	const target = "targets:\n  - name: a\n    vault: {path: codat/a}\n"
	tests := []struct {
		name, yaml, want string
	}{
		{"no targets", "state_path: /x\n", "targets: at least one target is needed"},
		{"unknown field", "stat_path: /x\n" + target, "line 1: top level: unknown field stat_path (did you mean state_path?)"},
		{"unknown target field", "targets:\n  - name: a\n    vault: {path: codat/a}\n    graze: 1h\n", "line 4: targets[0]: unknown field graze (did you mean grace?)"},
		{"unknown field, nothing close", "targets:\n  - name: a\n    vault: {path: codat/a, secret: x}\n", "line 3: targets[0].vault: unknown field secret (the fields here: mount, path)"},
		{"bad duration", "targets:\n  - name: a\n    vault: {path: codat/a}\n    grace: soon\n", `line 4: targets[0].grace: "soon" is not a duration (such as 30s, 10m, 24h or 7d)`},
		{"every mistake at once", "targets:\n  - name: a\n    vault: {path: codat/a}\n    grace: soon\n    max_keys: ten\n",
			"line 4: targets[0].grace: \"soon\" is not a duration (such as 30s, 10m, 24h or 7d)\nline 5: targets[0].max_keys: want a whole number, got \"ten\""},
		// issue 16: YAML mistakes show no Go type names, and the right line.
		{"targets as a mapping", "targets:\n  name: a\n", "line 2: targets: want a list, got a mapping"},
		{"a target as text", "targets: [a]\n", `line 1: targets[0]: want a mapping of fields, got "a"`},
		{"auth as text", "vault:\n  auth: token\n" + target, `line 2: vault.auth: want a mapping of fields, got "token"`},
		{"webhooks as text", target + "    notify:\n      webhooks: https://hooks.example/x\n", `line 5: targets[0].notify.webhooks: want a list, got "https://hooks.example/x"`},
		{"a flag as text", "vault: {allow_insecure_http: sometimes}\n" + target, `line 1: vault.allow_insecure_http: want true or false, got "sometimes"`},
		{"indentation", "targets:\n  - name: a\n   vault: {path: codat/a}\n", "line 3: did not find expected '-' indicator, in: vault: {path: codat/a}"},
		{"a tab", target + "\tgrace: 1h\n", "line 4: found character that cannot start any token (a tab: YAML indents with spaces only), in: grace: 1h"},
		{"an unclosed quote", "targets:\n  - name: \"a\n    vault: {path: codat/a}\n", "line 2: found unexpected end of stream, in: - name: \"a"},
		{"bad cron", "targets:\n  - name: a\n    vault: {path: codat/a}\n    schedule: \"61 * * * *\"\n", `targets[0].schedule: "61 * * * *": end of range (61) above maximum (59): 61`},
		{"grace longer than the interval", "targets:\n  - name: a\n    vault: {path: codat/a}\n    schedule: \"0 3 * * *\"\n    grace: 48h\n",
			`targets[0].grace: 48h0m0s is longer than the 24h0m0s between runs of "0 3 * * *"`},
		{"jitter as long as the interval", "targets:\n  - name: a\n    vault: {path: codat/a}\n    schedule: \"@every 1h\"\n    grace: 30m\n    jitter: 1h\n",
			`targets[0].jitter: 1h0m0s is not shorter than the 1h0m0s between runs of "@every 1h"`},
		{"duplicate name", target + "  - name: a\n    vault: {path: codat/b}\n", `targets[1].name: "a" is also the name of targets[0]`},
		{"duplicate vault path", target + "  - name: b\n    vault: {path: codat/a}\n", "targets[1].vault.path: secret/codat/a is also the secret of targets[0]"},
		{"missing vault path", "targets:\n  - name: a\n", "targets[0].vault.path: must be set (the secret's path under the mount, such as codat/production)"},
		{"bad name", "targets:\n  - name: a b\n    vault: {path: codat/a}\n", `targets[0].name: "a b": want 1-63 letters, digits, '.', '_' or '-'`},
		{"prefix too long", target + "    key_name_prefix: this-prefix-is-far-too-long-\n",
			`targets[0].key_name_prefix: "this-prefix-is-far-too-long-" is 28 characters; Codat names hold 50 and the daemon appends 30 (the target's tag, a timestamp and a random part), so at most 20; shorten it`},
		{"reserve equals max", target + "    max_keys: 5\n    reserve_slots: 5\n", "targets[0].reserve_slots: 5 leaves no slot of max_keys 5 for rotations"},
		{"reserve leaves one slot", target + "    max_keys: 5\n    reserve_slots: 4\n", "targets[0].reserve_slots: 4 leaves 1 slot of max_keys 5; a rotation needs 2 (the served key and its successor)"},
		{"superseded key in grace fills the slots", target + "    schedule: \"@every 24h\"\n    grace: 24h\n    max_keys: 2\n    reserve_slots: 0\n",
			`targets[0]: schedule "@every 24h" with grace 24h and jitter 0s keeps 1 superseded key in its grace at each run, so a rotation needs 3 key slots (the served key, 1 in grace, the new one); max_keys 2 − reserve_slots 0 leaves 2`},
		{"jitter carries the grace to the next run", target + "    schedule: \"@every 24h\"\n    grace: 20h\n    jitter: 4h\n    max_keys: 2\n    reserve_slots: 0\n",
			`targets[0]: schedule "@every 24h" with grace 20h and jitter 4h keeps 1 superseded key in its grace at each run, so a rotation needs 3 key slots (the served key, 1 in grace, the new one); max_keys 2 − reserve_slots 0 leaves 2`},
		{"reserve leaves too few for a cron schedule", target + "    schedule: \"30 3 * * *\"\n    grace: 23h30m\n    jitter: 45m\n    max_keys: 3\n    reserve_slots: 1\n",
			`targets[0]: schedule "30 3 * * *" with grace 23h30m and jitter 45m keeps 1 superseded key in its grace at each run, so a rotation needs 3 key slots (the served key, 1 in grace, the new one); max_keys 3 − reserve_slots 1 leaves 2`},
		{"max keys over the cap", target + "    max_keys: 11\n", "targets[0].max_keys: 11: Codat allows 10 keys per client, and a rotation needs at least 2"},
		{"both bootstrap sources", "targets:\n  - name: a\n    vault: {path: codat/a}\n    codat: {bootstrap_key_file: /k, bootstrap_key_env: K}\n", "targets[0].codat: set bootstrap_key_file or bootstrap_key_env, not both"},
		{"bad base url", "targets:\n  - name: a\n    vault: {path: codat/a}\n    codat: {base_url: api.codat.io}\n", `targets[0].codat.base_url: "api.codat.io" is not an http(s) URL`},
		{"codat over http", "targets:\n  - name: a\n    vault: {path: codat/a}\n    codat: {base_url: \"http://codat.internal\"}\n",
			"targets[0].codat.base_url: http://codat.internal sends the Codat API key in clear; use https, or set targets[0].codat.allow_insecure_http: true to accept the risk"},
		{"codat over http to a name that looks local", "targets:\n  - name: a\n    vault: {path: codat/a}\n    codat: {base_url: \"http://127.0.0.1.nip.io:8080\"}\n",
			"targets[0].codat.base_url: http://127.0.0.1.nip.io:8080 sends the Codat API key in clear; use https, or set targets[0].codat.allow_insecure_http: true to accept the risk"},
		{"vault over http", "vault: {address: \"http://vault.internal:8200\"}\n" + target,
			"vault.address: http://vault.internal:8200 sends the Vault token in clear; use https, or set vault.allow_insecure_http: true to accept the risk"},
		{"vault over http to a LAN address", "vault: {address: \"http://10.0.0.5:8200\"}\n" + target,
			"vault.address: http://10.0.0.5:8200 sends the Vault token in clear; use https, or set vault.allow_insecure_http: true to accept the risk"},
		{"bad auth method", "vault: {auth: {method: ldap}}\n" + target, `vault.auth.method: "ldap": want token, approle or kubernetes`},
		{"bad log level", "log: {level: loud}\n" + target, `log: log level "loud": want debug, info, warn or error`},
		{"bad metrics listen", "listen: {metrics: nowhere}\n" + target, `listen.metrics: "nowhere" is not host:port`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig(strings.NewReader(tt.yaml), noEnv)
			if err == nil {
				t.Fatalf("no error, want %q", tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("got  %q\nwant %q", err.Error(), tt.want)
			}
		})
	}
}

// TestSlotRuleAccepts: schedules whose superseded keys are gone by the
// next run, or that leave room for them, pass.
func TestSlotRuleAccepts(t *testing.T) {
	const target = "targets:\n  - name: a\n    vault: {path: codat/a}\n"
	for name, extra := range map[string]string{
		"grace ends before the next tick":   "    schedule: \"@every 24h\"\n    grace: 23h\n    jitter: 59m\n    max_keys: 2\n    reserve_slots: 0\n",
		"a third slot for the key in grace": "    schedule: \"@every 24h\"\n    grace: 24h\n    max_keys: 3\n    reserve_slots: 0\n",
		"the defaults with a daily grace":   "    schedule: \"@daily\"\n    grace: 24h\n",
		"weekly, two slots, a day of grace": "    max_keys: 2\n    reserve_slots: 0\n",
		"cron schedule, reserve and jitter": "    schedule: \"30 3 * * *\"\n    grace: 23h30m\n    jitter: 45m\n    max_keys: 4\n    reserve_slots: 1\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseConfig(strings.NewReader(target+extra), noEnv); err != nil {
				t.Errorf("rejected: %v", err)
			}
		})
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"30s": 30 * time.Second, "7d": 7 * 24 * time.Hour, "1h30m": 90 * time.Minute, "0d": 0} {
		got, err := parseDuration(in)
		if err != nil || got != want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "d", "-1d", "1w", "3 days"} {
		if _, err := parseDuration(bad); err == nil {
			t.Errorf("parseDuration(%q): no error", bad)
		}
	}
}

// FuzzParseConfig: any input gives a config that validates, or an
// error; never a panic, and never a config with an invalid target.
func FuzzParseConfig(f *testing.F) {
	for _, seed := range []string{
		"targets:\n  - name: a\n    vault: {path: codat/a}\n",
		"targets:\n  - name: a\n    vault: {path: codat/a}\n    schedule: \"CRON_TZ=Europe/London 0 3 * * 1\"\n    grace: 7d\n",
		"targets:\n  - name: a\n    vault: {path: codat/a}\n    schedule: \"@every 1s\"\n    grace: 2s\n",
		"state_path: ${HOME}/x\ntargets: []\n",
		"targets:\n  - name: a\n    vault: {path: codat/a}\n    notify: {webhooks: [{url: 'https://x/y', format: slack}]}\n",
		"{",
		"targets: 3",
		"log: {level: debug, format: pretty}\ntargets:\n  - {name: b, vault: {path: p}, max_keys: 2, reserve_slots: 0}\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, src string) {
		cfg, err := ParseConfig(strings.NewReader(src), func(k string) string { return "v" })
		if err != nil {
			return
		}
		if verr := cfg.Validate(); verr != nil {
			t.Fatalf("ParseConfig accepted a config that does not validate: %v", verr)
		}
		for _, tc := range cfg.Targets {
			if tc.ReserveSlots == nil || tc.MaxKeys-*tc.ReserveSlots < 2 || tc.Vault.Path == "" {
				t.Fatalf("accepted target %+v", tc)
			}
		}
	})
}

// TestPlainHTTPAccepted: loopback stays allowed without opting in; the
// opt-in accepts any host and warns; a webhook over http only warns.
func TestPlainHTTPAccepted(t *testing.T) {
	for _, tt := range []struct {
		name, yaml string
		env        map[string]string
		warns      []string
	}{
		{name: "loopback", yaml: "vault: {address: \"http://127.0.0.1:8200\"}\ntargets:\n  - name: a\n    vault: {path: codat/a}\n    codat: {base_url: \"http://localhost:8484\"}\n  - name: b\n    vault: {path: codat/b}\n    codat: {base_url: \"http://[::1]:8484\"}\n  - name: c\n    vault: {path: codat/c}\n    codat: {base_url: \"http://127.9.9.9\"}\n"},
		{name: "https anywhere", yaml: "vault: {address: \"https://vault.internal:8200\"}\ntargets:\n  - name: a\n    vault: {path: codat/a}\n"},
		{name: "opt-in", yaml: "vault: {address: \"http://vault.internal:8200\", allow_insecure_http: true}\ntargets:\n  - name: a\n    vault: {path: codat/a}\n    codat: {base_url: \"http://codat.internal\", allow_insecure_http: true}\n",
			warns: []string{
				"vault.address: http://vault.internal:8200 sends the Vault token in clear (vault.allow_insecure_http is set)",
				"targets[0].codat.base_url: http://codat.internal sends the Codat API key in clear (targets[0].codat.allow_insecure_http is set)",
			}},
		{name: "opt-in unused is silent", yaml: "vault: {address: \"https://vault.internal\", allow_insecure_http: true}\ntargets:\n  - name: a\n    vault: {path: codat/a}\n    codat: {allow_insecure_http: true}\n"},
		{name: "opt-in for VAULT_ADDR", yaml: "vault: {allow_insecure_http: true}\ntargets:\n  - name: a\n    vault: {path: codat/a}\n",
			env:   map[string]string{"VAULT_ADDR": "http://vault.internal:8200", "VAULT_TOKEN": "t"},
			warns: []string{"vault.address ($VAULT_ADDR): http://vault.internal:8200 sends the Vault token in clear (vault.allow_insecure_http is set)"}},
		{name: "webhook over http", yaml: "targets:\n  - name: a\n    vault: {path: codat/a}\n    notify: {webhooks: [{url: \"http://hooks.internal/T000/SECRETPATH\"}, {url: \"http://127.0.0.1:9/x\"}]}\n",
			warns: []string{"targets[0].notify.webhooks[0].url: plain http to http://hooks.internal/…: events (and any token in the URL) travel in clear; use https"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			getenv := func(k string) string { return tt.env[k] }
			cfg, err := ParseConfig(strings.NewReader(tt.yaml), getenv)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := vaultConfig(cfg.Vault, func(k string) string {
				if k == "VAULT_ADDR" && tt.env == nil {
					return "http://127.0.0.1:8200"
				}
				if k == "VAULT_TOKEN" && tt.env == nil {
					return "t"
				}
				return getenv(k)
			}); err != nil {
				t.Errorf("vaultConfig: %v", err)
			}
			got := insecureHTTPWarnings(cfg, getenv)
			if strings.Join(got, "\n") != strings.Join(tt.warns, "\n") {
				t.Errorf("warnings:\ngot  %q\nwant %q", got, tt.warns)
			}
		})
	}
}

// TestVaultAddrFromEnvInClear: $VAULT_ADDR obeys the same rule as
// vault.address, and the error says where the address came from.
func TestVaultAddrFromEnvInClear(t *testing.T) {
	cfg, err := ParseConfig(strings.NewReader("targets:\n  - name: a\n    vault: {path: codat/a}\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"VAULT_ADDR": "http://vault.internal:8200", "VAULT_TOKEN": "t"}
	_, err = vaultConfig(cfg.Vault, func(k string) string { return env[k] })
	want := "vault.address ($VAULT_ADDR): http://vault.internal:8200 sends the Vault token in clear; use https, or set vault.allow_insecure_http: true to accept the risk"
	if err == nil || err.Error() != want {
		t.Errorf("got  %v\nwant %s", err, want)
	}
}

// TestOneLoopbackRule: the daemon's config and codatauth judge the same
// hosts loopback (secret.LoopbackHost, the hosts Go's proxies skip), so
// http://localhost.:PORT, which HTTP_PROXY would carry in clear, is
// refused by both; http://localhost:PORT and 127.0.0.1 pass both.
func TestOneLoopbackRule(t *testing.T) {
	for host, loopback := range map[string]bool{
		"127.0.0.1": true, "127.255.0.3": true, "[::1]": true, "localhost": true, "[::ffff:127.0.0.1]": true,
		"localhost.": false, "LOCALHOST": false, "vault.localhost": false, "127.0.0.1.": false,
		"10.0.0.1": false, "0.0.0.0": false, "codat.internal": false, "127.0.0.1.nip.io": false,
	} {
		base := "http://" + host + ":8484"
		cfg := fmt.Sprintf("vault: {address: %q}\ntargets:\n  - name: a\n    codat: {base_url: %q}\n    vault: {path: codat/a}\n", "http://"+host+":8200", base)
		_, err := ParseConfig(strings.NewReader(cfg), noEnv)
		if got := err == nil; got != loopback {
			t.Errorf("config with %s: error %v, want loopback=%v", host, err, loopback)
		}
		if !loopback && (err == nil || !strings.Contains(err.Error(), "sends the Codat API key in clear") || !strings.Contains(err.Error(), "sends the Vault token in clear")) {
			t.Errorf("config with %s: got %v, want both in-clear refusals", host, err)
		}
		_, cerr := codatauth.New(context.Background(), codatauth.Config{BaseURL: base, Source: codatauth.NewFileSource("/nonexistent")})
		refused := cerr != nil && strings.Contains(cerr.Error(), "plain http")
		if refused == loopback {
			t.Errorf("codatauth with %s: %v, want refused=%v as the daemon", host, cerr, !loopback)
		}
	}
}

// TestBootstrapKeyFileChecked: the bootstrap key file goes through
// secretfile's rule: writable by others is refused before it is read,
// readable by others is read with a warning that names the file.
func TestBootstrapKeyFileChecked(t *testing.T) {
	dir := t.TempDir()
	file := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("k3y\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	tc := TargetConfig{Name: "a", Schedule: DefaultSchedule}
	n := 1
	tc.ReserveSlots = &n

	tc.Codat.BootstrapKeyFile = file("writable", 0o666)
	_, err := rotationTarget(tc, noEnv, log, false).Bootstrap()
	if !errors.Is(err, secretfile.ErrUnsafe) || !strings.Contains(err.Error(), "bootstrap_key_file "+tc.Codat.BootstrapKeyFile+": mode 0666") {
		t.Errorf("writable: got %v, want a refusal naming the file and mode", err)
	}

	tc.Codat.BootstrapKeyFile = file("readable", 0o644)
	key, err := rotationTarget(tc, noEnv, log, false).Bootstrap()
	if err != nil || key.Reveal() != "k3y" {
		t.Fatalf("readable: got an error %v", err)
	}
	want := "bootstrap_key_file " + tc.Codat.BootstrapKeyFile + ": mode 0644 lets other users read the Codat key; chmod 600 it"
	if !strings.Contains(buf.String(), "level=WARN") || !strings.Contains(buf.String(), want) {
		t.Errorf("log %q lacks the warning %q", buf.String(), want)
	}
	if strings.Contains(buf.String(), "k3y") {
		t.Error("the log shows the key")
	}
}

// TestVaultTokenPath: every address the Vault token can go to is held
// to the one loopback rule: $VAULT_AGENT_ADDR (which the Vault library
// prefers to any address) and a Vault proxy (which the library uses for
// loopback addresses too) as well as the address. The config's address
// wins over the environment's, and is the one the client is given.
func TestVaultTokenPath(t *testing.T) {
	for _, tt := range []struct {
		name     string
		vault    VaultConfig
		env      map[string]string
		wantAddr string
		wantErr  string
	}{
		{name: "agent address from the environment", env: map[string]string{"VAULT_AGENT_ADDR": "http://127.0.0.1:8100", "VAULT_ADDR": "https://vault.example"},
			wantAddr: "http://127.0.0.1:8100"},
		{name: "agent on a unix socket", env: map[string]string{"VAULT_AGENT_ADDR": "unix:///run/agent.sock"}, wantAddr: "unix:///run/agent.sock"},
		{name: "agent address in clear", env: map[string]string{"VAULT_AGENT_ADDR": "http://agent.example:8100", "VAULT_ADDR": "https://vault.example"},
			wantErr: "vault.address ($VAULT_AGENT_ADDR): http://agent.example:8100 sends the Vault token in clear"},
		{name: "the config's address wins over the agent's", vault: VaultConfig{Address: "https://vault.example"},
			env: map[string]string{"VAULT_AGENT_ADDR": "http://agent.example:8100"}, wantAddr: "https://vault.example"},
		{name: "localhost. is not loopback", env: map[string]string{"VAULT_ADDR": "http://localhost.:8200"},
			wantErr: "vault.address ($VAULT_ADDR): http://localhost.:8200 sends the Vault token in clear"},
		{name: "a loopback Vault through a proxy elsewhere", env: map[string]string{"VAULT_ADDR": "http://127.0.0.1:8200", "VAULT_PROXY_ADDR": "http://u:pr0xy-pw@proxy.example:3128"},
			wantErr: "$VAULT_PROXY_ADDR: vault.address ($VAULT_ADDR) goes through the proxy http://proxy.example:3128 in plain http, which sends the Vault token in clear"},
		{name: "a loopback Vault through a loopback proxy", env: map[string]string{"VAULT_ADDR": "http://127.0.0.1:8200", "VAULT_HTTP_PROXY": "http://127.0.0.1:3128"},
			wantAddr: "http://127.0.0.1:8200"},
		{name: "an https Vault through a proxy elsewhere", env: map[string]string{"VAULT_ADDR": "https://vault.example", "VAULT_PROXY_ADDR": "http://proxy.example:3128"},
			wantAddr: "https://vault.example"},
		{name: "a proxy in clear, accepted", vault: VaultConfig{AllowInsecureHTTP: true},
			env: map[string]string{"VAULT_ADDR": "http://127.0.0.1:8200", "VAULT_PROXY_ADDR": "http://proxy.example:3128"}, wantAddr: "http://127.0.0.1:8200"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.vault.Auth.Method = "token"
			env := map[string]string{"VAULT_TOKEN": "t"}
			for k, v := range tt.env {
				env[k] = v
			}
			c, err := vaultConfig(tt.vault, func(k string) string { return env[k] })
			switch {
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("got %v, want %q", err, tt.wantErr)
			case tt.wantErr == "" && err != nil:
				t.Errorf("got %v, want %s", err, tt.wantAddr)
			case tt.wantErr == "" && c.Address != tt.wantAddr:
				t.Errorf("address: got %s, want %s", c.Address, tt.wantAddr)
			}
			if err != nil && strings.Contains(err.Error(), "pr0xy-pw") {
				t.Errorf("the error holds the proxy's password: %v", err)
			}
		})
	}
}

// TestTLSRelaxationWarned: VAULT_SKIP_VERIFY=true is warned about at
// every start, as allow_insecure_http is; a proxy in clear that is
// accepted is warned about too.
func TestTLSRelaxationWarned(t *testing.T) {
	cfg := Config{Vault: VaultConfig{Address: "https://vault.example", AllowInsecureHTTP: true}}
	env := map[string]string{"VAULT_SKIP_VERIFY": "true"}
	warns := strings.Join(insecureHTTPWarnings(cfg, func(k string) string { return env[k] }), "\n")
	if !strings.Contains(warns, "VAULT_SKIP_VERIFY is set: Vault's TLS certificate is not checked") {
		t.Errorf("VAULT_SKIP_VERIFY=true: warnings %q", warns)
	}
	env = map[string]string{"VAULT_SKIP_VERIFY": "false", "VAULT_PROXY_ADDR": "http://proxy.example:3128"}
	cfg.Vault.Address = "http://127.0.0.1:8200"
	warns = strings.Join(insecureHTTPWarnings(cfg, func(k string) string { return env[k] }), "\n")
	if strings.Contains(warns, "VAULT_SKIP_VERIFY") || !strings.Contains(warns, "goes through the proxy $VAULT_PROXY_ADDR in plain http") {
		t.Errorf("a proxy in clear, accepted: warnings %q", warns)
	}
}

// TestConfigErrorsHideExpandedValues: an error about the config never
// prints a value that ${NAME} put into it (a webhook's token, a URL with
// a password): the syntax error quotes the line as written, and type and
// validation errors show ${NAME} where its value was.
func TestConfigErrorsHideExpandedValues(t *testing.T) {
	const secretValue = "https://hooks.example/services/T0/B0/s3cr3t-t0ken"
	env := map[string]string{"HOOK": secretValue, "PASSWORD_URL": "ftp://u:pa55w0rd@codat.example", "KEYS": "s3cr3tkeys"}
	getenv := func(k string) string { return env[k] }
	target := "targets:\n  - name: a\n    vault: {path: codat/a}\n"
	for name, tt := range map[string]struct{ doc, want string }{
		"a syntax error on the line": {
			doc:  target + "    notify:\n      webhooks:\n        - url: \"${HOOK}\n",
			want: `in: - url: "${HOOK}`,
		},
		"a type error": {
			doc:  target + "    max_keys: ${KEYS}\n",
			want: `targets[0].max_keys: want a whole number, got "${KEYS}"`,
		},
		"a validation error": {
			doc:  "targets:\n  - name: a\n    vault: {path: codat/a}\n    codat: {base_url: \"${PASSWORD_URL}\"}\n",
			want: `targets[0].codat.base_url: "${PASSWORD_URL}" is not an http(s) URL`,
		},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseConfig(strings.NewReader(tt.doc), getenv)
			if err == nil {
				t.Fatal("parsed")
			}
			for _, v := range env {
				if strings.Contains(err.Error(), v) || strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), "pa55w0rd") {
					t.Errorf("the error holds an expanded value: %v", err)
				}
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v\nwant %q in it", err, tt.want)
			}
		})
	}
}

// TestVaultLocationMistakes (issue 24): a mount and path that would send
// the secret somewhere else, silently, are refused with where the daemon
// would write and what to write instead; near misses pass.
func TestVaultLocationMistakes(t *testing.T) {
	for _, tt := range []struct {
		mount, path string
		want        string // "" for accepted
	}{
		{"secret", "codat/production", ""},
		{"secret", "secrets/codat", ""},
		{"kv/team", "codat/x", ""},
		{"secret", "secret/codat/x", `targets[0].vault.path: "secret/codat/x" starts with the mount secret/, which vault.mount already names: the daemon would write secret/data/secret/codat/x; write path: codat/x`},
		{"/kv/team/", "kv/team/codat/x", "the daemon would write kv/team/data/kv/team/codat/x; write path: codat/x"},
		{"secret/data", "codat/x", `targets[0].vault.mount: "secret/data" ends in /data, which the daemon adds itself: it would write secret/data/data/codat/x; write mount: secret`},
		{"secret/metadata/", "codat/x", `targets[0].vault.mount: "secret/metadata/" ends in /metadata, which the daemon adds itself: it would write secret/metadata/data/codat/x; write mount: secret`},
	} {
		yaml := fmt.Sprintf("targets:\n  - name: production\n    vault: {mount: %q, path: %q}\n", tt.mount, tt.path)
		_, err := ParseConfig(strings.NewReader(yaml), noEnv)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("mount %q, path %q: %v; want it accepted", tt.mount, tt.path, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("mount %q, path %q: %v; want %q", tt.mount, tt.path, err, tt.want)
		}
	}
}

// TestVaultAddrWithAPIPrefix (issue 24): a Vault address ending in /v1
// is refused, naming the address to set; a path before it is kept.
func TestVaultAddrWithAPIPrefix(t *testing.T) {
	for addr, want := range map[string]string{
		"https://vault.example:8200":     "",
		"https://vault.example:8200/v1":  "set it to https://vault.example:8200",
		"https://vault.example:8200/v1/": "set it to https://vault.example:8200",
		"https://proxy.example/vault/v1": "set it to https://proxy.example/vault",
		"https://vault.example:8200/v10": "",
	} {
		env := func(name string) string {
			if name == "VAULT_ADDR" {
				return addr
			}
			return map[string]string{"VAULT_TOKEN": "t"}[name]
		}
		_, err := vaultConfig(VaultConfig{Auth: VaultAuthConfig{Method: "token"}}, env)
		switch {
		case want == "" && err != nil:
			t.Errorf("VAULT_ADDR=%s: %v; want it accepted", addr, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), "ends in /v1") || !strings.Contains(err.Error(), want)):
			t.Errorf("VAULT_ADDR=%s: %v; want %q", addr, err, want)
		}
	}
}
