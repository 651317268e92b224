package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/codat-rotator/codat-rotator/admin"
	"github.com/codat-rotator/codat-rotator/internal/printable"
)

// rotateCommand is `codat-rotator rotate`: one rotation now, through the
// running daemon or in-process, then the retirements that are due.
// Without --target it rotates the whole fleet, up to --parallel targets
// at once, printing each target's result as it finishes.
type rotateCommand struct {
	opsCommand

	target    string
	emergency bool
	revoke    string
	dryRun    bool
	json      bool
	parallel  int
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
	fs := c.flags("rotate", "[--target NAME] [--emergency] [--revoke KEY_ID] [--dry-run] [--parallel N] [--json]")
	fs.StringVar(&c.target, "target", "", "rotate only this `target` (default: every target)")
	fs.BoolVar(&c.emergency, "emergency", false, "retire every other managed key as soon as the new key is published (grace 0)")
	fs.StringVar(&c.revoke, "revoke", "", "also delete this key `id` once the new key is published, managed or not")
	fs.BoolVar(&c.dryRun, "dry-run", false, "print what would happen and change nothing")
	fs.IntVar(&c.parallel, "parallel", 0, "rotate up to `N` targets at once (default: the config's max_concurrent_rotations; a running daemon's own bound still applies)")
	fs.BoolVar(&c.json, "json", false, "print one JSON report at the end instead of a line per target")
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
	if c.parallel < 0 || c.parallel > MaxConcurrentRotationsLimit {
		return fmt.Errorf("--parallel %d: must be between 1 and %d (0 or unset: the config's max_concurrent_rotations)", c.parallel, MaxConcurrentRotationsLimit)
	}
	return nil
}

func (c *rotateCommand) Run(ctx context.Context) error {
	cfg, err := LoadConfig(c.configPath, c.getenv)
	if err != nil {
		return &usageError{err}
	}
	parallel := c.parallel
	if parallel == 0 {
		parallel = cfg.MaxConcurrentRotations
	}
	// A running daemon holds the state file: ask it. A dry run needs no
	// write access.
	svc, err := c.service(ctx, cfg, !c.dryRun)
	if err != nil {
		return err
	}
	if c.app != nil {
		// In-process, --parallel is the engine's bound for this command.
		c.app.engine.SetMaxConcurrent(parallel)
	}
	// A line per retry, terminal or not: a manual rotation may wait
	// minutes between attempts, and silence looks like a hang. Targets
	// rotating side by side report through it at once: one write each.
	var mu sync.Mutex
	progress := func(p admin.Progress) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(c.stderr, "codat-rotator rotate: %s\n", printable.Clean(p.String()))
	}
	req := admin.RotateRequest{Target: c.target, Emergency: c.emergency, Revoke: c.revoke, DryRun: c.dryRun, Progress: progress}
	if c.target != "" {
		rep, err := svc.Rotate(ctx, req)
		if err != nil {
			return targetErr(err)
		}
		return c.report(rep, nil)
	}
	// The fleet: one request per target, up to parallel at once, each
	// bounded again by the daemon (or this process's engine).
	st, err := svc.Status(ctx)
	if err != nil {
		return err
	}
	names := make([]string, len(st.Targets))
	for i, t := range st.Targets {
		names[i] = t.Name
	}
	f := fleet{svc: svc, req: req, names: names, parallel: parallel, budget: cfg.CodatRequestsPerMinute, count: c.stderr}
	if !c.json {
		f.progress = c.stdout
	}
	rep, took := f.run(ctx)
	return c.report(rep, &took)
}

// report prints the report (as JSON, or the text of a single target;
// a fleet's text went out as each target finished, so only its summary
// is left) and says whether any target failed.
func (c *rotateCommand) report(rep admin.RotateReport, fleetTook *time.Duration) error {
	switch {
	case c.json:
		if err := printJSON(c.stdout, rep); err != nil {
			return err
		}
	case fleetTook == nil:
		rep.WriteText(c.stdout)
	default:
		fmt.Fprintln(c.stdout, summary(rep, c.dryRun, *fleetTook))
	}
	if failed := rep.Failed(); len(failed) > 0 {
		const shown = 10
		if len(failed) > shown {
			failed = append(failed[:shown:shown], fmt.Sprintf("and %d more", len(failed)-shown))
		}
		err := fmt.Errorf("failed: %s", strings.Join(failed, ", "))
		if rep.ConfigError() {
			return &usageError{err}
		}
		return err
	}
	return nil
}

// summary is the fleet's last line: how many rotated, which failed, and
// how long it took.
func summary(rep admin.RotateReport, dryRun bool, took time.Duration) string {
	ok, failed := 0, rep.Failed()
	for _, e := range rep.Results {
		if e.Succeeded {
			ok++
		}
	}
	verb := "rotated"
	if dryRun {
		verb = "planned"
	}
	s := fmt.Sprintf("%s %d of %d targets, %d failed, in %s", verb, ok, len(rep.Results), len(failed), took.Round(time.Millisecond))
	if len(failed) > 0 {
		s += " (see the lines above, or run again with --json)"
	}
	return s
}

// fleet rotates (or plans) every named target, one request each, up to
// parallel at once.
type fleet struct {
	svc      admin.Service
	req      admin.RotateRequest
	names    []string
	parallel int
	// progress receives each target's text as it finishes; nil: none.
	progress io.Writer
	// count receives a line per target finished: how many of how many,
	// and the time left at budget, the Codat requests a minute
	// (codat_requests_per_minute; 0: none); nil: none.
	count  io.Writer
	budget int
}

// requestsPerRotation is how many Codat requests one emergency
// rotation makes, as measured (docs/benchmarks.md#fleet-budget): the
// time a fleet needs at a budget is that many per target.
const requestsPerRotation = 5

// timeLeft is the fleet's time left after done of total in elapsed:
// the pace so far, but never less than the budget allows for the
// requests of the targets left.
func (f fleet) timeLeft(done, total int, elapsed time.Duration) time.Duration {
	left := total - done
	if done == 0 || left == 0 {
		return 0
	}
	d := elapsed / time.Duration(done) * time.Duration(left)
	if f.budget > 0 && !f.req.DryRun {
		if floor := time.Duration(left*requestsPerRotation) * time.Minute / time.Duration(f.budget); floor > d {
			d = floor
		}
	}
	return d
}

// run returns the report, its entries in the order of names, and how
// long the whole fleet took. A target whose request failed (the daemon
// went away, the target was removed since) has the error in its entry;
// a target not started because ctx ended says so.
func (f fleet) run(ctx context.Context) (admin.RotateReport, time.Duration) {
	start := time.Now()
	rep := admin.RotateReport{Results: make([]admin.RotateEntry, len(f.names))}
	done := 0
	next := make(chan int)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range min(max(f.parallel, 1), len(f.names)) {
		wg.Go(func() {
			for i := range next {
				e := f.one(ctx, f.names[i])
				mu.Lock()
				rep.Results[i] = e
				if f.progress != nil {
					var b bytes.Buffer
					admin.RotateReport{Results: []admin.RotateEntry{e}}.WriteText(&b)
					_, _ = f.progress.Write(b.Bytes()) // one write per target: lines never interleave
				}
				done++
				if f.count != nil {
					fmt.Fprintf(f.count, "codat-rotator rotate: %s\n", f.countLine(done, len(f.names), time.Since(start)))
				}
				mu.Unlock()
			}
		})
	}
	i := 0
feed:
	for ; i < len(f.names); i++ {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	for ; i < len(f.names); i++ {
		rep.Results[i] = admin.RotateEntry{Target: f.names[i], Error: "not started: " + context.Cause(ctx).Error()}
	}
	return rep, time.Since(start)
}

// countLine says how far the fleet is: "120/1000 done, about 6m10s
// left at 900 Codat requests a minute".
func (f fleet) countLine(done, total int, elapsed time.Duration) string {
	line := fmt.Sprintf("%d/%d done", done, total)
	if left := f.timeLeft(done, total, elapsed); left > 0 {
		line += fmt.Sprintf(", about %s left", left.Round(time.Second))
		if f.budget > 0 && !f.req.DryRun {
			line += fmt.Sprintf(" at %d Codat requests a minute", f.budget)
		}
	}
	return line
}

// one rotates one target and returns its entry.
func (f fleet) one(ctx context.Context, name string) admin.RotateEntry {
	req := f.req
	req.Target = name
	rep, err := f.svc.Rotate(ctx, req)
	if err == nil && len(rep.Results) == 1 {
		return rep.Results[0]
	}
	if err == nil {
		err = fmt.Errorf("the answer holds %d results, want 1", len(rep.Results))
	}
	return admin.RotateEntry{Target: name, Error: err.Error()}
}
