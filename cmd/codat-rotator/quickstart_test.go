package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/codat/emulator"
	"github.com/codat-rotator/codat-rotator/vault/vaulttest"
)

const readmeFile = repoRoot + "/README.md"

// quickStartMarker precedes the README's production quick start.
const quickStartMarker = "<!-- quick-start:"

// quickStart returns the README's quick-start block: the first fenced
// block after its marker.
func quickStart(tb testing.TB) string {
	tb.Helper()
	readme := mustRead(tb, readmeFile)
	_, after, ok := strings.Cut(readme, quickStartMarker)
	if !ok {
		tb.Fatalf("README.md has no %q marker before its quick start", quickStartMarker)
	}
	_, block, ok := strings.Cut(after, "```bash\n")
	if !ok {
		tb.Fatal("README.md: no ```bash block after the quick-start marker")
	}
	block, _, ok = strings.Cut(block, "\n```\n")
	if !ok {
		tb.Fatal("README.md: the quick-start block does not end")
	}
	return block + "\n"
}

// TestREADMEQuickStart (issue 24) runs the README's production quick
// start as written, in bash, against a Vault dev server of its own and
// the Codat emulator. Only the addresses and directories are
// substituted: Vault's and Codat's URLs, the metrics address, and
// /etc, /var/lib and /run/codat-rotator, which become directories of
// the test. `vault` is the test Vault's binary and `codat-rotator` the
// binary under test, both on PATH; the Vault admin's VAULT_TOKEN is the
// dev server's root token, and the Portal key the block reads is the
// emulator's first key, typed on stdin. The block's last command, the
// daemon, runs until it is ready and then gets SIGTERM, as Ctrl-C would.
func TestREADMEQuickStart(t *testing.T) {
	script := quickStart(t)
	vs, err := vaulttest.Start()
	if err != nil {
		t.Fatalf("vault dev server: %v", err)
	}
	t.Cleanup(vs.Stop)
	emu, err := emulator.New(emulator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	codatSrv := httptest.NewServer(emu)
	t.Cleanup(func() { emu.Close(); codatSrv.Close() })

	root, err := os.MkdirTemp("", "qs") // short: the admin socket's path
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	bin := filepath.Join(root, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	vaultBin, err := vaulttest.Binary()
	if err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{"codat-rotator": binary, "vault": vaultBin} {
		if err := os.Symlink(target, filepath.Join(bin, name)); err != nil {
			t.Fatal(err)
		}
	}
	metrics := freeAddr(t)
	substitutions := []struct{ old, new string }{
		{"https://vault.example:8200", vs.Addr},
		{"https://api.codat.io", codatSrv.URL},
		{"127.0.0.1:9464", metrics},
		{"/etc/codat-rotator", root + "/etc/codat-rotator"},
		{"/var/lib/codat-rotator", root + "/var/lib/codat-rotator"},
		{"/run/codat-rotator", root + "/run/codat-rotator"},
	}
	for _, s := range substitutions {
		if !strings.Contains(script, s.old) {
			t.Fatalf("the quick start no longer says %s; update this test's substitutions:\n%s", s.old, script)
		}
		script = strings.ReplaceAll(script, s.old, s.new)
	}
	if n := strings.Count(script, "\ncodat-rotator run "); n != 1 || !strings.HasPrefix(script[strings.LastIndex(script, "\ncodat-rotator run ")+1:], "codat-rotator run ") {
		t.Fatalf("want the quick start to end with the daemon (codat-rotator run), found %d:\n%s", n, script)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// -e: a failing step stops the script, as it would stop a person.
	cmd := exec.CommandContext(ctx, "bash", "-e", "-o", "pipefail", "-c", script)
	cmd.Dir = filepath.Join("..", "..") // the repository: configs/vault-policy.hcl
	cmd.Env = []string{"PATH=" + bin + ":" + os.Getenv("PATH"), "HOME=" + root, "VAULT_TOKEN=" + vs.RootToken}
	cmd.Stdin = strings.NewReader(emu.InitialKey() + "\n")
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	// Ready: the daemon answers /readyz (Vault serves a key, the state
	// file is open).
	deadline := time.Now().Add(90 * time.Second)
	for {
		select {
		case err := <-done:
			t.Fatalf("the quick start ended before its daemon was ready: %v\n%s", err, out.String())
		default:
		}
		if resp, err := http.Get("http://" + metrics + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the quick start's daemon not ready after 90 s:\n%s", out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	daemon := daemonOf(t, cmd.Process.Pid)
	if err := syscall.Kill(daemon, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("the quick start (its daemon stopped by SIGTERM): %v\n%s", err, out.String())
		}
	case <-time.After(45 * time.Second):
		t.Fatalf("the daemon did not stop within 45 s of SIGTERM:\n%s", out.String())
	}

	output := out.String()
	t.Logf("the quick start's output:\n%s", output)
	if strings.Contains(output, emu.InitialKey()) {
		t.Error("the Portal key appears in the quick start's output")
	}
	if strings.Contains(output, "\nFAIL ") || !strings.Contains(output, "ok   target production: vault policy") {
		t.Errorf("check: want every line ok, the Vault policy included:\n%s", output)
	}
	// What Vault serves is a key the daemon made, not the Portal's, and
	// the Portal's key stays for its grace.
	var served string
	for _, k := range emu.Keys() {
		if k.Deleted == nil && k.Origin != emulator.OriginInitial {
			served = k.ID
		}
		if k.Origin == emulator.OriginInitial && k.Deleted != nil {
			t.Errorf("the Portal key was deleted at once; want it kept for grace (24h)")
		}
	}
	if served == "" || !strings.Contains(output, "\n"+served) {
		t.Errorf("vault kv get -field=key_id: want the key the daemon made (%q) at the start of a line:\n%s", served, output)
	}
	if _, err := os.Stat(root + "/var/lib/codat-rotator/state.db"); err != nil {
		t.Errorf("the state file is not where the quick start's config puts it: %v", err)
	}
	if v := emu.Violations(); len(v) > 0 {
		t.Errorf("emulator violations: %v", v)
	}
}

// daemonOf returns the daemon the quick start's shell, pid, runs in the
// foreground: the shell itself when it exec'd its last command, as bash
// does, else its one child.
func daemonOf(t *testing.T, pid int) int {
	t.Helper()
	if exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe"); err == nil && exe == binary {
		return pid
	}
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(pid) + "/children")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(bytes.TrimSpace(raw)))
	if len(f) != 1 {
		t.Fatalf("the quick start's shell has children %q; want the daemon alone", f)
	}
	child, err := strconv.Atoi(f[0])
	if err != nil {
		t.Fatal(err)
	}
	return child
}
