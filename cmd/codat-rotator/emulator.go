package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/codat-rotator/codat-rotator/codat/emulator"
	"github.com/codat-rotator/codat-rotator/secret"
)

// emulatorKeyEnv names the variable that may hold the emulator's first
// key, as the file of --initial-key-file may: never the arguments, which
// every user sees in ps.
const emulatorKeyEnv = "CODAT_EMULATOR_INITIAL_KEY"

// maxFleet bounds --fleet: each client is a whole emulator in memory.
const maxFleet = 100_000

// emulatorCommand is `codat-rotator emulator`: a local Codat stand-in.
type emulatorCommand struct {
	stdout, stderr io.Writer
	getenv         func(string) string

	listen         string
	allowRemote    bool
	initialKey     string
	initialKeyArg  string
	initialKeyFile string
	faults         string
	latency        time.Duration
	opts           emulator.Options
	fleet          int
	ipLimit        int
	logLevel       string
	logFormat      string

	emu    *emulator.Server
	fl     *emulator.Fleet // with --fleet, in place of emu
	server *http.Server
	ln     net.Listener
	served chan error
}

func newEmulatorCommand(stdout, stderr io.Writer) *emulatorCommand {
	return &emulatorCommand{stdout: stdout, stderr: stderr, getenv: os.Getenv}
}

func (c *emulatorCommand) ParseFlags(args []string) error {
	fs := newFlagSet("emulator", "[flags]", c.stderr)
	fs.String("config", DefaultConfigPath, "config `file`: not read (the emulator is configured by its flags); accepted as every command takes it")
	fs.StringVar(&c.listen, "listen", "127.0.0.1:8484", "loopback `address` to serve on; port 0 picks a free one (logged)")
	fs.BoolVar(&c.allowRemote, "allow-remote", false, "serve on an address other hosts can reach: the emulator makes and lists raw keys for anyone who asks")
	fs.StringVar(&c.initialKeyFile, "initial-key-file", "", "`file` holding the raw value of the client's first key (else $"+emulatorKeyEnv+"); with neither, one is generated and printed as stdout's only line")
	fs.StringVar(&c.initialKeyArg, "initial-key", "", "no longer taken: a key in the arguments shows in ps; use --initial-key-file or $"+emulatorKeyEnv)
	fs.StringVar(&c.faults, "faults", "", "faults at start, as the JSON of POST /_emulator/faults, or @file")
	fs.DurationVar(&c.latency, "latency", 0, "latency added to every list, create and delete")
	fs.IntVar(&c.opts.MaxKeys, "max-keys", emulator.CodatMaxKeys, "the key cap answered with 409")
	fs.BoolVar(&c.opts.ListOmitsRawKeys, "list-omits-raw-keys", false, "leave apiKey out of list results")
	fs.BoolVar(&c.opts.AllowDeleteLast, "allow-delete-last", false, "let the last key be deleted (still recorded as a violation)")
	fs.IntVar(&c.opts.DailyQuota, "daily-quota", 1000, "requests a day reported in X-Rate-Limit-* headers")
	fs.BoolVar(&c.opts.EnforceQuota, "enforce-quota", false, "answer 429 once the daily quota is spent")
	fs.Uint64Var(&c.opts.Seed, "seed", 0, "seed for random faults; 0 picks one")
	fs.IntVar(&c.fleet, "fleet", 0, "serve `N` Codat clients behind the one address, as Codat serves every client and counts one IP across them: client i under /clients/i, each with its own generated first key, printed on stdout one line per client in order; every client's requests counted together at /_emulator/rate")
	fs.IntVar(&c.ipLimit, "ip-limit", 0, "with --fleet, answer 429 to a Codat request beyond `N` in the last minute across every client, as Codat limits an IP; 0: none (also POST /_emulator/ip_limit)")
	fs.StringVar(&c.logLevel, "log-level", "info", "log `level`: debug, info, warn, error")
	fs.StringVar(&c.logFormat, "log-format", "auto", "log `format`: auto, json, text, pretty")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(c.listen)
	if err != nil {
		return fmt.Errorf("--listen %q: want host:port: %v", c.listen, err)
	}
	if !secret.LoopbackHost(host) && !c.allowRemote {
		return fmt.Errorf("--listen %q: not a loopback address; the emulator makes and lists raw keys for anyone who reaches it: serve on 127.0.0.1 (or [::1], localhost), or add --allow-remote on a network you trust", c.listen)
	}
	if c.initialKeyArg != "" {
		return fmt.Errorf("--initial-key: a key in the arguments is visible to every user in ps; put it in a file (--initial-key-file FILE) or in $%s", emulatorKeyEnv)
	}
	switch {
	case c.initialKeyFile != "":
		b, err := os.ReadFile(c.initialKeyFile)
		if err != nil {
			return fmt.Errorf("--initial-key-file: %w", err)
		}
		c.initialKey = strings.TrimRight(string(b), "\r\n")
		if c.initialKey == "" {
			return fmt.Errorf("--initial-key-file %s: empty", c.initialKeyFile)
		}
	default:
		c.initialKey = c.getenv(emulatorKeyEnv)
	}
	if c.faults != "" {
		text := c.faults
		if path, ok := strings.CutPrefix(text, "@"); ok {
			b, err := os.ReadFile(path)
			if err != nil {
				return fmt.Errorf("--faults: %w", err)
			}
			text = string(b)
		}
		f, err := emulator.ParseFaults(text)
		if err != nil {
			return fmt.Errorf("--faults: %w", err)
		}
		c.opts.Faults = f
	}
	if c.latency < 0 {
		return fmt.Errorf("--latency %s: must not be negative", c.latency)
	}
	if c.latency > 0 {
		for _, f := range []*emulator.OpFaults{&c.opts.Faults.List, &c.opts.Faults.Create, &c.opts.Faults.Delete} {
			f.Latency = emulator.Duration(c.latency)
		}
	}
	if c.opts.MaxKeys < 1 {
		return fmt.Errorf("--max-keys %d: must be at least 1", c.opts.MaxKeys)
	}
	if c.opts.DailyQuota < 1 {
		return fmt.Errorf("--daily-quota %d: must be at least 1", c.opts.DailyQuota)
	}
	if c.fleet < 0 || c.fleet > maxFleet {
		return fmt.Errorf("--fleet %d: must be between 1 and %d (0 or unset: one client)", c.fleet, maxFleet)
	}
	if c.fleet > 0 && c.initialKey != "" {
		return fmt.Errorf("--fleet: each client of a fleet generates its own first key, printed on stdout; --initial-key-file and $%s are for one client", emulatorKeyEnv)
	}
	if c.ipLimit < 0 {
		return fmt.Errorf("--ip-limit %d: must not be negative", c.ipLimit)
	}
	if c.ipLimit > 0 && c.fleet == 0 {
		return errors.New("--ip-limit needs --fleet: the IP limit counts the requests of every client of a fleet")
	}
	c.opts.InitialKey = c.initialKey
	return nil
}

func (c *emulatorCommand) Run(ctx context.Context) error {
	log, err := newLogger(c.stderr, c.logLevel, c.logFormat)
	if err != nil {
		return &usageError{err}
	}
	c.opts.Logger = log.With("component", "emulator")
	var handler http.Handler
	var keys []string // the generated first keys, printed
	if c.fleet > 0 {
		if c.fl, err = emulator.NewFleet(c.fleet, c.opts); err != nil {
			return &usageError{err}
		}
		if err := c.fl.SetLimit(emulator.FleetLimit{PerMinute: c.ipLimit}); err != nil {
			return &usageError{err}
		}
		for i := range c.fl.Len() {
			keys = append(keys, c.fl.Client(i).InitialKey())
		}
		handler = c.fl
	} else {
		if c.emu, err = emulator.New(c.opts); err != nil {
			return &usageError{err}
		}
		if c.initialKey == "" {
			keys = []string{c.emu.InitialKey()}
		}
		handler = c.emu
	}
	c.ln, err = net.Listen("tcp", c.listen)
	if err != nil {
		return &usageError{fmt.Errorf("--listen %q: %w", c.listen, err)}
	}
	if len(keys) > 0 {
		// stdout holds the keys alone, a line each, so that scripts can
		// capture them: line i+1 is client i's.
		if _, err := fmt.Fprintln(c.stdout, strings.Join(keys, "\n")); err != nil {
			return fmt.Errorf("print initial key: %w", err)
		}
	}
	c.server = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	c.served = make(chan error, 1)
	go func() { c.served <- c.server.Serve(c.ln) }()
	url := "http://" + c.ln.Addr().String()
	if c.fl != nil {
		log.Info("emulator listening", "addr", c.ln.Addr().String(), "url", url,
			"clients", c.fl.Len(), "client_urls", emulator.BaseURL(url, 0)+" to "+emulator.BaseURL(url, c.fl.Len()-1),
			"ip_limit", c.ipLimit, "max_keys", c.opts.MaxKeys, "initial_key_generated", true)
	} else {
		log.Info("emulator listening", "addr", c.ln.Addr().String(), "url", url,
			"max_keys", c.opts.MaxKeys, "initial_key_generated", c.initialKey == "")
	}

	select {
	case <-ctx.Done():
		log.Info("emulator stopping")
		return nil
	case err := <-c.served:
		return fmt.Errorf("serve: %w", err)
	}
}

func (c *emulatorCommand) Close() error {
	if c.emu != nil {
		c.emu.Close() // release hung requests so shutdown can finish
	}
	if c.fl != nil {
		c.fl.Close()
	}
	if c.server == nil {
		if c.ln != nil {
			return c.ln.Close()
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := c.server.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		// A connection a client opened and never used (Go's transport
		// dials a spare while it waits for an idle one) counts as new,
		// not idle, for 5 s: close what is left rather than fail a stop
		// that served every request.
		err = c.server.Close()
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shut down emulator: %w", err)
	}
	return nil
}
