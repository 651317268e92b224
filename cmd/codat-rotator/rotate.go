package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/codat-rotator/codat-rotator/rotation"
)

// rotateCommand is `codat-rotator rotate`: one rotation now, in-process,
// then the retirements that are due.
type rotateCommand struct {
	stdout, stderr io.Writer
	getenv         func(string) string

	configPath string
	target     string
	emergency  bool
	revoke     string
	dryRun     bool
	logLevel   string
	logFormat  string

	app *app
}

func newRotateCommand(stdout, stderr io.Writer) *rotateCommand {
	return &rotateCommand{stdout: stdout, stderr: stderr, getenv: os.Getenv}
}

func (c *rotateCommand) ParseFlags(args []string) error {
	fs := newFlagSet("rotate", "[--target NAME] [--emergency] [--revoke KEY_ID] [--dry-run]", c.stderr)
	fs.StringVar(&c.configPath, "config", DefaultConfigPath, "config `file`")
	fs.StringVar(&c.target, "target", "", "rotate only this `target` (default: every target)")
	fs.BoolVar(&c.emergency, "emergency", false, "retire every other managed key as soon as the new key is published (grace 0)")
	fs.StringVar(&c.revoke, "revoke", "", "also delete this key `id` once the new key is published, managed or not")
	fs.BoolVar(&c.dryRun, "dry-run", false, "print what would happen and change nothing")
	fs.StringVar(&c.logLevel, "log-level", "", "log `level` (default: the config's)")
	fs.StringVar(&c.logFormat, "log-format", "", "log `format`: auto, json, text, pretty (default: the config's)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if c.revoke != "" && c.target == "" {
		return errors.New("--revoke needs --target: a key id belongs to one Codat client")
	}
	return nil
}

func (c *rotateCommand) Run(ctx context.Context) error {
	cfg, err := LoadConfig(c.configPath, c.getenv)
	if err != nil {
		return &usageError{err}
	}
	req := rotateRequest{Target: c.target, Emergency: c.emergency, Revoke: c.revoke, DryRun: c.dryRun}
	// A running daemon holds the state file: ask it.
	if admin, ok := dialDaemon(ctx, cfg.Listen.AdminSocket); ok {
		var doc rotateDoc
		if err := admin.call(ctx, "POST", "/v1/rotate", req, &doc); err != nil {
			return err
		}
		return printRotate(c.stdout, doc)
	}
	log, err := newLoggerFor(c.stderr, cfg.Log, c.logLevel, c.logFormat)
	if err != nil {
		return &usageError{err}
	}
	c.app, err = openApp(cfg, log, c.getenv, c.dryRun, nil)
	if err != nil {
		return explainLocked(err, cfg.Listen.AdminSocket)
	}
	targets, err := c.app.selectTargets(c.target)
	if err != nil {
		return &usageError{err}
	}
	hooks := newWebhooks(log, cfg.Targets)
	doc := rotateInProcess(ctx, c.app, targets, req, func(t rotation.Target, opts rotation.Options) (rotation.Result, error) {
		res, err := c.app.engine.Rotate(ctx, t, opts)
		if st, lerr := c.app.engine.Store.Load(t.Name); lerr == nil && !c.dryRun {
			hooks.rotated(t, st, res, err)
		}
		return res, err
	})
	hooks.Wait(15 * time.Second)
	return printRotate(c.stdout, doc)
}

// rotateInProcess runs (or plans) the rotation of each target with
// rotate, in the daemon or in the command.
func rotateInProcess(ctx context.Context, a *app, targets []rotation.Target, req rotateRequest,
	rotate func(rotation.Target, rotation.Options) (rotation.Result, error)) rotateDoc {
	opts := rotation.Options{Emergency: req.Emergency, Revoke: req.Revoke, Manual: true}
	doc := rotateDoc{Results: []rotateEntry{}}
	for _, t := range targets {
		e := rotateEntry{Target: t.Name, Vault: t.Vault.String()}
		if req.DryRun {
			p, err := a.engine.Plan(ctx, t, opts)
			if err != nil {
				e.Error = "cannot plan: " + err.Error()
			} else {
				e.Plan, e.Succeeded = &p, true
			}
		} else {
			res, err := rotate(t, opts)
			e.Result = &res
			if err != nil {
				e.Error = err.Error()
			} else {
				e.Succeeded = true
			}
		}
		doc.Results = append(doc.Results, e)
	}
	return doc
}

func (c *rotateCommand) Close() error { return c.app.Close() }

func printResult(w io.Writer, name, vaultPath string, res rotation.Result, err error) {
	if res.Bootstrapped {
		fmt.Fprintf(w, "%s: bootstrap key published to %s and adopted\n", name, vaultPath)
	}
	if res.NewKey.ID != "" {
		how := "rotated"
		if res.Recovered {
			how = "finished the rotation a crash interrupted"
		}
		fmt.Fprintf(w, "%s: %s: key %s (%s) published to %s\n", name, how, res.NewKey.ID, res.NewKey.Name, vaultPath)
	}
	deleted := map[string]bool{}
	for _, id := range res.Deleted {
		deleted[id] = true
	}
	for _, k := range res.Retiring {
		if !deleted[k.ID] {
			fmt.Fprintf(w, "%s: retiring key %s, to be deleted after %s\n", name, k.ID, k.DeleteAfter.Format(time.RFC3339))
		}
	}
	for _, id := range res.Deleted {
		fmt.Fprintf(w, "%s: deleted key %s\n", name, id)
	}
	if err != nil {
		fmt.Fprintf(w, "%s: failed: %v\n", name, err)
	}
}

func printPlan(w io.Writer, vaultPath string, p rotation.Plan) {
	fmt.Fprintf(w, "%s: dry run, nothing changed\n", p.Target)
	if p.Journal != nil {
		fmt.Fprintf(w, "  an interrupted rotation (%s, step %s) would be resumed or rolled back first\n", p.Journal.RotationID, p.Journal.Step)
	}
	if p.Bootstrap {
		fmt.Fprintf(w, "  %s holds no secret: the bootstrap key (%s) would be published and adopted\n", vaultPath, p.ServedKeyID)
	} else {
		fmt.Fprintf(w, "  %s serves key %s\n", vaultPath, p.ServedKeyID)
	}
	fmt.Fprintf(w, "  codat holds %d keys (%d foreign); this rotation may hold %d\n", p.CodatKeys, p.Foreign, p.Limit)
	for _, id := range p.Orphans {
		fmt.Fprintf(w, "  would delete orphan key %s (it has this target's name shape and its state does not know it)\n", id)
	}
	for _, k := range p.MakeRoom {
		fmt.Fprintf(w, "  would delete key %s to make room\n", k.ID)
	}
	fmt.Fprintf(w, "  would create key %s\n", p.NewKeyName)
	for _, k := range p.Retire {
		fmt.Fprintf(w, "  would retire key %s, deleted after %s\n", k.ID, k.DeleteAfter.Format(time.RFC3339))
	}
	if p.Revoke != "" {
		fmt.Fprintf(w, "  would revoke key %s\n", p.Revoke)
	}
	for _, id := range p.RetireNow {
		fmt.Fprintf(w, "  would then delete key %s: its grace is over\n", id)
	}
	if p.Blocked != "" {
		fmt.Fprintf(w, "  blocked: %s\n", p.Blocked)
	}
}
