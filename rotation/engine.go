// Package rotation owns the state machine of one key rotation
// (docs/design.md#step-table): plan, make room, create, verify, publish, activate and retire,
// each journaled in the state file before and after its side effect so
// that a crash at any point resumes or rolls back from the exact step.
// It depends only on the small interfaces below, which speak its own
// types (types.go); the adapters live in codat/, vault/ and store/, and
// rotation/adapt fits the first two to these interfaces.
package rotation

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/codat-rotator/codat-rotator/internal/clock"
	"github.com/codat-rotator/codat-rotator/internal/sentinel"
	"github.com/codat-rotator/codat-rotator/secret"
	"github.com/codat-rotator/codat-rotator/store"
)

// Codat is what the engine needs from Codat, with one key.
type Codat interface {
	List(ctx context.Context) ([]Key, error)
	Create(ctx context.Context, name string) (Key, error)
	Delete(ctx context.Context, id string) error
}

// CodatFactory returns a Codat client for the named target that
// authenticates with key.
type CodatFactory func(target string, key secret.Value) Codat

// Vault is what the engine needs from Vault.
type Vault interface {
	CheckMount(ctx context.Context, loc Location) error
	Read(ctx context.Context, loc Location) (Current, error)
	Write(ctx context.Context, loc Location, s Published, cas int, metadata map[string]string) (int, error)
	// History returns the secret's readable versions, oldest first:
	// versions deleted, destroyed or pruned are left out.
	History(ctx context.Context, loc Location) ([]Current, error)
	// SetMetadata merges custom metadata into the secret's.
	SetMetadata(ctx context.Context, loc Location, metadata map[string]string) error
}

// Store is what the engine needs from the state file.
type Store interface {
	Load(target string) (store.Target, error)
	// Claims returns what the targets other than except hold of ids:
	// which record them as their own, and whose secrets serve them
	// (store.DB.Claims).
	Claims(except, vault string, ids []string) (store.Claims, error)
	Update(target string, fn func(*store.Target) error) error
	// Finish applies fn and adds r to the target's history, in one
	// transaction.
	Finish(target string, fn func(*store.Target) error, r store.Rotation) error
	// Targets returns the names of the targets with state.
	Targets() ([]string, error)
	// Rename moves a target's state to a new name (store.DB.Rename);
	// store.ErrReadOnly when the file is open read-only.
	Rename(from, to string) error
}

// Target is one configured Codat client and where its key is published.
type Target struct {
	Name  string
	Vault Location
	// Prefix starts the name of every key the daemon makes.
	Prefix string
	// MaxKeys is Codat's cap (10); ReserveSlots are kept free by routine
	// rotations so that an emergency always has room.
	MaxKeys, ReserveSlots int
	// Grace is how long a superseded key lives after its successor is
	// published.
	Grace time.Duration
	// Bootstrap returns the first key, used when Vault has no secret yet.
	// Nil when none is configured.
	Bootstrap func() (secret.Value, error)
	// BootstrapFrom says where Bootstrap reads the key ("$NAME", "file
	// PATH"), for the errors an operator reads.
	BootstrapFrom string
	// NextRotation returns the next scheduled rotation after t, for the
	// secret's next_rotation_at; nil when unknown.
	NextRotation func(t time.Time) time.Time
	// Interval is the shortest time between two scheduled runs
	// (ShortestInterval), zero when unknown: the metrics export it, so
	// an alert can ask for a success within twice of it.
	Interval time.Duration
}

// Options shape one rotation.
type Options struct {
	// Emergency retires every other managed key as soon as the new key is
	// published (grace 0) and may use the reserved slots.
	Emergency bool
	// Revoke deletes this key, managed or not, once the new key is
	// published.
	Revoke string
	// Manual runs even when the target is halted; success clears the
	// halt, and failure never halts: the person who asked hears of it,
	// and the schedule goes on (docs/design.md#retries).
	Manual bool
	// OnRetry, when set, hears of each failed attempt that another
	// follows, before the wait: a person waiting for a manual rotation
	// sees it retry instead of silence.
	OnRetry func(Retry)
}

// Retry is an attempt of a rotation that failed, with another to come.
type Retry struct {
	Target string
	// Next is the attempt that follows, of Attempts, after Wait.
	Next, Attempts int
	Wait           time.Duration
	// Err is why the attempt before Next failed.
	Err error
}

// Result is what a rotation did.
type Result struct {
	RotationID string
	// NewKey is the key now published.
	NewKey store.Key
	// Retiring are the keys superseded, with when they go.
	Retiring []store.Key
	// Deleted are the keys deleted during the rotation (make room,
	// orphans, revoke).
	Deleted []string
	// Recovered is set when the rotation finished one a crash left behind
	// instead of starting a new one.
	Recovered bool
	// Bootstrapped is set when the bootstrap key was published first.
	Bootstrapped bool
}

// Errors a caller tells apart. Those made with sentinel.Permanent say
// themselves that another attempt would meet the same answer.
var (
	// ErrBusy: a rotation of the target is already running.
	ErrBusy = sentinel.Permanent("a rotation of this target is already running")
	// ErrHalted: the target is halted; run `resume` or rotate manually.
	ErrHalted = sentinel.Permanent("target is halted")
	// ErrNoRoom: Codat holds too many keys the daemon may not delete.
	ErrNoRoom = sentinel.Permanent("no room for a new key")
	// ErrServedKeyRejected: Codat refuses the key Vault serves.
	ErrServedKeyRejected = sentinel.Permanent("codat rejects the key vault serves")
	// ErrNoBootstrap: Vault holds no key and no bootstrap key is set.
	ErrNoBootstrap = sentinel.Permanent("no key in vault and no bootstrap key")
	// ErrBootstrapRejected: Codat refuses the bootstrap key.
	ErrBootstrapRejected = sentinel.Permanent("codat rejects the bootstrap key")
	// ErrRolledBack: the rotation failed and its new key was deleted.
	ErrRolledBack = errors.New("rotation rolled back")
	// ErrServedUnknown: which of Codat's keys Vault serves cannot be
	// told (a secret without key_id, a listing without raw keys).
	ErrServedUnknown = sentinel.Permanent("the served key cannot be identified")
	// ErrRevokeServed: the key to revoke is the one Vault serves now,
	// so it was not deleted.
	ErrRevokeServed = sentinel.Permanent("cannot revoke")
	// ErrRetireHeld: a due key is kept for now (I2, or I3 when the served
	// key cannot be told); the retire pass tries again later.
	ErrRetireHeld = errors.New("a due key is kept")
)

// Engine runs rotations. Its zero value is not usable: set Store, Vault
// and Codat.
type Engine struct {
	Store  Store
	Vault  Vault
	Codat  CodatFactory
	Logger *slog.Logger
	// Now and Sleep are the clock (defaults time.Now and a timer).
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
	// Attempts is the retry budget of one rotation (default 3); a run
	// that exhausts it halts the target.
	Attempts int
	// RetryBackoff is the wait before the second attempt; it doubles
	// (default 30s).
	RetryBackoff time.Duration
	// VerifyAttempts and VerifyInterval bound the check that a new key
	// authenticates (defaults 5 and 2s).
	VerifyAttempts int
	VerifyInterval time.Duration
	// PublishAttempts bounds the Vault write and read-back (default 3).
	PublishAttempts int
	// Owner is this engine's state file identity and host, checked
	// against and recorded in each secret's custom metadata.
	Owner Owner
	// Salt is the state file's fingerprint salt (store.DB.Salt): the
	// served key is told by value through it (fingerprint.go).
	Salt []byte
	// MaxConcurrent bounds the rotations and retire passes running at
	// once, across targets (default DefaultMaxConcurrent; bound.go).
	MaxConcurrent int

	bound    bound    // the slots of MaxConcurrent
	retrying retrying // the rotations waiting between attempts (retrying.go)

	mu      sync.Mutex
	running map[string]bool
	mounts  map[string]bool         // mounts checked to be KV v2
	slots   slots                   // which targets share a Codat client
	defs    map[string]Target       // the targets seen, for the shared cap (clients.go)
	served  map[string]secret.Value // per target, the key last seen served (early.go)
	renamed map[string]string       // a read-only engine's renamed targets: new name -> old (clients.go)

	unplaced unplaced // what the secrets of targets on unknown clients served (unplaced.go)
}

// checkMount checks once per engine that loc's mount is KV v2 (a round
// trip per rotation otherwise); a failed rotation forgets it, so the
// next one checks again. What Vault answers depends on the mount, not
// on the path within it (Vault nests no mount in another, and the
// preflight asks for access to the mount), so a fleet's targets on one
// mount share one check rather than make a round trip each.
func (e *Engine) checkMount(ctx context.Context, loc Location) error {
	e.mu.Lock()
	ok := e.mounts[loc.Mount]
	e.mu.Unlock()
	if ok {
		return nil
	}
	if err := e.Vault.CheckMount(ctx, loc); err != nil {
		return err
	}
	e.mu.Lock()
	if e.mounts == nil {
		e.mounts = map[string]bool{}
	}
	e.mounts[loc.Mount] = true
	e.mu.Unlock()
	return nil
}

func (e *Engine) forgetMount(loc Location) {
	e.mu.Lock()
	delete(e.mounts, loc.Mount)
	e.mu.Unlock()
}

func (e *Engine) now() time.Time { return e.clock()().UTC() }

func (e *Engine) clock() func() time.Time {
	if e.Now != nil {
		return e.Now
	}
	return time.Now
}

func (e *Engine) sleep(ctx context.Context, d time.Duration) error {
	if e.Sleep != nil {
		return e.Sleep(ctx, d)
	}
	return clock.Sleep(ctx, d)
}

func (e *Engine) log() *slog.Logger {
	if e.Logger != nil {
		return e.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// acquire marks the target as rotating; only one rotation (or retire)
// per target runs at a time.
func (e *Engine) acquire(target string) (release func(), err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.running == nil {
		e.running = map[string]bool{}
	}
	if e.running[target] {
		return nil, fmt.Errorf("%s: %w", target, ErrBusy)
	}
	e.running[target] = true
	return func() {
		e.mu.Lock()
		delete(e.running, target)
		e.mu.Unlock()
	}, nil
}

// Rotate runs one rotation of t, retrying from fresh state up to the
// retry budget, then runs the retirements that are due. A crash's
// journal is resumed or rolled back first; when it completes a rotation,
// that is the rotation and no second one starts.
func (e *Engine) Rotate(ctx context.Context, t Target, opts Options) (Result, error) {
	e.noteTarget(t)
	release, err := e.acquire(t.Name)
	if err != nil {
		return Result{}, err
	}
	defer release()

	st, err := e.Store.Load(t.Name)
	if err != nil {
		return Result{}, err
	}
	if st.Halted && !opts.Manual {
		return Result{}, fmt.Errorf("%s: %w since %s: %s (run `codat-rotator resume --target %s`)",
			t.Name, ErrHalted, st.HaltedAt.Format(time.RFC3339), st.HaltReason, t.Name)
	}
	// Then a slot of the engine's bound: waiting is neither a failure
	// nor a drop, and a caller that gives up meanwhile tried nothing.
	releaseSlot, err := e.holdSlot(ctx, t.Name)
	if err != nil {
		return Result{}, fmt.Errorf("rotate %s: %w", t.Name, err)
	}
	defer releaseSlot()

	id := newRotationID(e.now())
	log := e.log().With("target", t.Name, "rotation", id)
	started := e.now()
	attempts := orDefault(e.Attempts, 3)
	backoff := orDefault(e.RetryBackoff, 30*time.Second)
	var res Result
	for attempt := 1; ; attempt++ {
		r := &run{e: e, t: t, opts: opts, id: id, log: log}
		res, err = r.rotate(ctx)
		if err == nil {
			break
		}
		log.Warn("rotation attempt failed", "attempt", attempt, "of", attempts, "error", err)
		if !Retryable(err) || attempt >= attempts || ctx.Err() != nil {
			break
		}
		if opts.OnRetry != nil {
			opts.OnRetry(Retry{Target: t.Name, Next: attempt + 1, Attempts: attempts, Wait: backoff, Err: err})
		}
		e.retrying.set(t.Name, Retrying{Next: attempt + 1, Attempts: attempts, At: e.now().Add(backoff), Err: err.Error()})
		serr := e.sleep(ctx, backoff)
		e.retrying.clear(t.Name)
		if serr != nil {
			break
		}
		backoff *= 2
	}
	if errors.Is(err, ErrNotOwner) {
		e.recordBlocked(t, err)
		log.Error("target blocked: another codat-rotator owns it", "error", err)
		return res, fmt.Errorf("rotate %s: %w", t.Name, err)
	}
	if err != nil {
		e.forgetMount(t.Vault)
		// A scheduled run that used up its attempts on errors worth
		// retrying halts the target; a manual one reports its failure
		// to the person who asked and leaves the schedule alone.
		halt := Retryable(err) && ctx.Err() == nil && !opts.Manual
		e.recordFailure(t, id, started, opts, err, halt)
		if halt {
			log.Error("rotation failed; target halted", "error", err)
			return res, fmt.Errorf("rotate %s: %w (target halted after %d attempts)", t.Name, err, attempts)
		}
		log.Error("rotation failed", "error", err)
		if opts.Manual && Retryable(err) && ctx.Err() == nil {
			return res, fmt.Errorf("rotate %s: %w (failed %d attempts; the target is not halted: scheduled rotations go on)", t.Name, err, attempts)
		}
		return res, fmt.Errorf("rotate %s: %w", t.Name, err)
	}
	e.recordSuccess(t, res, started, opts)
	log.Info("rotation done", "new_key_id", res.NewKey.ID, "recovered", res.Recovered, "retiring", len(res.Retiring))

	retired, rerr := e.retireDue(ctx, t, log)
	res.Deleted = append(res.Deleted, retired...)
	if rerr != nil {
		return res, fmt.Errorf("rotate %s: rotated, but retiring old keys failed: %w", t.Name, rerr)
	}
	return res, nil
}

// RetireDue deletes the managed keys whose grace has passed, checking
// I2 (never the last key), I3 (never the served key) and I6 (only
// managed keys) again right before each delete. It returns the ids
// deleted.
func (e *Engine) RetireDue(ctx context.Context, t Target) ([]string, error) {
	e.noteTarget(t)
	release, err := e.acquire(t.Name)
	if err != nil {
		return nil, err
	}
	defer release()
	// A pass with nothing due takes no slot of the bound.
	if st, err := e.Store.Load(t.Name); err == nil && st.Journal == nil {
		if due, _ := Due(st, e.now()); len(due) == 0 {
			return nil, nil
		}
	}
	releaseSlot, err := e.holdSlot(ctx, t.Name)
	if err != nil {
		return nil, fmt.Errorf("retire %s: %w", t.Name, err)
	}
	defer releaseSlot()
	return e.retireDue(ctx, t, e.log().With("target", t.Name))
}

// Resume clears a halted target.
func (e *Engine) Resume(t Target) error {
	return e.Store.Update(t.Name, func(st *store.Target) error {
		st.Halted, st.HaltReason, st.HaltedAt = false, "", time.Time{}
		st.ConsecutiveFailures = 0
		return nil
	})
}

func (e *Engine) recordSuccess(t Target, res Result, started time.Time, opts Options) {
	now := e.now()
	var retired []string
	for _, k := range res.Retiring {
		retired = append(retired, k.ID)
	}
	err := e.Store.Finish(t.Name, func(st *store.Target) error {
		st.LastAttempt, st.LastSuccess = now, now
		st.LastResult, st.LastError = "success", ""
		st.ConsecutiveFailures = 0
		st.Halted, st.HaltReason, st.HaltedAt = false, "", time.Time{}
		st.Blocked, st.BlockedAt = "", time.Time{}
		return nil
	}, store.Rotation{
		ID: res.RotationID, Started: started, Finished: now, Result: "success",
		Emergency: opts.Emergency, NewKeyID: res.NewKey.ID, Retired: retired,
	})
	if err != nil {
		e.log().Error("record rotation result", "target", t.Name, "error", err)
	}
}

// recordBlocked marks the target blocked by another owner: not a
// failure of the target, and never a halt, since nothing was tried.
func (e *Engine) recordBlocked(t Target, rerr error) {
	e.forget(t.Name)
	now := e.now()
	err := e.Store.Update(t.Name, func(st *store.Target) error {
		st.LastAttempt = now
		st.LastResult, st.LastError = "blocked", rerr.Error()
		if st.Blocked == "" {
			st.BlockedAt = now
		}
		st.Blocked = rerr.Error()
		return nil
	})
	if err != nil {
		e.log().Error("record blocked target", "target", t.Name, "error", err)
	}
}

func (e *Engine) recordFailure(t Target, id string, started time.Time, opts Options, rerr error, halt bool) {
	now := e.now()
	err := e.Store.Finish(t.Name, func(st *store.Target) error {
		st.LastAttempt = now
		st.LastResult, st.LastError = "failed", rerr.Error()
		st.ConsecutiveFailures++
		if halt {
			st.Halted, st.HaltReason, st.HaltedAt = true, rerr.Error(), now
		}
		return nil
	}, store.Rotation{
		ID: id, Started: started, Finished: now, Result: "failed", Emergency: opts.Emergency, Error: rerr.Error(),
	})
	if err != nil {
		e.log().Error("record rotation result", "target", t.Name, "error", err)
	}
}

// Retryable reports whether another attempt, from fresh state, may
// succeed: outages, rate limits, conflicts. Configuration and permission
// problems, and a rejected served key, are not. The adapters' errors
// answer for themselves with a Retryable method; when err wraps several
// (a failure and the failed clean-up after it), one that refuses is
// enough. An error that says nothing is worth a retry.
func Retryable(err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, context.Canceled):
		return false
	}
	var refuses func(error) bool
	refuses = func(err error) bool {
		if r, ok := err.(interface{ Retryable() bool }); ok && !r.Retryable() {
			return true
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			return u.Unwrap() != nil && refuses(u.Unwrap())
		case interface{ Unwrap() []error }:
			return slices.ContainsFunc(u.Unwrap(), refuses)
		}
		return false
	}
	return !refuses(err)
}

func newRotationID(now time.Time) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return "r-" + now.UTC().Format(NameTimeLayout) + "-" + hex.EncodeToString(b[:])
}
