package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"golang.org/x/sys/unix"

	"github.com/codat-rotator/codat-rotator/admin"
	"github.com/codat-rotator/codat-rotator/codat"
	"github.com/codat-rotator/codat-rotator/codat/emulator"
	"github.com/codat-rotator/codat-rotator/store"
)

// Whole-binary tests of `codat-rotator run`: the real daemon as a
// subprocess, in a crashEnv world (emulator, real Vault), with its admin
// socket, metrics listener and JSON logs.

// daemonEnv is a crashEnv whose config also opens the admin socket and
// the metrics listener.
type daemonEnv struct {
	*crashEnv
	sock    string // the admin socket
	metrics string // host:port of /metrics, /healthz, /readyz
	api     *api.Client
}

// newDaemonEnv builds the world and writes a daemon config with the
// given schedule and grace.
func newDaemonEnv(t *testing.T, schedule, grace string) *daemonEnv {
	t.Helper()
	// Unix socket paths hold about 100 bytes: t.TempDir can be longer.
	dir, err := os.MkdirTemp("", "cr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e := &daemonEnv{crashEnv: newCrashEnv(t), sock: filepath.Join(dir, "admin.sock"), metrics: freeAddr(t)}
	e.api = e.vault.Client(t)
	e.writeConfig(t, schedule, grace)
	return e
}

// writeConfig (re)writes the config file in place, as an operator does
// before a SIGHUP.
func (e *daemonEnv) writeConfig(t *testing.T, schedule, grace string) {
	t.Helper()
	cfg := fmt.Sprintf(`state_path: %s
log: {level: debug, format: json}
listen:
  metrics: %s
  admin_socket: %s
vault:
  address: %s
targets:
  - name: crash
    codat:
      base_url: %s
      bootstrap_key_env: CODAT_BOOTSTRAP_API_KEY
    vault: {mount: %s, path: codat/crash}
    schedule: "%s"
    grace: %s
    key_name_prefix: %s
`, e.statePath(), e.metrics, e.sock, e.vaultURL, e.codatURL, e.mount, schedule, grace, crashPrefix)
	if err := os.WriteFile(e.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (e *daemonEnv) statePath() string { return filepath.Join(e.dir, "state.db") }

// env is the environment of every subprocess: the caller's, minus what
// would make a test depend on the machine it runs on, plus the
// credentials of e's world and extra.
func (e *daemonEnv) env(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "VAULT_") || name == "NOTIFY_SOCKET" || strings.HasPrefix(name, "WATCHDOG_") || name == "CODAT_BOOTSTRAP_API_KEY" {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "VAULT_TOKEN="+e.vault.RootToken, "CODAT_BOOTSTRAP_API_KEY="+e.emu.InitialKey())
	return append(env, extra...)
}

// cli runs a command of the binary to the end with e's config and
// returns its exit code and output. env overrides e's environment.
func (e *daemonEnv) cli(t *testing.T, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return runCLI(t, 30*time.Second, e.config, e.env(env...), func(b []byte) { e.output.Write(b) }, args...)
}

// runCLI runs the command args[0] of the binary with --config config and
// env, within timeout, hands its stdout then its stderr to keep, and
// returns its exit code and output.
func runCLI(t *testing.T, timeout time.Duration, config string, env []string, keep func([]byte), args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	args = append(args[:1:1], append([]string{"--config", config}, args[1:]...)...)
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = env
	var o, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &se
	err := cmd.Run()
	keep(o.Bytes())
	keep(se.Bytes())
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), o.String(), se.String()
	}
	if err != nil {
		t.Fatalf("%s: %v", strings.Join(args, " "), err)
	}
	return 0, o.String(), se.String()
}

// servedKeyID returns the key id Vault serves for the target, "" when
// it holds no secret yet.
func (e *daemonEnv) servedKeyID(t *testing.T) string {
	t.Helper()
	sec, err := e.api.KVv2(e.mount).Get(context.Background(), "codat/crash")
	if errors.Is(err, api.ErrSecretNotFound) {
		return ""
	}
	if err != nil {
		t.Fatalf("read vault: %v", err)
	}
	id, _ := sec.Data["key_id"].(string)
	return id
}

// activeKeys returns the ids of the keys the emulator holds.
func (e *daemonEnv) activeKeys() map[string]bool {
	out := map[string]bool{}
	for _, k := range e.emu.Keys() {
		if k.Deleted == nil {
			out[k.ID] = true
		}
	}
	return out
}

// daemonProc is a running `codat-rotator run`.
type daemonProc struct {
	env  *daemonEnv
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan struct{}
	code int // valid once done is closed
	once sync.Once
}

// start starts `codat-rotator run` without waiting for it; extraEnv is
// added to e's environment.
func (e *daemonEnv) start(t *testing.T, extraEnv []string, args ...string) *daemonProc {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"run", "--config", e.config}, args...)...)
	cmd.Env = e.env(extraEnv...)
	return e.startCmd(t, cmd)
}

// startCmd starts cmd, a `run` of e's world set up by the caller,
// without waiting for it.
func (e *daemonEnv) startCmd(t *testing.T, cmd *exec.Cmd) *daemonProc {
	t.Helper()
	d := &daemonProc{env: e, cmd: cmd, logs: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = d.logs, d.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := cmd.Wait()
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee):
			d.code = ee.ExitCode()
		case err != nil:
			d.code = -1
		}
		close(d.done)
	}()
	t.Cleanup(func() {
		if !d.exited() {
			_ = cmd.Process.Kill()
			<-d.done
		}
		d.flush()
		if t.Failed() {
			t.Logf("daemon pid %d log:\n%s", cmd.Process.Pid, d.logs.String())
		}
	})
	return d
}

func (d *daemonProc) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// flush copies the daemon's output to the world's output once, for the
// I7 check of checkInvariants.
func (d *daemonProc) flush() {
	d.once.Do(func() { d.env.output.WriteString(d.logs.String()) })
}

// signal sends sig to the daemon.
func (d *daemonProc) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := d.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

// wait waits up to timeout for the daemon to exit and returns its exit
// code.
func (d *daemonProc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-d.done:
		d.flush()
		return d.code
	case <-time.After(timeout):
		t.Fatalf("the daemon did not exit within %s", timeout)
		return 0
	}
}

// stop sends SIGTERM and wants a clean exit.
func (d *daemonProc) stop(t *testing.T) {
	t.Helper()
	d.signal(t, syscall.SIGTERM)
	if code := d.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("exit after SIGTERM: got %d, want 0", code)
	}
}

// until polls cond until it holds; it fails the test on timeout or when
// the daemon exits first.
func (d *daemonProc) until(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if d.exited() {
			t.Fatalf("the daemon exited (code %d) while waiting for %s", d.code, what)
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logRecord is one JSON log line.
type logRecord map[string]any

func (r logRecord) str(key string) string {
	s, _ := r[key].(string)
	return s
}

func (r logRecord) has(key string) bool {
	_, ok := r[key]
	return ok
}

// records parses the JSON log lines written so far; other lines (a
// panic, the final error line of Main) are skipped.
func (d *daemonProc) records() []logRecord {
	var out []logRecord
	sc := bufio.NewScanner(strings.NewReader(d.logs.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r logRecord
		if json.Unmarshal(sc.Bytes(), &r) == nil {
			out = append(out, r)
		}
	}
	return out
}

// count returns how many log records match.
func (d *daemonProc) count(match func(logRecord) bool) int {
	n := 0
	for _, r := range d.records() {
		if match(r) {
			n++
		}
	}
	return n
}

// waitLog waits until at least n log records match.
func (d *daemonProc) waitLog(t *testing.T, timeout time.Duration, n int, what string, match func(logRecord) bool) {
	t.Helper()
	d.until(t, timeout, fmt.Sprintf("%d log line(s) %s", n, what), func() bool { return d.count(match) >= n })
}

func msgIs(msg string) func(logRecord) bool {
	return func(r logRecord) bool { return r.str("msg") == msg }
}

// waitRunning waits for the start-up to finish.
func (d *daemonProc) waitRunning(t *testing.T) {
	t.Helper()
	d.waitLog(t, 15*time.Second, 1, `"codat-rotator running"`, msgIs("codat-rotator running"))
}

// waitRotations waits until n rotations are logged as done.
func (d *daemonProc) waitRotations(t *testing.T, timeout time.Duration, n int) {
	t.Helper()
	d.waitLog(t, timeout, n, `"rotation done"`, msgIs("rotation done"))
}

// waitCreateInFlight waits until a create request hangs at the
// emulator: a request in flight for longer than any but a delayed one
// takes.
func (d *daemonProc) waitCreateInFlight(t *testing.T) {
	t.Helper()
	var since time.Time
	d.until(t, 15*time.Second, "a create request in flight", func() bool {
		if d.env.emu.InFlight() == 0 {
			since = time.Time{}
			return false
		}
		if since.IsZero() {
			since = time.Now()
		}
		return time.Since(since) > 300*time.Millisecond
	})
	for _, ev := range d.env.emu.Events(0) {
		if ev.Op == emulator.OpCreate {
			t.Fatalf("a create was answered already: %+v", ev)
		}
	}
}

// syncBuffer is a buffer a subprocess writes while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// freeAddr returns a loopback address with a port nothing listens on.
func freeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// get fetches an observability URL and returns the status and body.
func get(tb testing.TB, url string) (int, string) {
	tb.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		tb.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// metricValue returns the value of the first sample of name whose labels
// include every one of labels (written `k="v"`).
func metricValue(exposition, name string, labels ...string) (float64, bool) {
	for _, line := range strings.Split(exposition, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		series, value, ok := strings.Cut(line, "} ")
		if !ok {
			series, value, ok = strings.Cut(line, " ")
		}
		if !ok {
			continue
		}
		all := true
		for _, l := range labels {
			all = all && strings.Contains(series, l)
		}
		if !all {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			continue
		}
		return v, true
	}
	return 0, false
}

// rotatedKey reads the new key id out of rotate's output.
var rotatedKey = regexp.MustCompile(`(?m)^crash: rotated: key (\S+) \(`)

// targetAttrs are the attributes that make a log line a target's line.
var targetAttrs = []string{"rotation", "step", "key_id", "new_key_id", "journal_rotation", "last_success"}

// checkTargetLogs checks "a target attribute on every line about a
// target" (docs/design.md#interfaces) and that rotation lines carry the
// rotation and its step.
func checkTargetLogs(t *testing.T, recs []logRecord) {
	t.Helper()
	for _, r := range recs {
		line, _ := json.Marshal(r)
		if r.has("target") && r.str("target") != "crash" {
			t.Errorf("log line with target %q, want \"crash\": %s", r.str("target"), line)
		}
		for _, a := range targetAttrs {
			if r.has(a) && !r.has("target") {
				t.Errorf("log line with %s but no target: %s", a, line)
				break
			}
		}
		if r.has("step") && !r.has("rotation") && r.str("step") != string(store.StepRetire) {
			t.Errorf("a rotation step's log line without the rotation id: %s", line)
		}
	}
	// The steps of docs/design.md#step-table appear with the rotation id
	// and step name.
	for _, want := range []struct{ msg, step string }{
		{"key created", "create"},
		{"new key authenticates", "verify"},
		{"published and read back", "publish"},
		{"deleting retired key", "retire"},
	} {
		found := false
		for _, r := range recs {
			if r.str("msg") == want.msg {
				found = true
				if r.str("step") != want.step || r.str("target") != "crash" {
					line, _ := json.Marshal(r)
					t.Errorf("%q: want step %q and target crash: %s", want.msg, want.step, line)
				}
				if want.step != "retire" && r.str("rotation") == "" {
					line, _ := json.Marshal(r)
					t.Errorf("%q: no rotation id: %s", want.msg, line)
				}
			}
		}
		if !found {
			t.Errorf("no %q log line", want.msg)
		}
	}
	for _, r := range recs {
		if r.str("msg") == "rotation done" && (r.str("rotation") == "" || r.str("target") != "crash") {
			line, _ := json.Marshal(r)
			t.Errorf("rotation done without rotation id or target: %s", line)
		}
	}
}

// TestDaemonRotatesOnSchedule runs the daemon on a 2s schedule: it
// rotates again and again, retires the old keys after their grace, logs
// each target's lines with the target, and its metrics move.
func TestDaemonRotatesOnSchedule(t *testing.T) {
	e := newDaemonEnv(t, "@every 2s", "1s")
	initial := e.emu.Keys()[0].ID
	d := e.start(t, nil)
	d.waitRunning(t)
	base := "http://" + e.metrics

	if code, body := get(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: got %d %q, want 200", code, body)
	}

	// Every key Vault serves over time, in order.
	var served []string
	seen := map[string]bool{}
	poll := func() {
		if id := e.servedKeyID(t); id != "" && !seen[id] {
			seen[id] = true
			served = append(served, id)
		}
	}
	d.until(t, 10*time.Second, "a first key in vault", func() bool { poll(); return len(served) > 0 })
	// /readyz caches its answer for 10s: the first probe comes after a
	// key is served, so it must pass.
	d.until(t, 15*time.Second, "/readyz 200", func() bool { code, _ := get(t, base+"/readyz"); return code == http.StatusOK })

	d.until(t, 10*time.Second, "a rotated key in vault", func() bool { poll(); return served[len(served)-1] != initial })
	d.waitRotations(t, 5*time.Second, 1)
	_, first := get(t, base+"/metrics")
	before, ok := metricValue(first, "codat_rotator_rotations_total", `target="crash"`, `result="success"`)
	if !ok || before < 1 {
		t.Errorf("rotations_total{success} after the first rotation: got %v (present %v), want ≥ 1", before, ok)
	}

	// Three keys made by rotations (after the bootstrap key).
	d.until(t, 15*time.Second, "3 rotated keys in vault", func() bool {
		poll()
		return len(served) >= 3 && !slices.Contains(served[len(served)-3:], initial)
	})
	// The bootstrap key was published first (too briefly to be polled).
	if v1, err := e.api.KVv2(e.mount).GetVersion(context.Background(), "codat/crash", 1); err != nil || v1.Data["key_id"] != initial {
		t.Errorf("vault version 1: got %v (%v), want the bootstrap key %s", v1, err, initial)
	}
	// The keys retired before the last rotation are deleted after their
	// grace (1s).
	d.until(t, 10*time.Second, "the retired keys deleted", func() bool {
		active := e.activeKeys()
		for _, id := range append(served[:len(served)-1:len(served)-1], initial) {
			if active[id] {
				return false
			}
		}
		return true
	})

	_, second := get(t, base+"/metrics")
	after, _ := metricValue(second, "codat_rotator_rotations_total", `target="crash"`, `result="success"`)
	if after <= before {
		t.Errorf("rotations_total{success}: %v then %v, want it to grow", before, after)
	}
	for _, name := range []string{"codat_rotator_codat_requests_total", "codat_rotator_vault_requests_total"} {
		if v, ok := metricValue(second, name); !ok || v <= 0 {
			t.Errorf("%s: got %v (present %v), want > 0", name, v, ok)
		}
	}
	if v, ok := metricValue(second, "codat_rotator_codat_requests_total", `operation="`+codat.OpCreate+`"`, `status="201"`); !ok || v < 3 {
		t.Errorf(`codat_requests_total{operation=%q,status="201"}: got %v (present %v), want ≥ 3`, codat.OpCreate, v, ok)
	}
	if v, ok := metricValue(second, "codat_rotator_last_success_timestamp_seconds", `target="crash"`); !ok || v <= 0 || v > float64(time.Now().Unix()+1) {
		t.Errorf("last_success_timestamp_seconds: got %v (present %v), want a past unix time > 0", v, ok)
	}
	if v, ok := metricValue(second, "codat_rotator_next_rotation_timestamp_seconds", `target="crash"`); !ok || v < float64(time.Now().Unix()-1) {
		t.Errorf("next_rotation_timestamp_seconds: got %v (present %v), want about now or later", v, ok)
	}
	if v, ok := metricValue(second, "codat_rotator_halted", `target="crash"`); !ok || v != 0 {
		t.Errorf("halted: got %v (present %v), want 0", v, ok)
	}
	// The alert on missed rotations and the dashboard's cap read these.
	if v, ok := metricValue(second, "codat_rotator_schedule_interval_seconds", `target="crash"`); !ok || v != 2 {
		t.Errorf("schedule_interval_seconds of @every 2s: got %v (present %v), want 2", v, ok)
	}
	if v, ok := metricValue(second, "codat_rotator_max_keys", `target="crash"`); !ok || v != DefaultMaxKeys {
		t.Errorf("max_keys: got %v (present %v), want %d", v, ok, DefaultMaxKeys)
	}

	d.stop(t)
	distinct := map[string]bool{}
	for _, id := range vaultHistory(t, e, "key_id") {
		distinct[id] = true
	}
	if len(distinct) < 4 {
		t.Errorf("vault served %d distinct keys over time, want the bootstrap key and ≥ 3 rotated ones", len(distinct))
	}
	if v := e.emu.Violations(); len(v) != 0 {
		t.Errorf("emulator violations: %+v", v)
	}
	checkTargetLogs(t, d.records())
	// I7: no key in the metrics either.
	for _, k := range append([]string{e.emu.InitialKey()}, rawKeys(t, e)...) {
		if strings.Contains(first+second, k) {
			t.Errorf("I7: a raw key appears in /metrics")
		}
	}
	e.checkInvariants(t)
}

// rawKeys returns every raw key Vault has held for the target.
func rawKeys(t *testing.T, e *daemonEnv) []string {
	t.Helper()
	return vaultHistory(t, e, "api_key")
}

// vaultHistory returns a field of every version of the target's secret,
// oldest first.
func vaultHistory(t *testing.T, e *daemonEnv, field string) []string {
	t.Helper()
	md, err := e.api.KVv2(e.mount).GetMetadata(context.Background(), "codat/crash")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for v := 1; v <= md.CurrentVersion; v++ {
		s, err := e.api.KVv2(e.mount).GetVersion(context.Background(), "codat/crash", v)
		if err != nil || s.Data == nil {
			continue
		}
		if k, _ := s.Data[field].(string); k != "" {
			out = append(out, k)
		}
	}
	return out
}

// TestDaemonAdminSocket: while the daemon runs, rotate, rotate
// --emergency, keys and resume go through its admin socket (mode 0600),
// and a second daemon on the same config is refused.
func TestDaemonAdminSocket(t *testing.T) {
	e := newDaemonEnv(t, "@every 1h", "1s")
	d := e.start(t, nil)
	d.waitRunning(t)
	d.waitRotations(t, 10*time.Second, 1) // the catch-up: it never rotated
	// The bootstrap key retires after its grace; wait for it so that no
	// retirement runs during the manual rotation below.
	initial := e.emu.Keys()[0].ID
	d.until(t, 10*time.Second, "the bootstrap key deleted", func() bool { return !e.activeKeys()[initial] })

	fi, err := os.Stat(e.sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("admin socket mode: got %v, want a socket with 0600", fi.Mode())
	}

	t.Run("rotate", func(t *testing.T) {
		code, stdout, stderr := e.cli(t, nil, "rotate")
		if code != 0 {
			t.Fatalf("rotate: exit %d\n%s%s", code, stdout, stderr)
		}
		if strings.Contains(stdout+stderr, "locked") || strings.Contains(stdout+stderr, "in use") {
			t.Errorf("rotate met the state file lock instead of the daemon:\n%s%s", stdout, stderr)
		}
		m := rotatedKey.FindStringSubmatch(stdout)
		if m == nil {
			t.Fatalf("rotate printed no new key:\n%s", stdout)
		}
		if got := e.servedKeyID(t); got != m[1] {
			t.Errorf("vault serves %s, rotate printed %s", got, m[1])
		}
		// The daemon did the work: its own log has the rotation.
		n := d.count(func(r logRecord) bool { return r.str("msg") == "rotation done" && r.str("new_key_id") == m[1] })
		if n != 1 {
			t.Errorf("the daemon's log shows the rotation to %s %d times, want 1", m[1], n)
		}
	})

	t.Run("emergency", func(t *testing.T) {
		// The previous rotation's key retires after 1s: let it, so that
		// the emergency meets no running retirement.
		d.until(t, 10*time.Second, "one key left", func() bool { return len(e.activeKeys()) == 1 })
		old := e.servedKeyID(t)
		portal, _, err := e.emu.AddPortalKey("made-by-a-person")
		if err != nil {
			t.Fatal(err)
		}
		code, stdout, stderr := e.cli(t, nil, "rotate", "--emergency")
		if code != 0 {
			t.Fatalf("rotate --emergency: exit %d\n%s%s", code, stdout, stderr)
		}
		m := rotatedKey.FindStringSubmatch(stdout)
		if m == nil {
			t.Fatalf("rotate --emergency printed no new key:\n%s", stdout)
		}
		if !strings.Contains(stdout, "crash: deleted key "+old) {
			t.Errorf("rotate --emergency did not report deleting %s:\n%s", old, stdout)
		}
		// At once: no waiting for the grace.
		got := e.activeKeys()
		want := map[string]bool{m[1]: true, portal: true}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("keys at codat after the emergency: got %v, want the new key %s and the portal key %s", got, m[1], portal)
		}
		if served := e.servedKeyID(t); served != m[1] {
			t.Errorf("vault serves %s, want %s", served, m[1])
		}
	})

	t.Run("keys", func(t *testing.T) {
		code, stdout, stderr := e.cli(t, nil, "keys")
		if code != 0 {
			t.Fatalf("keys: exit %d\n%s%s", code, stdout, stderr)
		}
		served := e.servedKeyID(t)
		checkKeysOutput(t, stdout, served)
	})

	t.Run("resume", func(t *testing.T) {
		// The target is not halted: resume says so, and nothing is
		// logged as resumed (issue 16).
		code, stdout, stderr := e.cli(t, nil, "resume", "--target", "crash")
		if code != 0 || stdout != "crash: not halted; nothing to resume (its scheduled rotations run)\n" {
			t.Fatalf("resume: exit %d\n%s%s", code, stdout, stderr)
		}
		if n := d.count(msgIs("target resumed by an operator")); n != 0 {
			t.Errorf("the daemon logged a resume of a target that was not halted")
		}
	})

	t.Run("second daemon", func(t *testing.T) {
		second := e.start(t, nil)
		code := second.wait(t, 15*time.Second)
		out := second.logs.String()
		if code == 0 {
			t.Fatalf("a second daemon on the same config: exit 0\n%s", out)
		}
		want := fmt.Sprintf("state file is in use by another codat-rotator (pid %d: %s run --config %s)", d.cmd.Process.Pid, binary, e.config)
		if !strings.Contains(out, want) {
			t.Errorf("second daemon's error lacks %q:\n%s", want, out)
		}
		// The socket is configured and the first daemon answers on it: an
		// error that says the socket is disabled sends the operator the
		// wrong way.
		if strings.Contains(out, "admin socket is disabled") {
			t.Errorf("second daemon's error claims the admin socket is disabled, but listen.admin_socket is %s:\n%s", e.sock, out)
		}
		// The first daemon is unharmed.
		if code, stdout, stderr := e.cli(t, nil, "status", "--json"); code != 0 || !strings.Contains(stdout, `"daemon": true`) {
			t.Errorf("status after the second daemon failed: exit %d\n%s%s", code, stdout, stderr)
		}
	})

	d.stop(t)
	if _, err := os.Lstat(e.sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("admin socket left after the daemon stopped: %v", err)
	}
	e.checkInvariants(t)
	for _, k := range e.emu.Keys() {
		if k.Origin == emulator.OriginPortal && k.Deleted != nil {
			t.Errorf("I6: portal key %s was deleted", k.ID)
		}
	}
}

// checkKeysOutput checks `keys` output: every key marked, the served one
// flagged, and the portal keys foreign.
func checkKeysOutput(t *testing.T, out, served string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 2 || lines[0] != "crash" {
		t.Fatalf("keys output: want the target name, then its keys:\n%s", out)
	}
	flagged := 0
	markings := map[string]int{}
	for _, line := range lines[1:] {
		f := strings.Fields(line)
		if len(f) < 2 {
			t.Errorf("keys line %q: want id and marking", line)
			continue
		}
		markings[f[1]]++
		isServed := strings.HasSuffix(line, "(served by vault)")
		if isServed {
			flagged++
		}
		if (f[0] == served) != isServed {
			t.Errorf("keys line %q: served flag wrong (vault serves %s)", line, served)
		}
		if f[0] == served && f[1] != "managed" {
			t.Errorf("keys line %q: the served key is not marked managed", line)
		}
		if strings.Contains(line, "made-by-a-person") && f[1] != "foreign" {
			t.Errorf("keys line %q: a portal key is not marked foreign", line)
		}
	}
	if flagged != 1 {
		t.Errorf("keys: %d keys flagged served, want 1:\n%s", flagged, out)
	}
	if markings["foreign"] == 0 {
		t.Errorf("keys: no foreign key listed:\n%s", out)
	}
}

// TestStatusThroughDaemonAndInProcess: status --json and status from the
// running daemon, then from the state file once it stopped.
func TestStatusThroughDaemonAndInProcess(t *testing.T) {
	e := newDaemonEnv(t, "@every 1h", "1s")
	d := e.start(t, nil)
	d.waitRunning(t)
	d.waitRotations(t, 10*time.Second, 1)
	// The bootstrap key retires after 1s; then the state settles.
	d.until(t, 10*time.Second, "one key left", func() bool { return e.emu.ActiveKeys() == 1 })
	served := e.servedKeyID(t)

	statusJSON := func(t *testing.T, wantDaemon bool) {
		t.Helper()
		code, stdout, stderr := e.cli(t, nil, "status", "--json")
		if code != 0 {
			t.Fatalf("status --json: exit %d\n%s%s", code, stdout, stderr)
		}
		var raw map[string]any
		if err := json.Unmarshal([]byte(stdout), &raw); err != nil {
			t.Fatalf("status --json is not JSON: %v\n%s", err, stdout)
		}
		var doc admin.StatusReport
		if err := json.Unmarshal([]byte(stdout), &doc); err != nil {
			t.Fatal(err)
		}
		if doc.Daemon != wantDaemon {
			t.Errorf("daemon: got %v, want %v", doc.Daemon, wantDaemon)
		}
		if len(doc.Targets) != 1 {
			t.Fatalf("targets: got %d, want 1\n%s", len(doc.Targets), stdout)
		}
		ts := doc.Targets[0]
		if ts.CurrentKey == nil || ts.CurrentKey.ID != served {
			t.Errorf("current key: got %+v, want %s (what vault serves)", ts.CurrentKey, served)
		}
		if got, want := ts.KeysUsed, e.emu.ActiveKeys(); got != want {
			t.Errorf("keys_used: got %d, want %d (the emulator's active keys)", got, want)
		}
		switch {
		case wantDaemon && (ts.NextRotation == nil || !ts.NextRotation.After(time.Now())):
			t.Errorf("next_rotation: got %v, want a time in the future", ts.NextRotation)
		case !wantDaemon && ts.NextRotation != nil:
			t.Errorf("next_rotation: got %v with no daemon running, want none", ts.NextRotation)
		}
		if ts.Halted || ts.Journal != nil || ts.LastResult != "success" {
			t.Errorf("halted %v, journal %+v, last result %q: want a settled success", ts.Halted, ts.Journal, ts.LastResult)
		}
		if ts.MaxKeys != 10 || ts.ReserveSlots != 1 {
			t.Errorf("max_keys %d, reserve_slots %d: want 10 and 1", ts.MaxKeys, ts.ReserveSlots)
		}
	}
	statusText := func(t *testing.T, next string) {
		t.Helper()
		code, stdout, stderr := e.cli(t, nil, "status")
		if code != 0 {
			t.Fatalf("status: exit %d\n%s%s", code, stdout, stderr)
		}
		for _, want := range []string{"crash  (" + e.mount + "/codat/crash)", "state:          ok", "current key:    " + served, "next rotation:  " + next, "keys:           1 of 10 used"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("status lacks %q:\n%s", want, stdout)
			}
		}
	}

	t.Run("daemon json", func(t *testing.T) { statusJSON(t, true) })
	t.Run("daemon text", func(t *testing.T) { statusText(t, "20") })
	d.stop(t)
	t.Run("in-process json", func(t *testing.T) { statusJSON(t, false) })
	t.Run("in-process text", func(t *testing.T) { statusText(t, "none: no daemon is running") })
}

// TestDaemonSIGTERMDuringRotationLeavesJournal: a SIGTERM while a create
// hangs cancels the rotation after the shutdown timeout and keeps its
// journal; the next start finishes or rolls it back.
func TestDaemonSIGTERMDuringRotationLeavesJournal(t *testing.T) {
	e := newDaemonEnv(t, "@every 1h", "1s")
	if err := e.emu.SetFaults(emulator.Faults{Create: emulator.OpFaults{Latency: emulator.Duration(20 * time.Second)}}); err != nil {
		t.Fatal(err)
	}
	d := e.start(t, nil, "--shutdown-timeout", "500ms")
	d.waitRunning(t)
	d.waitCreateInFlight(t)

	sent := time.Now()
	d.signal(t, syscall.SIGTERM)
	if code := d.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("exit after SIGTERM: got %d, want 0", code)
	}
	if took := time.Since(sent); took > 5*time.Second {
		t.Errorf("the daemon took %s to stop with --shutdown-timeout 500ms", took)
	}
	if d.count(msgIs("shutdown: cancelling the running rotation; its journal is kept for the next start")) != 1 {
		t.Errorf("no log line about cancelling the running rotation")
	}

	db, err := store.Open(e.statePath(), store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	st, err := db.Load("crash")
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if st.Journal == nil {
		t.Fatalf("no journal in the state file after a SIGTERM during the create")
	}
	if st.Journal.Step != store.StepCreate {
		t.Errorf("journal step: got %s, want %s", st.Journal.Step, store.StepCreate)
	}
	if st.Halted {
		t.Errorf("a shutdown halted the target: %s", st.HaltReason)
	}
	journaled := st.Journal.RotationID

	if err := e.emu.SetFaults(emulator.Faults{}); err != nil {
		t.Fatal(err)
	}
	d2 := e.start(t, nil)
	d2.waitRunning(t)
	if d2.count(msgIs("an interrupted rotation is in the journal; finishing it now")) != 1 {
		t.Errorf("the restart did not report the journal of rotation %s", journaled)
	}
	d2.waitRotations(t, 15*time.Second, 1)
	d2.stop(t)
	e.checkInvariants(t)
	if v := e.emu.Violations(); len(v) != 0 {
		t.Errorf("emulator violations: %+v", v)
	}
}

// TestDaemonSIGHUPAppliesSchedule: a SIGHUP applies a changed schedule;
// one with an invalid config is logged and changes nothing.
func TestDaemonSIGHUPAppliesSchedule(t *testing.T) {
	e := newDaemonEnv(t, "@every 1h", "1s")
	d := e.start(t, nil)
	d.waitRunning(t)
	d.waitRotations(t, 10*time.Second, 1) // the catch-up: it never rotated

	e.writeConfig(t, "@every 2s", "1s")
	d.signal(t, syscall.SIGHUP)
	d.waitLog(t, 5*time.Second, 1, `"config reloaded"`, msgIs("config reloaded"))
	if n := d.count(func(r logRecord) bool { return r.str("msg") == "target scheduled" && r.str("schedule") == "@every 2s" }); n != 1 {
		t.Errorf("log lines scheduling @every 2s: got %d, want 1", n)
	}
	d.waitRotations(t, 10*time.Second, 3)

	// grace longer than the interval: Validate rejects it.
	e.writeConfig(t, "@every 2s", "1h")
	d.signal(t, syscall.SIGHUP)
	failed := func(r logRecord) bool {
		return strings.HasPrefix(r.str("msg"), "config reload failed") && strings.Contains(r.str("error"), "targets[0].grace")
	}
	d.waitLog(t, 5*time.Second, 1, `"config reload failed" naming targets[0].grace`, failed)
	// The 2s schedule keeps running.
	n := d.count(msgIs("rotation done"))
	d.waitRotations(t, 10*time.Second, n+1)
	if got := d.count(msgIs("config reloaded")); got != 1 {
		t.Errorf("config reloaded: logged %d times, want 1 (the invalid config is not applied)", got)
	}

	d.stop(t)
	e.checkInvariants(t)
	if v := e.emu.Violations(); len(v) != 0 {
		t.Errorf("emulator violations: %+v", v)
	}
}

// TestDaemonSIGHUPRemovesTargetMidRotation (issue 9, defect 5): a reload
// that removes a target while its create hangs at Codat lets that
// rotation finish with the client it started with: no panic, no journal
// left, no key at Codat the state file does not know. The remaining
// target rotates on.
func TestDaemonSIGHUPRemovesTargetMidRotation(t *testing.T) {
	e := newDaemonEnv(t, "@every 1h", "1s")
	if err := e.emu.SetFaults(emulator.Faults{Create: emulator.OpFaults{Latency: emulator.Duration(3 * time.Second)}}); err != nil {
		t.Fatal(err)
	}
	other, err := emulator.New(emulator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	otherSrv := httptest.NewServer(other)
	t.Cleanup(func() { other.Close(); otherSrv.Close() })

	d := e.start(t, []string{"OTHER_BOOTSTRAP_API_KEY=" + other.InitialKey()})
	d.waitRunning(t)
	d.waitCreateInFlight(t) // the catch-up of "crash": it never rotated

	// The reload drops "crash" for another target.
	cfg := fmt.Sprintf(`state_path: %s
log: {level: debug, format: json}
listen:
  metrics: %s
  admin_socket: %s
vault:
  address: %s
targets:
  - name: other
    codat:
      base_url: %s
      bootstrap_key_env: OTHER_BOOTSTRAP_API_KEY
    vault: {mount: %s, path: codat/other}
    schedule: "@every 1h"
    grace: 1s
    key_name_prefix: other-
`, e.statePath(), e.metrics, e.sock, e.vaultURL, otherSrv.URL, e.mount)
	if err := os.WriteFile(e.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	d.signal(t, syscall.SIGHUP)
	d.waitLog(t, 5*time.Second, 1, `"config reloaded"`, msgIs("config reloaded"))
	done := func(target string) func(logRecord) bool {
		return func(r logRecord) bool { return r.str("msg") == "rotation done" && r.str("target") == target }
	}
	d.waitLog(t, 15*time.Second, 1, `"rotation done" of the removed target`, done("crash"))
	d.waitLog(t, 15*time.Second, 1, `"rotation done" of the new target`, done("other"))
	if n := d.count(func(r logRecord) bool { return strings.Contains(strings.ToLower(r.str("msg")), "panic") }); n != 0 {
		t.Errorf("%d log lines about a panic", n)
	}
	if n := d.count(func(r logRecord) bool { return r.str("msg") == "rotation failed" }); n != 0 {
		t.Errorf("%d rotations failed", n)
	}
	d.stop(t)
	// checkInvariants reads the removed target's state: no journal, the
	// served key live, every key of its name shape known.
	e.checkInvariants(t)
}

// TestSdNotify: with NOTIFY_SOCKET and WATCHDOG_USEC set, the daemon
// tells systemd it is ready, feeds the watchdog, and says it stops.
func TestSdNotify(t *testing.T) {
	dir, err := os.MkdirTemp("", "cr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	var mu sync.Mutex
	var got []string
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			mu.Lock()
			got = append(got, string(buf[:n]))
			mu.Unlock()
		}
	}()
	datagrams := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), got...)
	}
	index := func(state string, from int) int {
		for i, g := range datagrams() {
			if i >= from && slices.Contains(strings.Split(g, "\n"), state) {
				return i
			}
		}
		return -1
	}

	e := newDaemonEnv(t, "@every 1h", "1s")
	// WATCHDOG_PID is left unset: go-systemd then accepts any pid.
	d := e.start(t, []string{"NOTIFY_SOCKET=" + path, "WATCHDOG_USEC=1000000"})
	d.until(t, 15*time.Second, "READY=1", func() bool { return index("READY=1", 0) >= 0 })
	ready := index("READY=1", 0)
	if !strings.Contains(datagrams()[ready], "STATUS=rotating 1 target(s)") {
		t.Errorf("READY datagram: got %q, want a STATUS too", datagrams()[ready])
	}
	if d.count(msgIs("codat-rotator running")) != 1 {
		t.Errorf("READY=1 came before the start-up finished")
	}
	// WATCHDOG_USEC=1s: a ping every 0.5s.
	d.until(t, 5*time.Second, "3 WATCHDOG=1 after READY=1", func() bool {
		n := 0
		for i, g := range datagrams() {
			if i > ready && g == "WATCHDOG=1" {
				n++
			}
		}
		return n >= 3
	})

	// A reload through the admin socket (the unit's ExecReload) is
	// bracketed by RELOADING=1, with MONOTONIC_USEC on CLOCK_MONOTONIC
	// for systemd ≥ 253, and READY=1, both before the command returns;
	// a refused reload too.
	for _, tt := range []struct {
		grace, status string
		code          int
	}{{"1s", "STATUS=config reloaded", exitOK}, {"2h", "STATUS=config reload failed; running with the previous config", exitUsage}} {
		e.writeConfig(t, "@every 1h", tt.grace)
		from := len(datagrams())
		before := monotonicNow(t)
		if code, _, stderr := e.cli(t, nil, "reload"); code != tt.code {
			t.Fatalf("reload with grace %s: exit %d, want %d; stderr %q", tt.grace, code, tt.code, stderr)
		}
		after := monotonicNow(t)
		reloading, ready := index("RELOADING=1", from), index("READY=1", from)
		if reloading < 0 || ready < reloading {
			t.Fatalf("reload with grace %s: want RELOADING=1 then READY=1 before the command returned; datagrams: %q", tt.grace, datagrams()[from:])
		}
		var usec uint64
		for _, field := range strings.Split(datagrams()[reloading], "\n") {
			if v, ok := strings.CutPrefix(field, "MONOTONIC_USEC="); ok {
				usec, _ = strconv.ParseUint(v, 10, 64)
			}
		}
		if usec < before || usec > after {
			t.Errorf("RELOADING=1 datagram %q: want MONOTONIC_USEC between %d and %d", datagrams()[reloading], before, after)
		}
		if !slices.Contains(strings.Split(datagrams()[ready], "\n"), tt.status) {
			t.Errorf("READY=1 after the reload: got %q, want %s in it", datagrams()[ready], tt.status)
		}
	}

	stopFrom := len(datagrams())
	d.stop(t)
	deadline := time.Now().Add(5 * time.Second)
	for index("STOPPING=1", stopFrom) < 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if index("STOPPING=1", stopFrom) < 0 {
		t.Errorf("no STOPPING=1 after SIGTERM; datagrams: %q", datagrams())
	}
	if i := index("STOPPING=1", 0); i >= 0 && i < stopFrom {
		t.Errorf("STOPPING=1 before SIGTERM; datagrams: %q", datagrams())
	}
	if n := d.count(msgIs("sd_notify failed")); n != 0 {
		t.Errorf("sd_notify failed %d times", n)
	}
}

// monotonicNow is CLOCK_MONOTONIC in microseconds, as MONOTONIC_USEC=
// carries it.
func monotonicNow(t *testing.T) uint64 {
	t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return uint64(ts.Nano() / 1000)
}

// TestDaemonSecondSignalExitsAtOnce: a second SIGTERM during a long
// graceful shutdown exits at once; the next run recovers the journal.
func TestDaemonSecondSignalExitsAtOnce(t *testing.T) {
	e := newDaemonEnv(t, "@every 1h", "1s")
	if err := e.emu.SetFaults(emulator.Faults{Create: emulator.OpFaults{Latency: emulator.Duration(60 * time.Second)}}); err != nil {
		t.Fatal(err)
	}
	d := e.start(t, nil, "--shutdown-timeout", "30s")
	d.waitRunning(t)
	d.waitCreateInFlight(t)

	sent := time.Now()
	d.signal(t, syscall.SIGTERM)
	d.waitLog(t, 5*time.Second, 1, "of the shutdown", msgIs("signal received; shutting down"))
	if d.exited() {
		t.Fatalf("the daemon exited on the first signal with a rotation in flight and a 30s shutdown timeout")
	}
	d.signal(t, syscall.SIGTERM)
	code := d.wait(t, 10*time.Second)
	if took := time.Since(sent); took > 5*time.Second {
		t.Errorf("the second signal: the daemon took %s to exit, want well under the 30s shutdown timeout", took)
	}
	if code == 0 {
		t.Errorf("exit after the second signal: got 0, want non-zero (the graceful path was skipped)")
	}
	if out := d.logs.String(); !strings.Contains(out, "second signal, exiting now") {
		t.Errorf("no word of the second signal:\n%s", out)
	}

	// The hard exit left a journal; a rotation finishes or rolls it back.
	if err := e.emu.SetFaults(emulator.Faults{}); err != nil {
		t.Fatal(err)
	}
	e.rotate(t)
	e.checkInvariants(t)
}

// TestCheckCommand: check passes with good credentials and names the
// token when Vault refuses it.
func TestCheckCommand(t *testing.T) {
	e := newDaemonEnv(t, "@every 1h", "1s")
	t.Run("good", func(t *testing.T) {
		code, stdout, stderr := e.cli(t, nil, "check")
		if code != 0 {
			t.Fatalf("check: exit %d\n%s%s", code, stdout, stderr)
		}
		lines := strings.Split(strings.TrimSpace(stdout), "\n")
		for _, line := range lines {
			if !strings.HasPrefix(line, "ok ") {
				t.Errorf("check line %q: want ok", line)
			}
		}
		for _, want := range []string{"config", "vault", "state file", "target crash: vault", "target crash: codat"} {
			found := false
			for _, line := range lines {
				found = found || strings.HasPrefix(strings.TrimSpace(strings.TrimPrefix(line, "ok ")), want)
			}
			if !found {
				t.Errorf("check printed no %q line:\n%s", want, stdout)
			}
		}
	})
	t.Run("wrong token", func(t *testing.T) {
		code, stdout, stderr := e.cli(t, []string{"VAULT_TOKEN=hvs.not-a-real-token"}, "check")
		if code == 0 {
			t.Fatalf("check with a wrong token: exit 0\n%s", stdout)
		}
		var fail string
		for _, line := range strings.Split(stdout, "\n") {
			if strings.HasPrefix(line, "FAIL") {
				fail = line
				break
			}
		}
		if fail == "" {
			t.Fatalf("check with a wrong token printed no FAIL line:\n%s%s", stdout, stderr)
		}
		if !strings.Contains(fail, "vault") || !strings.Contains(fail, "token") {
			t.Errorf("first FAIL line %q: want it to name vault's token problem", fail)
		}
		if strings.Contains(stdout, "token valid") {
			t.Errorf("check says the wrong token is valid:\n%s", stdout)
		}
	})
}

// TestKeysCommand: keys, in-process, marks each key and flags the one
// Vault serves.
func TestKeysCommand(t *testing.T) {
	e := newDaemonEnv(t, "@every 1h", "1s")
	e.rotate(t) // bootstrap and a first rotation: one adopted, one managed key
	if _, _, err := e.emu.AddPortalKey("made-by-a-person"); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := e.cli(t, nil, "keys")
	if code != 0 {
		t.Fatalf("keys: exit %d\n%s%s", code, stdout, stderr)
	}
	checkKeysOutput(t, stdout, e.servedKeyID(t))
	initial := e.emu.Keys()[0].ID
	if !regexp.MustCompile(`(?m)^  ` + initial + `\s+adopted\s+retiring`).MatchString(stdout) {
		t.Errorf("keys: the bootstrap key %s is not marked adopted and retiring:\n%s", initial, stdout)
	}
	if got, want := strings.Count(stdout, "\n"), 1+e.emu.ActiveKeys(); got != want {
		t.Errorf("keys: %d lines, want %d (the target, then one per key):\n%s", got, want, stdout)
	}
	for _, k := range rawKeys(t, e) {
		if strings.Contains(stdout+stderr, k) {
			t.Errorf("I7: keys printed a raw key")
		}
	}
}

// TestResumeCommand: resume on a target that is not halted succeeds;
// without --target it is a usage error.
func TestResumeCommand(t *testing.T) {
	e := newDaemonEnv(t, "@every 1h", "1s")
	e.rotate(t)
	db, err := store.Open(e.statePath(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update("crash", func(st *store.Target) error {
		st.Halted, st.HaltReason, st.HaltedAt = true, "a test halted it", time.Now()
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := e.cli(t, nil, "resume", "--target", "crash")
	if code != 0 || stdout != "crash: resumed; scheduled rotations run again, and keys overdue for retirement go now\n" {
		t.Errorf("resume --target crash: exit %d\n%s%s", code, stdout, stderr)
	}
	// Resuming again finds nothing halted, and says so (issue 16).
	code, stdout, stderr = e.cli(t, nil, "resume", "--target", "crash")
	if code != 0 || stdout != "crash: not halted; nothing to resume (its scheduled rotations run)\n" {
		t.Errorf("resume of a target not halted: exit %d\n%s%s", code, stdout, stderr)
	}
	code, _, stderr = e.cli(t, nil, "resume")
	if code != exitUsage || !strings.Contains(stderr, "--target is required") {
		t.Errorf("resume without --target: exit %d, want %d\n%s", code, exitUsage, stderr)
	}
	code, _, stderr = e.cli(t, nil, "resume", "--target", "nope")
	if code != exitUsage || !strings.Contains(stderr, `--target "nope": no such target`) {
		t.Errorf("resume --target nope: exit %d, want %d\n%s", code, exitUsage, stderr)
	}
	db, err = store.Open(e.statePath(), store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st, err := db.Load("crash")
	if err != nil {
		t.Fatal(err)
	}
	if st.Halted || st.LastResult != "success" {
		t.Errorf("after resume: halted %v, last result %q; want not halted and the rotation's success kept", st.Halted, st.LastResult)
	}
}
