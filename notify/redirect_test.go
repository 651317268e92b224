package notify

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestWebhookRedirects: a delivery follows a redirect within its hook's
// origin, without a Referer (the hook's URL, token and all, would be
// it); a redirect to another origin (another port here, another host or
// a metadata address elsewhere) is not followed and the error names
// only the origins.
func TestWebhookRedirects(t *testing.T) {
	var mu sync.Mutex
	var offOrigin, referers []string
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		offOrigin = append(offOrigin, r.URL.Path)
	}))
	defer elsewhere.Close()
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		if ref := r.Header.Get("Referer"); ref != "" {
			referers = append(referers, ref)
		}
		mu.Unlock()
		switch r.URL.Path {
		case "/hooks/T0K3N":
			http.Redirect(w, r, "/moved/T0K3N", http.StatusTemporaryRedirect)
		case "/moved/T0K3N":
			w.WriteHeader(http.StatusNoContent)
		case "/away/T0K3N":
			http.Redirect(w, r, elsewhere.URL+"/latest/meta-data/", http.StatusTemporaryRedirect)
		case "/loop/T0K3N":
			http.Redirect(w, r, "/loop/T0K3N", http.StatusTemporaryRedirect)
		}
	}))
	defer hook.Close()
	w := New(slog.New(slog.DiscardHandler), "codat-rotator/test", nil)
	defer w.Wait(time.Second)
	post := func(path string) error {
		return w.postOnce(Hook{URL: hook.URL + path, Format: "json", Timeout: 5 * time.Second}, []byte(`{"event":"failure"}`))
	}

	if err := post("/hooks/T0K3N"); err != nil {
		t.Errorf("a redirect within the origin: %v", err)
	}
	err := post("/away/T0K3N")
	if want := "a redirect to " + elsewhere.URL + ", not followed: a webhook is posted to its own origin only"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("a redirect to another origin: got %v, want %q", err, want)
	}
	if err != nil && strings.Contains(err.Error(), "T0K3N") {
		t.Errorf("the error quotes the hook's path: %v", err)
	}
	if err := post("/loop/T0K3N"); err == nil || !strings.Contains(err.Error(), "stopped after 3 redirects") {
		t.Errorf("a redirect loop: got %v, want it stopped", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(offOrigin) != 0 {
		t.Errorf("the other origin received %d request(s): %v", len(offOrigin), offOrigin)
	}
	if len(referers) != 0 {
		t.Errorf("requests carried a Referer: %v", referers)
	}
}
