package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"time"

	"github.com/codat-rotator/codat-rotator/codat"
	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/store"
	"github.com/codat-rotator/codat-rotator/vault"
)

// The operator commands that work through a running daemon's admin
// socket, or in-process when no daemon runs: status, keys, resume. And
// check, which never needs the daemon.

// opsCommand holds what status, keys, resume and check share.
type opsCommand struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	configPath     string
	app            *app
}

func (c *opsCommand) flags(name, synopsis string) *flag.FlagSet {
	fs := newFlagSet(name, synopsis, c.stderr)
	fs.StringVar(&c.configPath, "config", DefaultConfigPath, "config `file`")
	return fs
}

// open loads the config and opens the app in-process (read-only unless
// write is set), explaining a lock held by a daemon that did not answer.
func (c *opsCommand) open(write bool) (Config, error) {
	cfg, err := LoadConfig(c.configPath, c.getenv)
	if err != nil {
		return cfg, &usageError{err}
	}
	log := slog.New(slog.DiscardHandler)
	c.app, err = openApp(cfg, log, c.getenv, !write, nil)
	if err != nil {
		return cfg, explainLocked(err, cfg.Listen.AdminSocket)
	}
	return cfg, nil
}

func (c *opsCommand) Close() error { return c.app.Close() }

// statusCommand is `codat-rotator status [--json]`.
type statusCommand struct {
	opsCommand
	json bool
}

func (c *statusCommand) ParseFlags(args []string) error {
	fs := c.flags("status", "[--json]")
	fs.BoolVar(&c.json, "json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return noArgs(fs)
}

func (c *statusCommand) Run(ctx context.Context) error {
	cfg, err := LoadConfig(c.configPath, c.getenv)
	if err != nil {
		return &usageError{err}
	}
	var doc statusDoc
	if admin, ok := dialDaemon(ctx, cfg.Listen.AdminSocket); ok {
		if err := admin.call(ctx, "GET", "/v1/status", nil, &doc); err != nil {
			return err
		}
	} else {
		if _, err := c.open(false); err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				return err
			}
			return fmt.Errorf("no state file at %s yet: nothing has been rotated", cfg.StatePath)
		}
		next := func(name string) time.Time {
			for _, tc := range cfg.Targets {
				if tc.Name == name {
					if s, err := rotation.ParseSchedule(tc.Schedule); err == nil {
						return s.Next(time.Now())
					}
				}
			}
			return time.Time{}
		}
		doc, err = buildStatus(c.app.engine.Store.Load, c.app.allTargets(), next, time.Now().UTC())
		if err != nil {
			return err
		}
	}
	if c.json {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(doc)
	}
	printStatus(c.stdout, doc)
	return nil
}

// keysCommand is `codat-rotator keys [--target T]`.
type keysCommand struct {
	opsCommand
	target string
	json   bool
}

func (c *keysCommand) ParseFlags(args []string) error {
	fs := c.flags("keys", "[--target NAME] [--json]")
	fs.StringVar(&c.target, "target", "", "only this `target`")
	fs.BoolVar(&c.json, "json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return noArgs(fs)
}

func (c *keysCommand) Run(ctx context.Context) error {
	cfg, err := LoadConfig(c.configPath, c.getenv)
	if err != nil {
		return &usageError{err}
	}
	var doc keysDoc
	if admin, ok := dialDaemon(ctx, cfg.Listen.AdminSocket); ok {
		if err := admin.call(ctx, "GET", "/v1/keys?target="+url.QueryEscape(c.target), nil, &doc); err != nil {
			return err
		}
	} else {
		if _, err := c.open(false); err != nil {
			return err
		}
		targets, err := c.app.selectTargets(c.target)
		if err != nil {
			return &usageError{err}
		}
		doc = buildKeys(ctx, c.app, targets)
	}
	if c.json {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(doc)
	}
	return printKeys(c.stdout, doc)
}

// resumeCommand is `codat-rotator resume --target T`.
type resumeCommand struct {
	opsCommand
	target string
}

func (c *resumeCommand) ParseFlags(args []string) error {
	fs := c.flags("resume", "--target NAME")
	fs.StringVar(&c.target, "target", "", "the halted `target` to resume (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if c.target == "" {
		fs.Usage()
		return errors.New("--target is required")
	}
	return noArgs(fs)
}

func (c *resumeCommand) Run(ctx context.Context) error {
	cfg, err := LoadConfig(c.configPath, c.getenv)
	if err != nil {
		return &usageError{err}
	}
	if admin, ok := dialDaemon(ctx, cfg.Listen.AdminSocket); ok {
		if err := admin.call(ctx, "POST", "/v1/resume", map[string]string{"target": c.target}, nil); err != nil {
			return err
		}
	} else {
		if _, err := c.open(true); err != nil {
			return err
		}
		targets, err := c.app.selectTargets(c.target)
		if err != nil {
			return &usageError{err}
		}
		if err := c.app.engine.Resume(targets[0]); err != nil {
			return err
		}
	}
	fmt.Fprintf(c.stdout, "%s: resumed; scheduled rotations run again\n", c.target)
	return nil
}

// checkCommand is `codat-rotator check`: the config is valid, and Codat
// and Vault answer with the configured credentials. One line per check;
// the exit status is non-zero if any failed.
type checkCommand struct {
	opsCommand
}

func (c *checkCommand) ParseFlags(args []string) error {
	fs := c.flags("check", "[--config FILE]")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return noArgs(fs)
}

func (c *checkCommand) Run(ctx context.Context) error {
	failed := 0
	line := func(ok bool, what, detail string) {
		mark := "ok  "
		if !ok {
			mark, failed = "FAIL", failed+1
		}
		fmt.Fprintf(c.stdout, "%s %-28s %s\n", mark, what, detail)
	}
	cfg, err := LoadConfig(c.configPath, c.getenv)
	if err != nil {
		line(false, "config", err.Error())
		return &usageError{errors.New("the config is not valid")}
	}
	line(true, "config", fmt.Sprintf("%s: %d target(s)", c.configPath, len(cfg.Targets)))

	vc, err := vaultConfig(cfg.Vault, c.getenv)
	if err == nil {
		c.app = &app{cfg: cfg, log: slog.New(slog.DiscardHandler), getenv: c.getenv}
		c.app.vault, err = vault.New(vc)
	}
	if err != nil {
		line(false, "vault", err.Error())
		return fmt.Errorf("%d check(s) failed", failed)
	}
	if err := c.app.setTargets(cfg.Targets); err != nil {
		line(false, "codat", err.Error())
		return fmt.Errorf("%d check(s) failed", failed)
	}
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := c.app.vault.Ping(pctx); err != nil {
		line(false, "vault", err.Error())
		return fmt.Errorf("%d check(s) failed", failed)
	}
	line(true, "vault", "reachable at "+c.app.vault.Address()+", token valid")

	switch db, err := store.Open(cfg.StatePath, store.Options{ReadOnly: true}); {
	case err == nil:
		db.Close()
		line(true, "state file", cfg.StatePath)
	case errors.Is(err, os.ErrNotExist):
		line(true, "state file", cfg.StatePath+" (not created yet)")
	case errors.Is(err, store.ErrLocked):
		line(true, "state file", cfg.StatePath+" (held by the running daemon)")
	default:
		line(false, "state file", err.Error())
	}

	for _, t := range c.app.allTargets() {
		name := "target " + t.Name
		if err := c.app.vault.CheckMount(pctx, t.Vault); err != nil {
			line(false, name+": vault", err.Error())
			continue
		}
		cur, err := c.app.vault.Read(pctx, t.Vault)
		if err != nil {
			line(false, name+": vault", err.Error())
			continue
		}
		var key codat.Secret
		switch {
		case cur.Secret != nil:
			key = cur.Secret.APIKey
			line(true, name+": vault", fmt.Sprintf("%s serves key %s (version %d)", t.Vault, cur.Secret.KeyID, cur.Version))
		case t.Bootstrap == nil:
			line(false, name+": vault", fmt.Sprintf("%s holds no secret and no bootstrap key is configured (bootstrap_key_file or bootstrap_key_env)", t.Vault))
			continue
		default:
			key, err = t.Bootstrap()
			if err != nil {
				line(false, name+": bootstrap", err.Error())
				continue
			}
			line(true, name+": vault", fmt.Sprintf("%s holds no secret yet; the bootstrap key will be published", t.Vault))
		}
		keys, err := c.app.clients[t.Name].WithKey(key).List(pctx)
		if err != nil {
			line(false, name+": codat", err.Error())
			continue
		}
		line(true, name+": codat", fmt.Sprintf("key accepted; %d of %d keys used", len(keys), t.MaxKeys))
	}
	if failed > 0 {
		return fmt.Errorf("%d check(s) failed", failed)
	}
	return nil
}
