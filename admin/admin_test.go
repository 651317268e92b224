package admin_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/admin"
)

var t0 = time.Date(2026, 3, 2, 3, 0, 0, 0, time.UTC)

// fakeService answers with canned reports and records what it was asked.
type fakeService struct {
	mu     sync.Mutex
	calls  []string
	rotate admin.RotateReport
	// progress is what Rotate reports to a caller who asks for it.
	progress []admin.Progress
	status   admin.StatusReport
	keys     admin.KeysReport
	failure  error // returned by every call when set
}

func (f *fakeService) record(call string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
	return f.failure
}

func (f *fakeService) Rotate(_ context.Context, req admin.RotateRequest) (admin.RotateReport, error) {
	progress := req.Progress
	req.Progress = nil
	err := f.record(fmt.Sprintf("rotate %+v", req))
	if progress != nil && err == nil {
		for _, p := range f.progress {
			progress(p)
		}
	}
	return f.rotate, err
}

func (f *fakeService) Status(context.Context) (admin.StatusReport, error) {
	err := f.record("status")
	return f.status, err
}

func (f *fakeService) Keys(_ context.Context, target string) (admin.KeysReport, error) {
	err := f.record("keys " + target)
	return f.keys, err
}

func (f *fakeService) Resume(_ context.Context, target string) (admin.ResumeReport, error) {
	err := f.record("resume " + target)
	halted := true
	return admin.ResumeReport{Resumed: target, WasHalted: &halted}, err
}

func (f *fakeService) Takeover(_ context.Context, target string) (admin.TakeoverReport, error) {
	return admin.TakeoverReport{Target: target, Owner: "state file me", Rebuilt: []admin.KeyStatus{}, Foreign: []string{}}, f.record("takeover " + target)
}

func (f *fakeService) lastCall(tb testing.TB) string {
	tb.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) == 0 {
		tb.Fatal("the service was not called")
	}
	return f.calls[len(f.calls)-1]
}

func tp(t time.Time) *time.Time { return &t }

// canned returns a service whose reports fill every field.
func canned() *fakeService {
	key := admin.Key{ID: "k2", Name: "codat-rotator-x", Origin: "created", State: "active", Created: tp(t0), Published: tp(t0), DeleteAfter: tp(t0.Add(time.Hour))}
	journal := &admin.Journal{RotationID: "r-1", Step: "publish", Started: t0}
	return &fakeService{
		rotate: admin.RotateReport{Results: []admin.RotateEntry{
			{Target: "prod", Vault: "secret/codat/prod", Succeeded: true, Result: &admin.RotationResult{
				RotationID: "r-1", NewKey: &key, Retiring: []admin.Key{key}, Deleted: []string{"k0"}, Recovered: true, Bootstrapped: true}},
			{Target: "dev", Vault: "secret/codat/dev", Error: "no room", Plan: &admin.RotationPlan{
				Journal: journal, Bootstrap: true, ServedKeyID: "k1", CodatKeys: 3, Foreign: 1, Limit: 9, NewKeyName: "n",
				Orphans: []string{"o"}, MakeRoom: []admin.Key{key}, Retire: []admin.Key{key}, Revoke: "k9", Blocked: "halted"}},
		}},
		status: admin.StatusReport{Targets: []admin.TargetStatus{{
			Name: "prod", Vault: "secret/codat/prod",
			CurrentKey:   &admin.KeyStatus{ID: "k2", Name: "n", Origin: "created", Created: tp(t0), Published: tp(t0), AgeSeconds: 60, DeleteAfter: tp(t0)},
			Retiring:     []admin.KeyStatus{{ID: "k1", Origin: "adopted", DeleteAfter: tp(t0)}},
			NextRotation: tp(t0), LastResult: "failed", LastError: "boom", LastSuccess: tp(t0), LastAttempt: tp(t0),
			KeysUsed: 2, MaxKeys: 10, ReserveSlots: 1, Halted: true, HaltReason: "boom", Journal: journal,
		}}},
		keys: admin.KeysReport{Targets: []admin.TargetKeys{
			{Name: "prod", Keys: []admin.KeyEntry{{ID: "k2", Name: "n", Created: tp(t0), Marking: "managed", State: "active", Served: true}}},
			{Name: "dev", Keys: []admin.KeyEntry{}, Error: "vault is sealed"},
		}},
	}
}

// serve runs the admin API of svc on a socket in a temp directory and
// returns the socket's path.
func serve(tb testing.TB, svc admin.Service) string {
	tb.Helper()
	return serveReload(tb, svc, nil)
}

// serveReload is serve with a daemon's reload behind POST /v1/reload.
func serveReload(tb testing.TB, svc admin.Service, reload admin.Reload) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "run", "admin.sock")
	l, err := admin.Listen(path)
	if err != nil {
		tb.Fatal(err)
	}
	srv := admin.NewServer(admin.NewHandler(svc, reload, "v-test"), slog.New(slog.DiscardHandler))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	tb.Cleanup(func() {
		srv.Close()
		<-done
	})
	return path
}

func dial(tb testing.TB, path string) *admin.Client {
	tb.Helper()
	c, err := admin.Dial(context.Background(), path)
	if err != nil {
		tb.Fatalf("dial %s: %v", path, err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

func TestListenMode(t *testing.T) {
	path := serve(t, canned())
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode: got %v, want a socket with 0600", fi.Mode())
	}
	if _, err := admin.Listen(path); err == nil || !strings.Contains(err.Error(), "another daemon answers") {
		t.Errorf("listen on a live socket: got %v, want refused", err)
	}
}

func TestListenReplacesStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin.sock")
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false) // a crash leaves the file
	stale.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("the stale socket is not there to replace: %v", err)
	}
	l, err := admin.Listen(path)
	if err != nil {
		t.Fatalf("listen over a stale socket: %v", err)
	}
	l.Close()

	file := filepath.Join(t.TempDir(), "not-a-socket")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Listen(file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("listen over a regular file: got %v, want refused", err)
	}
}

func TestDialWithoutDaemon(t *testing.T) {
	dir := t.TempDir()
	for name, path := range map[string]string{"disabled": "", "no socket": filepath.Join(dir, "none.sock")} {
		if c, err := admin.Dial(context.Background(), path); err == nil {
			c.Close()
			t.Errorf("%s: dial succeeded, want an error", name)
		}
	}
	// A socket file nobody answers on.
	path := filepath.Join(dir, "dead.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	if c, err := admin.Dial(context.Background(), path); err == nil {
		c.Close()
		t.Error("dead socket: dial succeeded, want an error")
	}
}

// TestClientRoundTrip: every call of the Client reaches the served
// Service with its arguments, and its answer comes back whole.
func TestClientRoundTrip(t *testing.T) {
	svc := canned()
	c := dial(t, serve(t, svc))
	ctx := context.Background()

	p, err := c.Ping(ctx)
	if err != nil || p.PID != os.Getpid() || p.Version != "v-test" {
		t.Errorf("ping: got %+v, %v; want pid %d, version v-test", p, err, os.Getpid())
	}

	req := admin.RotateRequest{Target: "prod", Emergency: true, Revoke: "k0", DryRun: true}
	rot, err := c.Rotate(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := svc.lastCall(t), fmt.Sprintf("rotate %+v", req); got != want {
		t.Errorf("rotate reached the service as %q, want %q", got, want)
	}
	if !reflect.DeepEqual(rot, svc.rotate) {
		t.Errorf("rotate:\ngot  %+v\nwant %+v", rot, svc.rotate)
	}

	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := svc.status
	want.Daemon = true // the socket's answer is the daemon's
	if !reflect.DeepEqual(st, want) {
		t.Errorf("status:\ngot  %+v\nwant %+v", st, want)
	}

	keys, err := c.Keys(ctx, "a b&c")
	if err != nil {
		t.Fatal(err)
	}
	if got := svc.lastCall(t); got != "keys a b&c" {
		t.Errorf("keys reached the service as %q, want the target escaped and back", got)
	}
	if !reflect.DeepEqual(keys, svc.keys) {
		t.Errorf("keys:\ngot  %+v\nwant %+v", keys, svc.keys)
	}

	if rep, err := c.Resume(ctx, "prod"); err != nil {
		t.Fatal(err)
	} else if rep.Resumed != "prod" || rep.WasHalted == nil || !*rep.WasHalted {
		t.Errorf("resume answered %+v, want prod, was halted", rep)
	}
	if got := svc.lastCall(t); got != "resume prod" {
		t.Errorf("resume reached the service as %q", got)
	}
}

// TestClientReload: a reload's report comes back whole, and a refused
// reload is an error in the daemon's words; a server without a reload
// says so rather than pretending.
func TestClientReload(t *testing.T) {
	var refuse error
	calls := 0
	reload := func(context.Context) (admin.ReloadReport, error) {
		calls++
		if refuse != nil {
			return admin.ReloadReport{}, refuse
		}
		return admin.ReloadReport{Targets: []string{"dev", "prod"}, NeedRestart: []string{"listen"}}, nil
	}
	c := dial(t, serveReload(t, canned(), reload))
	ctx := context.Background()

	rep, err := c.Reload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := (admin.ReloadReport{Targets: []string{"dev", "prod"}, NeedRestart: []string{"listen"}}); !reflect.DeepEqual(rep, want) {
		t.Errorf("reload: got %+v, want %+v", rep, want)
	}

	refuse = errors.New("config reload failed; keeping the running config: targets[0].grace: 48h0m0s is too long")
	_, err = c.Reload(ctx)
	if err == nil || !strings.Contains(err.Error(), "daemon: config reload failed; keeping the running config: targets[0].grace") {
		t.Errorf("refused reload: got %v, want the daemon's reason", err)
	}
	if calls != 2 {
		t.Errorf("reload called %d times, want 2", calls)
	}

	_, err = dial(t, serve(t, canned())).Reload(ctx)
	if err == nil || !strings.Contains(err.Error(), "cannot reload") {
		t.Errorf("reload of a server without one: got %v, want it to say it cannot", err)
	}
}

// TestClientErrors: the service's errors come back as the daemon's, an
// unknown target as a bad request.
func TestClientErrors(t *testing.T) {
	svc := canned()
	path := serve(t, svc)
	c := dial(t, path)
	ctx := context.Background()

	svc.failure = fmt.Errorf("--target %q: %w (configured: prod)", "nope", admin.ErrNoSuchTarget)
	calls := map[string]func() error{
		"rotate": func() error { _, err := c.Rotate(ctx, admin.RotateRequest{Target: "nope"}); return err },
		"status": func() error { _, err := c.Status(ctx); return err },
		"keys":   func() error { _, err := c.Keys(ctx, "nope"); return err },
		"resume": func() error { _, err := c.Resume(ctx, "nope"); return err },
	}
	for name, call := range calls {
		err := call()
		if err == nil || !strings.HasPrefix(err.Error(), "daemon: ") || !strings.Contains(err.Error(), `--target "nope": no such target (configured: prod)`) {
			t.Errorf("%s: got %v, want the daemon's error naming the target", name, err)
		}
		if !errors.Is(err, admin.ErrNoSuchTarget) {
			t.Errorf("%s: %v does not match ErrNoSuchTarget: the daemon's answer and the in-process one differ", name, err)
		}
	}
	if _, err := c.Resume(ctx, ""); err == nil || err.Error() != "daemon: resume: name one target" {
		t.Errorf("resume without a target: got %v", err)
	}

	status := func(method, target, body string) int {
		t.Helper()
		resp := rawRequest(t, path, method, target, body)
		return resp.status
	}
	if got := status("POST", "/v1/rotate", `{"target":"nope"}`); got != http.StatusBadRequest {
		t.Errorf("rotate of an unknown target: status %d, want 400", got)
	}
	if got := status("POST", "/v1/rotate", `{"Target":"prod"}`); got != http.StatusBadRequest {
		t.Errorf("rotate with an unknown field: status %d, want 400", got)
	}
	svc.failure = errors.New("state file: disk full")
	if got := status("GET", "/v1/status", ""); got != http.StatusInternalServerError {
		t.Errorf("status that fails: status %d, want 500", got)
	}
	if _, err := c.Status(ctx); err == nil || err.Error() != "daemon: state file: disk full" {
		t.Errorf("status that fails: got %v", err)
	}
}

type rawResponse struct {
	status int
	body   []byte
}

// rawRequest speaks HTTP on the socket without the Client.
func rawRequest(tb testing.TB, socket, method, target, body string) rawResponse {
	tb.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequest(method, "http://admin"+target, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		tb.Errorf("%s %s: content type %q, want application/json", method, target, ct)
	}
	return rawResponse{resp.StatusCode, raw}
}

var snakeCase = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// jsonKeys returns every object key in a JSON document, with its path.
func jsonKeys(v any, path string, out map[string]string) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			out[path+"."+k] = k
			jsonKeys(e, path+"."+k, out)
		}
	case []any:
		for i, e := range v {
			jsonKeys(e, fmt.Sprintf("%s[%d]", path, i), out)
		}
	}
}

// TestWireJSONIsSnakeCase: every key of every document on the socket is
// snake_case; nothing of the engine's Go field names leaks through.
// TestClientRotateStreamsProgress (issue 16): a rotate that asks for
// progress gets each retry as the daemon reports it, in order, then the
// report; an unknown target is refused before anything streams, as
// ErrNoSuchTarget.
func TestClientRotateStreamsProgress(t *testing.T) {
	svc := canned()
	svc.progress = []admin.Progress{
		{Target: "prod", Next: 2, Attempts: 3, WaitSeconds: 30, Error: "vault unreachable"},
		{Target: "prod", Next: 3, Attempts: 3, WaitSeconds: 60, Error: "vault unreachable"},
	}
	c := dial(t, serve(t, svc))
	var got []string
	rep, err := c.Rotate(context.Background(), admin.RotateRequest{Target: "prod", Progress: func(p admin.Progress) { got = append(got, p.String()) }})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"prod: attempt 2 of 3, retrying in 30s: vault unreachable", "prod: attempt 3 of 3, retrying in 1m0s: vault unreachable"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("progress lines:\ngot  %q\nwant %q", got, want)
	}
	if !reflect.DeepEqual(rep, svc.rotate) {
		t.Errorf("report after the stream:\ngot  %+v\nwant %+v", rep, svc.rotate)
	}
	svc.failure = fmt.Errorf("--target %q: %w (configured: prod)", "nope", admin.ErrNoSuchTarget)
	got = nil
	_, err = c.Rotate(context.Background(), admin.RotateRequest{Target: "nope", Progress: func(p admin.Progress) { got = append(got, p.String()) }})
	if !errors.Is(err, admin.ErrNoSuchTarget) || len(got) != 0 {
		t.Errorf("unknown target: %v with %d progress lines, want ErrNoSuchTarget and none", err, len(got))
	}
}

func TestWireJSONIsSnakeCase(t *testing.T) {
	path := serve(t, canned())
	requests := []struct{ method, target, body string }{
		{"GET", "/v1/ping", ""},
		{"GET", "/v1/status", ""},
		{"GET", "/v1/keys?target=prod", ""},
		{"POST", "/v1/rotate", `{"target":"prod","emergency":true,"revoke":"k0","dry_run":true}`},
		{"POST", "/v1/resume", `{"target":"prod"}`},
	}
	for _, r := range requests {
		t.Run(r.method+" "+r.target, func(t *testing.T) {
			resp := rawRequest(t, path, r.method, r.target, r.body)
			if resp.status != http.StatusOK {
				t.Fatalf("status %d: %s", resp.status, resp.body)
			}
			var doc any
			if err := json.Unmarshal(resp.body, &doc); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, resp.body)
			}
			keys := map[string]string{}
			jsonKeys(doc, "", keys)
			if len(keys) == 0 {
				t.Fatalf("no keys in %s", resp.body)
			}
			for p, k := range keys {
				if !snakeCase.MatchString(k) {
					t.Errorf("%s: key %q is not snake_case", p, k)
				}
			}
		})
	}

	// The fields the old wire mixed up, by their exact names.
	rot := string(rawRequest(t, path, "POST", "/v1/rotate", `{}`).body)
	for _, want := range []string{`"rotation_id":"r-1"`, `"new_key":{"id":"k2"`, `"delete_after":"2026-03-02T04:00:00Z"`,
		`"make_room":[`, `"served_key_id":"k1"`, `"rotation_in_flight":{"rotation_id":"r-1","step":"publish"`, `"new_key_name":"n"`} {
		if !strings.Contains(rot, want) {
			t.Errorf("rotate answer lacks %s:\n%s", want, rot)
		}
	}
	st := string(rawRequest(t, path, "GET", "/v1/status", "").body)
	for _, want := range []string{`"daemon":true`, `"current_key":{"id":"k2"`, `"age_seconds":60`, `"keys_used":2`, `"rotation_in_flight":{`} {
		if !strings.Contains(st, want) {
			t.Errorf("status answer lacks %s:\n%s", want, st)
		}
	}
}
