package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/codat"
	"github.com/codat-rotator/codat-rotator/codat/emulator"
	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/store"
	"github.com/codat-rotator/codat-rotator/vault/vaulttest"
)

// killSwitch sits in front of the emulator or Vault and SIGKILLs the
// rotate subprocess when it sees the request of a step: before the
// request reaches the server, or after the server acted on it (the
// answer is then never sent).
type killSwitch struct {
	next http.Handler

	mu    sync.Mutex
	armed bool
	match func(r *http.Request) bool
	after bool
	proc  *os.Process
	fired bool
	seen  []string
}

func (k *killSwitch) arm(p *os.Process, after bool, match func(r *http.Request) bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.armed, k.proc, k.after, k.match, k.fired, k.seen = true, p, after, match, false, nil
}

func (k *killSwitch) disarm() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.armed = false
}

func (k *killSwitch) didFire() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.fired
}

func (k *killSwitch) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	k.mu.Lock()
	fire := false
	if k.armed && !k.fired {
		k.seen = append(k.seen, r.Method+" "+r.URL.Path)
		if k.match(r) {
			fire, k.fired = true, true
		}
	}
	proc, after := k.proc, k.after
	k.mu.Unlock()
	if !fire {
		k.next.ServeHTTP(w, r)
		return
	}
	if after {
		// The server acts; the process dies before it hears back.
		k.next.ServeHTTP(httptest.NewRecorder(), r)
	}
	_ = proc.Kill()
	_, _ = proc.Wait()
	panic(http.ErrAbortHandler)
}

// nth matches the n-th request (1-based) that pred accepts.
func nth(n int, pred func(r *http.Request) bool) func(r *http.Request) bool {
	count := 0
	return func(r *http.Request) bool {
		if pred(r) {
			count++
			return count == n
		}
		return false
	}
}

func isReq(method, path string) func(r *http.Request) bool {
	return func(r *http.Request) bool {
		return r.Method == method && (path == "" || r.URL.Path == path || strings.HasPrefix(r.URL.Path, path))
	}
}

// crashEnv is one scenario's world: an emulator, a Vault mount behind a
// proxy, a config and a state file.
type crashEnv struct {
	emu      *emulator.Server
	codatKS  *killSwitch
	vaultKS  *killSwitch
	codatURL string
	vaultURL string
	vault    *vaulttest.Server
	mount    string
	dir      string
	config   string
	output   bytes.Buffer // every run's stdout and stderr
}

const crashPrefix = "codat-rotator-"

func newCrashEnv(t *testing.T) *crashEnv {
	t.Helper()
	vs := vaulttest.Shared(t)
	e := &crashEnv{vault: vs, mount: vs.NewKV(t), dir: t.TempDir()}
	var err error
	e.emu, err = emulator.New(emulator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e.codatKS = &killSwitch{next: e.emu}
	codatSrv := httptest.NewServer(e.codatKS)
	t.Cleanup(func() { e.emu.Close(); codatSrv.Close() })
	e.codatURL = codatSrv.URL

	target, _ := url.Parse(vs.Addr)
	e.vaultKS = &killSwitch{next: httputil.NewSingleHostReverseProxy(target)}
	vaultSrv := httptest.NewServer(e.vaultKS)
	t.Cleanup(vaultSrv.Close)
	e.vaultURL = vaultSrv.URL

	e.config = filepath.Join(e.dir, "config.yaml")
	cfg := fmt.Sprintf(`state_path: %s
log: {level: debug, format: json}
vault:
  address: %s
targets:
  - name: crash
    codat:
      base_url: %s
      bootstrap_key_env: CODAT_BOOTSTRAP_API_KEY
    vault: {mount: %s, path: codat/crash}
    schedule: "@every 1h"
    grace: 1s
    key_name_prefix: %s
`, filepath.Join(e.dir, "state.db"), e.vaultURL, e.codatURL, e.mount, crashPrefix)
	if err := os.WriteFile(e.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

// start runs `codat-rotator rotate` without waiting for it.
func (e *crashEnv) start(t *testing.T, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"rotate", "--config", e.config}, args...)...)
	cmd.Env = append(os.Environ(), "VAULT_TOKEN="+e.vault.RootToken, "CODAT_BOOTSTRAP_API_KEY="+e.emu.InitialKey())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, &out
}

// rotate runs `codat-rotator rotate` to the end and wants exit 0.
func (e *crashEnv) rotate(t *testing.T, args ...string) {
	t.Helper()
	cmd, out := e.start(t, args...)
	err := cmd.Wait()
	e.output.Write(out.Bytes())
	if err != nil {
		t.Fatalf("rotate: %v\n%s", err, out)
	}
	for _, line := range strings.Split(out.String(), "\n") {
		if line != "" && !strings.HasPrefix(line, "{") {
			t.Logf("rotate: %s", line)
		}
	}
}

// crashRun runs rotate with a kill switch armed and wants it killed.
func (e *crashEnv) crashRun(t *testing.T, ks *killSwitch, after bool, match func(r *http.Request) bool) {
	t.Helper()
	cmd, out := e.start(t)
	ks.arm(cmd.Process, after, match)
	err := cmd.Wait()
	ks.disarm()
	e.output.Write(out.Bytes())
	if !ks.didFire() {
		t.Fatalf("the kill switch never fired (requests seen: %v); exit %v\n%s", ks.seen, err, out)
	}
}

// checkInvariants checks I1–I7 from the outside: the emulator's record,
// what Vault serves, the state file, and every byte the runs printed.
func (e *crashEnv) checkInvariants(t *testing.T) {
	t.Helper()
	for _, v := range e.emu.Violations() {
		t.Errorf("emulator violation (I1/I2/I3): %+v", v)
	}
	// I3: Vault serves a live key that authenticates.
	api := e.vault.Client(t)
	sec, err := api.KVv2(e.mount).Get(context.Background(), "codat/crash")
	if err != nil {
		t.Fatalf("read vault: %v", err)
	}
	raw, _ := sec.Data["api_key"].(string)
	servedID, _ := sec.Data["key_id"].(string)
	c, err := codat.New(codat.Secret(raw), codat.Options{BaseURL: e.codatURL})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := c.List(context.Background())
	if err != nil {
		t.Fatalf("I3: the key vault serves does not authenticate: %v", err)
	}
	if got := sec.Data["authorization_header"]; got != "Basic "+base64.StdEncoding.EncodeToString([]byte(raw)) {
		t.Errorf("authorization_header does not match api_key")
	}
	if len(keys) > 10 {
		t.Errorf("I1: %d keys at codat", len(keys))
	}

	// The state file: no journal left, the served key active, and every
	// key with the daemon's name shape known (I5).
	db, err := store.Open(filepath.Join(e.dir, "state.db"), store.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("open state: %v", err)
	}
	defer db.Close()
	if err := db.Check(); err != nil {
		t.Errorf("state file: %v", err)
	}
	st, err := db.Load("crash")
	if err != nil {
		t.Fatal(err)
	}
	if st.Journal != nil {
		t.Errorf("a journal is left after the recovery run: %+v", *st.Journal)
	}
	if rec := st.Key(servedID); rec == nil || rec.State != store.KeyActive {
		t.Errorf("the served key %s is not active in the state: %+v", servedID, rec)
	}
	for _, k := range keys {
		if !rotation.NamesOf(rotation.Target{Name: "crash", Prefix: crashPrefix}, st.Tag).Own(k.Name) {
			continue
		}
		if rec := st.Key(k.ID); rec == nil || rec.State == store.KeyDeleted {
			t.Errorf("I5: key %s (%s) is at codat with the daemon's name but unknown to its state", k.ID, k.Name)
		}
	}

	e.checkNoSecrets(t)
}

// checkNoSecrets checks I7 from the outside: no raw key Vault ever held,
// nor its header, in any output of the runs or in the state file.
func (e *crashEnv) checkNoSecrets(t *testing.T) {
	t.Helper()
	api := e.vault.Client(t)
	secrets := []string{e.emu.InitialKey()}
	md, err := api.KVv2(e.mount).GetMetadata(context.Background(), "codat/crash")
	if err != nil {
		t.Fatal(err)
	}
	for v := 1; v <= md.CurrentVersion; v++ {
		s, err := api.KVv2(e.mount).GetVersion(context.Background(), "codat/crash", v)
		if err != nil || s.Data == nil {
			continue
		}
		if k, _ := s.Data["api_key"].(string); k != "" {
			secrets = append(secrets, k)
		}
	}
	file, err := os.ReadFile(filepath.Join(e.dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets {
		header := base64.StdEncoding.EncodeToString([]byte(s))
		for what, hay := range map[string][]byte{"output": e.output.Bytes(), "state file": file} {
			if bytes.Contains(hay, []byte(s)) || bytes.Contains(hay, []byte(header)) {
				t.Errorf("I7: a raw key or its header appears in the %s", what)
			}
		}
	}
}

// TestCrashAtEveryStep kills the real binary with SIGKILL at each step
// boundary of the step table (docs/design.md#step-table), restarts it,
// and checks the invariants.
func TestCrashAtEveryStep(t *testing.T) {
	vaultData := func(e *crashEnv) string { return "/v1/" + e.mount + "/data/codat/crash" }
	tests := []struct {
		name string
		// setup runs before the killed run (beyond the first rotation).
		setup func(t *testing.T, e *crashEnv)
		vault bool // the switch is in front of Vault, not Codat
		after bool
		match func(e *crashEnv) func(r *http.Request) bool
	}{
		{name: "plan", match: func(*crashEnv) func(*http.Request) bool { return nth(1, isReq("GET", "/apiKeys")) }},
		{name: "make-room", setup: func(t *testing.T, e *crashEnv) {
			// 2 keys of ours + 7 portal keys = 9, the routine limit; the
			// retiring key passes its grace.
			for i := 0; i < 7; i++ {
				if _, _, err := e.emu.AddPortalKey(fmt.Sprintf("portal-%d", i)); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(1100 * time.Millisecond)
		}, after: true, match: func(*crashEnv) func(*http.Request) bool { return nth(1, isReq("DELETE", "/apiKeys/")) }},
		{name: "create before", match: func(*crashEnv) func(*http.Request) bool { return nth(1, isReq("POST", "/apiKeys")) }},
		{name: "create after", after: true, match: func(*crashEnv) func(*http.Request) bool { return nth(1, isReq("POST", "/apiKeys")) }},
		{name: "verify", match: func(*crashEnv) func(*http.Request) bool {
			posted := false
			return func(r *http.Request) bool {
				if r.Method == "POST" {
					posted = true
					return false
				}
				return posted && r.Method == "GET"
			}
		}},
		{name: "publish before", vault: true, match: func(e *crashEnv) func(*http.Request) bool {
			return nth(1, isReq("PUT", vaultData(e)))
		}},
		{name: "publish after", vault: true, after: true, match: func(e *crashEnv) func(*http.Request) bool {
			return nth(1, isReq("PUT", vaultData(e)))
		}},
		{name: "activate", vault: true, after: true, match: func(e *crashEnv) func(*http.Request) bool {
			// The read-back after the write: the publish is confirmed,
			// activation not yet journaled.
			wrote := false
			return func(r *http.Request) bool {
				if r.Method == "PUT" && r.URL.Path == vaultData(e) {
					wrote = true
					return false
				}
				return wrote && r.Method == "GET" && r.URL.Path == vaultData(e)
			}
		}},
		{name: "retire", setup: func(t *testing.T, e *crashEnv) {
			time.Sleep(1100 * time.Millisecond) // the bootstrap key passes its grace
		}, after: true, match: func(*crashEnv) func(*http.Request) bool { return nth(1, isReq("DELETE", "/apiKeys/")) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newCrashEnv(t)
			e.rotate(t) // bootstrap and a first rotation
			if tt.setup != nil {
				tt.setup(t, e)
			}
			before := len(e.emu.Keys())
			ks := e.codatKS
			if tt.vault {
				ks = e.vaultKS
			}
			e.crashRun(t, ks, tt.after, tt.match(e))
			e.rotate(t) // the restart resumes or rolls back, then rotates as needed
			e.checkInvariants(t)
			if len(e.emu.Keys()) <= before && tt.name != "plan" && tt.name != "create before" {
				t.Errorf("no key was made after the crash (keys before %d, after %d)", before, len(e.emu.Keys()))
			}
			// Let every grace pass: the retirements run and still no
			// invariant breaks.
			time.Sleep(1100 * time.Millisecond)
			e.rotate(t)
			e.checkInvariants(t)
			for _, k := range e.emu.Keys() {
				if k.Origin == emulator.OriginPortal && k.Deleted != nil {
					t.Errorf("I6: portal key %s was deleted", k.ID)
				}
			}
		})
	}
}
