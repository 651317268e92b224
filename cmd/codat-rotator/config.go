package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/codat-rotator/codat-rotator/notify"
	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/secret"
)

// DefaultConfigPath is where the daemon looks without --config.
const DefaultConfigPath = "/etc/codat-rotator/config.yaml"

// Config is the YAML file (docs/design.md#interfaces). Its field names
// are an operator contract: add fields freely, rename none.
type Config struct {
	StatePath string `yaml:"state_path"`
	// MaxConcurrentRotations bounds the rotations (and retirement
	// passes) running at once across targets, scheduled and manual
	// alike; `rotate --parallel` overrides it for one command.
	MaxConcurrentRotations int `yaml:"max_concurrent_rotations"`
	// CodatRequestsPerMinute is the process's budget of Codat requests,
	// shared by every target and every kind of request, retries
	// included (docs/design.md#codat-budget); 0 lifts it.
	CodatRequestsPerMinute int            `yaml:"codat_requests_per_minute"`
	Log                    LogConfig      `yaml:"log"`
	Listen                 ListenConfig   `yaml:"listen"`
	Vault                  VaultConfig    `yaml:"vault"`
	Targets                []TargetConfig `yaml:"targets"`
}

// LogConfig is log:.
type LogConfig struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// ListenConfig is listen:.
type ListenConfig struct {
	Metrics     string `yaml:"metrics"`
	AdminSocket string `yaml:"admin_socket"`
}

// VaultConfig is vault:.
type VaultConfig struct {
	Address string `yaml:"address"`
	// AllowInsecureHTTP accepts an http:// address to a host that is not
	// loopback, which sends the Vault token in clear. Default false.
	AllowInsecureHTTP bool            `yaml:"allow_insecure_http"`
	Namespace         string          `yaml:"namespace"`
	TLS               VaultTLSConfig  `yaml:"tls"`
	Auth              VaultAuthConfig `yaml:"auth"`
}

// VaultTLSConfig is vault.tls:.
type VaultTLSConfig struct {
	CACert     string `yaml:"ca_cert"`
	ClientCert string `yaml:"client_cert"`
	ClientKey  string `yaml:"client_key"`
	ServerName string `yaml:"server_name"`
}

// VaultAuthConfig is vault.auth:.
type VaultAuthConfig struct {
	Method     string           `yaml:"method"`
	TokenFile  string           `yaml:"token_file"`
	AppRole    AppRoleConfig    `yaml:"approle"`
	Kubernetes KubernetesConfig `yaml:"kubernetes"`
}

// AppRoleConfig is vault.auth.approle:.
type AppRoleConfig struct {
	Mount        string `yaml:"mount"`
	RoleIDFile   string `yaml:"role_id_file"`
	SecretIDFile string `yaml:"secret_id_file"`
}

// KubernetesConfig is vault.auth.kubernetes:.
type KubernetesConfig struct {
	Mount     string `yaml:"mount"`
	Role      string `yaml:"role"`
	TokenFile string `yaml:"token_file"`
}

// TargetConfig is one entry of targets:.
type TargetConfig struct {
	Name          string            `yaml:"name"`
	Codat         TargetCodatConfig `yaml:"codat"`
	Vault         TargetVaultConfig `yaml:"vault"`
	Schedule      string            `yaml:"schedule"`
	Jitter        Duration          `yaml:"jitter"`
	Grace         Duration          `yaml:"grace"`
	KeyNamePrefix string            `yaml:"key_name_prefix"`
	MaxKeys       int               `yaml:"max_keys"`
	ReserveSlots  *int              `yaml:"reserve_slots"`
	Notify        NotifyConfig      `yaml:"notify"`
}

// NotifyConfig is targets[].notify:.
type NotifyConfig struct {
	Webhooks []WebhookConfig `yaml:"webhooks"`
}

// WebhookConfig is one webhook of a target.
type WebhookConfig struct {
	// URL receives a POST per event. It may hold a secret (Slack's do):
	// it is never logged whole.
	URL string `yaml:"url"`
	// Format is json (a generic document) or slack (a {"text": ...} body).
	Format string `yaml:"format"`
	// Events: failure, halt, low_slots, blocked, success (success is
	// opt-in).
	Events  []string `yaml:"events"`
	Timeout Duration `yaml:"timeout"`
}

// TargetCodatConfig is targets[].codat:.
type TargetCodatConfig struct {
	BaseURL          string   `yaml:"base_url"`
	BootstrapKeyFile string   `yaml:"bootstrap_key_file"`
	BootstrapKeyEnv  string   `yaml:"bootstrap_key_env"`
	Timeout          Duration `yaml:"timeout"`
	// AllowInsecureHTTP accepts an http:// base_url to a host that is not
	// loopback, which sends the Codat key in clear. Default false.
	AllowInsecureHTTP bool `yaml:"allow_insecure_http"`
}

// TargetVaultConfig is targets[].vault:.
type TargetVaultConfig struct {
	Mount string `yaml:"mount"`
	Path  string `yaml:"path"`
}

// Duration reads "24h", "10m30s" or whole days such as "7d".
type Duration time.Duration

// UnmarshalYAML parses the duration.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := parseDuration(n.Value)
	if err != nil {
		// A TypeError: decoding goes on and reports every mistake.
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %v", n.Line, err)}}
	}
	*d = Duration(v)
	return nil
}

func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if days, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n >= 0 {
			return time.Duration(n) * 24 * time.Hour, nil
		}
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (such as 30s, 10m, 24h or 7d)", s)
	}
	return v, nil
}

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// Defaults for everything optional.
const (
	DefaultStatePath = "/var/lib/codat-rotator/state.db"
	// DefaultMaxConcurrentRotations: see docs/configuration.md (max_concurrent_rotations).
	DefaultMaxConcurrentRotations = rotation.DefaultMaxConcurrent
	// MaxConcurrentRotationsLimit is the most Validate accepts.
	MaxConcurrentRotationsLimit = 1000
	// DefaultCodatRequestsPerMinute stays under Codat's 1,000 requests a
	// minute per IP, with room for what else calls Codat from the same
	// address (docs/configuration.md, "Fleets").
	DefaultCodatRequestsPerMinute = 900
	// CodatRequestsPerMinuteLimit is the most Validate accepts.
	CodatRequestsPerMinuteLimit = 100000
	DefaultMetricsListen        = "127.0.0.1:9464"
	DefaultAdminSocket          = "/run/codat-rotator/admin.sock"
	DefaultSchedule             = "0 3 * * 1"
	DefaultGrace                = 24 * time.Hour
	DefaultPrefix               = "codat-rotator-"
	DefaultMaxKeys              = 10
	DefaultReserveSlots         = 1
	DefaultVaultMount           = "secret"
	DefaultK8sTokenFile         = "/var/run/secrets/kubernetes.io/serviceaccount/token"
)

// DefaultConfig returns the settings used where the file is silent.
func DefaultConfig() Config {
	return Config{
		StatePath:              DefaultStatePath,
		MaxConcurrentRotations: DefaultMaxConcurrentRotations,
		CodatRequestsPerMinute: DefaultCodatRequestsPerMinute,
		Log:                    LogConfig{Level: "info", Format: "auto"},
		Listen:                 ListenConfig{Metrics: DefaultMetricsListen, AdminSocket: DefaultAdminSocket},
		Vault: VaultConfig{Auth: VaultAuthConfig{
			Method:     "token",
			AppRole:    AppRoleConfig{Mount: "approle"},
			Kubernetes: KubernetesConfig{Mount: "kubernetes", TokenFile: DefaultK8sTokenFile},
		}},
	}
}

// applyTargetDefaults fills a target's optional fields.
func applyTargetDefaults(t *TargetConfig) {
	if t.Codat.BaseURL == "" {
		t.Codat.BaseURL = "https://api.codat.io"
	}
	if t.Vault.Mount == "" {
		t.Vault.Mount = DefaultVaultMount
	}
	if t.Schedule == "" {
		t.Schedule = DefaultSchedule
	}
	if t.Grace == 0 {
		t.Grace = Duration(DefaultGrace)
	}
	if t.KeyNamePrefix == "" {
		t.KeyNamePrefix = DefaultPrefix
	}
	if t.MaxKeys == 0 {
		t.MaxKeys = DefaultMaxKeys
	}
	if t.ReserveSlots == nil {
		n := DefaultReserveSlots
		t.ReserveSlots = &n
	}
	for i := range t.Notify.Webhooks {
		w := &t.Notify.Webhooks[i]
		if w.Format == "" {
			w.Format = "json"
		}
		if w.Events == nil {
			w.Events = []string{notify.EventFailure, notify.EventHalt, notify.EventLowSlots, notify.EventBlocked}
		}
		if w.Timeout == 0 {
			w.Timeout = Duration(10 * time.Second)
		}
	}
}

// LoadConfig reads, expands, defaults and validates the file at path.
func LoadConfig(path string, getenv func(string) string) (Config, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Config{}, fmt.Errorf("config %s: no such file: name yours with --config FILE (configs/codat-rotator.yaml in the source lists every field)", path)
	}
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	cfg, err := ParseConfig(f, getenv)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig reads the YAML: defaults, then the file over them, then
// ${ENV} expansion, then validation. Unknown fields are errors.
func ParseConfig(r io.Reader, getenv func(string) string) (Config, error) {
	raw, err := io.ReadAll(io.LimitReader(r, 1<<20))
	if err != nil {
		return Config{}, err
	}
	expanded, vars, err := expandEnv(raw, getenv)
	if err != nil {
		return Config{}, err
	}
	cfg := DefaultConfig()
	dec := yaml.NewDecoder(bytes.NewReader(expanded))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, hideExpanded(yamlError(err, expanded, raw), vars)
	}
	for i := range cfg.Targets {
		applyTargetDefaults(&cfg.Targets[i])
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, hideExpanded(err, vars)
	}
	return cfg, nil
}

// hideExpanded returns err with every value that ${NAME} expansion put
// into the document written back as ${NAME}: such values are often
// secrets (a webhook's token, a URL with a password), and an error is
// printed and logged. Values under 4 characters are left (they would
// garble line numbers, and hide little).
func hideExpanded(err error, vars map[string]string) error {
	if err == nil || len(vars) == 0 {
		return err
	}
	names := slices.Sorted(maps.Keys(vars))
	// Longest value first: a value that holds another is replaced whole.
	slices.SortStableFunc(names, func(a, b string) int { return len(vars[b]) - len(vars[a]) })
	text := err.Error()
	for _, name := range names {
		if v := vars[name]; len(v) >= 4 {
			text = strings.ReplaceAll(text, v, "${"+name+"}")
			if q := strconv.Quote(v); q[1:len(q)-1] != v {
				text = strings.ReplaceAll(text, q[1:len(q)-1], "${"+name+"}") // as %q wrote it
			}
		}
	}
	if text == err.Error() {
		return err
	}
	return errors.New(text)
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// expandEnv replaces ${NAME} with the variable's value, and returns the
// values it put in by name. An unset variable is an error naming it and
// its line; comment lines are left alone.
func expandEnv(raw []byte, getenv func(string) string) ([]byte, map[string]string, error) {
	lines := bytes.Split(raw, []byte("\n"))
	vars := map[string]string{}
	var errs []error
	for i, line := range lines {
		if bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			continue
		}
		lines[i] = envRef.ReplaceAllFunc(line, func(m []byte) []byte {
			name := string(envRef.FindSubmatch(m)[1])
			v := getenv(name)
			if v == "" {
				errs = append(errs, fmt.Errorf("line %d: ${%s} is not set", i+1, name))
			}
			vars[name] = v
			return []byte(v)
		})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	return bytes.Join(lines, []byte("\n")), vars, nil
}

var targetName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// Validate rejects settings that cannot work, naming the field.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if c.StatePath == "" {
		bad("state_path", "must not be empty")
	}
	if n := c.MaxConcurrentRotations; n < 1 || n > MaxConcurrentRotationsLimit {
		bad("max_concurrent_rotations", "%d is out of range: rotations at once must be between 1 and %d (default %d)", n, MaxConcurrentRotationsLimit, DefaultMaxConcurrentRotations)
	}
	if n := c.CodatRequestsPerMinute; n < 0 || n > CodatRequestsPerMinuteLimit {
		bad("codat_requests_per_minute", "%d is out of range: the Codat request budget must be between 1 and %d requests a minute, or 0 for none (default %d; Codat allows 1,000 a minute per IP)", n, CodatRequestsPerMinuteLimit, DefaultCodatRequestsPerMinute)
	}
	if _, err := newLogger(io.Discard, c.Log.Level, c.Log.Format); err != nil {
		bad("log", "%v", err)
	}
	if c.Listen.Metrics != "" {
		if _, _, err := net.SplitHostPort(c.Listen.Metrics); err != nil {
			bad("listen.metrics", "%q is not host:port", c.Listen.Metrics)
		}
	}
	switch c.Vault.Auth.Method {
	case "token", "approle", "kubernetes":
	default:
		bad("vault.auth.method", "%q: want token, approle or kubernetes", c.Vault.Auth.Method)
	}
	if c.Vault.Address != "" {
		if u, err := url.Parse(c.Vault.Address); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("vault.address", "%q is not an http(s) URL", c.Vault.Address)
		} else if err := vaultInClear("vault.address", c.Vault.Address, c.Vault.AllowInsecureHTTP); err != nil {
			errs = append(errs, err)
		}
	}
	if len(c.Targets) == 0 {
		bad("targets", "at least one target is needed")
	}
	names := map[string]int{}
	paths := map[string]int{}
	for i, t := range c.Targets {
		f := func(name string) string { return fmt.Sprintf("targets[%d].%s", i, name) }
		if !targetName.MatchString(t.Name) {
			bad(f("name"), "%q: want 1-63 letters, digits, '.', '_' or '-'", t.Name)
		} else if j, dup := names[t.Name]; dup {
			bad(f("name"), "%q is also the name of targets[%d]", t.Name, j)
		} else {
			names[t.Name] = i
		}
		if u, err := url.Parse(t.Codat.BaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad(f("codat.base_url"), "%q is not an http(s) URL", t.Codat.BaseURL)
		} else if inClear(t.Codat.BaseURL) && !t.Codat.AllowInsecureHTTP {
			bad(f("codat.base_url"), "%s sends the Codat API key in clear; use https, or set %s: true to accept the risk",
				t.Codat.BaseURL, f("codat.allow_insecure_http"))
		}
		if t.Codat.BootstrapKeyFile != "" && t.Codat.BootstrapKeyEnv != "" {
			bad(f("codat"), "set bootstrap_key_file or bootstrap_key_env, not both")
		}
		if t.Codat.Timeout < 0 {
			bad(f("codat.timeout"), "must not be negative")
		}
		if err := vaultLocation(f, t.Vault.Mount, t.Vault.Path); err != nil {
			errs = append(errs, err)
		}
		if t.Vault.Path == "" {
			bad(f("vault.path"), "must be set (the secret's path under the mount, such as codat/production)")
		} else {
			p := strings.Trim(t.Vault.Mount, "/") + "/" + strings.Trim(t.Vault.Path, "/")
			if j, dup := paths[p]; dup {
				bad(f("vault.path"), "%s is also the secret of targets[%d]", p, j)
			}
			paths[p] = i
		}
		if len(t.KeyNamePrefix) > rotation.MaxPrefixLen {
			bad(f("key_name_prefix"), "%q is %d characters; Codat names hold 50 and the daemon appends %d (the target's tag, a timestamp and a random part), so at most %d; shorten it",
				t.KeyNamePrefix, len(t.KeyNamePrefix), rotation.NameSuffixLen, rotation.MaxPrefixLen)
		}
		if t.MaxKeys < 2 || t.MaxKeys > 10 {
			bad(f("max_keys"), "%d: Codat allows 10 keys per client, and a rotation needs at least 2", t.MaxKeys)
		}
		reserve := *t.ReserveSlots
		slotsOK := t.MaxKeys >= 2 && t.MaxKeys <= 10 && reserve >= 0 && t.MaxKeys-reserve >= 2
		switch {
		case reserve < 0:
			bad(f("reserve_slots"), "%d: must not be negative", reserve)
		case reserve >= t.MaxKeys:
			bad(f("reserve_slots"), "%d leaves no slot of max_keys %d for rotations", reserve, t.MaxKeys)
		case t.MaxKeys-reserve < 2:
			bad(f("reserve_slots"), "%d leaves %d slot of max_keys %d; a rotation needs 2 (the served key and its successor)", reserve, t.MaxKeys-reserve, t.MaxKeys)
		}
		if t.Grace < 0 {
			bad(f("grace"), "must not be negative")
		}
		if t.Jitter < 0 {
			bad(f("jitter"), "must not be negative")
		}
		for j, w := range t.Notify.Webhooks {
			wf := func(name string) string { return fmt.Sprintf("targets[%d].notify.webhooks[%d].%s", i, j, name) }
			if u, err := url.Parse(w.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				bad(wf("url"), "not an http(s) URL")
			}
			if w.Format != "json" && w.Format != "slack" {
				bad(wf("format"), "%q: want json or slack", w.Format)
			}
			for _, e := range w.Events {
				switch e {
				case notify.EventFailure, notify.EventHalt, notify.EventLowSlots, notify.EventSuccess, notify.EventBlocked:
				default:
					bad(wf("events"), "%q: want failure, halt, low_slots, blocked or success", e)
				}
			}
		}
		sched, err := rotation.ParseSchedule(t.Schedule)
		if err != nil {
			bad(f("schedule"), "%q: %v", t.Schedule, err)
			continue
		}
		gap := rotation.ShortestInterval(sched)
		if t.Grace.D() > gap {
			bad(f("grace"), "%s is longer than the %s between runs of %q", t.Grace, gap, t.Schedule)
		}
		if t.Jitter.D() >= gap {
			bad(f("jitter"), "%s is not shorter than the %s between runs of %q", t.Jitter, gap, t.Schedule)
		}
		if need := rotation.SlotsNeeded(t.Grace.D(), t.Jitter.D(), gap); slotsOK && t.Grace >= 0 && t.Jitter >= 0 && need > t.MaxKeys-reserve {
			n := rotation.KeysInGrace(t.Grace.D(), t.Jitter.D(), gap)
			kept := "1 superseded key in its grace"
			if n != 1 {
				kept = fmt.Sprintf("%d superseded keys in their grace", n)
			}
			bad(fmt.Sprintf("targets[%d]", i), "schedule %q with grace %s and jitter %s keeps %s at each run, so a rotation needs %d key slots (the served key, %d in grace, the new one); max_keys %d − reserve_slots %d leaves %d",
				t.Schedule, shortDuration(t.Grace.D()), shortDuration(t.Jitter.D()), kept, need, n, t.MaxKeys, reserve, t.MaxKeys-reserve)
		}
	}
	return errors.Join(errs...)
}

// inClear reports whether raw, a URL Validate accepted, is plain http to
// a host that is not loopback, by the one rule of secret.InClear (the
// literal host only, never DNS; the hosts Go's proxy settings skip).
func inClear(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && secret.InClear(u)
}

// vaultInClear refuses an http address to a non-loopback Vault unless
// allowed. field names where the address came from.
func vaultInClear(field, addr string, allow bool) error {
	if !inClear(addr) || allow {
		return nil
	}
	return fmt.Errorf("%s: %s sends the Vault token in clear; use https, or set vault.allow_insecure_http: true to accept the risk", field, addr)
}

// insecureHTTPWarnings are logged at every start: each endpoint reached
// over plain HTTP beyond loopback, whether opted in (Codat, Vault) or
// only warned about (webhooks, which carry no key). getenv supplies
// $VAULT_ADDR when vault.address is empty.
func insecureHTTPWarnings(cfg Config, getenv func(string) string) []string {
	warns := vaultTLSWarnings(getenv)
	addr, field := vaultAddress(cfg.Vault, getenv)
	if inClear(addr) && cfg.Vault.AllowInsecureHTTP {
		warns = append(warns, fmt.Sprintf("%s: %s sends the Vault token in clear (vault.allow_insecure_http is set)", field, redactedURL(addr)))
	} else if p, name := vaultProxy(getenv); p != "" && cfg.Vault.AllowInsecureHTTP && strings.HasPrefix(addr, "http://") && !secret.LoopbackHost(hostOf(p)) {
		warns = append(warns, fmt.Sprintf("%s: %s goes through the proxy $%s in plain http: the Vault token is in clear (vault.allow_insecure_http is set)", field, redactedURL(addr), name))
	}
	for i, t := range cfg.Targets {
		if inClear(t.Codat.BaseURL) && t.Codat.AllowInsecureHTTP {
			warns = append(warns, fmt.Sprintf("targets[%d].codat.base_url: %s sends the Codat API key in clear (targets[%d].codat.allow_insecure_http is set)", i, t.Codat.BaseURL, i))
		}
		for j, w := range t.Notify.Webhooks {
			if inClear(w.URL) {
				warns = append(warns, fmt.Sprintf("targets[%d].notify.webhooks[%d].url: plain http to %s: events (and any token in the URL) travel in clear; use https",
					i, j, notify.RedactURL(w.URL)))
			}
		}
	}
	return warns
}

// hostOf is raw's host without its port, "" when raw is not a URL.
func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Hostname()
}

// shortDuration prints 24h rather than 24h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// vaultLocation refuses a target's mount and path that would write the
// secret somewhere other than the operator meant, silently: the mount
// repeated at the start of the path (secret/codat/x under secret), and
// the API's data/ or metadata/ segment written into the mount (the
// Vault CLI's `vault kv` hides them; the daemon adds them).
// Each error shows where the daemon would write and what to write.
func vaultLocation(f func(string) string, mount, path string) error {
	m, p := strings.Trim(mount, "/"), strings.Trim(path, "/")
	if m == "" || p == "" {
		return nil
	}
	would := m + "/data/" + p
	for _, seg := range []string{"data", "metadata"} {
		if base, ok := strings.CutSuffix(m, "/"+seg); ok {
			return fmt.Errorf("%s: %q ends in /%s, which the daemon adds itself: it would write %s; write mount: %s",
				f("vault.mount"), mount, seg, would, base)
		}
	}
	if rest, ok := strings.CutPrefix(p, m+"/"); ok {
		return fmt.Errorf("%s: %q starts with the mount %s/, which vault.mount already names: the daemon would write %s; write path: %s (or, if a secret at %s is really meant, rename the path so it does not repeat the mount)",
			f("vault.path"), path, m, would, rest, would)
	}
	return nil
}
