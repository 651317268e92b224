// Command codat-rotator rotates Codat API keys on a schedule and
// publishes them to HashiCorp Vault. This file handles signals and exit
// codes only; each subcommand is a type with ParseFlags, Run and Close.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	_ "time/tzdata" // CRON_TZ= works in images without a zoneinfo database

	"github.com/codat-rotator/codat-rotator/internal/printable"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		<-signals
		cancel() // first signal: the graceful path
		<-signals
		fmt.Fprintln(os.Stderr, "codat-rotator: second signal, exiting now")
		os.Exit(exitError)
	}()
	os.Exit(Main(ctx, os.Args[1:], os.Stdout, os.Stderr, hup))
}

// command is one subcommand.
type command interface {
	// ParseFlags reads the command's flags and arguments.
	ParseFlags(args []string) error
	// Run does the command's work; a long-running command returns when
	// ctx is done.
	Run(ctx context.Context) error
	// Close releases what Run holds.
	Close() error
}

// commands lists the subcommands with a line of help each. A command
// that may hold a key (a Codat key, the Vault token) makes the process
// non-dumpable before it reads anything; the emulator's keys are fake
// and version holds none.
var commands = []struct {
	name, help string
	holdsKeys  bool
	make       func(stdout, stderr io.Writer) command
}{
	{"run", "the daemon: rotate every target on its schedule", true, func(o, e io.Writer) command { return newRunCommand(o, e) }},
	{"rotate", "rotate now (through the running daemon, or in-process), then retire the keys that are due", true, func(o, e io.Writer) command { return newRotateCommand(o, e) }},
	{"status", "per target: current key, retiring keys, next rotation, last result, keys used, halted", true, func(o, e io.Writer) command { return &statusCommand{opsCommand: newOps(o, e)} }},
	{"keys", "the keys at Codat, marked managed, adopted or foreign (never raw values)", true, func(o, e io.Writer) command { return &keysCommand{opsCommand: newOps(o, e)} }},
	{"resume", "clear a halted target", true, func(o, e io.Writer) command { return &resumeCommand{opsCommand: newOps(o, e)} }},
	{"reload", "make the running daemon re-read its config; fails, the old config still running, when the new one is refused", true, func(o, e io.Writer) command { return newReloadCommand(o, e) }},
	{"takeover", "make this state file the owner of a target another daemon ran, and rebuild its state", true, func(o, e io.Writer) command { return &takeoverCommand{opsCommand: newOps(o, e)} }},
	{"check", "validate the config and reach Codat and Vault with the configured credentials", true, func(o, e io.Writer) command { return &checkCommand{opsCommand: newOps(o, e)} }},
	{"emulator", "run a local Codat API emulator for demos and tests", false, func(o, e io.Writer) command { return newEmulatorCommand(o, e) }},
	{"version", "print version and build information", false, func(o, e io.Writer) command { return &versionCommand{stdout: o} }},
}

// Main runs the program with args (without the program name) and returns
// the exit code. Tests call it as users call the binary. reload delivers
// the signals that make the daemon reload its config.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer, reload <-chan os.Signal) int {
	if len(args) == 0 {
		printUsage(stderr)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "help", "-h", "-help", "--help":
		printUsage(stdout)
		return exitOK
	}
	for _, c := range commands {
		if c.name != name {
			continue
		}
		if c.holdsKeys {
			// Before the config, the environment or the state file is
			// read. Not fatal: a sandbox may forbid prctl, and the
			// unit's LimitCORE=0 still stops core dumps.
			if err := setNonDumpable(); err != nil {
				fmt.Fprintf(stderr, "codat-rotator %s: warning: cannot make the process non-dumpable (a core dump or a debugger of the same user could read keys): %v\n", name, err)
			}
		}
		cmd := c.make(stdout, stderr)
		if run, ok := cmd.(*runCommand); ok {
			run.reload = reload
		}
		if err := cmd.ParseFlags(args[1:]); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return exitOK
			}
			fmt.Fprintf(stderr, "codat-rotator %s: %s\n", name, printable.Clean(err.Error()))
			return exitUsage
		}
		err := cmd.Run(ctx)
		if cerr := cmd.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			fmt.Fprintf(stderr, "codat-rotator %s: %s\n", name, printable.Clean(err.Error()))
			var u *usageError
			if errors.As(err, &u) {
				return exitUsage
			}
			return exitError
		}
		return exitOK
	}
	fmt.Fprintf(stderr, "codat-rotator: unknown command %q\n\n", name)
	printUsage(stderr)
	return exitUsage
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: codat-rotator <command> [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.help)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'codat-rotator <command> -h' for a command's flags.")
}

func newOps(stdout, stderr io.Writer) opsCommand {
	return opsCommand{stdout: stdout, stderr: stderr, getenv: os.Getenv}
}

// usageError is the one kind of error that exits with the usage code
// (2), decided in Main alone: input the operator must fix before
// anything can work, found after flag parsing. Every configuration
// error is one, in the file or in the environment (VAULT_*, ${NAME},
// the bootstrap key's variable), wherever it is found; so are an unknown
// --target and an address that cannot be listened on. systemd does not
// restart after it (RestartPreventExitStatus=2).
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// newFlagSet returns a flag set that reports errors instead of exiting
// and prints a usage text listing every flag with its default.
func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: codat-rotator %s %s\n\nflags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// noArgs rejects positional arguments a command does not take.
func noArgs(fs *flag.FlagSet) error {
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return nil
}
