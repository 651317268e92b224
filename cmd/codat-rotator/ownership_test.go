package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/codat-rotator/codat-rotator/admin"
	"github.com/codat-rotator/codat-rotator/codat/emulator"
	"github.com/codat-rotator/codat-rotator/notify"
	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/store"
	"github.com/codat-rotator/codat-rotator/vault/vaulttest"
)

// Whole-binary tests of key ownership (issue 10): two targets on one
// Codat client, a second daemon with its own state file on one target,
// and a lost state file. The real binary runs as a subprocess against
// the emulator over HTTP and a real Vault; what each daemon did is
// judged from outside, by the emulator's record of every request and
// the secret's versions in Vault.

var ownershipSeed = flag.Uint64("ownership.seed", 0, "replay TestOwnershipTwoTargetsOneClient's kills with this seed (0: a new one)")

// ownPrefix is the key name prefix of every target here: the default,
// the same for all, as a new user would leave it.
const ownPrefix = DefaultPrefix

// ownWorld is one Codat client (the emulator) and one Vault mount, each
// behind a switch that can SIGKILL a daemon at a chosen request, and any
// number of daemon configs against them.
type ownWorld struct {
	*daemonEnv
	codatSW, vaultSW *chaosSwitch
	short            string // a short directory for unix sockets

	mu    sync.Mutex
	procs []*daemonProc
}

func newOwnWorld(t *testing.T, opts ...emulator.Options) *ownWorld {
	t.Helper()
	vs := vaulttest.Shared(t)
	var o emulator.Options
	if len(opts) > 0 {
		o = opts[0]
	}
	emu, err := emulator.New(o)
	if err != nil {
		t.Fatal(err)
	}
	w := &ownWorld{}
	w.codatSW = &chaosSwitch{next: emu}
	codatSrv := httptest.NewServer(w.codatSW)
	t.Cleanup(func() { emu.Close(); codatSrv.Close() })
	target, err := url.Parse(vs.Addr)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ErrorLog = log.New(io.Discard, "", 0) // a killed daemon's requests end mid-way
	w.vaultSW = &chaosSwitch{next: proxy}
	vaultSrv := httptest.NewServer(w.vaultSW)
	t.Cleanup(vaultSrv.Close)
	// Unix socket paths hold about 100 bytes: t.TempDir can be longer.
	if w.short, err = os.MkdirTemp("", "cr"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(w.short) })
	w.daemonEnv = &daemonEnv{
		crashEnv: &crashEnv{emu: emu, vault: vs, mount: vs.NewKV(t), dir: t.TempDir(), codatURL: codatSrv.URL, vaultURL: vaultSrv.URL},
		api:      vs.Client(t),
	}
	return w
}

// ownTarget is one target of a config.
type ownTarget struct {
	name, path   string
	bootstrapEnv string // the variable holding its bootstrap key
	schedule     string
	grace        string
	webhook      string // a URL that gets its blocked and failure events, if set
}

// ownConfig is one daemon's config: its own state file, admin socket
// and metrics listener.
type ownConfig struct {
	path, state, sock, metrics string
}

// What a config listens on.
type listens int

const (
	listenNothing listens = iota
	listenSocket          // the admin socket
	listenAll             // the admin socket and the metrics listener
)

// config writes a config named label with the given targets.
func (w *ownWorld) config(t *testing.T, label string, listen listens, targets ...ownTarget) ownConfig {
	t.Helper()
	c := ownConfig{path: filepath.Join(w.dir, label+".yaml"), state: filepath.Join(w.dir, label+".db")}
	var b strings.Builder
	fmt.Fprintf(&b, "state_path: %s\nlog: {level: debug, format: json}\n", c.state)
	if listen != listenNothing {
		c.sock = filepath.Join(w.short, label+".sock")
		fmt.Fprintf(&b, "listen:\n  admin_socket: %s\n", c.sock)
	}
	if listen == listenAll {
		c.metrics = freeAddr(t)
		fmt.Fprintf(&b, "  metrics: %s\n", c.metrics)
	}
	fmt.Fprintf(&b, "vault:\n  address: %s\ntargets:\n", w.vaultURL)
	for _, tg := range targets {
		fmt.Fprintf(&b, `  - name: %s
    codat:
      base_url: %s
      bootstrap_key_env: %s
    vault: {mount: %s, path: %s}
    schedule: "%s"
    grace: %s
    key_name_prefix: %s
`, tg.name, w.codatURL, tg.bootstrapEnv, w.mount, tg.path, tg.schedule, tg.grace, ownPrefix)
		if tg.webhook != "" {
			fmt.Fprintf(&b, "    notify:\n      webhooks:\n        - {url: %s, events: [blocked, failure]}\n", tg.webhook)
		}
	}
	if err := os.WriteFile(c.path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

// run starts `codat-rotator run` on config c.
func (w *ownWorld) run(t *testing.T, c ownConfig, extraEnv ...string) *daemonProc {
	t.Helper()
	cmd := exec.Command(binary, "run", "--config", c.path)
	cmd.Env = w.env(extraEnv...)
	d := w.startCmd(t, cmd)
	w.mu.Lock()
	w.procs = append(w.procs, d)
	w.mu.Unlock()
	return d
}

// cli runs a command of the binary on config c to the end.
func (w *ownWorld) cli(t *testing.T, c ownConfig, extraEnv []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return runCLI(t, 30*time.Second, c.path, w.env(extraEnv...), func(b []byte) {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.output.Write(b)
	}, args...)
}

// kill SIGKILLs the daemon and waits for it to be gone.
func (d *daemonProc) kill() {
	_ = d.cmd.Process.Kill()
	<-d.done
	d.flush()
}

// status runs `status --json` on c.
func (w *ownWorld) status(t *testing.T, c ownConfig, target string) admin.TargetStatus {
	t.Helper()
	code, stdout, stderr := w.cli(t, c, nil, "status", "--json")
	if code != 0 {
		t.Fatalf("status --json: exit %d\n%s%s", code, stdout, stderr)
	}
	var doc admin.StatusReport
	if err := json.Unmarshal([]byte(stdout), &doc); err != nil {
		t.Fatalf("status --json: %v\n%s", err, stdout)
	}
	for _, ts := range doc.Targets {
		if ts.Name == target {
			return ts
		}
	}
	t.Fatalf("status --json has no target %s:\n%s", target, stdout)
	return admin.TargetStatus{}
}

// keysOf runs `keys --json` on c and returns target's keys.
func (w *ownWorld) keysOf(t *testing.T, c ownConfig, target string) admin.TargetKeys {
	t.Helper()
	code, stdout, stderr := w.cli(t, c, nil, "keys", "--json")
	if code != 0 {
		t.Fatalf("keys --json: exit %d\n%s%s", code, stdout, stderr)
	}
	var doc admin.KeysReport
	if err := json.Unmarshal([]byte(stdout), &doc); err != nil {
		t.Fatalf("keys --json: %v\n%s", err, stdout)
	}
	for _, tk := range doc.Targets {
		if tk.Name == target {
			if tk.Error != "" {
				t.Fatalf("keys --json: %s: %s", target, tk.Error)
			}
			return tk
		}
	}
	t.Fatalf("keys --json has no target %s:\n%s", target, stdout)
	return admin.TargetKeys{}
}

// keepVersions lets the mount keep n versions of each secret, so that
// every key a target ever published can be read back (KV v2 keeps 10
// by default).
func (w *ownWorld) keepVersions(t *testing.T, n int) {
	t.Helper()
	if _, err := w.api.Logical().Write(w.mount+"/config", map[string]any{"max_versions": n}); err != nil {
		t.Fatalf("set max_versions: %v", err)
	}
}

// vaultVersion is one version of a secret.
type vaultVersion struct {
	n       int
	data    map[string]any
	written time.Time // when Vault wrote it, to the nanosecond
}

func (v vaultVersion) str(field string) string { s, _ := v.data[field].(string); return s }

func (v vaultVersion) time(t *testing.T, field string) time.Time {
	t.Helper()
	at, err := time.Parse(time.RFC3339, v.str(field))
	if err != nil {
		t.Fatalf("version %d: %s %q: %v", v.n, field, v.str(field), err)
	}
	return at
}

// meta returns the secret's current version (0 when none) and its
// custom metadata.
func (w *ownWorld) meta(t *testing.T, path string) (int, map[string]string) {
	t.Helper()
	md, err := w.api.KVv2(w.mount).GetMetadata(context.Background(), path)
	if errors.Is(err, api.ErrSecretNotFound) {
		return 0, nil
	}
	if err != nil {
		t.Fatalf("read metadata of %s: %v", path, err)
	}
	custom := map[string]string{}
	for k, v := range md.CustomMetadata {
		custom[k], _ = v.(string)
	}
	return md.CurrentVersion, custom
}

// versions returns every version of the secret Vault still holds,
// oldest first.
func (w *ownWorld) versions(t *testing.T, path string) []vaultVersion {
	t.Helper()
	md, err := w.api.KVv2(w.mount).GetMetadata(context.Background(), path)
	if errors.Is(err, api.ErrSecretNotFound) {
		return nil
	}
	if err != nil {
		t.Fatalf("read metadata of %s: %v", path, err)
	}
	var out []vaultVersion
	for n := 1; n <= md.CurrentVersion; n++ {
		s, err := w.api.KVv2(w.mount).GetVersion(context.Background(), path, n)
		if err != nil || s == nil || s.Data == nil {
			continue
		}
		out = append(out, vaultVersion{n: n, data: s.Data, written: md.Versions[strconv.Itoa(n)].CreatedTime})
	}
	return out
}

// identity reads a stopped daemon's state file identity.
func identity(t *testing.T, path string) string {
	t.Helper()
	db, err := store.Open(path, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer db.Close()
	id, err := db.Identity()
	if err != nil || id == "" {
		t.Fatalf("identity of %s: %q, %v", path, id, err)
	}
	return id
}

// checkNoSecrets: no raw key, and no Authorization header value, in any
// output of any process, nor in the state files (I7). raw are keys Vault
// never held (portal keys).
func (w *ownWorld) checkNoSecrets(t *testing.T, paths []string, raw ...string) {
	t.Helper()
	w.mu.Lock()
	procs := append([]*daemonProc(nil), w.procs...)
	w.mu.Unlock()
	for _, d := range procs {
		if !d.exited() {
			t.Fatalf("checkNoSecrets: daemon pid %d still runs", d.cmd.Process.Pid)
		}
		d.flush()
	}
	secrets := append([]string{w.emu.InitialKey()}, raw...)
	for _, p := range paths {
		for _, v := range w.versions(t, p) {
			if k := v.str("api_key"); k != "" {
				secrets = append(secrets, k)
			}
		}
	}
	hay := map[string][]byte{"output": w.output.Bytes()}
	files, _ := filepath.Glob(filepath.Join(w.dir, "*.db"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		hay[filepath.Base(f)] = b
	}
	if len(w.output.Bytes()) == 0 {
		t.Fatalf("checkNoSecrets: no output was captured")
	}
	for _, s := range secrets {
		header := base64.StdEncoding.EncodeToString([]byte(s))
		for what, b := range hay {
			if bytes.Contains(b, []byte(s)) || bytes.Contains(b, []byte(header)) {
				t.Errorf("I7: a raw key or its header appears in the %s", what)
			}
		}
	}
}

// chaosSwitch sits in front of the emulator or Vault and SIGKILLs a
// daemon when it sees a chosen request: before the server gets it, or
// after the server acted on it (the answer is then never sent).
type chaosSwitch struct {
	next http.Handler

	mu     sync.Mutex
	victim *daemonProc
	match  func(r *http.Request) bool
	after  bool
	fired  bool
}

func (s *chaosSwitch) arm(d *daemonProc, after bool, match func(r *http.Request) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.victim, s.after, s.match, s.fired = d, after, match, false
}

// disarm stops watching and reports whether the switch fired.
func (s *chaosSwitch) disarm() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.victim = nil
	return s.fired
}

func (s *chaosSwitch) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	var victim *daemonProc
	if s.victim != nil && !s.fired && s.match(r) {
		victim, s.fired = s.victim, true
	}
	after := s.after
	s.mu.Unlock()
	if victim == nil {
		s.next.ServeHTTP(w, r)
		return
	}
	if after {
		s.next.ServeHTTP(httptest.NewRecorder(), r)
	}
	_ = victim.cmd.Process.Kill()
	<-victim.done
	panic(http.ErrAbortHandler)
}

// killSomewhere SIGKILLs d at a random point: a random instant, or a
// random Codat or Vault request (before or after the server acts on it).
// It says where.
func (w *ownWorld) killSomewhere(t *testing.T, d *daemonProc, rng *rand.Rand) string {
	t.Helper()
	var sw *chaosSwitch
	var where string
	switch rng.IntN(4) {
	case 0, 1:
		delay := time.Duration(200+rng.IntN(3000)) * time.Millisecond
		select {
		case <-d.done:
			t.Fatalf("the daemon exited on its own (code %d)", d.code)
		case <-time.After(delay):
		}
		d.kill()
		return "random instant"
	case 2:
		kinds := []struct {
			name  string
			match func(*http.Request) bool
		}{
			{"GET /apiKeys", isReq("GET", "/apiKeys")},
			{"POST /apiKeys", isReq("POST", "/apiKeys")},
			{"DELETE /apiKeys/", isReq("DELETE", "/apiKeys/")},
		}
		k, n := kinds[rng.IntN(len(kinds))], 1+rng.IntN(3)
		after := rng.IntN(2) == 0
		sw, where = w.codatSW, fmt.Sprintf("codat %s %s", k.name, map[bool]string{false: "before", true: "after"}[after])
		sw.arm(d, after, nth(n, k.match))
	default:
		n, after := 1+rng.IntN(2), rng.IntN(2) == 0
		sw, where = w.vaultSW, fmt.Sprintf("vault write %s", map[bool]string{false: "before", true: "after"}[after])
		sw.arm(d, after, nth(n, isReq("PUT", "/v1/"+w.mount+"/data/")))
	}
	select {
	case <-d.done:
	case <-time.After(8 * time.Second):
		// The request never came (no key fell due, say): kill anyway.
		where = "8s, no " + where
	}
	if !sw.disarm() {
		d.kill()
	}
	if d.code > 0 {
		t.Fatalf("the daemon exited on its own (code %d)", d.code)
	}
	d.flush()
	return where
}

// rotations is how many rotations of the target at path were published:
// the versions after the bootstrap's.
func (w *ownWorld) rotations(t *testing.T, path string) int {
	t.Helper()
	n, _ := w.meta(t, path)
	return max(n-1, 0)
}

// peakKeys is the most keys the emulator held at once, from when each
// key was made and deleted (a delete and a create at the same instant
// count the delete first), and when that was.
func peakKeys(keys []emulator.KeyRecord) (int, time.Time) {
	type change struct {
		at    time.Time
		delta int
	}
	var cs []change
	for _, k := range keys {
		cs = append(cs, change{k.Created, +1})
		if k.Deleted != nil {
			cs = append(cs, change{*k.Deleted, -1})
		}
	}
	sort.SliceStable(cs, func(i, j int) bool {
		if !cs[i].at.Equal(cs[j].at) {
			return cs[i].at.Before(cs[j].at)
		}
		return cs[i].delta < cs[j].delta
	})
	held, peak, when := 0, 0, time.Time{}
	for _, c := range cs {
		held += c.delta
		if held > peak {
			peak, when = held, c.at
		}
	}
	return peak, when
}

// ownRotationsEach is how many rotations each target of
// TestOwnershipTwoTargetsOneClient must publish. Two targets on @every
// 1s need about a minute for it, kills and restarts included; the test
// runs in parallel with the other two ownership tests.
const ownRotationsEach = 50

// ownCrowdedRotations is how many of them each target publishes while
// the client is crowded.
const ownCrowdedRotations = 15

// TestOwnershipTwoTargetsOneClient (issue 10, must show 1): two targets
// on one Codat client, each with its own Vault secret, rotate on @every
// 1s in one daemon that is SIGKILLed at random points and restarted
// until each has published ownRotationsEach rotations. Judged from the
// emulator: no violation, no key of one target ever deleted by the
// other's credential, never more than max_keys − reserve_slots keys at
// once (all rotations here are routine), and never more than 10.
func TestOwnershipTwoTargetsOneClient(t *testing.T) {
	t.Parallel()
	w := newOwnWorld(t)
	w.keepVersions(t, 1000)
	seed := *ownershipSeed
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("seed %d (replay with -ownership.seed=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed))

	// alpha bootstraps with the client's first key, beta with a key a
	// person made in the Portal; four more Portal keys belong to neither.
	// With them, the served and the retiring key of each target (a grace
	// as long as the interval keeps the retiring key a few milliseconds
	// past the next run) make 8 keys when both targets rotate at the
	// same second: one create reaches the routine limit of 9, and a
	// second one made on the same listing would take the reserve. Once
	// each target has ownCrowdedRotations, a person deletes two of them
	// and the rotations run at full speed.
	alphaBoot := w.emu.Keys()[0].ID
	betaBoot, betaRaw, err := w.emu.AddPortalKey("beta-bootstrap")
	if err != nil {
		t.Fatal(err)
	}
	var strangers []string
	for i := range 4 {
		id, _, err := w.emu.AddPortalKey(fmt.Sprintf("someone-else-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		strangers = append(strangers, id)
	}
	crowd := strangers[2:]
	alpha := ownTarget{name: "alpha", path: "codat/alpha", bootstrapEnv: "CODAT_BOOTSTRAP_API_KEY", schedule: "@every 1s", grace: "1s"}
	beta := ownTarget{name: "beta", path: "codat/beta", bootstrapEnv: "BETA_BOOTSTRAP_API_KEY", schedule: "@every 1s", grace: "1s"}
	cfg := w.config(t, "both", listenSocket, alpha, beta) // no metrics: a port picked once may be taken between restarts
	env := []string{"BETA_BOOTSTRAP_API_KEY=" + betaRaw}

	start := time.Now()
	deadline := start.Add(150 * time.Second)
	kills, killed := map[string]int{}, 0
	var crowdedFor time.Duration
	for w.rotations(t, alpha.path) < ownRotationsEach || w.rotations(t, beta.path) < ownRotationsEach {
		if time.Now().After(deadline) {
			// The checks below say why, if they can.
			t.Errorf("after %s and %d kills: alpha published %d rotations, beta %d; want %d each",
				time.Since(start).Round(time.Second), killed, w.rotations(t, alpha.path), w.rotations(t, beta.path), ownRotationsEach)
			break
		}
		if crowdedFor == 0 && w.rotations(t, alpha.path) >= ownCrowdedRotations && w.rotations(t, beta.path) >= ownCrowdedRotations {
			crowdedFor = time.Since(start)
			for _, id := range crowd {
				if err := w.emu.DeletePortalKey(id); err != nil {
					t.Fatal(err)
				}
			}
		}
		d := w.run(t, cfg, env...)
		kills[w.killSomewhere(t, d, rng)]++
		killed++
	}
	if !t.Failed() {
		// A last run finishes what the last kill cut short, then stops.
		d := w.run(t, cfg, env...)
		d.waitRunning(t)
		done := func(target string) func(logRecord) bool {
			return func(r logRecord) bool { return r.str("msg") == "rotation done" && r.str("target") == target }
		}
		d.waitLog(t, 20*time.Second, 1, "a rotation of alpha", done("alpha"))
		d.waitLog(t, 20*time.Second, 1, "a rotation of beta", done("beta"))
		d.stop(t)
	}
	noRoom := 0
	for _, p := range w.procs {
		noRoom += p.count(func(r logRecord) bool {
			return r.str("msg") == "rotation failed" && strings.Contains(r.str("error"), "no room for a new key")
		})
	}
	t.Logf("%s (%s crowded): alpha published %d rotations, beta %d; %d kills %v; %d rotations found no room",
		time.Since(start).Round(time.Second), crowdedFor.Round(time.Second), w.rotations(t, alpha.path), w.rotations(t, beta.path), killed, kills, noRoom)

	for _, v := range w.emu.Violations() {
		t.Errorf("emulator violation: %+v", v)
	}

	// Whose each key is: the bootstrap keys, then every key made through
	// the API by the target tag in its name.
	keys := w.emu.Keys()
	owner := map[string]string{alphaBoot: "alpha", betaBoot: "beta"}
	for _, id := range strangers {
		owner[id] = "nobody"
	}
	for _, k := range keys {
		if k.Origin != emulator.OriginAPI {
			continue
		}
		for _, tg := range []ownTarget{alpha, beta} {
			_, md := w.meta(t, tg.path)
			if tag := md[rotation.MetadataKeyTag]; tag != "" && strings.HasPrefix(k.Name, ownPrefix+tag+"-") {
				if owner[k.ID] != "" {
					t.Errorf("key %s named %q: carries both targets' tags", k.ID, k.Name)
				}
				owner[k.ID] = tg.name
			}
		}
		if owner[k.ID] == "" {
			t.Errorf("key %s named %q: carries neither target's tag", k.ID, k.Name)
		}
	}
	// Every key a target's secret ever served is that target's.
	for _, tg := range []ownTarget{alpha, beta} {
		vs := w.versions(t, tg.path)
		if len(vs) != w.rotations(t, tg.path)+1 {
			t.Errorf("%s: %d versions readable, want all %d", tg.name, len(vs), w.rotations(t, tg.path)+1)
		}
		for _, v := range vs {
			if id := v.str("key_id"); owner[id] != tg.name {
				t.Errorf("%s's secret version %d serves %s, a key of %q", tg.name, v.n, id, owner[id])
			}
		}
	}
	// Every delete was sent with a key of the same target as the key it
	// deleted: neither target ever deleted a key the other made or
	// served, and no Portal key of a stranger went.
	deletes := map[string]int{}
	for _, ev := range w.emu.Events(0) {
		if ev.Op != emulator.OpDelete {
			continue
		}
		id := strings.TrimPrefix(ev.Path, "/apiKeys/")
		by := owner[ev.KeyID]
		if ev.KeyID == "" {
			t.Errorf("delete of %s (status %d) not authenticated by any live key", id, ev.Status)
			continue
		}
		if owner[id] != by {
			t.Errorf("%s's credential %s asked to delete %s, a key of %q (status %d)", by, ev.KeyID, id, owner[id], ev.Status)
		}
		deletes[by]++
	}
	t.Logf("deletes sent: %v", deletes)
	if deletes["alpha"] == 0 || deletes["beta"] == 0 {
		t.Errorf("deletes by target: %v; want both to have retired keys", deletes)
	}
	for _, k := range keys {
		if slices.Contains(strangers[:2], k.ID) && k.Deleted != nil {
			t.Errorf("a stranger's Portal key %s was deleted", k.ID)
		}
	}
	// The cap and the reserve, at every instant.
	peak, at := peakKeys(keys)
	t.Logf("at most %d keys at codat at once (at %s)", peak, at.Format(time.RFC3339Nano))
	if peak > emulator.CodatMaxKeys {
		t.Errorf("%d keys at codat at %s: over the cap of %d", peak, at.Format(time.RFC3339Nano), emulator.CodatMaxKeys)
	}
	switch limit := 10 - 1; { // max_keys − reserve_slots, the defaults
	case peak > limit:
		t.Errorf("%d keys at codat at %s: routine rotations took the reserve (at most %d)", peak, at.Format(time.RFC3339Nano), limit)
	case peak < limit:
		t.Errorf("at most %d keys at codat: the rotations never reached the routine limit of %d, so this run says nothing about the reserve", peak, limit)
	}
	// Each target's served key is live.
	live := w.activeKeys()
	for _, tg := range []ownTarget{alpha, beta} {
		vs := w.versions(t, tg.path)
		if id := vs[len(vs)-1].str("key_id"); !live[id] {
			t.Errorf("%s: vault serves %s, which codat no longer holds", tg.name, id)
		}
	}

	// The commands say the client is shared, and what that means.
	code, stdout, stderr := w.cli(t, cfg, nil, "status")
	if code != 0 {
		t.Fatalf("status: exit %d\n%s%s", code, stdout, stderr)
	}
	for _, want := range []string{"shared client:  the Codat client is shared with beta:", "shared client:  the Codat client is shared with alpha:"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("status lacks %q:\n%s", want, stdout)
		}
	}
	code, stdout, stderr = w.cli(t, cfg, nil, "keys")
	if code != 0 {
		t.Fatalf("keys: exit %d\n%s%s", code, stdout, stderr)
	}
	if got := strings.Count(stdout, "  note: the Codat client is shared with "); got != 2 {
		t.Errorf("keys: %d note lines about the shared client, want 2:\n%s", got, stdout)
	}
	// Each target lists the other's keys and the strangers' as foreign.
	for _, tg := range []ownTarget{alpha, beta} {
		for _, k := range w.keysOf(t, cfg, tg.name).Keys {
			if mine := owner[k.ID] == tg.name; mine == (k.Marking == string(rotation.ClassForeign)) {
				t.Errorf("%s: key %s (%s's) is marked %s", tg.name, k.ID, owner[k.ID], k.Marking)
			}
		}
	}
	code, stdout, stderr = w.cli(t, cfg, nil, "check")
	if code != 0 {
		t.Fatalf("check: exit %d\n%s%s", code, stdout, stderr)
	}
	for _, want := range []string{"WARN target alpha: the Codat client is shared with beta", "WARN target beta: the Codat client is shared with alpha"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("check lacks %q:\n%s", want, stdout)
		}
	}
	w.checkNoSecrets(t, []string{alpha.path, beta.path}, betaRaw)
}

// blockedEvents returns the blocked events a receiver got.
func blockedEvents(t *testing.T, r *receiver) []notify.Event {
	t.Helper()
	var out []notify.Event
	for _, b := range r.got() {
		var ev notify.Event
		if err := json.Unmarshal(b, &ev); err != nil {
			t.Fatalf("webhook body: %v\n%s", err, b)
		}
		if ev.Event == notify.EventBlocked {
			out = append(out, ev)
		}
	}
	return out
}

// notOwner reads the owner and the refused state file out of a blocked
// error.
var notOwner = regexp.MustCompile(`owned by state file ([0-9a-f]+) .*not by this state file \(([0-9a-f]+)\)`)

// logged returns the values of attr in d's log lines with message msg.
func logged(d *daemonProc, msg, attr string) []string {
	var out []string
	for _, r := range d.records() {
		if r.str("msg") == msg {
			out = append(out, r.str(attr))
		}
	}
	return out
}

// TestOwnershipSecondDaemon (issue 10, must show 2): daemon A runs;
// daemon B, the same config with its own state file, admin socket and
// metrics listener, starts and rotates nothing: it says A owns the
// target (status, metric, one webhook) while A keeps rotating, and an
// in-process rotate with a third state file fails the same way. After A
// stops, `takeover` through B's admin socket moves the target to B,
// which rotates and claims the secret; A, started again, is blocked.
func TestOwnershipSecondDaemon(t *testing.T) {
	t.Parallel()
	w := newOwnWorld(t)
	hook := newReceiver(t)
	solo := ownTarget{name: "solo", path: "codat/solo", bootstrapEnv: "CODAT_BOOTSTRAP_API_KEY", schedule: "@every 1s", grace: "1s", webhook: hook.srv.URL}
	cfgA := w.config(t, "a", listenAll, solo)
	cfgB := w.config(t, "b", listenAll, solo)
	cfgC := w.config(t, "c", listenNothing, solo)
	done := msgIs("rotation done")

	a := w.run(t, cfgA)
	a.waitRunning(t)
	a.waitRotations(t, 15*time.Second, 1)
	_, md := w.meta(t, solo.path)
	idA := md[rotation.MetadataOwner]
	if idA == "" || md[rotation.MetadataOwnerHost] == "" || md[rotation.MetadataOwnerSince] == "" {
		t.Fatalf("after A's first rotation the secret's custom metadata has no owner, host or since: %v", md)
	}

	b := w.run(t, cfgB)
	b.waitRunning(t)
	blockedLine := msgIs("target blocked: another codat-rotator owns it")
	b.waitLog(t, 15*time.Second, 3, "of the target blocked", blockedLine)
	// A keeps rotating meanwhile.
	a.waitRotations(t, 15*time.Second, a.count(done)+3)

	st := w.status(t, cfgB, solo.name)
	if !strings.Contains(st.Blocked, "is owned by state file "+idA+" on host ") || !strings.Contains(st.Blocked, "run `codat-rotator takeover --target solo`") {
		t.Errorf("B's status --json blocked: got %q, want it to name A's state file %s and the takeover", st.Blocked, idA)
	}
	if st.BlockedSince == nil || st.BlockedSince.IsZero() {
		t.Errorf("B's status --json: no blocked_since")
	}
	code, stdout, stderr := w.cli(t, cfgB, nil, "status")
	if code != 0 || !strings.Contains(stdout, "  state:          BLOCKED since ") || !strings.Contains(stdout, idA) {
		t.Errorf("B's status: exit %d, want BLOCKED naming %s:\n%s%s", code, idA, stdout, stderr)
	}
	_, metricsB := get(t, "http://"+cfgB.metrics+"/metrics")
	if v, ok := metricValue(metricsB, "codat_rotator_blocked", `target="solo"`); !ok || v != 1 {
		t.Errorf("B's codat_rotator_blocked: got %v (present %v), want 1", v, ok)
	}
	_, metricsA := get(t, "http://"+cfgA.metrics+"/metrics")
	if v, ok := metricValue(metricsA, "codat_rotator_blocked", `target="solo"`); !ok || v != 0 {
		t.Errorf("A's codat_rotator_blocked: got %v (present %v), want 0", v, ok)
	}
	if st := w.status(t, cfgA, solo.name); st.Blocked != "" || st.LastResult != "success" {
		t.Errorf("A's status: blocked %q, last result %q; want A rotating", st.Blocked, st.LastResult)
	}
	// An in-process rotate with yet another state file: refused, exit
	// non-zero, with who owns the target and what to do.
	code, stdout, stderr = w.cli(t, cfgC, nil, "rotate", "--target", "solo")
	if code == 0 {
		t.Errorf("rotate with a third state file: exit 0\n%s%s", stdout, stderr)
	}
	for _, want := range []string{"is owned by state file " + idA + " on host ", " since ", "run `codat-rotator takeover --target solo`"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("rotate with a third state file: stderr lacks %q:\n%s", want, stderr)
		}
	}

	a.stop(t)
	if got := identity(t, cfgA.state); got != idA {
		t.Errorf("A's state file identity %s, but the secret names %s as owner", got, idA)
	}
	// Until now only A acted: every key at Codat made through the API is
	// one A created, every key deleted one A deleted, every version of
	// the secret A's (the bootstrap key, then A's rotations), and the
	// owner never changed.
	created, deleted := logged(a, "key created", "key_id"), logged(a, "deleting retired key", "key_id")
	for _, k := range w.emu.Keys() {
		if k.Origin == emulator.OriginAPI && !slices.Contains(created, k.ID) {
			t.Errorf("key %s at codat was not created by A", k.ID)
		}
		if k.Deleted != nil && !slices.Contains(deleted, k.ID) {
			t.Errorf("key %s was deleted, not by A", k.ID)
		}
	}
	rotatedByA := logged(a, "rotation done", "new_key_id")
	vs := w.versions(t, solo.path)
	for _, v := range vs {
		if id := v.str("key_id"); !(v.n == 1 && id == w.emu.Keys()[0].ID) && !slices.Contains(rotatedByA, id) {
			t.Errorf("vault version %d serves %s: not a key A published", v.n, id)
		}
	}
	if _, md := w.meta(t, solo.path); md[rotation.MetadataOwner] != idA {
		t.Errorf("owner after A stopped: %q, want A's %s", md[rotation.MetadataOwner], idA)
	}
	for _, msg := range []string{"key created", "published and read back", "deleting retired key", "rotation done"} {
		if n := b.count(msgIs(msg)); n != 0 {
			t.Errorf("B, blocked, logged %q %d times", msg, n)
		}
	}
	versionsBefore := len(vs)

	// takeover through B's admin socket.
	code, stdout, stderr = w.cli(t, cfgB, nil, "takeover", "--target", "solo", "--json")
	if code != 0 {
		t.Fatalf("takeover: exit %d\n%s%s", code, stdout, stderr)
	}
	var rep admin.TakeoverReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("takeover --json: %v\n%s", err, stdout)
	}
	if !strings.Contains(rep.PreviousOwner, idA) {
		t.Errorf("takeover: previous owner %q, want A's %s", rep.PreviousOwner, idA)
	}
	if b.count(msgIs("target taken over by an operator")) != 1 {
		t.Errorf("B's log shows no takeover: it did not go through B's admin socket")
	}
	b.waitRotations(t, 15*time.Second, 2)
	b.stop(t)
	idB := identity(t, cfgB.state)
	if idB == idA || !strings.Contains(rep.Owner, idB) {
		t.Errorf("takeover: new owner %q, B's state file is %s, A's %s", rep.Owner, idB, idA)
	}
	vs = w.versions(t, solo.path)
	rotatedByB := logged(b, "rotation done", "new_key_id")
	if len(vs) <= versionsBefore {
		t.Fatalf("B published nothing after the takeover")
	}
	for _, v := range vs[versionsBefore:] {
		if id := v.str("key_id"); !slices.Contains(rotatedByB, id) {
			t.Errorf("vault version %d (after the takeover) serves %s: not a key B published", v.n, id)
		}
	}
	if _, md := w.meta(t, solo.path); md[rotation.MetadataOwner] != idB {
		t.Errorf("owner after B rotated: %q, want B's %s", md[rotation.MetadataOwner], idB)
	}

	// A, started again, is the one blocked now, and changes nothing.
	current, _ := w.meta(t, solo.path)
	events := len(w.emu.Events(0))
	a2 := w.run(t, cfgA)
	a2.waitRunning(t)
	a2.waitLog(t, 15*time.Second, 1, "of the target blocked", blockedLine)
	st = w.status(t, cfgA, solo.name)
	if !strings.Contains(st.Blocked, "is owned by state file "+idB) {
		t.Errorf("A after the takeover: blocked %q, want it to name B's %s", st.Blocked, idB)
	}
	a2.stop(t)
	if now, _ := w.meta(t, solo.path); now != current {
		t.Errorf("A, blocked, wrote to vault: version %d then %d", current, now)
	}
	for _, ev := range w.emu.Events(0)[events:] {
		if ev.Op == emulator.OpCreate || ev.Op == emulator.OpDelete {
			t.Errorf("A, blocked, sent %s %s", ev.Method, ev.Path)
		}
	}
	// One blocked webhook per state file that found the target owned by
	// another: B (A's), the in-process rotate (A's), A again (B's).
	perState := map[string][]string{}
	for _, ev := range blockedEvents(t, hook) {
		m := notOwner.FindStringSubmatch(ev.Error)
		if m == nil {
			t.Errorf("blocked event without the owner and this state file: %q", ev.Error)
			continue
		}
		perState[m[2]] = append(perState[m[2]], m[1])
	}
	if len(perState) != 3 || !slices.Equal(perState[idB], []string{idA}) || !slices.Equal(perState[idA], []string{idB}) {
		t.Errorf("blocked webhook events, owner by blocked state file: got %v; want one each for B (owner %s), the third state file (owner %s) and A (owner %s)", perState, idA, idA, idB)
	}
	for _, v := range w.emu.Violations() {
		t.Errorf("emulator violation: %+v", v)
	}
	w.checkNoSecrets(t, []string{solo.path})
}

// TestOwnershipLostStateFile (issue 10, must show 3): the state file is
// deleted while keys are in their grace. The daemon restarted on an
// empty state file has a new identity: it is blocked and changes
// nothing until `takeover`, which rebuilds the state from the secret's
// versions and the target's name shape. Restarted, it deletes no key
// before the grace its records give it, retires the old bootstrap key
// when due, and leaves nothing it made foreign.
func TestOwnershipLostStateFile(t *testing.T) {
	t.Parallel()
	w := newOwnWorld(t)
	const grace = 8 * time.Second
	lost := ownTarget{name: "lost", path: "codat/lost", bootstrapEnv: "CODAT_BOOTSTRAP_API_KEY", schedule: "@every 1h", grace: grace.String()}
	cfg := w.config(t, "lost", listenAll, lost)
	bootstrap := w.emu.Keys()[0].ID
	portal, portalRaw, err := w.emu.AddPortalKey("made-by-a-person")
	if err != nil {
		t.Fatal(err)
	}
	tagOf := func() string {
		_, md := w.meta(t, lost.path)
		return md[rotation.MetadataKeyTag]
	}

	// The catch-up rotation and two manual ones: the bootstrap key and
	// two rotated keys are in their grace, a third key is served.
	d := w.run(t, cfg)
	d.waitRunning(t)
	d.waitRotations(t, 15*time.Second, 1)
	for range 2 {
		time.Sleep(1100 * time.Millisecond) // each key its own deadline
		if code, stdout, stderr := w.cli(t, cfg, nil, "rotate", "--target", lost.name); code != 0 {
			t.Fatalf("rotate: exit %d\n%s%s", code, stdout, stderr)
		}
	}
	d.stop(t)
	_, md := w.meta(t, lost.path)
	oldID := md[rotation.MetadataOwner]
	if oldID == "" || oldID != identity(t, cfg.state) {
		t.Fatalf("owner %q, want the state file's identity %s", oldID, identity(t, cfg.state))
	}
	vs := w.versions(t, lost.path)
	if len(vs) != 4 || vs[0].str("key_id") != bootstrap {
		t.Fatalf("vault holds %d versions, want 4 starting with the bootstrap key", len(vs))
	}
	// When each key may go, by the secret's records: previous_expires_at
	// of the version that superseded it.
	// And when its grace ends (I4): grace after Vault wrote the version
	// that superseded it; the record is to the second, this is exact.
	mayGo, graceEnds := map[string]time.Time{}, map[string]time.Time{}
	for _, v := range vs[1:] {
		mayGo[v.str("previous_key_id")] = v.time(t, "previous_expires_at")
		graceEnds[v.str("previous_key_id")] = v.written.Add(grace)
	}
	if !mayGo[bootstrap].After(time.Now()) {
		t.Fatalf("the bootstrap key's grace ended at %s, before the state file is lost: the setup took too long for a %s grace", mayGo[bootstrap], grace)
	}
	if err := os.Remove(cfg.state); err != nil {
		t.Fatal(err)
	}
	t.Logf("state file deleted; the bootstrap key may go at %s, in %s", mayGo[bootstrap].Format(time.RFC3339), time.Until(mayGo[bootstrap]).Round(time.Millisecond))

	// Restarted on an empty state file: blocked, nothing changed.
	versionBefore, _ := w.meta(t, lost.path)
	events := len(w.emu.Events(0))
	d = w.run(t, cfg)
	d.waitRunning(t)
	d.waitLog(t, 15*time.Second, 1, "of the target blocked", msgIs("target blocked: another codat-rotator owns it"))
	st := w.status(t, cfg, lost.name)
	if !strings.Contains(st.Blocked, "is owned by state file "+oldID) {
		t.Errorf("status after the state file was lost: blocked %q, want it to name the old state file %s", st.Blocked, oldID)
	}
	_, metrics := get(t, "http://"+cfg.metrics+"/metrics")
	if v, ok := metricValue(metrics, "codat_rotator_blocked", `target="lost"`); !ok || v != 1 {
		t.Errorf("codat_rotator_blocked: got %v (present %v), want 1", v, ok)
	}
	if now, md := w.meta(t, lost.path); now != versionBefore || md[rotation.MetadataOwner] != oldID {
		t.Errorf("blocked, the daemon wrote to vault: version %d then %d, owner %q", versionBefore, now, md[rotation.MetadataOwner])
	}
	for _, ev := range w.emu.Events(0)[events:] {
		if ev.Op == emulator.OpCreate || ev.Op == emulator.OpDelete {
			t.Errorf("blocked, the daemon sent %s %s", ev.Method, ev.Path)
		}
	}

	// takeover, through the running daemon.
	code, stdout, stderr := w.cli(t, cfg, nil, "takeover", "--target", lost.name, "--json")
	if code != 0 {
		t.Fatalf("takeover: exit %d\n%s%s", code, stdout, stderr)
	}
	var rep admin.TakeoverReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("takeover --json: %v\n%s", err, stdout)
	}
	if !strings.Contains(rep.PreviousOwner, oldID) {
		t.Errorf("takeover: previous owner %q, want %s", rep.PreviousOwner, oldID)
	}
	if rep.Versions != 4 {
		t.Errorf("takeover read %d versions, want 4", rep.Versions)
	}
	served := vs[3].str("key_id")
	rebuilt := map[string]admin.KeyStatus{}
	for _, k := range rep.Rebuilt {
		rebuilt[k.ID] = k
	}
	for id, at := range mayGo {
		k, ok := rebuilt[id]
		switch {
		case !ok:
			t.Errorf("takeover did not take on %s, which the secret's versions name", id)
		case k.DeleteAfter == nil || k.DeleteAfter.Before(at):
			t.Errorf("takeover: %s retires at %v, before its recorded time %s", id, k.DeleteAfter, at)
		case k.DeleteAfter.Before(graceEnds[id]):
			t.Errorf("I4: takeover: %s retires at %s, before its grace ends at %s", id, k.DeleteAfter.Format(time.RFC3339Nano), graceEnds[id].Format(time.RFC3339Nano))
		}
	}
	if k, ok := rebuilt[served]; !ok || k.DeleteAfter != nil {
		t.Errorf("takeover: the served key %s: %+v (taken on: %v), want it taken on, not retiring", served, k, ok)
	}
	if !slices.Equal(rep.Foreign, []string{portal}) {
		t.Errorf("takeover left %v foreign, want only the Portal key %s", rep.Foreign, portal)
	}
	if st := w.status(t, cfg, lost.name); st.Blocked != "" {
		t.Errorf("after the takeover: still blocked: %s", st.Blocked)
	}
	_, md = w.meta(t, lost.path)
	newID := md[rotation.MetadataOwner]
	if newID == oldID || !strings.Contains(rep.Owner, newID) {
		t.Errorf("owner after the takeover %q (report: %q); the old one was %s", newID, rep.Owner, oldID)
	}
	checkMarkings := func(when string) {
		t.Helper()
		names := rotation.NamesOf(rotation.Target{Name: lost.name, Prefix: ownPrefix}, tagOf())
		for _, k := range w.keysOf(t, cfg, lost.name).Keys {
			foreign := k.Marking == string(rotation.ClassForeign)
			switch {
			case k.ID == portal && !foreign:
				t.Errorf("%s: the Portal key is marked %s", when, k.Marking)
			case k.ID != portal && foreign:
				t.Errorf("%s: key %s (%q) is left foreign", when, k.ID, k.Name)
			case k.ID != portal && k.ID != bootstrap && !names.Own(k.Name):
				t.Errorf("%s: key %s (%q) is neither the bootstrap key nor in the target's name shape", when, k.ID, k.Name)
			}
		}
	}
	checkMarkings("after the takeover")
	d.stop(t)
	if got := identity(t, cfg.state); got != newID {
		t.Errorf("the new state file's identity %s, but the secret names %s", got, newID)
	}

	// Restarted: the catch-up rotation, then every key retires when its
	// records say, none sooner.
	d = w.run(t, cfg)
	d.waitRunning(t)
	d.waitRotations(t, 15*time.Second, 1)
	checkMarkings("after the restart")
	vs = w.versions(t, lost.path)
	last := vs[len(vs)-1]
	mayGo[last.str("previous_key_id")] = last.time(t, "previous_expires_at")
	graceEnds[last.str("previous_key_id")] = last.written.Add(grace)
	d.until(t, grace+15*time.Second, "every superseded key deleted", func() bool {
		live := w.activeKeys()
		for id := range mayGo {
			if live[id] {
				return false
			}
		}
		return true
	})
	d.stop(t)

	deletedAt := map[string]time.Time{}
	for _, ev := range w.emu.Events(0) {
		if ev.Op != emulator.OpDelete {
			continue
		}
		id := strings.TrimPrefix(ev.Path, "/apiKeys/")
		at, ok := mayGo[id]
		switch {
		case !ok:
			t.Errorf("delete of %s (status %d): no version of the secret superseded it", id, ev.Status)
		case ev.Time.Before(at):
			t.Errorf("%s deleted at %s, before its recorded grace ended at %s", id, ev.Time.Format(time.RFC3339Nano), at.Format(time.RFC3339))
		case ev.Time.Before(graceEnds[id]):
			t.Errorf("I4: %s deleted at %s, %s before its grace ended (%s after its successor was written to vault at %s)",
				id, ev.Time.Format(time.RFC3339Nano), graceEnds[id].Sub(ev.Time).Round(time.Millisecond), grace, graceEnds[id].Add(-grace).Format(time.RFC3339Nano))
		}
		if ev.Status == http.StatusNoContent {
			deletedAt[id] = ev.Time
		}
	}
	for id, at := range mayGo {
		if _, ok := deletedAt[id]; !ok {
			t.Errorf("%s (may go at %s) was never deleted", id, at.Format(time.RFC3339))
		}
	}
	if _, ok := deletedAt[bootstrap]; !ok {
		t.Errorf("the old bootstrap key %s was not retired", bootstrap)
	} else {
		t.Logf("bootstrap key: may go at %s, deleted at %s", mayGo[bootstrap].Format(time.RFC3339), deletedAt[bootstrap].Format(time.RFC3339Nano))
	}
	checkMarkings("at the end")
	if st := w.status(t, cfg, lost.name); st.Blocked != "" || st.LastResult != "success" {
		t.Errorf("at the end: blocked %q, last result %q", st.Blocked, st.LastResult)
	}
	for _, v := range w.emu.Violations() {
		t.Errorf("emulator violation: %+v", v)
	}
	w.checkNoSecrets(t, []string{lost.path}, portalRaw)
}
