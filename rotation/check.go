package rotation

import (
	"context"
	"errors"
	"fmt"
)

// Check is one finding of CheckTarget: what was reached (vault,
// bootstrap or codat), and what was found there or why it failed.
type Check struct {
	What   string
	Detail string // what was found, when it passed
	Err    error  // nil: the check passed
	// Keys are the ids Codat listed (the codat check), so that the
	// caller can tell which targets share a client.
	Keys []string
}

// CheckTarget reaches Vault and Codat for t as a rotation would, with
// the configured credentials, and changes nothing: t's mount is KV v2
// and its secret readable, and Codat accepts the key Vault serves (the
// bootstrap key while Vault holds none). It stops at the first failure,
// which is then the last Check. It needs only the engine's Vault and
// Codat.
func (e *Engine) CheckTarget(ctx context.Context, t Target) []Check {
	e.noteTarget(t)
	v, err := e.look(ctx, t, lookOpts{anyOwner: true, pretend: true, noHistory: true})
	if err != nil && stageOf(err) == "vault" {
		return []Check{{What: "vault", Err: err}}
	}
	owner := e.ownerCheck(t, v.Cur)
	if owner.Err != nil {
		return []Check{owner}
	}
	found := Check{What: "vault", Detail: fmt.Sprintf("%s holds no secret yet; the bootstrap key will be published", t.Vault)}
	if v.Cur.Secret != nil {
		found.Detail = fmt.Sprintf("%s serves key %s (version %d)", t.Vault, v.Cur.Secret.KeyID, v.Cur.Version)
	}
	switch {
	case err != nil && errors.Is(err, ErrNoBootstrap) && t.Bootstrap == nil:
		return []Check{owner, {What: "vault", Err: noBootstrap{fmt.Errorf("%s holds no secret and no bootstrap key is configured (bootstrap_key_file or bootstrap_key_env)", t.Vault)}}}
	case err != nil && stageOf(err) == "bootstrap":
		if _, berr := t.Bootstrap(); berr != nil {
			err = noBootstrap{berr} // what the operator set wrong, without the wrapping
		}
		return []Check{owner, {What: "bootstrap", Err: err}}
	case err != nil:
		return []Check{owner, found, {What: "codat", Err: err}}
	}
	ids := make([]string, 0, len(v.Keys))
	for _, k := range v.Keys {
		ids = append(ids, k.ID)
	}
	out := []Check{owner, found, {What: "codat", Detail: fmt.Sprintf("key accepted; %d of %d keys used", len(v.Keys), t.MaxKeys), Keys: ids}}
	if v.Served.Doubt != "" && e.Store != nil {
		// Without the state file (the daemon holds it) the fingerprints
		// are not at hand, and a doubt would be a guess.
		out = append(out, Check{What: "served key", Err: fmt.Errorf("%s", v.Served.Doubt)})
	}
	return out
}

// ownerCheck says who owns the target's secret, and fails when another
// state file does (docs/design.md#ownership).
func (e *Engine) ownerCheck(t Target, cur Current) Check {
	c := ClaimOf(cur.CustomMetadata)
	switch {
	case c.ID == "":
		return Check{What: "owner", Detail: "no owner recorded yet; the next publish records this state file"}
	case e.Owner.ID == "":
		return Check{What: "owner", Detail: "owned by " + c.String() + " (this state file's identity could not be read here)"}
	case c.ID == e.Owner.ID:
		return Check{What: "owner", Detail: "owned by this state file (" + c.String() + ")"}
	}
	return Check{What: "owner", Err: e.checkOwner(t, cur)}
}

// noBootstrap is a missing bootstrap key in the words of its setting,
// still matching ErrNoBootstrap: the caller tells a configuration to fix
// from a failure a later try may get past.
type noBootstrap struct{ error }

func (noBootstrap) Is(target error) bool { return target == ErrNoBootstrap }
