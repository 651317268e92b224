package main

import (
	"bufio"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/codat/emulator"
)

// TestOperatorErrors (issue 16): errors a newcomer meets say what is
// wrong in the operator's words and what happens next.
func TestOperatorErrors(t *testing.T) {
	t.Run("a refused bootstrap key names its variable", func(t *testing.T) {
		e := newCrashEnv(t)
		env := append(os.Environ(), "VAULT_TOKEN="+e.vault.RootToken, "CODAT_BOOTSTRAP_API_KEY=not-a-key-of-this-client")
		code, out := runEnv(t, env, "rotate", "--config", e.config, "--log-level", "error")
		want := "codat rejects the bootstrap key from $CODAT_BOOTSTRAP_API_KEY: "
		if code != exitError || !strings.Contains(out, want) || !strings.Contains(out, "set $CODAT_BOOTSTRAP_API_KEY to a working key of this Codat client") {
			t.Errorf("exit %d, want %d with %q in:\n%s", code, exitError, want, out)
		}
		if strings.Contains(out, "the key vault serves") {
			t.Errorf("the error blames the key vault serves, but vault serves none yet:\n%s", out)
		}
		e.output.WriteString(out)
	})

	t.Run("a create whose answer was lost says what is left and what comes next", func(t *testing.T) {
		e := newCrashEnv(t)
		e.rotate(t) // bootstrap and a first rotation
		// Codat answers the create with a 503 before making the key: the
		// client cannot know that, and must not create again.
		if err := e.emu.SetFaults(emulator.Faults{Create: emulator.OpFaults{Fail: 1, FailStatus: 503}}); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(binary, "rotate", "--config", e.config, "--log-level", "error")
		cmd.Env = append(os.Environ(), "VAULT_TOKEN="+e.vault.RootToken, "CODAT_BOOTSTRAP_API_KEY="+e.emu.InitialKey())
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stdout strings.Builder
		cmd.Stdout = &stdout
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// The first retry line carries the first attempt's error; the
		// second attempt (30 s later) succeeds.
		sc := bufio.NewScanner(stderr)
		var retry string
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "codat-rotator rotate: crash: attempt 2 of 3, retrying in 30s: ") {
				retry = sc.Text()
				break
			}
		}
		go func() {
			for sc.Scan() {
			}
		}()
		for _, want := range []string{
			"no usable answer from codat, which may have made the key",
			"codat lists no key of that name, so none was made and none is left behind; another attempt creates a new one",
		} {
			if !strings.Contains(retry, want) {
				t.Errorf("retry line lacks %q:\n%s", want, retry)
			}
		}
		for _, codeView := range []string{"look the key up by name", "do not create again"} {
			if strings.Contains(retry, codeView) {
				t.Errorf("retry line speaks to the code (%q):\n%s", codeView, retry)
			}
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("rotate after the lost create: %v\n%s", err, stdout.String())
			}
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
			t.Fatal("rotate did not finish after its second attempt")
		}
		e.output.WriteString(stdout.String() + retry)
		e.checkInvariants(t)
	})
}
