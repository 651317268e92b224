package codatauth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/codat-rotator/codat-rotator/secret"
)

// DefaultBaseURL is Codat's API (docs/design.md#codat-api).
const DefaultBaseURL = "https://api.codat.io"

// DefaultInterval is how often a Transport reads its source when
// Config.Interval is zero.
const DefaultInterval = time.Minute

// Config says where the header comes from, where it goes and how often
// to look again.
type Config struct {
	// Source holds the credential: NewVaultSource or NewFileSource.
	Source Source
	// BaseURL is Codat's API (default DefaultBaseURL). Requests to its
	// scheme, host and port get the header; requests elsewhere (a
	// redirect to a download host, say) go out without it. Plain http is
	// refused unless the host is loopback (an emulator) or
	// AllowInsecureHTTP is set: it would send the key in clear.
	BaseURL           string
	AllowInsecureHTTP bool
	// Interval is how often the background refresh reads the source
	// (default DefaultInterval). Keep it well under the target's grace:
	// the previous key stops working grace after a rotation, and the
	// refresh must have read the new one by then. Besides, the source is
	// read just after the secret's next_rotation_at, and at once when
	// Codat answers 401. For a FileSource, also count the time Vault Agent
	// or the Secret sync takes to rewrite the file.
	Interval time.Duration
	// Base sends the requests (default http.DefaultTransport).
	Base http.RoundTripper
	// OnRefresh, when set, is called after every read of the source, from
	// the goroutine that read it. A request that met a 401 may be waiting
	// for the read: keep it short.
	OnRefresh func(Refresh)
}

// Reason says why a Transport read its source.
type Reason string

// Reasons for a read.
const (
	ReasonStart        Reason = "start"        // New's first read
	ReasonInterval     Reason = "interval"     // the background refresh
	ReasonRotationDue  Reason = "rotation-due" // just after next_rotation_at
	ReasonRetry        Reason = "retry"        // after a failed read
	ReasonUnauthorized Reason = "unauthorized" // Codat answered 401
	ReasonManual       Reason = "manual"       // Transport.Refresh
)

// Refresh is one read of the source, as Config.OnRefresh sees it. It
// holds no secret.
type Refresh struct {
	// Time is when the read started; Took how long it took.
	Time time.Time
	Took time.Duration
	// Reason is why the source was read.
	Reason Reason
	// Changed is true when the read brought a header other than the one
	// in use (and at the first read).
	Changed bool
	// KeyID is the id of the key in use after the read, when the source
	// says.
	KeyID string
	// Err is why the read failed; the header in use stays.
	Err error
}

// Stats are a Transport's counters since New.
type Stats struct {
	// Reads of the source, Failures among them, and Changes: reads that
	// brought a new header (the first read included).
	Reads, Failures, Changes uint64
	// Unauthorized counts 401 answers from Codat, retried or not.
	Unauthorized uint64
	// Retries counts requests sent again, once, with a newer header after
	// a 401.
	Retries uint64
}

// Transport is an http.RoundTripper that sets Codat's Authorization
// header on every request to Codat, from a source it keeps fresh in the
// background. The request path reads the header with one atomic load: no
// lock, no read of the source. When Codat answers 401 it reads the source
// once and, if the header changed, sends the request again once (when its
// body can be replayed: GetBody set, or no body).
//
// A Transport is safe for concurrent use. Close stops the background
// refresh; the Transport keeps sending the last header it read.
type Transport struct {
	base      http.RoundTripper
	src       Source
	scheme    string
	host      string // lower case, without the port
	port      string // explicit or the scheme's
	interval  time.Duration
	onRefresh func(Refresh)

	cur atomic.Pointer[credState]

	mu       sync.Mutex // one read of the source at a time
	lastRead time.Time  // start of the last read that ended; under mu

	reads, failures, changes, unauthorized, retries atomic.Uint64

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// credState is the credential in use and the header's value ready to
// put in a request.
type credState struct {
	cred   Credential
	values []string // {cred.Header.Reveal()}, shared by every request: never modified
}

// New checks cfg, reads the source once (an error there is returned: the
// Transport cannot work without a header) and starts the background
// refresh, which runs until Close. ctx bounds the first read only.
func New(ctx context.Context, cfg Config) (*Transport, error) {
	if cfg.Source == nil {
		return nil, errors.New("codatauth: Config.Source is nil: use NewVaultSource or NewFileSource")
	}
	if cfg.Interval < 0 {
		return nil, fmt.Errorf("codatauth: Config.Interval %s: must not be negative", cfg.Interval)
	}
	t := &Transport{base: cfg.Base, src: cfg.Source, interval: cfg.Interval, onRefresh: cfg.OnRefresh}
	if t.base == nil {
		t.base = http.DefaultTransport
	}
	if t.interval == 0 {
		t.interval = DefaultInterval
	}
	if err := t.setBaseURL(cfg.BaseURL, cfg.AllowInsecureHTTP); err != nil {
		return nil, err
	}
	t.mu.Lock()
	ev, _ := t.readLocked(ctx, ReasonStart)
	t.mu.Unlock()
	t.report(ev)
	if ev.Err != nil {
		return nil, fmt.Errorf("codatauth: first read: %w", ev.Err)
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.wg.Add(1)
	go t.refreshLoop()
	return t, nil
}

func (t *Transport) setBaseURL(raw string, insecure bool) error {
	if raw == "" {
		raw = DefaultBaseURL
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return fmt.Errorf("codatauth: Config.BaseURL %q: want an absolute http(s) URL such as %s", raw, DefaultBaseURL)
	}
	t.scheme, t.host, t.port = u.Scheme, strings.ToLower(u.Hostname()), portOf(u)
	if secret.InClear(u) && !insecure {
		return fmt.Errorf("codatauth: Config.BaseURL %q: plain http would send the Codat key in clear; use https, or set AllowInsecureHTTP for a proxy you trust", raw)
	}
	return nil
}

// Client returns an *http.Client that sends its requests through t.
func (t *Transport) Client() *http.Client { return &http.Client{Transport: t} }

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !t.forCodat(req.URL) {
		return t.base.RoundTrip(req)
	}
	used := t.cur.Load()
	resp, err := t.base.RoundTrip(withHeader(req, used.values))
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	refusedAt := time.Now()
	t.unauthorized.Add(1)
	next := t.afterUnauthorized(req.Context(), used, refusedAt)
	if next == nil || !replayable(req) {
		return resp, nil
	}
	retry := withHeader(req, next.values)
	if req.GetBody != nil && req.Body != nil && req.Body != http.NoBody {
		body, err := req.GetBody()
		if err != nil {
			return resp, nil // the caller sees Codat's 401 rather than our failure
		}
		retry.Body = body
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10)) // lets the connection be reused
	resp.Body.Close()
	t.retries.Add(1)
	return t.base.RoundTrip(retry)
}

// afterUnauthorized returns the header to retry with after Codat refused
// used at refusedAt, or nil when there is none newer. It reads the source
// unless another request already brought a newer header, or a read that
// began after the refusal found nothing newer: a burst of 401s after an
// emergency rotation costs one read.
func (t *Transport) afterUnauthorized(ctx context.Context, used *credState, refusedAt time.Time) *credState {
	t.mu.Lock()
	if cur := t.cur.Load(); cur.cred.Header != used.cred.Header {
		t.mu.Unlock()
		return cur
	}
	if !t.lastRead.Before(refusedAt) {
		t.mu.Unlock()
		return nil
	}
	ev, st := t.readLocked(ctx, ReasonUnauthorized)
	t.mu.Unlock()
	t.report(ev)
	if ev.Err != nil || !ev.Changed {
		return nil
	}
	return st
}

// forCodat reports whether u is on Codat's scheme, host and port.
func (t *Transport) forCodat(u *url.URL) bool {
	return u.Scheme == t.scheme && strings.EqualFold(u.Hostname(), t.host) && portOf(u) == t.port
}

// withHeader returns a shallow copy of req, as a RoundTripper must not
// change the caller's request, with its own header map holding values as
// the Authorization header.
func withHeader(req *http.Request, values []string) *http.Request {
	r := new(http.Request)
	*r = *req
	h := make(http.Header, len(req.Header)+1)
	for k, v := range req.Header {
		h[k] = v
	}
	h["Authorization"] = values
	r.Header = h
	return r
}

// replayable reports whether req can be sent again: no body, or a body
// GetBody can make anew.
func replayable(req *http.Request) bool {
	return req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
}

func portOf(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if u.Scheme == "http" {
		return "80"
	}
	return "443"
}

// Current returns the credential in use.
func (t *Transport) Current() Credential { return t.cur.Load().cred }

// Stats returns the counters.
func (t *Transport) Stats() Stats {
	return Stats{
		Reads: t.reads.Load(), Failures: t.failures.Load(), Changes: t.changes.Load(),
		Unauthorized: t.unauthorized.Load(), Retries: t.retries.Load(),
	}
}

// Refresh reads the source now, as after an operator's signal, and
// returns the read's error.
func (t *Transport) Refresh(ctx context.Context) error {
	t.mu.Lock()
	ev, _ := t.readLocked(ctx, ReasonManual)
	t.mu.Unlock()
	t.report(ev)
	return ev.Err
}

// Close stops the background refresh and waits for it. The Transport
// still sends requests, with the last header it read.
func (t *Transport) Close() error {
	t.cancel()
	t.wg.Wait()
	return nil
}
