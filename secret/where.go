package secret

import (
	"net"
	"net/url"
	"strings"
)

// Where a secret may be sent: one rule for the daemon (Codat's base URL,
// Vault's address, its agent and its proxy) and for codatauth.

// LoopbackHost reports whether host, the host part of a URL without its
// port, names this machine: exactly "localhost", or a literal IP address
// in 127.0.0.0/8 or ::1. It is judged from the text alone, never DNS,
// and it is the rule Go's HTTP proxy settings use to go direct
// (HTTP_PROXY is never used for these hosts), so a URL that is loopback
// here is never sent through a proxy in clear. "localhost." (a trailing
// dot), "LOCALHOST" and "*.localhost" are not loopback: a proxy takes
// them, and a resolver may send them elsewhere.
func LoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// InClear reports whether a secret sent to u would cross the network
// unencrypted: plain http to a host that is not loopback. A unix socket
// address (Vault Agent's unix://) stays on the machine.
func InClear(u *url.URL) bool {
	return strings.EqualFold(u.Scheme, "http") && !LoopbackHost(u.Hostname())
}

// SameOrigin reports whether a and b have the same scheme, host and
// port (an absent port is the scheme's own): a credential meant for a
// may go to b.
func SameOrigin(a, b *url.URL) bool {
	return strings.EqualFold(a.Scheme, b.Scheme) && strings.EqualFold(a.Hostname(), b.Hostname()) && portOf(a) == portOf(b)
}

// Origin is u's scheme://host[:port], without the path, query or user
// information a URL may carry secrets in: what an error may say about
// where a request was sent.
func Origin(u *url.URL) string {
	return u.Scheme + "://" + u.Host
}

func portOf(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	switch strings.ToLower(u.Scheme) {
	case "http":
		return "80"
	case "https":
		return "443"
	}
	return ""
}
