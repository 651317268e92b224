// Package codat speaks to Codat's API-key endpoints: list, create and
// delete, with the retry rules a key rotator needs. Its emulator
// subpackage is a faithful local stand-in for tests and demos.
package codat

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/codat-rotator/codat-rotator/internal/clock"
	"github.com/codat-rotator/codat-rotator/secret"
)

// DefaultBaseURL is Codat's one server. Paths carry no version prefix.
const DefaultBaseURL = "https://api.codat.io"

// MaxBodySize caps how much of any response the client reads.
const MaxBodySize = 1 << 20

// Operation names, used in errors and passed to Options.Observe.
const (
	OpList   = "list keys"
	OpCreate = "create key"
	OpDelete = "delete key"
)

// Options tune a Client. The zero value of every field has a default.
type Options struct {
	// BaseURL defaults to DefaultBaseURL.
	BaseURL string
	// HTTPClient defaults to a client with its own transport. Its Timeout
	// should stay zero: RequestTimeout bounds each attempt instead.
	HTTPClient *http.Client
	// RequestTimeout bounds one attempt, response body included
	// (default 30s).
	RequestTimeout time.Duration
	// MaxAttempts bounds the tries of one operation (default 5).
	MaxAttempts int
	// MinBackoff and MaxBackoff bound the jittered backoff between tries
	// (defaults 500ms and 30s; the step grows by 1.5 each try).
	MinBackoff, MaxBackoff time.Duration
	// MaxRetryAfter is the longest Retry-After the client waits out;
	// a longer one fails the call with ErrRateLimited (default 2m).
	MaxRetryAfter time.Duration
	// UserAgent is sent with every request (default "codat-rotator").
	UserAgent string
	// Observe, when set, is called after every HTTP exchange.
	Observe func(Exchange)
	// Budget, when set, is the process's Codat request budget, shared
	// by every client: each request, retries included, waits for it
	// before it is written. An IP-limit 429 narrows it for them all.
	Budget *Budget
	// Now and Sleep are the clock; tests replace them.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
}

// Exchange describes one HTTP attempt, for metrics.
type Exchange struct {
	Op       string
	Status   int // 0 when no response arrived
	Duration time.Duration
	Attempt  int
	Err      error
	// RateLimit is the kind of a 429 (RateLimitClientQuota or
	// RateLimitIP), empty otherwise.
	RateLimit string
}

// Client calls Codat with one API key. It is safe for concurrent use;
// WithKey gives a client for another key.
type Client struct {
	opts Options
	base *url.URL
	key  Secret
}

// New returns a client that authenticates with key.
func New(key Secret, opts Options) (*Client, error) {
	if opts.BaseURL == "" {
		opts.BaseURL = DefaultBaseURL
	}
	base, err := url.Parse(opts.BaseURL)
	if err != nil {
		return nil, fmt.Errorf("codat base url %q: %w", opts.BaseURL, err)
	}
	if base.Scheme != "http" && base.Scheme != "https" || base.Host == "" {
		return nil, fmt.Errorf("codat base url %q: want http(s)://host[:port][/path]", opts.BaseURL)
	}
	if base.User != nil || base.RawQuery != "" || base.Fragment != "" {
		return nil, fmt.Errorf("codat base url %q: must not carry user info, query or fragment", opts.BaseURL)
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	// Codat's API does not redirect. A redirect would take the key's
	// header along to wherever it points (Go re-sends it to the same host
	// on another scheme or port): it is answered as an error instead.
	hc := *opts.HTTPClient
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	opts.HTTPClient = &hc
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 30 * time.Second
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 5
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 500 * time.Millisecond
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(30*time.Second, opts.MinBackoff)
	}
	if opts.MaxRetryAfter <= 0 {
		opts.MaxRetryAfter = 2 * time.Minute
	}
	if opts.UserAgent == "" {
		opts.UserAgent = "codat-rotator"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Sleep == nil {
		opts.Sleep = clock.Sleep
	}
	return &Client{opts: opts, base: base, key: key}, nil
}

// WithKey returns a client that shares c's settings but authenticates
// with key.
func (c *Client) WithKey(key Secret) *Client {
	cc := *c
	cc.key = key
	return &cc
}

// BaseURL returns the server the client talks to.
func (c *Client) BaseURL() string { return c.base.String() }

// List returns every key of the client, made in the Portal or through
// the API, in Codat's (undocumented) order.
func (c *Client) List(ctx context.Context) ([]Key, error) {
	body, err := c.do(ctx, OpList, http.MethodGet, "apiKeys", nil)
	if err != nil {
		return nil, err
	}
	keys, err := DecodeKeyList(body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", OpList, err)
	}
	return keys, nil
}

// Create makes a key named name (no name when empty) and returns it with
// its raw value. It is never sent twice once it may have reached Codat:
// then the error matches ErrOutcomeUnknown and the caller looks for the
// key with FindByName. A 429 or a failure before the request was written
// is retried, since no key can have been made.
func (c *Client) Create(ctx context.Context, name string) (Key, error) {
	var payload []byte
	if name != "" {
		payload, _ = json.Marshal(struct {
			Name string `json:"name"`
		}{name})
	}
	body, err := c.do(ctx, OpCreate, http.MethodPost, "apiKeys", payload)
	if err != nil {
		if errors.Is(err, errMaybeSent) {
			return Key{}, &OutcomeUnknownError{Name: name, Err: errors.Unwrap(err)}
		}
		return Key{}, err
	}
	k, err := DecodeKey(body)
	if err != nil {
		// Codat made the key, but its answer cannot be used: only a lookup
		// by name can tell what was made.
		return Key{}, &OutcomeUnknownError{Name: name, Err: err}
	}
	return k, nil
}

// Delete removes the key with the given id. A 404 is returned as an
// error matching ErrNotFound; the rotator counts it as done.
func (c *Client) Delete(ctx context.Context, id string) error {
	if id == "" {
		return fmt.Errorf("%s: empty key id", OpDelete)
	}
	_, err := c.do(ctx, OpDelete, http.MethodDelete, "apiKeys/"+url.PathEscape(id), nil)
	return err
}

// FindByName lists the keys and returns those whose name is exactly name.
// Codat does not promise unique names, so there may be more than one.
func (c *Client) FindByName(ctx context.Context, name string) ([]Key, error) {
	keys, err := c.List(ctx)
	if err != nil {
		return nil, err
	}
	return KeysNamed(keys, name), nil
}

// KeysNamed returns the keys whose name is exactly name.
func KeysNamed(keys []Key, name string) []Key {
	var out []Key
	for _, k := range keys {
		if k.Name == name {
			out = append(out, k)
		}
	}
	return out
}

// errMaybeSent marks a create failure after the request may have reached
// Codat; Create turns it into an OutcomeUnknownError.
var errMaybeSent = errors.New("request may have reached codat")

type maybeSentError struct{ err error }

func (e *maybeSentError) Error() string        { return e.err.Error() }
func (e *maybeSentError) Unwrap() error        { return e.err }
func (e *maybeSentError) Is(target error) bool { return target == errMaybeSent }

// do runs one operation with retries and returns the body of a success
// response. Only create is not idempotent: for it, any failure after the
// request may have been written is returned at once, marked with
// errMaybeSent, and never retried.
func (c *Client) do(ctx context.Context, op, method, path string, payload []byte) ([]byte, error) {
	idempotent := method != http.MethodPost
	var last error
	for attempt := 1; attempt <= c.opts.MaxAttempts; attempt++ {
		if attempt > 1 {
			wait := c.backoff(attempt - 1)
			var apiErr *APIError
			if errors.As(last, &apiErr) && apiErr.StatusCode == http.StatusTooManyRequests && apiErr.RetryAfter > 0 {
				wait = apiErr.RetryAfter
			}
			if errors.As(last, &apiErr) && apiErr.rateLimitKind() == RateLimitIP && c.opts.Budget.PerMinute() > 0 {
				wait = 0 // the budget, narrowed, holds every client back
			}
			if err := c.opts.Sleep(ctx, wait); err != nil {
				return nil, fmt.Errorf("%s: %w (after: %v)", op, err, last)
			}
		}
		// The budget's wait comes before the request is written, and
		// before its timeout starts: a wait sends nothing, so a create
		// cut short here made no key and is not "outcome unknown".
		if _, err := c.opts.Budget.Wait(ctx); err != nil {
			if last != nil {
				return nil, fmt.Errorf("%s: waiting for the codat request budget: %w (after: %v)", op, err, last)
			}
			return nil, fmt.Errorf("%s: waiting for the codat request budget: %w", op, err)
		}
		body, apiErr, sent, err := c.attempt(ctx, op, method, path, payload, attempt)
		if err != nil {
			if ctx.Err() != nil {
				err = ctx.Err() // the caller gave up; say so rather than "context canceled" wrapped in url.Error
			}
			err = fmt.Errorf("%s: %w", op, err)
			if sent && !idempotent {
				return nil, &maybeSentError{err}
			}
			if ctx.Err() != nil || errors.Is(err, ErrBadResponse) {
				return nil, err
			}
			last = err
			continue
		}
		if apiErr == nil {
			return body, nil
		}
		switch {
		case apiErr.StatusCode == http.StatusTooManyRequests:
			if apiErr.rateLimitKind() == RateLimitIP {
				// Codat's limit per IP: every client sharing the budget
				// holds back, not only this one.
				c.opts.Budget.Narrow(apiErr.RetryAfter)
			}
			if apiErr.RetryAfter > c.opts.MaxRetryAfter {
				return nil, fmt.Errorf("%w: retry-after %s is longer than the %s the client waits", apiErr, apiErr.RetryAfter, c.opts.MaxRetryAfter)
			}
			last = apiErr // a 429 made nothing: safe to retry, create included
		case retryableStatus(apiErr.StatusCode):
			if !idempotent {
				return nil, &maybeSentError{apiErr}
			}
			last = apiErr
		default:
			return nil, apiErr
		}
	}
	var apiErr *APIError
	if last != nil && !errors.As(last, &apiErr) {
		// No answer at all, every time: the address or the way there.
		return nil, fmt.Errorf("%s: gave up after %d attempts: %w: codat unreachable at %s (is targets[].codat.base_url right, and Codat reachable from here: DNS, a proxy, an egress firewall?)",
			op, c.opts.MaxAttempts, last, secret.Origin(c.base))
	}
	return nil, fmt.Errorf("%s: gave up after %d attempts: %w", op, c.opts.MaxAttempts, last)
}

// attempt makes one HTTP exchange. It returns the body of a 2xx, or the
// decoded error of any other status. sent reports whether the request's
// headers were written, after which Codat may have acted on it.
func (c *Client) attempt(ctx context.Context, op, method, path string, payload []byte, n int) (body []byte, apiErr *APIError, sent bool, err error) {
	actx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	var wrote atomic.Bool
	actx = httptrace.WithClientTrace(actx, &httptrace.ClientTrace{
		WroteHeaders: func() { wrote.Store(true) },
	})
	var rd io.Reader
	if payload != nil {
		rd = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(actx, method, c.base.JoinPath(path).String(), rd)
	if err != nil {
		return nil, nil, false, err
	}
	req.Header.Set("Authorization", secret.AuthorizationHeader(c.key).Reveal())
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.opts.UserAgent)
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}

	status := 0
	start := c.opts.Now()
	defer func() {
		if c.opts.Observe != nil {
			x := Exchange{Op: op, Status: status, Duration: c.opts.Now().Sub(start), Attempt: n, Err: err}
			if apiErr != nil {
				x.RateLimit = apiErr.rateLimitKind()
			}
			c.opts.Observe(x)
		}
	}()
	resp, err := c.opts.HTTPClient.Do(req)
	if err != nil {
		return nil, nil, wrote.Load(), err
	}
	defer resp.Body.Close()
	status = resp.StatusCode
	body, err = io.ReadAll(io.LimitReader(resp.Body, MaxBodySize+1))
	if err != nil {
		return nil, nil, true, fmt.Errorf("read %d response: %w", status, err)
	}
	if status < 200 || status > 299 {
		if len(body) > MaxBodySize {
			body = nil // described by its size, not decoded
		}
		apiErr = DecodeError(op, status, resp.Header.Get("Content-Type"), body)
		if status >= 300 && status <= 399 {
			apiErr.Message = "a redirect, not followed: the key goes to " + secret.Origin(c.base) + " only"
			if loc, err := resp.Location(); err == nil {
				apiErr.Message = "a redirect to " + secret.Origin(loc) + ", not followed: the key goes to " + secret.Origin(c.base) + " only"
			}
		}
		apiErr.Message = redactKey(apiErr.Message, c.key)
		apiErr.CorrelationID = redactKey(apiErr.CorrelationID, c.key)
		apiErr.CanBeRetried = redactKey(apiErr.CanBeRetried, c.key)
		if ra := resp.Header.Get("Retry-After"); ra != "" {
			apiErr.RetryAfter, _ = ParseRetryAfter(ra, c.opts.Now())
		}
		if status == http.StatusTooManyRequests {
			left, err := strconv.Atoi(strings.TrimSpace(resp.Header.Get("X-Rate-Limit-Remaining")))
			apiErr.ClientQuota = err == nil && left <= 0
		}
		return nil, apiErr, true, nil
	}
	if len(body) > MaxBodySize {
		return nil, nil, true, fmt.Errorf("%w: %d response body exceeds %d bytes", ErrBadResponse, status, MaxBodySize)
	}
	return body, nil, true, nil
}

func (c *Client) backoff(retry int) time.Duration {
	d := float64(c.opts.MinBackoff)
	for i := 1; i < retry; i++ {
		d *= 1.5
		if d >= float64(c.opts.MaxBackoff) {
			d = float64(c.opts.MaxBackoff)
			break
		}
	}
	// Jitter in [d/2, d) so that a fleet does not retry in step.
	return time.Duration(d/2 + rand.Float64()*d/2)
}

// redactKey replaces in text, which comes from Codat and is stored,
// logged and sent on (state file, status, webhooks), every form of key
// it could quote: the raw key, its base64 (the Authorization header's
// value, with or without padding, in either alphabet).
func redactKey(text string, key Secret) string {
	raw := key.Reveal()
	if raw == "" || text == "" {
		return text
	}
	forms := []string{ // the longest first: a padded form holds the unpadded one
		base64.StdEncoding.EncodeToString([]byte(raw)),
		base64.URLEncoding.EncodeToString([]byte(raw)),
		base64.RawStdEncoding.EncodeToString([]byte(raw)),
		base64.RawURLEncoding.EncodeToString([]byte(raw)),
		raw,
	}
	for _, f := range forms {
		text = strings.ReplaceAll(text, f, secret.Redacted)
	}
	return text
}
