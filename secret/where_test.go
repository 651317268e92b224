package secret

import (
	"net/http"
	"net/url"
	"testing"
)

// TestLoopbackHostIsWhereProxiesStepAside: a host is loopback by this
// rule exactly when Go's proxy settings send a plain-http request to it
// directly. Otherwise a URL judged loopback (and let through in clear)
// could travel through HTTP_PROXY in clear: http://localhost.:PORT did.
func TestLoopbackHostIsWhereProxiesStepAside(t *testing.T) {
	// net/http reads the proxy variables once, at its first use: this is
	// the first in this test binary.
	t.Setenv("HTTP_PROXY", "http://proxy.example:3128")
	t.Setenv("http_proxy", "http://proxy.example:3128")
	t.Setenv("NO_PROXY", "")
	t.Setenv("no_proxy", "")
	t.Setenv("REQUEST_METHOD", "")
	proxy := func(u *url.URL) (*url.URL, error) { return http.ProxyFromEnvironment(&http.Request{URL: u}) }
	for _, host := range []string{
		"localhost", "LOCALHOST", "LocalHost", "localhost.", "foo.localhost", "localhost.example",
		"127.0.0.1", "127.1.2.3", "127.0.0.1.", "[::1]", "[0:0:0:0:0:0:0:1]", "[::ffff:127.0.0.1]",
		"0.0.0.0", "[::]", "10.0.0.1", "169.254.169.254", "vault.example", "2130706433",
	} {
		u, err := url.Parse("http://" + host + ":8200/v1/sys/health")
		if err != nil {
			t.Fatal(err)
		}
		p, err := proxy(u)
		if err != nil {
			t.Fatal(err)
		}
		direct := p == nil
		if got := LoopbackHost(u.Hostname()); got != direct {
			t.Errorf("%s: LoopbackHost %v, but Go's proxy settings go direct: %v", host, got, direct)
		}
		if got, want := InClear(u), !direct; got != want {
			t.Errorf("%s: InClear %v, want %v", host, got, want)
		}
	}
	for raw, want := range map[string]bool{
		"https://vault.example": false, "unix:///run/agent.sock": false,
		"HTTP://vault.example": true, "http://localhost:8200": false,
	} {
		u, _ := url.Parse(raw)
		if got := InClear(u); got != want {
			t.Errorf("InClear(%s): got %v, want %v", raw, got, want)
		}
	}
}

func TestSameOrigin(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want bool
	}{
		{"https://api.codat.io/apiKeys", "https://api.codat.io/other?x=1", true},
		{"https://api.codat.io", "https://API.codat.io:443/", true},
		{"http://127.0.0.1:80/a", "http://127.0.0.1/b", true},
		{"https://api.codat.io", "http://api.codat.io", false},
		{"https://api.codat.io", "https://api.codat.io:8443", false},
		{"https://api.codat.io", "https://evil.codat.io", false},
		{"http://127.0.0.1:1", "http://127.0.0.1:2", false},
	} {
		a, _ := url.Parse(tt.a)
		b, _ := url.Parse(tt.b)
		if got := SameOrigin(a, b); got != tt.want {
			t.Errorf("SameOrigin(%s, %s): got %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
	u, _ := url.Parse("https://user:pass@hooks.example:8443/services/T0/B0/token?q=1")
	if got, want := Origin(u), "https://hooks.example:8443"; got != want {
		t.Errorf("Origin: got %s, want %s", got, want)
	}
}
