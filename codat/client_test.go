package codat_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/codat"
	"github.com/codat-rotator/codat-rotator/codat/emulator"
	"github.com/codat-rotator/codat-rotator/internal/clock/clocktest"
	"github.com/codat-rotator/codat-rotator/secret"
)

// env is an emulator over real HTTP and a client holding its first key.
type env struct {
	emu    *emulator.Server
	srv    *httptest.Server
	client *codat.Client
	sleeps *clocktest.Sleeper
}

func newEnv(tb testing.TB, eopts emulator.Options, copts codat.Options) *env {
	tb.Helper()
	emu, err := emulator.New(eopts)
	if err != nil {
		tb.Fatal(err)
	}
	srv := httptest.NewServer(emu)
	tb.Cleanup(func() {
		emu.Close()
		srv.Close()
	})
	sl := &clocktest.Sleeper{}
	copts.BaseURL = srv.URL
	if copts.Sleep == nil {
		copts.Sleep = sl.Sleep
	}
	c, err := codat.New(codat.Secret(emu.InitialKey()), copts)
	if err != nil {
		tb.Fatal(err)
	}
	return &env{emu: emu, srv: srv, client: c, sleeps: sl}
}

// requests counts the emulator's events for one operation.
func (e *env) requests(op string) int {
	n := 0
	for _, ev := range e.emu.Events(0) {
		if ev.Op == op {
			n++
		}
	}
	return n
}

func TestListCreateDelete(t *testing.T) {
	e := newEnv(t, emulator.Options{}, codat.Options{})
	ctx := context.Background()

	keys, err := e.client.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(keys), 1; got != want {
		t.Fatalf("keys at start: got %d, want %d", got, want)
	}
	first := keys[0]
	if first.Name != "" || first.APIKey.Reveal() != e.emu.InitialKey() || first.Created.IsZero() {
		t.Errorf("first key: got %+v (raw match %v)", first, first.APIKey.Reveal() == e.emu.InitialKey())
	}

	k, err := e.client.Create(ctx, "codat-rotator-20261126T070000Z-ab12")
	if err != nil {
		t.Fatal(err)
	}
	if k.ID == "" || k.APIKey.Empty() || k.Name != "codat-rotator-20261126T070000Z-ab12" || k.Created.IsZero() {
		t.Fatalf("created key: got %+v", k)
	}

	// The new key authenticates on its own.
	keys, err = e.client.WithKey(k.APIKey).List(ctx)
	if err != nil {
		t.Fatalf("list with the new key: %v", err)
	}
	if got, want := len(keys), 2; got != want {
		t.Fatalf("keys after create: got %d, want %d", got, want)
	}

	// The new key deletes the first; the first then stops working.
	if err := e.client.WithKey(k.APIKey).Delete(ctx, first.ID); err != nil {
		t.Fatalf("delete: %v", err)
	}
	_, err = e.client.List(ctx)
	if !errors.Is(err, codat.ErrUnauthorized) {
		t.Fatalf("list with a deleted key: got %v, want ErrUnauthorized", err)
	}
	// A 404 for a key already gone.
	err = e.client.WithKey(k.APIKey).Delete(ctx, first.ID)
	if !errors.Is(err, codat.ErrNotFound) {
		t.Fatalf("delete again: got %v, want ErrNotFound", err)
	}
}

func TestCreateWithoutName(t *testing.T) {
	e := newEnv(t, emulator.Options{}, codat.Options{})
	k, err := e.client.Create(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if k.Name != "" || k.ID == "" {
		t.Fatalf("got %+v, want an unnamed key with an id", k)
	}
}

// TestStatuses checks that every status of docs/design.md#codat-api comes
// back as the right error, with Codat's message and correlation id, and
// that a status that must not be retried is sent exactly once.
func TestStatuses(t *testing.T) {
	tests := []struct {
		name     string
		op       string
		faults   func(*emulator.Faults)
		setup    func(tb testing.TB, e *env) string // returns the id to delete
		want     error
		status   int
		attempts int
	}{
		{name: "400 name too long", op: emulator.OpCreate, want: codat.ErrBadRequest, status: 400, attempts: 1},
		{name: "401 create", op: emulator.OpCreate, faults: func(f *emulator.Faults) { f.Create.Fail, f.Create.FailStatus = 1, 401 }, want: codat.ErrUnauthorized, status: 401, attempts: 1},
		{name: "402 list", op: emulator.OpList, faults: func(f *emulator.Faults) { f.List.Fail, f.List.FailStatus = 1, 402 }, want: codat.ErrPlanLimit, status: 402, attempts: 1},
		{name: "403 delete", op: emulator.OpDelete, faults: func(f *emulator.Faults) { f.Delete.Fail, f.Delete.FailStatus = 1, 403 }, want: codat.ErrUnauthorized, status: 403, attempts: 1},
		{name: "404 delete", op: emulator.OpDelete, setup: func(testing.TB, *env) string { return "00000000-0000-4000-8000-000000000000" }, want: codat.ErrNotFound, status: 404, attempts: 1},
		{name: "409 create", op: emulator.OpCreate, setup: func(tb testing.TB, e *env) string {
			for i := 0; i < 9; i++ {
				if _, _, err := e.emu.AddPortalKey(fmt.Sprintf("portal-%d", i)); err != nil {
					tb.Fatal(err)
				}
			}
			return ""
		}, want: codat.ErrCapReached, status: 409, attempts: 1},
		{name: "500 list retried to the end", op: emulator.OpList, faults: func(f *emulator.Faults) { f.List.Fail, f.List.FailStatus = 10, 500 }, want: codat.ErrServer, status: 500, attempts: 3},
		{name: "503 delete retried to the end", op: emulator.OpDelete, faults: func(f *emulator.Faults) { f.Delete.Fail, f.Delete.FailStatus = 10, 503 }, want: codat.ErrServer, status: 503, attempts: 3},
		{name: "500 create not retried", op: emulator.OpCreate, faults: func(f *emulator.Faults) { f.Create.Fail, f.Create.FailStatus = 1, 500 }, want: codat.ErrOutcomeUnknown, status: 500, attempts: 1},
		{name: "503 create not retried", op: emulator.OpCreate, faults: func(f *emulator.Faults) { f.Create.Fail, f.Create.FailStatus = 1, 503 }, want: codat.ErrOutcomeUnknown, status: 503, attempts: 1},
		{name: "429 list beyond the budget", op: emulator.OpList, faults: func(f *emulator.Faults) { f.List.RateLimit = 10 }, want: codat.ErrRateLimited, status: 429, attempts: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, emulator.Options{}, codat.Options{MaxAttempts: 3})
			id := e.emu.Keys()[0].ID
			// Deletes need a second key, so that the target is not the last.
			if tt.op == emulator.OpDelete {
				if _, _, err := e.emu.AddPortalKey("spare"); err != nil {
					t.Fatal(err)
				}
			}
			if tt.setup != nil {
				if v := tt.setup(t, e); v != "" {
					id = v
				}
			}
			var f emulator.Faults
			if tt.faults != nil {
				tt.faults(&f)
			}
			if err := e.emu.SetFaults(f); err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			var err error
			switch tt.op {
			case emulator.OpList:
				_, err = e.client.List(ctx)
			case emulator.OpCreate:
				name := "ok"
				if tt.status == 400 {
					name = strings.Repeat("n", 51)
				}
				_, err = e.client.Create(ctx, name)
			case emulator.OpDelete:
				err = e.client.Delete(ctx, id)
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			var apiErr *codat.APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("got %T (%v), want an *APIError inside", err, err)
			}
			if apiErr.StatusCode != tt.status {
				t.Errorf("status: got %d, want %d", apiErr.StatusCode, tt.status)
			}
			if len(apiErr.CorrelationID) != 32 || !strings.Contains(err.Error(), apiErr.CorrelationID) {
				t.Errorf("correlation id %q missing from %q", apiErr.CorrelationID, err)
			}
			if apiErr.Message == "" || !strings.Contains(err.Error(), apiErr.Message) {
				t.Errorf("codat's message %q missing from %q", apiErr.Message, err)
			}
			if got := e.requests(tt.op); got != tt.attempts {
				t.Errorf("%s requests seen by the emulator: got %d, want %d", tt.op, got, tt.attempts)
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	for _, asDate := range []bool{false, true} {
		t.Run(fmt.Sprintf("date=%v", asDate), func(t *testing.T) {
			now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
			clock := func() time.Time { return now }
			e := newEnv(t, emulator.Options{Now: clock}, codat.Options{Now: clock})
			var f emulator.Faults
			f.Create.RateLimit = 2
			f.Create.RetryAfter = emulator.Duration(7 * time.Second)
			f.Create.RetryAfterDate = asDate
			if err := e.emu.SetFaults(f); err != nil {
				t.Fatal(err)
			}
			k, err := e.client.Create(context.Background(), "after-429")
			if err != nil {
				t.Fatalf("create after two 429s: %v", err)
			}
			if k.Name != "after-429" {
				t.Errorf("name: got %q", k.Name)
			}
			if got, want := e.sleeps.Durations(), []time.Duration{7 * time.Second, 7 * time.Second}; fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("waits: got %v, want %v", got, want)
			}
			// A 429 made nothing: three POSTs, one key.
			if got := e.requests(emulator.OpCreate); got != 3 {
				t.Errorf("creates sent: got %d, want 3", got)
			}
			if got := e.emu.ActiveKeys(); got != 2 {
				t.Errorf("keys: got %d, want 2", got)
			}
		})
	}
}

func TestRetryAfterTooLong(t *testing.T) {
	e := newEnv(t, emulator.Options{}, codat.Options{MaxRetryAfter: 5 * time.Second})
	var f emulator.Faults
	f.List.RateLimit = 1
	f.List.RetryAfter = emulator.Duration(time.Hour)
	if err := e.emu.SetFaults(f); err != nil {
		t.Fatal(err)
	}
	_, err := e.client.List(context.Background())
	if !errors.Is(err, codat.ErrRateLimited) || !strings.Contains(err.Error(), "1h0m0s") {
		t.Fatalf("got %v, want ErrRateLimited naming the hour", err)
	}
	if got := len(e.sleeps.Durations()); got != 0 {
		t.Errorf("waited %d times, want none", got)
	}
}

func TestRetriesThenSucceeds(t *testing.T) {
	e := newEnv(t, emulator.Options{}, codat.Options{})
	var f emulator.Faults
	f.List.Fail, f.List.FailStatus = 2, 503
	f.Delete.Fail = 1
	f.Delete.LoseResponse = 0
	if err := e.emu.SetFaults(f); err != nil {
		t.Fatal(err)
	}
	keys, err := e.client.List(context.Background())
	if err != nil || len(keys) != 1 {
		t.Fatalf("list after two 503s: %v, %d keys", err, len(keys))
	}
	waits := e.sleeps.Durations()
	if len(waits) != 2 {
		t.Fatalf("waits: got %v, want 2 backoffs", waits)
	}
	for i, w := range waits {
		if w <= 0 || w > 30*time.Second {
			t.Errorf("wait %d: %v out of the backoff bounds", i, w)
		}
	}
}

// TestCreateLostResponse: Codat makes the key and the answer never comes.
// The client must not POST again; the key is found by its name.
func TestCreateLostResponse(t *testing.T) {
	e := newEnv(t, emulator.Options{}, codat.Options{})
	var f emulator.Faults
	f.Create.LoseResponse = 1
	if err := e.emu.SetFaults(f); err != nil {
		t.Fatal(err)
	}
	const name = "codat-rotator-lost-1"
	_, err := e.client.Create(context.Background(), name)
	if !errors.Is(err, codat.ErrOutcomeUnknown) {
		t.Fatalf("got %v, want ErrOutcomeUnknown", err)
	}
	var ou *codat.OutcomeUnknownError
	if !errors.As(err, &ou) || ou.Name != name {
		t.Fatalf("got %v, want an OutcomeUnknownError naming %q", err, name)
	}
	if got := e.requests(emulator.OpCreate); got != 1 {
		t.Fatalf("POSTs seen by the emulator: got %d, want exactly 1", got)
	}
	found, err := e.client.FindByName(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 1 || found[0].APIKey.Empty() {
		t.Fatalf("FindByName: got %d keys %+v, want the one made", len(found), found)
	}
	if got := e.emu.ActiveKeys(); got != 2 {
		t.Errorf("keys at codat: got %d, want 2 (no duplicate)", got)
	}
}

// TestCreateTimeout: the emulator holds the create; the per-request
// timeout fires; the outcome is unknown and nothing is re-sent.
func TestCreateTimeout(t *testing.T) {
	e := newEnv(t, emulator.Options{}, codat.Options{RequestTimeout: 100 * time.Millisecond})
	var f emulator.Faults
	f.Create.Hang = 1
	if err := e.emu.SetFaults(f); err != nil {
		t.Fatal(err)
	}
	_, err := e.client.Create(context.Background(), "hung")
	if !errors.Is(err, codat.ErrOutcomeUnknown) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want ErrOutcomeUnknown from a deadline", err)
	}
	waitFor(t, func() bool { return e.requests(emulator.OpCreate) == 1 })
	if got := e.requests(emulator.OpCreate); got != 1 {
		t.Fatalf("POSTs: got %d, want 1", got)
	}
}

// TestListTimeoutRetried: a list that hangs is retried, being idempotent.
func TestListTimeoutRetried(t *testing.T) {
	e := newEnv(t, emulator.Options{}, codat.Options{RequestTimeout: 100 * time.Millisecond})
	var f emulator.Faults
	f.List.Hang = 1
	if err := e.emu.SetFaults(f); err != nil {
		t.Fatal(err)
	}
	keys, err := e.client.List(context.Background())
	if err != nil || len(keys) != 1 {
		t.Fatalf("got %v, %d keys; want the list after one timeout", err, len(keys))
	}
}

func TestDeleteLostResponseRetried(t *testing.T) {
	e := newEnv(t, emulator.Options{}, codat.Options{})
	id, _, err := e.emu.AddPortalKey("doomed")
	if err != nil {
		t.Fatal(err)
	}
	var f emulator.Faults
	f.Delete.LoseResponse = 1
	if err := e.emu.SetFaults(f); err != nil {
		t.Fatal(err)
	}
	// The first delete happens but its answer is lost; the retry gets a 404.
	err = e.client.Delete(context.Background(), id)
	if !errors.Is(err, codat.ErrNotFound) {
		t.Fatalf("got %v, want ErrNotFound (the key went with the lost answer)", err)
	}
	if got := e.emu.ActiveKeys(); got != 1 {
		t.Errorf("keys: got %d, want 1", got)
	}
}

func TestContextCancellation(t *testing.T) {
	for _, op := range []string{emulator.OpList, emulator.OpCreate, emulator.OpDelete} {
		t.Run(op, func(t *testing.T) {
			e := newEnv(t, emulator.Options{}, codat.Options{})
			spare, _, err := e.emu.AddPortalKey("spare")
			if err != nil {
				t.Fatal(err)
			}
			var f emulator.Faults
			*opFaults(&f, op) = emulator.OpFaults{Hang: 1}
			if err := e.emu.SetFaults(f); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				waitFor(t, func() bool { return e.emu.InFlight() > 0 })
				cancel()
			}()
			switch op {
			case emulator.OpList:
				_, err = e.client.List(ctx)
			case emulator.OpCreate:
				_, err = e.client.Create(ctx, "cancelled")
			case emulator.OpDelete:
				err = e.client.Delete(ctx, spare)
			}
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("got %v, want context.Canceled", err)
			}
			if op == emulator.OpCreate && !errors.Is(err, codat.ErrOutcomeUnknown) {
				t.Errorf("a cancelled create that was sent: got %v, want ErrOutcomeUnknown", err)
			}
		})
	}
}

func opFaults(f *emulator.Faults, op string) *emulator.OpFaults {
	switch op {
	case emulator.OpList:
		return &f.List
	case emulator.OpCreate:
		return &f.Create
	}
	return &f.Delete
}

// TestCreateBeforeSendRetried: a connection refused before the request is
// written cannot have made a key, so create is retried.
func TestCreateBeforeSendRetried(t *testing.T) {
	emu, err := emulator.New(emulator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	var refused atomic.Int32
	transport := http.DefaultTransport.(*http.Transport).Clone()
	dial := transport.DialContext
	transport.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if refused.Add(1) <= 2 {
			return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New("connection refused")}
		}
		return dial(ctx, network, addr)
	}
	sl := &clocktest.Sleeper{}
	c, err := codat.New(codat.Secret(emu.InitialKey()), codat.Options{
		BaseURL: srv.URL, HTTPClient: &http.Client{Transport: transport}, Sleep: sl.Sleep,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(context.Background(), "after-refused"); err != nil {
		t.Fatalf("create after two refused dials: %v", err)
	}
	if got := len(sl.Durations()); got != 2 {
		t.Errorf("backoffs: got %d, want 2", got)
	}
	if got := emu.ActiveKeys(); got != 2 {
		t.Errorf("keys: got %d, want 2", got)
	}
}

// TestNonJSONErrorBody: a proxy's HTML page still gives a clear error
// with the status, without echoing the page.
func TestNonJSONErrorBody(t *testing.T) {
	page := "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		fmt.Fprint(w, page)
	}))
	t.Cleanup(srv.Close)
	c, err := codat.New("k", codat.Options{BaseURL: srv.URL, MaxAttempts: 2, Sleep: (&clocktest.Sleeper{}).Sleep})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.List(context.Background())
	var apiErr *codat.APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 502 {
		t.Fatalf("got %v, want an APIError with status 502", err)
	}
	if !strings.Contains(err.Error(), "text/html") || strings.Contains(err.Error(), "nginx") {
		t.Errorf("error %q: want the content type, not the page", err)
	}
	if !errors.Is(err, codat.ErrServer) {
		t.Errorf("got %v, want ErrServer", err)
	}
}

func TestBodyCap(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"results":[`)
		entry := `{"id":"x","apiKey":"y"},`
		for i := 0; i < (codat.MaxBodySize/len(entry))+10; i++ {
			fmt.Fprint(w, entry)
		}
		fmt.Fprint(w, `{"id":"z","apiKey":"y"}]}`)
	}))
	t.Cleanup(srv.Close)
	c, err := codat.New("k", codat.Options{BaseURL: srv.URL, Sleep: (&clocktest.Sleeper{}).Sleep})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.List(context.Background())
	if !errors.Is(err, codat.ErrBadResponse) || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("got %v, want ErrBadResponse for an oversized body", err)
	}
}

// TestCreateBadResponse: a 201 that lacks apiKey made a key the client
// cannot use, so the outcome counts as unknown.
func TestCreateBadResponse(t *testing.T) {
	for name, body := range map[string]string{
		"no apiKey": `{"id":"6c7b3f0e-0000-4000-8000-000000000001","name":"n"}`,
		"no id":     `{"apiKey":"abc","name":"n"}`,
		"not JSON":  `<html>created</html>`,
	} {
		t.Run(name, func(t *testing.T) {
			var posts atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				posts.Add(1)
				w.WriteHeader(http.StatusCreated)
				fmt.Fprint(w, body)
			}))
			t.Cleanup(srv.Close)
			c, err := codat.New("k", codat.Options{BaseURL: srv.URL, Sleep: (&clocktest.Sleeper{}).Sleep})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Create(context.Background(), "n")
			if !errors.Is(err, codat.ErrOutcomeUnknown) || !errors.Is(err, codat.ErrBadResponse) {
				t.Fatalf("got %v, want ErrOutcomeUnknown and ErrBadResponse", err)
			}
			if strings.Contains(err.Error(), "abc") {
				t.Errorf("error %q leaks the raw key", err)
			}
			if got := posts.Load(); got != 1 {
				t.Errorf("POSTs: got %d, want 1", got)
			}
		})
	}
}

func TestAuthorizationHeader(t *testing.T) {
	// Codat's example (docs/design.md#codat-api).
	const want = "Basic enRIUUd2bkM0WE4yQ2dVaGFEV0VHNHlTTFVKcVdqcDd6a2Jaa0dIZA=="
	var seen atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.Header.Get("Authorization"))
		fmt.Fprint(w, `{"results":[]}`)
	}))
	t.Cleanup(srv.Close)
	c, err := codat.New("ztHQGvnC4XN2CgUhaDWEG4ySLUJqWjp7zkbZkGHd", codat.Options{BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.List(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := seen.Load(); got != want {
		t.Errorf("header sent: got %q, want %q", got, want)
	}
}

func TestBaseURL(t *testing.T) {
	for _, bad := range []string{"ftp://x", "api.codat.io", "https://user:pw@api.codat.io", "https://api.codat.io?x=1", "http://"} {
		if _, err := codat.New("k", codat.Options{BaseURL: bad}); err == nil {
			t.Errorf("base url %q: got no error", bad)
		}
	}
	c, err := codat.New("k", codat.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.BaseURL(), codat.DefaultBaseURL; got != want {
		t.Errorf("default base url: got %q, want %q", got, want)
	}
}

// TestKeyRedaction: a Key formatted any way, logged or marshalled never
// shows its raw key (the secret package tests the value on its own).
func TestKeyRedaction(t *testing.T) {
	const raw = "ztHQGvnC4XN2CgUhaDWEG4ySLUJqWjp7zkbZkGHd"
	k := codat.Key{ID: "id", APIKey: codat.Secret(raw)}
	var out bytes.Buffer
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%10s"} {
		fmt.Fprintf(&out, verb+"|", k)
		fmt.Fprintf(&out, verb+"|", &k)
	}
	fmt.Fprint(&out, k, []codat.Key{k}, fmt.Errorf("wrapped: %v", k))
	for _, hnd := range []slog.Handler{slog.NewJSONHandler(&out, nil), slog.NewTextHandler(&out, nil)} {
		slog.New(hnd).Info("key", "details", k, "ptr", &k)
	}
	b, err := json.Marshal(k)
	if err != nil {
		t.Fatal(err)
	}
	out.Write(b)
	got := out.String()
	if strings.Contains(got, raw) {
		t.Fatalf("raw key leaked in:\n%s", got)
	}
	if !strings.Contains(got, secret.Redacted) {
		t.Fatalf("want %q in the output, got:\n%s", secret.Redacted, got)
	}
	if k.APIKey.Reveal() != raw {
		t.Fatal("Reveal lost the value")
	}
}

func waitFor(tb testing.TB, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Error("condition not met within 5s")
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}
