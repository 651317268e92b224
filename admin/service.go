// Package admin is the operator's API of a running daemon: rotate,
// status, keys and resume. Service is that API; Local implements it in
// this process over the engine and the state file, Client implements it
// over a daemon's admin socket, and Handler serves any Service on that
// socket. A command picks one implementation once and never asks again
// where the work happens.
//
// Everything on the wire is a type of this package with explicit
// snake_case JSON tags; engine and state structs are converted, never
// sent as they are. No type here carries a raw key.
package admin

import (
	"context"
	"errors"
)

// Service is what an operator can ask of the daemon.
type Service interface {
	// Rotate rotates (or, with DryRun, plans) the requested targets.
	// A target's failure is in its entry of the report; the error is for
	// the request itself (an unknown target, an unreachable daemon).
	Rotate(ctx context.Context, req RotateRequest) (RotateReport, error)
	// Status reports every target's keys and last result.
	Status(ctx context.Context) (StatusReport, error)
	// Keys lists the keys at Codat of one target, or of every target
	// when target is empty.
	Keys(ctx context.Context, target string) (KeysReport, error)
	// Resume clears the halt of one target; the report says whether it
	// was halted.
	Resume(ctx context.Context, target string) (ResumeReport, error)
	// Takeover makes this daemon's state file the owner of one target
	// and rebuilds its state from Vault's history and Codat's keys.
	Takeover(ctx context.Context, target string) (TakeoverReport, error)
}

// Reload asks the running daemon to re-read its config file and apply
// it (what SIGHUP does), and answers once it is applied or refused. An
// error means the daemon kept its running config. Only a daemon
// reloads: there is no in-process Reload.
type Reload func(ctx context.Context) (ReloadReport, error)

var (
	// ErrNoSuchTarget: a request names a target that is not configured.
	ErrNoSuchTarget = errors.New("no such target")
	// ErrRefused: the daemon answers on its admin socket but refuses
	// this client, whose uid is neither the daemon's nor root's. A
	// command must say so, not fall back to working in-process.
	ErrRefused = errors.New("refused by the daemon")
	// ErrConfigRefused: the daemon refuses a reloaded config, and keeps
	// running the old one: the file, or its environment, must change.
	ErrConfigRefused = errors.New("the daemon refuses the config")
)
