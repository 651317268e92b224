package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/codat-rotator/codat-rotator/secret"
)

// The VAULT_* variables that the Vault API library parses by itself when
// the client is built. A malformed one is a configuration error, checked
// here first so that the message names the variable and what it wants
// (the library's own errors often name neither).
//
// A variable marked secret may hold credentials (a header's token, a
// proxy's user and password): its error says what is wrong, never its
// value.
var vaultEnvSyntax = []struct {
	name, want string
	ok         func(string) bool
	secret     bool
}{
	{"VAULT_SKIP_VERIFY", "true or false", isBool, false},
	{"VAULT_SRV_LOOKUP", "true or false", isBool, false},
	{"VAULT_DISABLE_REDIRECTS", "true or false", isBool, false},
	{"VAULT_MAX_RETRIES", "a whole number", func(v string) bool { _, err := strconv.ParseUint(v, 10, 32); return err == nil }, false},
	{"VAULT_CLIENT_TIMEOUT", "a duration such as 30s (or whole seconds)", func(v string) bool {
		if _, err := strconv.ParseUint(v, 10, 63); err == nil {
			return true
		}
		_, err := time.ParseDuration(v)
		return err == nil
	}, false},
	{"VAULT_RATE_LIMIT", "requests per second, with an optional burst: 10 or 10:20", func(v string) bool {
		rate, burst, ok := strings.Cut(v, ":")
		_, err := strconv.ParseFloat(rate, 64)
		if ok {
			_, berr := strconv.Atoi(burst)
			return err == nil && berr == nil
		}
		return err == nil
	}, false},
	{"VAULT_HTTP_PROXY", "a proxy URL such as http://proxy:3128", isURL, true},
	{"VAULT_PROXY_ADDR", "a proxy URL such as http://proxy:3128", isURL, true},
	{"VAULT_AGENT_ADDR", "a Vault Agent URL such as http://127.0.0.1:8100 or unix:///run/agent.sock", func(v string) bool {
		u, err := url.Parse(v)
		return isURL(v) || err == nil && u.Scheme == "unix" && u.Path != ""
	}, true},
	{"VAULT_HEADERS", `a JSON object of header names and string values, none starting X-Vault- ({"X-Team": "a"})`, func(v string) bool {
		var h map[string]string
		if json.Unmarshal([]byte(v), &h) != nil {
			return false
		}
		for k := range h {
			if strings.HasPrefix(k, "X-Vault-") {
				return false
			}
		}
		return true
	}, true},
}

// vaultFiles are the files Vault's TLS settings name, by where each may
// come from.
var vaultFiles = []struct{ env, field, holds string }{
	{"VAULT_CACERT", "vault.tls.ca_cert", "the PEM certificate of the CA that signed Vault's certificate"},
	{"VAULT_CAPATH", "", "a directory of PEM CA certificates"},
	{"VAULT_CLIENT_CERT", "vault.tls.client_cert", "the PEM client certificate"},
	{"VAULT_CLIENT_KEY", "vault.tls.client_key", "the PEM key of the client certificate"},
}

// checkVaultEnv reports the first malformed VAULT_* variable, and a TLS
// file (from the file or the environment) that cannot be read, as a
// usage error that says what to set.
func checkVaultEnv(vc VaultConfig, getenv func(string) string) error {
	for _, v := range vaultEnvSyntax {
		if val := getenv(v.name); val != "" && !v.ok(val) {
			if v.secret {
				return usage("%s is malformed (its value is not shown: it may hold credentials): want %s", v.name, v.want)
			}
			return usage("%s=%q: want %s", v.name, val, v.want)
		}
	}
	fromFile := map[string]string{"vault.tls.ca_cert": vc.TLS.CACert, "vault.tls.client_cert": vc.TLS.ClientCert, "vault.tls.client_key": vc.TLS.ClientKey}
	for _, f := range vaultFiles {
		where, path := "", ""
		if f.field != "" && fromFile[f.field] != "" {
			where, path = f.field, fromFile[f.field]
		} else if v := getenv(f.env); v != "" {
			where, path = "$"+f.env, v
		}
		if path == "" {
			continue
		}
		if _, err := os.Stat(path); err != nil {
			return usage("%s: %v; it should name %s", where, err, f.holds)
		}
	}
	if (vc.TLS.ClientCert != "" || getenv("VAULT_CLIENT_CERT") != "") != (vc.TLS.ClientKey != "" || getenv("VAULT_CLIENT_KEY") != "") {
		return usage("a client certificate needs both its certificate and its key: set vault.tls.client_cert and client_key (or VAULT_CLIENT_CERT and VAULT_CLIENT_KEY), or neither")
	}
	return nil
}

func isBool(v string) bool { _, err := strconv.ParseBool(v); return err == nil }

func isURL(v string) bool {
	u, err := url.Parse(v)
	return err == nil && u.Scheme != "" && u.Host != ""
}

// usage is a usage error with a formatted message.
func usage(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// vaultAddress is where the daemon sends the Vault token, and where that
// came from: vault.address, else $VAULT_AGENT_ADDR (which the Vault
// library and CLI prefer to $VAULT_ADDR), else $VAULT_ADDR. The Vault
// client is given this address alone (vault.New ignores the library's
// own reading of VAULT_AGENT_ADDR), so the one address checked is the
// one used.
func vaultAddress(vc VaultConfig, getenv func(string) string) (addr, field string) {
	if vc.Address != "" {
		return vc.Address, "vault.address"
	}
	if a := getenv("VAULT_AGENT_ADDR"); a != "" {
		return a, "vault.address ($VAULT_AGENT_ADDR)"
	}
	return getenv("VAULT_ADDR"), "vault.address ($VAULT_ADDR)"
}

// vaultProxy is the proxy the Vault library sends every request through
// when $VAULT_PROXY_ADDR (or the older $VAULT_HTTP_PROXY) is set, loopback
// addresses included, and the variable it came from.
func vaultProxy(getenv func(string) string) (raw, name string) {
	if p := getenv("VAULT_PROXY_ADDR"); p != "" {
		return p, "VAULT_PROXY_ADDR"
	}
	if p := getenv("VAULT_HTTP_PROXY"); p != "" {
		return p, "VAULT_HTTP_PROXY"
	}
	return "", ""
}

// checkVaultPath applies the one loopback rule (secret.InClear) to every
// hop the Vault token takes: the address (a plain-http one beyond
// loopback needs vault.allow_insecure_http), and a Vault proxy, which
// reads a plain-http request whole: through one that is not on loopback
// the token is in clear as well. A unix:// agent socket stays on the
// machine.
func checkVaultPath(vc VaultConfig, getenv func(string) string) error {
	addr, field := vaultAddress(vc, getenv)
	u, err := url.Parse(addr)
	if err != nil || !(u.Scheme == "http" || u.Scheme == "https") || u.Host == "" {
		if field == "vault.address ($VAULT_AGENT_ADDR)" && err == nil && u.Scheme == "unix" && u.Path != "" {
			return nil
		}
		return usage("%s: %s is not an http(s) URL such as https://vault.example:8200", field, redactedURL(addr))
	}
	if p := strings.TrimRight(u.Path, "/"); strings.HasSuffix(p, "/v1") {
		// The client appends /v1/ to the address: this one would call
		// /v1/v1/…, which Vault answers "no handler for route", as if
		// no secrets engine were mounted.
		full, base := redactedURL(addr)+p, redactedURL(addr)+strings.TrimSuffix(p, "/v1")
		return usage("%s: %s ends in /v1, the API's prefix, which the Vault client adds itself (it would call %s/v1/…); set it to %s", field, full, full, base)
	}
	if err := vaultInClear(field, addr, vc.AllowInsecureHTTP); err != nil {
		return &usageError{err}
	}
	if raw, name := vaultProxy(getenv); raw != "" && u.Scheme == "http" && !vc.AllowInsecureHTTP {
		if pu, err := url.Parse(raw); err != nil || !secret.LoopbackHost(pu.Hostname()) {
			return usage("$%s: %s goes through the proxy %s in plain http, which sends the Vault token in clear; use https for Vault, a proxy on loopback, or set vault.allow_insecure_http: true to accept the risk",
				name, field, redactedURL(raw))
		}
	}
	return nil
}

// vaultTLSWarnings are logged at every start, beside the plain-HTTP
// ones: a Vault client that does not check Vault's certificate hands
// the token to whoever answers on its address.
func vaultTLSWarnings(getenv func(string) string) []string {
	if skip, _ := strconv.ParseBool(getenv("VAULT_SKIP_VERIFY")); skip {
		return []string{"VAULT_SKIP_VERIFY is set: Vault's TLS certificate is not checked, so whoever answers on the Vault address gets the Vault token; unset it and name the CA with vault.tls.ca_cert or VAULT_CACERT"}
	}
	return nil
}

// redactedURL is raw without what a URL may carry secrets in (user
// information, path, query): what an error may quote of a value from
// the environment.
func redactedURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(a value that is not a URL)"
	}
	return secret.Origin(u)
}
