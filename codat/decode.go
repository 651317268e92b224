package codat

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/codat-rotator/codat-rotator/internal/isotime"
	"github.com/codat-rotator/codat-rotator/internal/printable"
)

// Key is one Codat API key, as Codat describes it (ApiKeyDetails).
type Key struct {
	// ID is Codat's id for the key; UUID-shaped, but no format is promised.
	ID string
	// Name is empty for an unnamed key (Codat omits the field).
	Name string
	// APIKey is the raw key. Create always returns it; a list may not.
	APIKey Secret
	// Created is the parsed createdDate, zero when absent or unparsable.
	Created time.Time
	// CreatedRaw is createdDate as Codat sent it.
	CreatedRaw string
}

// jsonFields is a JSON object read field by field: no field of Codat's
// documents is marked required, and a field of an unexpected type must
// cost that field only, not the whole key or error.
type jsonFields map[string]json.RawMessage

// keyDetails is the wire form of ApiKeyDetails.
type keyDetails = jsonFields

// str returns a field that is a JSON string, or "" and false.
func (d jsonFields) str(name string) (string, bool) {
	raw, ok := d[name]
	if !ok {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

type keyList struct {
	Results *[]json.RawMessage `json:"results"`
}

// DecodeKey decodes one ApiKeyDetails, as returned by a create. It
// requires id and apiKey; unknown fields are ignored.
func DecodeKey(body []byte) (Key, error) {
	k, err := decodeKey(body)
	if err != nil {
		return Key{}, err
	}
	if k.APIKey.Empty() {
		return Key{}, fmt.Errorf("%w: key %q has no apiKey", ErrBadResponse, k.ID)
	}
	return k, nil
}

// DecodeKeyList decodes the body of GET /apiKeys. Every entry needs an
// id; apiKey may be absent, since a listing need not repeat raw keys.
func DecodeKeyList(body []byte) ([]Key, error) {
	var l keyList
	if err := json.Unmarshal(body, &l); err != nil {
		return nil, fmt.Errorf("%w: list body is not a JSON object with results", ErrBadResponse)
	}
	if l.Results == nil {
		return nil, fmt.Errorf("%w: list body has no results", ErrBadResponse)
	}
	keys := make([]Key, 0, len(*l.Results))
	for i, raw := range *l.Results {
		k, err := decodeKey(raw)
		if err != nil {
			return nil, fmt.Errorf("results[%d]: %w", i, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func decodeKey(body []byte) (Key, error) {
	var d keyDetails
	if err := json.Unmarshal(body, &d); err != nil || d == nil {
		return Key{}, fmt.Errorf("%w: key is not a JSON object", ErrBadResponse)
	}
	id, _ := d.str("id")
	if id == "" {
		return Key{}, fmt.Errorf("%w: key has no id (or it is not a string)", ErrBadResponse)
	}
	k := Key{ID: id}
	k.Name, _ = d.str("name")
	// Anyone holding a key can name one: a name reaches terminals and
	// logs, so its control characters are escaped here, once.
	k.Name = printable.Clean(k.Name)
	raw, _ := d.str("apiKey")
	k.APIKey = Secret(raw)
	if c, ok := d.str("createdDate"); ok {
		k.CreatedRaw = c
		k.Created, _ = isotime.Parse(c)
	}
	return k, nil
}

// DecodeError builds the APIError for an error response. It never fails:
// a body that is not Codat's error JSON (an HTML page from a proxy, an
// empty body) is described by its type and size instead.
func DecodeError(op string, status int, contentType string, body []byte) *APIError {
	e := &APIError{Op: op, StatusCode: status}
	var f jsonFields // a statusCode sent as a string must not cost the correlation id
	msg, ok := "", false
	if json.Unmarshal(body, &f) == nil {
		msg, ok = f.str("error")
	}
	if !ok {
		e.Message = describeBody(contentType, body)
		return e
	}
	e.Message = printable.Clean(strings.TrimSpace(msg))
	e.CorrelationID, _ = f.str("correlationId")
	e.CorrelationID = printable.Clean(e.CorrelationID)
	e.CanBeRetried = printable.Clean(rawString(f["canBeRetried"]))
	var v struct {
		Errors []struct {
			Message string `json:"message"`
		} `json:"errors"`
	}
	if raw, ok := f["validation"]; ok && json.Unmarshal(raw, &v) == nil {
		for _, item := range v.Errors {
			if m := printable.Clean(item.Message); m != "" && !strings.Contains(e.Message, m) {
				e.Message += "; " + m
			}
		}
	}
	return e
}

// rawString reads canBeRetried, documented as a string but decoded
// defensively since a boolean would be an easy mistake on either side.
func rawString(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(bytes.TrimSpace(raw))
}

// describeBody summarises a body that is not Codat's error JSON without
// echoing it: a proxy page could carry anything.
func describeBody(contentType string, body []byte) string {
	if len(bytes.TrimSpace(body)) == 0 {
		return "empty body"
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil || mt == "" {
		mt = "unknown type"
	}
	return fmt.Sprintf("body is not a codat error (%s, %d bytes)", mt, len(body))
}

// ParseRetryAfter reads a Retry-After header in either of its forms:
// delay-seconds or an HTTP date. A date in the past gives zero.
func ParseRetryAfter(v string, now time.Time) (time.Duration, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, fmt.Errorf("parse retry-after: empty")
	}
	const maxRetryAfter = 24 * time.Hour
	if digitsOnly(v) {
		secs, err := strconv.ParseInt(v, 10, 64)
		if err != nil || secs > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter, nil // too large to represent: the cap
		}
		return time.Duration(secs) * time.Second, nil
	}
	if strings.HasPrefix(v, "-") {
		if _, err := strconv.ParseInt(v, 10, 64); err == nil {
			return 0, fmt.Errorf("parse retry-after %q: negative", v)
		}
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, fmt.Errorf("parse retry-after %q: neither seconds nor an HTTP date", v)
	}
	d := t.Sub(now)
	if d < 0 {
		d = 0
	}
	return min(d, maxRetryAfter), nil
}

func digitsOnly(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}
