package emulator_test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/codat/emulator"
)

// TestFleetCountsAndLimitsTheIP: two clients behind one address; the
// fleet counts both per minute and answers 429 beyond its IP limit,
// with the client's own quota not spent in the headers.
func TestFleetCountsAndLimitsTheIP(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 12, 5, 10, 0, 30, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	fl, err := emulator.NewFleet(2, emulator.Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(fl)
	defer srv.Close()
	defer fl.Close()
	if err := fl.SetLimit(emulator.FleetLimit{PerMinute: 3}); err != nil {
		t.Fatal(err)
	}
	list := func(i int) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, emulator.BaseURL(srv.URL, i)+"/apiKeys", nil)
		req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(fl.Client(i).InitialKey())))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for i, want := range []int{200, 200, 200, 429} {
		resp := list(i % 2)
		if resp.StatusCode != want {
			t.Fatalf("request %d: status %d, want %d", i+1, resp.StatusCode, want)
		}
		if want == 429 {
			left, _ := strconv.Atoi(resp.Header.Get("X-Rate-Limit-Remaining"))
			if left <= 0 || resp.Header.Get("Retry-After") == "" {
				t.Errorf("the IP limit's 429: X-Rate-Limit-Remaining %q, Retry-After %q; want the quota not spent and a Retry-After",
					resp.Header.Get("X-Rate-Limit-Remaining"), resp.Header.Get("Retry-After"))
			}
		}
	}
	advance(time.Minute)
	if resp := list(1); resp.StatusCode != 200 {
		t.Errorf("a minute later: status %d, want 200", resp.StatusCode)
	}
	resp, err := http.Get(srv.URL + "/_emulator/rate")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rep emulator.RateReport
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
		t.Fatal(err)
	}
	if rep.Requests != 5 || rep.IPLimited != 1 || rep.IPLimit != 3 || rep.MaxIn60s != 4 || rep.MaxPerMinute != 4 || len(rep.PerMinute) != 2 {
		t.Errorf("rate report: %+v; want 5 requests, 1 limited, 4 in the first minute, 1 in the next", rep)
	}
	// Each client counts its own too.
	if got := fl.Client(1).Rate().Requests; got != 2 {
		t.Errorf("client 1 counted %d requests, want 2 (the limited one never reached it)", got)
	}
}
