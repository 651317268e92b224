package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/lmittmann/tint"
)

// logFormats are the values of --log-format and log.format.
var logFormats = []string{"auto", "json", "text", "pretty"}

// newLogger is the one place that builds the log handler: tint (pretty)
// when w is a terminal, JSON otherwise (journald, Kubernetes), unless the
// format says which.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	switch strings.ToLower(format) {
	case "auto", "":
		if isTerminal(w) {
			return slog.New(tint.NewTextHandler(w, &tint.Options{Level: lvl, TimeFormat: time.TimeOnly})), nil
		}
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lvl})), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lvl})), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lvl})), nil
	case "pretty":
		return slog.New(tint.NewTextHandler(w, &tint.Options{Level: lvl, TimeFormat: time.TimeOnly, NoColor: !isTerminal(w)})), nil
	}
	return nil, fmt.Errorf("log format %q: want one of %s", format, strings.Join(logFormats, ", "))
}

// isTerminal reports whether w is a character device such as a tty.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// newLoggerFor builds the logger from the config's log settings, with
// the --log-level and --log-format flags taking precedence when set.
func newLoggerFor(w io.Writer, cfg LogConfig, level, format string) (*slog.Logger, error) {
	if level == "" {
		level = cfg.Level
	}
	if format == "" {
		format = cfg.Format
	}
	return newLogger(w, level, format)
}
