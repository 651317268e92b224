package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// Set at build time with -ldflags "-X main.version=... -X main.commit=... -X main.date=...".
var (
	version = "dev"
	commit  = ""
	date    = ""
)

type versionCommand struct {
	stdout io.Writer
}

func (c *versionCommand) ParseFlags(args []string) error {
	fs := newFlagSet("version", "[--config FILE]", c.stdout)
	fs.String("config", DefaultConfigPath, "config `file`: not read (version needs none); accepted as every command takes it")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return noArgs(fs)
}

func (c *versionCommand) Run(context.Context) error {
	rev, when := commit, date
	if info, ok := debug.ReadBuildInfo(); ok && rev == "" {
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				when = s.Value
			}
		}
	}
	if rev == "" {
		rev = "unknown"
	}
	if when == "" {
		when = "unknown"
	}
	_, err := fmt.Fprintf(c.stdout, "codat-rotator %s\ncommit: %s\nbuilt: %s\ngo: %s %s/%s\n",
		version, rev, when, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return err
}

func (c *versionCommand) Close() error { return nil }
