package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// The VAULT_* variables that the Vault API library parses by itself when
// the client is built. A malformed one is a configuration error, checked
// here first so that the message names the variable and what it wants
// (the library's own errors often name neither).
var vaultEnvSyntax = []struct {
	name, want string
	ok         func(string) bool
}{
	{"VAULT_SKIP_VERIFY", "true or false", isBool},
	{"VAULT_SRV_LOOKUP", "true or false", isBool},
	{"VAULT_DISABLE_REDIRECTS", "true or false", isBool},
	{"VAULT_MAX_RETRIES", "a whole number", func(v string) bool { _, err := strconv.ParseUint(v, 10, 32); return err == nil }},
	{"VAULT_CLIENT_TIMEOUT", "a duration such as 30s (or whole seconds)", func(v string) bool {
		if _, err := strconv.ParseUint(v, 10, 63); err == nil {
			return true
		}
		_, err := time.ParseDuration(v)
		return err == nil
	}},
	{"VAULT_RATE_LIMIT", "requests per second, with an optional burst: 10 or 10:20", func(v string) bool {
		rate, burst, ok := strings.Cut(v, ":")
		_, err := strconv.ParseFloat(rate, 64)
		if ok {
			_, berr := strconv.Atoi(burst)
			return err == nil && berr == nil
		}
		return err == nil
	}},
	{"VAULT_HTTP_PROXY", "a proxy URL such as http://proxy:3128", isURL},
	{"VAULT_PROXY_ADDR", "a proxy URL such as http://proxy:3128", isURL},
	{"VAULT_AGENT_ADDR", "a Vault Agent URL such as http://127.0.0.1:8100 or unix:///run/agent.sock", func(v string) bool {
		u, err := url.Parse(v)
		return isURL(v) || err == nil && u.Scheme == "unix" && u.Path != ""
	}},
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
	}},
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
