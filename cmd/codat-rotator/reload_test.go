package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestReloadCommand: `codat-rotator reload` (the unit's ExecReload)
// has the running daemon apply a changed config and says so; an invalid
// file is refused by the daemon, which keeps rotating with the old one,
// and the command fails with the daemon's reason, as `systemctl reload`
// must, and exit 2, as every command for a configuration to fix. Without a daemon it fails and says nothing was reloaded.
func TestReloadCommand(t *testing.T) {
	e := newDaemonEnv(t, "@every 1h", "1s")
	d := e.start(t, nil)
	d.waitRunning(t)
	d.waitRotations(t, 10*time.Second, 1) // the catch-up: it never rotated

	e.writeConfig(t, "@every 2s", "1s")
	code, stdout, stderr := e.cli(t, nil, "reload")
	if code != 0 || stdout != "config reloaded: 1 target(s): crash\n" {
		t.Fatalf("reload of a valid config: exit %d, stdout %q, stderr %q; want 0 and the targets", code, stdout, stderr)
	}
	// The answer came after the reload was applied, not before.
	if n := d.count(msgIs("config reloaded")); n != 1 {
		t.Errorf("config reloaded: logged %d times when reload returned, want 1", n)
	}
	if n := d.count(func(r logRecord) bool { return r.str("msg") == "target scheduled" && r.str("schedule") == "@every 2s" }); n != 1 {
		t.Errorf("log lines scheduling @every 2s: got %d, want 1", n)
	}
	d.waitRotations(t, 10*time.Second, 3)

	// grace longer than the interval: the daemon refuses the file.
	e.writeConfig(t, "@every 2s", "1h")
	code, stdout, stderr = e.cli(t, nil, "reload")
	if code != exitUsage || stdout != "" ||
		!strings.Contains(stderr, "codat-rotator reload: daemon: config reload failed; keeping the running config: ") ||
		!strings.Contains(stderr, "targets[0].grace") {
		t.Errorf("reload of an invalid config: exit %d, stdout %q, stderr %q; want %d (a configuration to fix, as in every command) and the daemon's reason naming targets[0].grace", code, stdout, stderr, exitUsage)
	}
	n := d.count(msgIs("rotation done"))
	d.waitRotations(t, 10*time.Second, n+1) // the 2s schedule runs on

	// A file that is not YAML at all names no socket: the default one is
	// tried (the unit's; a test daemon is not there), and the command
	// fails saying nothing was reloaded and why it looked there.
	raw, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.config, append(raw, []byte("targets: [\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = e.cli(t, nil, "reload")
	if code != exitError || !strings.Contains(stderr, "so nothing was reloaded") ||
		!strings.Contains(stderr, "listen.admin_socket could not be read from "+e.config+", so the default was tried: line ") {
		t.Errorf("reload of a broken file: exit %d, stderr %q; want %d, nothing reloaded, and the YAML error", code, stderr, exitError)
	}
	if got := d.count(msgIs("config reloaded")); got != 1 {
		t.Errorf("config reloaded: logged %d times, want 1 (the refused configs are not applied)", got)
	}

	d.stop(t)
	e.writeConfig(t, "@every 2s", "1s")
	code, _, stderr = e.cli(t, nil, "reload")
	if code != exitError || !strings.Contains(stderr, "no daemon answers on "+e.sock+", so nothing was reloaded") {
		t.Errorf("reload without a daemon: exit %d, stderr %q; want %d saying nothing was reloaded", code, stderr, exitError)
	}
	e.checkInvariants(t)
}

// TestAdminSocketIn: reload finds the daemon's socket in a file the
// daemon would refuse, and falls back to the default, with the reason,
// when it cannot read one.
func TestAdminSocketIn(t *testing.T) {
	dir := t.TempDir()
	env := func(name string) string {
		if name == "RUN" {
			return "/run/x"
		}
		return ""
	}
	for _, tt := range []struct {
		name, yaml, want string
		err              bool
	}{
		{"set", "listen: {admin_socket: /run/a/admin.sock}\ntargets: []\n", "/run/a/admin.sock", false},
		{"invalid elsewhere", "listen: {admin_socket: /run/a/admin.sock}\nnonsense: 1\ntargets: [{name: ''}]\n", "/run/a/admin.sock", false},
		{"from the environment", "listen: {admin_socket: ${RUN}/admin.sock}\n", "/run/x/admin.sock", false},
		{"disabled", "listen: {admin_socket: ''}\n", "", false},
		{"absent", "state_path: /tmp/s.db\n", DefaultAdminSocket, false},
		{"empty", "", DefaultAdminSocket, false},
		{"not YAML", "listen: [\n", DefaultAdminSocket, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := dir + "/" + strings.ReplaceAll(tt.name, " ", "-") + ".yaml"
			if err := os.WriteFile(path, []byte(tt.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := adminSocketIn(path, env)
			if got != tt.want || (err != nil) != tt.err {
				t.Errorf("got %q, %v; want %q, error %v", got, err, tt.want, tt.err)
			}
		})
	}
	if got, err := adminSocketIn(dir+"/missing.yaml", env); got != DefaultAdminSocket || err == nil {
		t.Errorf("missing file: got %q, %v; want the default and the error", got, err)
	}
}
