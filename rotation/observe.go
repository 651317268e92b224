package rotation

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/codat-rotator/codat-rotator/internal/sentinel"
	"github.com/codat-rotator/codat-rotator/secret"
	"github.com/codat-rotator/codat-rotator/store"
)

// One view of the world (docs/design.md#one-view). Every decision about
// a target starts from one look: what Vault holds (the secret, its
// version and custom metadata, and its history when Vault is ahead of
// the state), who owns it, Codat's listing made with the key Vault
// serves, and which keys are or may be the served one. Plan, dry run,
// recovery, retire pass, takeover, check and keys all take it from
// look, and bring the state in line with it through settle.

// ErrKeyShared: a target would take on a key another target of this
// state file records as its own. Two targets must never share a key:
// each would retire it under the other.
var ErrKeyShared = sentinel.Permanent("the key belongs to another target")

// view is one look at a target.
type view struct {
	Seen
	// Cur is what Vault holds (Cur.Secret nil when nothing).
	Cur Current
	// Client calls Codat with the served key.
	Client Codat
	// Bootstrap: Vault holds no secret and the bootstrap key stands in
	// for it, unpublished (a dry run, a check).
	Bootstrap bool
}

// lookOpts shape a look.
type lookOpts struct {
	// early starts the Codat listing beside the Vault read (early.go).
	early bool
	// anyOwner skips the owner check: a takeover, or the read-only keys
	// listing, looks at what another state file owns.
	anyOwner bool
	// history reads every version Vault keeps, even when the state is
	// not behind (a takeover).
	history bool
	// noHistory never reads the versions (check: a read-only probe).
	noHistory bool
	// publish, when Vault holds no secret, publishes the bootstrap key
	// and returns what Vault holds then (a rotation's plan).
	publish func(ctx context.Context, cur Current) (Current, error)
	// pretend, when Vault holds no secret, looks with the bootstrap key
	// as if it were published (a dry run, a check).
	pretend bool
	// noSecret is what to say when Vault holds no secret otherwise.
	noSecret string
}

// State returns the target's state as the engine reads it: a renamed
// target's old state in a read-only process (noteRenamed).
func (e *Engine) State(target string) (store.Target, error) { return e.load(target) }

// load returns the target's state; the zero state when the engine has
// no state file (check), and a renamed target's old state in a
// read-only process (noteRenamed).
func (e *Engine) load(target string) (store.Target, error) {
	if e.Store == nil {
		return store.Target{}, nil
	}
	st, err := e.Store.Load(target)
	if old := e.renamedFrom(target); err == nil && old != "" && st.Fresh() {
		return e.Store.Load(old) // read-only: the state a rename would move
	}
	return st, err
}

// look reads what Vault holds for t, checks who owns it, lists Codat's
// keys with the key it serves and tells which key that is. A look
// changes nothing, but for the bootstrap publish of o.publish.
func (e *Engine) look(ctx context.Context, t Target, o lookOpts) (view, error) {
	if err := e.checkMount(ctx, t.Vault); err != nil {
		return view{}, stageErr{"vault", err}
	}
	var x *early
	if o.early {
		x = e.listEarly(ctx, t)
	}
	defer x.drop()
	cur, err := e.Vault.Read(ctx, t.Vault)
	if err != nil {
		return view{}, stageErr{"vault", err}
	}
	v := view{Cur: cur}
	if !o.anyOwner {
		if err := e.checkOwner(t, cur); err != nil {
			// A blocked target presents no key to Codat that it has not
			// just read from Vault: the remembered one may be deleted.
			e.forget(t.Name)
			return v, err
		}
	}
	var served *Published
	switch {
	case cur.Secret != nil:
		served = cur.Secret
	case o.publish != nil:
		if cur, err = o.publish(ctx, cur); err != nil {
			return v, fmt.Errorf("bootstrap: %w", err)
		}
		v.Cur, served = cur, cur.Secret
	case o.pretend:
		key, err := bootstrapKey(t)
		if err != nil {
			return v, stageErr{"bootstrap", err}
		}
		served, v.Bootstrap = &Published{APIKey: key}, true
	default:
		return v, errors.New(o.noSecret)
	}
	if !v.Bootstrap {
		e.remember(t.Name, served.APIKey)
	}
	client, keys, err := e.list(ctx, t, x, served.APIKey)
	switch {
	case errors.Is(err, ErrKeyRejected) && v.Bootstrap:
		return v, stageErr{"codat", bootstrapRejected(t, err)}
	case errors.Is(err, ErrKeyRejected):
		return v, stageErr{"codat", fmt.Errorf("%w: the key at %s (id %q): %w; was it deleted at Codat? Put a working key of this Codat client there (`vault kv put %s api_key=<key>`) and rotate again", ErrServedKeyRejected, t.Vault, served.KeyID, err, t.Vault)}
	case err != nil:
		return v, stageErr{"codat", err}
	}
	v.Client = client
	if !v.Bootstrap {
		e.noteListing(t.Name, keys)
		e.placeUnplaced(ctx, t, keys)
	}
	st, err := e.load(t.Name)
	if err != nil {
		return v, err
	}
	shown := v.Cur
	shown.Secret = served
	v.Seen = See(keys, shown, st, e.Salt)
	if !v.Bootstrap && !o.noHistory && (o.history || Stale(st, v.Cur)) {
		// Vault is ahead of the state: a write it never saw (an
		// operator, a restored or renamed state, a lost publish answer).
		// Its versions say which keys were served, and when they went.
		h, err := e.Vault.History(ctx, t.Vault)
		if err != nil {
			return v, fmt.Errorf("read the versions of %s: %w", t.Vault, err)
		}
		e.seeHistory(&v, h)
	}
	if v.Served.Doubt != "" {
		e.log().Warn("the key vault serves is in doubt; every key that may be it is kept", "target", t.Name, "doubt", v.Served.Doubt)
	}
	return v, nil
}

// seeHistory puts the secret's versions in the view, with the
// fingerprint of each one's api_key.
func (e *Engine) seeHistory(v *view, h []Current) {
	v.History, v.HistoryPrints = h, make([]string, len(h))
	for i, c := range h {
		if c.Secret != nil {
			v.HistoryPrints[i] = e.fingerprint(c.Secret.APIKey)
		}
	}
}

// bootstrapKey reads t's bootstrap key.
func bootstrapKey(t Target) (secret.Value, error) {
	if t.Bootstrap == nil {
		return "", fmt.Errorf("%w: %s holds no secret; set bootstrap_key_file or bootstrap_key_env", ErrNoBootstrap, t.Vault)
	}
	key, err := t.Bootstrap()
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrNoBootstrap, err)
	}
	return key, nil
}

// settled is what settle decided.
type settled struct {
	// Orphans are unknown keys of the target's own shape, and pending
	// keys no journal names, that no version of the secret names and no
	// other target records: deleted (I5).
	Orphans []Key
	// Names is the target's naming, with its tag.
	Names Names
}

// settle brings st in line with the view, the one reconcile of plan,
// retire pass, takeover and dry run: Reconcile, after making sure that
// no key the target takes on is another target's, and that no orphan is
// a key some version of the secret served. It changes only *st; the
// caller writes it (store.Update, which may call fn more than once, so
// the checks that read run first, on a copy).
func (e *Engine) settle(ctx context.Context, t Target, v *view, st store.Target, rotationID string, dry bool) (func(*store.Target) settled, error) {
	tag := e.tagFor(t, st, v.Metadata)
	now := e.now()
	try := func(st store.Target) (store.Target, []Key) {
		st = cloneTarget(st)
		if st.Tag == "" {
			st.Tag = tag
		}
		orphans := Reconcile(&st, v.Seen, NamesOf(t, st.Tag).withMetadata(v.Metadata), t.Grace, now, rotationID)
		return st, orphans
	}
	after, orphans := try(st)
	if len(orphans) > 0 && v.History == nil && !v.Bootstrap {
		// Never an orphan on shape alone if a version of the secret
		// names it: look at the versions, and reconcile with them.
		h, err := e.Vault.History(ctx, t.Vault)
		if err != nil {
			return nil, fmt.Errorf("read the versions of %s: %w", t.Vault, err)
		}
		e.seeHistory(v, h)
		after, orphans = try(st)
	}
	ids := Adoptions(st, after)
	for _, k := range orphans {
		ids = append(ids, k.ID)
	}
	all, err := e.allClaims(t, ids)
	if err != nil {
		return nil, err
	}
	claims := all.Own
	if prev := prevName(v); prev != "" && prev != t.Name {
		// The secret was published under another name of this target
		// (a rename): that name's state is this target's past.
		for id, other := range claims {
			if other == prev {
				delete(claims, id)
			}
		}
	}
	for _, id := range Adoptions(st, after) {
		other, ok := all.Serve[id]
		if !ok || !v.Served.May(id) || prevName(v) == other {
			// A key the secret's records name that another target owns
			// is left to it (foreign here), not taken on. A served key
			// that another target only keeps in its grace is taken on:
			// neither deletes it before the other's grace ends (Keep).
			continue
		}
		if !dry && e.Store != nil {
			// Its secret serves the other target's key: that target must
			// not delete it while this one serves it (deleteKey).
			err := e.Store.Update(t.Name, func(st *store.Target) error {
				st.SharedKey, st.Vault = id, t.Vault.String() // the location: a rename keeps it (Claims)
				return nil
			})
			if err != nil {
				return nil, err
			}
		}
		return nil, sharedKey(t, v, id, other)
	}
	if id := st.SharedKey; id != "" && !v.Served.May(id) && !dry {
		// The secret no longer serves the other target's key: that
		// target may delete it, a full grace from now, since this
		// target's consumers held it until now (I4).
		if err := e.keepFor(t, id, now.Add(t.Grace)); err != nil {
			return nil, err
		}
	}
	if !dry && e.Store != nil {
		// A version of the secret served another target's key (a copy
		// of its secret, fixed before this target looked): this
		// target's consumers may hold it until the grace the versions
		// give it, so its owner keeps it that long (I4).
		for _, id := range Adoptions(st, after) {
			if _, theirs := claims[id]; !theirs || v.Served.Is(id) {
				continue
			}
			if rec := after.Key(id); rec != nil && rec.State == store.KeyRetiring {
				if err := e.keepFor(t, id, rec.DeleteAfter); err != nil {
					return nil, err
				}
			}
		}
	}
	return func(st *store.Target) settled {
		before := cloneTarget(*st)
		st.SharedKey, st.Vault = "", t.Vault.String()
		if st.Tag == "" {
			st.Tag = tag
		}
		names := NamesOf(t, st.Tag).withMetadata(v.Metadata)
		orphans := Reconcile(st, v.Seen, names, t.Grace, now, rotationID)
		for _, id := range Adoptions(before, *st) {
			// A key another target took on is left to it, unless it
			// carries this target's own tag: this target made it (a
			// state restored from before it did), so both record it and
			// neither deletes it before the other's grace ends (Keep).
			if _, theirs := claims[id]; theirs && !v.Served.Is(id) && !names.Own(st.Key(id).Name) {
				disown(st.Key(id))
			}
		}
		var out []Key
		for _, k := range orphans {
			if _, theirs := claims[k.ID]; theirs {
				// Another target's key (published by hand into its secret,
				// say): never this target's orphan.
				recordForeign(st, k)
				continue
			}
			out = append(out, k)
		}
		return settled{Orphans: out, Names: names}
	}, nil
}

// heldElsewhere returns which of st's retiring keys another target
// serves or keeps beyond now: make room passes them over, as the one
// delete path would refuse them.
func (e *Engine) heldElsewhere(t Target, st store.Target, now time.Time) (map[string]bool, error) {
	var ids []string
	for _, k := range st.Keys {
		if k.State == store.KeyRetiring && k.Origin.Managed() {
			ids = append(ids, k.ID)
		}
	}
	c, err := e.allClaims(t, ids)
	if err != nil {
		return nil, err
	}
	held := map[string]bool{}
	for id := range c.Serve {
		held[id] = true
	}
	for id, k := range c.Keep {
		if k.Until.After(now) {
			held[id] = true
		}
	}
	return held, nil
}

// keepFor keeps the key id, which t's secret served though another
// target owns it, until at least until in the owner's state.
func (e *Engine) keepFor(t Target, id string, until time.Time) error {
	c, err := e.allClaims(t, []string{id})
	if err != nil {
		return err
	}
	owner, ok := c.Own[id]
	if !ok {
		return nil
	}
	return e.Store.Update(owner, func(st *store.Target) error {
		if rec := st.Key(id); rec != nil && rec.State == store.KeyRetiring && rec.DeleteAfter.Before(until) {
			supersede(rec, until)
		}
		return nil
	})
}

// prevName is the target name the secret was last published under.
func prevName(v *view) string { return v.Metadata[MetadataTarget] }

// allClaims returns what the other targets of this state file hold of
// ids; the state t had under an older name (the same Vault location) is
// not another target's.
func (e *Engine) allClaims(t Target, ids []string) (store.Claims, error) {
	if len(ids) == 0 || e.Store == nil {
		return store.Claims{}, nil
	}
	c, err := e.Store.Claims(t.Name, t.Vault.String(), ids)
	if err != nil {
		return c, fmt.Errorf("look for the key in the other targets' state: %w", err)
	}
	return c, nil
}

// sharedKey is the error of a target that would take on another
// target's key.
func sharedKey(t Target, v *view, id, other string) error {
	how := "a key an earlier version of its secret served"
	switch {
	case v.Bootstrap || v.Served.May(id) && v.Cur.Secret == nil:
		how = "its bootstrap key"
	case v.Served.May(id):
		how = "the key its secret at " + t.Vault.String() + " serves"
	case v.Secret != nil && v.Secret.PreviousKeyID == id:
		how = "the previous key its secret names"
	}
	return fmt.Errorf("%w: target %s would take on key %s (%s), but target %s records it as its own; two targets never share a key, or each retires it under the other. Give %s a key of its own: make one in the Codat Portal and publish it (`vault kv put %s api_key=<key> key_id=<id>`) or make it %s's bootstrap key, then rotate %s",
		ErrKeyShared, t.Name, id, how, other, t.Name, t.Vault, t.Name, t.Name)
}

// tagFor is t's tag: the one its state holds, else the one the secret's
// metadata records (a takeover, a renamed target, a lost state file),
// else a new one.
func (e *Engine) tagFor(t Target, st store.Target, md map[string]string) string {
	if st.Tag != "" {
		return st.Tag
	}
	if tag := md[MetadataKeyTag]; ValidTag(tag) {
		return tag
	}
	return NewTag(e.Salt, t.Name)
}

// cloneTarget copies st deeply enough for Reconcile to change the copy.
func cloneTarget(st store.Target) store.Target {
	st.Keys = slices.Clone(st.Keys)
	if st.Journal != nil {
		j := *st.Journal
		st.Journal = &j
	}
	return st
}

// forget drops the key remembered for t's early listing.
func (e *Engine) forget(target string) {
	e.mu.Lock()
	delete(e.served, target)
	e.mu.Unlock()
}

// stageErr says which part of a look failed: vault, bootstrap or codat
// (what check reports). It reads as the error it wraps.
type stageErr struct {
	stage string
	err   error
}

func (e stageErr) Error() string { return e.err.Error() }
func (e stageErr) Unwrap() error { return e.err }

// stageOf returns the part of a look err comes from, "vault" when it
// does not say.
func stageOf(err error) string {
	var s stageErr
	if errors.As(err, &s) {
		return s.stage
	}
	return "vault"
}
