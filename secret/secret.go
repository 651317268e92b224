// Package secret holds a value that must never be printed: a Codat API
// key, the Authorization header built from it, a Vault token. It is a
// leaf so that the adapters can share the type without importing each
// other: codat/ sends the header, vault/ publishes the key and the
// header, and neither depends on the other.
package secret

import (
	"encoding/base64"
	"fmt"
	"log/slog"
)

// Redacted is what a Value prints as, wherever it is formatted.
const Redacted = "[REDACTED]"

// Value is a raw secret: a Codat API key, a value derived from one such
// as its Authorization header, or a Vault token. It redacts itself in
// fmt, log/slog and JSON, so a careless log line or error cannot leak it;
// Reveal is the one way to get the value, and should appear only where
// the value leaves the process (an HTTP header, a Vault write).
type Value string

// Reveal returns the raw value.
func (s Value) Reveal() string { return string(s) }

// String implements fmt.Stringer and never returns the value.
func (s Value) String() string { return Redacted }

// GoString implements fmt.GoStringer for %#v.
func (s Value) GoString() string { return "secret.Value(" + Redacted + ")" }

// Format implements fmt.Formatter so that every verb, %x and %q included,
// prints the redacted form.
func (s Value) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = f.Write([]byte(s.GoString()))
		return
	}
	_, _ = f.Write([]byte(Redacted))
}

// LogValue implements slog.LogValuer.
func (s Value) LogValue() slog.Value { return slog.StringValue(Redacted) }

// MarshalJSON keeps the value out of any JSON the process writes by
// accident (a status document, a JSON log of a whole struct).
func (s Value) MarshalJSON() ([]byte, error) { return []byte(`"` + Redacted + `"`), nil }

// MarshalText covers encoders that prefer encoding.TextMarshaler.
func (s Value) MarshalText() ([]byte, error) { return []byte(Redacted), nil }

// Empty reports whether the secret holds no value.
func (s Value) Empty() bool { return s == "" }

// AuthorizationHeader returns the value of the Authorization header Codat
// expects for the API key: "Basic " and the standard, padded base64 of
// the key alone (no "user:" prefix, no colon). It lives here, not in
// codat/, because vault/ publishes the header beside the key.
func AuthorizationHeader(key Value) Value {
	return Value("Basic " + base64.StdEncoding.EncodeToString([]byte(key)))
}
