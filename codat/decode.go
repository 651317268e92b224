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

// keyDetails is the wire form of ApiKeyDetails. No field is marked
// required in Codat's spec, so every field is a pointer and checked.
type keyDetails struct {
	ID          *string `json:"id"`
	Name        *string `json:"name"`
	APIKey      *string `json:"apiKey"`
	CreatedDate *string `json:"createdDate"`
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
		return nil, fmt.Errorf("%w: list body is not JSON: %v", ErrBadResponse, err)
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
	if err := json.Unmarshal(body, &d); err != nil {
		return Key{}, fmt.Errorf("%w: key is not a JSON object: %v", ErrBadResponse, err)
	}
	if d.ID == nil || *d.ID == "" {
		return Key{}, fmt.Errorf("%w: key has no id", ErrBadResponse)
	}
	k := Key{ID: *d.ID}
	if d.Name != nil {
		k.Name = *d.Name
	}
	if d.APIKey != nil {
		k.APIKey = Secret(*d.APIKey)
	}
	if d.CreatedDate != nil {
		k.CreatedRaw = *d.CreatedDate
		k.Created, _ = ParseTime(*d.CreatedDate)
	}
	return k, nil
}

// timeLayouts are the forms createdDate has been seen in: with Z, with an
// offset (with or without a colon), or with no zone at all, which is
// taken as UTC.
var timeLayouts = []struct {
	layout string
	zoned  bool
}{
	{time.RFC3339Nano, true},
	{"2006-01-02T15:04:05.999999999Z0700", true},
	{"2006-01-02T15:04:05.999999999", false},
	{"2006-01-02 15:04:05.999999999Z07:00", true},
	{"2006-01-02 15:04:05.999999999", false},
}

// ParseTime parses an ISO 8601 date-time leniently: a Z, an offset or no
// zone (taken as UTC). The result is in UTC.
func ParseTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	for _, l := range timeLayouts {
		var t time.Time
		var err error
		if l.zoned {
			t, err = time.Parse(l.layout, s)
		} else {
			t, err = time.ParseInLocation(l.layout, s, time.UTC)
		}
		if err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("parse time %q: not an ISO 8601 date-time", s)
}

// errorBody is Codat's error document.
type errorBody struct {
	StatusCode        *int            `json:"statusCode"`
	Service           string          `json:"service"`
	Error             *string         `json:"error"`
	CorrelationID     string          `json:"correlationId"`
	CanBeRetried      json.RawMessage `json:"canBeRetried"`
	DetailedErrorCode *int            `json:"detailedErrorCode"`
	Validation        *struct {
		Errors []struct {
			ItemID  string `json:"itemId"`
			Message string `json:"message"`
		} `json:"errors"`
	} `json:"validation"`
}

// DecodeError builds the APIError for an error response. It never fails:
// a body that is not Codat's error JSON (an HTML page from a proxy, an
// empty body) is described by its type and size instead.
func DecodeError(op string, status int, contentType string, body []byte) *APIError {
	e := &APIError{Op: op, StatusCode: status}
	var b errorBody
	if err := json.Unmarshal(body, &b); err == nil && b.Error != nil {
		e.Message = strings.TrimSpace(*b.Error)
		e.CorrelationID = b.CorrelationID
		e.CanBeRetried = rawString(b.CanBeRetried)
		if b.Validation != nil {
			for _, v := range b.Validation.Errors {
				if v.Message != "" && !strings.Contains(e.Message, v.Message) {
					e.Message += "; " + v.Message
				}
			}
		}
	} else {
		e.Message = describeBody(contentType, body)
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
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, fmt.Errorf("parse retry-after %q: negative", v)
		}
		if secs > int64(24*time.Hour/time.Second) {
			secs = int64(24 * time.Hour / time.Second)
		}
		return time.Duration(secs) * time.Second, nil
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, fmt.Errorf("parse retry-after %q: neither seconds nor an HTTP date", v)
	}
	d := t.Sub(now)
	if d < 0 {
		d = 0
	}
	return d, nil
}
