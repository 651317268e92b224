//go:build image

// Package image holds, behind the image build tag (`make test-image`),
// the test of the container image: the Dockerfile's final stage
// assembled without a registry, run under podman as the StatefulSet runs
// it (read-only root, user 65532, no capabilities, no new privileges,
// 128 MiB), against a real Vault dev server and the Codat emulator on
// the host's loopback, which the container shares.
//
// What differs from a registry build, and why: the base images cannot
// be pulled here. The final stage's base is a stand-in made of the
// host's files, with what distroless/static-debian12:nonroot holds that
// the daemon uses: /etc/passwd and /etc/group with nonroot (65532), the
// CA bundle from Debian's ca-certificates, tzdata, /etc/nsswitch.conf,
// /tmp and /home/nonroot. The build stage is replaced by the binary of
// `make build`, which builds as the Dockerfile's RUN does (static,
// -trimpath, the same -ldflags). The final stage's instructions are the
// Dockerfile's own, unchanged but for the FROM line's image name. The
// admin socket's emptyDir is a 0777 directory on the host's /dev/shm,
// as the kubelet makes one, and the state volume a podman volume
// initialised from the image's directory.
package image

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/codat/emulator"
	"github.com/codat-rotator/codat-rotator/vault/vaulttest"
)

var binaryFlag = flag.String("binary", "", "the codat-rotator binary of `make build`")

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	vaulttest.StopShared()
	os.Exit(code)
}

// The StatefulSet's security context, as podman flags
// (deploy/kubernetes/statefulset.yaml). runc: crun 1.8 refuses this
// VM's hybrid cgroups; the ulimits: podman's defaults need
// CAP_SYS_RESOURCE, which this VM's root lacks.
var podSecurity = []string{
	"--runtime", "runc",
	"--user", "65532:65532",
	"--read-only",
	"--cap-drop", "ALL",
	"--security-opt", "no-new-privileges",
	"--memory", "128m",
	"--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096",
	"--network", "host",
}

// emptyDir returns the admin socket's emptyDir (medium: Memory): a
// directory on the host's tmpfs, world-writable (0777) as the kubelet
// makes one. (podman's --tmpfs here ignores its mode= option: the
// mount point stays root's 0755 and the daemon cannot bind there.)
func emptyDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("/dev/shm", "codat-rotator-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o777); err != nil {
		t.Fatal(err)
	}
	return d
}

// requirements fails the test, naming what to install: it runs only
// when asked for (the image build tag), so it never skips.
func requirements(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Fatal("podman with runc and host networking needs root: run `sudo make test-image`")
	}
	for _, tool := range []struct{ name, pkg string }{{"podman", "podman"}, {"runc", "runc"}} {
		if _, err := exec.LookPath(tool.name); err != nil {
			tb.Fatalf("%s is needed (Debian: apt-get install %s): %v", tool.name, tool.pkg, err)
		}
	}
	for _, f := range []struct{ path, pkg string }{{"/etc/ssl/certs/ca-certificates.crt", "ca-certificates"}, {"/usr/share/zoneinfo/UTC", "tzdata"}} {
		if _, err := os.Stat(f.path); err != nil {
			tb.Fatalf("%s is needed for the stand-in base image (Debian: apt-get install %s): %v", f.path, f.pkg, err)
		}
	}
	if *binaryFlag == "" {
		tb.Fatal("-binary: the codat-rotator binary of `make build` (make test-image passes it)")
	}
}

func podman(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "podman", args...).CombinedOutput()
	return string(out), err
}

func mustPodman(t *testing.T, args ...string) string {
	t.Helper()
	out, err := podman(t, args...)
	if err != nil {
		t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(out)
}

func random(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// finalStage returns the Dockerfile's last stage, from its FROM line on,
// and the image that FROM names.
func finalStage(t *testing.T) (stage, from string) {
	t.Helper()
	raw, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(raw), "\n")
	last := -1
	for i, l := range lines {
		if strings.HasPrefix(l, "FROM ") {
			last = i
		}
	}
	if last < 0 {
		t.Fatal("Dockerfile: no FROM")
	}
	f := strings.Fields(lines[last])
	return strings.Join(lines[last+1:], "\n"), f[len(f)-1]
}

// buildImage assembles the image and returns its name.
func buildImage(t *testing.T) string {
	t.Helper()
	ctxDir := t.TempDir()
	// The stand-in base: distroless static's files the daemon uses.
	root := filepath.Join(ctxDir, "base")
	for _, d := range []string{"etc/ssl/certs", "usr/share", "tmp", "home/nonroot"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"etc/passwd":        "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
		"etc/group":         "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n",
		"etc/nsswitch.conf": "hosts: files dns\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, cp := range [][2]string{
		{"/etc/ssl/certs/ca-certificates.crt", filepath.Join(root, "etc/ssl/certs/ca-certificates.crt")},
		{"/usr/share/zoneinfo", filepath.Join(root, "usr/share/zoneinfo")},
	} {
		if out, err := exec.Command("cp", "-rL", cp[0], cp[1]).CombinedOutput(); err != nil {
			t.Fatalf("cp %s: %v\n%s", cp[0], err, out)
		}
	}
	if err := os.Chmod(filepath.Join(root, "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(root, "home/nonroot"), 65532, 65532); err != nil {
		t.Fatal(err)
	}
	// The build stage's outputs, with make build's binary.
	out := filepath.Join(ctxDir, "out")
	for _, d := range []string{"state", "run"} {
		if err := os.MkdirAll(filepath.Join(out, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if b, err := exec.Command("cp", *binaryFlag, filepath.Join(out, "codat-rotator")).CombinedOutput(); err != nil {
		t.Fatalf("cp binary: %v\n%s", err, b)
	}
	tag := random(t, 4)
	base := "localhost/codat-rotator-test-base:" + tag
	image := "localhost/codat-rotator-test:" + tag
	writeContainerfile := func(name, content string) string {
		p := filepath.Join(ctxDir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	start := time.Now()
	mustPodman(t, "build", "--pull=never", "--runtime", "runc", "-t", base,
		"-f", writeContainerfile("Containerfile.base", "FROM scratch\nCOPY base/ /\n"), ctxDir)
	t.Cleanup(func() { _, _ = podman(t, "rmi", "-f", base) })
	// The build stage's outputs as an image of their own, so that no
	// unnamed stage image is left behind.
	outImage := "localhost/codat-rotator-test-out:" + tag
	mustPodman(t, "build", "--pull=never", "--runtime", "runc", "-t", outImage,
		"-f", writeContainerfile("Containerfile.out", "FROM scratch\nCOPY out/ /out/\n"), ctxDir)
	t.Cleanup(func() { _, _ = podman(t, "rmi", "-f", outImage) })
	stage, from := finalStage(t)
	if !strings.HasPrefix(from, "gcr.io/distroless/static-debian12:nonroot@sha256:") {
		t.Fatalf("the Dockerfile's final stage is FROM %s: the stand-in is for distroless static nonroot", from)
	}
	t.Logf("final stage FROM %s, assembled on the stand-in %s", from, base)
	containerfile := "FROM " + outImage + " AS build\n\nFROM " + base + "\n" + stage
	mustPodman(t, "build", "--pull=never", "--runtime", "runc", "-t", image,
		"-f", writeContainerfile("Containerfile", containerfile), ctxDir)
	t.Cleanup(func() { _, _ = podman(t, "rmi", "-f", image) })
	t.Logf("image %s built in %s", image, time.Since(start).Round(time.Millisecond))
	return image
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func until(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func probe(url string) (int, string, time.Duration) {
	start := time.Now()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error(), time.Since(start)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), time.Since(start)
}

func TestImage(t *testing.T) {
	requirements(t)
	image := buildImage(t)

	vs, err := vaulttest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(vs.Stop)
	mount := vs.NewKV(t)
	bootstrap := random(t, 20)
	emu, err := emulator.New(emulator.Options{InitialKey: bootstrap})
	if err != nil {
		t.Fatal(err)
	}
	codat := httptest.NewServer(emu)
	t.Cleanup(func() { emu.Close(); codat.Close() })

	dir := t.TempDir()
	metrics := freeAddr(t)
	cfg := fmt.Sprintf(`state_path: /var/lib/codat-rotator/state.db
log: {level: info, format: json}
listen:
  metrics: %s
  admin_socket: /run/codat-rotator/admin.sock
vault:
  address: %s
targets:
  - name: production
    codat: {base_url: %s, bootstrap_key_env: CODAT_BOOTSTRAP_API_KEY}
    vault: {mount: %s, path: codat/production}
    schedule: "@every 1h"
    grace: 1h
`, metrics, vs.Addr, codat.URL, mount)
	if err := os.MkdirAll(filepath.Join(dir, "config"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config", "config.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	name := "codat-rotator-test-" + random(t, 4)
	volume := name + "-state"
	args := append([]string{"create", "--name", name}, podSecurity...)
	args = append(args,
		"-v", volume+":/var/lib/codat-rotator",
		"-v", emptyDir(t)+":/run/codat-rotator",
		"-v", filepath.Join(dir, "config")+":/etc/codat-rotator:ro",
		"-e", "VAULT_TOKEN="+vs.RootToken, "-e", "CODAT_BOOTSTRAP_API_KEY="+bootstrap,
		image)
	mustPodman(t, args...)
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := podman(t, "logs", name)
			t.Logf("container log:\n%s", logs)
		}
		_, _ = podman(t, "rm", "-f", "-t", "0", name)
		_, _ = podman(t, "volume", "rm", "-f", volume)
	})
	logs := func() string { out, _ := podman(t, "logs", name); return out }
	count := func(msg string) int { return strings.Count(logs(), `"msg":"`+msg+`"`) }
	exitCode := func() string { return mustPodman(t, "inspect", "-f", "{{.State.ExitCode}}", name) }
	running := func() bool { return mustPodman(t, "inspect", "-f", "{{.State.Running}}", name) == "true" }

	// Start: alive at once, ready once the catch-up rotation published
	// the first key.
	started := time.Now()
	mustPodman(t, "start", name)
	until(t, 15*time.Second, "/healthz 200", func() bool { c, _, _ := probe("http://" + metrics + "/healthz"); return c == 200 })
	t.Logf("/healthz 200 %s after podman start", time.Since(started).Round(time.Millisecond))
	until(t, 30*time.Second, "the first rotation", func() bool { return count("rotation done") >= 1 })
	until(t, 30*time.Second, "/readyz 200", func() bool { c, _, _ := probe("http://" + metrics + "/readyz"); return c == 200 })
	t.Logf("/readyz 200 %s after podman start", time.Since(started).Round(time.Millisecond))

	// A rotation through the admin socket, as `kubectl exec` runs it.
	if out, err := podman(t, "exec", name, "/codat-rotator", "rotate", "--target", "production", "--config", "/etc/codat-rotator/config.yaml"); err != nil {
		t.Fatalf("rotate through the daemon: %v\n%s", err, out)
	}
	if n := count("rotation done"); n < 2 {
		t.Errorf("rotations done: %d, want 2", n)
	}

	// SIGTERM (podman stop, the pod's grace): a clean stop.
	mustPodman(t, "stop", "-t", "45", name)
	if c := exitCode(); c != "0" {
		t.Errorf("exit code after SIGTERM: %s, want 0", c)
	}

	// SIGKILL while a create hangs at Codat; the next start finishes the
	// rotation from its journal.
	mustPodman(t, "start", name)
	until(t, 15*time.Second, "/healthz after the restart", func() bool { c, _, _ := probe("http://" + metrics + "/healthz"); return c == 200 })
	if err := emu.SetFaults(emulator.Faults{Create: emulator.OpFaults{Hang: 1}}); err != nil {
		t.Fatal(err)
	}
	rotating := exec.Command("podman", "exec", name, "/codat-rotator", "rotate", "--target", "production", "--config", "/etc/codat-rotator/config.yaml")
	if err := rotating.Start(); err != nil {
		t.Fatal(err)
	}
	until(t, 15*time.Second, "a create in flight", func() bool { return emu.InFlight() > 0 })
	mustPodman(t, "kill", "-s", "KILL", name)
	_ = rotating.Wait()
	until(t, 15*time.Second, "the container to stop", func() bool { return !running() })
	if c := exitCode(); c != "137" {
		t.Errorf("exit code after SIGKILL: %s, want 137", c)
	}
	if err := emu.SetFaults(emulator.Faults{}); err != nil {
		t.Fatal(err)
	}
	before := count("rotation done")
	mustPodman(t, "start", name)
	until(t, 60*time.Second, "the interrupted rotation finished after the restart", func() bool { return count("rotation done") > before })
	until(t, 30*time.Second, "/readyz 200 after the restart", func() bool { c, _, _ := probe("http://" + metrics + "/readyz"); return c == 200 })
	for _, v := range emu.Violations() {
		t.Errorf("emulator violation: %+v", v)
	}

	// The state file: the daemon's, 0600, on the volume, which the
	// image's directory made the daemon's (its mode is the volume's:
	// podman's copy-up here, the storage class and fsGroup on
	// Kubernetes).
	mp := mustPodman(t, "volume", "inspect", "-f", "{{.Mountpoint}}", volume)
	for _, f := range []struct {
		path string
		mode os.FileMode // 0: any mode no other user can write
	}{{mp, 0}, {filepath.Join(mp, "state.db"), 0o600}} {
		fi, err := os.Stat(f.path)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != 65532 || st.Gid != 65532 || (f.mode != 0 && fi.Mode() != f.mode) || fi.Mode()&0o002 != 0 {
			t.Errorf("%s: owner %d:%d mode %s, want 65532:65532 and %s", f.path, st.Uid, st.Gid, fi.Mode(), f.mode)
		} else {
			t.Logf("%s: owner %d:%d mode %s", f.path, st.Uid, st.Gid, fi.Mode())
		}
	}

	// Stopped again; nothing secret in anything it logged.
	mustPodman(t, "stop", "-t", "45", name)
	all := logs()
	secrets := map[string]string{"the bootstrap key": bootstrap, "the Vault token": vs.RootToken}
	kv := vs.Client(t).KVv2(mount)
	cur, err := kv.Get(context.Background(), "codat/production")
	if err != nil {
		t.Fatal(err)
	}
	for v := 1; v <= cur.VersionMetadata.Version; v++ {
		sec, err := kv.GetVersion(context.Background(), "codat/production", v)
		if err != nil {
			t.Fatal(err)
		}
		if k, _ := sec.Data["api_key"].(string); k != "" {
			secrets[fmt.Sprintf("the key of version %d", v)] = k
		}
	}
	if len(secrets) < 5 {
		t.Errorf("%d secrets to look for, want the bootstrap key, the token and at least 3 published keys", len(secrets))
	}
	for what, s := range secrets {
		if strings.Contains(all, s) {
			t.Errorf("the container logged %s", what)
		}
	}
	sc := bufio.NewScanner(strings.NewReader(all))
	lines := 0
	for sc.Scan() {
		lines++
	}
	t.Logf("%d log lines checked for %d secrets", lines, len(secrets))
}
