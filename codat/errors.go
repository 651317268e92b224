package codat

import (
	"fmt"
	"net/http"
	"time"

	"github.com/codat-rotator/codat-rotator/internal/sentinel"
)

// Sentinel errors for the cases the rotator must tell apart. An *APIError
// matches the sentinel of its status with errors.Is. Each says with its
// Retryable method whether a later attempt may succeed: permanent ones
// need a person (a new key, a bigger plan, a fixed request).
var (
	// ErrUnauthorized means the key no longer works: Codat answered 401
	// (incorrect or deleted key) or 403 (outdated key, or not associated
	// with the resource). Codat does not document which of the two a
	// deleted key gets, so both mean the same here.
	ErrUnauthorized = sentinel.Permanent("codat key not accepted")

	// ErrBadRequest is a 400: Codat refused the request as malformed,
	// for instance a key name over 50 characters.
	ErrBadRequest = sentinel.Permanent("codat rejected the request")

	// ErrPlanLimit is a 402: the account's plan limit is exceeded.
	ErrPlanLimit = sentinel.Permanent("codat account limit exceeded")

	// ErrNotFound is a 404: the key (or resource) does not exist.
	ErrNotFound = sentinel.Retryable("codat key not found")

	// ErrCapReached is a 409 on create: the client already holds the
	// maximum number of keys (10).
	ErrCapReached = sentinel.Retryable("codat key cap reached")

	// ErrRateLimited is a 429 that the client did not, or could no longer,
	// wait out.
	ErrRateLimited = sentinel.Retryable("codat rate limit")

	// ErrServer is a 5xx (or 408): a problem on Codat's side that may pass.
	ErrServer = sentinel.Retryable("codat server error")

	// ErrBadResponse means Codat answered with a success status but a body
	// that cannot be used (not JSON, too large, or missing id or apiKey).
	ErrBadResponse = sentinel.Retryable("unusable codat response")

	// ErrOutcomeUnknown means a create may or may not have made a key:
	// the request may have reached Codat but no answer came back (5xx,
	// timeout, connection dropped). The caller must look the key up by
	// its name rather than send the create again.
	ErrOutcomeUnknown = sentinel.Retryable("outcome unknown")
)

// APIError is an error status from Codat. It carries what Codat support
// asks for: the HTTP status and the correlation id.
type APIError struct {
	// Op is the operation that failed, such as "create key".
	Op string
	// StatusCode is the HTTP status. Codat's body also carries a
	// statusCode, which some published examples contradict; the HTTP
	// status wins.
	StatusCode int
	// Message is Codat's "error" field, or a short description of a
	// body that was not Codat's error JSON (a proxy's HTML page).
	Message string
	// CorrelationID is Codat's correlationId, empty when absent.
	CorrelationID string
	// CanBeRetried is Codat's canBeRetried string ("Unknown", "True", ...).
	CanBeRetried string
	// RetryAfter is the parsed Retry-After header of a 429 or 503, zero
	// when absent.
	RetryAfter time.Duration
	// ClientQuota marks a 429 explained by the client's own quota: its
	// X-Rate-Limit-Remaining is 0. Any other 429 is taken as the IP's
	// limit (docs/design.md#codat-budget).
	ClientQuota bool
}

// Kinds of 429, in Exchange.RateLimit and the metrics.
const (
	RateLimitClientQuota = "client_quota" // the client's own quota is spent
	RateLimitIP          = "ip"           // not explained by the client's quota: the IP's limit
)

// rateLimitKind is the kind of a 429, empty for another status.
func (e *APIError) rateLimitKind() string {
	switch {
	case e.StatusCode != http.StatusTooManyRequests:
		return ""
	case e.ClientQuota:
		return RateLimitClientQuota
	}
	return RateLimitIP
}

func (e *APIError) Error() string {
	msg := fmt.Sprintf("%s: codat answered %d %s", e.Op, e.StatusCode, http.StatusText(e.StatusCode))
	if e.Message != "" {
		msg += ": " + e.Message
	}
	if e.CorrelationID != "" {
		msg += " (correlation id " + e.CorrelationID + ")"
	}
	return msg
}

// kind is the sentinel of the status, nil for a status the rotator need
// not tell apart.
func (e *APIError) kind() error {
	switch code := e.StatusCode; {
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return ErrUnauthorized
	case code == http.StatusBadRequest:
		return ErrBadRequest
	case code == http.StatusPaymentRequired:
		return ErrPlanLimit
	case code == http.StatusNotFound:
		return ErrNotFound
	case code == http.StatusConflict:
		return ErrCapReached
	case code == http.StatusTooManyRequests:
		return ErrRateLimited
	case retryableStatus(code):
		return ErrServer
	}
	return nil
}

// Is maps the status to the sentinel errors above.
func (e *APIError) Is(target error) bool { return target != nil && target == e.kind() }

// Retryable reports whether a later attempt may succeed: it is the answer
// of the status's sentinel, and yes for a status without one.
func (e *APIError) Retryable() bool {
	return sentinel.IsRetryable(e.kind())
}

// OutcomeUnknownError is returned by Create when the request may have
// reached Codat and no usable answer came back. It matches
// ErrOutcomeUnknown.
type OutcomeUnknownError struct {
	// Name is the name the key was to be created with: the handle for
	// finding it with FindByName.
	Name string
	// Err is what went wrong: a 5xx, a timeout, a dropped connection.
	Err error
}

func (e *OutcomeUnknownError) Error() string {
	return fmt.Sprintf("create key %q: no usable answer from codat, which may have made the key: %v", e.Name, e.Err)
}

// Unwrap exposes the cause.
func (e *OutcomeUnknownError) Unwrap() error { return e.Err }

// Is matches ErrOutcomeUnknown.
func (e *OutcomeUnknownError) Is(target error) bool { return target == ErrOutcomeUnknown }

// retryableStatus reports whether a status is worth another try for an
// idempotent operation.
func retryableStatus(code int) bool {
	switch code {
	case http.StatusRequestTimeout, http.StatusTooManyRequests:
		return true
	}
	return code >= 500 && code <= 599
}
