package codat

import (
	"encoding/base64"
	"fmt"
	"log/slog"
)

// Redacted is what a Secret prints as, wherever it is formatted.
const Redacted = "[REDACTED]"

// Secret is a raw Codat API key, or a value derived from one such as its
// Authorization header. It redacts itself in fmt, log/slog and JSON, so a
// careless log line or error cannot leak it; Reveal is the one way to get
// the value, and should appear only where the value leaves the process
// (an HTTP header, a Vault write).
type Secret string

// Reveal returns the raw value.
func (s Secret) Reveal() string { return string(s) }

// String implements fmt.Stringer and never returns the value.
func (s Secret) String() string { return Redacted }

// GoString implements fmt.GoStringer for %#v.
func (s Secret) GoString() string { return "codat.Secret(" + Redacted + ")" }

// Format implements fmt.Formatter so that every verb, %x and %q included,
// prints the redacted form.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = f.Write([]byte(s.GoString()))
		return
	}
	_, _ = f.Write([]byte(Redacted))
}

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(Redacted) }

// MarshalJSON keeps the value out of any JSON the process writes by
// accident (a status document, a JSON log of a whole struct).
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + Redacted + `"`), nil }

// MarshalText covers encoders that prefer encoding.TextMarshaler.
func (s Secret) MarshalText() ([]byte, error) { return []byte(Redacted), nil }

// Empty reports whether the secret holds no value.
func (s Secret) Empty() bool { return s == "" }

// AuthorizationHeader returns the value of the Authorization header Codat
// expects for the key s: "Basic " and the standard, padded base64 of the
// key alone (no "user:" prefix, no colon).
func AuthorizationHeader(key Secret) Secret {
	return Secret("Basic " + base64.StdEncoding.EncodeToString([]byte(key)))
}
