package codatauth_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/codatauth"
	"github.com/codat-rotator/codat-rotator/secret"
)

// Codat's documented example (docs/design.md#codat-api).
const (
	docKey    = "ztHQGvnC4XN2CgUhaDWEG4ySLUJqWjp7zkbZkGHd"
	docHeader = "Basic enRIUUd2bkM0WE4yQ2dVaGFEV0VHNHlTTFVKcVdqcDd6a2Jaa0dIZA=="
)

// TestFileFormats: the formats a FileSource reads, and the error each
// bad file gets, naming the file and never showing its content.
func TestFileFormats(t *testing.T) {
	rotated := time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC)
	next := rotated.Add(24 * time.Hour)
	tests := []struct {
		name    string
		content string // "" with missing: no file
		missing bool
		want    codatauth.Credential
		err     error
		errText string
	}{
		{name: "the header alone", content: docHeader, want: codatauth.Credential{Header: docHeader}},
		{name: "the header with a newline, as Vault Agent renders it", content: docHeader + "\n", want: codatauth.Credential{Header: docHeader}},
		{name: "JSON with every field", content: fmt.Sprintf(`{"api_key":%q,"authorization_header":%q,"key_id":"k1","key_name":"n","rotated_at":"2026-03-01T03:00:00Z","next_rotation_at":"2026-03-02T03:00:00Z","previous_key_id":""}`, docKey, docHeader),
			want: codatauth.Credential{Header: docHeader, KeyID: "k1", RotatedAt: rotated, NextRotationAt: next}},
		{name: "JSON with the header only", content: fmt.Sprintf(`{"authorization_header":%q}`, docHeader), want: codatauth.Credential{Header: docHeader}},
		{name: "JSON with empty times", content: fmt.Sprintf(`{"authorization_header":%q,"rotated_at":"","next_rotation_at":""}`, docHeader), want: codatauth.Credential{Header: docHeader}},
		{name: "missing file", missing: true, err: codatauth.ErrNotFound, errText: "check the path"},
		{name: "empty file", content: "\n", err: codatauth.ErrMalformed, errText: "the file is empty"},
		{name: "the raw key instead of the header", content: docKey, err: codatauth.ErrMalformed, errText: "not the raw api_key"},
		{name: "Bearer", content: "Bearer " + docKey, err: codatauth.ErrMalformed, errText: `not of the form "Basic <base64 of the key>"`},
		{name: "bad base64", content: "Basic " + docKey + "!", err: codatauth.ErrMalformed, errText: "not the standard, padded base64"},
		{name: "unpadded base64", content: strings.TrimRight(docHeader, "="), err: codatauth.ErrMalformed, errText: "padded base64"},
		{name: "a line break inside", content: docHeader[:20] + "\n" + docHeader[20:], err: codatauth.ErrMalformed, errText: "control character"},
		{name: "JSON without the header", content: fmt.Sprintf(`{"api_key":%q,"key_id":"k1"}`, docKey), err: codatauth.ErrNoHeader, errText: "fields there: api_key, key_id"},
		{name: "JSON header not matching api_key", content: fmt.Sprintf(`{"api_key":"other-key-0123456789","authorization_header":%q}`, docHeader), err: codatauth.ErrMalformed, errText: "authorization_header does not match api_key"},
		{name: "JSON header not a string", content: `{"authorization_header":42}`, err: codatauth.ErrMalformed, errText: "authorization_header is a float64, want a string"},
		{name: "JSON bad time", content: fmt.Sprintf(`{"authorization_header":%q,"next_rotation_at":"tomorrow"}`, docHeader), err: codatauth.ErrMalformed, errText: `next_rotation_at "tomorrow" is not an RFC 3339 time`},
		{name: "JSON cut short", content: fmt.Sprintf(`{"authorization_header":%q`, docHeader), err: codatauth.ErrMalformed, errText: "not valid JSON"},
		{name: "JSON array", content: `["x"]`, err: codatauth.ErrMalformed, errText: "not the raw api_key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "codat")
			if !tt.missing {
				if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, err := codatauth.NewFileSource(path).Load(context.Background())
			if tt.err == nil {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				if got != tt.want {
					t.Errorf("got %+v, want %+v", got, tt.want)
				}
				return
			}
			if !errors.Is(err, tt.err) {
				t.Fatalf("error: got %v, want one matching %v", err, tt.err)
			}
			if tt.missing && !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("error %v does not match fs.ErrNotExist", err)
			}
			for _, want := range []string{"file " + path, tt.errText} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			noSecret(t, err.Error(), docKey, docHeader)
		})
	}
}

// TestCredentialRedacts: the credential prints no secret however it is
// formatted.
func TestCredentialRedacts(t *testing.T) {
	c := codatauth.Credential{Header: secret.Value(docHeader), KeyID: "k1"}
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), fmt.Sprintf("%q", c.Header)} {
		noSecret(t, s, docKey, docHeader)
		if !strings.Contains(s, "REDACTED") {
			t.Errorf("%q: want [REDACTED] in place of the header", s)
		}
	}
}

// noSecret fails the test if out holds any of the secrets, or the base64
// part of a header.
func noSecret(tb testing.TB, out string, secrets ...string) {
	tb.Helper()
	for _, s := range secrets {
		if s == "" {
			continue
		}
		if strings.Contains(out, s) {
			tb.Errorf("a secret leaked into %q", out)
		}
		if enc, ok := strings.CutPrefix(s, "Basic "); ok && strings.Contains(out, enc) {
			tb.Errorf("a header's base64 leaked into %q", out)
		}
	}
}
