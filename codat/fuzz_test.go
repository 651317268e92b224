package codat

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/internal/isotime"
)

// keySeeds are ApiKeyDetails bodies as docs/design.md#codat-api
// describes them, and the ways they go wrong.
var keySeeds = []string{
	`{"id":"3f1c9a56-7d2e-4b8a-9c1f-2e6d5b4a3c21","name":"codat-rotator-1","apiKey":"ztHQGvnC4XN2CgUhaDWEG4ySLUJqWjp7zkbZkGHd","createdDate":"2022-04-11T13:49:37Z"}`,
	`{"id":"3f1c9a56-7d2e-4b8a-9c1f-2e6d5b4a3c21","apiKey":"ztHQGvnC4XN2CgUhaDWEG4ySLUJqWjp7zkbZkGHd","createdDate":"2022-04-11T13:49:37Z"}`,
	`{"apiKey":"ztHQGvnC4XN2CgUhaDWEG4ySLUJqWjp7zkbZkGHd","createdDate":"2022-04-11T13:49:37Z"}`,
	`{"id":"","apiKey":"ztHQGvnC4XN2CgUhaDWEG4ySLUJqWjp7zkbZkGHd"}`,
	`{"id":"3f1c9a56-7d2e-4b8a-9c1f-2e6d5b4a3c21","name":"x","createdDate":"2022-04-11T13:49:37Z"}`,
	`{"id":"3f1c9a56-7d2e-4b8a-9c1f-2e6d5b4a3c21","apiKey":""}`,
	`{"id":"k1","name":null,"apiKey":"ztHQGvnC4XN2CgUhaDWEG4ySLUJqWjp7zkbZkGHd"}`,
	`{"id":"k1","apiKey":"ztHQGvnC4XN2CgUhaDWEG4ySLUJqWjp7zkbZkGHd","createdDate":"2022-04-11T13:49:37.1234567+01:00"}`,
	`{"id":"k1","apiKey":"ztHQGvnC4XN2CgUhaDWEG4ySLUJqWjp7zkbZkGHd","createdDate":"2022-04-11T13:49:37+0100"}`,
	`{"id":"k1","apiKey":"ztHQGvnC4XN2CgUhaDWEG4ySLUJqWjp7zkbZkGHd","createdDate":"2022-04-11T13:49:37"}`,
	`{"id":"k1","apiKey":"ztHQGvnC4XN2CgUhaDWEG4ySLUJqWjp7zkbZkGHd","createdDate":"yesterday"}`,
	`{"id":42,"apiKey":"ztHQGvnC4XN2CgUhaDWEG4ySLUJqWjp7zkbZkGHd"}`,
	`{"id":"k1","apiKey":12345678901234567890123456789012345678901234567890}`,
	`{"id":"k1","apiKey":"ztHQGvnC4XN2CgUhaDWEG4ySLUJqWjp7zkbZkGHd","name":["a"]}`,
	`{"id":"k1","apiKey":"ztHQGvnC4XN2CgUhaDWEG4ySLUJqWjp7zkbZkGHd","createdDate":1e400}`,
	`{"id":"k1","apiKey":"ztHQGvnC4XN2CgUhaDWEG4ySLUJqWjp7zkbZkGHd"`,
	`{"id":"k1","apiKey":"ztHQGvnC4XN2CgUhaDWEG4ySLUJqWjp7zkbZkGHd","apiKey":""}`,
	`{"ID":"k1","APIKEY":"ztHQGvnC4XN2CgUhaDWEG4ySLUJqWjp7zkbZkGHd"}`,
	`<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>`,
	`[{"id":"k1"}]`,
	`null`,
	``,
}

// listSeeds are GET /apiKeys bodies.
var listSeeds = []string{
	`{"results":[{"id":"3f1c9a56-7d2e-4b8a-9c1f-2e6d5b4a3c21","apiKey":"ztHQGvnC4XN2CgUhaDWEG4ySLUJqWjp7zkbZkGHd","createdDate":"2022-04-11T13:49:37Z"},{"id":"b7e0f6d2-1111-4c3a-8e9d-0a1b2c3d4e5f","name":"codat-rotator-2","apiKey":"Q9uXk2LmP4rT7vW1yZ3aB5cD8eF0gH6iJ2kL4mN7","createdDate":"2024-01-02T03:04:05+02:00"}]}`,
	`{"results":[]}`,
	`{"results":null}`,
	`{}`,
	`{"results":[{"id":"k1"}]}`,
	`{"results":[{"id":"k1","apiKey":"ztHQGvnC4XN2CgUhaDWEG4ySLUJqWjp7zkbZkGHd"},{"apiKey":"Q9uXk2LmP4rT7vW1yZ3aB5cD8eF0gH6iJ2kL4mN7"}]}`,
	`{"results":[{"id":"k1","apiKey":"ztHQGvnC4XN2CgUhaDWEG4ySLUJqWjp7zkbZkGHd"},"oops"]}`,
	`{"results":{"id":"k1"}}`,
	`{"results":[{"id":"k1","apiKey":"ztHQGvnC4XN2CgUhaDWEG4ySLUJqWjp7zkbZkGHd","createdDate":"2022-04-11 13:49:37"}],"next":null}`,
	`[{"id":"k1","apiKey":"ztHQGvnC4XN2CgUhaDWEG4ySLUJqWjp7zkbZkGHd"}]`,
	`<!DOCTYPE html><html><body>Service Unavailable</body></html>`,
	``,
}

// errorSeeds are error responses: status, Content-Type and body.
var errorSeeds = []struct {
	status int
	ct     string
	body   string
}{
	{409, "application/json; charset=utf-8", `{"statusCode":409,"service":"PublicApi","error":"Maximum number of API keys reached. To create a new API key, delete an unused key and try again.","correlationId":"bc997528a9d7abb9161ef45f05d38599","canBeRetried":"Unknown","detailedErrorCode":0}`},
	{400, "application/json", `{"statusCode":400,"service":"PublicApi","error":"Max string length (50) for ` + "`name`" + ` reached.","correlationId":"bc997528a9d7abb9161ef45f05d38599","canBeRetried":"Unknown","detailedErrorCode":0,"validation":{"errors":[{"itemId":"name","message":"Max string length (50) for ` + "`name`" + ` reached.","validatorName":"MaxLength"}],"warnings":[]}}`},
	{401, "application/json", `{"statusCode":401,"service":"PublicApi","error":"Unauthorized","correlationId":"bc997528a9d7abb9161ef45f05d38599","canBeRetried":false,"detailedErrorCode":0}`},
	{429, "application/json", `{"statusCode":200,"error":"Too many requests","canBeRetried":true}`},
	{500, "application/json", `{"statusCode":99999999999999999999999,"error":"boom","detailedErrorCode":1e400}`},
	{503, "application/json", `{"statusCode":"503","error":7}`},
	{502, "text/html", `<html><head><title>502 Bad Gateway</title></head><body><center>nginx</center></body></html>`},
	{403, "text/plain", `Forbidden: key ztHQGvnC4XN2CgUhaDWEG4ySLUJqWjp7zkbZkGHd`},
	{404, "", ``},
	{500, "application/json;;;", `   `},
	{400, "application/json", `{"error":"bad","apiKey":"ztHQGvnC4XN2CgUhaDWEG4ySLUJqWjp7zkbZkGHd"}`},
	{-1, "\x00", `{"error":null}`},
}

// apiKeyValue finds apiKey string values in a body, JSON or not. Field
// names match case-insensitively, as encoding/json matches them. Values
// with escapes are left out: the check below rewrites values in place.
var apiKeyValue = regexp.MustCompile(`(?i)"apikey"\s*:\s*"([^"\\]{2,})"`)

// rotate changes every letter and digit of s, keeping its length and the
// class of each byte, so that a body stays exactly as valid as it was.
func rotate(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z':
			b[i] = 'a' + (c-'a'+1)%26
		case c >= 'A' && c <= 'Z':
			b[i] = 'A' + (c-'A'+1)%26
		case c >= '0' && c <= '9':
			b[i] = '0' + (c-'0'+1)%10
		}
	}
	return string(b)
}

// checkNoKeyInError fails when the error for body repeats an apiKey value
// of body. A value that also shows once it is rewritten came from the
// error's own words (a two-letter key may well read "ke"), not from the
// body, and is not a leak.
func checkNoKeyInError(tb testing.TB, body []byte, msg string, errFor func([]byte) string) {
	tb.Helper()
	for _, m := range apiKeyValue.FindAllSubmatchIndex(body, -1) {
		v := string(body[m[2]:m[3]])
		if !strings.Contains(msg, v) {
			continue
		}
		other := rotate(v)
		if other == v {
			continue
		}
		rewritten := append(append(append([]byte(nil), body[:m[2]]...), other...), body[m[3]:]...)
		if msg2 := errFor(rewritten); !strings.Contains(msg2, v) {
			tb.Fatalf("error repeats the apiKey %q of the body:\nerror: %s\nbody:  %q", v, msg, body)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func decodeKeyError(body []byte) string {
	_, err := DecodeKey(body)
	return errString(err)
}

func decodeKeyListError(body []byte) string {
	_, err := DecodeKeyList(body)
	return errString(err)
}

// checkKey checks what any decoded key promises.
func checkKey(tb testing.TB, k Key) {
	tb.Helper()
	if k.ID == "" {
		tb.Fatalf("decoded a key with no id: %#v", k)
	}
	if !k.Created.IsZero() && k.Created.Location() != time.UTC {
		tb.Fatalf("Created %s is not in UTC", k.Created)
	}
	if want, err := isotime.Parse(k.CreatedRaw); err == nil && !k.Created.Equal(want) {
		tb.Fatalf("Created: got %s, want %s parsed from %q", k.Created, want, k.CreatedRaw)
	} else if err != nil && !k.Created.IsZero() {
		tb.Fatalf("Created: got %s from the unparsable %q, want zero", k.Created, k.CreatedRaw)
	}
}

func FuzzDecodeKey(f *testing.F) {
	for _, s := range keySeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		k, err := DecodeKey(body)
		if err != nil {
			if !errors.Is(err, ErrBadResponse) {
				t.Fatalf("error %v does not match ErrBadResponse", err)
			}
			if k != (Key{}) {
				t.Fatalf("got a key %#v with the error %v", k, err)
			}
			checkNoKeyInError(t, body, err.Error(), decodeKeyError)
			return
		}
		checkKey(t, k)
		if k.APIKey.Empty() {
			t.Fatalf("DecodeKey succeeded with no apiKey: %#v", k)
		}
	})
}

func FuzzDecodeKeyList(f *testing.F) {
	for _, s := range listSeeds {
		f.Add([]byte(s))
	}
	for _, s := range keySeeds {
		f.Add([]byte(`{"results":[` + s + `]}`))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		keys, err := DecodeKeyList(body)
		if err != nil {
			if !errors.Is(err, ErrBadResponse) {
				t.Fatalf("error %v does not match ErrBadResponse", err)
			}
			if keys != nil {
				t.Fatalf("got %d keys with the error %v", len(keys), err)
			}
			checkNoKeyInError(t, body, err.Error(), decodeKeyListError)
			return
		}
		if keys == nil {
			t.Fatal("got a nil list and no error")
		}
		for _, k := range keys {
			checkKey(t, k)
		}
	})
}

func FuzzDecodeError(f *testing.F) {
	for _, s := range errorSeeds {
		f.Add(s.status, s.ct, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, status int, contentType string, body []byte) {
		const op = OpCreate
		e := DecodeError(op, status, contentType, body)
		if e == nil {
			t.Fatal("DecodeError returned nil")
		}
		if e.StatusCode != status || e.Op != op {
			t.Fatalf("got status %d op %q, want %d %q", e.StatusCode, e.Op, status, op)
		}
		msg := e.Error()
		if !strings.HasPrefix(msg, op+": ") {
			t.Fatalf("Error() %q does not name the operation", msg)
		}
		if trimmed := bytes.TrimSpace(body); !json.Valid(body) && len(trimmed) > 0 {
			// The message of a body that is not JSON may depend on its
			// length and type only: the same length of other bytes that
			// are not JSON either must read the same.
			filler := DecodeError(op, status, contentType, bytes.Repeat([]byte{'<'}, len(body))).Error()
			if msg != filler {
				t.Fatalf("non-JSON body changed the error beyond its size:\ngot:  %s\nwant: %s", msg, filler)
			}
			if len(trimmed) >= 4 && strings.Contains(msg, string(trimmed)) && !strings.Contains(filler, string(trimmed)) {
				t.Fatalf("error repeats the non-JSON body: %s", msg)
			}
		}
		checkNoKeyInError(t, body, msg, func(b []byte) string {
			return DecodeError(op, status, contentType, b).Error()
		})
	})
}

func FuzzParseRetryAfter(f *testing.F) {
	now := time.Date(2024, time.March, 5, 13, 30, 0, 0, time.UTC)
	for _, v := range []string{
		"0", "1", "120", " 30 ", "+5", "-1", "86401", "99999999999999999999",
		now.Add(90 * time.Second).Format(http.TimeFormat),
		now.Add(-time.Hour).Format(http.TimeFormat),
		"Tuesday, 05-Mar-24 13:31:00 GMT", "Tue Mar  5 13:31:00 2024",
		"soon", "", "1.5", "0x10",
	} {
		f.Add(v, now.Unix())
	}
	f.Fuzz(func(t *testing.T, v string, nowUnix int64) {
		now := time.Unix(nowUnix, 0)
		d, err := ParseRetryAfter(v, now)
		if err != nil {
			if d != 0 {
				t.Fatalf("got %s with the error %v", d, err)
			}
			return
		}
		if d < 0 {
			t.Fatalf("ParseRetryAfter(%q): negative %s", v, d)
		}
		if strings.Trim(strings.TrimSpace(v), "+0123456789") == "" && d > 24*time.Hour {
			t.Fatalf("ParseRetryAfter(%q): %s is over the 24h cap on seconds", v, d)
		}
	})
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2024, time.March, 5, 13, 30, 0, 0, time.UTC)
	tests := []struct {
		name    string
		in      string
		want    time.Duration
		wantErr bool
	}{
		{name: "seconds", in: "120", want: 2 * time.Minute},
		{name: "zero seconds", in: "0", want: 0},
		{name: "seconds with spaces", in: " 7 ", want: 7 * time.Second},
		{name: "seconds capped at a day", in: "999999", want: 24 * time.Hour},
		{name: "HTTP date", in: now.Add(90 * time.Second).Format(http.TimeFormat), want: 90 * time.Second},
		{name: "RFC 850 date", in: "Tuesday, 05-Mar-24 13:31:00 GMT", want: time.Minute},
		{name: "ANSI C date", in: "Tue Mar  5 13:31:00 2024", want: time.Minute},
		{name: "past date", in: now.Add(-time.Hour).Format(http.TimeFormat), want: 0},
		{name: "negative", in: "-5", wantErr: true},
		{name: "fraction", in: "1.5", wantErr: true},
		{name: "garbage", in: "soon", wantErr: true},
		{name: "empty", in: "", wantErr: true},
		{name: "date without zone", in: "2024-03-05T13:31:00", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRetryAfter(tt.in, now)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("got %s, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

// TestDecodeErrorSeeds pins what DecodeError makes of the seed bodies
// that matter most: Codat's own, canBeRetried as a boolean, and a proxy's
// HTML page.
func TestDecodeErrorSeeds(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		ct, body  string
		wantMsg   string
		wantCorr  string
		wantRetry string
	}{
		{
			name: "codat 409", status: 409, ct: errorSeeds[0].ct, body: errorSeeds[0].body,
			wantMsg:  "Maximum number of API keys reached. To create a new API key, delete an unused key and try again.",
			wantCorr: "bc997528a9d7abb9161ef45f05d38599", wantRetry: "Unknown",
		},
		{
			name: "canBeRetried as a boolean", status: 401, ct: errorSeeds[2].ct, body: errorSeeds[2].body,
			wantMsg: "Unauthorized", wantCorr: "bc997528a9d7abb9161ef45f05d38599", wantRetry: "false",
		},
		{
			name: "statusCode contradicting the HTTP status", status: 429, ct: errorSeeds[3].ct, body: errorSeeds[3].body,
			wantMsg: "Too many requests", wantRetry: "true",
		},
		{
			name: "HTML from a proxy", status: 502, ct: "text/html; charset=utf-8", body: errorSeeds[6].body,
			wantMsg: "body is not a codat error (text/html, 91 bytes)",
		},
		{
			name: "empty body", status: 404, body: "",
			wantMsg: "empty body",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := DecodeError(OpCreate, tt.status, tt.ct, []byte(tt.body))
			if e.StatusCode != tt.status || e.Message != tt.wantMsg || e.CorrelationID != tt.wantCorr || e.CanBeRetried != tt.wantRetry {
				t.Errorf("got %+v, want status %d, message %q, correlation id %q, canBeRetried %q",
					e, tt.status, tt.wantMsg, tt.wantCorr, tt.wantRetry)
			}
		})
	}
}
