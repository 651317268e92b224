package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
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

	mu      sync.Mutex
	targets []rotation.Target
	clients map[string]*codat.Client
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
	vcl, err := vault.New(vc)
	if err != nil {
		return nil, err
	}
	if dir := filepath.Dir(cfg.StatePath); dir != "" && !readOnly {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("state directory: %w", err)
		}
	}
	var states rotation.Store
	db, err := store.Open(cfg.StatePath, store.Options{ReadOnly: readOnly})
	switch {
	case err == nil:
		states = db
	case readOnly && errors.Is(err, os.ErrNotExist):
		states = noState{} // nothing rotated yet: plan from an empty state
	default:
		return nil, err
	}
	a := &app{cfg: cfg, log: log, db: db, vault: vcl, getenv: getenv, m: m}
	if err := a.setTargets(cfg.Targets); err != nil {
		a.Close()
		return nil, err
	}
	a.engine = &rotation.Engine{
		Store:  states,
		Vault:  adapt.Vault(vcl),
		Logger: log,
		Codat:  a.codat,
	}
	return a, nil
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
	for _, tc := range tcs {
		opts := codat.Options{BaseURL: tc.Codat.BaseURL, RequestTimeout: tc.Codat.Timeout.D(), UserAgent: "codat-rotator/" + version}
		if a.m != nil {
			opts.Observe = a.m.ObserveCodat
		}
		c, err := codat.New("", opts)
		if err != nil {
			return nil, nil, fmt.Errorf("target %s: %w", tc.Name, err)
		}
		clients[tc.Name] = c
		targets = append(targets, rotationTarget(tc, a.getenv, a.log))
	}
	return targets, clients, nil
}

// setTargetList replaces the configured targets (status, readiness,
// target selection), leaving the Codat clients as they are.
func (a *app) setTargetList(targets []rotation.Target) {
	a.mu.Lock()
	a.targets = targets
	a.mu.Unlock()
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

// allTargets returns the configured targets.
func (a *app) allTargets() []rotation.Target {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]rotation.Target(nil), a.targets...)
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
func (noState) AddHistory(string, store.Rotation) error {
	return errors.New("no state file: read-only")
}

func (a *app) Close() error {
	if a == nil || a.db == nil {
		return nil
	}
	return a.db.Close()
}

// rotationTarget turns a target's config into the engine's Target. log
// receives the bootstrap key file's warnings.
func rotationTarget(tc TargetConfig, getenv func(string) string, log *slog.Logger) rotation.Target {
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
				return "", fmt.Errorf("bootstrap_key_file %s is empty", path)
			}
			return codat.Secret(key), nil
		}
	case tc.Codat.BootstrapKeyEnv != "":
		name := tc.Codat.BootstrapKeyEnv
		t.Bootstrap = func() (codat.Secret, error) {
			key := strings.TrimSpace(getenv(name))
			if key == "" {
				return "", fmt.Errorf("bootstrap_key_env: $%s is not set", name)
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
// CLI reads it: the file wins where it sets a value.
func vaultConfig(vc VaultConfig, getenv func(string) string) (vault.Config, error) {
	pick := func(v, env string) string {
		if v != "" {
			return v
		}
		return getenv(env)
	}
	c := vault.Config{
		Address:       pick(vc.Address, "VAULT_ADDR"),
		Namespace:     pick(vc.Namespace, "VAULT_NAMESPACE"),
		CACert:        pick(vc.TLS.CACert, "VAULT_CACERT"),
		CAPath:        getenv("VAULT_CAPATH"),
		ClientCert:    pick(vc.TLS.ClientCert, "VAULT_CLIENT_CERT"),
		ClientKey:     pick(vc.TLS.ClientKey, "VAULT_CLIENT_KEY"),
		TLSServerName: pick(vc.TLS.ServerName, "VAULT_TLS_SERVER_NAME"),
	}
	if v := getenv("VAULT_SKIP_VERIFY"); v != "" {
		skip, err := strconv.ParseBool(v)
		if err != nil {
			return c, fmt.Errorf("VAULT_SKIP_VERIFY=%q: want true or false", v)
		}
		c.Insecure = skip
	}
	switch vc.Auth.Method {
	case "token":
		c.TokenFile = vc.Auth.TokenFile
		if c.TokenFile == "" {
			c.Token = codat.Secret(getenv("VAULT_TOKEN"))
		}
	case "approle":
		ar := vc.Auth.AppRole
		if ar.RoleIDFile == "" || ar.SecretIDFile == "" {
			return c, errors.New("vault.auth.approle: role_id_file and secret_id_file must both be set")
		}
		c.Auth = vault.AppRoleAuth{Mount: ar.Mount, RoleIDFile: ar.RoleIDFile, SecretIDFile: ar.SecretIDFile}
	case "kubernetes":
		k := vc.Auth.Kubernetes
		if k.Role == "" {
			return c, errors.New("vault.auth.kubernetes.role: must be set")
		}
		c.Auth = vault.KubernetesAuth{Mount: k.Mount, Role: k.Role, TokenFile: k.TokenFile}
	default:
		return c, fmt.Errorf("vault.auth.method %q: want token, approle or kubernetes", vc.Auth.Method)
	}
	if c.Address == "" {
		return c, errors.New("vault.address: not set, and VAULT_ADDR is empty")
	}
	if vc.Address == "" {
		// Validate saw only the file; the address came from $VAULT_ADDR.
		if err := vaultInClear("vault.address ($VAULT_ADDR)", c.Address, vc.AllowInsecureHTTP); err != nil {
			return c, err
		}
	}
	return c, nil
}
