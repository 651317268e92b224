package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/codat/emulator"
	"github.com/codat-rotator/codat-rotator/codatauth"
	"github.com/codat-rotator/codat-rotator/secret"
)

// Whole-system tests of codatauth, the consumers' package: the real
// daemon rotates, a real Vault holds the secret, and a consumer built
// with the package calls the emulator's /companies with the key.

// consumerDuration is how long TestConsumerAcrossRotations runs: a
// minute, as the issue asks; CODATAUTH_E2E_DURATION shortens it for a
// local run, never under CI.
func consumerDuration(t *testing.T) time.Duration {
	t.Helper()
	v := os.Getenv("CODATAUTH_E2E_DURATION")
	if v == "" || os.Getenv("CI") == "true" {
		return time.Minute
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("CODATAUTH_E2E_DURATION %q: want a positive duration such as 20s", v)
	}
	return d
}

// consumer is an application built with codatauth: a transport reading
// the target's secret from Vault with a token that may only read it, and
// logging every refresh as the example program does.
type consumer struct {
	tr   *codatauth.Transport
	logs *syncBuffer
}

func newConsumer(t *testing.T, e *daemonEnv, interval time.Duration) *consumer {
	t.Helper()
	token := e.vault.Token(t, fmt.Sprintf(`path "%s/data/codat/crash" { capabilities = ["read"] }`, e.mount))
	src, err := codatauth.NewVaultSource(codatauth.VaultConfig{
		Client: e.vault.Client(t), Mount: e.mount, Path: "codat/crash",
		Auth: codatauth.TokenAuth{Token: secret.Value(token)},
	})
	if err != nil {
		t.Fatal(err)
	}
	c := &consumer{logs: &syncBuffer{}}
	log := slog.New(slog.NewJSONHandler(c.logs, nil))
	c.tr, err = codatauth.New(context.Background(), codatauth.Config{
		Source: src, BaseURL: e.codatURL, Interval: interval,
		OnRefresh: func(r codatauth.Refresh) {
			// Whole, to show that nothing in an event is secret.
			log.Info("codat credential", "reason", r.Reason, "changed", r.Changed, "key_id", r.KeyID, "error", r.Err, "event", fmt.Sprintf("%+v", r))
		},
	})
	if err != nil {
		t.Fatalf("codatauth.New: %v", err)
	}
	t.Cleanup(func() {
		_ = c.tr.Close()
		e.output.WriteString(c.logs.String()) // scanned by checkNoSecrets
	})
	return c
}

// call sends method /companies (a POST with a body GetBody can replay)
// and returns the status, or 0 and the error.
func (c *consumer) call(e *daemonEnv, method string) (int, error) {
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader(`{"name":"Bank of Dave"}`)
	}
	req, err := http.NewRequest(method, e.codatURL+"/companies", body)
	if err != nil {
		return 0, err
	}
	resp, err := c.tr.Client().Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// companyEvents returns the emulator's record of the consumer's calls
// from sequence number since on.
func companyEvents(e *daemonEnv, since int) []emulator.Event {
	var out []emulator.Event
	for _, ev := range e.emu.Events(since) {
		if ev.Op == emulator.OpListCompanies || ev.Op == emulator.OpCreateCompany {
			out = append(out, ev)
		}
	}
	return out
}

func nextSeq(e *daemonEnv) int {
	ev := e.emu.Events(0)
	if len(ev) == 0 {
		return 1
	}
	return ev[len(ev)-1].Seq + 1
}

// TestConsumerAcrossRotations: while the daemon rotates every 2 s with a
// 1.5 s grace for a minute, a consumer refreshing every 500 ms calls
// Codat continuously (three GET loops and one POST loop): no request is
// refused, the transport never even meets a 401, and the calls follow
// every key Vault served.
func TestConsumerAcrossRotations(t *testing.T) {
	run := consumerDuration(t)
	e := newDaemonEnv(t, "@every 2s", "1500ms")
	// Keep every version (KV v2 keeps 10 by default), so that the checks
	// below see every key Vault served, and I7 looks for each of them.
	if _, err := e.api.Logical().Write(e.mount+"/config", map[string]any{"max_versions": 1000}); err != nil {
		t.Fatal(err)
	}
	d := e.start(t, nil)
	d.waitRunning(t)
	d.waitRotations(t, 15*time.Second, 1)
	c := newConsumer(t, e, 500*time.Millisecond)
	rotationsBefore := d.count(msgIs("rotation done"))
	seq := nextSeq(e)

	type tally struct{ ok, refused, failed int }
	var (
		mu     sync.Mutex
		total  tally
		errs   []string
		wg     sync.WaitGroup
		finish = time.Now().Add(run)
	)
	for _, method := range []string{http.MethodGet, http.MethodGet, http.MethodGet, http.MethodPost} {
		wg.Go(func() {
			var mine tally
			for time.Now().Before(finish) {
				status, err := c.call(e, method)
				switch {
				case err != nil:
					mine.failed++
					mu.Lock()
					errs = append(errs, err.Error())
					mu.Unlock()
				case status == http.StatusOK:
					mine.ok++
				default:
					mine.refused++
				}
				time.Sleep(10 * time.Millisecond)
			}
			mu.Lock()
			total.ok, total.refused, total.failed = total.ok+mine.ok, total.refused+mine.refused, total.failed+mine.failed
			mu.Unlock()
		})
	}
	wg.Wait()
	rotations := d.count(msgIs("rotation done")) - rotationsBefore
	d.stop(t)
	st := c.tr.Stats()
	t.Logf("%s: %d rotations; %d calls succeeded, %d refused, %d failed; transport: %+v", run, rotations, total.ok, total.refused, total.failed, st)

	if total.refused != 0 || total.failed != 0 {
		t.Errorf("the consumer saw %d refusals and %d failures (%v), want none", total.refused, total.failed, errs)
	}
	if min := int(run / (4 * time.Second)); rotations < min {
		t.Errorf("the daemon made %d rotations in %s, want at least %d: the test proved little", rotations, run, min)
	}
	events := companyEvents(e, seq)
	if len(events) != total.ok+total.refused+int(st.Retries) {
		t.Errorf("emulator saw %d calls, want the %d the consumer made plus %d retries", len(events), total.ok+total.refused, st.Retries)
	}
	served := map[string]bool{}
	for _, id := range vaultHistory(t, e, "key_id") {
		served[id] = true
	}
	used := map[string]bool{}
	for _, ev := range events {
		switch {
		case ev.Status == http.StatusOK && served[ev.KeyID]:
			used[ev.KeyID] = true
		case ev.Status == http.StatusOK:
			t.Errorf("a call authenticated with key %s, which Vault never served", ev.KeyID)
		default:
			t.Errorf("emulator answered the consumer %d at %s", ev.Status, ev.Time.Format(time.RFC3339Nano))
		}
	}
	if len(used) < rotations {
		t.Errorf("the calls used %d keys over %d rotations, want every published key used", len(used), rotations)
	}
	if st.Unauthorized != 0 || st.Failures != 0 {
		t.Errorf("transport: %+v, want no 401 and no failed read with a refresh well under grace", st)
	}
	e.checkInvariants(t) // no violation: no call with a deleted key; I7 over the consumer's logs too
}

// TestConsumerAfterEmergencyRotation: a consumer whose background refresh
// would not come for an hour calls Codat right after `codat-rotator rotate
// --emergency` deleted the key it holds: the transport meets one 401,
// reads Vault once and sends the call again with the new key; the caller
// sees only the success, for a GET and for a POST with a body.
func TestConsumerAfterEmergencyRotation(t *testing.T) {
	e := newDaemonEnv(t, "@every 1h", "30m")
	d := e.start(t, nil)
	d.waitRunning(t)
	d.waitRotations(t, 15*time.Second, 1)
	c := newConsumer(t, e, time.Hour)
	if status, err := c.call(e, http.MethodGet); err != nil || status != http.StatusOK {
		t.Fatalf("first call: %d %v", status, err)
	}
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		t.Run(method, func(t *testing.T) {
			old := e.servedKeyID(t)
			if got := c.tr.Current().KeyID; got != old {
				t.Fatalf("the consumer holds key %s, Vault serves %s", got, old)
			}
			before, seq := c.tr.Stats(), nextSeq(e)
			if code, _, stderr := e.cli(t, nil, "rotate", "--target", "crash", "--emergency"); code != 0 {
				t.Fatalf("rotate --emergency: exit %d: %s", code, stderr)
			}
			fresh := e.servedKeyID(t)
			if fresh == old || e.activeKeys()[old] {
				t.Fatalf("after the emergency rotation: Vault serves %s (was %s), old key live: %v", fresh, old, e.activeKeys()[old])
			}

			status, err := c.call(e, method)
			if err != nil || status != http.StatusOK {
				t.Fatalf("the caller got %d %v, want 200", status, err)
			}
			st := c.tr.Stats()
			if got := st.Unauthorized - before.Unauthorized; got != 1 {
				t.Errorf("401s seen by the transport: %d, want 1", got)
			}
			if got := st.Retries - before.Retries; got != 1 {
				t.Errorf("retries: %d, want 1", got)
			}
			ev := companyEvents(e, seq)
			if len(ev) != 2 || ev[0].Status != http.StatusUnauthorized || ev[1].Status != http.StatusOK || ev[1].KeyID != fresh {
				t.Errorf("emulator saw %+v, want a 401 then a 200 with the new key %s", ev, fresh)
			}
			if got := c.tr.Current().KeyID; got != fresh {
				t.Errorf("the consumer now holds %s, want %s", got, fresh)
			}
		})
	}
	d.stop(t)
	// The two refused calls are the only violations: each used the key
	// the emergency had just deleted.
	vs := e.emu.Violations()
	if len(vs) != 2 {
		t.Errorf("violations: %+v, want the consumer's two calls with a deleted key", vs)
	}
	for _, v := range vs {
		if v.Kind != emulator.ViolationDeletedKeyUsed || !strings.Contains(v.Detail, "/companies") {
			t.Errorf("violation %+v, want only deleted_key_used on /companies", v)
		}
	}
	e.checkNoSecrets(t)
}
