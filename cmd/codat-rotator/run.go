package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/codat-rotator/codat-rotator/admin"
	"github.com/codat-rotator/codat-rotator/internal/serve"
	"github.com/codat-rotator/codat-rotator/metrics"
	"github.com/codat-rotator/codat-rotator/notify"
	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/store"
)

// runCommand is `codat-rotator run`: the daemon.
type runCommand struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	reload         <-chan os.Signal // SIGHUP, from main; nil: no reloads

	configPath      string
	logLevel        string
	logFormat       string
	shutdownTimeout time.Duration

	cfg     Config
	log     *slog.Logger
	app     *app
	m       *metrics.Metrics
	sched   *rotation.Scheduler
	servers []*http.Server
	systemd notify.Systemd
	hooks   *notify.Webhooks
	wg      sync.WaitGroup

	// reloads carries the admin socket's reload requests to Run's loop,
	// which applies them one at a time, SIGHUPs included; looping is
	// closed when that loop ends.
	reloads chan reloadRequest
	looping chan struct{}
}

// reloadRequest is a reload asked over the admin socket, with where its
// answer goes.
type reloadRequest struct {
	reply chan reloadReply // buffered: the loop never blocks on it
}

type reloadReply struct {
	rep admin.ReloadReport
	err error
}

func newRunCommand(stdout, stderr io.Writer) *runCommand {
	return &runCommand{stdout: stdout, stderr: stderr, getenv: os.Getenv,
		reloads: make(chan reloadRequest), looping: make(chan struct{})}
}

func (c *runCommand) ParseFlags(args []string) error {
	fs := newFlagSet("run", "[--config FILE]", c.stderr)
	fs.StringVar(&c.configPath, "config", DefaultConfigPath, "config `file`")
	fs.StringVar(&c.logLevel, "log-level", "", "log `level` (default: the config's)")
	fs.StringVar(&c.logFormat, "log-format", "", "log `format`: auto, json, text, pretty (default: the config's)")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 30*time.Second, "on SIGTERM, how long a running rotation may take to finish before it is cancelled (its journal is kept)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return noArgs(fs)
}

func (c *runCommand) loadConfig() (Config, *slog.Logger, error) {
	cfg, err := LoadConfig(c.configPath, c.getenv)
	if err != nil {
		return cfg, nil, err
	}
	log, err := newLoggerFor(c.stderr, cfg.Log, c.logLevel, c.logFormat)
	return cfg, log, err
}

func (c *runCommand) Run(ctx context.Context) error {
	cfg, log, err := c.loadConfig()
	if err != nil {
		return &usageError{err}
	}
	c.cfg, c.log = cfg, log
	slog.SetDefault(log)
	c.systemd = notify.Systemd{Log: log}
	c.m = metrics.New()
	c.app, err = openApp(cfg, log, c.getenv, false, c.m)
	if err != nil {
		if errors.Is(err, store.ErrLocked) {
			if other, derr := admin.Dial(ctx, cfg.Listen.AdminSocket); derr == nil || errors.Is(derr, admin.ErrRefused) {
				if other != nil {
					other.Close()
				}
				return fmt.Errorf("another codat-rotator daemon runs with this state file and answers on %s: %w", cfg.Listen.AdminSocket, err)
			}
		}
		return explainLocked(err, cfg.Listen.AdminSocket)
	}
	if err := c.app.cannotStart(c.app.allTargets()); err != nil {
		return &usageError{err}
	}
	// No Vault login here: KeepAlive's first one (below) is enough, and a
	// Vault that does not answer must not keep /healthz and /readyz
	// closed while it waits. Every call logs in by itself when needed.
	c.hooks = notify.New(log, "codat-rotator/"+version, webhooks(cfg.Targets))
	c.sched = &rotation.Scheduler{
		Engine: c.app.engine, Logger: log,
		OnRetire: func(name string, deleted []string, err error) {
			c.m.ObserveRetire(name, deleted, err)
			if t, ok := c.sched.Target(name); ok && errors.Is(err, rotation.ErrRetireExhausted) {
				c.hooks.RetireGaveUp(t, err)
			}
		},
		OnRotation: func(name string, _ rotation.Options, res rotation.Result, err error, took time.Duration) {
			c.m.ObserveRotation(name, res, err, took)
			c.notifyHooks(name, res, err)
		},
	}
	c.m.WatchState(c.app.engine.Store.Load, c.app.allTargets, c.sched.Next)
	c.m.WatchScheduler(c.sched.Wakeups)
	c.m.WatchConcurrency(c.app.engine.Concurrency)
	c.m.WatchBudget(c.app.budget.State)
	c.m.Track(targetNames(cfg.Targets))

	var adminL net.Listener
	if cfg.Listen.AdminSocket != "" {
		if adminL, err = admin.Listen(cfg.Listen.AdminSocket); err != nil {
			if pe := (*fs.PathError)(nil); errors.As(err, &pe) && pe.Op == "mkdir" {
				return pathError("listen.admin_socket", "admin socket", DefaultAdminSocket, "RuntimeDirectory", pe)
			}
			return err
		}
	}
	var metricsL net.Listener
	if cfg.Listen.Metrics != "" {
		if metricsL, err = net.Listen("tcp", cfg.Listen.Metrics); err != nil {
			if adminL != nil {
				adminL.Close()
			}
			return fmt.Errorf("listen.metrics: %w", err)
		}
	}
	if err := c.sched.Start(schedules(cfg, c.app.allTargets())); err != nil {
		return err
	}
	serveErr := make(chan error, 2)
	if adminL != nil {
		c.serve(adminL, admin.NewServer(adminHandler(c.app, c.sched, c.requestReload), log), serveErr)
		log.Info("admin socket listening", "path", cfg.Listen.AdminSocket)
	}
	if metricsL != nil {
		c.serve(metricsLimits.Listener(metricsL), metricsLimits.Server(c.observability(),
			slog.NewLogLogger(log.Handler(), slog.LevelWarn)), serveErr)
		log.Info("metrics listening", "addr", metricsL.Addr().String())
	}
	names := c.sched.Names()
	log.Info("codat-rotator running", "version", version, "targets", strings.Join(names, ","), "state", cfg.StatePath)
	c.systemd.Ready(fmt.Sprintf("rotating %d target(s)", len(names)))

	wdCtx, stopWatchdog := context.WithCancel(context.Background())
	defer stopWatchdog()
	go c.systemd.Watchdog(wdCtx, c.sched.Check)
	// Renew the Vault token while it can be, log in again when not.
	go c.app.vault.KeepAlive(wdCtx, log.With("component", "vault"))
	// The secrets name the previous run's plan: name this one's.
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.republishPlans(wdCtx)
	}()

	defer close(c.looping)
	for {
		select {
		case <-ctx.Done():
			log.Info("signal received; shutting down")
			return nil
		case err := <-serveErr:
			return err
		case <-c.reload:
			_, _ = c.reloadConfig()
		case req := <-c.reloads:
			rep, err := c.reloadConfig()
			req.reply <- reloadReply{rep, err}
		}
	}
}

// requestReload is the admin socket's reload (`codat-rotator reload`,
// the unit's ExecReload): Run's loop applies it as it applies a SIGHUP,
// and the answer says whether the new config runs.
func (c *runCommand) requestReload(ctx context.Context) (admin.ReloadReport, error) {
	req := reloadRequest{reply: make(chan reloadReply, 1)}
	select {
	case c.reloads <- req:
	case <-c.looping:
		return admin.ReloadReport{}, errors.New("the daemon is shutting down")
	case <-ctx.Done():
		return admin.ReloadReport{}, ctx.Err()
	}
	select {
	case r := <-req.reply:
		return r.rep, r.err
	case <-ctx.Done():
		return admin.ReloadReport{}, ctx.Err()
	}
}

// notifyHooks sends the target's webhooks what a rotation calls for.
func (c *runCommand) notifyHooks(name string, res rotation.Result, err error) {
	t, ok := c.sched.Target(name)
	if !ok {
		return
	}
	st, lerr := c.app.engine.Store.Load(name)
	if lerr != nil {
		c.log.Error("load state for webhooks", "target", name, "error", lerr)
		return
	}
	c.hooks.Rotated(t, st, res, err)
}

// serve runs srv on l until Close.
func (c *runCommand) serve(l net.Listener, srv *http.Server, errc chan<- error) {
	c.servers = append(c.servers, srv)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("serve %s: %w", l.Addr(), err)
		}
	}()
}

// metricsLimits bound the metrics and health listener, which may face a
// whole cluster's pods (listen.metrics is 0.0.0.0:9464 on Kubernetes): a
// client gets 5 s to send its request, an answer 30 s to be read (a
// /readyz that asks Vault takes up to 5 s), a kept-alive connection 60 s
// of silence, and 32 connections are open at most: Prometheus and the
// kubelet's probes need a handful.
var metricsLimits = serve.Limits{
	ReadHeaderTimeout: 5 * time.Second,
	ReadTimeout:       10 * time.Second,
	WriteTimeout:      30 * time.Second,
	IdleTimeout:       60 * time.Second,
	MaxConns:          32,
}

// observability serves /metrics, /healthz and /readyz.
func (c *runCommand) observability() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", c.m.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		// Asked, not read from a heartbeat: nothing wakes to keep a
		// timestamp fresh, and a wedged scheduler answers 503 within
		// the timeout instead of hanging the probe.
		ctx, cancel := context.WithTimeout(r.Context(), notify.CheckTimeout)
		defer cancel()
		if err := c.sched.Check(ctx); err != nil {
			http.Error(w, "unhealthy: "+err.Error()+"\n", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	ready := &readiness{app: c.app, ttl: 10 * time.Second}
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), readyAnswer)
		defer cancel()
		if err := ready.check(ctx); err != nil {
			http.Error(w, "not ready: "+err.Error()+"\n", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

// reloadConfig applies a changed config (SIGHUP, or `codat-rotator
// reload` over the admin socket), or logs why it cannot and keeps the
// old one; the error says so too. systemd hears RELOADING=1 before and
// READY=1 after, either way.
func (c *runCommand) reloadConfig() (admin.ReloadReport, error) {
	c.systemd.Reloading()
	outcome := "config reload failed; running with the previous config"
	defer func() { c.systemd.Ready(outcome) }()
	failed := func(err error) (admin.ReloadReport, error) {
		c.log.Error("config reload failed; keeping the running config", "error", err)
		return admin.ReloadReport{}, configRefused{fmt.Errorf("config reload failed; keeping the running config: %w", err)}
	}
	cfg, _, err := c.loadConfig()
	if err != nil {
		return failed(err)
	}
	for _, w := range insecureHTTPWarnings(cfg, c.getenv) {
		c.log.Warn(w)
	}
	// A target that cannot make its first rotation is refused here, not
	// left to fail in the background after "config reloaded".
	if err := c.app.cannotStart(targetsOf(cfg, c.getenv, c.log)); err != nil {
		return failed(err)
	}
	apply, restart := changedFields(c.cfg, cfg)
	if len(restart) > 0 {
		c.log.Warn("config reload: these settings need a restart and keep their running values", "fields", strings.Join(restart, ","))
	}
	for _, name := range apply {
		if err := onReload[name].apply(c, cfg); err != nil {
			return failed(err)
		}
	}
	outcome = "config reloaded"
	c.log.Info("config reloaded", "targets", len(cfg.Targets))
	return admin.ReloadReport{Targets: c.sched.Names(), NeedRestart: restart}, nil
}

// Close stops scheduling, lets a running rotation finish (or cancels it
// after the shutdown timeout, leaving its journal), closes the listeners
// and the state file.
func (c *runCommand) Close() error {
	if c.sched == nil && c.app == nil {
		return nil
	}
	c.systemd.Stopping()
	for _, srv := range c.servers {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = srv.Shutdown(sctx)
		cancel()
	}
	c.wg.Wait()
	if c.sched != nil {
		ctx, cancel := context.WithTimeout(context.Background(), c.shutdownTimeout)
		c.sched.Stop(ctx)
		cancel()
	}
	if c.hooks != nil {
		c.hooks.Wait(10 * time.Second)
	}
	if c.cfg.Listen.AdminSocket != "" {
		_ = os.Remove(c.cfg.Listen.AdminSocket)
	}
	err := c.app.Close()
	if c.log != nil {
		c.log.Info("stopped")
	}
	return err
}

// targetNames lists the configured targets' names.
func targetNames(tcs []TargetConfig) []string {
	names := make([]string, len(tcs))
	for i, tc := range tcs {
		names[i] = tc.Name
	}
	return names
}
