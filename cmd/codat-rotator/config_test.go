package main

import (
	"os"
	"strings"
	"testing"
	"time"
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
	if cfg.StatePath != minimal.StatePath || cfg.Listen != minimal.Listen || cfg.Log != minimal.Log || cfg.Vault.Auth != minimal.Vault.Auth {
		t.Errorf("example globals differ from the defaults:\n%+v\n%+v", cfg, minimal)
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
		{"unknown field", "stat_path: /x\n" + target, "line 1: unknown field stat_path"},
		{"unknown target field", "targets:\n  - name: a\n    vault: {path: codat/a}\n    graze: 1h\n", "line 4: unknown field graze"},
		{"bad duration", "targets:\n  - name: a\n    vault: {path: codat/a}\n    grace: soon\n", `line 4: "soon" is not a duration (such as 30s, 10m, 24h or 7d)`},
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
			`targets[0].key_name_prefix: "this-prefix-is-far-too-long-" is 28 characters; Codat names hold 50 and the daemon appends 23, so at most 27`},
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
