package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/codat-rotator/codat-rotator/admin"
)

// reloadCommand is `codat-rotator reload`: the running daemon re-reads
// its config file, as on SIGHUP, and this command waits for the answer.
// It is the unit's ExecReload, so reloading needs no kill(1), and
// `systemctl reload` fails, the old config still running, when the new
// file is refused.
type reloadCommand struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	configPath     string
	timeout        time.Duration
}

func newReloadCommand(stdout, stderr io.Writer) *reloadCommand {
	return &reloadCommand{stdout: stdout, stderr: stderr, getenv: os.Getenv}
}

func (c *reloadCommand) ParseFlags(args []string) error {
	fs := newFlagSet("reload", "[--config FILE]", c.stderr)
	fs.StringVar(&c.configPath, "config", DefaultConfigPath, "config `file` (the daemon's: its listen.admin_socket is where the daemon is asked)")
	fs.DurationVar(&c.timeout, "timeout", time.Minute, "how long to wait for the daemon's answer")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return noArgs(fs)
}

func (c *reloadCommand) Run(ctx context.Context) error {
	sock, readErr := adminSocketIn(c.configPath, c.getenv)
	if sock == "" {
		return fmt.Errorf("listen.admin_socket is disabled in %s, and reload asks the daemon over it; send the daemon SIGHUP instead", c.configPath)
	}
	cl, err := admin.Dial(ctx, sock)
	if err != nil {
		if errors.Is(err, admin.ErrRefused) || errors.Is(err, admin.ErrUntrusted) {
			return err
		}
		err = fmt.Errorf("no daemon answers on %s, so nothing was reloaded: %w", sock, err)
		if readErr != nil {
			err = fmt.Errorf("%w (listen.admin_socket could not be read from %s, so the default was tried: %v)", err, c.configPath, readErr)
		}
		return err
	}
	defer cl.Close()
	rctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	rep, err := cl.Reload(rctx)
	if errors.Is(err, admin.ErrConfigRefused) {
		// A configuration to fix, as every command exits for it.
		return &usageError{err}
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "config reloaded: %d target(s): %s\n", len(rep.Targets), strings.Join(rep.Targets, ", "))
	if len(rep.NeedRestart) > 0 {
		fmt.Fprintf(c.stdout, "changed, applied at the next restart: %s\n", strings.Join(rep.NeedRestart, ", "))
	}
	return nil
}

func (c *reloadCommand) Close() error { return nil }

// adminSocketIn reads listen.admin_socket from the config file at path
// without judging the rest of it: reload must reach the daemon even
// when the new file is invalid, so that the daemon, the one place that
// validates a config, refuses it and says why. A file that cannot be
// read as YAML gives the default and the reason.
func adminSocketIn(path string, getenv func(string) string) (string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return DefaultAdminSocket, err
	}
	expanded, vars := raw, map[string]string(nil)
	if e, v, err := expandEnv(raw, getenv); err == nil {
		expanded, vars = e, v
	}
	var cfg struct {
		Listen struct {
			AdminSocket *string `yaml:"admin_socket"`
		} `yaml:"listen"`
	}
	if err := yaml.NewDecoder(bytes.NewReader(expanded)).Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return DefaultAdminSocket, hideExpanded(yamlError(err, expanded, raw), vars)
	}
	if cfg.Listen.AdminSocket == nil {
		return DefaultAdminSocket, nil
	}
	return *cfg.Listen.AdminSocket, nil
}
