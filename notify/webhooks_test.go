package notify

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/internal/clock/clocktest"
	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/store"
)

// receiver is a local webhook endpoint that records what it gets and
// fails the first `failures` posts.
type receiver struct {
	mu       sync.Mutex
	bodies   [][]byte
	failures int
	srv      *httptest.Server
}

func newReceiver(t *testing.T, failures int) *receiver {
	t.Helper()
	r := &receiver{failures: failures}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.failures > 0 {
			r.failures--
			http.Error(w, "try later", http.StatusServiceUnavailable)
			return
		}
		r.bodies = append(r.bodies, b)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) got() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.bodies...)
}

func TestWebhookEvents(t *testing.T) {
	var logs bytes.Buffer
	jsonHook := newReceiver(t, 0)
	slackHook := newReceiver(t, 0)
	hooks := map[string][]Hook{"prod": {
		{URL: jsonHook.srv.URL + "/hooks/SECRET-PATH", Format: "json", Events: []string{EventFailure, EventHalt, EventLowSlots, EventSuccess}, Timeout: time.Second},
		{URL: slackHook.srv.URL + "/services/T000/B000/XXXX", Format: "slack", Events: []string{EventHalt}, Timeout: time.Second},
	}}
	w := New(slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})), "codat-rotator/test", hooks)
	var sleeps clocktest.Sleeper
	w.sleep = sleeps.Sleep
	target := rotation.Target{Name: "prod", MaxKeys: 10, ReserveSlots: 1}

	// A failure that halted the target, with the cap nearly full.
	st := store.Target{CodatKeys: 9, Halted: true, HaltReason: "publish to vault: sealed"}
	w.Rotated(target, st, rotation.Result{RotationID: "r-1"}, errorString("publish to vault: vault is sealed"))
	w.Wait(5 * time.Second)

	var events []Event
	for _, b := range jsonHook.got() {
		var e Event
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatalf("json webhook body %q: %v", b, err)
		}
		events = append(events, e)
	}
	kinds := map[string]Event{}
	for _, e := range events {
		kinds[e.Event] = e
	}
	for _, want := range []string{EventFailure, EventHalt, EventLowSlots} {
		e, ok := kinds[want]
		if !ok {
			t.Errorf("json webhook: no %q event in %+v", want, events)
			continue
		}
		if e.Target != "prod" || e.RotationID != "r-1" || e.KeysUsed != 9 || e.MaxKeys != 10 || e.FreeSlots != 1 {
			t.Errorf("%s event: got %+v", want, e)
		}
	}
	if _, ok := kinds[EventSuccess]; ok {
		t.Error("a success event was sent for a failed rotation")
	}
	// The slack hook wants only halts, in Slack's shape.
	slack := slackHook.got()
	if len(slack) != 1 {
		t.Fatalf("slack webhook: got %d posts, want 1 (the halt)", len(slack))
	}
	var text struct {
		Text string `json:"text"`
	}
	if err := json.Unmarshal(slack[0], &text); err != nil || !strings.Contains(text.Text, "prod is HALTED") {
		t.Errorf("slack body %s: want a text naming the halt", slack[0])
	}
	if waits := sleeps.Durations(); len(waits) != 0 {
		t.Errorf("waited %v with every delivery accepted", waits)
	}
	// The webhook URLs' paths (secrets, for Slack) never reach the log.
	for _, secret := range []string{"SECRET-PATH", "XXXX"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("the log holds a webhook URL's path %q:\n%s", secret, logs.String())
		}
	}
}

// TestWebhookRetries: a receiver failing twice gets the event on the
// third try, after 1s then 2s of backoff; one failing for ever is given
// up after the attempts.
func TestWebhookRetries(t *testing.T) {
	for _, tt := range []struct {
		failures, delivered int
		waits               string
	}{{2, 1, "[1s 2s]"}, {10, 0, "[1s 2s 4s]"}} {
		hook := newReceiver(t, tt.failures)
		w := New(slog.New(slog.DiscardHandler), "codat-rotator/test", map[string][]Hook{"a": {
			{URL: hook.srv.URL, Format: "json", Events: []string{EventFailure}, Timeout: time.Second}}})
		var sleeps clocktest.Sleeper
		w.sleep = sleeps.Sleep
		w.Rotated(rotation.Target{Name: "a", MaxKeys: 10, ReserveSlots: 1}, store.Target{}, rotation.Result{}, errorString("boom"))
		w.Wait(5 * time.Second)
		if got := len(hook.got()); got != tt.delivered {
			t.Errorf("failures %d: delivered %d, want %d", tt.failures, got, tt.delivered)
		}
		if got := fmt.Sprint(sleeps.Durations()); got != tt.waits {
			t.Errorf("failures %d: waits %s, want %s", tt.failures, got, tt.waits)
		}
	}
}

type errorString string

func (e errorString) Error() string { return string(e) }

// TestRetireGaveUpAlerts: when the scheduler gives up retiring a
// target's old keys, its failure webhooks hear of it. (The metric that
// counts it apart is tested with the metrics.)
func TestRetireGaveUpAlerts(t *testing.T) {
	hook := newReceiver(t, 0)
	w := New(slog.New(slog.DiscardHandler), "codat-rotator/test", map[string][]Hook{"prod": {
		{URL: hook.srv.URL, Format: "json", Events: []string{EventFailure}, Timeout: time.Second},
	}})
	gaveUp := fmt.Errorf("%w after 10 attempts: %w", rotation.ErrRetireExhausted, errorString("retire: vault is sealed"))
	w.RetireGaveUp(rotation.Target{Name: "prod", MaxKeys: 10}, gaveUp)
	w.Wait(5 * time.Second)
	bodies := hook.got()
	if len(bodies) != 1 {
		t.Fatalf("%d webhook posts, want 1", len(bodies))
	}
	var e Event
	if err := json.Unmarshal(bodies[0], &e); err != nil {
		t.Fatal(err)
	}
	if e.Event != EventFailure || e.Target != "prod" || !strings.Contains(e.Message, "retiring old keys of prod") || !strings.Contains(e.Error, "vault is sealed") {
		t.Errorf("event = %+v, want a failure about retiring prod's keys with the cause", e)
	}
}
