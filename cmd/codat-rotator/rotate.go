package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
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
	level, format := cfg.Log.Level, cfg.Log.Format
	if c.logLevel != "" {
		level = c.logLevel
	}
	if c.logFormat != "" {
		format = c.logFormat
	}
	log, err := newLogger(c.stderr, level, format)
	if err != nil {
		return &usageError{err}
	}
	c.app, err = openApp(cfg, log, c.getenv, c.dryRun)
	if err != nil {
		return err
	}
	targets, err := c.app.selectTargets(c.target)
	if err != nil {
		return &usageError{err}
	}
	opts := rotation.Options{Emergency: c.emergency, Revoke: c.revoke, Manual: true}
	var failed []string
	for _, t := range targets {
		if c.dryRun {
			p, err := c.app.engine.Plan(ctx, t, opts)
			if err != nil {
				fmt.Fprintf(c.stdout, "%s: cannot plan: %v\n", t.Name, err)
				failed = append(failed, t.Name)
				continue
			}
			printPlan(c.stdout, t, p)
			continue
		}
		res, err := c.app.engine.Rotate(ctx, t, opts)
		printResult(c.stdout, t, res, err)
		if err != nil {
			failed = append(failed, t.Name)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("failed: %s", strings.Join(failed, ", "))
	}
	return nil
}

func (c *rotateCommand) Close() error { return c.app.Close() }

func printResult(w io.Writer, t rotation.Target, res rotation.Result, err error) {
	if res.Bootstrapped {
		fmt.Fprintf(w, "%s: bootstrap key published to %s and adopted\n", t.Name, t.Vault)
	}
	if res.NewKey.ID != "" {
		how := "rotated"
		if res.Recovered {
			how = "finished the rotation a crash interrupted"
		}
		fmt.Fprintf(w, "%s: %s: key %s (%s) published to %s\n", t.Name, how, res.NewKey.ID, res.NewKey.Name, t.Vault)
	}
	deleted := map[string]bool{}
	for _, id := range res.Deleted {
		deleted[id] = true
	}
	for _, k := range res.Retiring {
		if !deleted[k.ID] {
			fmt.Fprintf(w, "%s: retiring key %s, to be deleted after %s\n", t.Name, k.ID, k.DeleteAfter.Format(time.RFC3339))
		}
	}
	for _, id := range res.Deleted {
		fmt.Fprintf(w, "%s: deleted key %s\n", t.Name, id)
	}
	if err != nil {
		fmt.Fprintf(w, "%s: failed: %v\n", t.Name, err)
	}
}

func printPlan(w io.Writer, t rotation.Target, p rotation.Plan) {
	fmt.Fprintf(w, "%s: dry run, nothing changed\n", t.Name)
	if p.Journal != nil {
		fmt.Fprintf(w, "  an interrupted rotation (%s, step %s) would be resumed or rolled back first\n", p.Journal.RotationID, p.Journal.Step)
	}
	if p.Bootstrap {
		fmt.Fprintf(w, "  %s holds no secret: the bootstrap key (%s) would be published and adopted\n", t.Vault, p.ServedKeyID)
	} else {
		fmt.Fprintf(w, "  %s serves key %s\n", t.Vault, p.ServedKeyID)
	}
	fmt.Fprintf(w, "  codat holds %d keys (%d foreign); this rotation may hold %d\n", p.CodatKeys, p.Foreign, p.Limit)
	for _, id := range p.Orphans {
		fmt.Fprintf(w, "  would delete orphan key %s (the daemon's name, unknown to its state)\n", id)
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
	if p.Blocked != "" {
		fmt.Fprintf(w, "  blocked: %s\n", p.Blocked)
	}
}
