// Package isotime parses the ISO 8601 date-times of Codat's createdDate
// and of the timestamps in a published Vault secret, which an operator may
// write by hand. It is a leaf so that codat/ and vault/ can share the one
// lenient parser without importing each other.
package isotime

import (
	"fmt"
	"strings"
	"time"
)

// layouts are the forms Codat's createdDate has been seen in: with Z, with an
// offset (with or without a colon), or with no zone at all, which is
// taken as UTC.
var layouts = []struct {
	layout string
	zoned  bool
}{
	{time.RFC3339Nano, true},
	{"2006-01-02T15:04:05.999999999Z0700", true},
	{"2006-01-02T15:04:05.999999999", false},
	{"2006-01-02 15:04:05.999999999Z07:00", true},
	{"2006-01-02 15:04:05.999999999", false},
}

// Parse parses an ISO 8601 date-time leniently: a Z, an offset or no
// zone (taken as UTC). The result is in UTC.
func Parse(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	for _, l := range layouts {
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
