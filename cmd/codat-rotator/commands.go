package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/codat-rotator/codat-rotator/admin"
	"github.com/codat-rotator/codat-rotator/codat"
	"github.com/codat-rotator/codat-rotator/notify"
	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/rotation/adapt"
	"github.com/codat-rotator/codat-rotator/store"
	"github.com/codat-rotator/codat-rotator/vault"
)

// checkTargets runs each target's checks, up to parallel targets at
// once (a fleet's checks wait on Vault and Codat, not on the CPU), and
// returns them in the order of targets. Each target has its own
// deadline: a fleet's checks wait their turn in the Codat budget.
// policy, when not nil, adds a check of the target's Vault policy
// after the others pass.
func checkTargets(ctx context.Context, eng *rotation.Engine, targets []rotation.Target, parallel int, policy func(context.Context, rotation.Target) rotation.Check) [][]rotation.Check {
	out := make([][]rotation.Check, len(targets))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(max(parallel, 1), len(targets)) {
		wg.Go(func() {
			for i := range next {
				tctx, cancel := context.WithTimeout(ctx, 15*time.Second)
				out[i] = eng.CheckTarget(tctx, targets[i])
				if policy != nil && !slices.ContainsFunc(out[i], func(c rotation.Check) bool { return c.What == "vault" && c.Err != nil }) {
					out[i] = append(out[i], policy(tctx, targets[i]))
				}
				cancel()
			}
		})
	}
	for i := range targets {
		next <- i
	}
	close(next)
	wg.Wait()
	return out
}

// The operator commands that work through a running daemon's admin
// socket, or in-process when no daemon runs: rotate, status, keys,
// resume. And check, which never needs the daemon.

// opsCommand holds what rotate, status, keys, resume and check share.
type opsCommand struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	configPath     string

	// newLogger builds the in-process log (nil: discard).
	newLogger func(Config) (*slog.Logger, error)
	// notify: rotations in-process send the targets' webhooks.
	notify bool

	app    *app             // in-process
	hooks  *notify.Webhooks // in-process, with notify
	daemon *admin.Client    // through the daemon
}

func (c *opsCommand) flags(name, synopsis string) *flag.FlagSet {
	fs := newFlagSet(name, synopsis, c.stderr)
	fs.StringVar(&c.configPath, "config", DefaultConfigPath, "config `file`")
	return fs
}

// service chooses, once, where the command's work happens: the daemon
// that answers on the admin socket, else this process over the state
// file (read-only unless write), explaining a lock held by a daemon that
// did not answer.
func (c *opsCommand) service(ctx context.Context, cfg Config, write bool) (admin.Service, error) {
	cl, err := admin.Dial(ctx, cfg.Listen.AdminSocket)
	switch {
	case err == nil:
		c.daemon = cl
		return cl, nil
	case errors.Is(err, admin.ErrRefused):
		// A daemon runs and holds the state file: working in-process
		// would only meet its lock. Its refusal says what to do.
		return nil, err
	case errors.Is(err, admin.ErrUntrusted):
		// Whatever answers there is not to be believed, nor is the
		// state file beside it to be worked on as if no daemon ran.
		return nil, err
	}
	log := slog.New(slog.DiscardHandler)
	if c.newLogger != nil {
		if log, err = c.newLogger(cfg); err != nil {
			return nil, &usageError{err}
		}
	}
	c.app, err = openApp(cfg, log, c.getenv, !write, nil)
	if err != nil {
		return nil, explainLocked(err, cfg.Listen.AdminSocket)
	}
	// No daemon, no planned run: status shows none (Next nil).
	l := &admin.Local{Engine: c.app.engine, Targets: c.app.allTargets, Logger: log}
	if c.notify {
		c.hooks = notify.New(log, "codat-rotator/"+version, webhooks(cfg.Targets))
		l.RotateTarget = c.rotateAndNotify
	}
	return l, nil
}

// rotateAndNotify rotates in-process and sends the webhooks.
func (c *opsCommand) rotateAndNotify(ctx context.Context, t rotation.Target, opts rotation.Options) (rotation.Result, error) {
	res, err := c.app.engine.Rotate(ctx, t, opts)
	if st, lerr := c.app.engine.Store.Load(t.Name); lerr == nil {
		c.hooks.Rotated(t, st, res, err)
	}
	return res, err
}

// adminHandler serves the admin socket of the running daemon, whose
// rotations go through its scheduler and whose reloads through reload.
func adminHandler(a *app, sched *rotation.Scheduler, reload admin.Reload) http.Handler {
	return admin.NewHandler(&admin.Local{
		Engine: a.engine, Targets: a.allTargets, Next: sched.Next, Logger: a.log,
		RotateTarget: func(_ context.Context, t rotation.Target, opts rotation.Options) (rotation.Result, error) {
			return sched.RotateNow(t.Name, opts)
		},
		TakeoverTarget: func(_ context.Context, t rotation.Target) (rotation.Takeover, error) {
			return sched.TakeoverNow(t.Name)
		},
		Resumed: sched.Wake,
	}, reload, version)
}

// explainLocked turns "state file locked" into what the operator needs:
// a daemon holds it, and its admin socket did not answer.
func explainLocked(err error, socket string) error {
	if !errors.Is(err, store.ErrLocked) {
		return err
	}
	if socket == "" {
		return fmt.Errorf("%w; the admin socket is disabled (listen.admin_socket), so this command cannot go through a daemon: wait for that process to end, or stop it", err)
	}
	return fmt.Errorf("%w; no daemon answers on the admin socket %s: if that process is the daemon, is its listen.admin_socket the same as this config's? Otherwise wait for it to end", err, socket)
}

// targetErr makes an unknown target asked of this process a usage
// error; the daemon's answer is its own.
func targetErr(err error) error {
	if errors.Is(err, admin.ErrNoSuchTarget) {
		return &usageError{err}
	}
	return err
}

func (c *opsCommand) Close() error {
	if c.hooks != nil {
		c.hooks.Wait(15 * time.Second)
	}
	if c.daemon != nil {
		c.daemon.Close()
	}
	return c.app.Close()
}

// printJSON prints v indented, as --json does.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

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
	svc, err := c.service(ctx, cfg, false)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no state file at %s yet: nothing has been rotated", cfg.StatePath)
	} else if err != nil {
		return err
	}
	rep, err := svc.Status(ctx)
	if err != nil {
		return err
	}
	if c.json {
		return printJSON(c.stdout, rep)
	}
	rep.WriteText(c.stdout)
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
	svc, err := c.service(ctx, cfg, false)
	if err != nil {
		return err
	}
	rep, err := svc.Keys(ctx, c.target)
	if err != nil {
		return targetErr(err)
	}
	if c.json {
		return printJSON(c.stdout, rep)
	}
	rep.WriteText(c.stdout)
	if failed := rep.Failed(); len(failed) > 0 {
		return fmt.Errorf("could not list keys of: %s", strings.Join(failed, ", "))
	}
	return nil
}

// resumeCommand is `codat-rotator resume --target T`.
type resumeCommand struct {
	opsCommand
	target string
}

func (c *resumeCommand) ParseFlags(args []string) error {
	fs := c.flags("resume", "--target NAME")
	fs.StringVar(&c.target, "target", "", "the halted `target` to resume (required)")
	return parseOneTarget(fs, args, &c.target)
}

// parseOneTarget parses the flags of a command that acts on the one
// target --target names.
func parseOneTarget(fs *flag.FlagSet, args []string, target *string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *target == "" {
		fs.Usage()
		return errors.New("--target is required")
	}
	return noArgs(fs)
}

// writer is the service of a command that changes a target's state.
func (c *opsCommand) writer(ctx context.Context) (admin.Service, error) {
	cfg, err := LoadConfig(c.configPath, c.getenv)
	if err != nil {
		return nil, &usageError{err}
	}
	return c.service(ctx, cfg, true)
}

func (c *resumeCommand) Run(ctx context.Context) error {
	svc, err := c.writer(ctx)
	if err != nil {
		return err
	}
	rep, err := svc.Resume(ctx, c.target)
	if err != nil {
		return targetErr(err)
	}
	if rep.WasHalted != nil && !*rep.WasHalted {
		fmt.Fprintf(c.stdout, "%s: not halted; nothing to resume (its scheduled rotations run)\n", c.target)
		return nil
	}
	fmt.Fprintf(c.stdout, "%s: resumed; scheduled rotations run again, and keys overdue for retirement go now\n", c.target)
	for _, id := range rep.Retired {
		fmt.Fprintf(c.stdout, "%s: deleted key %s (overdue for retirement)\n", c.target, id)
	}
	if rep.RetireError != "" {
		return fmt.Errorf("resumed, but retiring the overdue keys failed: %s", rep.RetireError)
	}
	return nil
}

// takeoverCommand is `codat-rotator takeover --target T`: this state
// file becomes the owner of T's secret, and its state is rebuilt from
// Vault's history and Codat's keys (docs/design.md#ownership).
type takeoverCommand struct {
	opsCommand
	target string
	json   bool
}

func (c *takeoverCommand) ParseFlags(args []string) error {
	fs := c.flags("takeover", "--target NAME [--json]")
	fs.StringVar(&c.target, "target", "", "the `target` to take over (required); stop the daemon that owned it first")
	fs.BoolVar(&c.json, "json", false, "print the report as JSON")
	return parseOneTarget(fs, args, &c.target)
}

func (c *takeoverCommand) Run(ctx context.Context) error {
	svc, err := c.writer(ctx)
	if err != nil {
		return err
	}
	rep, err := svc.Takeover(ctx, c.target)
	if err != nil {
		return targetErr(err)
	}
	if c.json {
		return printJSON(c.stdout, rep)
	}
	rep.WriteText(c.stdout)
	return nil
}

// policyCheck is the check of t's Vault policy: every capability a
// rotation needs, the metadata's patch included, which a rotation would
// miss only as an owner never recorded.
func (c *checkCommand) policyCheck(ctx context.Context, t rotation.Target) rotation.Check {
	loc := vault.Location{Mount: t.Vault.Mount, Path: t.Vault.Path}
	err := c.app.vault.CheckPolicy(ctx, loc)
	var pe *vault.PolicyError
	switch {
	case err == nil:
		return rotation.Check{What: "vault policy", Detail: fmt.Sprintf("create, read, update on %s/data/%s; read, patch on %s/metadata/%s", loc.Mount, loc.Path, loc.Mount, loc.Path)}
	case errors.As(err, &pe):
		return rotation.Check{What: "vault policy", Err: err}
	case errors.Is(err, vault.ErrPermissionDenied):
		// A token without Vault's default policy may not ask: say
		// so, and let the rotation be the judge.
		return rotation.Check{What: "vault policy", Detail: "not checked: the token may not ask sys/capabilities-self (Vault's default policy allows it)"}
	}
	return rotation.Check{What: "vault policy", Err: err}
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
	warn := func(msg string) { fmt.Fprintf(c.stdout, "WARN %s\n", msg) }
	for _, w := range insecureHTTPWarnings(cfg, c.getenv) {
		warn(w)
	}

	vc, err := vaultConfig(cfg.Vault, c.getenv)
	vc.OnWarning = warn
	if err == nil {
		// The budget too: check's requests count like the daemon's.
		c.app = &app{cfg: cfg, log: slog.New(slog.DiscardHandler), getenv: c.getenv,
			budget: codat.NewBudget(cfg.CodatRequestsPerMinute, codat.BudgetOptions{})}
		c.app.vault, err = newVault(vc)
	}
	if err != nil {
		line(false, "vault", err.Error())
		var u *usageError
		if errors.As(err, &u) {
			return usage("the vault settings are not valid")
		}
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

	eng := &rotation.Engine{Vault: adapt.Vault(c.app.vault), Codat: c.app.codat}
	switch db, err := store.Open(cfg.StatePath, store.Options{ReadOnly: true}); {
	case err == nil:
		// The state file, read-only, tells the served key by its
		// fingerprints (and the owner): kept open for the checks.
		defer db.Close()
		eng.Owner, err = owner(db)
		eng.Store, eng.Salt = db, db.Salt()
		if err != nil {
			line(false, "state file", err.Error())
			break
		}
		line(true, "state file", cfg.StatePath)
	case errors.Is(err, os.ErrNotExist):
		line(true, "state file", cfg.StatePath+" (not created yet)")
	case errors.Is(err, store.ErrLocked):
		line(true, "state file", cfg.StatePath+" (held by the running daemon)")
	default:
		line(false, "state file", err.Error())
	}

	listed := map[string]store.Target{}
	targets := c.app.allTargets()
	results := checkTargets(ctx, eng, targets, cfg.MaxConcurrentRotations, c.policyCheck)
	configErr := false // a failure only a change of the settings fixes
	for i, t := range targets {
		for _, ch := range results[i] {
			if errors.Is(ch.Err, rotation.ErrNoBootstrap) {
				configErr = true
			}
			if ch.Err != nil {
				line(false, "target "+t.Name+": "+ch.What, ch.Err.Error())
			} else {
				line(true, "target "+t.Name+": "+ch.What, ch.Detail)
			}
			for _, id := range ch.Keys {
				st := listed[t.Name]
				st.Keys = append(st.Keys, store.Key{ID: id})
				listed[t.Name] = st
			}
		}
	}
	shared := rotation.SharedClients(listed)
	for _, t := range c.app.allTargets() {
		if others := shared[t.Name]; len(others) > 0 {
			warn(fmt.Sprintf("target %s: %s", t.Name, admin.SharedClientText(others, t.MaxKeys, t.ReserveSlots)))
		}
	}
	if failed > 0 && configErr {
		// As rotate and run exit for it: the same mistake, the same code.
		return usage("%d check(s) failed; the configuration or its environment must change first", failed)
	}
	if failed > 0 {
		return fmt.Errorf("%d check(s) failed", failed)
	}
	return nil
}
