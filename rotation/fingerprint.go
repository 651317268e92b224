package rotation

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"

	"github.com/codat-rotator/codat-rotator/secret"
	"github.com/codat-rotator/codat-rotator/store"
)

// Fingerprints let the daemon tell which key a secret serves by its raw
// value when Codat's listing leaves raw values out
// (docs/design.md#served-by-value). The state file keeps, per key id, an
// HMAC-SHA256 of the raw key under a random salt of that state file:
// one-way, never the key, and never comparable across state files.

// fingerprintLen is how many hex characters of the HMAC are kept: 128
// bits, far beyond any chance of two keys agreeing.
const fingerprintLen = 32

// Fingerprint returns the fingerprint of a raw key under salt; empty for
// an empty key.
func Fingerprint(salt []byte, v secret.Value) string {
	if v.Empty() {
		return ""
	}
	m := hmac.New(sha256.New, salt)
	m.Write([]byte(v.Reveal()))
	return hex.EncodeToString(m.Sum(nil))[:fingerprintLen]
}

func (e *Engine) fingerprint(v secret.Value) string { return Fingerprint(e.Salt, v) }

// Prints are the fingerprints a state records, by key id.
type Prints map[string]string

// PrintsOf returns the fingerprints st records.
func PrintsOf(st store.Target) Prints {
	p := Prints{}
	for _, k := range st.Keys {
		if k.Fingerprint != "" {
			p[k.ID] = k.Fingerprint
		}
	}
	return p
}
