package secret_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/codat-rotator/codat-rotator/secret"
)

func TestAuthorizationHeader(t *testing.T) {
	// Codat's example (docs/design.md#codat-api).
	got := secret.AuthorizationHeader("ztHQGvnC4XN2CgUhaDWEG4ySLUJqWjp7zkbZkGHd").Reveal()
	want := "Basic enRIUUd2bkM0WE4yQ2dVaGFEV0VHNHlTTFVKcVdqcDd6a2Jaa0dIZA=="
	if got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// TestRedaction: a value formatted any way, logged, marshalled or wrapped
// in an error never shows itself.
func TestRedaction(t *testing.T) {
	const raw = "ztHQGvnC4XN2CgUhaDWEG4ySLUJqWjp7zkbZkGHd"
	s := secret.Value(raw)
	h := secret.AuthorizationHeader(s)
	holder := struct {
		Key    secret.Value
		Header *secret.Value
	}{s, &h}
	var out bytes.Buffer
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10s", "%T"} {
		fmt.Fprintf(&out, verb+"|", s)
		fmt.Fprintf(&out, verb+"|", h)
		fmt.Fprintf(&out, verb+"|", holder)
	}
	fmt.Fprint(&out, s, h, []secret.Value{s}, map[string]secret.Value{"k": s})
	fmt.Fprint(&out, fmt.Errorf("wrapped: %v", s))
	for _, hnd := range []slog.Handler{slog.NewJSONHandler(&out, nil), slog.NewTextHandler(&out, nil)} {
		slog.New(hnd).Info("key", "key", s, "header", h, "holder", holder, "any", slog.AnyValue(s))
	}
	b, err := json.Marshal(holder)
	if err != nil {
		t.Fatal(err)
	}
	out.Write(b)
	if b, err = s.MarshalText(); err != nil {
		t.Fatal(err)
	}
	out.Write(b)

	got := out.String()
	for _, leak := range []string{raw, h.Reveal(), "enRIUUd2bkM0WE4y"} {
		if strings.Contains(got, leak) {
			t.Fatalf("secret %q leaked in:\n%s", leak, got)
		}
	}
	if !strings.Contains(got, secret.Redacted) {
		t.Fatalf("want %q in the output, got:\n%s", secret.Redacted, got)
	}
	if s.Reveal() != raw || s.Empty() || !secret.Value("").Empty() {
		t.Fatal("Reveal or Empty lost the value")
	}
}
