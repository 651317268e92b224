package codatauth

import (
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/codat-rotator/codat-rotator/secret"
)

// Source is where a Transport reads the credential: a VaultSource or a
// FileSource. Load is called by one goroutine at a time per Transport,
// never on the request path.
type Source interface {
	// Load reads the source now.
	Load(ctx context.Context) (Credential, error)
	// String names the source in errors and events, such as
	// "vault secret secret/data/codat/production" or "file /run/app/codat".
	String() string
}

// Credential is what a source holds: the Authorization header and, when
// the source says, the key's id and the times codat-rotator publishes
// beside it (docs/design.md#vault-layout).
type Credential struct {
	// Header is the value of the Authorization header Codat expects:
	// "Basic " and the base64 of the key. It prints as [REDACTED].
	Header secret.Value
	// KeyID is Codat's id of the key; empty when the source does not say
	// (a file holding only the header).
	KeyID string
	// RotatedAt is when codat-rotator published this key; zero when
	// unknown.
	RotatedAt time.Time
	// NextRotationAt is the daemon's next scheduled rotation after that
	// publish; zero when unknown. A Transport reads the source again just
	// after it.
	NextRotationAt time.Time
}

// Field names of the secret codat-rotator writes (docs/design.md#vault-layout).
const (
	fieldAPIKey         = "api_key"
	fieldHeader         = "authorization_header"
	fieldKeyID          = "key_id"
	fieldRotatedAt      = "rotated_at"
	fieldNextRotationAt = "next_rotation_at"
	// metadataNextRotationAt is the custom metadata in which a
	// restarted daemon records its plan (docs/design.md#vault-layout).
	metadataNextRotationAt = "next-rotation-at"
)

// fromFields reads a Credential from the fields of a secret, as Vault
// holds it or as a JSON file renders it. where names the source for
// errors; no error shows a field's value.
func fromFields(where string, data map[string]any) (Credential, error) {
	str := func(name string) (string, error) {
		switch v := data[name].(type) {
		case nil:
			return "", nil
		case string:
			return v, nil
		default:
			return "", fmt.Errorf("%s: %w: %s is a %T, want a string", where, ErrMalformed, name, v)
		}
	}
	h, err := str(fieldHeader)
	if err != nil {
		return Credential{}, err
	}
	if h == "" {
		names := make([]string, 0, len(data))
		for k := range data {
			names = append(names, k)
		}
		slices.Sort(names)
		return Credential{}, fmt.Errorf("%s: %w field (fields there: %s); codat-rotator writes it at every publish: point the source at the secret of a codat-rotator target",
			where, ErrNoHeader, orNone(names))
	}
	c := Credential{Header: secret.Value(h)}
	if err := checkHeader(c.Header); err != nil {
		return Credential{}, fmt.Errorf("%s: %s: %w", where, fieldHeader, err)
	}
	key, err := str(fieldAPIKey)
	if err != nil {
		return Credential{}, err
	}
	// The daemon refuses such a secret too (docs/design.md#vault-layout):
	// someone edited one field and not the other.
	if key != "" && secret.AuthorizationHeader(secret.Value(key)) != c.Header {
		return Credential{}, fmt.Errorf("%s: %w: %s does not match %s; republish the secret (codat-rotator rotate) or fix it by hand", where, ErrMalformed, fieldHeader, fieldAPIKey)
	}
	if c.KeyID, err = str(fieldKeyID); err != nil {
		return Credential{}, err
	}
	for _, f := range []struct {
		name string
		dst  *time.Time
	}{{fieldRotatedAt, &c.RotatedAt}, {fieldNextRotationAt, &c.NextRotationAt}} {
		v, err := str(f.name)
		if err != nil {
			return Credential{}, err
		}
		if v == "" {
			continue // unknown, as the layout allows
		}
		if *f.dst, err = time.Parse(time.RFC3339, v); err != nil {
			return Credential{}, fmt.Errorf("%s: %w: %s %q is not an RFC 3339 time", where, ErrMalformed, f.name, v)
		}
	}
	return c, nil
}

// checkHeader checks that h is "Basic " and the padded, standard base64
// of a non-empty key, as Codat expects (docs/design.md#codat-api). The
// error never shows h.
func checkHeader(h secret.Value) error {
	scheme, enc, ok := strings.Cut(h.Reveal(), " ")
	if !ok || !strings.EqualFold(scheme, "Basic") {
		return fmt.Errorf("%w: not of the form \"Basic <base64 of the key>\"", ErrMalformed)
	}
	for _, r := range enc {
		if r <= ' ' || r > '~' {
			return fmt.Errorf("%w: the header holds a space or a control character after \"Basic \"", ErrMalformed)
		}
	}
	key, err := base64.StdEncoding.DecodeString(enc)
	if err != nil || len(key) == 0 {
		return fmt.Errorf("%w: the part after \"Basic \" is not the standard, padded base64 of a key", ErrMalformed)
	}
	return nil
}

func orNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}
