package codat_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/codat-rotator/codat-rotator/codat"
	"github.com/codat-rotator/codat-rotator/secret"
)

const leakyKey = "ztHQGvnC4XN2CgUhaDWEG4ySLUJqWjp7zkbZkGHd"

// TestKeyNeverFollowsARedirect: a base URL that answers 307 or 308 (to
// the same host on another port, here a plain listener) gets an error
// naming the redirect; the other listener never sees the key, for any
// operation.
func TestKeyNeverFollowsARedirect(t *testing.T) {
	var caught atomic.Int32
	catcher := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			caught.Add(1)
		}
		w.WriteHeader(http.StatusOK)
		fmt.Fprint(w, `{"results":[]}`)
	}))
	defer catcher.Close()
	for _, status := range []int{http.StatusTemporaryRedirect, http.StatusPermanentRedirect, http.StatusFound} {
		redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, catcher.URL+r.URL.RequestURI(), status)
		}))
		c, err := codat.New(secret.Value(leakyKey), codat.Options{BaseURL: redirector.URL, MaxAttempts: 1})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		_, lerr := c.List(ctx)
		_, cerr := c.Create(ctx, "codat-rotator-x")
		derr := c.Delete(ctx, "id-1")
		for op, err := range map[string]error{"list": lerr, "create": cerr, "delete": derr} {
			var apiErr *codat.APIError
			if !errors.As(err, &apiErr) || apiErr.StatusCode != status {
				t.Errorf("%d: %s: got %v, want an APIError with status %d", status, op, err, status)
				continue
			}
			want := "a redirect to " + catcher.URL + ", not followed: the key goes to " + redirector.URL + " only"
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%d: %s: got %q, want %q in it", status, op, err, want)
			}
		}
		redirector.Close()
	}
	if n := caught.Load(); n != 0 {
		t.Errorf("the redirect's target received the Codat key %d time(s)", n)
	}
}

// TestCodatTextIsRedactedAndPrintable: an error body that quotes the key
// (raw, as base64, as the header) and carries terminal escapes gives an
// error that holds none of them: the message is stored in the state
// file, shown by status and sent to webhooks.
func TestCodatTextIsRedactedAndPrintable(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString([]byte(leakyKey))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"statusCode":400,"error":"key %s with header Basic %s (%s) is odd \u001b]0;owned\u0007\u001b[2K",`+
			`"correlationId":"c0ffee\u001b[31m","validation":{"errors":[{"message":"url-safe %s"}]}}`,
			leakyKey, b64, strings.TrimRight(b64, "="), base64.RawURLEncoding.EncodeToString([]byte(leakyKey)))
	}))
	defer srv.Close()
	c, err := codat.New(secret.Value(leakyKey), codat.Options{BaseURL: srv.URL, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.List(context.Background())
	var apiErr *codat.APIError
	if !errors.As(err, &apiErr) {
		t.Fatalf("got %v, want an APIError", err)
	}
	text := err.Error()
	for _, leak := range []string{leakyKey, b64, strings.TrimRight(b64, "="), "\x1b", "\x07"} {
		if strings.Contains(text, leak) {
			t.Errorf("the error holds %q: %s", leak, text)
		}
	}
	for _, want := range []string{"key [REDACTED] with header Basic [REDACTED] ([REDACTED])", `\x1b]0;owned\x07`, `c0ffee\x1b[31m`, "url-safe [REDACTED]"} {
		if !strings.Contains(text, want) {
			t.Errorf("the error lacks %q: %s", want, text)
		}
	}
}

// TestKeyNamesArePrintable: a key named with terminal escapes (anyone
// holding a key can make one) is listed with them escaped.
func TestKeyNamesArePrintable(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"results":[{"id":"k1","name":"\u001b]0;pwned\u0007\u001b[1A\u001b[2Kcodat-rotator-x","apiKey":"abc"}]}`)
	}))
	defer srv.Close()
	c, err := codat.New(secret.Value(leakyKey), codat.Options{BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := c.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := keys[0].Name, `\x1b]0;pwned\x07\x1b[1A\x1b[2Kcodat-rotator-x`; got != want {
		t.Errorf("name: got %q, want %q", got, want)
	}
}
