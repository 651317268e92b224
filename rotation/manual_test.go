package rotation_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/vault"
)

// TestManualFailureDoesNotHalt (issue 16): a manual rotation that fails
// every attempt on an error worth retrying (a real Vault behind a proxy
// that answers 503) tells its caller of each retry, reports the failure
// and leaves the target as it was: not halted, so scheduled rotations go
// on. A scheduled run that fails the same way halts it, as before; a
// manual run then neither halts nor clears that halt until it succeeds.
func TestManualFailureDoesNotHalt(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	e.mustRotate(rotation.Options{})
	e.clock.Advance(time.Hour)

	e.proxy.setMode(proxyFailAll)
	var retries []rotation.Retry
	opts := rotation.Options{Manual: true, OnRetry: func(r rotation.Retry) { retries = append(retries, r) }}
	_, err := e.rotate(opts)
	if err == nil {
		t.Fatal("a manual rotation succeeded with vault answering 503")
	}
	if !strings.Contains(err.Error(), "not halted") {
		t.Errorf("error %q does not say the target is not halted", err)
	}
	st := e.state()
	if st.Halted {
		t.Fatalf("a failed manual rotation halted the target: %s", st.HaltReason)
	}
	if st.LastResult != "failed" {
		t.Errorf("last result %q, want failed", st.LastResult)
	}
	// The engine under test makes 2 attempts, 1 min apart: one retry.
	if len(retries) != 1 {
		t.Fatalf("OnRetry called %d times, want 1 (2 attempts)", len(retries))
	}
	r := retries[0]
	if r.Target != targetName || r.Next != 2 || r.Attempts != 2 || r.Wait != retryBackoff || !errors.Is(r.Err, vault.ErrServer) {
		t.Errorf("retry = %+v, want target %s, attempt 2 of 2 after %s, for vault's 503", r, targetName, retryBackoff)
	}

	// A scheduled run that fails the same way halts the target.
	if _, err := e.rotate(rotation.Options{}); err == nil || !strings.Contains(err.Error(), "target halted") {
		t.Fatalf("scheduled rotation with vault down: %v, want a halt", err)
	}
	if !e.state().Halted {
		t.Fatal("a scheduled run that used up its attempts did not halt the target")
	}
	// A manual run that fails leaves the halt; one that succeeds clears it.
	if _, err := e.rotate(rotation.Options{Manual: true}); err == nil {
		t.Fatal("a manual rotation succeeded with vault answering 503")
	}
	if !e.state().Halted {
		t.Error("a failed manual rotation cleared the halt")
	}
	e.proxy.setMode(proxyPass)
	e.mustRotate(rotation.Options{Manual: true})
	if st := e.state(); st.Halted || st.LastResult != "success" {
		t.Errorf("after a successful manual rotation: halted %v, last result %q", st.Halted, st.LastResult)
	}
	e.checkInvariants()
}
