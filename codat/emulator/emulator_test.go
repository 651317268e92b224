package emulator_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/codat/emulator"
)

// epoch is the emulator's clock in these tests: a non-UTC zone, so that
// the tests see the emulator report UTC.
var epoch = time.Date(2024, time.March, 5, 14, 30, 0, 0, time.FixedZone("CET", 3600))

// docKey and docHeader are Codat's example (docs/design.md#codat-api):
// the key alone, standard base64 with padding.
const (
	docKey    = "ztHQGvnC4XN2CgUhaDWEG4ySLUJqWjp7zkbZkGHd"
	docHeader = "Basic enRIUUd2bkM0WE4yQ2dVaGFEV0VHNHlTTFVKcVdqcDd6a2Jaa0dIZA=="
)

// Codat's messages, as docs/design.md#codat-api quotes them.
const (
	msgNameTooLong = "Max string length (50) for `name` reached."
	msgCapReached  = "Maximum number of API keys reached. To create a new API key, delete an unused key and try again."
)

var (
	uuidShape   = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	rawKeyShape = regexp.MustCompile(`^[A-Za-z0-9]{40}$`)
	hex32Shape  = regexp.MustCompile(`^[0-9a-f]{32}$`)
)

// clock is a settable clock for Options.Now; the emulator calls it from
// its handlers, so it locks.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// harness is an emulator over real HTTP, spoken to with raw requests so
// that the wire format is what is checked.
type harness struct {
	emu   *emulator.Server
	srv   *httptest.Server
	clock *clock
	key   string // the initial key's raw value
}

func newHarness(tb testing.TB, opts emulator.Options) *harness {
	tb.Helper()
	c := &clock{t: epoch}
	if opts.Now == nil {
		opts.Now = c.Now
	}
	emu, err := emulator.New(opts)
	if err != nil {
		tb.Fatalf("emulator.New: %v", err)
	}
	srv := httptest.NewServer(emu)
	// Cleanups run last-in first-out: release hung requests, then close
	// the server, which waits for its handlers.
	tb.Cleanup(srv.Close)
	tb.Cleanup(emu.Close)
	return &harness{emu: emu, srv: srv, clock: c, key: emu.InitialKey()}
}

// exchange is one raw request. An empty authorization sends no header;
// an empty body sends none.
type exchange struct {
	method, path, authorization, body string
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

func basic(key string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(key))
}

// as is an exchange authenticated with key.
func as(key, method, path, body string) exchange {
	return exchange{method: method, path: path, authorization: basic(key), body: body}
}

func (h *harness) try(ctx context.Context, ex exchange) (reply, error) {
	var rd io.Reader
	if ex.body != "" {
		rd = strings.NewReader(ex.body)
	}
	req, err := http.NewRequestWithContext(ctx, ex.method, h.srv.URL+ex.path, rd)
	if err != nil {
		return reply{}, err
	}
	if ex.authorization != "" {
		req.Header.Set("Authorization", ex.authorization)
	}
	if ex.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, err
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: body}, nil
}

func (h *harness) send(tb testing.TB, ex exchange) reply {
	tb.Helper()
	r, err := h.try(context.Background(), ex)
	if err != nil {
		tb.Fatalf("%s %s: %v", ex.method, ex.path, err)
	}
	return r
}

// wireKey is ApiKeyDetails as the tests read it back.
type wireKey struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	APIKey      string `json:"apiKey"`
	CreatedDate string `json:"createdDate"`
}

// create makes a key through the API with the given key, and fails the
// test unless it gets a 201.
func (h *harness) create(tb testing.TB, key, name string) wireKey {
	tb.Helper()
	body := ""
	if name != "" {
		body = fmt.Sprintf(`{"name":%q}`, name)
	}
	r := h.send(tb, as(key, http.MethodPost, "/apiKeys", body))
	if r.status != http.StatusCreated {
		tb.Fatalf("create %q: got %d %s, want 201", name, r.status, r.body)
	}
	var k wireKey
	if err := json.Unmarshal(r.body, &k); err != nil {
		tb.Fatalf("create %q: %v", name, err)
	}
	return k
}

func (h *harness) list(tb testing.TB, key string) []wireKey {
	tb.Helper()
	r := h.send(tb, as(key, http.MethodGet, "/apiKeys", ""))
	if r.status != http.StatusOK {
		tb.Fatalf("list: got %d %s, want 200", r.status, r.body)
	}
	var l struct{ Results []wireKey }
	if err := json.Unmarshal(r.body, &l); err != nil {
		tb.Fatalf("list: %v", err)
	}
	return l.Results
}

// inspect GETs an /_emulator/ report and decodes it into v.
func (h *harness) inspect(tb testing.TB, path string, v any) {
	tb.Helper()
	r := h.send(tb, exchange{method: http.MethodGet, path: path})
	if r.status != http.StatusOK {
		tb.Fatalf("GET %s: got %d %s", path, r.status, r.body)
	}
	if err := json.Unmarshal(r.body, v); err != nil {
		tb.Fatalf("GET %s: %v in %s", path, err, r.body)
	}
}

func (h *harness) events(tb testing.TB) []emulator.Event {
	tb.Helper()
	var rep emulator.EventsReport
	h.inspect(tb, "/_emulator/events", &rep)
	return rep.Events
}

func (h *harness) violations(tb testing.TB) []emulator.Violation {
	tb.Helper()
	var rep emulator.ViolationsReport
	h.inspect(tb, "/_emulator/violations", &rep)
	return rep.Violations
}

func (h *harness) keys(tb testing.TB) emulator.KeysReport {
	tb.Helper()
	var rep emulator.KeysReport
	h.inspect(tb, "/_emulator/keys", &rep)
	return rep
}

// initialID is the id of the key the client started with.
func (h *harness) initialID(tb testing.TB) string {
	tb.Helper()
	for _, k := range h.keys(tb).Keys {
		if k.Origin == emulator.OriginInitial {
			return k.ID
		}
	}
	tb.Fatal("no initial key in /_emulator/keys")
	return ""
}

// waitEvent waits for an event that matches, since a handler records a
// request the client gave up on only once it notices.
func (h *harness) waitEvent(tb testing.TB, match func(emulator.Event) bool) emulator.Event {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, e := range h.events(tb) {
			if match(e) {
				return e
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("no matching event within 5s; events: %+v", h.events(tb))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func violationsOf(vs []emulator.Violation, kind string) []emulator.Violation {
	var out []emulator.Violation
	for _, v := range vs {
		if v.Kind == kind {
			out = append(out, v)
		}
	}
	return out
}

// checkRateLimitHeaders checks the X-Rate-Limit-* headers every Codat
// response carries, and returns Remaining.
func checkRateLimitHeaders(tb testing.TB, h http.Header, wantLimit int) int {
	tb.Helper()
	if got, want := h.Get("X-Rate-Limit-Limit"), strconv.Itoa(wantLimit); got != want {
		tb.Errorf("X-Rate-Limit-Limit: got %q, want %q", got, want)
	}
	remaining, err := strconv.Atoi(h.Get("X-Rate-Limit-Remaining"))
	if err != nil || remaining < 0 || remaining > wantLimit {
		tb.Errorf("X-Rate-Limit-Remaining: got %q, want a count in [0, %d]", h.Get("X-Rate-Limit-Remaining"), wantLimit)
	}
	reset, err := time.Parse(time.RFC3339, h.Get("X-Rate-Limit-Reset"))
	if err != nil {
		tb.Errorf("X-Rate-Limit-Reset: %v", err)
	} else if want := time.Date(2024, time.March, 6, 0, 0, 0, 0, time.UTC); !reset.Equal(want) {
		// Quotas reset at 00:00 UTC: the midnight after epoch.
		tb.Errorf("X-Rate-Limit-Reset: got %s, want %s", reset, want)
	}
	return remaining
}

// fieldNames returns the sorted names of a JSON object's fields.
func fieldNames(tb testing.TB, body []byte) (map[string]json.RawMessage, []string) {
	tb.Helper()
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		tb.Fatalf("body is not a JSON object: %v: %s", err, body)
	}
	names := make([]string, 0, len(fields))
	for n := range fields {
		names = append(names, n)
	}
	slices.Sort(names)
	return fields, names
}

// jsonString decodes a field that must be a JSON string.
func jsonString(tb testing.TB, fields map[string]json.RawMessage, name string) string {
	tb.Helper()
	raw := fields[name]
	var s string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		tb.Errorf("%s: got %s, want a JSON string", name, raw)
	}
	return s
}

// jsonNumber decodes a field that must be a JSON number.
func jsonNumber(tb testing.TB, fields map[string]json.RawMessage, name string) int {
	tb.Helper()
	raw := fields[name]
	var n int
	if len(raw) == 0 || !strings.ContainsRune("-0123456789", rune(raw[0])) || json.Unmarshal(raw, &n) != nil {
		tb.Errorf("%s: got %s, want a JSON number", name, raw)
	}
	return n
}

// checkErrorBody checks Codat's error document, the same for every
// error status. An empty wantMsg accepts any message.
func checkErrorBody(tb testing.TB, r reply, wantStatus int, wantMsg string) {
	tb.Helper()
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		tb.Errorf("Content-Type: got %q, want application/json", ct)
	}
	fields, names := fieldNames(tb, r.body)
	names = slices.DeleteFunc(names, func(n string) bool { return n == "validation" })
	want := []string{"canBeRetried", "correlationId", "detailedErrorCode", "error", "service", "statusCode"}
	if !slices.Equal(names, want) {
		tb.Errorf("error body fields: got %v, want %v (plus validation when not empty)", names, want)
	}
	if got := jsonNumber(tb, fields, "statusCode"); got != wantStatus {
		tb.Errorf("statusCode: got %d, want %d", got, wantStatus)
	}
	if got, want := jsonString(tb, fields, "service"), "PublicApi"; got != want {
		tb.Errorf("service: got %q, want %q", got, want)
	}
	msg := jsonString(tb, fields, "error")
	if msg == "" || wantMsg != "" && msg != wantMsg {
		tb.Errorf("error: got %q, want %q", msg, wantMsg)
	}
	if got := jsonString(tb, fields, "correlationId"); !hex32Shape.MatchString(got) {
		tb.Errorf("correlationId: got %q, want 32 hex digits", got)
	}
	jsonString(tb, fields, "canBeRetried")
	jsonNumber(tb, fields, "detailedErrorCode")
	if raw, ok := fields["validation"]; ok {
		var v struct {
			Errors   []map[string]string `json:"errors"`
			Warnings []map[string]string `json:"warnings"`
		}
		if err := json.Unmarshal(raw, &v); err != nil || len(v.Errors) == 0 || v.Warnings == nil {
			tb.Errorf("validation: got %s, want errors and warnings lists, omitted when empty", raw)
		}
	}
}

// checkKeyDetails checks one ApiKeyDetails: exactly the fields Codat
// sends, name absent (not null) for an unnamed key, apiKey absent only
// when wantRaw is false.
func checkKeyDetails(tb testing.TB, raw []byte, wantName string, wantRaw bool, wantCreated time.Time) wireKey {
	tb.Helper()
	fields, names := fieldNames(tb, raw)
	want := []string{"createdDate", "id"}
	if wantRaw {
		want = append(want, "apiKey")
	}
	if wantName != "" {
		want = append(want, "name")
	}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		tb.Errorf("ApiKeyDetails fields: got %v, want %v in %s", names, want, raw)
	}
	k := wireKey{ID: jsonString(tb, fields, "id"), CreatedDate: jsonString(tb, fields, "createdDate")}
	if !uuidShape.MatchString(k.ID) {
		tb.Errorf("id: got %q, want a UUID", k.ID)
	}
	if wantName != "" {
		if k.Name = jsonString(tb, fields, "name"); k.Name != wantName {
			tb.Errorf("name: got %q, want %q", k.Name, wantName)
		}
	}
	if wantRaw {
		if k.APIKey = jsonString(tb, fields, "apiKey"); !rawKeyShape.MatchString(k.APIKey) {
			tb.Errorf("apiKey: got %q, want 40 alphanumerics", k.APIKey)
		}
	}
	created, err := time.Parse(time.RFC3339, k.CreatedDate)
	if err != nil || !strings.HasSuffix(k.CreatedDate, "Z") {
		tb.Errorf("createdDate: got %q, want RFC 3339 in UTC (%v)", k.CreatedDate, err)
	} else if !created.Equal(wantCreated) {
		tb.Errorf("createdDate: got %s, want %s", created, wantCreated)
	}
	return k
}

// listResults returns the raw entries of a list body, checking that the
// body is {"results": [...]} and nothing else.
func listResults(tb testing.TB, body []byte) []json.RawMessage {
	tb.Helper()
	fields, names := fieldNames(tb, body)
	if !slices.Equal(names, []string{"results"}) {
		tb.Fatalf("list body fields: got %v, want [results]", names)
	}
	var results []json.RawMessage
	if err := json.Unmarshal(fields["results"], &results); err != nil || results == nil {
		tb.Fatalf("results: got %s, want an array", fields["results"])
	}
	return results
}

// TestCodatFacts checks each fact of docs/design.md#codat-api on the
// wire. Every row runs on a fresh emulator; every reply must carry the
// rate-limit headers, every error reply Codat's error body, every 204 no
// body.
func TestCodatFacts(t *testing.T) {
	name50 := strings.Repeat("n", 50)
	tests := []struct {
		name       string
		opts       emulator.Options
		setup      func(tb testing.TB, h *harness) exchange
		wantStatus int
		wantError  string // the error message; "" accepts any
		check      func(tb testing.TB, h *harness, r reply)
	}{
		{
			name: "list returns the initial key, unnamed",
			setup: func(tb testing.TB, h *harness) exchange {
				return as(h.key, http.MethodGet, "/apiKeys", "")
			},
			wantStatus: http.StatusOK,
			check: func(tb testing.TB, h *harness, r reply) {
				results := listResults(tb, r.body)
				if len(results) != 1 {
					tb.Fatalf("results: got %d, want 1", len(results))
				}
				k := checkKeyDetails(tb, results[0], "", true, epoch)
				if k.APIKey != h.key {
					tb.Errorf("apiKey: got %q, want the initial key %q", k.APIKey, h.key)
				}
				if got, want := k.ID, h.initialID(tb); got != want {
					tb.Errorf("id: got %q, want %q", got, want)
				}
			},
		},
		{
			name: "list shows API and portal keys alike",
			setup: func(tb testing.TB, h *harness) exchange {
				h.create(tb, h.key, "api")
				if _, _, err := h.emu.AddPortalKey("portal"); err != nil {
					tb.Fatal(err)
				}
				return as(h.key, http.MethodGet, "/apiKeys", "")
			},
			wantStatus: http.StatusOK,
			check: func(tb testing.TB, h *harness, r reply) {
				results := listResults(tb, r.body)
				if len(results) != 3 {
					tb.Fatalf("results: got %d, want 3", len(results))
				}
				checkKeyDetails(tb, results[0], "", true, epoch)
				checkKeyDetails(tb, results[1], "api", true, epoch)
				checkKeyDetails(tb, results[2], "portal", true, epoch)
			},
		},
		{
			name: "list without raw keys when ListOmitsRawKeys",
			opts: emulator.Options{ListOmitsRawKeys: true},
			setup: func(tb testing.TB, h *harness) exchange {
				return as(h.key, http.MethodGet, "/apiKeys", "")
			},
			wantStatus: http.StatusOK,
			check: func(tb testing.TB, h *harness, r reply) {
				results := listResults(tb, r.body)
				if len(results) != 1 {
					tb.Fatalf("results: got %d, want 1", len(results))
				}
				checkKeyDetails(tb, results[0], "", false, epoch)
			},
		},
		{
			name: "create with a name is 201 with all four fields",
			setup: func(tb testing.TB, h *harness) exchange {
				h.clock.Advance(90 * time.Minute)
				return as(h.key, http.MethodPost, "/apiKeys", `{"name":"x"}`)
			},
			wantStatus: http.StatusCreated,
			check: func(tb testing.TB, h *harness, r reply) {
				k := checkKeyDetails(tb, r.body, "x", true, epoch.Add(90*time.Minute))
				if k.APIKey == h.key {
					tb.Error("apiKey: the new key has the initial key's value")
				}
				if got := h.list(tb, h.key); len(got) != 2 || got[1] != k {
					tb.Errorf("list after create: got %+v, want the initial key and %+v", got, k)
				}
			},
		},
		{
			name: "create with no body is 201 without name",
			setup: func(tb testing.TB, h *harness) exchange {
				return as(h.key, http.MethodPost, "/apiKeys", "")
			},
			wantStatus: http.StatusCreated,
			check: func(tb testing.TB, h *harness, r reply) {
				checkKeyDetails(tb, r.body, "", true, epoch)
			},
		},
		{
			name: "create with a null name is 201 without name",
			setup: func(tb testing.TB, h *harness) exchange {
				return as(h.key, http.MethodPost, "/apiKeys", `{"name":null}`)
			},
			wantStatus: http.StatusCreated,
			check: func(tb testing.TB, h *harness, r reply) {
				checkKeyDetails(tb, r.body, "", true, epoch)
			},
		},
		{
			name: "create with a 50-character name is 201",
			setup: func(tb testing.TB, h *harness) exchange {
				return as(h.key, http.MethodPost, "/apiKeys", `{"name":"`+name50+`"}`)
			},
			wantStatus: http.StatusCreated,
			check: func(tb testing.TB, h *harness, r reply) {
				checkKeyDetails(tb, r.body, name50, true, epoch)
			},
		},
		{
			name: "create with a 51-character name is 400",
			setup: func(tb testing.TB, h *harness) exchange {
				return as(h.key, http.MethodPost, "/apiKeys", `{"name":"`+name50+`x"}`)
			},
			wantStatus: http.StatusBadRequest,
			wantError:  msgNameTooLong,
			check: func(tb testing.TB, h *harness, r reply) {
				if got := h.emu.ActiveKeys(); got != 1 {
					tb.Errorf("keys: got %d, want 1 (nothing made)", got)
				}
			},
		},
		{
			name: "create with a body that is not JSON is 400",
			setup: func(tb testing.TB, h *harness) exchange {
				return as(h.key, http.MethodPost, "/apiKeys", `{"name":`)
			},
			wantStatus: http.StatusBadRequest,
		},
		{
			name: "names need not be unique",
			setup: func(tb testing.TB, h *harness) exchange {
				h.create(tb, h.key, "twin")
				return as(h.key, http.MethodPost, "/apiKeys", `{"name":"twin"}`)
			},
			wantStatus: http.StatusCreated,
			check: func(tb testing.TB, h *harness, r reply) {
				checkKeyDetails(tb, r.body, "twin", true, epoch)
			},
		},
		{
			name: "create the 11th key is 409",
			setup: func(tb testing.TB, h *harness) exchange {
				for i := range 9 {
					h.create(tb, h.key, fmt.Sprintf("k%d", i))
				}
				return as(h.key, http.MethodPost, "/apiKeys", `{"name":"one-too-many"}`)
			},
			wantStatus: http.StatusConflict,
			wantError:  msgCapReached,
			check: func(tb testing.TB, h *harness, r reply) {
				if got := h.emu.ActiveKeys(); got != 10 {
					tb.Errorf("keys: got %d, want 10", got)
				}
				if got := h.violations(tb); len(got) != 0 {
					tb.Errorf("violations: got %+v, want none", got)
				}
			},
		},
		{
			name: "delete is 204 with no body",
			setup: func(tb testing.TB, h *harness) exchange {
				k := h.create(tb, h.key, "doomed")
				return as(h.key, http.MethodDelete, "/apiKeys/"+k.ID, "")
			},
			wantStatus: http.StatusNoContent,
			check: func(tb testing.TB, h *harness, r reply) {
				if got := h.list(tb, h.key); len(got) != 1 || got[0].APIKey != h.key {
					tb.Errorf("list after delete: got %+v, want the initial key only", got)
				}
			},
		},
		{
			name: "delete an unknown id is 404",
			setup: func(tb testing.TB, h *harness) exchange {
				h.create(tb, h.key, "other")
				return as(h.key, http.MethodDelete, "/apiKeys/3f1c9a56-0000-4000-8000-000000000000", "")
			},
			wantStatus: http.StatusNotFound,
		},
		{
			name: "delete a deleted key is 404",
			setup: func(tb testing.TB, h *harness) exchange {
				k := h.create(tb, h.key, "twice")
				h.create(tb, h.key, "keeper")
				if r := h.send(tb, as(h.key, http.MethodDelete, "/apiKeys/"+k.ID, "")); r.status != http.StatusNoContent {
					tb.Fatalf("first delete: got %d", r.status)
				}
				return as(h.key, http.MethodDelete, "/apiKeys/"+k.ID, "")
			},
			wantStatus: http.StatusNotFound,
		},
		{
			name: "delete the last key is 400 and a violation",
			setup: func(tb testing.TB, h *harness) exchange {
				return as(h.key, http.MethodDelete, "/apiKeys/"+h.initialID(tb), "")
			},
			wantStatus: http.StatusBadRequest,
			check: func(tb testing.TB, h *harness, r reply) {
				got := violationsOf(h.violations(tb), emulator.ViolationDeleteLastKey)
				if len(got) != 1 || got[0].KeyID != h.initialID(tb) {
					tb.Errorf("delete_last_key violations: got %+v, want one for the initial key", got)
				}
				if got := h.emu.ActiveKeys(); got != 1 {
					tb.Errorf("keys: got %d, want 1 (the last key kept)", got)
				}
			},
		},
		{
			name: "delete the last key with AllowDeleteLast is 204 and still a violation",
			opts: emulator.Options{AllowDeleteLast: true},
			setup: func(tb testing.TB, h *harness) exchange {
				return as(h.key, http.MethodDelete, "/apiKeys/"+h.initialID(tb), "")
			},
			wantStatus: http.StatusNoContent,
			check: func(tb testing.TB, h *harness, r reply) {
				if got := violationsOf(h.violations(tb), emulator.ViolationDeleteLastKey); len(got) != 1 {
					tb.Errorf("delete_last_key violations: got %+v, want 1", got)
				}
			},
		},
		{
			name: "a key may delete itself",
			setup: func(tb testing.TB, h *harness) exchange {
				k := h.create(tb, h.key, "self")
				return as(k.APIKey, http.MethodDelete, "/apiKeys/"+k.ID, "")
			},
			wantStatus: http.StatusNoContent,
			check: func(tb testing.TB, h *harness, r reply) {
				if got := h.emu.ActiveKeys(); got != 1 {
					tb.Errorf("keys: got %d, want 1", got)
				}
			},
		},
		{
			name: "a deleted key gets 401 and is a violation",
			setup: func(tb testing.TB, h *harness) exchange {
				k := h.create(tb, h.key, "gone")
				if r := h.send(tb, as(h.key, http.MethodDelete, "/apiKeys/"+k.ID, "")); r.status != http.StatusNoContent {
					tb.Fatalf("delete: got %d", r.status)
				}
				return as(k.APIKey, http.MethodGet, "/apiKeys", "")
			},
			wantStatus: http.StatusUnauthorized,
			check: func(tb testing.TB, h *harness, r reply) {
				var gone string
				for _, k := range h.keys(tb).Keys {
					if k.Name == "gone" {
						gone = k.ID
					}
				}
				got := violationsOf(h.violations(tb), emulator.ViolationDeletedKeyUsed)
				if len(got) != 1 || got[0].KeyID != gone {
					tb.Errorf("deleted_key_used violations: got %+v, want one for %s", got, gone)
				}
			},
		},
		{
			name: "no Authorization is 401",
			setup: func(tb testing.TB, h *harness) exchange {
				return exchange{method: http.MethodGet, path: "/apiKeys"}
			},
			wantStatus: http.StatusUnauthorized,
		},
		{
			name: "malformed base64 is 401",
			setup: func(tb testing.TB, h *harness) exchange {
				return exchange{method: http.MethodGet, path: "/apiKeys", authorization: "Basic !!not*base64!!"}
			},
			wantStatus: http.StatusUnauthorized,
		},
		{
			name: "key encoded with a user: prefix is 401",
			setup: func(tb testing.TB, h *harness) exchange {
				return exchange{method: http.MethodGet, path: "/apiKeys", authorization: basic("user:" + h.key)}
			},
			wantStatus: http.StatusUnauthorized,
		},
		{
			name: "key encoded as a username with a colon is 401",
			setup: func(tb testing.TB, h *harness) exchange {
				return exchange{method: http.MethodGet, path: "/apiKeys", authorization: basic(h.key + ":")}
			},
			wantStatus: http.StatusUnauthorized,
		},
		{
			name: "unknown key is 401",
			setup: func(tb testing.TB, h *harness) exchange {
				return as("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", http.MethodGet, "/apiKeys", "")
			},
			wantStatus: http.StatusUnauthorized,
		},
		{
			name: "raw key without Basic is 401",
			setup: func(tb testing.TB, h *harness) exchange {
				return exchange{method: http.MethodGet, path: "/apiKeys", authorization: h.key}
			},
			wantStatus: http.StatusUnauthorized,
		},
		{
			name: "the documented header authenticates the documented key",
			opts: emulator.Options{InitialKey: docKey},
			setup: func(tb testing.TB, h *harness) exchange {
				if got := basic(docKey); got != docHeader {
					tb.Fatalf("basic(%q): got %q, want %q", docKey, got, docHeader)
				}
				return exchange{method: http.MethodGet, path: "/apiKeys", authorization: docHeader}
			},
			wantStatus: http.StatusOK,
			check: func(tb testing.TB, h *harness, r reply) {
				results := listResults(tb, r.body)
				if len(results) != 1 {
					tb.Fatalf("results: got %d, want 1", len(results))
				}
				if k := checkKeyDetails(tb, results[0], "", true, epoch); k.APIKey != docKey {
					tb.Errorf("apiKey: got %q, want %q", k.APIKey, docKey)
				}
			},
		},
		{
			name: "the documented key without padding is 401",
			opts: emulator.Options{InitialKey: docKey},
			setup: func(tb testing.TB, h *harness) exchange {
				return exchange{method: http.MethodGet, path: "/apiKeys", authorization: strings.TrimRight(docHeader, "=")}
			},
			wantStatus: http.StatusUnauthorized,
		},
		{
			name: "wrong method on /apiKeys is 405",
			setup: func(tb testing.TB, h *harness) exchange {
				return as(h.key, http.MethodPut, "/apiKeys", "")
			},
			wantStatus: http.StatusMethodNotAllowed,
		},
		{
			name: "unknown path is 404",
			setup: func(tb testing.TB, h *harness) exchange {
				return as(h.key, http.MethodGet, "/v2/apiKeys", "")
			},
			wantStatus: http.StatusNotFound,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.opts)
			r := h.send(t, tt.setup(t, h))
			if r.status != tt.wantStatus {
				t.Fatalf("status: got %d, want %d; body %s", r.status, tt.wantStatus, r.body)
			}
			checkRateLimitHeaders(t, r.header, 1000)
			switch {
			case r.status >= 400:
				checkErrorBody(t, r, tt.wantStatus, tt.wantError)
			case r.status == http.StatusNoContent:
				if len(r.body) != 0 {
					t.Errorf("204 body: got %q, want none", r.body)
				}
			default:
				if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
					t.Errorf("Content-Type: got %q, want application/json", ct)
				}
			}
			if tt.check != nil {
				tt.check(t, h, r)
			}
		})
	}
}

// TestRateLimitHeaders: every Codat response, errors included, carries
// the headers, and Remaining counts down by one a request.
func TestRateLimitHeaders(t *testing.T) {
	h := newHarness(t, emulator.Options{DailyQuota: 50})
	k := h.create(t, h.key, "other")
	exchanges := []exchange{
		as(h.key, http.MethodGet, "/apiKeys", ""),
		{method: http.MethodGet, path: "/apiKeys"},
		as(h.key, http.MethodPost, "/apiKeys", `{"name":"`+strings.Repeat("n", 51)+`"}`),
		as(h.key, http.MethodDelete, "/apiKeys/no-such-id", ""),
		as(h.key, http.MethodPatch, "/apiKeys", ""),
		as(h.key, http.MethodDelete, "/apiKeys/"+k.ID, ""),
		as(h.key, http.MethodPost, "/apiKeys", ""),
	}
	wantStatus := []int{200, 401, 400, 404, 405, 204, 201}
	// The create in the setup spent one request.
	want := 49
	for i, ex := range exchanges {
		r := h.send(t, ex)
		if r.status != wantStatus[i] {
			t.Errorf("%s %s: status %d, want %d", ex.method, ex.path, r.status, wantStatus[i])
		}
		want--
		if got := checkRateLimitHeaders(t, r.header, 50); got != want {
			t.Errorf("%s %s: X-Rate-Limit-Remaining got %d, want %d", ex.method, ex.path, got, want)
		}
	}
}

// TestQuota: with EnforceQuota, the request after the day's quota is a
// 429 whose Retry-After runs to midnight UTC.
func TestQuota(t *testing.T) {
	h := newHarness(t, emulator.Options{DailyQuota: 2, EnforceQuota: true})
	for range 2 {
		h.list(t, h.key)
	}
	r := h.send(t, as(h.key, http.MethodGet, "/apiKeys", ""))
	if r.status != http.StatusTooManyRequests {
		t.Fatalf("status: got %d, want 429", r.status)
	}
	checkErrorBody(t, r, http.StatusTooManyRequests, "")
	if got := checkRateLimitHeaders(t, r.header, 2); got != 0 {
		t.Errorf("X-Rate-Limit-Remaining: got %d, want 0", got)
	}
	// epoch is 13:30 UTC: 10h30m to midnight.
	if got, want := r.header.Get("Retry-After"), "37800"; got != want {
		t.Errorf("Retry-After: got %q, want %q", got, want)
	}
	h.clock.Advance(11 * time.Hour) // the next day: a fresh quota
	if r := h.send(t, as(h.key, http.MethodGet, "/apiKeys", "")); r.status != http.StatusOK {
		t.Errorf("next day: got %d, want 200", r.status)
	}
}

// TestStatusFaults: faults that answer an error status, set through the
// API or over HTTP. Each applies to the next request of its operation
// only, and before any side effect.
func TestStatusFaults(t *testing.T) {
	const otherName = "other"
	tests := []struct {
		name        string
		faults      string // JSON for POST /_emulator/faults; empty to use set
		set         emulator.Faults
		exchange    func(h *harness, other wireKey) exchange
		wantStatus  int
		wantAfter   int // status of the same exchange sent again
		wantEffects int // active keys after the faulted request
		check       func(tb testing.TB, h *harness, r reply)
	}{
		{
			name:        "rate_limit with retry_after in seconds",
			set:         emulator.Faults{List: emulator.OpFaults{RateLimit: 1, RetryAfter: emulator.Duration(3 * time.Second)}},
			exchange:    func(h *harness, _ wireKey) exchange { return as(h.key, http.MethodGet, "/apiKeys", "") },
			wantStatus:  http.StatusTooManyRequests,
			wantAfter:   http.StatusOK,
			wantEffects: 2,
			check: func(tb testing.TB, h *harness, r reply) {
				if got, want := r.header.Get("Retry-After"), "3"; got != want {
					tb.Errorf("Retry-After: got %q, want %q", got, want)
				}
			},
		},
		{
			name:        "rate_limit rounds retry_after up to whole seconds",
			set:         emulator.Faults{Delete: emulator.OpFaults{RateLimit: 1, RetryAfter: emulator.Duration(1500 * time.Millisecond)}},
			exchange:    func(h *harness, o wireKey) exchange { return as(h.key, http.MethodDelete, "/apiKeys/"+o.ID, "") },
			wantStatus:  http.StatusTooManyRequests,
			wantAfter:   http.StatusNoContent,
			wantEffects: 2,
			check: func(tb testing.TB, h *harness, r reply) {
				if got, want := r.header.Get("Retry-After"), "2"; got != want {
					tb.Errorf("Retry-After: got %q, want %q", got, want)
				}
			},
		},
		{
			name:        "rate_limit with retry_after_date sends an HTTP date",
			faults:      `{"create":{"rate_limit":1,"retry_after":"90s","retry_after_date":true}}`,
			exchange:    func(h *harness, _ wireKey) exchange { return as(h.key, http.MethodPost, "/apiKeys", "") },
			wantStatus:  http.StatusTooManyRequests,
			wantAfter:   http.StatusCreated,
			wantEffects: 2,
			check: func(tb testing.TB, h *harness, r reply) {
				v := r.header.Get("Retry-After")
				at, err := http.ParseTime(v)
				if err != nil {
					tb.Fatalf("Retry-After %q: %v", v, err)
				}
				if !strings.HasSuffix(v, " GMT") {
					tb.Errorf("Retry-After %q: want an IMF-fixdate in GMT", v)
				}
				want := h.clock.Now().Add(90 * time.Second)
				if d := at.Sub(want); d < -time.Second || d > time.Second {
					tb.Errorf("Retry-After: got %s, want about %s", at, want)
				}
			},
		},
		{
			name:        "fail 503 on list, set over HTTP",
			faults:      `{"list":{"fail":1,"fail_status":503}}`,
			exchange:    func(h *harness, _ wireKey) exchange { return as(h.key, http.MethodGet, "/apiKeys", "") },
			wantStatus:  http.StatusServiceUnavailable,
			wantAfter:   http.StatusOK,
			wantEffects: 2,
		},
		{
			name:        "fail with the default status is 500",
			set:         emulator.Faults{List: emulator.OpFaults{Fail: 1}},
			exchange:    func(h *harness, _ wireKey) exchange { return as(h.key, http.MethodGet, "/apiKeys", "") },
			wantStatus:  http.StatusInternalServerError,
			wantAfter:   http.StatusOK,
			wantEffects: 2,
		},
		{
			name:        "fail 402 on create makes no key",
			set:         emulator.Faults{Create: emulator.OpFaults{Fail: 1, FailStatus: 402}},
			exchange:    func(h *harness, _ wireKey) exchange { return as(h.key, http.MethodPost, "/apiKeys", `{"name":"paid"}`) },
			wantStatus:  http.StatusPaymentRequired,
			wantAfter:   http.StatusCreated,
			wantEffects: 2,
		},
		{
			name:        "fail 403 on delete deletes nothing",
			set:         emulator.Faults{Delete: emulator.OpFaults{Fail: 1, FailStatus: 403}},
			exchange:    func(h *harness, o wireKey) exchange { return as(h.key, http.MethodDelete, "/apiKeys/"+o.ID, "") },
			wantStatus:  http.StatusForbidden,
			wantAfter:   http.StatusNoContent,
			wantEffects: 2,
		},
		{
			name:        "faults of another operation do not apply",
			set:         emulator.Faults{Create: emulator.OpFaults{Fail: 1}, Delete: emulator.OpFaults{RateLimit: 1}},
			exchange:    func(h *harness, _ wireKey) exchange { return as(h.key, http.MethodGet, "/apiKeys", "") },
			wantStatus:  http.StatusOK,
			wantAfter:   http.StatusOK,
			wantEffects: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, emulator.Options{})
			other := h.create(t, h.key, otherName)
			if tt.faults != "" {
				r := h.send(t, exchange{method: http.MethodPost, path: "/_emulator/faults", body: tt.faults})
				if r.status != http.StatusOK {
					t.Fatalf("POST /_emulator/faults: got %d %s", r.status, r.body)
				}
			} else if err := h.emu.SetFaults(tt.set); err != nil {
				t.Fatal(err)
			}
			ex := tt.exchange(h, other)
			r := h.send(t, ex)
			if r.status != tt.wantStatus {
				t.Fatalf("status: got %d, want %d; body %s", r.status, tt.wantStatus, r.body)
			}
			checkRateLimitHeaders(t, r.header, 1000)
			if r.status >= 400 {
				checkErrorBody(t, r, tt.wantStatus, "")
			}
			if got := h.emu.ActiveKeys(); got != tt.wantEffects {
				t.Errorf("keys after the faulted request: got %d, want %d", got, tt.wantEffects)
			}
			events := h.events(t)
			ev := events[len(events)-1]
			wantFault := ""
			switch tt.wantStatus {
			case http.StatusTooManyRequests:
				wantFault = "rate_limit"
			case http.StatusOK:
			default:
				wantFault = "fail"
			}
			if ev.Status != tt.wantStatus || ev.Fault != wantFault || ev.KeyID != h.initialID(t) {
				t.Errorf("event: got %+v, want status %d, fault %q, the initial key", ev, tt.wantStatus, wantFault)
			}
			if tt.check != nil {
				tt.check(t, h, r)
			}
			if r := h.send(t, ex); r.status != tt.wantAfter {
				t.Errorf("the same request again: got %d, want %d (the fault used up)", r.status, tt.wantAfter)
			}
		})
	}
}

// TestFaultHang: a hung request is held until the client gives up, and
// recorded with status 0.
func TestFaultHang(t *testing.T) {
	h := newHarness(t, emulator.Options{Faults: emulator.Faults{List: emulator.OpFaults{Hang: 1}}})
	const timeout = 150 * time.Millisecond
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	start := time.Now()
	r, err := h.try(ctx, as(h.key, http.MethodGet, "/apiKeys", ""))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %d %s, %v; want the client's deadline", r.status, r.body, err)
	}
	if elapsed := time.Since(start); elapsed < timeout {
		t.Errorf("answered after %s, before the client's %s timeout", elapsed, timeout)
	}
	ev := h.waitEvent(t, func(e emulator.Event) bool { return e.Fault == "hang" })
	if ev.Status != 0 || ev.Op != emulator.OpList || ev.KeyID != h.initialID(t) {
		t.Errorf("event: got %+v, want status 0, op list, the initial key", ev)
	}
	if got := h.emu.InFlight(); got != 0 {
		t.Errorf("in flight after the hang was recorded: got %d, want 0", got)
	}
	if got := h.list(t, h.key); len(got) != 1 {
		t.Errorf("list after the hang: got %d keys, want 1", len(got))
	}
}

// TestFaultLoseResponse: the create happens, the answer never comes.
func TestFaultLoseResponse(t *testing.T) {
	h := newHarness(t, emulator.Options{})
	if err := h.emu.SetFaults(emulator.Faults{Create: emulator.OpFaults{LoseResponse: 1}}); err != nil {
		t.Fatal(err)
	}
	r, err := h.try(context.Background(), as(h.key, http.MethodPost, "/apiKeys", `{"name":"lost"}`))
	if err == nil {
		t.Fatalf("got %d %s, want a connection error", r.status, r.body)
	}
	if !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "connection reset") {
		t.Errorf("got %v, want EOF or a reset connection", err)
	}
	rep := h.keys(t)
	if rep.Active != 2 || len(rep.Keys) != 2 {
		t.Fatalf("/_emulator/keys: got %+v, want the initial key and the lost one", rep)
	}
	if k := rep.Keys[1]; k.Name != "lost" || k.Origin != emulator.OriginAPI || k.Deleted != nil {
		t.Errorf("lost key: got %+v, want an active API key named lost", k)
	}
	events := h.events(t)
	if len(events) != 1 {
		t.Fatalf("events: got %+v, want 1", events)
	}
	if ev := events[0]; ev.Status != 0 || ev.Fault != "lose_response" || ev.Op != emulator.OpCreate || ev.KeyID != h.initialID(t) {
		t.Errorf("event: got %+v, want status 0, fault lose_response, op create, the initial key", ev)
	}
	if got := h.list(t, h.key); len(got) != 2 || got[1].Name != "lost" {
		t.Errorf("list: got %+v, want the lost key listed", got)
	}
}

// TestFaultLatency: latency delays the answer and changes nothing else.
func TestFaultLatency(t *testing.T) {
	const latency = 50 * time.Millisecond
	h := newHarness(t, emulator.Options{Faults: emulator.Faults{Create: emulator.OpFaults{Latency: emulator.Duration(latency)}}})
	start := time.Now()
	k := h.create(t, h.key, "slow")
	if elapsed := time.Since(start); elapsed < latency {
		t.Errorf("answered after %s, want at least the %s latency", elapsed, latency)
	}
	if k.Name != "slow" {
		t.Errorf("name: got %q, want slow", k.Name)
	}
	events := h.events(t)
	if len(events) != 1 || events[0].Status != http.StatusCreated || events[0].Fault != "" {
		t.Errorf("events: got %+v, want one plain 201", events)
	}
}

// TestEvents: each Codat request is recorded with the key that
// authenticated it, none for a 401; /_emulator/ requests are not.
func TestEvents(t *testing.T) {
	h := newHarness(t, emulator.Options{})
	initial := h.initialID(t)
	other := h.create(t, h.key, "other")
	h.list(t, other.APIKey)
	h.send(t, as("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", http.MethodGet, "/apiKeys", ""))
	h.send(t, as(other.APIKey, http.MethodDelete, "/apiKeys/"+other.ID, ""))
	h.send(t, as(other.APIKey, http.MethodGet, "/apiKeys", "")) // deleted: 401

	type row struct {
		Seq          int
		Method, Path string
		Op, KeyID    string
		Status       int
	}
	var got []row
	for _, e := range h.events(t) {
		if !e.Time.Equal(epoch) || e.Time.Location() != time.UTC {
			t.Errorf("event %d time: got %s, want %s in UTC", e.Seq, e.Time, epoch.UTC())
		}
		got = append(got, row{e.Seq, e.Method, e.Path, e.Op, e.KeyID, e.Status})
	}
	want := []row{
		{1, "POST", "/apiKeys", emulator.OpCreate, initial, 201},
		{2, "GET", "/apiKeys", emulator.OpList, other.ID, 200},
		{3, "GET", "/apiKeys", emulator.OpList, "", 401},
		{4, "DELETE", "/apiKeys/" + other.ID, emulator.OpDelete, other.ID, 204},
		{5, "GET", "/apiKeys", emulator.OpList, "", 401},
	}
	if !slices.Equal(got, want) {
		t.Errorf("events:\n got %+v\nwant %+v", got, want)
	}

	t.Run("since", func(t *testing.T) {
		var rep emulator.EventsReport
		h.inspect(t, "/_emulator/events?since=4", &rep)
		if len(rep.Events) != 2 || rep.Events[0].Seq != 4 {
			t.Errorf("events since 4: got %+v, want seq 4 and 5", rep.Events)
		}
		if r := h.send(t, exchange{method: http.MethodGet, path: "/_emulator/events?since=-1"}); r.status != http.StatusBadRequest {
			t.Errorf("since=-1: got %d, want 400", r.status)
		}
	})
}

// TestInspectKeys: /_emulator/keys lists every key ever made, deleted
// ones with the time of deletion, and never a raw value.
func TestInspectKeys(t *testing.T) {
	h := newHarness(t, emulator.Options{})
	k := h.create(t, h.key, "short-lived")
	h.clock.Advance(time.Hour)
	if r := h.send(t, as(h.key, http.MethodDelete, "/apiKeys/"+k.ID, "")); r.status != http.StatusNoContent {
		t.Fatalf("delete: got %d", r.status)
	}
	r := h.send(t, exchange{method: http.MethodGet, path: "/_emulator/keys"})
	if strings.Contains(string(r.body), h.key) || strings.Contains(string(r.body), k.APIKey) {
		t.Errorf("/_emulator/keys shows a raw key: %s", r.body)
	}
	rep := h.keys(t)
	if rep.Active != 1 || len(rep.Keys) != 2 {
		t.Fatalf("got %+v, want 2 keys, 1 active", rep)
	}
	if got := rep.Keys[0]; got.Origin != emulator.OriginInitial || got.Deleted != nil || !got.Created.Equal(epoch) {
		t.Errorf("initial key: got %+v", got)
	}
	got := rep.Keys[1]
	if got.ID != k.ID || got.Name != "short-lived" || got.Origin != emulator.OriginAPI || !got.Created.Equal(epoch) {
		t.Errorf("deleted key: got %+v, want %s made at %s", got, k.ID, epoch)
	}
	if want := epoch.Add(time.Hour); got.Deleted == nil || !got.Deleted.Equal(want) {
		t.Errorf("deleted key: deleted %v, want %s", got.Deleted, want)
	}
}

// TestPortalKeys: a key made as in the Portal works and counts toward
// the cap.
func TestPortalKeys(t *testing.T) {
	h := newHarness(t, emulator.Options{})
	r := h.send(t, exchange{method: http.MethodPost, path: "/_emulator/keys", body: `{"name":"portal"}`})
	if r.status != http.StatusCreated {
		t.Fatalf("POST /_emulator/keys: got %d %s, want 201", r.status, r.body)
	}
	var pk emulator.PortalKey
	if err := json.Unmarshal(r.body, &pk); err != nil {
		t.Fatal(err)
	}
	if !uuidShape.MatchString(pk.ID) || !rawKeyShape.MatchString(pk.APIKey) || pk.Name != "portal" {
		t.Errorf("portal key: got %+v", pk)
	}
	listed := h.list(t, pk.APIKey) // the portal key authenticates
	if len(listed) != 2 || listed[1].ID != pk.ID || listed[1].Name != "portal" {
		t.Errorf("list: got %+v, want the initial and the portal key", listed)
	}
	if got := h.keys(t).Keys[1].Origin; got != emulator.OriginPortal {
		t.Errorf("origin: got %q, want %q", got, emulator.OriginPortal)
	}
	for i := range 8 {
		h.create(t, h.key, fmt.Sprintf("k%d", i))
	}
	r = h.send(t, as(h.key, http.MethodPost, "/apiKeys", ""))
	if r.status != http.StatusConflict {
		t.Fatalf("create with 10 keys, one of them a portal key: got %d, want 409", r.status)
	}
	checkErrorBody(t, r, http.StatusConflict, msgCapReached)
	if r := h.send(t, exchange{method: http.MethodPost, path: "/_emulator/keys", body: `{}`}); r.status != http.StatusConflict {
		t.Errorf("portal key over the cap: got %d, want 409", r.status)
	}
	if r := h.send(t, exchange{method: http.MethodPost, path: "/_emulator/keys", body: `{"nmae":"typo"}`}); r.status != http.StatusBadRequest {
		t.Errorf("portal key with an unknown field: got %d, want 400", r.status)
	}
}

// TestFaultsEndpoint: POST /_emulator/faults sets faults, and refuses
// unknown fields and bad values without changing what is in force.
func TestFaultsEndpoint(t *testing.T) {
	h := newHarness(t, emulator.Options{})
	r := h.send(t, exchange{method: http.MethodPost, path: "/_emulator/faults", body: `{"delete":{"fail":2,"fail_status":502,"latency":"10ms"}}`})
	if r.status != http.StatusOK {
		t.Fatalf("valid faults: got %d %s, want 200", r.status, r.body)
	}
	want := emulator.Faults{Delete: emulator.OpFaults{Fail: 2, FailStatus: 502, Latency: emulator.Duration(10 * time.Millisecond)}}
	if got := h.emu.Faults(); got != want {
		t.Fatalf("faults in force: got %+v, want %+v", got, want)
	}
	bad := []struct{ name, body string }{
		{"unknown operation", `{"lists":{"fail":1}}`},
		{"unknown field", `{"list":{"fial":1}}`},
		{"negative latency", `{"list":{"latency":"-1s"}}`},
		{"latency not a duration", `{"list":{"latency":"soon"}}`},
		{"negative count", `{"create":{"rate_limit":-1}}`},
		{"fail_status not an error", `{"create":{"fail":1,"fail_status":200}}`},
		{"fail_status out of range", `{"create":{"fail":1,"fail_status":600}}`},
		{"rate above 1", `{"delete":{"fail_rate":1.5}}`},
		{"negative rate", `{"delete":{"hang_rate":-0.1}}`},
		{"wrong type", `{"list":{"hang":"yes"}}`},
		{"not JSON", `fail everything`},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			r := h.send(t, exchange{method: http.MethodPost, path: "/_emulator/faults", body: tt.body})
			if r.status != http.StatusBadRequest {
				t.Errorf("got %d %s, want 400", r.status, r.body)
			}
			var e struct{ Error string }
			if err := json.Unmarshal(r.body, &e); err != nil || !strings.HasPrefix(e.Error, "faults: ") {
				t.Errorf("body: got %s, want {\"error\": \"faults: ...\"}", r.body)
			}
			var got emulator.Faults
			h.inspect(t, "/_emulator/faults", &got)
			if got != want {
				t.Errorf("faults in force after a refused POST: got %+v, want %+v", got, want)
			}
		})
	}
	t.Run("ParseFaults agrees", func(t *testing.T) {
		for _, tt := range bad {
			if _, err := emulator.ParseFaults(tt.body); err == nil {
				t.Errorf("ParseFaults(%s): got no error", tt.body)
			}
		}
	})
	t.Run("SetFaults refuses bad values", func(t *testing.T) {
		if err := h.emu.SetFaults(emulator.Faults{List: emulator.OpFaults{FailRate: 2}}); err == nil {
			t.Error("SetFaults with fail_rate 2: got no error")
		}
		if got := h.emu.Faults(); got != want {
			t.Errorf("faults in force: got %+v, want %+v", got, want)
		}
	})
}

// TestOverCap: with MaxKeys above Codat's cap, the 11th key is made and
// recorded as a violation.
func TestOverCap(t *testing.T) {
	h := newHarness(t, emulator.Options{MaxKeys: 12})
	for i := range 9 {
		h.create(t, h.key, fmt.Sprintf("k%d", i))
	}
	if got := h.violations(t); len(got) != 0 {
		t.Fatalf("violations at 10 keys: got %+v, want none", got)
	}
	eleventh := h.create(t, h.key, "eleventh")
	got := h.violations(t)
	if len(got) != 1 || got[0].Kind != emulator.ViolationOverCap || got[0].KeyID != eleventh.ID || !got[0].Time.Equal(epoch) {
		t.Fatalf("violations at 11 keys: got %+v, want one over_cap for %s", got, eleventh.ID)
	}
	h.create(t, h.key, "twelfth")
	if got := violationsOf(h.violations(t), emulator.ViolationOverCap); len(got) != 2 {
		t.Errorf("over_cap violations at 12 keys: got %d, want 2", len(got))
	}
	r := h.send(t, as(h.key, http.MethodPost, "/apiKeys", ""))
	if r.status != http.StatusConflict {
		t.Errorf("13th key: got %d, want 409 at MaxKeys 12", r.status)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	tests := []struct {
		name string
		opts emulator.Options
	}{
		{"negative MaxKeys", emulator.Options{MaxKeys: -1}},
		{"short initial key", emulator.Options{InitialKey: "short"}},
		{"initial key with a space", emulator.Options{InitialKey: "abcd efgh ijkl"}},
		{"bad faults", emulator.Options{Faults: emulator.Faults{Create: emulator.OpFaults{Hang: -1}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := emulator.New(tt.opts); err == nil {
				t.Error("got no error")
			}
		})
	}
}
