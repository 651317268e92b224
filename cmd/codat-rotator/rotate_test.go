package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/codat-rotator/codat-rotator/store"
)

// runRotate runs the binary's rotate in e's world and returns its exit
// code and output.
func (e *crashEnv) runRotate(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"rotate", "--config", e.config}, args...)...)
	cmd.Env = append(os.Environ(), "VAULT_TOKEN="+e.vault.RootToken, "CODAT_BOOTSTRAP_API_KEY="+e.emu.InitialKey())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	e.output.Write(out.Bytes())
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, out.String()
}

func TestRotateDryRunChangesNothing(t *testing.T) {
	e := newCrashEnv(t)
	e.rotate(t)
	state := filepath.Join(e.dir, "state.db")
	before, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	api := e.vault.Client(t)
	md, err := api.KVv2(e.mount).GetMetadata(context.Background(), "codat/crash")
	if err != nil {
		t.Fatal(err)
	}
	keys := len(e.emu.Keys())

	code, out := e.runRotate(t, "--dry-run", "--log-level", "error")
	if code != 0 {
		t.Fatalf("dry run: exit %d\n%s", code, out)
	}
	for _, want := range []string{"crash: dry run, nothing changed", "would create key codat-rotator-", "would retire key"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run output lacks %q:\n%s", want, out)
		}
	}
	after, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("the dry run changed the state file")
	}
	md2, err := api.KVv2(e.mount).GetMetadata(context.Background(), "codat/crash")
	if err != nil {
		t.Fatal(err)
	}
	if md2.CurrentVersion != md.CurrentVersion {
		t.Errorf("the dry run wrote to vault: version %d → %d", md.CurrentVersion, md2.CurrentVersion)
	}
	if got := len(e.emu.Keys()); got != keys {
		t.Errorf("the dry run made keys at codat: %d → %d", keys, got)
	}
	for _, ev := range e.emu.Events(0) {
		if ev.Method != "GET" && ev.Time.After(md2.UpdatedTime) {
			t.Errorf("the dry run sent %s %s", ev.Method, ev.Path)
		}
	}
}

func TestRotateEmergencyRevokesForeignKey(t *testing.T) {
	e := newCrashEnv(t)
	e.rotate(t)
	leaked, _, err := e.emu.AddPortalKey("leaked-in-a-ticket")
	if err != nil {
		t.Fatal(err)
	}
	code, out := e.runRotate(t, "--target", "crash", "--emergency", "--revoke", leaked)
	if code != 0 {
		t.Fatalf("emergency: exit %d\n%s", code, out)
	}
	// Only the new key is left: the managed keys retired at once, the
	// named foreign key revoked.
	active := 0
	for _, k := range e.emu.Keys() {
		if k.Deleted == nil {
			active++
		}
		if k.ID == leaked && k.Deleted == nil {
			t.Errorf("the revoked key %s still exists", leaked)
		}
	}
	if active != 1 {
		t.Errorf("keys left after the emergency: got %d, want 1\n%s", active, out)
	}
	e.checkInvariants(t)
}

func TestRotateErrors(t *testing.T) {
	e := newCrashEnv(t)
	t.Run("revoke without target", func(t *testing.T) {
		code, out := e.runRotate(t, "--revoke", "x")
		if code != exitUsage || !strings.Contains(out, "--revoke needs --target") {
			t.Errorf("exit %d:\n%s", code, out)
		}
	})
	t.Run("unknown target", func(t *testing.T) {
		code, out := e.runRotate(t, "--target", "nope")
		if code != exitUsage || !strings.Contains(out, `--target "nope": no such target (configured: crash)`) {
			t.Errorf("exit %d:\n%s", code, out)
		}
	})
	t.Run("missing config", func(t *testing.T) {
		code, _, stderr := run(t, "rotate", "--config", filepath.Join(t.TempDir(), "none.yaml"))
		if code != exitUsage || !strings.Contains(stderr, "none.yaml: no such file: name yours with --config FILE") {
			t.Errorf("exit %d:\n%s", code, stderr)
		}
	})
	t.Run("revoke of an unknown key", func(t *testing.T) {
		code, out := e.runRotate(t, "--target", "crash", "--emergency", "--revoke", "00000000-0000-4000-8000-000000000000")
		if code != exitError || !strings.Contains(out, `cannot revoke "00000000-0000-4000-8000-000000000000": codat holds no key with that id`) {
			t.Errorf("exit %d:\n%s", code, out)
		}
		for _, ev := range e.emu.Events(0) {
			if ev.Method == "POST" {
				t.Errorf("a key was created despite the bad --revoke")
			}
		}
	})
	t.Run("state file locked", func(t *testing.T) {
		db, err := store.Open(filepath.Join(e.dir, "state.db"), store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		code, out := e.runRotate(t)
		want := fmt.Sprintf("state file is in use by another codat-rotator (pid %d: %s", os.Getpid(), os.Args[0])
		if code != exitError || !strings.Contains(out, want) {
			t.Errorf("exit %d, want %q in:\n%s", code, want, out)
		}
	})
	t.Run("no bootstrap key", func(t *testing.T) {
		cfg := strings.Replace(mustRead(t, e.config), "bootstrap_key_env: CODAT_BOOTSTRAP_API_KEY", "bootstrap_key_env: \"\"", 1)
		cfg = strings.Replace(cfg, "path: codat/crash", "path: codat/empty", 1)
		path := filepath.Join(t.TempDir(), "config.yaml")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		code, out := e.runRotate(t, "--config", path)
		// A configuration error: exit 2 (issue 16).
		if code != exitUsage || !strings.Contains(out, "holds no secret; set bootstrap_key_file or bootstrap_key_env") {
			t.Errorf("exit %d:\n%s", code, out)
		}
	})
}

func mustRead(tb testing.TB, path string) string {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

func TestRotateDryRunBeforeFirstRun(t *testing.T) {
	e := newCrashEnv(t)
	code, out := e.runRotate(t, "--dry-run", "--log-level", "error")
	if code != 0 || !strings.Contains(out, "holds no secret: the bootstrap key") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "state.db")); !os.IsNotExist(err) {
		t.Errorf("the dry run created the state file: %v", err)
	}
	if got := len(e.emu.Keys()); got != 1 {
		t.Errorf("keys at codat: got %d, want the 1 it started with", got)
	}
}
