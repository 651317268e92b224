package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/admin"
	"github.com/codat-rotator/codat-rotator/codat/emulator"
	"github.com/codat-rotator/codat-rotator/vault/vaulttest"
)

// codatFleet serves one emulator per target under /t/<i>/: each target
// its own Codat client behind one listener.
type codatFleet struct {
	emus []*emulator.Server
	url  string
}

func newCodatFleet(tb testing.TB, n int, opts emulator.Options) *codatFleet {
	tb.Helper()
	f := &codatFleet{}
	for range n {
		emu, err := emulator.New(opts)
		if err != nil {
			tb.Fatal(err)
		}
		f.emus = append(f.emus, emu)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest, _ := strings.CutPrefix(r.URL.Path, "/t/")
		i, tail, _ := strings.Cut(rest, "/")
		var n int
		if _, err := fmt.Sscan(i, &n); err != nil || n < 0 || n >= len(f.emus) {
			http.NotFound(w, r)
			return
		}
		r2 := r.Clone(r.Context())
		r2.URL.Path = "/" + tail
		f.emus[n].ServeHTTP(w, r2)
	}))
	tb.Cleanup(func() {
		srv.Close()
		for _, e := range f.emus {
			e.Close()
		}
	})
	f.url = srv.URL
	return f
}

// fleetEnv is a config of several targets, each its own Codat client,
// one of which cannot rotate: Vault serves it a key Codat rejects.
type fleetEnv struct {
	codat  *codatFleet
	vault  *vaulttest.Server
	mount  string
	dir    string
	config string
	sock   string
	broken int
	output bytes.Buffer
}

func newFleetEnv(t *testing.T, n, broken int) *fleetEnv {
	t.Helper()
	vs := vaulttest.Shared(t)
	dir, err := os.MkdirTemp("", "crf") // a short path: the admin socket's
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e := &fleetEnv{codat: newCodatFleet(t, n, emulator.Options{}), vault: vs, mount: vs.NewKV(t), dir: dir,
		config: filepath.Join(dir, "config.yaml"), sock: filepath.Join(dir, "admin.sock"), broken: broken}
	var sb strings.Builder
	fmt.Fprintf(&sb, "state_path: %s\nlog: {level: warn, format: json}\nmax_concurrent_rotations: 2\nlisten:\n  metrics: %q\n  admin_socket: %q\nvault:\n  address: %s\ntargets:\n",
		filepath.Join(dir, "state.db"), freeAddr(t), e.sock, vs.Addr)
	for i := range n {
		fmt.Fprintf(&sb, "  - name: t%d\n    codat: {base_url: %q", i, fmt.Sprintf("%s/t/%d", e.codat.url, i))
		fmt.Fprintf(&sb, ", bootstrap_key_env: CODAT_KEY_%d", i)
		fmt.Fprintf(&sb, "}\n    vault: {mount: %s, path: codat/t%d}\n    schedule: \"0 3 1 1 *\"\n    grace: 1h\n", e.mount, i)
	}
	if err := os.WriteFile(e.config, []byte(sb.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = vs.Client(t).KVv2(e.mount).Put(context.Background(), fmt.Sprintf("codat/t%d", broken),
		map[string]any{"api_key": strings.Repeat("x", 40)})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *fleetEnv) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); !strings.HasPrefix(name, "VAULT_") && !strings.HasPrefix(name, "CODAT_") &&
			name != "NOTIFY_SOCKET" && !strings.HasPrefix(name, "WATCHDOG_") {
			env = append(env, kv)
		}
	}
	env = append(env, "VAULT_TOKEN="+e.vault.RootToken)
	for i, emu := range e.codat.emus {
		env = append(env, fmt.Sprintf("CODAT_KEY_%d=%s", i, emu.InitialKey()))
	}
	return env
}

// cli runs the binary with e's config; it returns the exit code, stdout
// and stderr.
func (e *fleetEnv) cli(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return runCLI(t, time.Minute, e.config, e.env(), func(b []byte) { e.output.Write(b) }, args...)
}

// checkFleetOutput checks a fleet rotate's text: one block per target,
// each line about one target, the broken target's failure, and the
// summary last.
func (e *fleetEnv) checkFleetOutput(t *testing.T, stdout, verb string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	n := len(e.codat.emus)
	want := fmt.Sprintf("%s %d of %d targets, 1 failed, in ", verb, n-1, n)
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, want) {
		t.Errorf("last line: got %q, want the summary %q…", last, want)
	}
	seen := map[string]bool{}
	for _, line := range lines[:len(lines)-1] {
		name, rest, ok := strings.Cut(line, ": ")
		if !ok || !strings.HasPrefix(name, "t") {
			t.Errorf("a line that is not about one target: %q", line)
			continue
		}
		if strings.HasPrefix(rest, "rotated: key ") || strings.HasPrefix(rest, "failed: ") {
			if seen[name] {
				t.Errorf("%s finished twice", name)
			}
			seen[name] = true
		}
	}
	for i := range n {
		name := fmt.Sprintf("t%d", i)
		if !seen[name] {
			t.Errorf("no result line for %s:\n%s", name, stdout)
		}
	}
	broken := fmt.Sprintf("t%d: failed: ", e.broken)
	if !strings.Contains(stdout, broken) || !strings.Contains(stdout, "codat rejects the key vault serves") {
		t.Errorf("the broken target's failure is not reported:\n%s", stdout)
	}
}

// noSecrets fails if a raw key of any target shows in what the
// commands printed.
func (e *fleetEnv) noSecrets(t *testing.T) {
	t.Helper()
	api := e.vault.Client(t)
	var needles []string
	for i, emu := range e.codat.emus {
		needles = append(needles, emu.InitialKey())
		if sec, err := api.KVv2(e.mount).Get(context.Background(), fmt.Sprintf("codat/t%d", i)); err == nil {
			raw, _ := sec.Data["api_key"].(string)
			hdr, _ := sec.Data["authorization_header"].(string)
			needles = append(needles, raw, strings.TrimPrefix(hdr, "Basic "))
		}
	}
	out := e.output.String()
	for _, s := range needles {
		if s != "" && strings.Contains(out, s) {
			t.Fatalf("I7: a raw key or header appears in the commands' output")
		}
	}
}

// TestRotateFleet: `rotate` without --target rotates every target side
// by side, in-process and through a daemon's admin socket: a result
// line per target as it finishes, a summary, and exit status 1 because
// one target failed; --json prints one report in config order. The
// real binary, a real Vault, each target its own emulator.
func TestRotateFleet(t *testing.T) {
	const n, broken = 6, 3
	e := newFleetEnv(t, n, broken)

	// In-process (no daemon), three at once.
	code, stdout, stderr := e.cli(t, "rotate", "--parallel", "3")
	if code != exitError {
		t.Errorf("exit: got %d, want %d (a target failed)\n%s%s", code, exitError, stdout, stderr)
	}
	e.checkFleetOutput(t, stdout, "rotated")
	if !strings.Contains(stderr, fmt.Sprintf("failed: t%d", broken)) {
		t.Errorf("stderr does not name the failed target:\n%s", stderr)
	}
	// How far it is, as each target finishes.
	for i := 1; i <= n; i++ {
		if !strings.Contains(stderr, fmt.Sprintf("codat-rotator rotate: %d/%d done", i, n)) {
			t.Errorf("stderr does not count %d/%d done:\n%s", i, n, stderr)
		}
	}
	if !strings.Contains(stderr, "left at 900 Codat requests a minute") {
		t.Errorf("stderr does not say the time left at the budget:\n%s", stderr)
	}
	for i, emu := range e.codat.emus {
		keys := emu.ActiveKeys()
		if i == broken && keys != 1 || i != broken && keys != 2 {
			t.Errorf("t%d: %d keys at codat after a routine rotation", i, keys)
		}
	}

	// Through the daemon: an emergency of the fleet, four at once (the
	// daemon's own bound of two still applies).
	d := startFleetDaemon(t, e)
	code, stdout, stderr = e.cli(t, "rotate", "--emergency", "--parallel", "4")
	if code != exitError {
		t.Errorf("emergency: exit %d, want %d\n%s%s", code, exitError, stdout, stderr)
	}
	t.Logf("rotate --emergency through the daemon:\n%s", stdout)
	e.checkFleetOutput(t, stdout, "rotated")
	for i, emu := range e.codat.emus {
		if i != broken && emu.ActiveKeys() != 1 {
			t.Errorf("t%d: %d keys at codat after the emergency, want 1", i, emu.ActiveKeys())
		}
		if v := emu.Violations(); len(v) != 0 {
			t.Errorf("t%d: emulator violations: %+v", i, v)
		}
	}

	// --json: one report at the end, the entries in config order.
	code, stdout, _ = e.cli(t, "rotate", "--json")
	if code != exitError {
		t.Errorf("--json: exit %d, want %d", code, exitError)
	}
	var rep admin.RotateReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("--json output is not one report: %v\n%s", err, stdout)
	}
	if len(rep.Results) != n {
		t.Fatalf("--json: %d entries, want %d", len(rep.Results), n)
	}
	for i, r := range rep.Results {
		if r.Target != fmt.Sprintf("t%d", i) {
			t.Errorf("entry %d is %s: not in config order", i, r.Target)
		}
		if ok := i != broken; r.Succeeded != ok || ok && (r.Result == nil || r.Result.NewKey == nil) {
			t.Errorf("%s: succeeded %v, result %+v", r.Target, r.Succeeded, r.Result)
		}
	}

	// A dry run of the fleet changes nothing and plans every target.
	code, stdout, _ = e.cli(t, "rotate", "--dry-run")
	if code != exitError || !strings.Contains(stdout, "t0: dry run, nothing changed") {
		t.Errorf("dry run: exit %d\n%s", code, stdout)
	}
	if last := strings.TrimSpace(stdout)[strings.LastIndex(strings.TrimSpace(stdout), "\n")+1:]; !strings.HasPrefix(last, fmt.Sprintf("planned %d of %d targets, 1 failed", n-1, n)) {
		t.Errorf("dry run summary: %q", last)
	}
	d.stop(t)
	e.noSecrets(t)
}

// startFleetDaemon runs `codat-rotator run` on e's config until the test
// ends and waits for its admin socket.
func startFleetDaemon(t *testing.T, e *fleetEnv) *daemonProc {
	t.Helper()
	cmd := exec.Command(binary, "run", "--config", e.config)
	cmd.Env = e.env()
	de := &daemonEnv{crashEnv: &crashEnv{}}
	d := de.startCmd(t, cmd)
	d.until(t, 10*time.Second, "the admin socket", func() bool {
		c, err := admin.Dial(context.Background(), e.sock)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	t.Cleanup(func() { e.output.WriteString(d.logs.String()) })
	return d
}
