package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
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
	tc := []TargetConfig{{Name: "prod", Notify: NotifyConfig{Webhooks: []WebhookConfig{
		{URL: jsonHook.srv.URL + "/hooks/SECRET-PATH", Format: "json", Events: []string{EventFailure, EventHalt, EventLowSlots, EventSuccess}, Timeout: Duration(time.Second)},
		{URL: slackHook.srv.URL + "/services/T000/B000/XXXX", Format: "slack", Events: []string{EventHalt}, Timeout: Duration(time.Second)},
	}}}}
	w := newWebhooks(slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})), tc)
	var sleeps clocktest.Sleeper
	w.sleep = sleeps.Sleep
	target := rotation.Target{Name: "prod", MaxKeys: 10, ReserveSlots: 1}

	// A failure that halted the target, with the cap nearly full.
	st := store.Target{CodatKeys: 9, Halted: true, HaltReason: "publish to vault: sealed"}
	w.rotated(target, st, rotation.Result{RotationID: "r-1"}, errorString("publish to vault: vault is sealed"))
	w.Wait(5 * time.Second)

	var events []webhookEvent
	for _, b := range jsonHook.got() {
		var e webhookEvent
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatalf("json webhook body %q: %v", b, err)
		}
		events = append(events, e)
	}
	kinds := map[string]webhookEvent{}
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
		w := newWebhooks(slog.New(slog.DiscardHandler), []TargetConfig{{Name: "a", Notify: NotifyConfig{Webhooks: []WebhookConfig{
			{URL: hook.srv.URL, Format: "json", Events: []string{EventFailure}, Timeout: Duration(time.Second)}}}}})
		var sleeps clocktest.Sleeper
		w.sleep = sleeps.Sleep
		w.rotated(rotation.Target{Name: "a", MaxKeys: 10, ReserveSlots: 1}, store.Target{}, rotation.Result{}, errorString("boom"))
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

func TestWebhookSuccessIsOptIn(t *testing.T) {
	hook := newReceiver(t, 0)
	cfg, err := ParseConfig(strings.NewReader("targets:\n  - name: a\n    vault: {path: codat/a}\n    notify:\n      webhooks:\n        - url: "+hook.srv.URL+"\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Targets[0].Notify.Webhooks[0].Events; strings.Join(got, ",") != "failure,halt,low_slots" {
		t.Errorf("default events: got %v", got)
	}
	w := newWebhooks(slog.New(slog.DiscardHandler), cfg.Targets)
	w.rotated(rotation.Target{Name: "a", MaxKeys: 10, ReserveSlots: 1}, store.Target{CodatKeys: 2}, rotation.Result{RotationID: "r"}, nil)
	w.Wait(5 * time.Second)
	if got := hook.got(); len(got) != 0 {
		t.Errorf("a success was posted without opting in: %s", got)
	}
}

func TestWebhookConfigErrors(t *testing.T) {
	const base = "targets:\n  - name: a\n    vault: {path: codat/a}\n    notify:\n      webhooks:\n"
	for yaml, want := range map[string]string{
		"        - url: ftp://x\n":                        "targets[0].notify.webhooks[0].url: not an http(s) URL",
		"        - {url: https://x, format: xml}\n":       `targets[0].notify.webhooks[0].format: "xml": want json or slack`,
		"        - {url: https://x, events: [explode]}\n": `targets[0].notify.webhooks[0].events: "explode": want failure, halt, low_slots or success`,
	} {
		_, err := ParseConfig(strings.NewReader(base+yaml), noEnv)
		if err == nil || err.Error() != want {
			t.Errorf("%q: got %v, want %q", yaml, err, want)
		}
	}
}

// TestWebhookEndToEnd: the real binary posts a success after a rotation
// and a failure after a bad one; no body carries a key.
func TestWebhookEndToEnd(t *testing.T) {
	e := newCrashEnv(t)
	hook := newReceiver(t, 0)
	cfg := mustRead(t, e.config) + "    notify:\n      webhooks:\n        - {url: " + hook.srv.URL + "/hook, events: [success, failure]}\n"
	if err := os.WriteFile(e.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	e.rotate(t)
	if code, out := e.runRotate(t, "--target", "crash", "--revoke", "no-such-key"); code != exitError {
		t.Fatalf("bad revoke: exit %d\n%s", code, out)
	}
	var kinds []string
	for _, b := range hook.got() {
		var ev webhookEvent
		if err := json.Unmarshal(b, &ev); err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, ev.Event)
		if ev.Event == EventSuccess && ev.NewKeyID == "" {
			t.Errorf("success event without the new key id: %+v", ev)
		}
	}
	if strings.Join(kinds, ",") != "success,failure" {
		t.Errorf("events: got %v, want success then failure", kinds)
	}
	// No raw key in any body: checkInvariants scans outputs; scan bodies too.
	api := e.vault.Client(t)
	sec, err := api.KVv2(e.mount).Get(context.Background(), "codat/crash")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := sec.Data["api_key"].(string)
	for _, b := range hook.got() {
		if raw != "" && bytes.Contains(b, []byte(raw)) || bytes.Contains(b, []byte(e.emu.InitialKey())) {
			t.Errorf("a webhook body holds a raw key: %s", b)
		}
	}
}

// TestRetireGaveUpAlerts: when the scheduler gives up retiring a
// target's old keys, its failure webhooks hear of it and the metric
// counts it apart from the failures it still retries.
func TestRetireGaveUpAlerts(t *testing.T) {
	hook := newReceiver(t, 0)
	tc := []TargetConfig{{Name: "prod", Notify: NotifyConfig{Webhooks: []WebhookConfig{
		{URL: hook.srv.URL, Format: "json", Events: []string{EventFailure}, Timeout: Duration(time.Second)},
	}}}}
	w := newWebhooks(slog.New(slog.DiscardHandler), tc)
	gaveUp := fmt.Errorf("%w after 10 attempts: %w", rotation.ErrRetireExhausted, errorString("retire: vault is sealed"))
	w.retireGaveUp(rotation.Target{Name: "prod", MaxKeys: 10}, gaveUp)
	w.Wait(5 * time.Second)
	bodies := hook.got()
	if len(bodies) != 1 {
		t.Fatalf("%d webhook posts, want 1", len(bodies))
	}
	var e webhookEvent
	if err := json.Unmarshal(bodies[0], &e); err != nil {
		t.Fatal(err)
	}
	if e.Event != EventFailure || e.Target != "prod" || !strings.Contains(e.Message, "retiring old keys of prod") || !strings.Contains(e.Error, "vault is sealed") {
		t.Errorf("event = %+v, want a failure about retiring prod's keys with the cause", e)
	}

	m := newMetrics()
	m.onRetire("prod", nil, errorString("retire: vault is sealed"))
	m.onRetire("prod", nil, gaveUp)
	m.onRetire("prod", []string{"k1"}, nil)
	for _, tc := range []struct {
		gaveUp string
		want   float64
	}{{"false", 1}, {"true", 1}} {
		if got := counterValue(t, m, ns+"_retire_failures_total", map[string]string{"target": "prod", "gave_up": tc.gaveUp}); got != tc.want {
			t.Errorf("retire_failures_total{gave_up=%q} = %v, want %v", tc.gaveUp, got, tc.want)
		}
	}
	if got := counterValue(t, m, ns+"_retired_keys_total", map[string]string{"target": "prod"}); got != 1 {
		t.Errorf("retired_keys_total = %v, want 1", got)
	}
}

// counterValue reads the counter name{labels} from m's registry, 0 when
// it was never set.
func counterValue(t *testing.T, m *metrics, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, mm := range f.GetMetric() {
			for _, l := range mm.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue metrics
				}
			}
			return mm.GetCounter().GetValue()
		}
	}
	return 0
}
