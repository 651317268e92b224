// Package notify tells the world what the daemon does: webhooks per
// target (a generic JSON body or a Slack-compatible one) and systemd's
// sd_notify protocol.
package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/codat-rotator/codat-rotator/internal/clock"
	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/secret"
	"github.com/codat-rotator/codat-rotator/store"
)

// Events a webhook may ask for.
const (
	EventFailure  = "failure"
	EventHalt     = "halt"
	EventLowSlots = "low_slots"
	EventSuccess  = "success"
	// EventBlocked: another state file owns the target; sent once, when
	// a rotation first finds it so.
	EventBlocked = "blocked"
)

// Hook is one webhook of a target.
type Hook struct {
	// URL receives a POST per event. It may hold a secret (Slack's do):
	// it is never logged whole.
	URL string
	// Format is json (an Event) or slack (a {"text": ...} body).
	Format string
	// Events are the events it wants (Event* above).
	Events []string
	// Timeout bounds each POST.
	Timeout time.Duration
}

// Event is the generic JSON body. It never carries a key or a header:
// only ids, counts and messages (errors never hold a key).
type Event struct {
	Event      string    `json:"event"`
	Target     string    `json:"target"`
	Time       time.Time `json:"time"`
	Message    string    `json:"message"`
	RotationID string    `json:"rotation_id,omitempty"`
	NewKeyID   string    `json:"new_key_id,omitempty"`
	Error      string    `json:"error,omitempty"`
	KeysUsed   int       `json:"keys_used"`
	MaxKeys    int       `json:"max_keys"`
	FreeSlots  int       `json:"free_slots"`
	Halted     bool      `json:"halted"`
}

// Webhooks sends a target's events to its webhooks, in the background,
// retrying with backoff; Wait flushes them on shutdown.
type Webhooks struct {
	log       *slog.Logger
	http      *http.Client
	userAgent string
	sleep     func(ctx context.Context, d time.Duration) error
	// Attempts per event and webhook (default 4: 0s, 1s, 2s, 4s).
	attempts int

	mu    sync.Mutex
	hooks map[string][]Hook
	ctx   context.Context
	stop  context.CancelFunc
	wg    sync.WaitGroup
}

// New returns the Webhooks of each target, by target name; userAgent is
// sent with every POST.
func New(log *slog.Logger, userAgent string, hooks map[string][]Hook) *Webhooks {
	ctx, stop := context.WithCancel(context.Background())
	w := &Webhooks{log: log, http: &http.Client{CheckRedirect: sameOriginRedirect}, userAgent: userAgent, sleep: clock.Sleep, attempts: 4, ctx: ctx, stop: stop}
	w.Set(hooks)
	return w
}

// maxRedirects bounds the redirects a delivery follows within its origin.
const maxRedirects = 3

// sameOriginRedirect follows a webhook's redirect only within the hook's
// origin (scheme, host and port), and never with a Referer: the hook's
// URL, which Go would send as the Referer, often holds its token. A
// redirect elsewhere (another host, a metadata address) fails the
// delivery with an error naming only the origins.
func sameOriginRedirect(req *http.Request, via []*http.Request) error {
	req.Header.Del("Referer")
	if !secret.SameOrigin(via[0].URL, req.URL) {
		return fmt.Errorf("a redirect to %s, not followed: a webhook is posted to its own origin only", secret.Origin(req.URL))
	}
	if len(via) > maxRedirects {
		return fmt.Errorf("stopped after %d redirects", maxRedirects)
	}
	return nil
}

// Set replaces the webhooks (a config reload).
func (w *Webhooks) Set(hooks map[string][]Hook) {
	w.mu.Lock()
	w.hooks = hooks
	w.mu.Unlock()
}

// Rotated sends the events a finished rotation calls for: failure, halt,
// low slots (free slots at or below the reserve), success (opt-in).
func (w *Webhooks) Rotated(t rotation.Target, st store.Target, res rotation.Result, err error) {
	base := Event{Target: t.Name, Time: time.Now().UTC(), RotationID: res.RotationID, NewKeyID: res.NewKey.ID,
		KeysUsed: st.CodatKeys, MaxKeys: t.MaxKeys, FreeSlots: t.MaxKeys - st.CodatKeys, Halted: st.Halted}
	var events []Event
	switch {
	case errors.Is(err, rotation.ErrNotOwner):
		if st.BlockedAt.Equal(st.LastAttempt) { // newly blocked
			e := base
			e.Event, e.Error = EventBlocked, err.Error()
			e.Message = fmt.Sprintf("codat-rotator: %s is BLOCKED: it rotates nothing while another codat-rotator owns it: %v", t.Name, err)
			events = append(events, e)
		}
	case err != nil:
		e := base
		e.Event, e.Error = EventFailure, err.Error()
		e.Message = fmt.Sprintf("codat-rotator: rotation of %s failed: %v", t.Name, err)
		events = append(events, e)
		if st.Halted {
			e := base
			e.Event, e.Error = EventHalt, st.HaltReason
			e.Message = fmt.Sprintf("codat-rotator: %s is HALTED and rotates no more until `codat-rotator resume --target %s`: %s", t.Name, t.Name, st.HaltReason)
			events = append(events, e)
		}
	default:
		e := base
		e.Event = EventSuccess
		e.Message = fmt.Sprintf("codat-rotator: %s rotated: key %s published to %s", t.Name, res.NewKey.ID, t.Vault)
		events = append(events, e)
	}
	if st.CodatKeys > 0 && base.FreeSlots <= t.ReserveSlots {
		e := base
		e.Event = EventLowSlots
		e.Message = fmt.Sprintf("codat-rotator: %s holds %d of %d Codat keys; %d free, the reserve is %d (foreign keys count too)",
			t.Name, st.CodatKeys, t.MaxKeys, base.FreeSlots, t.ReserveSlots)
		events = append(events, e)
	}
	for _, e := range events {
		w.send(e)
	}
}

// RetireGaveUp sends a failure event when the scheduler gave up
// retiring a target's old keys after its retry budget.
func (w *Webhooks) RetireGaveUp(t rotation.Target, err error) {
	w.send(Event{Event: EventFailure, Target: t.Name, Time: time.Now().UTC(), Error: err.Error(), MaxKeys: t.MaxKeys,
		Message: fmt.Sprintf("codat-rotator: retiring old keys of %s keeps failing; no more retries until its next rotation: %v", t.Name, err)})
}

// send posts the event to every webhook of its target that wants it.
func (w *Webhooks) send(e Event) {
	w.mu.Lock()
	hooks := w.hooks[e.Target]
	w.mu.Unlock()
	for _, h := range hooks {
		if !slices.Contains(h.Events, e.Event) {
			continue
		}
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.post(h, e)
		}()
	}
}

func (w *Webhooks) post(h Hook, e Event) {
	var body any = e
	if h.Format == "slack" {
		body = map[string]string{"text": e.Message}
	}
	raw, _ := json.Marshal(body)
	host := RedactURL(h.URL)
	log := w.log.With("target", e.Target, "event", e.Event, "webhook", host)
	backoff := time.Second
	for i := 1; i <= w.attempts; i++ {
		err := w.postOnce(h, raw)
		if err == nil {
			log.Debug("webhook delivered")
			return
		}
		if i == w.attempts {
			log.Error("webhook not delivered; giving up", "attempts", i, "error", err)
			return
		}
		log.Warn("webhook failed; retrying", "attempt", i, "in", backoff, "error", err)
		if w.sleep(w.ctx, backoff) != nil {
			return
		}
		backoff *= 2
	}
}

func (w *Webhooks) postOnce(h Hook, raw []byte) error {
	ctx, cancel := context.WithTimeout(w.ctx, h.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("webhook request: %s", RedactURL(h.URL))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", w.userAgent)
	resp, err := w.http.Do(req)
	if err != nil {
		// The transport's error quotes the whole URL: keep only the host.
		if ue, ok := err.(*url.Error); ok {
			return fmt.Errorf("post %s: %v", RedactURL(h.URL), ue.Err)
		}
		return fmt.Errorf("post %s: request failed", RedactURL(h.URL))
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("post %s: %s", RedactURL(h.URL), resp.Status)
	}
	return nil
}

// Wait lets deliveries in flight finish for up to d, then abandons them.
func (w *Webhooks) Wait(d time.Duration) {
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		w.stop()
		<-done
	}
	w.stop()
}

// RedactURL keeps scheme and host: webhook paths often hold a secret.
// Every log line and message that names a webhook uses it.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(webhook)"
	}
	return u.Scheme + "://" + u.Host + "/…"
}
