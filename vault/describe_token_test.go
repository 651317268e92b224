package vault

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"
)

func TestDescribeToken(t *testing.T) {
	now := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	jwt := func(claims string) string {
		return "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(claims)) + ".c2lnbmF0dXJl"
	}
	for _, tc := range []struct{ name, jwt, want string }{
		{"valid", jwt(`{"sub":"system:serviceaccount:codat-rotator:codat-rotator","aud":["vault"],"exp":1796432400}`),
			"the token in /t is of system:serviceaccount:codat-rotator:codat-rotator, for audience vault, valid until 2026-12-05T01:00:00Z"},
		{"other audience", jwt(`{"sub":"system:serviceaccount:codat-rotator:codat-rotator","aud":["https://kubernetes.default.svc"],"exp":1796432400}`),
			"the token in /t is of system:serviceaccount:codat-rotator:codat-rotator, for audience https://kubernetes.default.svc, valid until 2026-12-05T01:00:00Z"},
		{"expired", jwt(`{"sub":"system:serviceaccount:codat-rotator:codat-rotator","aud":"vault","exp":1796428200}`),
			"the token in /t is of system:serviceaccount:codat-rotator:codat-rotator, for audience vault, and expired at 2026-12-04T23:50:00Z, 10m0s ago: is the kubelet still refreshing it?"},
		{"other account", jwt(`{"sub":"system:serviceaccount:default:other","aud":["vault"]}`),
			"the token in /t is of system:serviceaccount:default:other, for audience vault"},
		{"not a JWT", "not-a-token", "the token in /t is not a JWT"},
		{"claims not JSON", "a.bm90IGpzb24.c2ln", "the token in /t has no readable claims"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := describeToken(tc.jwt, "/t", now)
			if got != tc.want {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
			if strings.Contains(got, "c2lnbmF0dXJl") {
				t.Error("the description holds the token's signature")
			}
		})
	}
}
