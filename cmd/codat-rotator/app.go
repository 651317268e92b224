package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/codat-rotator/codat-rotator/codat"
	"github.com/codat-rotator/codat-rotator/internal/secretfile"
	"github.com/codat-rotator/codat-rotator/metrics"
	"github.com/codat-rotator/codat-rotator/notify"
	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/rotation/adapt"
	"github.com/codat-rotator/codat-rotator/store"
	"github.com/codat-rotator/codat-rotator/vault"
)

// app is the wiring shared by the commands that rotate: the state file,
// Vault, the Codat clients and the engine, built from the config.
type app struct {
	cfg    Config
	log    *slog.Logger
	db     *store.DB
	vault  *vault.Client
	engine *rotation.Engine
	getenv func(string) string
	m      *metrics.Metrics // nil outside the daemon
	// daemon: this process is `run`, whose environment is its own, not
	// the shell's of the operator asking it through the admin socket.
	daemon bool
	// budget is the process's one Codat request budget, which every
	// target's client shares (codat_requests_per_minute).
	budget *codat.Budget

	mu      sync.Mutex
	targets []rotation.Target
	clients map[string]*codat.Client
	// codatHTTP is the one HTTP client every target's Codat client
	// sends through (codatHTTPClient).
	codatHTTP *http.Client
}

// codatIdleConns is how many idle connections to one Codat host the
// targets' shared transport keeps: at least the default
// max_concurrent_rotations, so that a fleet's requests side by side
// reuse their connections instead of dialling (and, at Codat, a TLS
// handshake) for most requests, as Go's default of 2 would have them.
const codatIdleConns = 64

// codatHTTPClient returns the HTTP client the targets' Codat clients
// share: one connection pool for the process, as a fleet's targets
// mostly talk to the one Codat host. A client of its own per target
// would dial each target's first request anew, and keep a pool per
// target in the daemon.
func (a *app) codatHTTPClient() *http.Client {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.codatHTTP == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = codatIdleConns
		a.codatHTTP = &http.Client{Transport: t}
	}
	return a.codatHTTP
}

// openApp opens the state file and builds the clients. getenv supplies
// VAULT_* and bootstrap variables; nothing below cmd reads the
// environment.
func openApp(cfg Config, log *slog.Logger, getenv func(string) string, readOnly bool, m *metrics.Metrics) (*app, error) {
	vc, err := vaultConfig(cfg.Vault, getenv)
	if err != nil {
		return nil, err
	}
	if m != nil {
		vc.Observe = m.ObserveVault
	}
	if vc.Auth != nil {
		vc.OnLogin = func(method string) { log.Info("logged in to vault", "method", method) }
	}
	vc.OnWarning = func(msg string) { log.Warn(msg) }
	for _, w := range insecureHTTPWarnings(cfg, getenv) {
		log.Warn(w)
	}
	vcl, err := newVault(vc)
	if err != nil {
		return nil, err
	}
	if dir := filepath.Dir(cfg.StatePath); dir != "" && !readOnly {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, pathError("state_path", "state directory", DefaultStatePath, "StateDirectory", err)
		}
	}
	var states rotation.Store
	db, err := store.Open(cfg.StatePath, store.Options{ReadOnly: readOnly})
	switch {
	case err == nil:
		states = db
	case readOnly && errors.Is(err, os.ErrNotExist):
		states = noState{} // nothing rotated yet: plan from an empty state
	case errors.Is(err, fs.ErrPermission):
		return nil, pathError("state_path", "state file", DefaultStatePath, "StateDirectory", err)
	default:
		return nil, err
	}
	a := &app{cfg: cfg, log: log, db: db, vault: vcl, getenv: getenv, m: m, daemon: m != nil}
	var onWait func(time.Duration)
	if m != nil {
		onWait = m.ObserveBudgetWait
	}
	a.budget = codat.NewBudget(cfg.CodatRequestsPerMinute, codat.BudgetOptions{OnWait: onWait})
	if err := a.setTargets(cfg.Targets); err != nil {
		a.Close()
		return nil, err
	}
	a.engine = &rotation.Engine{
		Store:         states,
		Vault:         adapt.Vault(vcl),
		Logger:        log,
		Codat:         a.codat,
		MaxConcurrent: cfg.MaxConcurrentRotations,
	}
	if db != nil {
		if a.engine.Owner, err = owner(db); err != nil {
			a.Close()
			return nil, err
		}
		a.engine.Salt = db.Salt()
	}
	// Every target's cap and recorded keys, so targets sharing a Codat
	// client agree on the strictest cap from the first rotation.
	if err := a.engine.Know(a.allTargets()...); err != nil {
		a.Close()
		return nil, err
	}
	return a, nil
}

// owner is the identity this process claims targets with: the state
// file's, and the host it runs on.
func owner(db *store.DB) (rotation.Owner, error) {
	id, err := db.Identity()
	if err != nil {
		return rotation.Owner{}, fmt.Errorf("read the state file's identity: %w", err)
	}
	inc, err := db.Incarnation()
	if err != nil {
		return rotation.Owner{}, err
	}
	host, _ := os.Hostname()
	return rotation.Owner{ID: id, Host: host, Incarnation: inc, Known: db.KnownIncarnation}, nil
}

// codat is the engine's CodatFactory: the target's client with key.
func (a *app) codat(target string, key codat.Secret) rotation.Codat {
	a.mu.Lock()
	c := a.clients[target]
	a.mu.Unlock()
	if c == nil {
		return noClient(target)
	}
	return adapt.Codat(c.WithKey(key))
}

// setTargets (re)builds the targets and installs their Codat clients.
func (a *app) setTargets(tcs []TargetConfig) error {
	targets, clients, err := a.buildTargets(tcs)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.clients, a.targets = clients, targets
	a.mu.Unlock()
	return nil
}

// buildTargets builds the targets of tcs and a Codat client for each,
// installing nothing.
func (a *app) buildTargets(tcs []TargetConfig) ([]rotation.Target, map[string]*codat.Client, error) {
	clients := map[string]*codat.Client{}
	var targets []rotation.Target
	hc := a.codatHTTPClient()
	for _, tc := range tcs {
		opts := codat.Options{BaseURL: tc.Codat.BaseURL, HTTPClient: hc, RequestTimeout: tc.Codat.Timeout.D(), UserAgent: "codat-rotator/" + version, Budget: a.budget}
		if a.m != nil {
			opts.Observe = a.m.ObserveCodat
		}
		c, err := codat.New("", opts)
		if err != nil {
			return nil, nil, fmt.Errorf("target %s: %w", tc.Name, err)
		}
		clients[tc.Name] = c
		targets = append(targets, rotationTarget(tc, a.getenv, a.log, a.daemon))
	}
	return targets, clients, nil
}

// setTargetList replaces the configured targets (status, readiness,
// target selection), leaving the Codat clients as they are.
func (a *app) setTargetList(targets []rotation.Target) {
	a.mu.Lock()
	a.targets = targets
	a.mu.Unlock()
	if a.engine != nil {
		if err := a.engine.Know(targets...); err != nil {
			a.log.Warn("read the reloaded targets' recorded keys", "error", err)
		}
	}
}

// useClient installs the Codat client the named target's next runs use.
// The scheduler calls it from the target's loop between two runs, so a
// reload never swaps the client under a rotation, and a removed target
// keeps its client until its last run ends.
func (a *app) useClient(name string, c *codat.Client) {
	a.mu.Lock()
	a.clients[name] = c
	a.mu.Unlock()
}

// allTargets returns the configured targets, to read and not to change:
// the slice is shared, never copied (a fleet's rotate asks for it once
// per target), and a reload replaces it whole rather than writing into
// it.
func (a *app) allTargets() []rotation.Target {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clip(a.targets)
}

// noClient is the Codat of a target the app has no client for: every
// call fails instead of panicking on a nil client.
type noClient string

func (n noClient) err() error {
	return fmt.Errorf("target %s: no codat client: the target is not configured", string(n))
}
func (n noClient) List(context.Context) ([]rotation.Key, error) { return nil, n.err() }
func (n noClient) Create(context.Context, string) (rotation.Key, error) {
	return rotation.Key{}, n.err()
}
func (n noClient) Delete(context.Context, string) error { return n.err() }

// noState stands for a state file that does not exist yet, read-only.
type noState struct{}

func (noState) Load(string) (store.Target, error) { return store.Target{}, nil }
func (noState) Update(string, func(*store.Target) error) error {
	return errors.New("no state file: read-only")
}
func (noState) Finish(string, func(*store.Target) error, store.Rotation) error {
	return errors.New("no state file: read-only")
}
func (noState) Targets() ([]string, error)  { return nil, nil }
func (noState) Rename(string, string) error { return store.ErrReadOnly }
func (noState) Claims(string, string, []string) (store.Claims, error) {
	return store.Claims{}, nil
}

func (a *app) Close() error {
	if a == nil || a.db == nil {
		return nil
	}
	return a.db.Close()
}

// rotationTarget turns a target's config into the engine's Target. log
// receives the bootstrap key file's warnings; daemon says whose
// environment getenv reads, for the error of an unset bootstrap
// variable.
func rotationTarget(tc TargetConfig, getenv func(string) string, log *slog.Logger, daemon bool) rotation.Target {
	t := rotation.Target{
		Name:         tc.Name,
		Vault:        rotation.Location{Mount: strings.Trim(tc.Vault.Mount, "/"), Path: strings.Trim(tc.Vault.Path, "/")},
		Prefix:       tc.KeyNamePrefix,
		MaxKeys:      tc.MaxKeys,
		ReserveSlots: *tc.ReserveSlots,
		Grace:        tc.Grace.D(),
	}
	if sched, err := rotation.ParseSchedule(tc.Schedule); err == nil {
		t.NextRotation = func(now time.Time) time.Time { return sched.Next(now) }
		t.Interval = rotation.ShortestInterval(sched)
	}
	switch {
	case tc.Codat.BootstrapKeyFile != "":
		path := tc.Codat.BootstrapKeyFile
		t.BootstrapFrom = "bootstrap_key_file " + path
		t.Bootstrap = func() (codat.Secret, error) {
			b, warnings, err := secretfile.File{Field: "bootstrap_key_file", Path: path, Holds: "the Codat key"}.Read()
			for _, w := range warnings {
				log.Warn(w, "target", tc.Name)
			}
			if err != nil {
				return "", fmt.Errorf("bootstrap_key_file: %w", err)
			}
			key := strings.TrimSpace(string(b))
			if key == "" {
				return "", fmt.Errorf("bootstrap_key_file %s is empty: write a key of this Codat client in it for the first run", path)
			}
			return codat.Secret(key), nil
		}
	case tc.Codat.BootstrapKeyEnv != "":
		name := tc.Codat.BootstrapKeyEnv
		t.BootstrapFrom = "$" + name
		t.Bootstrap = func() (codat.Secret, error) {
			key := strings.TrimSpace(getenv(name))
			if key == "" && daemon {
				return "", fmt.Errorf("bootstrap_key_env names $%s, which is not set in the daemon's environment: for the first run, set it to a key of this Codat client where the daemon gets its environment (under systemd, in /etc/codat-rotator/env, then systemctl restart codat-rotator); a variable exported in your shell does not reach a running daemon; it is read only while Vault holds no key", name)
			}
			if key == "" {
				return "", fmt.Errorf("bootstrap_key_env names $%s, which is not set: for the first run, set it to a key of this Codat client (under systemd, in /etc/codat-rotator/env); it is read only while Vault holds no key", name)
			}
			return codat.Secret(key), nil
		}
	}
	return t
}

// webhooks gives each target's webhooks from the config, by target name.
func webhooks(tcs []TargetConfig) map[string][]notify.Hook {
	hooks := map[string][]notify.Hook{}
	for _, tc := range tcs {
		for _, w := range tc.Notify.Webhooks {
			hooks[tc.Name] = append(hooks[tc.Name], notify.Hook{URL: w.URL, Format: w.Format, Events: w.Events, Timeout: w.Timeout.D()})
		}
	}
	return hooks
}

// vaultConfig merges vault: with the VAULT_* environment, as the Vault
// CLI reads it: the file wins where it sets a value. Every error is a
// usage error: the settings, not Vault, are wrong.
func vaultConfig(vc VaultConfig, getenv func(string) string) (vault.Config, error) {
	pick := func(v, env string) string {
		if v != "" {
			return v
		}
		return getenv(env)
	}
	addr, _ := vaultAddress(vc, getenv)
	c := vault.Config{
		Address:       addr,
		Namespace:     pick(vc.Namespace, "VAULT_NAMESPACE"),
		CACert:        pick(vc.TLS.CACert, "VAULT_CACERT"),
		CAPath:        getenv("VAULT_CAPATH"),
		ClientCert:    pick(vc.TLS.ClientCert, "VAULT_CLIENT_CERT"),
		ClientKey:     pick(vc.TLS.ClientKey, "VAULT_CLIENT_KEY"),
		TLSServerName: pick(vc.TLS.ServerName, "VAULT_TLS_SERVER_NAME"),
	}
	if err := checkVaultEnv(vc, getenv); err != nil {
		return c, err
	}
	c.Insecure, _ = strconv.ParseBool(getenv("VAULT_SKIP_VERIFY")) // checked above
	switch vc.Auth.Method {
	case "token":
		c.TokenFile = vc.Auth.TokenFile
		if c.TokenFile == "" {
			c.Token = codat.Secret(getenv("VAULT_TOKEN"))
			if c.Token.Empty() {
				return c, usage("vault.auth.method is token, but VAULT_TOKEN is empty and vault.auth.token_file is not set: set VAULT_TOKEN in the environment (under systemd, in /etc/codat-rotator/env), or token_file, or use the approle or kubernetes method")
			}
		}
	case "approle":
		ar := vc.Auth.AppRole
		var missing []string
		if ar.RoleIDFile == "" {
			missing = append(missing, "role_id_file")
		}
		if ar.SecretIDFile == "" {
			missing = append(missing, "secret_id_file")
		}
		if len(missing) > 0 {
			return c, usage("vault.auth.method is approle, but vault.auth.approle.%s is not set: AppRole logs in with a role id and a secret id, each read from its file", strings.Join(missing, " and "))
		}
		c.Auth = vault.AppRoleAuth{Mount: ar.Mount, RoleIDFile: ar.RoleIDFile, SecretIDFile: ar.SecretIDFile}
	case "kubernetes":
		k := vc.Auth.Kubernetes
		if k.Role == "" {
			return c, usage("vault.auth.method is kubernetes, but vault.auth.kubernetes.role is not set: name the Vault role bound to this service account (deploy/kubernetes/vault-setup.sh makes codat-rotator)")
		}
		c.Auth = vault.KubernetesAuth{Mount: k.Mount, Role: k.Role, TokenFile: k.TokenFile}
	default:
		return c, usage("vault.auth.method %q: want token, approle or kubernetes", vc.Auth.Method)
	}
	if c.Address == "" {
		return c, usage("vault.address is not set and VAULT_ADDR is empty: set VAULT_ADDR (such as https://vault.example:8200) in the environment (under systemd, in /etc/codat-rotator/env), or vault.address in the config")
	}
	if err := checkVaultPath(vc, getenv); err != nil {
		return c, err
	}
	return c, nil
}

// newVault builds the Vault client of c. It contacts nothing, so what
// fails is the configuration, a usage error; but for a token file that
// does not exist yet, which a Vault Agent or systemd's LoadCredential
// may still write: a restart may find it.
func newVault(c vault.Config) (*vault.Client, error) {
	if c.TokenFile != "" {
		if _, err := os.Stat(c.TokenFile); errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("vault.auth.token_file %s does not exist (yet?): start the Vault Agent (or whatever writes it) first", c.TokenFile)
		}
	}
	cl, err := vault.New(c)
	if err != nil {
		return nil, &usageError{err}
	}
	return cl, nil
}

// pathError is a directory the process could not make for a path of the
// config: the defaults are the systemd unit's, which makes them
// (StateDirectory, RuntimeDirectory) before the daemon starts, so a user
// outside the unit meets this first. It is the config to change, a
// usage error.
func pathError(field, what, def, unitSetting string, err error) error {
	return &usageError{fmt.Errorf("%s: %w: set %s to a path in a directory this user can write (the default's, %s, is made by the systemd unit's %s=), or run under the unit",
		what, err, field, filepath.Dir(def), unitSetting)}
}
