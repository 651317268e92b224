package rotation_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/codat-rotator/codat-rotator/codat"
	"github.com/codat-rotator/codat-rotator/codat/emulator"
	"github.com/codat-rotator/codat-rotator/internal/clock/clocktest"
	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/rotation/adapt"
	"github.com/codat-rotator/codat-rotator/store"
	"github.com/codat-rotator/codat-rotator/store/storetest"
	"github.com/codat-rotator/codat-rotator/vault"
	"github.com/codat-rotator/codat-rotator/vault/vaulttest"
)

// Test constants shared by every scenario.
const (
	targetName = "prod"
	secretPath = "codat/prod"
	prefix     = "codat-rotator-"
	grace      = 24 * time.Hour
	// retryBackoff is the engine's wait between two attempts.
	retryBackoff = time.Minute
)

// epoch is where every fake clock starts.
var epoch = time.Date(2026, 3, 2, 3, 0, 0, 0, time.UTC)

// fakeClock is a mutable clock shared by the engine and the emulator.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward and returns the new time.
func (c *fakeClock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

// Set moves the clock to t.
func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// sleepRecorder is a Sleep that records and returns at once.
type sleepRecorder = clocktest.Sleeper

// syncBuffer is a bytes.Buffer safe for a slog handler and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// rawKeys collects every raw Codat key seen on the wire, so that the
// secrets scan knows what to look for.
type rawKeys struct {
	mu   sync.Mutex
	keys map[string]bool
}

func (k *rawKeys) add(raw string) {
	if raw == "" {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.keys == nil {
		k.keys = map[string]bool{}
	}
	k.keys[raw] = true
}

func (k *rawKeys) list() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]string, 0, len(k.keys))
	for raw := range k.keys {
		out = append(out, raw)
	}
	sort.Strings(out)
	return out
}

// addFromJSON records every "apiKey" string in a JSON document.
func (k *rawKeys) addFromJSON(body []byte) {
	var v any
	if json.Unmarshal(body, &v) != nil {
		return
	}
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for name, f := range v {
				if s, ok := f.(string); ok && name == "apiKey" {
					k.add(s)
				}
				walk(f)
			}
		case []any:
			for _, f := range v {
				walk(f)
			}
		}
	}
	walk(v)
}

// keyCapture sits in front of the emulator and records the raw keys in
// every successful answer: the keys made by POST /apiKeys and those
// repeated by listings.
type keyCapture struct {
	next http.Handler
	keys *rawKeys

	mu sync.Mutex
	// afterCreate, when set, runs once a key was made and its answer
	// sent: a test arms faults for the calls that follow.
	afterCreate func()
}

func (c *keyCapture) setAfterCreate(fn func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.afterCreate = fn
}

func (c *keyCapture) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tw := &teeWriter{ResponseWriter: w, status: http.StatusOK}
	c.next.ServeHTTP(tw, r)
	if tw.status < 300 {
		c.keys.addFromJSON(tw.buf.Bytes())
	}
	if r.Method == http.MethodPost && r.URL.Path == "/apiKeys" && tw.status == http.StatusCreated {
		c.mu.Lock()
		fn := c.afterCreate
		c.mu.Unlock()
		if fn != nil {
			fn()
		}
	}
}

type teeWriter struct {
	http.ResponseWriter
	status int
	buf    bytes.Buffer
}

func (w *teeWriter) WriteHeader(status int) {
	w.status = status
	w.ResponseWriter.WriteHeader(status)
}

func (w *teeWriter) Write(p []byte) (int, error) {
	w.buf.Write(p)
	return w.ResponseWriter.Write(p)
}

// proxyMode is what the Vault proxy does to requests.
type proxyMode int

const (
	// proxyPass forwards everything.
	proxyPass proxyMode = iota
	// proxyFailWrites answers 503 to writes under the mount, forwards reads.
	proxyFailWrites
	// proxyFailAllAfterWrite forwards until the first write under the
	// mount, answers it 503 and then fails every request.
	proxyFailAllAfterWrite
	// proxyFailAll answers 503 to everything.
	proxyFailAll
	// proxyFailMetadata refuses writes of custom metadata with 403, as a
	// policy without patch on the metadata path does.
	proxyFailMetadata
)

// vaultProxy is a reverse proxy in front of the real dev server that
// plays an outage on demand.
type vaultProxy struct {
	rp    *httputil.ReverseProxy
	mount string

	mu       sync.Mutex
	mode     proxyMode
	requests int
	failed   int
}

func (p *vaultProxy) setMode(m proxyMode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode = m
}

func (p *vaultProxy) counts() (requests, failed int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.requests, p.failed
}

func (p *vaultProxy) isWrite(r *http.Request) bool {
	switch r.Method {
	case http.MethodPut, http.MethodPost, http.MethodPatch, http.MethodDelete:
		return strings.HasPrefix(r.URL.Path, "/v1/"+p.mount+"/")
	}
	return false
}

func (p *vaultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.requests++
	fail := false
	switch p.mode {
	case proxyFailWrites:
		fail = p.isWrite(r)
	case proxyFailAllAfterWrite:
		if p.isWrite(r) {
			p.mode, fail = proxyFailAll, true
		}
	case proxyFailAll:
		fail = true
	case proxyFailMetadata:
		if r.Method != http.MethodGet && strings.HasPrefix(r.URL.Path, "/v1/"+p.mount+"/metadata/") {
			p.failed++
			p.mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"errors":["1 error occurred:\n\t* permission denied\n\n"]}`))
			return
		}
	}
	if fail {
		p.failed++
	}
	p.mu.Unlock()
	if fail {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"errors":["injected outage: vault is unreachable for this test"]}`))
		return
	}
	p.rp.ServeHTTP(w, r)
}

// env is one scenario: a fake clock, the emulator over real HTTP, a
// fresh KV v2 mount on the real dev server behind a proxy, a state file
// and an engine wired to all of them.
type env struct {
	t      testing.TB
	clock  *fakeClock
	emu    *emulator.Server
	emuURL string
	// capture is the handler in front of the emulator.
	capture *keyCapture
	// client holds the emulator's initial key; WithKey derives the rest.
	client      *codat.Client
	codatSleeps *sleepRecorder
	vsrv        *vaulttest.Server
	root        *api.Client
	mount       string
	proxy       *vaultProxy
	vault       *vault.Client
	db          *store.DB
	logs        *syncBuffer
	sleeps      *sleepRecorder
	engine      *rotation.Engine
	target      rotation.Target
	raw         *rawKeys

	mu   sync.Mutex
	said []string // every error and result the engine returned
}

type envConfig struct {
	// emuMaxKeys is the emulator's enforced cap (default Codat's 10). A
	// higher one lets the over_cap violation catch a daemon that
	// overshoots.
	emuMaxKeys int
	// codatAttempts is the codat client's MaxAttempts (default 3).
	codatAttempts int
	// listOmitsRawKeys: Codat's listing leaves apiKey out.
	listOmitsRawKeys bool
}

func newEnv(tb testing.TB, cfg envConfig) *env {
	tb.Helper()
	e := &env{t: tb, clock: &fakeClock{t: epoch}, codatSleeps: &sleepRecorder{}, sleeps: &sleepRecorder{}, logs: &syncBuffer{}, raw: &rawKeys{}}

	emu, err := emulator.New(emulator.Options{Now: e.clock.Now, MaxKeys: cfg.emuMaxKeys, ListOmitsRawKeys: cfg.listOmitsRawKeys})
	if err != nil {
		tb.Fatalf("emulator.New: %v", err)
	}
	e.emu = emu
	e.raw.add(emu.InitialKey())
	e.capture = &keyCapture{next: emu, keys: e.raw}
	hs := httptest.NewServer(e.capture)
	tb.Cleanup(func() { emu.Close(); hs.Close() })
	e.emuURL = hs.URL
	attempts := cfg.codatAttempts
	if attempts == 0 {
		attempts = 3
	}
	e.client, err = codat.New(codat.Secret(emu.InitialKey()), codat.Options{
		BaseURL: hs.URL, MaxAttempts: attempts, RequestTimeout: 10 * time.Second,
		Now: e.clock.Now, Sleep: e.codatSleeps.Sleep,
	})
	if err != nil {
		tb.Fatalf("codat.New: %v", err)
	}

	e.vsrv = vaulttest.Shared(tb)
	e.root = e.vsrv.Client(tb)
	e.mount = e.vsrv.NewKV(tb)
	up, err := url.Parse(e.vsrv.Addr)
	if err != nil {
		tb.Fatal(err)
	}
	e.proxy = &vaultProxy{rp: httputil.NewSingleHostReverseProxy(up), mount: e.mount}
	ps := httptest.NewServer(e.proxy)
	tb.Cleanup(ps.Close)
	e.vault, err = vault.New(vault.Config{Address: ps.URL, Token: codat.Secret(e.vsrv.RootToken), Timeout: 10 * time.Second})
	if err != nil {
		tb.Fatalf("vault.New: %v", err)
	}

	e.db = storetest.MustOpen(tb)
	e.target = rotation.Target{
		Name:         targetName,
		Vault:        rotation.Location{Mount: e.mount, Path: secretPath},
		Prefix:       prefix,
		MaxKeys:      10,
		ReserveSlots: 1,
		Grace:        grace,
		Bootstrap:    func() (codat.Secret, error) { return codat.Secret(emu.InitialKey()), nil },
		NextRotation: func(t time.Time) time.Time { return t.Add(7 * 24 * time.Hour) },
	}
	e.engine = e.newEngine(nil)
	// Registered after the mount and the state file, so it runs before
	// they go away: every scenario is scanned for leaked secrets.
	tb.Cleanup(func() { e.checkNoSecrets(tb) })
	return e
}

// newEngine returns a fresh engine (a restarted process) on the env's
// state file. When c is set, its Codat clients and Vault crash on cue.
func (e *env) newEngine(c *crasher) *rotation.Engine {
	id, err := e.db.Identity()
	if err != nil {
		e.t.Fatalf("state file identity: %v", err)
	}
	inc, err := e.db.Incarnation()
	if err != nil {
		e.t.Fatalf("state file incarnation: %v", err)
	}
	eng := &rotation.Engine{
		Owner:  rotation.Owner{ID: id, Host: "test-host", Incarnation: inc, Known: e.db.KnownIncarnation},
		Salt:   e.db.Salt(),
		Store:  e.db,
		Vault:  adapt.Vault(e.vault),
		Codat:  func(_ string, key codat.Secret) rotation.Codat { return adapt.Codat(e.client.WithKey(key)) },
		Logger: slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:    e.clock.Now,
		Sleep:  e.sleeps.Sleep,

		Attempts:        2,
		RetryBackoff:    retryBackoff,
		VerifyAttempts:  2,
		VerifyInterval:  time.Second,
		PublishAttempts: 2,
	}
	if c != nil {
		eng.Codat = func(_ string, key codat.Secret) rotation.Codat {
			return &crashingCodat{inner: adapt.Codat(e.client.WithKey(key)), c: c}
		}
		eng.Vault = &crashingVault{inner: adapt.Vault(e.vault), c: c}
	}
	return eng
}

// names is how the target names its keys now: with the tag its state
// holds (none before its first rotation).
func (e *env) names() rotation.Names {
	st, err := e.db.Load(e.target.Name)
	if err != nil {
		e.t.Fatalf("load state: %v", err)
	}
	return rotation.NamesOf(e.target, st.Tag)
}

// record keeps what the engine said, for the secrets scan.
func (e *env) record(v any, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.said = append(e.said, fmt.Sprintf("%+v", v))
	if err != nil {
		e.said = append(e.said, err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err))
	}
}

// saidText is everything the engine returned, one item a line.
func (e *env) saidText() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return strings.Join(e.said, "\n")
}

func (e *env) rotate(opts rotation.Options) (rotation.Result, error) {
	return e.rotateWith(e.engine, opts)
}

func (e *env) rotateWith(eng *rotation.Engine, opts rotation.Options) (rotation.Result, error) {
	e.t.Helper()
	res, err := eng.Rotate(context.Background(), e.target, opts)
	e.record(res, err)
	return res, err
}

// mustRotate rotates and fails the test on error.
func (e *env) mustRotate(opts rotation.Options) rotation.Result {
	e.t.Helper()
	res, err := e.rotate(opts)
	if err != nil {
		e.t.Fatalf("Rotate(%+v): %v", opts, err)
	}
	return res
}

func (e *env) retireDue() ([]string, error) {
	e.t.Helper()
	ids, err := e.engine.RetireDue(context.Background(), e.target)
	e.record(ids, err)
	return ids, err
}

func (e *env) plan(opts rotation.Options) (rotation.Plan, error) {
	e.t.Helper()
	p, err := e.engine.Plan(context.Background(), e.target, opts)
	e.record(p, err)
	return p, err
}

// state loads the target's state.
func (e *env) state() store.Target {
	e.t.Helper()
	st, err := e.db.Load(targetName)
	if err != nil {
		e.t.Fatalf("load state: %v", err)
	}
	return st
}

// published is the secret as Vault holds it, read with the root token.
type published struct {
	Data    map[string]string
	Version int
	Custom  map[string]string
}

// served reads <mount>/data/<path> with the root client; nil when Vault
// holds no secret there.
func (e *env) served() *published {
	e.t.Helper()
	s, err := e.root.Logical().ReadWithContext(context.Background(), e.mount+"/data/"+secretPath)
	if err != nil {
		e.t.Fatalf("read %s/data/%s: %v", e.mount, secretPath, err)
	}
	if s == nil || s.Data == nil {
		return nil
	}
	p := &published{Data: map[string]string{}, Custom: map[string]string{}}
	data, _ := s.Data["data"].(map[string]any)
	if data == nil {
		return nil
	}
	for k, v := range data {
		p.Data[k] = fmt.Sprint(v)
	}
	md, _ := s.Data["metadata"].(map[string]any)
	if n, ok := md["version"].(json.Number); ok {
		v, _ := n.Int64()
		p.Version = int(v)
	}
	if cm, ok := md["custom_metadata"].(map[string]any); ok {
		for k, v := range cm {
			p.Custom[k] = fmt.Sprint(v)
		}
	}
	return p
}

// mustServe returns the published secret, failing the test if none.
func (e *env) mustServe() *published {
	e.t.Helper()
	p := e.served()
	if p == nil {
		e.t.Fatalf("vault holds no secret at %s/%s", e.mount, secretPath)
	}
	return p
}

// vaultVersion is the secret's current version, 0 when never written.
func (e *env) vaultVersion() int {
	e.t.Helper()
	md, err := e.root.KVv2(e.mount).GetMetadata(context.Background(), secretPath)
	if err != nil {
		if errors.Is(err, api.ErrSecretNotFound) {
			return 0
		}
		e.t.Fatalf("read metadata: %v", err)
	}
	return md.CurrentVersion
}

// vaultHistory returns every version's data, oldest first.
func (e *env) vaultHistory() []map[string]any {
	e.t.Helper()
	n := e.vaultVersion()
	var out []map[string]any
	for v := 1; v <= n; v++ {
		s, err := e.root.KVv2(e.mount).GetVersion(context.Background(), secretPath, v)
		if err != nil {
			e.t.Fatalf("read version %d: %v", v, err)
		}
		out = append(out, s.Data)
	}
	return out
}

// activeKeys are the emulator's keys not deleted, by id.
func (e *env) activeKeys() map[string]emulator.KeyRecord {
	out := map[string]emulator.KeyRecord{}
	for _, k := range e.emu.Keys() {
		if k.Deleted == nil {
			out[k.ID] = k
		}
	}
	return out
}

// keyRecord returns the emulator's record of id.
func (e *env) keyRecord(id string) emulator.KeyRecord {
	e.t.Helper()
	for _, k := range e.emu.Keys() {
		if k.ID == id {
			return k
		}
	}
	e.t.Fatalf("the emulator never made a key %q", id)
	return emulator.KeyRecord{}
}

// initialID is the id of the emulator's initial key.
func (e *env) initialID() string {
	e.t.Helper()
	for _, k := range e.emu.Keys() {
		if k.Origin == emulator.OriginInitial {
			return k.ID
		}
	}
	e.t.Fatal("no initial key")
	return ""
}

// apiKeys returns the keys made with POST /apiKeys, oldest first.
func (e *env) apiKeys() []emulator.KeyRecord {
	var out []emulator.KeyRecord
	for _, k := range e.emu.Keys() {
		if k.Origin == emulator.OriginAPI {
			out = append(out, k)
		}
	}
	return out
}

// eventsSince returns the emulator's events after sequence number seq.
func (e *env) eventsSince(seq int) []emulator.Event {
	return e.emu.Events(seq + 1)
}

// lastSeq is the sequence number of the newest event, 0 if none.
func (e *env) lastSeq() int {
	ev := e.emu.Events(0)
	if len(ev) == 0 {
		return 0
	}
	return ev[len(ev)-1].Seq
}

func countOps(events []emulator.Event, op string) int {
	n := 0
	for _, ev := range events {
		if ev.Op == op {
			n++
		}
	}
	return n
}

// authenticates reports whether Codat accepts raw, by listing with it.
func (e *env) authenticates(raw string) error {
	_, err := e.client.WithKey(codat.Secret(raw)).List(context.Background())
	return err
}

// portal adds a key as a person in the Portal would.
func (e *env) portal(name string) string {
	e.t.Helper()
	id, raw, err := e.emu.AddPortalKey(name)
	if err != nil {
		e.t.Fatalf("AddPortalKey(%q): %v", name, err)
	}
	e.raw.add(raw)
	return id
}

// checkInvariants checks, from the outside, what must hold whenever no
// rotation runs: Vault serves exactly one live key that Codat accepts,
// the state agrees with Codat, no unknown key carries the daemon's name
// shape, no journal is left, and the emulator saw no violation.
func (e *env) checkInvariants() {
	e.t.Helper()
	p := e.mustServe()
	active := e.activeKeys()
	servedID := p.Data[vault.FieldKeyID]
	if _, ok := active[servedID]; !ok {
		e.t.Errorf("I3: vault serves key %s, which codat does not hold", servedID)
	}
	if err := e.authenticates(p.Data[vault.FieldAPIKey]); err != nil {
		e.t.Errorf("I3: the served key does not authenticate: %v", err)
	}
	if len(active) > emulator.CodatMaxKeys {
		e.t.Errorf("I1: codat holds %d keys", len(active))
	}
	st := e.state()
	if st.Journal != nil {
		e.t.Errorf("journal left behind: %+v", *st.Journal)
	}
	var activeIDs []string
	known := map[string]bool{}
	for _, k := range st.Keys {
		if k.State == store.KeyActive {
			activeIDs = append(activeIDs, k.ID)
		}
		if k.State != store.KeyDeleted {
			known[k.ID] = true
		}
		if k.Origin.Managed() && k.State != store.KeyDeleted {
			if _, ok := active[k.ID]; !ok {
				e.t.Errorf("state holds managed key %s as %s, codat does not hold it", k.ID, k.State)
			}
		}
	}
	if len(activeIDs) != 1 || activeIDs[0] != servedID {
		e.t.Errorf("state's active keys = %v, want exactly the served key [%s]", activeIDs, servedID)
	}
	for id, k := range active {
		if e.names().Own(k.Name) && !known[id] {
			e.t.Errorf("I5: codat holds key %s named %q, unknown to the state", id, k.Name)
		}
	}
	if v := e.emu.Violations(); len(v) != 0 {
		e.t.Errorf("emulator violations: %+v", v)
	}
}

// secretNeedles returns, for every raw key the test knows of, the
// strings that must never appear outside Vault: the key, its
// Authorization header and the header's base64 alone.
func (e *env) secretNeedles() map[string]string {
	e.t.Helper()
	raws := map[string]bool{}
	for _, r := range e.raw.list() {
		raws[r] = true
	}
	for _, data := range e.vaultHistory() {
		if s, ok := data[vault.FieldAPIKey].(string); ok {
			raws[s] = true
		}
	}
	needles := map[string]string{}
	for r := range raws {
		b64 := base64.StdEncoding.EncodeToString([]byte(r))
		needles[r] = "raw key"
		needles["Basic "+b64] = "authorization header"
		needles[strings.TrimRight(b64, "=")] = "base64 of a key"
	}
	return needles
}

// checkNoSecrets scans the logs, everything the engine returned and the
// raw bytes of the state file for every key ever issued (I7). It returns
// how many raw keys it looked for.
func (e *env) checkNoSecrets(tb testing.TB) int {
	tb.Helper()
	needles := e.secretNeedles()
	file, err := os.ReadFile(e.db.Path())
	if err != nil {
		tb.Errorf("read state file: %v", err)
	}
	said := e.saidText()
	hay := map[string]string{"logs": e.logs.String(), "errors and results": said, "state file": string(file)}
	for where, h := range hay {
		for needle, what := range needles {
			if strings.Contains(h, needle) {
				tb.Errorf("I7: a %s appears in the %s", what, where)
			}
		}
	}
	return len(needles) / 3
}

// crashSignal is the panic value of a simulated crash.
type crashSignal struct{ at string }

// call is one call the engine makes through the crashing wrappers.
type call struct {
	svc   string // "codat" or "vault"
	op    string // list, create, delete; read, write, check-mount
	after bool   // the call has been made (its side effect happened)
}

// crasher simulates a crash of the process at the first call matching
// at: the engine's goroutine panics, so no error path of the engine runs,
// as if the process died. Only the state file and the side effects
// already made survive.
type crasher struct {
	mu      sync.Mutex
	at      func(call, *crasher) bool
	fired   bool
	created bool // a create has returned
	calls   []call
}

func (c *crasher) hit(cl call) {
	c.mu.Lock()
	c.calls = append(c.calls, cl)
	if cl.svc == "codat" && cl.op == "create" && cl.after {
		c.created = true
	}
	fire := !c.fired && c.at(cl, c)
	if fire {
		c.fired = true
	}
	c.mu.Unlock()
	if fire {
		panic(crashSignal{at: fmt.Sprintf("%s %s (after=%v)", cl.svc, cl.op, cl.after)})
	}
}

type crashingCodat struct {
	inner rotation.Codat
	c     *crasher
}

func (w *crashingCodat) List(ctx context.Context) ([]rotation.Key, error) {
	w.c.hit(call{svc: "codat", op: "list"})
	keys, err := w.inner.List(ctx)
	w.c.hit(call{svc: "codat", op: "list", after: true})
	return keys, err
}

func (w *crashingCodat) Create(ctx context.Context, name string) (rotation.Key, error) {
	w.c.hit(call{svc: "codat", op: "create"})
	k, err := w.inner.Create(ctx, name)
	w.c.hit(call{svc: "codat", op: "create", after: true})
	return k, err
}

func (w *crashingCodat) Delete(ctx context.Context, id string) error {
	w.c.hit(call{svc: "codat", op: "delete"})
	err := w.inner.Delete(ctx, id)
	w.c.hit(call{svc: "codat", op: "delete", after: true})
	return err
}

type crashingVault struct {
	inner rotation.Vault
	c     *crasher
}

func (w *crashingVault) CheckMount(ctx context.Context, loc rotation.Location) error {
	w.c.hit(call{svc: "vault", op: "check-mount"})
	return w.inner.CheckMount(ctx, loc)
}

func (w *crashingVault) Read(ctx context.Context, loc rotation.Location) (rotation.Current, error) {
	w.c.hit(call{svc: "vault", op: "read"})
	cur, err := w.inner.Read(ctx, loc)
	w.c.hit(call{svc: "vault", op: "read", after: true})
	return cur, err
}

func (w *crashingVault) Write(ctx context.Context, loc rotation.Location, s rotation.Published, cas int, md map[string]string) (int, error) {
	w.c.hit(call{svc: "vault", op: "write"})
	v, err := w.inner.Write(ctx, loc, s, cas, md)
	w.c.hit(call{svc: "vault", op: "write", after: true})
	return v, err
}

func (w *crashingVault) History(ctx context.Context, loc rotation.Location) ([]rotation.Current, error) {
	w.c.hit(call{svc: "vault", op: "history"})
	return w.inner.History(ctx, loc)
}

func (w *crashingVault) SetMetadata(ctx context.Context, loc rotation.Location, md map[string]string) error {
	w.c.hit(call{svc: "vault", op: "set-metadata"})
	err := w.inner.SetMetadata(ctx, loc, md)
	w.c.hit(call{svc: "vault", op: "set-metadata", after: true})
	return err
}

// rotateUntilCrash runs a rotation on a crashing engine and reports
// whether it crashed (and where).
func (e *env) rotateUntilCrash(c *crasher, opts rotation.Options) (at string, crashed bool) {
	e.t.Helper()
	defer func() {
		if r := recover(); r != nil {
			sig, ok := r.(crashSignal)
			if !ok {
				panic(r)
			}
			at, crashed = sig.at, true
		}
	}()
	res, err := e.newEngine(c).Rotate(context.Background(), e.target, opts)
	e.record(res, err)
	return "", false
}

// stateKey returns the state's record of id, nil when it has none.
func (e *env) stateKey(id string) *store.Key {
	e.t.Helper()
	st := e.state()
	return st.Key(id)
}
