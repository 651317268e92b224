package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/notify"
	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/store"
)

// The webhooks as the config sets them up; notify/ tests the sending.

// receiver is a local webhook endpoint that records what it gets.
type receiver struct {
	mu     sync.Mutex
	bodies [][]byte
	srv    *httptest.Server
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	r := &receiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		defer r.mu.Unlock()
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

func TestWebhookSuccessIsOptIn(t *testing.T) {
	hook := newReceiver(t)
	cfg, err := ParseConfig(strings.NewReader("targets:\n  - name: a\n    vault: {path: codat/a}\n    notify:\n      webhooks:\n        - url: "+hook.srv.URL+"\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Targets[0].Notify.Webhooks[0].Events; strings.Join(got, ",") != "failure,halt,low_slots,blocked" {
		t.Errorf("default events: got %v", got)
	}
	w := notify.New(slog.New(slog.DiscardHandler), "codat-rotator/test", webhooks(cfg.Targets))
	w.Rotated(rotation.Target{Name: "a", MaxKeys: 10, ReserveSlots: 1}, store.Target{CodatKeys: 2}, rotation.Result{RotationID: "r"}, nil)
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
		"        - {url: https://x, events: [explode]}\n": `targets[0].notify.webhooks[0].events: "explode": want failure, halt, low_slots, blocked or success`,
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
	hook := newReceiver(t)
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
		var ev notify.Event
		if err := json.Unmarshal(b, &ev); err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, ev.Event)
		if ev.Event == notify.EventSuccess && ev.NewKeyID == "" {
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
