package admin_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/admin"
	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/secret"
	"github.com/codat-rotator/codat-rotator/store"
	"github.com/codat-rotator/codat-rotator/store/storetest"
)

const rawKey = "raw-key-never-printed"

// fakeVault serves one secret per path.
type fakeVault struct {
	secrets map[rotation.Location]*rotation.Published
}

func (v fakeVault) CheckMount(context.Context, rotation.Location) error { return nil }
func (v fakeVault) Read(_ context.Context, loc rotation.Location) (rotation.Current, error) {
	s := v.secrets[loc]
	if s == nil {
		return rotation.Current{}, nil
	}
	return rotation.Current{Secret: s, Version: 1}, nil
}
func (v fakeVault) Write(context.Context, rotation.Location, rotation.Published, int, map[string]string) (int, error) {
	return 0, errors.New("fake vault: read-only")
}
func (v fakeVault) History(ctx context.Context, loc rotation.Location) ([]rotation.Current, error) {
	cur, err := v.Read(ctx, loc)
	if cur.Secret == nil {
		return nil, err
	}
	return []rotation.Current{cur}, err // one version, the current one
}
func (v fakeVault) SetMetadata(context.Context, rotation.Location, map[string]string) error {
	return errors.New("fake vault: read-only")
}

// fakeCodat lists keys and changes nothing.
type fakeCodat struct{ keys []rotation.Key }

func (c fakeCodat) List(context.Context) ([]rotation.Key, error) { return c.keys, nil }
func (c fakeCodat) Create(context.Context, string) (rotation.Key, error) {
	return rotation.Key{}, errors.New("fake codat: read-only")
}
func (c fakeCodat) Delete(context.Context, string) error { return errors.New("fake codat: read-only") }

var (
	prod = rotation.Target{Name: "prod", Vault: rotation.Location{Mount: "secret", Path: "codat/prod"}, Prefix: "cr-", MaxKeys: 10, ReserveSlots: 1, Grace: time.Hour}
	dev  = rotation.Target{Name: "dev", Vault: rotation.Location{Mount: "secret", Path: "codat/dev"}, Prefix: "cr-", MaxKeys: 5, ReserveSlots: 0, Grace: time.Hour}
)

// newLocal returns a Local over a fresh state file: prod rotated once
// (k2 served, k1 retiring), dev never.
func newLocal(tb testing.TB) (*admin.Local, *store.DB, *bytes.Buffer) {
	tb.Helper()
	db := storetest.MustOpen(tb)
	err := db.Update("prod", func(st *store.Target) error {
		st.Keys = []store.Key{
			{ID: "k1", Name: "bootstrap", Origin: store.OriginAdopted, State: store.KeyRetiring, DeleteAfter: t0.Add(time.Hour)},
			{ID: "k2", Name: "cr-20260302T030000Z-abc123", Origin: store.OriginCreated, State: store.KeyActive, Created: t0, Published: t0,
				Fingerprint: rotation.Fingerprint(nil, rawKey)}, // the daemon published it: its value is known
		}
		st.CodatKeys, st.LastResult, st.LastSuccess = 3, "success", t0
		st.Halted, st.HaltReason, st.HaltedAt = true, "vault is sealed", t0
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	listing := []rotation.Key{
		{ID: "k1", Name: "bootstrap", APIKey: secret.Value("k1-raw-value-not-the-served-one")},
		{ID: "k2", Name: "cr-20260302T030000Z-abc123", Created: t0},
		{ID: "p1", Name: "made-by-a-person"},
	}
	var logs bytes.Buffer
	eng := &rotation.Engine{
		Store: db,
		Vault: fakeVault{secrets: map[rotation.Location]*rotation.Published{prod.Vault: {APIKey: rawKey, KeyID: "k2"}}},
		Codat: func(string, secret.Value) rotation.Codat { return fakeCodat{keys: listing} },
		Now:   func() time.Time { return t0.Add(time.Minute) },
	}
	return &admin.Local{
		Engine:  eng,
		Targets: func() []rotation.Target { return []rotation.Target{prod, dev} },
		Next:    func(name string) time.Time { return t0.Add(24 * time.Hour) },
		Logger:  slog.New(slog.NewTextHandler(&logs, nil)),
		Now:     func() time.Time { return t0.Add(time.Minute) },
	}, db, &logs
}

func TestLocalStatus(t *testing.T) {
	l, _, _ := newLocal(t)
	rep, err := l.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Daemon || len(rep.Targets) != 2 {
		t.Fatalf("got %+v, want two targets, not from a daemon", rep)
	}
	p, d := rep.Targets[0], rep.Targets[1]
	if p.Name != "prod" || p.Vault != "secret/codat/prod" || p.CurrentKey == nil || p.CurrentKey.ID != "k2" || p.CurrentKey.AgeSeconds != 60 {
		t.Errorf("prod: got %+v (current %+v), want k2 served for 60s", p, p.CurrentKey)
	}
	if len(p.Retiring) != 1 || p.Retiring[0].ID != "k1" || !p.Retiring[0].DeleteAfter.Equal(t0.Add(time.Hour)) {
		t.Errorf("prod retiring: got %+v, want k1 until %v", p.Retiring, t0.Add(time.Hour))
	}
	if !p.Halted || p.HaltReason != "vault is sealed" || p.KeysUsed != 3 || p.MaxKeys != 10 || p.ReserveSlots != 1 || !p.NextRotation.Equal(t0.Add(24*time.Hour)) {
		t.Errorf("prod: got %+v", p)
	}
	if d.CurrentKey != nil || d.Retiring == nil || len(d.Retiring) != 0 || d.LastSuccess != nil {
		t.Errorf("dev, never rotated: got %+v", d)
	}
}

func TestLocalKeys(t *testing.T) {
	l, _, _ := newLocal(t)
	rep, err := l.Keys(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Targets) != 2 {
		t.Fatalf("got %d targets, want 2", len(rep.Targets))
	}
	var got []string
	for _, k := range rep.Targets[0].Keys {
		got = append(got, k.ID+"/"+k.Marking+"/"+k.State+"/"+map[bool]string{true: "served", false: "-"}[k.Served])
	}
	if want := "k1/adopted/retiring/- k2/managed/active/served p1/foreign//-"; strings.Join(got, " ") != want {
		t.Errorf("prod keys: got %s, want %s", strings.Join(got, " "), want)
	}
	if d := rep.Targets[1]; !strings.HasPrefix(d.Error, "secret/codat/dev holds no secret yet, so there is no key to list Codat's keys with: the first rotation publishes the bootstrap key") || d.Keys == nil {
		t.Errorf("dev: got %+v, want the error and an empty list", d)
	}
	if got, want := rep.Failed(), []string{"dev"}; len(got) != 1 || got[0] != want[0] {
		t.Errorf("failed: got %v, want %v", got, want)
	}
	var text bytes.Buffer
	rep.WriteText(&text)
	if strings.Contains(text.String(), rawKey) {
		t.Error("keys text printed a raw key")
	}

	one, err := l.Keys(context.Background(), "dev")
	if err != nil || len(one.Targets) != 1 || one.Targets[0].Name != "dev" {
		t.Errorf("keys of dev: got %+v, %v", one, err)
	}
}

func TestLocalUnknownTarget(t *testing.T) {
	l, _, _ := newLocal(t)
	ctx := context.Background()
	_, kerr := l.Keys(ctx, "nope")
	_, rerr := l.Rotate(ctx, admin.RotateRequest{Target: "nope"})
	for name, err := range map[string]error{"keys": kerr, "rotate": rerr, "resume": resumeErr(l.Resume(ctx, "nope"))} {
		if !errors.Is(err, admin.ErrNoSuchTarget) || err.Error() != `--target "nope": no such target (configured: prod, dev)` {
			t.Errorf("%s: got %v, want ErrNoSuchTarget naming the configured targets", name, err)
		}
	}
	if _, err := l.Resume(ctx, ""); err == nil {
		t.Error("resume without a target: no error")
	}
}

func resumeErr(_ admin.ResumeReport, err error) error { return err }

// TestLocalResume: resume clears a halt and says so; resuming a target
// that is not halted says that instead (issue 16), and logs nothing.
func TestLocalResume(t *testing.T) {
	l, db, logs := newLocal(t)
	rep, err := l.Resume(context.Background(), "prod")
	if err != nil {
		t.Fatal(err)
	}
	if rep.WasHalted == nil || !*rep.WasHalted {
		t.Errorf("resume of a halted target answered %+v, want was_halted true", rep)
	}
	st, err := db.Load("prod")
	if err != nil {
		t.Fatal(err)
	}
	if st.Halted || st.HaltReason != "" {
		t.Errorf("after resume: halted %v (%q), want cleared", st.Halted, st.HaltReason)
	}
	if !strings.Contains(logs.String(), `msg="target resumed by an operator" target=prod`) {
		t.Errorf("resume not logged:\n%s", logs)
	}
	logs.Reset()
	rep, err = l.Resume(context.Background(), "prod")
	if err != nil {
		t.Fatal(err)
	}
	if rep.WasHalted == nil || *rep.WasHalted {
		t.Errorf("resume of a target no longer halted answered %+v, want was_halted false", rep)
	}
	if logs.Len() != 0 {
		t.Errorf("resuming a target that is not halted logged:\n%s", logs)
	}
}

func TestLocalRotate(t *testing.T) {
	l, _, _ := newLocal(t)
	var mu sync.Mutex
	var asked []string
	l.RotateTarget = func(_ context.Context, t rotation.Target, opts rotation.Options) (rotation.Result, error) {
		mu.Lock()
		asked = append(asked, t.Name)
		mu.Unlock()
		if !opts.Manual || !opts.Emergency || opts.Revoke != "" {
			return rotation.Result{}, errors.New("wrong options")
		}
		if t.Name == "dev" {
			return rotation.Result{}, errors.New("rotate dev: no room for a new key")
		}
		return rotation.Result{RotationID: "r-1", NewKey: store.Key{ID: "k3", Name: "cr-new", Origin: store.OriginCreated, State: store.KeyActive},
			Retiring: []store.Key{{ID: "k2", DeleteAfter: t0}}, Deleted: []string{"k1"}}, nil
	}
	rep, err := l.Rotate(context.Background(), admin.RotateRequest{Emergency: true})
	if err != nil {
		t.Fatal(err)
	}
	// The fleet rotates side by side; the report keeps the config's order.
	slices.Sort(asked)
	if strings.Join(asked, ",") != "dev,prod" || len(rep.Results) != 2 || rep.Results[0].Target != "prod" || rep.Results[1].Target != "dev" {
		t.Fatalf("rotated %v, report %+v; want both, reported prod then dev", asked, rep)
	}
	p, d := rep.Results[0], rep.Results[1]
	if !p.Succeeded || p.Error != "" || p.Result == nil || p.Result.RotationID != "r-1" || p.Result.NewKey == nil || p.Result.NewKey.ID != "k3" ||
		len(p.Result.Retiring) != 1 || !p.Result.Retiring[0].DeleteAfter.Equal(t0) || len(p.Result.Deleted) != 1 || p.Plan != nil {
		t.Errorf("prod: got %+v (result %+v)", p, p.Result)
	}
	if d.Succeeded || d.Error != "rotate dev: no room for a new key" || d.Result == nil || d.Result.NewKey != nil {
		t.Errorf("dev: got %+v", d)
	}
	if got := rep.Failed(); len(got) != 1 || got[0] != "dev" {
		t.Errorf("failed: got %v, want [dev]", got)
	}
	var text bytes.Buffer
	rep.WriteText(&text)
	for _, want := range []string{
		"prod: rotated: key k3 (cr-new) published to secret/codat/prod\n",
		"prod: retiring key k2, to be deleted after 2026-03-02T03:00:00Z\n",
		"prod: deleted key k1\n",
		"dev: failed: rotate dev: no room for a new key\n",
	} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, text.String())
		}
	}
}

// TestLocalDryRun: a dry run plans with the engine and rotates nothing.
func TestLocalDryRun(t *testing.T) {
	l, _, _ := newLocal(t)
	l.RotateTarget = func(context.Context, rotation.Target, rotation.Options) (rotation.Result, error) {
		t.Error("a dry run rotated")
		return rotation.Result{}, nil
	}
	rep, err := l.Rotate(context.Background(), admin.RotateRequest{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	p, d := rep.Results[0], rep.Results[1]
	if !p.Succeeded || p.Plan == nil || p.Result != nil || p.Plan.ServedKeyID != "k2" || p.Plan.CodatKeys != 3 || p.Plan.Foreign != 1 || p.Plan.Limit != 9 {
		t.Errorf("prod plan: got %+v (plan %+v)", p, p.Plan)
	}
	if p.Plan != nil {
		// A manual rotation runs although the target is halted.
		if p.Plan.Blocked != "" {
			t.Errorf("prod plan: blocked %q, want not blocked", p.Plan.Blocked)
		}
		retire := map[string]time.Time{}
		for _, k := range p.Plan.Retire {
			retire[k.ID] = *k.DeleteAfter
		}
		if got, want := retire["k2"], t0.Add(time.Minute+time.Hour); !got.Equal(want) {
			t.Errorf("prod plan: k2 retires at %v, want %v (now + grace)", got, want)
		}
	}
	if d.Succeeded || !strings.HasPrefix(d.Error, "cannot plan: ") || d.Plan != nil {
		t.Errorf("dev plan (no secret, no bootstrap): got %+v", d)
	}
	var text bytes.Buffer
	rep.WriteText(&text)
	for _, want := range []string{"prod: dry run, nothing changed\n", "  secret/codat/prod serves key k2\n", "  codat holds 3 keys (1 foreign); this rotation may hold 9\n"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, text.String())
		}
	}
}

// TestLocalOverSocket: the daemon's arrangement, a Local served on the
// socket; engine results reach the wire as snake_case documents.
func TestLocalOverSocket(t *testing.T) {
	l, _, _ := newLocal(t)
	l.RotateTarget = func(context.Context, rotation.Target, rotation.Options) (rotation.Result, error) {
		return rotation.Result{RotationID: "r-1", NewKey: store.Key{ID: "k3", Created: t0},
			Retiring: []store.Key{{ID: "k2", DeleteAfter: t0}}}, nil
	}
	path := serve(t, l)
	c := dial(t, path)
	st, err := c.Status(context.Background())
	if err != nil || !st.Daemon || len(st.Targets) != 2 || st.Targets[0].CurrentKey == nil || st.Targets[0].CurrentKey.ID != "k2" {
		t.Errorf("status through the socket: got %+v, %v", st, err)
	}
	if _, err := c.Keys(context.Background(), "nope"); err == nil || !strings.Contains(err.Error(), "no such target") {
		t.Errorf("keys of an unknown target: got %v", err)
	}

	resp := rawRequest(t, path, "POST", "/v1/rotate", `{"target":"prod"}`)
	body := string(resp.body)
	for _, want := range []string{`"rotation_id":"r-1"`, `"new_key":{"id":"k3"`, `"retiring":[{"id":"k2","delete_after":"2026-03-02T03:00:00Z"}]`} {
		if !strings.Contains(body, want) {
			t.Errorf("rotate answer lacks %s:\n%s", want, body)
		}
	}
	for _, goName := range []string{"RotationID", "NewKey", "DeleteAfter", "Recovered"} {
		if strings.Contains(body, goName) {
			t.Errorf("rotate answer carries the Go field name %s:\n%s", goName, body)
		}
	}
	keys := rawRequest(t, path, "GET", "/v1/keys?target=prod", "")
	if strings.Contains(string(keys.body), rawKey) {
		t.Error("the keys answer carries a raw key")
	}
}
