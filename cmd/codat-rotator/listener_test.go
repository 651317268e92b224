package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Whole-binary test of the metrics and health listener under a client
// that opens thousands of connections and sends nothing (issue 23):
// the daemon's descriptors and memory stay flat, the connections it took
// are closed after the read-header timeout, and it answers again once
// they are gone.

// idleDaemon is a `codat-rotator run` for listener tests: Vault and
// Codat are closed ports (the listener does not need them; the daemon
// logs that it cannot log in and carries on).
type idleDaemon struct {
	cmd     *exec.Cmd
	logs    *syncBuffer
	metrics string
	sock    string
}

func startIdleDaemon(t *testing.T) *idleDaemon {
	t.Helper()
	dir, err := os.MkdirTemp("", "crl") // short: the admin socket's path
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	d := &idleDaemon{logs: &syncBuffer{}, metrics: freeAddr(t), sock: filepath.Join(dir, "admin.sock")}
	cfg := fmt.Sprintf(`state_path: %s
log: {level: info, format: json}
listen: {metrics: %q, admin_socket: %s}
vault: {address: "http://127.0.0.1:9"}
targets:
  - name: idle
    codat: {base_url: "http://127.0.0.1:9", bootstrap_key_env: CODAT_BOOTSTRAP_API_KEY}
    vault: {path: codat/idle}
    schedule: "@yearly"
`, filepath.Join(dir, "state.db"), d.metrics, d.sock)
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	d.cmd = exec.Command(binary, "run", "--config", path)
	d.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "VAULT_TOKEN=test-token", "CODAT_BOOTSTRAP_API_KEY=abcdefgh12345678"}
	d.cmd.Stdout, d.cmd.Stderr = d.logs, d.logs
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = d.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = d.cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", d.logs.String())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(d.logs.String(), `"msg":"codat-rotator running"`) {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon did not start within 15s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return d
}

// fds counts the daemon's open file descriptors.
func (d *idleDaemon) fds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// rssKiB is the daemon's resident memory.
func (d *idleDaemon) rssKiB(t *testing.T) int64 {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	t.Fatal("no VmRSS in /proc/PID/status")
	return 0
}

// healthz asks /healthz with a client of its own (no pooled connection).
func (d *idleDaemon) healthz(timeout time.Duration) error {
	c := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + d.metrics + "/healthz")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthz: %d %s", resp.StatusCode, body)
	}
	return nil
}

func TestMetricsListenerHoldsIdleConnectionsFlat(t *testing.T) {
	const idle = 3000
	d := startIdleDaemon(t)
	for range 5 {
		if err := d.healthz(5 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	fds0, rss0 := d.fds(t), d.rssKiB(t)

	conns := make([]net.Conn, 0, idle)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for len(conns) < idle {
		c, err := net.DialTimeout("tcp", d.metrics, 5*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", len(conns)+1, err)
		}
		conns = append(conns, c)
	}
	time.Sleep(time.Second)
	fds1, rss1 := d.fds(t), d.rssKiB(t)
	t.Logf("%d idle connections: descriptors %d -> %d, RSS %d -> %d KiB", idle, fds0, fds1, rss0, rss1)
	if max := fds0 + metricsLimits.MaxConns + 2; fds1 > max {
		t.Errorf("descriptors: %d with %d idle connections, want at most %d (%d before, cap %d)", fds1, idle, max, fds0, metricsLimits.MaxConns)
	}
	if grew := rss1 - rss0; grew > 8<<10 {
		t.Errorf("RSS grew by %d KiB with %d idle connections, want at most 8 MiB", grew, idle)
	}

	// The connections the daemon took are closed by it once the
	// read-header timeout passes: they show EOF on our side.
	closed := 0
	deadline := time.Now().Add(metricsLimits.ReadHeaderTimeout + 3*time.Second)
	for _, c := range conns {
		_ = c.SetReadDeadline(deadline)
	}
	results := make(chan error, len(conns))
	for _, c := range conns {
		go func() {
			_, err := c.Read(make([]byte, 1))
			results <- err
		}()
	}
	for range conns {
		if err := <-results; err == io.EOF {
			closed++
		}
	}
	if closed < metricsLimits.MaxConns {
		t.Errorf("%d connections closed by the daemon within the read-header timeout (%s) and 3s, want at least %d",
			closed, metricsLimits.ReadHeaderTimeout, metricsLimits.MaxConns)
	}

	for _, c := range conns {
		c.Close()
	}
	conns = nil
	var err error
	for start := time.Now(); time.Since(start) < 20*time.Second; time.Sleep(100 * time.Millisecond) {
		if err = d.healthz(2 * time.Second); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("after the idle clients left, /healthz: %v", err)
	}
	// The daemon still drains the closed connections queued in the
	// kernel's backlog, a capped handful at a time: wait for it.
	fds2 := d.fds(t)
	for start := time.Now(); fds2 > fds0+2 && time.Since(start) < 15*time.Second; fds2 = d.fds(t) {
		time.Sleep(100 * time.Millisecond)
	}
	if fds2 > fds0+2 {
		t.Errorf("descriptors 15s after the idle clients left: %d, want about %d", fds2, fds0)
	}
}

// TestCLIRefusesAnUntrustedSocket: with the admin socket's directory
// writable by other users, a fake daemon there once answered root's
// `rotate --emergency` with a made-up success. The command now checks
// the socket before it sends anything, says what is wrong, and does not
// fall back to working on the state file.
func TestCLIRefusesAnUntrustedSocket(t *testing.T) {
	if os.Geteuid() != 0 && os.Getenv("CI") != "true" {
		t.Skip("the world-writable directory is a root-owned one here; needs root")
	}
	base, err := os.MkdirTemp("", "cru")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	dir := filepath.Join(base, "run")
	if err := os.Mkdir(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "admin.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var asked []string
	var mu sync.Mutex
	fake := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		asked = append(asked, r.Method+" "+r.URL.Path)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"pid":1,"version":"fake","results":[{"target":"prod","vault":"secret/codat/prod","succeeded":true,"result":{"new_key":{"id":"made-up"}}}]}`)
	})}
	go func() { _ = fake.Serve(l) }()
	t.Cleanup(func() { fake.Close() })
	if err := os.Chmod(dir, 0o777); err != nil { // as an attacker's mistake or doing
		t.Fatal(err)
	}
	// The fake daemon's socket is another user's, as it would be: in an
	// open directory (a Kubernetes emptyDir is one) anyone may create a
	// socket, but only as themselves.
	const other = 54321
	if err := os.Chown(sock, other, other); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("state_path: %s\nlisten: {admin_socket: %s, metrics: \"\"}\nvault: {address: \"http://127.0.0.1:9\"}\ntargets:\n  - name: prod\n    vault: {path: codat/prod}\n",
		filepath.Join(base, "state.db"), sock)
	path := filepath.Join(base, "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"rotate", "--target", "prod", "--emergency"}, {"status"}, {"reload"}} {
		code, out := runEnv(t, []string{"PATH=" + os.Getenv("PATH"), "VAULT_TOKEN=t"}, append(append(args[:1:1], "--config", path), args[1:]...)...)
		want := fmt.Sprintf("admin socket %s is owned by uid %d, which is neither yours (uid 0), root's, nor that of its directory", sock, other)
		if code == 0 || !strings.Contains(out, want) {
			t.Errorf("%s: exit %d, want a failure saying %q:\n%s", args[0], code, want, out)
		}
		if strings.Contains(out, "made-up") {
			t.Errorf("%s: the fake daemon's answer was believed:\n%s", args[0], out)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(asked) != 0 {
		t.Errorf("the fake daemon was asked: %v", asked)
	}
}
