package emulator

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// maxNameLen is Codat's limit on a key name.
const maxNameLen = 50

// Codat's error messages, as its documentation words them where known.
const (
	msgUnauthorized = "Unauthorized. The API key is incorrect, has been deleted, or is not authorized."
	msgNameTooLong  = "Max string length (50) for `name` reached."
	msgCapReached   = "Maximum number of API keys reached. To create a new API key, delete an unused key and try again."
	msgNotFound     = "No API key was found with the given id."
	msgLastKey      = "The last remaining API key cannot be deleted."
	msgRateLimited  = "Too many requests. The rate limit for this client has been exceeded."
	msgIPLimited    = "Too many requests from this IP address. Please try again later."
	msgServerError  = "An internal server error occurred. Please try again later."
	msgMaintenance  = "The service is unavailable for maintenance. Please try again later."
	msgBadBody      = "The request body is not valid JSON for an API key."
	msgNoRoute      = "The requested resource does not exist."
	msgBadMethod    = "The method is not allowed for the requested resource."
)

// ServeHTTP answers Codat's paths and the emulator's own /_emulator/ paths.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == inspectPrefix || strings.HasPrefix(r.URL.Path, inspectPrefix+"/") {
		s.serveInspect(w, r)
		return
	}
	s.serveCodat(w, r)
}

// response is one Codat answer, computed under the lock and written after.
type response struct {
	status int
	body   any
	header http.Header
}

func (s *Server) serveCodat(w http.ResponseWriter, r *http.Request) {
	select {
	case <-s.done:
		panic(http.ErrAbortHandler) // closed: answer nothing
	default:
	}
	s.inflight.Add(1)
	defer s.inflight.Add(-1)
	s.rate.add(s.now())
	// Read the body first: net/http notices a client that goes away (and
	// cancels r.Context) only once the body is consumed, and hang and
	// latency faults wait on that.
	body, bodyErr := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	op, id, known := route(r.Method, r.URL.Path)

	s.mu.Lock()
	ev := Event{Seq: len(s.events) + 1, Time: s.now(), Method: r.Method, Path: r.URL.Path, Op: op}
	authKey := s.authenticate(r)
	if authKey != nil {
		ev.KeyID = authKey.id
	}
	var v verdict
	if f := s.faults.op(op); f != nil {
		v = f.decide(s.rng)
	}
	quotaLeft, quotaReset := s.spendQuota()
	s.mu.Unlock()

	h := w.Header()
	h.Set("X-Rate-Limit-Limit", strconv.Itoa(s.opts.DailyQuota))
	h.Set("X-Rate-Limit-Remaining", strconv.Itoa(max(quotaLeft, 0)))
	h.Set("X-Rate-Limit-Reset", quotaReset.Format(time.RFC3339))

	if v.latency > 0 && !s.wait(r, v.latency) {
		s.record(ev, 0, "latency interrupted")
		panic(http.ErrAbortHandler) // no answer at all, never an empty 200
	}

	var resp response
	switch {
	case s.opts.EnforceQuota && quotaLeft < 0:
		resp = s.rateLimited(quotaReset.Sub(s.now()), false)
		ev.Fault = "quota"
	case v.rateLimit:
		resp = s.rateLimited(v.retryAfter, v.asDate)
		ev.Fault = "rate_limit"
	case v.quotaLimit:
		// As if the day's quota were spent: the headers say so.
		resp = s.rateLimited(v.retryAfter, v.asDate)
		h.Set("X-Rate-Limit-Remaining", "0")
		ev.Fault = "quota_rate_limit"
	case v.hang:
		s.wait(r, 0)
		s.record(ev, 0, "hang")
		panic(http.ErrAbortHandler) // released by Close: drop, never an empty 200
	case v.failStatus == http.StatusTooManyRequests:
		resp = s.rateLimited(time.Second, false) // every 429 carries Retry-After
		ev.Fault = "fail"
	case v.failStatus != 0:
		resp = s.failure(v.failStatus)
		ev.Fault = "fail"
	case !known:
		resp = s.noRoute(r.Method, r.URL.Path)
	case authKey == nil:
		resp = errorResponse(http.StatusUnauthorized, msgUnauthorized, nil)
	default:
		resp = s.perform(op, id, r.URL.Query(), body, bodyErr)
	}

	if v.lose {
		// The operation happened; the client never hears of it.
		s.record(ev, 0, "lose_response")
		s.log.Info("response dropped", "op", op, "path", r.URL.Path, "status_not_sent", resp.status)
		panic(http.ErrAbortHandler)
	}
	s.record(ev, resp.status, ev.Fault)
	for k, vs := range resp.header {
		h[k] = vs
	}
	if resp.body == nil {
		w.WriteHeader(resp.status)
		return
	}
	h.Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(resp.status)
	_ = json.NewEncoder(w).Encode(resp.body)
}

// route maps a Codat request to its operation. known is false for paths
// and methods Codat does not serve.
func route(method, path string) (op, id string, known bool) {
	switch {
	case path == "/apiKeys" && method == http.MethodGet:
		return OpList, "", true
	case path == "/apiKeys" && method == http.MethodPost:
		return OpCreate, "", true
	case strings.HasPrefix(path, "/apiKeys/") && method == http.MethodDelete:
		id = strings.TrimPrefix(path, "/apiKeys/")
		return OpDelete, id, id != "" && !strings.Contains(id, "/")
	case path == companiesPath && method == http.MethodGet:
		return OpListCompanies, "", true
	case path == companiesPath && method == http.MethodPost:
		return OpCreateCompany, "", true
	}
	return "", "", false
}

func (s *Server) noRoute(method, path string) response {
	if path == "/apiKeys" || path == companiesPath || strings.HasPrefix(path, "/apiKeys/") && method != http.MethodDelete {
		return errorResponse(http.StatusMethodNotAllowed, msgBadMethod, nil)
	}
	return errorResponse(http.StatusNotFound, msgNoRoute, nil)
}

// authenticate finds the key of the request's Basic header, live or
// deleted; the caller holds mu. A deleted key's use is a violation and
// authenticates nothing.
func (s *Server) authenticate(r *http.Request) *key {
	scheme, enc, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Basic") {
		return nil
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(enc))
	if err != nil || len(raw) == 0 {
		return nil
	}
	for _, k := range s.keys {
		if k.raw != string(raw) {
			continue
		}
		if !k.deleted.IsZero() {
			s.violate(ViolationDeletedKeyUsed, k.id, r.Method+" "+r.URL.Path+" with a key deleted at "+k.deleted.Format(time.RFC3339Nano))
			return nil
		}
		return k
	}
	return nil
}

// perform runs an authenticated Codat operation.
func (s *Server) perform(op, id string, query url.Values, body []byte, bodyErr error) response {
	switch op {
	case OpList:
		return s.list()
	case OpCreate:
		if bodyErr != nil {
			return errorResponse(http.StatusBadRequest, msgBadBody, nil)
		}
		return s.create(body)
	case OpListCompanies:
		return s.listCompanies(query)
	case OpCreateCompany:
		if bodyErr != nil {
			return errorResponse(http.StatusBadRequest, msgBadBody, nil)
		}
		return s.createCompany(body)
	default:
		return s.delete(id)
	}
}

func (s *Server) list() response {
	s.mu.Lock()
	defer s.mu.Unlock()
	results := []apiKeyDetails{}
	for _, k := range s.active() {
		d := details(k)
		if s.opts.ListOmitsRawKeys {
			d.APIKey = ""
		}
		results = append(results, d)
	}
	return response{status: http.StatusOK, body: map[string]any{"results": results}}
}

func (s *Server) create(body []byte) response {
	var req struct {
		Name *string `json:"name"`
	}
	if len(bytes.TrimSpace(body)) > 0 {
		if err := json.Unmarshal(body, &req); err != nil {
			return errorResponse(http.StatusBadRequest, msgBadBody, nil)
		}
	}
	name := ""
	if req.Name != nil {
		name = *req.Name
	}
	if len([]rune(name)) > maxNameLen {
		return errorResponse(http.StatusBadRequest, msgNameTooLong, &validation{Errors: []validationItem{{
			ItemID: "name", Message: msgNameTooLong, ValidatorName: "MaxLength",
		}}})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.active()) >= s.opts.MaxKeys {
		return errorResponse(http.StatusConflict, msgCapReached, nil)
	}
	k := s.addKey(name, OriginAPI)
	s.log.Info("key created", "key_id", k.id, "name", name)
	return response{status: http.StatusCreated, body: details(k)}
}

func (s *Server) delete(id string) response {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.find(id)
	if k == nil || !k.deleted.IsZero() {
		return errorResponse(http.StatusNotFound, msgNotFound, nil)
	}
	if len(s.active()) == 1 {
		s.violate(ViolationDeleteLastKey, id, "a client asked to delete the last remaining key")
		if !s.opts.AllowDeleteLast {
			return errorResponse(http.StatusBadRequest, msgLastKey, nil)
		}
	}
	k.deleted = s.now()
	s.log.Info("key deleted", "key_id", id)
	return response{status: http.StatusNoContent}
}

func (s *Server) rateLimited(after time.Duration, asDate bool) response {
	secs := int((after + time.Second - 1) / time.Second)
	h := http.Header{}
	if asDate {
		h.Set("Retry-After", s.now().Add(time.Duration(secs)*time.Second).Format(http.TimeFormat))
	} else {
		h.Set("Retry-After", strconv.Itoa(secs))
	}
	resp := errorResponse(http.StatusTooManyRequests, msgRateLimited, nil)
	resp.header = h
	return resp
}

func (s *Server) failure(status int) response {
	msg := msgServerError
	switch status {
	case http.StatusServiceUnavailable:
		msg = msgMaintenance
	case http.StatusUnauthorized, http.StatusForbidden:
		msg = msgUnauthorized
	case http.StatusPaymentRequired:
		msg = "The account limit of your plan has been exceeded."
	}
	return errorResponse(status, msg, nil)
}

// spendQuota counts one request against the day's quota and returns what
// is left (negative once overspent) and when it resets; the caller holds mu.
func (s *Server) spendQuota() (left int, reset time.Time) {
	day := s.now().Truncate(24 * time.Hour)
	if !day.Equal(s.quotaDay) {
		s.quotaDay, s.quotaUsed = day, 0
	}
	s.quotaUsed++
	return s.opts.DailyQuota - s.quotaUsed, day.Add(24 * time.Hour)
}

// quotaLeft is what is left of the day's quota, without spending any.
func (s *Server) quotaLeft() (left int, reset time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	day := s.now().Truncate(24 * time.Hour)
	used := s.quotaUsed
	if !day.Equal(s.quotaDay) {
		used = 0
	}
	return s.opts.DailyQuota - used, day.Add(24 * time.Hour)
}

// wait holds a request for d (for ever when d is 0) or until the client
// goes away or the emulator closes. It reports whether d passed.
func (s *Server) wait(r *http.Request, d time.Duration) bool {
	var timer <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-timer:
		return true
	case <-r.Context().Done():
	case <-s.done:
	}
	return false
}

func (s *Server) record(ev Event, status int, fault string) {
	ev.Status, ev.Fault = status, fault
	s.mu.Lock()
	ev.Seq = len(s.events) + 1
	s.events = append(s.events, ev)
	s.mu.Unlock()
	s.log.Debug("request", "method", ev.Method, "path", ev.Path, "key_id", ev.KeyID, "status", status, "fault", fault)
}

// apiKeyDetails is Codat's ApiKeyDetails: name is absent, not null, for
// an unnamed key.
type apiKeyDetails struct {
	ID          string `json:"id"`
	Name        string `json:"name,omitempty"`
	APIKey      string `json:"apiKey,omitempty"`
	CreatedDate string `json:"createdDate"`
}

func details(k *key) apiKeyDetails {
	return apiKeyDetails{ID: k.id, Name: k.name, APIKey: k.raw, CreatedDate: k.created.Format(time.RFC3339)}
}

// errorBody is Codat's error document. canBeRetried is a string.
type errorBody struct {
	StatusCode        int         `json:"statusCode"`
	Service           string      `json:"service"`
	Error             string      `json:"error"`
	CorrelationID     string      `json:"correlationId"`
	CanBeRetried      string      `json:"canBeRetried"`
	DetailedErrorCode int         `json:"detailedErrorCode"`
	Validation        *validation `json:"validation,omitempty"`
}

type validation struct {
	Errors   []validationItem `json:"errors"`
	Warnings []validationItem `json:"warnings"`
}

type validationItem struct {
	ItemID        string `json:"itemId"`
	Message       string `json:"message"`
	ValidatorName string `json:"validatorName"`
}

func errorResponse(status int, msg string, v *validation) response {
	if v != nil && v.Warnings == nil {
		v.Warnings = []validationItem{}
	}
	return response{status: status, body: errorBody{
		StatusCode:    status,
		Service:       "PublicApi",
		Error:         msg,
		CorrelationID: newCorrelationID(),
		CanBeRetried:  "Unknown",
		Validation:    v,
	}}
}
