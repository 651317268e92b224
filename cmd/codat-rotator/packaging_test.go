package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/codat-rotator/codat-rotator/codat"
	"github.com/codat-rotator/codat-rotator/vault"
	"github.com/codat-rotator/codat-rotator/vault/vaulttest"
)

// The packaging files, from this package's directory.
const (
	repoRoot       = "../.."
	unitFile       = repoRoot + "/systemd/codat-rotator.service"
	dockerfile     = repoRoot + "/Dockerfile"
	dockerignore   = repoRoot + "/.dockerignore"
	operationsDoc  = repoRoot + "/docs/operations.md"
	k8sConfig      = repoRoot + "/deploy/kubernetes/config.yaml"
	k8sVaultSetup  = repoRoot + "/deploy/kubernetes/vault-setup.sh"
	distrolessBase = "gcr.io/distroless/static-debian12:nonroot"
	// maxExposure is the highest `systemd-analyze security` score the unit
	// may have (0 is best, 10 worst).
	maxExposure = 2.0
)

// systemdAnalyze finds systemd-analyze; its absence fails the test, since
// the packaging cannot be checked without it (Debian: apt-get install systemd).
func systemdAnalyze(tb testing.TB) string {
	tb.Helper()
	p, err := exec.LookPath("systemd-analyze")
	if err != nil {
		tb.Fatalf("systemd-analyze is needed to check the unit (apt-get install systemd): %v", err)
	}
	return p
}

// unit is a parsed systemd unit file: section, key, values in order.
type unit map[string]map[string][]string

func parseUnit(tb testing.TB, file string) unit {
	tb.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		tb.Fatal(err)
	}
	u := unit{}
	section := ""
	for i, line := range strings.Split(string(raw), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "", strings.HasPrefix(line, "#"), strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" || strings.HasSuffix(line, `\`) {
				tb.Fatalf("%s:%d: cannot parse %q", file, i+1, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

// one returns the single value of key in section.
func (u unit) one(tb testing.TB, section, key string) string {
	tb.Helper()
	vs := u[section][key]
	if len(vs) != 1 {
		tb.Fatalf("[%s] %s: got %q, want exactly one value", section, key, vs)
	}
	return vs[0]
}

func TestSystemdUnitSecurity(t *testing.T) {
	sa := systemdAnalyze(t)
	out, err := exec.Command(sa, "security", "--offline=yes", unitFile).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for codat-rotator\.service: (\d+\.\d+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no overall exposure level in:\n%s", out)
	}
	got, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("systemd-analyze security: exposure %.1f", got)
	if got > maxExposure {
		t.Errorf("exposure: got %.1f, want at most %.1f\n%s", got, maxExposure, out)
	}
}

// TestSystemdUnitVerify runs `systemd-analyze verify` on the unit with
// ExecStart and ExecReload pointing at a freshly built binary: verify insists that the
// command exists, and --root would need a whole systemd tree.
func TestSystemdUnitVerify(t *testing.T) {
	sa := systemdAnalyze(t)
	raw, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	const installed = "ExecStart=/usr/local/bin/codat-rotator "
	if !bytes.Contains(raw, []byte(installed)) {
		t.Fatalf("unit: want a line starting %q", installed)
	}
	// ExecStart and ExecReload both run the installed binary.
	copied := bytes.ReplaceAll(raw, []byte("=/usr/local/bin/codat-rotator "), []byte("="+binary+" "))
	dir := t.TempDir()
	file := filepath.Join(dir, "codat-rotator.service")
	if err := os.WriteFile(file, copied, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", file).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v; want no error and no output, got:\n%s", err, out)
	}

	// And the check has teeth: the installed path does not exist here.
	if _, err := os.Stat("/usr/local/bin/codat-rotator"); err == nil {
		return
	}
	out, err = exec.Command(sa, "verify", unitFile).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "/usr/local/bin/codat-rotator") {
		t.Errorf("verify of the unit with a missing binary: got %v, want an error naming it:\n%s", err, out)
	}
}

// TestSystemdUnitSettings checks the unit against the daemon: its
// directories are where the config's defaults point, its command line
// parses, and what the daemon needs from the sandbox is allowed.
func TestSystemdUnitSettings(t *testing.T) {
	u := parseUnit(t, unitFile)
	svc := "Service"
	for _, kv := range []struct{ key, want string }{
		{"Type", "notify"},
		{"NotifyAccess", "main"},
		{"Restart", "on-failure"},
		{"DynamicUser", "yes"},
		{"EnvironmentFile", "-/etc/codat-rotator/env"},
		// A watchdog kill or a panic dies of SIGABRT, not exit 2 (which
		// RestartPreventExitStatus keeps for a bad config): restarted.
		{"Environment", "GOTRACEBACK=crash"},
		{"RestartPreventExitStatus", strconv.Itoa(exitUsage)},
		{"ProtectSystem", "strict"},
		{"NoNewPrivileges", "yes"},
		{"CapabilityBoundingSet", ""},
		{"LimitCORE", "0"}, // I7: no key in a core dump
	} {
		if got := u.one(t, svc, kv.key); got != kv.want {
			t.Errorf("%s: got %q, want %q", kv.key, got, kv.want)
		}
	}

	// The directories systemd makes are the ones the defaults use.
	for _, d := range []struct{ key, root, path string }{
		{"StateDirectory", "/var/lib", DefaultStatePath},
		{"RuntimeDirectory", "/run", DefaultAdminSocket},
		{"ConfigurationDirectory", "/etc", DefaultConfigPath},
	} {
		got := path.Join(d.root, u.one(t, svc, d.key))
		if want := path.Dir(d.path); got != want {
			t.Errorf("%s: got %s, want %s (the directory of the default %s)", d.key, got, want, d.path)
		}
	}

	args := strings.Fields(u.one(t, svc, "ExecStart"))
	if want := []string{"/usr/local/bin/codat-rotator", "run", "--config", DefaultConfigPath}; !slices.Equal(args, want) {
		t.Errorf("ExecStart: got %q, want %q", args, want)
	}
	if len(args) > 2 {
		if err := newRunCommand(io.Discard, io.Discard).ParseFlags(args[2:]); err != nil {
			t.Errorf("ExecStart flags: %v", err)
		}
	}

	// Reload is the binary asking its daemon, on the same config: no
	// kill(1), which minimal systems lack.
	reload := strings.Fields(u.one(t, svc, "ExecReload"))
	if want := []string{"/usr/local/bin/codat-rotator", "reload", "--config", DefaultConfigPath}; !slices.Equal(reload, want) {
		t.Errorf("ExecReload: got %q, want %q", reload, want)
	}
	if len(reload) > 2 {
		if err := newReloadCommand(io.Discard, io.Discard).ParseFlags(reload[2:]); err != nil {
			t.Errorf("ExecReload flags: %v", err)
		}
	}

	// systemd must wait longer than the daemon's graceful stop, and the
	// watchdog must be on.
	stop, err := time.ParseDuration(u.one(t, svc, "TimeoutStopSec"))
	if err != nil {
		t.Fatal(err)
	}
	grace := newRunCommand(io.Discard, io.Discard)
	if err := grace.ParseFlags(nil); err != nil {
		t.Fatal(err)
	}
	if min := grace.shutdownTimeout + 5*time.Second; stop <= min {
		t.Errorf("TimeoutStopSec: got %s, want more than %s (--shutdown-timeout plus closing the listeners)", stop, min)
	}
	// The daemon feeds the watchdog at half of WatchdogSec: at least 2min
	// keeps that to one wake-up a minute (docs/benchmarks.md); at most 5min
	// so a wedged daemon is still restarted in minutes.
	wdRaw := u.one(t, svc, "WatchdogSec")
	if wd, err := time.ParseDuration(strings.TrimSuffix(wdRaw, "in")); err != nil || wd < 2*time.Minute || wd > 5*time.Minute {
		t.Errorf("WatchdogSec: got %q (%v), want between 2min and 5min", wdRaw, err)
	}

	// Codat and Vault over TCP; the admin socket, sd_notify and journald
	// over AF_UNIX.
	families := strings.Fields(u.one(t, svc, "RestrictAddressFamilies"))
	for _, want := range []string{"AF_UNIX", "AF_INET", "AF_INET6"} {
		if !slices.Contains(families, want) {
			t.Errorf("RestrictAddressFamilies: got %q, want %s in it", families, want)
		}
	}
	if got := u[svc]["PrivateNetwork"]; slices.Contains(got, "yes") {
		t.Errorf("PrivateNetwork=yes would cut the daemon off from Codat and Vault")
	}
	if got := u.one(t, "Install", "WantedBy"); got != "multi-user.target" {
		t.Errorf("WantedBy: got %q, want multi-user.target", got)
	}
}

// dockerInstr is one Dockerfile instruction.
type dockerInstr struct {
	cmd  string // upper case: FROM, RUN, ...
	args string
}

// parseDockerfile reads instructions, joining continuation lines and
// dropping comments; a simple reading, enough for our own Dockerfile.
func parseDockerfile(tb testing.TB, file string) []dockerInstr {
	tb.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		tb.Fatal(err)
	}
	var out []dockerInstr
	var cur strings.Builder
	for _, line := range strings.Split(string(raw), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if more, ok := strings.CutSuffix(trimmed, `\`); ok {
			cur.WriteString(more + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, dockerInstr{strings.ToUpper(cmd), strings.TrimSpace(args)})
		cur.Reset()
	}
	if cur.Len() > 0 {
		tb.Fatalf("%s: ends inside a continued line", file)
	}
	return out
}

// dockerStage is one FROM and the instructions under it.
type dockerStage struct {
	from, name string
	instrs     []dockerInstr
}

func dockerStages(tb testing.TB, instrs []dockerInstr) []dockerStage {
	tb.Helper()
	var stages []dockerStage
	for _, in := range instrs {
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			f = slices.DeleteFunc(f, func(s string) bool { return strings.HasPrefix(s, "--") })
			st := dockerStage{from: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.name = f[2]
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) > 0 {
			stages[len(stages)-1].instrs = append(stages[len(stages)-1].instrs, in)
		}
	}
	return stages
}

// of returns the arguments of every cmd instruction of the stage.
func (s dockerStage) of(cmd string) []string {
	var out []string
	for _, in := range s.instrs {
		if in.cmd == cmd {
			out = append(out, in.args)
		}
	}
	return out
}

// execForm reads a JSON-array instruction argument.
func execForm(tb testing.TB, what, args string) []string {
	tb.Helper()
	var v []string
	if err := json.Unmarshal([]byte(args), &v); err != nil {
		tb.Fatalf("%s %s: want the exec (JSON array) form: %v", what, args, err)
	}
	return v
}

// dockerBuildRun returns the build stage's `go build` command line.
func dockerBuildRun(tb testing.TB, st dockerStage) string {
	tb.Helper()
	for _, run := range st.of("RUN") {
		if strings.Contains(run, "go build") {
			return run
		}
	}
	tb.Fatalf("stage %s: no RUN with go build", st.name)
	return ""
}

func TestDockerfile(t *testing.T) {
	stages := dockerStages(t, parseDockerfile(t, dockerfile))
	if len(stages) < 2 {
		t.Fatalf("stages: got %d, want a build stage and a final stage", len(stages))
	}
	build, final := stages[0], stages[len(stages)-1]

	// The build stage: the Go of go.mod, built as `make build` builds.
	if build.name != "build" || !strings.HasPrefix(build.from, "golang:") {
		t.Errorf("first stage: got FROM %s AS %q, want golang:… AS build", build.from, build.name)
	}
	mod, err := os.ReadFile(repoRoot + "/go.mod")
	if err != nil {
		t.Fatal(err)
	}
	// The toolchain that builds what ships: go.mod's toolchain line.
	goLine := regexp.MustCompile(`(?m)^toolchain go(\d+\.\d+\.\d+)$`).FindSubmatch(mod)
	if goLine == nil {
		t.Fatal("go.mod: no toolchain line")
	}
	// Both bases pinned by digest; the build image at go.mod's go line,
	// whose go fetches the toolchain line's Go itself (GOTOOLCHAIN=auto
	// in the golang images), so what ships is built with goLine's.
	goDirective := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(mod)
	if goDirective == nil {
		t.Fatal("go.mod: no go line")
	}
	if want := regexp.MustCompile(`^golang:` + regexp.QuoteMeta(string(goDirective[1])) + `-bookworm@sha256:[0-9a-f]{64}$`); !want.MatchString(build.from) {
		t.Errorf("build image: got %s, want %s", build.from, want)
	}
	if df, err := os.ReadFile(dockerfile); err != nil || strings.Contains(string(df), "GOTOOLCHAIN=local") {
		t.Errorf("the Dockerfile sets GOTOOLCHAIN=local: the build would not fetch go.mod's toolchain %s", goLine[1])
	}
	run := dockerBuildRun(t, build)
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-X main.version=${VERSION}", "-X main.commit=${COMMIT}", "-X main.date=${DATE}", "./cmd/codat-rotator"} {
		if !strings.Contains(run, want) {
			t.Errorf("build RUN: want %q in\n%s", want, run)
		}
	}

	// The final stage: distroless, nonroot, no shell, state on a volume.
	if want := regexp.MustCompile(`^` + regexp.QuoteMeta(distrolessBase) + `@sha256:[0-9a-f]{64}$`); !want.MatchString(final.from) {
		t.Errorf("final image: got %s, want %s", final.from, want)
	}
	if got := final.of("USER"); !slices.Equal(got, []string{"65532:65532"}) {
		t.Errorf("USER: got %q, want [65532:65532] (distroless nonroot)", got)
	}
	if got := final.of("RUN"); len(got) > 0 {
		t.Errorf("final stage: RUN %q, but the image has no shell", got)
	}
	copied := false
	for _, c := range final.of("COPY") {
		f := strings.Fields(c)
		if slices.Contains(f, "--from=build") && f[len(f)-1] == "/codat-rotator" {
			copied = true
		}
	}
	if !copied {
		t.Errorf("final stage: no COPY --from=build … /codat-rotator in %q", final.of("COPY"))
	}
	ep := final.of("ENTRYPOINT")
	if len(ep) != 1 || !slices.Equal(execForm(t, "ENTRYPOINT", ep[0]), []string{"/codat-rotator"}) {
		t.Errorf("ENTRYPOINT: got %q, want [\"/codat-rotator\"]", ep)
	}
	cmd := final.of("CMD")
	if len(cmd) != 1 {
		t.Fatalf("CMD: got %q, want one", cmd)
	}
	args := execForm(t, "CMD", cmd[0])
	if want := []string{"run", "--config", DefaultConfigPath}; !slices.Equal(args, want) {
		t.Errorf("CMD: got %q, want %q", args, want)
	}
	if err := newRunCommand(io.Discard, io.Discard).ParseFlags(args[1:]); err != nil {
		t.Errorf("CMD flags: %v", err)
	}
	_, port, _ := net.SplitHostPort(DefaultMetricsListen)
	if got := final.of("EXPOSE"); !slices.Equal(got, []string{port}) {
		t.Errorf("EXPOSE: got %q, want [%s]", got, port)
	}
	vol := final.of("VOLUME")
	if len(vol) != 1 || !slices.Equal(execForm(t, "VOLUME", vol[0]), []string{path.Dir(DefaultStatePath)}) {
		t.Errorf("VOLUME: got %q, want [%q]", vol, path.Dir(DefaultStatePath))
	}

	// What the operator documentation says about the image.
	doc, err := os.ReadFile(operationsDoc)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{distrolessBase, "65532", "/codat-rotator", path.Dir(DefaultStatePath), "docker build", "docker run"} {
		if !bytes.Contains(doc, []byte(want)) {
			t.Errorf("%s: want %q in it", operationsDoc, want)
		}
	}
}

// TestDockerignore checks that the build context keeps every file the
// build needs and drops the rest.
func TestDockerignore(t *testing.T) {
	raw, err := os.ReadFile(dockerignore)
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, line := range strings.Split(string(raw), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "!") {
			t.Fatalf(".dockerignore: %q: exceptions are not checked by this test", line)
		}
		patterns = append(patterns, path.Clean(strings.TrimPrefix(line, "/")))
	}
	// ignored reports whether rel or a directory above it matches.
	ignored := func(rel string) string {
		for p := rel; p != "."; p = path.Dir(p) {
			for _, pat := range patterns {
				if ok, _ := path.Match(pat, p); ok {
					return pat
				}
			}
		}
		return ""
	}
	// The main module's packages, and those of the modules it replaces
	// with a directory of this repository (secret/), with their go.mod.
	list := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{if .Module}}{{if .Module.Main}}{{.Dir}}{{else if .Module.Replace}}{{.Dir}} {{.Module.GoMod}}{{end}}{{end}}{{end}}", "./cmd/codat-rotator")
	list.Dir = repoRoot
	out, err := list.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	abs, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	needed := []string{"go.mod", "go.sum"}
	for _, dir := range strings.Fields(string(out)) {
		rel, err := filepath.Rel(abs, dir)
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Base(dir) == "go.mod" {
			needed = append(needed, filepath.ToSlash(rel))
			continue
		}
		needed = append(needed, filepath.ToSlash(rel)+"/x.go")
	}
	if len(needed) < 5 {
		t.Fatalf("go list found only %q", needed)
	}
	for _, rel := range needed {
		if pat := ignored(rel); pat != "" {
			t.Errorf(".dockerignore: %q drops %s, which the build needs", pat, rel)
		}
	}
	for _, rel := range []string{".git/HEAD", "bin/codat-rotator", "bin/vault", "codat-rotator", "tools/vault/go.mod", "deploy/kubernetes/go.mod", "build/nspawn/x"} {
		if ignored(rel) == "" {
			t.Errorf(".dockerignore: want %s left out of the build context", rel)
		}
	}
}

// TestStaticReleaseBinary builds the binary as the Dockerfile does, with
// its -ldflags, and checks that it needs nothing from the image: no
// dynamic loader, no shared library. distroless/static has neither.
func TestStaticReleaseBinary(t *testing.T) {
	stages := dockerStages(t, parseDockerfile(t, dockerfile))
	run := dockerBuildRun(t, stages[0])
	m := regexp.MustCompile(`-ldflags "([^"]*)"`).FindStringSubmatch(run)
	if m == nil {
		t.Fatalf(`build RUN: no -ldflags "…" in %s`, run)
	}
	const (
		wantVersion = "v9.8.7-packaging"
		wantCommit  = "0123456789abcdef0123456789abcdef01234567"
		wantDate    = "2026-01-02T03:04:05Z"
	)
	ldflags := strings.NewReplacer("${VERSION}", wantVersion, "${COMMIT}", wantCommit, "${DATE}", wantDate).Replace(m[1])

	bin := filepath.Join(t.TempDir(), "codat-rotator")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", ldflags, "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("program header %v: the binary is dynamically linked", p.Type)
		}
	}
	needed, err := f.DynString(elf.DT_NEEDED)
	if err != nil {
		t.Fatal(err)
	}
	if len(needed) > 0 {
		t.Errorf("DT_NEEDED: got %q, want none", needed)
	}

	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	if settings["CGO_ENABLED"] != "0" || settings["-trimpath"] != "true" {
		t.Errorf("build settings: CGO_ENABLED=%q -trimpath=%q, want 0 and true", settings["CGO_ENABLED"], settings["-trimpath"])
	}
	abs, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	if raw, err := os.ReadFile(bin); err != nil {
		t.Fatal(err)
	} else if bytes.Contains(raw, []byte(abs+"/")) {
		t.Errorf("the binary holds the source path %s: -trimpath did not apply", abs)
	}

	// The stamp reaches `version`: a misspelt -X is silently ignored.
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatalf("version: %v", err)
	}
	for _, want := range []string{"codat-rotator " + wantVersion + "\n", "commit: " + wantCommit + "\n", "built: " + wantDate + "\n"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("version: want %q in\n%s", want, out)
		}
	}
}

// TestKubernetesConfig loads the config that deploy/kubernetes ships
// as the daemon would, and builds its Vault settings.
func TestKubernetesConfig(t *testing.T) {
	env := map[string]string{"VAULT_ADDR": "https://vault.vault.svc:8200"}
	cfg, err := LoadConfig(k8sConfig, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Vault.Auth.Method, "kubernetes"; got != want {
		t.Errorf("vault.auth.method: got %q, want %q", got, want)
	}
	if got, want := cfg.Vault.Auth.Kubernetes.Role, "codat-rotator"; got != want {
		t.Errorf("vault.auth.kubernetes.role: got %q, want %q", got, want)
	}
	if _, err := vaultConfig(cfg.Vault, func(k string) string { return env[k] }); err != nil {
		t.Errorf("vault settings: %v", err)
	}
	if host, _, _ := net.SplitHostPort(cfg.Listen.Metrics); host != "0.0.0.0" && host != "" {
		t.Errorf("listen.metrics: got %q, want every interface, so the kubelet's probes reach it", cfg.Listen.Metrics)
	}
}

// TestKubernetesVaultSetup runs deploy/kubernetes/vault-setup.sh against
// a real Vault, as a Vault admin would: leaving the auth configuration
// alone, for a Vault outside the cluster with a reviewer token and with
// the pod's own token as reviewer (each run twice: the script is
// idempotent, and each run replaces the previous configuration); then
// checks the role (bound to the projected token's audience) and that a
// token of the policy it writes can do what the daemon does with every
// target of the shipped config. Before issue 22, the outside runs failed
// on the missing in-cluster CA file and the role had no audience.
// (make test-kubernetes logs in with it through a real API server.)
func TestKubernetesVaultSetup(t *testing.T) {
	srv, err := vaulttest.Start() // its own server: the script changes auth mounts
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	root := srv.Client(t)
	dir := t.TempDir()
	caFile, reviewerFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "reviewer.jwt")
	caPEM := selfSignedCA(t)
	if err := os.WriteFile(caFile, caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(reviewerFile, []byte("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyZXZpZXdlciJ9.c2ln\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	setup := func(t *testing.T, env ...string) {
		t.Helper()
		sh := exec.CommandContext(ctx, "sh", k8sVaultSetup)
		sh.Env = append([]string{
			"PATH=" + filepath.Dir(srv.Binary) + string(os.PathListSeparator) + os.Getenv("PATH"),
			"HOME=" + t.TempDir(),
			"VAULT_ADDR=" + srv.Addr,
			"VAULT_TOKEN=" + srv.RootToken,
		}, env...)
		if out, err := sh.CombinedOutput(); err != nil {
			t.Fatalf("vault-setup.sh %s: %v\n%s", strings.Join(env, " "), err, out)
		}
	}
	authConfig := func(t *testing.T) map[string]any {
		t.Helper()
		sec, err := root.Logical().ReadWithContext(ctx, "auth/kubernetes/config")
		if err != nil || sec == nil {
			t.Fatalf("read auth/kubernetes/config: %v (%v)", sec, err)
		}
		return sec.Data
	}
	const host = "https://192.0.2.10:6443" // never contacted: Vault checks tokens at login
	for _, mode := range []struct {
		name     string
		env      []string
		reviewer bool // a reviewer token is set
	}{
		{"auth configuration left alone", nil, false},
		{"outside the cluster, reviewer token", []string{"KUBERNETES_HOST=" + host, "KUBERNETES_CA_CERT=" + caFile, "TOKEN_REVIEWER_JWT_FILE=" + reviewerFile}, true},
		{"outside the cluster, the pod's token as reviewer", []string{"KUBERNETES_HOST=" + host, "KUBERNETES_CA_CERT=" + caFile}, false},
	} {
		t.Run(mode.name, func(t *testing.T) {
			setup(t, mode.env...)
			setup(t, mode.env...)
			if mode.env == nil {
				return
			}
			cfg := authConfig(t)
			if cfg["kubernetes_host"] != host || strings.TrimSpace(fmt.Sprint(cfg["kubernetes_ca_cert"])) != strings.TrimSpace(string(caPEM)) ||
				cfg["disable_local_ca_jwt"] != true || cfg["token_reviewer_jwt_set"] != mode.reviewer {
				t.Errorf("auth/kubernetes/config: host %v, CA given %v, disable_local_ca_jwt %v, token_reviewer_jwt_set %v; want %s, the CA file, true, %v",
					cfg["kubernetes_host"], cfg["kubernetes_ca_cert"] != "", cfg["disable_local_ca_jwt"], cfg["token_reviewer_jwt_set"], host, mode.reviewer)
			}
		})
	}
	// What is given is checked before anything changes.
	sh := exec.CommandContext(ctx, "sh", k8sVaultSetup)
	sh.Env = []string{"PATH=" + os.Getenv("PATH"), "KUBERNETES_HOST=" + host, "KUBERNETES_CA_CERT=" + filepath.Join(dir, "missing.crt")}
	if out, err := sh.CombinedOutput(); err == nil || !strings.Contains(string(out), "KUBERNETES_CA_CERT="+filepath.Join(dir, "missing.crt")+": not a readable file") {
		t.Errorf("vault-setup.sh with a missing CA file: %v\n%s; want it refused, naming the file", err, out)
	}

	role, err := root.Logical().ReadWithContext(ctx, "auth/kubernetes/role/codat-rotator")
	if err != nil || role == nil {
		t.Fatalf("read role: %v (%v)", role, err)
	}
	for key, want := range map[string]string{
		"bound_service_account_names":      "codat-rotator",
		"bound_service_account_namespaces": "codat-rotator",
		"token_policies":                   "codat-rotator",
	} {
		got, _ := role.Data[key].([]any)
		if len(got) != 1 || got[0] != want {
			t.Errorf("role %s: got %v, want [%s]", key, role.Data[key], want)
		}
	}
	if got := role.Data["audience"]; got != "vault" {
		t.Errorf("role audience: got %v, want vault (statefulset.yaml's projected token)", got)
	}

	// The policy, on a token as a login would give it (with Vault's
	// default policy, which renewal and lookup-self use).
	tok, err := root.Auth().Token().CreateWithContext(ctx, &api.TokenCreateRequest{Policies: []string{"codat-rotator"}, TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(k8sConfig, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	vc, err := vault.New(vault.Config{Address: srv.Addr, Token: codat.Secret(tok.Auth.ClientToken)})
	if err != nil {
		t.Fatal(err)
	}
	if err := vc.Ping(ctx); err != nil {
		t.Errorf("ping: %v", err)
	}
	for _, tc := range cfg.Targets {
		loc := vault.Location{Mount: strings.Trim(tc.Vault.Mount, "/"), Path: strings.Trim(tc.Vault.Path, "/")}
		if err := vc.CheckMount(ctx, loc); err != nil {
			t.Errorf("%s: check mount: %v", tc.Name, err)
		}
		cur, err := vc.Read(ctx, loc)
		if err != nil {
			t.Fatalf("%s: read: %v", tc.Name, err)
		}
		meta := map[string]string{"managed-by": "codat-rotator", "target": tc.Name}
		s := vault.Secret{APIKey: "k8s-policy-test-key-0001", KeyID: "id-1", RotatedAt: time.Now()}
		v, err := vc.Write(ctx, loc, s, cur.Version, meta)
		if err != nil {
			t.Fatalf("%s: write: %v", tc.Name, err)
		}
		s.APIKey, s.KeyID = "k8s-policy-test-key-0002", "id-2"
		if _, err := vc.Write(ctx, loc, s, v, meta); err != nil {
			t.Errorf("%s: second write: %v", tc.Name, err)
		}
		got, err := vc.Read(ctx, loc)
		if err != nil || got.Secret == nil {
			t.Fatalf("%s: read back: %+v, %v", tc.Name, got, err)
		}
		if got.Secret.KeyID != "id-2" || got.CustomMetadata["target"] != tc.Name {
			t.Errorf("%s: read back key %s, metadata %v; want id-2 and target=%s", tc.Name, got.Secret.KeyID, got.CustomMetadata, tc.Name)
		}
		if err := vc.PatchMetadata(ctx, loc, map[string]string{"target": tc.Name}); err != nil {
			t.Errorf("%s: patch metadata: %v", tc.Name, err)
		}
	}
}

// selfSignedCA returns a CA certificate, PEM, as an API server's.
func selfSignedCA(tb testing.TB) []byte {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubernetes-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
