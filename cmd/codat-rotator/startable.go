package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/codat-rotator/codat-rotator/admin"
	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/vault"
)

// startCheckTimeout bounds the Vault reads of cannotStart: a Vault that
// does not answer leaves the targets to say why when they run.
const startCheckTimeout = 10 * time.Second

// startCheckParallel is how many of those reads run at once.
const startCheckParallel = 16

// cannotStart says which of targets cannot make their first rotation:
// Vault holds no key for them and their bootstrap key is not there (its
// variable unset in the daemon's environment, its file missing). Such a
// target would only fail in the background, so `run` and a reload
// refuse the config instead, naming the fix.
//
// It costs nothing for a target whose bootstrap key is at hand or whose
// state file records keys (it has rotated), and one Vault read for any
// other, startCheckParallel at a time. When Vault cannot be read it
// stops and says nothing: the targets' own runs report Vault.
func (a *app) cannotStart(targets []rotation.Target) error {
	ctx, cancel := context.WithTimeout(context.Background(), startCheckTimeout)
	defer cancel()
	type ask struct {
		i       int
		missing error
	}
	var asks []ask
	for i, t := range targets {
		var missing error
		if t.Bootstrap == nil {
			missing = errors.New("no bootstrap key is configured (bootstrap_key_file or bootstrap_key_env)")
		} else if _, err := t.Bootstrap(); err != nil {
			missing = err
		} else {
			continue
		}
		if a.engine != nil {
			if st, err := a.engine.Store.Load(t.Name); err == nil && len(st.Keys) > 0 {
				continue // it has rotated: Vault holds its key
			}
		}
		asks = append(asks, ask{i, missing})
	}
	// A fleet's first start asks for every secret: a few at a time, as
	// its rotations would.
	errs := make([]error, len(asks))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(startCheckParallel, len(asks)) {
		wg.Go(func() {
			for j := range next {
				t := targets[asks[j].i]
				cur, err := a.vault.Read(ctx, vault.Location{Mount: t.Vault.Mount, Path: t.Vault.Path})
				if err != nil {
					// Vault unreachable, a login refused, a policy: the
					// targets say so when they run, and the rest would
					// only ask again.
					cancel()
					continue
				}
				if cur.Secret == nil {
					errs[j] = fmt.Errorf("target %s cannot start: %s holds no key yet, and its first rotation needs the bootstrap key: %w", t.Name, t.Vault, asks[j].missing)
				}
			}
		})
	}
	for j := range asks {
		if ctx.Err() != nil {
			break
		}
		next <- j
	}
	close(next)
	wg.Wait()
	return errors.Join(errs...)
}

// targetsOf builds the engine's targets of cfg as the daemon would run
// them, to judge a config before it is applied.
func targetsOf(cfg Config, getenv func(string) string, log *slog.Logger) []rotation.Target {
	targets := make([]rotation.Target, 0, len(cfg.Targets))
	for _, tc := range cfg.Targets {
		targets = append(targets, rotationTarget(tc, getenv, log, true))
	}
	return targets
}

// configRefused is a reloaded config the daemon refuses: the admin
// socket tells the client so (admin.ErrConfigRefused), and `reload`
// exits as every command does for a configuration to fix.
type configRefused struct{ error }

func (e configRefused) Unwrap() error      { return e.error }
func (configRefused) Is(target error) bool { return target == admin.ErrConfigRefused }
