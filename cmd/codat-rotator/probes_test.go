package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/store"
)

// The StatefulSet's probe timeouts (deploy/kubernetes/statefulset.yaml):
// a probe that takes longer counts as a failure, whatever it would have
// said.
const (
	livenessTimeout  = 5 * time.Second
	readinessTimeout = 10 * time.Second
)

// stuckListener accepts TCP connections and never answers on them: a
// Vault or a Codat that is reachable but stuck (a load balancer whose
// backend hangs). It holds every connection until the test ends.
func stuckListener(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	tb.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return "http://" + l.Addr().String()
}

// probe GETs a probe path as the kubelet does: with the probe's timeout.
// It returns the status (0: no answer in time, or no connection), the
// body or the error, and how long it took.
func probe(url string, timeout time.Duration) (int, string, time.Duration) {
	start := time.Now()
	c := &http.Client{Timeout: timeout}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error(), time.Since(start)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), time.Since(start)
}

// TestProbesAnswerWhileVaultHangs (issue 22): with a Vault and a Codat
// that accept connections and never answer, the daemon on Kubernetes
// auth answers /healthz (alive: 200) and /readyz (not ready: 503, with
// the reason) from its start and at every probe after, each well inside
// the StatefulSet's probe timeout. Before the fix the listener opened
// only after a 15s start-up login, and /readyz then waited ~30s for the
// lock the next login held.
func TestProbesAnswerWhileVaultHangs(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "cr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("eyJhbGciOiJSUzI1NiJ9.e30.c2ln\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	metrics := freeAddr(t)
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`state_path: %s
log: {level: debug, format: json}
listen: {metrics: %s, admin_socket: %s}
vault:
  address: %s
  auth: {method: kubernetes, kubernetes: {role: codat-rotator, token_file: %s}}
targets:
  - name: stuck
    codat: {base_url: %s, bootstrap_key_env: CODAT_BOOTSTRAP_API_KEY}
    vault: {mount: secret, path: codat/stuck}
    schedule: "@every 1h"
    grace: 1m
`, filepath.Join(dir, "state.db"), metrics, filepath.Join(dir, "admin.sock"), stuckListener(t), tokenFile, stuckListener(t))), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "run", "--config", cfg)
	cmd.Env = append(os.Environ(), "CODAT_BOOTSTRAP_API_KEY=bootstrap-key-never-used")
	var logs syncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("daemon log:\n%s", logs.String())
		}
	})

	// Up: the first /healthz answers within a few seconds of the start,
	// not after a Vault login.
	for {
		code, body, _ := probe("http://"+metrics+"/healthz", livenessTimeout)
		if code == http.StatusOK {
			t.Logf("/healthz first answered 200 %s after the start", time.Since(start).Round(time.Millisecond))
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("/healthz: no 200 within 5s of the start (last: %d %q)", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Then, for longer than a login's request timeout and the old
	// start-up login, every probe answers in time: a slowest answer
	// over half the probe's timeout fails too.
	var slowestLive, slowestReady time.Duration
	var reason string
	for time.Since(start) < 20*time.Second {
		code, body, took := probe("http://"+metrics+"/healthz", livenessTimeout)
		slowestLive = max(slowestLive, took)
		if code != http.StatusOK {
			t.Fatalf("/healthz at %s: %d %q after %s, want 200", time.Since(start).Round(time.Second), code, body, took.Round(time.Millisecond))
		}
		code, body, took = probe("http://"+metrics+"/readyz", readinessTimeout)
		slowestReady = max(slowestReady, took)
		reason = body
		if code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "not ready: ") {
			t.Fatalf("/readyz at %s: %d %q after %s, want 503 with the reason", time.Since(start).Round(time.Second), code, body, took.Round(time.Millisecond))
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("slowest /healthz %s, slowest /readyz %s; the last /readyz: %q", slowestLive.Round(time.Millisecond), slowestReady.Round(time.Millisecond), reason)
	if slowestLive > livenessTimeout/2 {
		t.Errorf("slowest /healthz took %s, over half the liveness probe's %s timeout", slowestLive, livenessTimeout)
	}
	if slowestReady > readinessTimeout*6/10 {
		t.Errorf("slowest /readyz took %s, over 60%% of the readiness probe's %s timeout", slowestReady, readinessTimeout)
	}
}

// TestNoTargetCanRotate: readiness is false, naming each target and
// why, only when every target is blocked or halted.
func TestNoTargetCanRotate(t *testing.T) {
	blocked := store.Target{Blocked: "secret/codat/a is owned by state file X"}
	halted := store.Target{Halted: true, HaltReason: "create key: 401"}
	for _, tc := range []struct {
		name   string
		states map[string]store.Target
		want   string // "" for nil
	}{
		{"no target", nil, ""},
		{"one rotating", map[string]store.Target{"a": {}}, ""},
		{"one blocked, one rotating", map[string]store.Target{"a": blocked, "b": {}}, ""},
		{"one halted, one rotating", map[string]store.Target{"a": halted, "b": {}}, ""},
		{"the only one blocked", map[string]store.Target{"a": blocked},
			"no target can rotate: a blocked: secret/codat/a is owned by state file X"},
		{"every one blocked or halted", map[string]store.Target{"b": halted, "a": blocked},
			"no target can rotate: a blocked: secret/codat/a is owned by state file X; b halted: create key: 401 (run `codat-rotator resume --target b`)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := noTargetCanRotate(tc.states)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestReadyzBlocked (issue 22): a daemon whose only target is blocked
// (a second daemon on the same secret, as a scaled-up StatefulSet or a
// pod on a lost volume would be) answers /readyz 503 saying so, though
// Vault serves a key: it rotates nothing. A's own /readyz stays 200.
func TestReadyzBlocked(t *testing.T) {
	t.Parallel()
	w := newOwnWorld(t)
	solo := ownTarget{name: "solo", path: "codat/solo", bootstrapEnv: "CODAT_BOOTSTRAP_API_KEY", schedule: "@every 1h", grace: "1h"}
	cfgA := w.config(t, "a", listenAll, solo)
	a := w.run(t, cfgA)
	a.waitRunning(t)
	a.waitRotations(t, 15*time.Second, 1)
	readyz := func(c ownConfig) (int, string) {
		code, body, took := probe("http://"+c.metrics+"/readyz", readinessTimeout)
		if took > readinessTimeout/2 {
			t.Errorf("/readyz took %s", took)
		}
		return code, body
	}
	until := func(c ownConfig, want int, what string) string {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second) // past the answer's 10s cache
		for {
			code, body := readyz(c)
			if code == want {
				return body
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: /readyz answered %d %q, want %d", what, code, body, want)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	until(cfgA, http.StatusOK, "A, rotating")

	cfgB := w.config(t, "b", listenAll, solo)
	b := w.run(t, cfgB)
	b.waitRunning(t)
	b.waitLog(t, 15*time.Second, 1, "of the target blocked", msgIs("target blocked: another codat-rotator owns it"))
	body := until(cfgB, http.StatusServiceUnavailable, "B, blocked")
	for _, want := range []string{"no target can rotate", "solo blocked", "takeover"} {
		if !strings.Contains(body, want) {
			t.Errorf("B's /readyz %q: want it to say %q", body, want)
		}
	}
	if code, body := readyz(cfgA); code != http.StatusOK {
		t.Errorf("A's /readyz with B blocked: %d %q, want 200", code, body)
	}
}
