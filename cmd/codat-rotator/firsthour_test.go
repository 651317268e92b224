package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/codat/emulator"
	"github.com/codat-rotator/codat-rotator/store"
)

// The first errors of issue 24 that need a running daemon, through the
// real binary: a reload that adds a target the daemon cannot start, a
// retry in progress, a resume, and a restart's new plan.

// TestReloadRefusesATargetThatCannotStart: a reloaded config whose new
// target needs a bootstrap variable the daemon's environment lacks is
// refused (exit 2, as in every command), even when the operator's shell
// has it; the daemon keeps the old config and says whose environment
// matters.
func TestReloadRefusesATargetThatCannotStart(t *testing.T) {
	e := newDaemonEnv(t, "@every 1h", "1s")
	d := e.start(t, nil)
	d.waitRunning(t)
	d.waitRotations(t, 10*time.Second, 1)

	extra := fmt.Sprintf("  - name: extra\n    codat: {base_url: %s, bootstrap_key_env: CODAT_EXTRA_KEY}\n    vault: {mount: %s, path: codat/extra}\n    schedule: \"@every 1h\"\n    grace: 1s\n",
		e.codatURL, e.mount)
	raw, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.config, append(raw, extra...), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := e.cli(t, []string{"CODAT_EXTRA_KEY=" + e.emu.InitialKey()}, "reload")
	for _, want := range []string{
		"target extra cannot start: " + e.mount + "/codat/extra holds no key yet",
		"bootstrap_key_env names $CODAT_EXTRA_KEY, which is not set in the daemon's environment",
		"a variable exported in your shell does not reach a running daemon",
	} {
		if code != exitUsage || !strings.Contains(stderr, want) {
			t.Errorf("reload: exit %d, want %d with %q in stdout %q, stderr:\n%s", code, exitUsage, want, stdout, stderr)
		}
	}
	code, stdout, _ = e.cli(t, nil, "status", "--json")
	var rep struct{ Targets []struct{ Name string } }
	if err := json.Unmarshal([]byte(stdout), &rep); code != 0 || err != nil || len(rep.Targets) != 1 || rep.Targets[0].Name != "crash" {
		t.Errorf("status after the refused reload: exit %d, %v; want the old config's one target crash:\n%s", code, err, stdout)
	}
	d.stop(t)
	e.checkInvariants(t)
}

// TestStatusShowsRetry: between a failed attempt and its retry (30 s
// later), status says the target is retrying, which attempt comes next,
// when, and why the last one failed, instead of "ok".
func TestStatusShowsRetry(t *testing.T) {
	e := newDaemonEnv(t, "@every 1h", "1s")
	d := e.start(t, nil, "--shutdown-timeout", "1s")
	d.waitRunning(t)
	d.waitRotations(t, 10*time.Second, 1)
	// Codat answers the next create with a 503 before making a key: the
	// attempt fails, worth a retry.
	if err := e.emu.SetFaults(emulator.Faults{Create: emulator.OpFaults{Fail: 1, FailStatus: 503}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rot := exec.CommandContext(ctx, binary, "rotate", "--config", e.config, "--target", "crash")
	rot.Env = e.env()
	var rotOut bytes.Buffer
	rot.Stdout, rot.Stderr = &rotOut, &rotOut
	if err := rot.Start(); err != nil {
		t.Fatal(err)
	}
	var text string
	d.until(t, 20*time.Second, "status to show the retry", func() bool {
		_, text, _ = e.cli(t, nil, "status")
		return strings.Contains(text, "state:          retrying: attempt 2 of 3 at ")
	})
	if !strings.Contains(text, "no usable answer from codat") {
		t.Errorf("status names no reason for the retry:\n%s", text)
	}
	_, js, _ := e.cli(t, nil, "status", "--json")
	var rep struct {
		Targets []struct {
			Retry *struct {
				Attempt, Attempts int
				At                time.Time
				Error             string
			} `json:"retry"`
		}
	}
	if err := json.Unmarshal([]byte(js), &rep); err != nil || len(rep.Targets) != 1 || rep.Targets[0].Retry == nil ||
		rep.Targets[0].Retry.Attempt != 2 || rep.Targets[0].Retry.Attempts != 3 || time.Until(rep.Targets[0].Retry.At) > 31*time.Second {
		t.Errorf("status --json: %v; want retry {attempt 2, attempts 3, at within 30 s}:\n%s", err, js)
	}
	d.stop(t) // the retry's wait is cut short after --shutdown-timeout
	_ = rot.Wait()
	e.output.Write(rotOut.Bytes())
	e.checkInvariants(t)
}

// TestResumeRetiresAtOnce: keys a halt held past their grace go as soon
// as the target is resumed, not at the daemon's next look at the state
// file (a minute later); without a daemon, resume retires them itself.
func TestResumeRetiresAtOnce(t *testing.T) {
	for _, viaDaemon := range []bool{true, false} {
		t.Run(map[bool]string{true: "through the daemon", false: "without a daemon"}[viaDaemon], func(t *testing.T) {
			e := newDaemonEnv(t, "@every 1h", "1s")
			e.rotate(t) // the bootstrap key now retires 1 s after the new key's publish
			st := halt(t, e.statePath())
			if len(st.Keys) < 2 {
				t.Fatalf("want a retiring key beside the served one, state has %d keys", len(st.Keys))
			}
			time.Sleep(1500 * time.Millisecond) // past the grace
			var d *daemonProc
			if viaDaemon {
				d = e.start(t, nil)
				d.waitRunning(t)
				time.Sleep(time.Second) // halted: nothing retires
			}
			before := len(e.activeKeys())
			if before != 2 {
				t.Fatalf("keys at Codat before resume: %d, want 2 (the served one, one held by the halt)", before)
			}
			start := time.Now()
			code, stdout, stderr := e.cli(t, nil, "resume", "--target", "crash")
			if code != 0 || !strings.Contains(stdout, "crash: resumed; scheduled rotations run again, and keys overdue for retirement go now") {
				t.Fatalf("resume: exit %d\n%s%s", code, stdout, stderr)
			}
			if !viaDaemon && !strings.Contains(stdout, "deleted key ") {
				t.Errorf("resume without a daemon names no deleted key:\n%s", stdout)
			}
			deadline := time.Now().Add(10 * time.Second)
			for len(e.activeKeys()) != 1 {
				if time.Now().After(deadline) {
					t.Fatalf("10 s after resume, %d keys at Codat; want the held one retired at once", len(e.activeKeys()))
				}
				time.Sleep(50 * time.Millisecond)
			}
			t.Logf("the held key went %s after resume", time.Since(start).Round(time.Millisecond))
			if d != nil {
				d.stop(t)
			}
			e.checkInvariants(t)
		})
	}
}

// halt marks the target crash halted in the state file at path, as
// three failed scheduled attempts would, and returns its state.
func halt(t *testing.T, path string) store.Target {
	t.Helper()
	db, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update("crash", func(st *store.Target) error {
		st.Halted, st.HaltReason, st.HaltedAt = true, "a test halted it", time.Now()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	st, err := db.Load("crash")
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestRestartRepublishesNextRotation: a restart that plans another next
// rotation (here a changed schedule) records it in the secret's custom
// metadata, where `vault kv get` and codatauth read it, without a new
// version; the next publish keeps both equal.
func TestRestartRepublishesNextRotation(t *testing.T) {
	e := newDaemonEnv(t, "@every 1h", "1s")
	e.rotate(t) // in-process: next_rotation_at is the schedule's next tick
	before, err := e.api.KVv2(e.mount).Get(context.Background(), "codat/crash")
	if err != nil {
		t.Fatal(err)
	}
	e.writeConfig(t, "@every 3h", "1s")
	d := e.start(t, nil)
	d.waitRunning(t)
	d.waitLog(t, 10*time.Second, 1, "republished", msgIs("republished the planned next rotation"))
	_, js, _ := e.cli(t, nil, "status", "--json")
	var rep struct {
		Targets []struct {
			Next time.Time `json:"next_rotation"`
		}
	}
	if err := json.Unmarshal([]byte(js), &rep); err != nil || len(rep.Targets) != 1 {
		t.Fatalf("status --json: %v\n%s", err, js)
	}
	planned := rep.Targets[0].Next.UTC().Format(time.RFC3339)
	after, err := e.api.KVv2(e.mount).Get(context.Background(), "codat/crash")
	if err != nil {
		t.Fatal(err)
	}
	if got := after.CustomMetadata["next-rotation-at"]; got != planned {
		t.Errorf("custom metadata next-rotation-at: %v, want the daemon's plan %s (was %v in the secret)", got, planned, before.Data["next_rotation_at"])
	}
	if after.VersionMetadata.Version != before.VersionMetadata.Version {
		t.Errorf("version %d after the restart, want %d: republishing the plan writes no new version", after.VersionMetadata.Version, before.VersionMetadata.Version)
	}
	// A rotation through the daemon publishes its plan in both places.
	if code, out, serr := e.cli(t, nil, "rotate"); code != 0 {
		t.Fatalf("rotate: exit %d\n%s%s", code, out, serr)
	}
	last, err := e.api.KVv2(e.mount).Get(context.Background(), "codat/crash")
	if err != nil {
		t.Fatal(err)
	}
	if last.CustomMetadata["next-rotation-at"] != last.Data["next_rotation_at"] {
		t.Errorf("after a rotation: metadata next-rotation-at %v, next_rotation_at %v; want them equal", last.CustomMetadata["next-rotation-at"], last.Data["next_rotation_at"])
	}
	d.stop(t)
	e.checkInvariants(t)
}
