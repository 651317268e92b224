package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/store"
)

// Local is the Service in this process, over the engine and the state
// file it holds: what the daemon serves on its socket, and what a
// command does when no daemon answers.
type Local struct {
	Engine *rotation.Engine
	// Targets returns the configured targets.
	Targets func() []rotation.Target
	// Next returns a target's next scheduled rotation, zero when unknown;
	// nil means always unknown.
	Next func(target string) time.Time
	// RotateTarget runs one rotation; nil means Engine.Rotate. The
	// daemon runs it through its scheduler.
	RotateTarget func(ctx context.Context, t rotation.Target, opts rotation.Options) (rotation.Result, error)
	// TakeoverTarget runs one takeover; nil means Engine.Takeover. The
	// daemon runs it through its scheduler.
	TakeoverTarget func(ctx context.Context, t rotation.Target) (rotation.Takeover, error)
	// Resumed hears that a halted target was resumed; nil means no
	// daemon runs, and Resume retires the keys that are due itself.
	Resumed func(name string)
	// Logger records what an operator changed; nil discards.
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

var _ Service = (*Local)(nil)

// Rotate rotates or plans the requested targets, a fleet side by side:
// the engine's bound (max_concurrent_rotations) holds how many rotate at
// once, and as many plans run at once in a dry run. The entries keep the
// order of the config.
func (l *Local) Rotate(ctx context.Context, req RotateRequest) (RotateReport, error) {
	targets, err := l.selectTargets(req.Target)
	if err != nil {
		return RotateReport{}, err
	}
	opts := rotation.Options{Emergency: req.Emergency, Revoke: req.Revoke, Manual: true}
	if req.Progress != nil {
		opts.OnRetry = func(r rotation.Retry) { req.Progress(progressOf(r)) }
	}
	rotate := l.RotateTarget
	if rotate == nil {
		rotate = l.Engine.Rotate
	}
	rep := RotateReport{Results: make([]RotateEntry, len(targets))}
	one := func(i int) {
		t := targets[i]
		e := RotateEntry{Target: t.Name, Vault: t.Vault.String()}
		if req.DryRun {
			p, err := l.Engine.Plan(ctx, t, opts)
			if err != nil {
				e.Error = "cannot plan: " + err.Error()
				e.ConfigError = errors.Is(err, rotation.ErrNoBootstrap)
			} else {
				e.Plan, e.Succeeded = planOf(p), true
			}
		} else {
			res, err := rotate(ctx, t, opts)
			e.Result = resultOf(res)
			if err != nil {
				e.Error = err.Error()
				e.ConfigError = errors.Is(err, rotation.ErrNoBootstrap)
			} else {
				e.Succeeded = true
			}
		}
		rep.Results[i] = e
	}
	l.sideBySide(len(targets), one)
	return rep, nil
}

// sideBySide calls one for each of n targets, up to the engine's bound
// (max_concurrent_rotations) at once: a fleet's plans and listings wait
// on Vault and Codat, not on the CPU, and one after another they take a
// round trip each in a row.
func (l *Local) sideBySide(n int, one func(i int)) {
	sem := make(chan struct{}, max(l.Engine.Concurrency().Limit, 1))
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			one(i)
		})
	}
	wg.Wait()
}

// Status reads every target's state.
func (l *Local) Status(ctx context.Context) (StatusReport, error) {
	now := l.now()
	rep := StatusReport{Targets: []TargetStatus{}}
	targets := l.Targets()
	states, err := l.states(targets)
	if err != nil {
		return rep, err
	}
	shared := rotation.SharedClients(states)
	c := l.Engine.Concurrency()
	rep.Rotations = Concurrency{Running: c.Running, Waiting: c.Waiting, Limit: c.Limit}
	for _, t := range targets {
		var next time.Time
		if l.Next != nil {
			next = l.Next(t.Name)
		}
		ts := targetStatusOf(t, states[t.Name], next, now)
		ts.SharesClientWith = shared[t.Name]
		ts.MaxKeys, ts.ReserveSlots, ts.CapNote = sharedCap(t, shared[t.Name], targets)
		if since, ok := c.WaitingSince[t.Name]; ok {
			ts.WaitingSince = timePtr(since)
		}
		if r, ok := l.Engine.Retrying(t.Name); ok {
			ts.Retry = &RetryStatus{Attempt: r.Next, Attempts: r.Attempts, At: r.At, Error: r.Err}
		}
		rep.Targets = append(rep.Targets, ts)
	}
	return rep, nil
}

// states loads the state of each target.
func (l *Local) states(targets []rotation.Target) (map[string]store.Target, error) {
	out := make(map[string]store.Target, len(targets))
	for _, t := range targets {
		st, err := l.Engine.State(t.Name)
		if err != nil {
			return nil, err
		}
		out[t.Name] = st
	}
	return out, nil
}

// Keys lists each target's keys at Codat, marked against the state and
// the key Vault serves, a fleet side by side as a dry run plans it. A
// target whose keys cannot be listed has its error in its entry. The
// entries keep the order of the config.
func (l *Local) Keys(ctx context.Context, target string) (KeysReport, error) {
	targets, err := l.selectTargets(target)
	if err != nil {
		return KeysReport{}, err
	}
	rep := KeysReport{Targets: []TargetKeys{}}
	all := l.Targets()
	states, err := l.states(all)
	if err != nil {
		return rep, err
	}
	shared := rotation.SharedClients(states)
	rep.Targets = make([]TargetKeys, len(targets))
	l.sideBySide(len(targets), func(i int) {
		t := targets[i]
		tk := TargetKeys{Name: t.Name, Keys: []KeyEntry{}, SharesClientWith: shared[t.Name]}
		tk.MaxKeys, tk.ReserveSlots, _ = sharedCap(t, shared[t.Name], all)
		if keys, served, err := l.Engine.Keys(ctx, t); err != nil {
			tk.Error = err.Error()
		} else {
			tk.Keys, tk.ServedDoubt = keyEntriesOf(keys), served.Doubt
		}
		rep.Targets[i] = tk
	})
	return rep, nil
}

// sharedCap is the cap that applies to t: the strictest of the targets
// on its Codat client (docs/design.md#shared-clients), and a note when
// that is not t's own.
func sharedCap(t rotation.Target, shared []string, all []rotation.Target) (maxKeys, reserve int, note string) {
	var others []rotation.Target
	for _, o := range all {
		if slices.Contains(shared, o.Name) {
			others = append(others, o)
		}
	}
	c := rotation.StrictestCap(t, others)
	if c.MaxKeys != t.MaxKeys || c.ReserveSlots != t.ReserveSlots {
		note = fmt.Sprintf("its own max_keys %d and reserve_slots %d are less strict than another target's on the same client: the strictest applies to all", t.MaxKeys, t.ReserveSlots)
	}
	return c.MaxKeys, c.ReserveSlots, note
}

// Resume clears the halt of the named target, and says whether there
// was one.
func (l *Local) Resume(ctx context.Context, target string) (ResumeReport, error) {
	if target == "" {
		return ResumeReport{}, errors.New("resume: name one target")
	}
	targets, err := l.selectTargets(target)
	if err != nil {
		return ResumeReport{}, err
	}
	st, err := l.Engine.Store.Load(target)
	if err != nil {
		return ResumeReport{}, err
	}
	if err := l.Engine.Resume(targets[0]); err != nil {
		return ResumeReport{}, err
	}
	if l.Logger != nil && st.Halted {
		l.Logger.Info("target resumed by an operator", "target", target)
	}
	rep := ResumeReport{Resumed: target, WasHalted: &st.Halted}
	switch {
	case !st.Halted, st.Journal != nil: // a journal: the next rotation finishes it, then retires
	case l.Resumed != nil:
		// The daemon's loop retires what the halt held back, now.
		l.Resumed(target)
	default:
		// No daemon: the keys held past their time go now, as the
		// daemon would at once.
		rep.Retired, err = l.Engine.RetireDue(ctx, targets[0])
		if err != nil {
			rep.RetireError = err.Error()
		}
	}
	return rep, nil
}

// Takeover makes this state file the owner of the named target.
func (l *Local) Takeover(ctx context.Context, target string) (TakeoverReport, error) {
	if target == "" {
		return TakeoverReport{}, errors.New("takeover: name one target")
	}
	targets, err := l.selectTargets(target)
	if err != nil {
		return TakeoverReport{}, err
	}
	do := l.TakeoverTarget
	if do == nil {
		do = l.Engine.Takeover
	}
	tk, err := do(ctx, targets[0])
	if err != nil {
		return TakeoverReport{}, err
	}
	if l.Logger != nil {
		l.Logger.Warn("target taken over by an operator", "target", target, "previous_owner", tk.Previous.String(), "rebuilt", len(tk.Rebuilt), "foreign", len(tk.Foreign))
	}
	return takeoverOf(tk, l.Engine.Owner), nil
}

// selectTargets returns the named target, or every target when name is
// empty.
func (l *Local) selectTargets(name string) ([]rotation.Target, error) {
	targets := l.Targets()
	if name == "" {
		return targets, nil
	}
	names := make([]string, 0, len(targets))
	for _, t := range targets {
		if t.Name == name {
			return []rotation.Target{t}, nil
		}
		names = append(names, t.Name)
	}
	return nil, fmt.Errorf("--target %q: %w (configured: %s)", name, ErrNoSuchTarget, strings.Join(names, ", "))
}

func (l *Local) now() time.Time {
	if l.Now != nil {
		return l.Now().UTC()
	}
	return time.Now().UTC()
}
