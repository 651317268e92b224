// Package sentinel makes the sentinel errors of the adapters: errors
// compared with errors.Is that also say, with a Retryable method, whether
// a later attempt may succeed. The engine asks that method instead of
// listing every adapter's errors. It is a leaf so that codat/ and vault/
// share it without importing each other.
package sentinel

// Error is a sentinel error. Make one with Retryable or Permanent.
type Error struct {
	msg       string
	retryable bool
}

// Retryable returns a sentinel for a failure that may pass: an outage,
// a rate limit, a conflict.
func Retryable(msg string) error { return &Error{msg, true} }

// Permanent returns a sentinel for a failure that needs a person: a
// refused key, a missing permission, a bad configuration.
func Permanent(msg string) error { return &Error{msg, false} }

func (e *Error) Error() string { return e.msg }

// Retryable reports whether a later attempt, from fresh state, may
// succeed.
func (e *Error) Retryable() bool { return e.retryable }

// IsRetryable is the answer of err if it is a sentinel, and true for any
// other error (nil included): the default for a failure that says nothing.
func IsRetryable(err error) bool {
	s, ok := err.(*Error)
	return !ok || s.retryable
}
