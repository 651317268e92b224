package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/codat-rotator/codat-rotator/admin"
)

// rotateCommand is `codat-rotator rotate`: one rotation now, through the
// running daemon or in-process, then the retirements that are due.
type rotateCommand struct {
	opsCommand

	target    string
	emergency bool
	revoke    string
	dryRun    bool
	logLevel  string
	logFormat string
}

func newRotateCommand(stdout, stderr io.Writer) *rotateCommand {
	c := &rotateCommand{opsCommand: opsCommand{stdout: stdout, stderr: stderr, getenv: os.Getenv, notify: true}}
	c.newLogger = func(cfg Config) (*slog.Logger, error) {
		return newLoggerFor(c.stderr, cfg.Log, c.logLevel, c.logFormat)
	}
	return c
}

func (c *rotateCommand) ParseFlags(args []string) error {
	fs := c.flags("rotate", "[--target NAME] [--emergency] [--revoke KEY_ID] [--dry-run]")
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
	// A running daemon holds the state file: ask it. A dry run needs no
	// write access.
	svc, err := c.service(ctx, cfg, !c.dryRun)
	if err != nil {
		return err
	}
	// A line per retry, terminal or not: a manual rotation may wait
	// minutes between attempts, and silence looks like a hang.
	progress := func(p admin.Progress) { fmt.Fprintf(c.stderr, "codat-rotator rotate: %s\n", p) }
	rep, err := svc.Rotate(ctx, admin.RotateRequest{Target: c.target, Emergency: c.emergency, Revoke: c.revoke, DryRun: c.dryRun, Progress: progress})
	if err != nil {
		return targetErr(err)
	}
	rep.WriteText(c.stdout)
	if failed := rep.Failed(); len(failed) > 0 {
		err := fmt.Errorf("failed: %s", strings.Join(failed, ", "))
		if rep.ConfigError() {
			return &usageError{err}
		}
		return err
	}
	return nil
}
