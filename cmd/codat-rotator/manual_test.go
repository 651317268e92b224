package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/admin"
)

// vaultSwitch is a proxy to the real Vault that a test shuts, so that
// Vault is unreachable (connection refused), and opens again on the same
// address.
type vaultSwitch struct {
	t    *testing.T
	addr string
	h    http.Handler
	mu   sync.Mutex
	srv  *http.Server
}

func newVaultSwitch(t *testing.T, vaultAddr string) *vaultSwitch {
	t.Helper()
	target, err := url.Parse(vaultAddr)
	if err != nil {
		t.Fatal(err)
	}
	s := &vaultSwitch{t: t, addr: freeAddr(t), h: httputil.NewSingleHostReverseProxy(target)}
	s.open()
	t.Cleanup(s.shut)
	return s
}

func (s *vaultSwitch) url() string { return "http://" + s.addr }

func (s *vaultSwitch) open() {
	s.t.Helper()
	l, err := net.Listen("tcp", s.addr)
	if err != nil {
		s.t.Fatalf("open the vault proxy again on %s: %v", s.addr, err)
	}
	srv := &http.Server{Handler: s.h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
}

func (s *vaultSwitch) shut() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		s.srv.Close()
		s.srv = nil
	}
}

// lineWaiter reads a command's stderr as it comes and lets a test wait
// for a line.
type lineWaiter struct {
	mu    sync.Mutex
	lines []string
	added chan struct{}
}

func newLineWaiter(r io.Reader) *lineWaiter {
	w := &lineWaiter{added: make(chan struct{}, 1)}
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			w.mu.Lock()
			w.lines = append(w.lines, sc.Text())
			w.mu.Unlock()
			select {
			case w.added <- struct{}{}:
			default:
			}
		}
	}()
	return w
}

func (w *lineWaiter) text() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.lines, "\n")
}

// wait waits for a line starting with prefix, and returns it.
func (w *lineWaiter) wait(t *testing.T, timeout time.Duration, prefix string) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		w.mu.Lock()
		for _, l := range w.lines {
			if strings.HasPrefix(l, prefix) {
				w.mu.Unlock()
				return l
			}
		}
		w.mu.Unlock()
		select {
		case <-w.added:
		case <-deadline:
			t.Fatalf("no line %q within %s; got:\n%s", prefix, timeout, w.text())
		}
	}
}

// TestManualRotateReportsRetriesAndKeepsSchedule (issue 16): a manual
// rotate while Vault is unreachable (a proxy to the real Vault, shut)
// prints a line per retry on stderr, not a terminal, as each retry
// begins; fails with exit 1 once its attempts are used up, saying the
// target is not halted; and leaves the target unhalted, so scheduled
// rotations go on once Vault is back. In-process and through the daemon.
// (The engine's real retry waits, 30 s then 60 s: the subtests run side
// by side.)
func TestManualRotateReportsRetriesAndKeepsSchedule(t *testing.T) {
	const (
		first  = "codat-rotator rotate: crash: attempt 2 of 3, retrying in 30s: "
		second = "codat-rotator rotate: crash: attempt 3 of 3, retrying in 1m0s: "
		failed = "not halted: scheduled rotations go on"
	)
	// manual runs rotate with Vault shut and checks what it prints.
	manual := func(t *testing.T, e *daemonEnv, vs *vaultSwitch) {
		t.Helper()
		vs.shut()
		cmd := exec.Command(binary, "rotate", "--config", e.config, "--target", "crash")
		cmd.Env = e.env()
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stdout strings.Builder
		cmd.Stdout = &stdout
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := newLineWaiter(stderr)
		started := time.Now()
		l := lines.wait(t, 20*time.Second, first)
		if !strings.Contains(l, "vault unreachable") {
			t.Errorf("retry line %q does not say vault is unreachable", l)
		}
		if took := time.Since(started); took > 20*time.Second {
			t.Errorf("the first retry line came after %s, not as the retry began", took)
		}
		lines.wait(t, 50*time.Second, second)
		err = cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != exitError {
			t.Fatalf("rotate with vault unreachable: %v, want exit %d\n%s\n%s", err, exitError, stdout.String(), lines.text())
		}
		if !strings.Contains(stdout.String(), "crash: failed: ") || !strings.Contains(stdout.String(), failed) {
			t.Errorf("rotate's report does not say the target is not halted:\n%s", stdout.String())
		}
		e.output.WriteString(stdout.String() + lines.text())
		vs.open()
		code, out, errOut := e.cli(t, nil, "status", "--json")
		var doc admin.StatusReport
		if code != 0 || json.Unmarshal([]byte(out), &doc) != nil || len(doc.Targets) != 1 {
			t.Fatalf("status: exit %d\n%s%s", code, out, errOut)
		}
		if ts := doc.Targets[0]; ts.Halted || ts.LastResult != "failed" {
			t.Errorf("after the failed manual rotation: halted %v (%s), last result %q; want not halted, failed", ts.Halted, ts.HaltReason, ts.LastResult)
		}
	}

	t.Run("in-process", func(t *testing.T) {
		t.Parallel()
		e := newDaemonEnv(t, "@every 1h", "1s")
		vs := newVaultSwitch(t, e.vault.Addr)
		setVaultAddr(t, e, vs.url())
		e.rotate(t) // bootstrap and a first rotation, in-process
		manual(t, e, vs)
		// Not halted: the daemon's first run is a scheduled one, and it
		// runs (a halted target would skip it).
		e.writeConfig(t, "@every 2s", "1s")
		setVaultAddr(t, e, vs.url())
		d := e.start(t, nil)
		d.waitRunning(t)
		d.waitRotations(t, 15*time.Second, 1)
		d.stop(t)
		e.checkInvariants(t)
	})

	t.Run("through the daemon", func(t *testing.T) {
		t.Parallel()
		e := newDaemonEnv(t, "@every 1h", "1s")
		vs := newVaultSwitch(t, e.vault.Addr)
		setVaultAddr(t, e, vs.url())
		d := e.start(t, nil)
		d.waitRunning(t)
		d.waitRotations(t, 15*time.Second, 1) // the catch-up at start
		manual(t, e, vs)
		if n := d.count(msgIs("rotation failed; target halted")); n != 0 {
			t.Errorf("the daemon halted the target after a manual rotation failed")
		}
		// The schedule goes on: a reload to a 2 s schedule, and the
		// daemon rotates on it.
		e.writeConfig(t, "@every 2s", "1s")
		setVaultAddr(t, e, vs.url())
		d.signal(t, syscall.SIGHUP)
		d.waitRotations(t, 15*time.Second, 2)
		d.stop(t)
		e.checkInvariants(t)
	})
}

// setVaultAddr points e's config at addr.
func setVaultAddr(t *testing.T, e *daemonEnv, addr string) {
	t.Helper()
	cfg := strings.Replace(mustRead(t, e.config), "address: "+e.vaultURL, "address: "+addr, 1)
	if err := os.WriteFile(e.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}
