//go:build nspawn

// Package systemd holds the unit file and, behind the nspawn build tag
// (`make test-systemd`), its test under a real systemd: a Debian
// bookworm root booted with systemd-nspawn, the shipped unit and the
// built binary installed in it as an operator would, Vault and the
// Codat emulator on the host's loopback, which the container shares.
//
// This file is the container: the cached root, boot, commands inside,
// power-off. unit_test.go is what the test checks.
package systemd

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/vault/vaulttest"
)

var (
	binaryFlag = flag.String("binary", "", "the codat-rotator binary to install (default: build one as `make build` does)")
	cacheFlag  = flag.String("root-cache", "", "directory that caches the Debian root between runs (default: build/nspawn at the repository's root)")
)

// The Debian root: what the new user runs, the smallest Debian
// that boots systemd. The cache directory's name says what it holds, so
// a change here makes a new one.
const (
	suite    = "bookworm"
	variant  = "minbase"
	packages = "systemd,systemd-sysv,dbus"
	rootName = suite + "-" + variant + "-systemd"
	// complete marks a root that debootstrap finished.
	complete = ".codat-rotator-root-complete"
	// stageDir is where the host's staging directory appears inside the
	// container, read-only: the files an operator would copy in.
	stageDir = "/mnt/codat-rotator-stage"
)

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	vaulttest.StopShared()
	os.Exit(code)
}

// repoRoot is the repository's root, from this package's directory.
func repoRoot(tb testing.TB) string {
	tb.Helper()
	abs, err := filepath.Abs("..")
	if err != nil {
		tb.Fatal(err)
	}
	return abs
}

// requirements fails the test, naming what to install, when this
// machine cannot run it. The test runs only when asked for (the nspawn
// build tag), so it never skips: under CI=true and elsewhere alike, a
// missing part is a failure.
func requirements(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Fatalf("systemd-nspawn needs root: run `sudo make test-systemd`")
	}
	for _, tool := range []struct{ name, pkg string }{
		{"systemd-nspawn", "systemd-container"},
		{"debootstrap", "debootstrap"},
		{"nsenter", "util-linux"},
	} {
		if _, err := exec.LookPath(tool.name); err != nil {
			tb.Fatalf("%s is needed (Debian: apt-get install %s): %v", tool.name, tool.pkg, err)
		}
	}
}

// binary returns the codat-rotator binary to install: -binary, or one
// built here as `make build` builds it (static, trimmed).
func binary(t *testing.T) string {
	t.Helper()
	if *binaryFlag != "" {
		if _, err := os.Stat(*binaryFlag); err != nil {
			t.Fatalf("-binary: %v", err)
		}
		return *binaryFlag
	}
	out := filepath.Join(t.TempDir(), "codat-rotator")
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, "./cmd/codat-rotator")
	cmd.Dir = repoRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build codat-rotator: %v\n%s", err, b)
	}
	return out
}

// debianRoot returns the cached Debian root, making it with debootstrap
// on first use (~1 min, from $DEBIAN_MIRROR or deb.debian.org). The
// root is never changed afterwards: containers boot it with
// --volatile=overlay, their writes going to a tmpfs.
func debianRoot(t *testing.T) string {
	t.Helper()
	cache := *cacheFlag
	if cache == "" {
		cache = filepath.Join(repoRoot(t), "build", "nspawn")
	}
	root := filepath.Join(cache, rootName)
	if _, err := os.Stat(filepath.Join(root, complete)); err == nil {
		t.Logf("debian root: %s (cached)", root)
		return root
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		t.Fatal(err)
	}
	mirror := os.Getenv("DEBIAN_MIRROR")
	if mirror == "" {
		mirror = "http://deb.debian.org/debian"
	}
	// Into a fresh directory, renamed when done: an interrupted run
	// leaves no half root behind the name.
	tmp, err := os.MkdirTemp(cache, rootName+".tmp-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	start := time.Now()
	cmd := exec.Command("debootstrap", "--variant="+variant, "--include="+packages, suite, tmp, mirror)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("debootstrap %s from %s: %v\n%s", suite, mirror, err, tail(out, 40))
	}
	if err := os.WriteFile(filepath.Join(tmp, complete), []byte(time.Now().UTC().Format(time.RFC3339)+" "+mirror+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_ = os.RemoveAll(root) // an unfinished one, without its mark
	if err := os.Rename(tmp, root); err != nil {
		t.Fatal(err)
	}
	t.Logf("debian root: %s, made by debootstrap in %s", root, time.Since(start).Round(time.Second))
	return root
}

// tail returns the last n lines of b.
func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// container is a booted systemd-nspawn container.
type container struct {
	cmd     *exec.Cmd
	leader  int // the container's PID 1 (systemd), as the host sees it
	console *syncBuffer
	done    chan struct{}
}

// boot boots root with systemd as PID 1 and the host's stage directory
// at stageDir, and waits until systemd has finished starting up. With
// no system bus on the host, --register=no --keep-unit keep nspawn from
// asking the host's systemd for anything; the network is the host's.
func boot(t *testing.T, root, stage string) *container {
	t.Helper()
	c := &container{console: &syncBuffer{}, done: make(chan struct{})}
	c.cmd = exec.Command("systemd-nspawn", "--directory="+root, "--boot",
		"--register=no", "--keep-unit", "--volatile=overlay", "--console=pipe",
		"--bind-ro="+stage+":"+stageDir, "--machine=codat-rotator-test")
	c.cmd.Stdin = nil
	c.cmd.Stdout, c.cmd.Stderr = c.console, c.console
	// The container goes when the test binary does; SIGTERM is nspawn's
	// orderly shutdown.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("systemd-nspawn: %v", err)
	}
	go func() { _ = c.cmd.Wait(); close(c.done) }()
	t.Cleanup(func() { c.poweroff(t) })

	deadline := time.Now().Add(60 * time.Second)
	for c.leader == 0 {
		select {
		case <-c.done:
			t.Fatalf("systemd-nspawn exited during boot:\n%s", tail(c.console.Bytes(), 40))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no container init after 60s:\n%s", tail(c.console.Bytes(), 40))
		}
		c.leader = childOf(c.cmd.Process.Pid)
		time.Sleep(50 * time.Millisecond)
	}
	// is-system-running --wait returns once start-up is over.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for {
		out, _, _ := c.runCtx(ctx, nil, "systemctl", "is-system-running", "--wait")
		state := strings.TrimSpace(out)
		if state == "running" || state == "degraded" {
			if state == "degraded" {
				failed, _ := c.run(t, "systemctl", "--failed", "--no-legend")
				t.Logf("container booted degraded; failed units:\n%s", failed)
			}
			return c
		}
		if ctx.Err() != nil {
			t.Fatalf("container not up after 90s (%q):\n%s", state, tail(c.console.Bytes(), 40))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// childOf returns a child of pid, 0 if none yet.
func childOf(pid int) int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		if fields := strings.Fields(string(b)); len(fields) > 0 {
			n, _ := strconv.Atoi(fields[0])
			return n
		}
	}
	return 0
}

// containerEnv is the environment of every command inside: nothing of
// the host's (no VAULT_*, no CI), no pager, no colours.
var containerEnv = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"LANG=C.UTF-8", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0", "TERM=dumb"}

// runCtx runs a command inside the container, in all its namespaces and
// its root, and returns stdout, stderr and the exit code (-1: it could
// not run).
func (c *container) runCtx(ctx context.Context, stdin []byte, args ...string) (stdout, stderr string, code int) {
	nsenter := append([]string{"--target", strconv.Itoa(c.leader), "--all", "--root", "--wd", "--", "env", "-i"}, containerEnv...)
	cmd := exec.CommandContext(ctx, "nsenter", append(nsenter, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		code = -1
		e.WriteString(err.Error())
	}
	return o.String(), e.String(), code
}

// run runs a command inside with a minute to finish; the output is
// stdout and stderr together.
func (c *container) run(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	o, e, code := c.runCtx(ctx, nil, args...)
	return o + e, code
}

// must runs a command inside and fails the test unless it exits 0.
func (c *container) must(t *testing.T, args ...string) string {
	t.Helper()
	out, code := c.run(t, args...)
	if code != 0 {
		t.Fatalf("in the container, %s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

// start runs a command inside without waiting; wait returns its exit
// code and output.
func (c *container) start(t *testing.T, args ...string) (wait func() (int, string)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	type result struct {
		out  string
		code int
	}
	res := make(chan result, 1)
	go func() {
		defer cancel()
		o, e, code := c.runCtx(ctx, nil, args...)
		res <- result{o + e, code}
	}()
	return func() (int, string) { r := <-res; return r.code, r.out }
}

// show returns the unit's properties (systemctl show).
func (c *container) show(t *testing.T, unit string, props ...string) map[string]string {
	t.Helper()
	out := c.must(t, "systemctl", "show", unit, "--property="+strings.Join(props, ","))
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, _ := strings.Cut(line, "=")
		m[k] = v
	}
	return m
}

// poweroff shuts the container down (SIGTERM to nspawn: an orderly
// shutdown), killing it after 30s.
func (c *container) poweroff(t *testing.T) {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		t.Errorf("the container did not power off within 30s; killing it")
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// syncBuffer is a bytes.Buffer for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}
