package rotation

import (
	"context"
	"errors"
	"fmt"

	"github.com/codat-rotator/codat-rotator/secret"
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
	if err := e.Vault.CheckMount(ctx, t.Vault); err != nil {
		return []Check{{What: "vault", Err: err}}
	}
	cur, err := e.Vault.Read(ctx, t.Vault)
	if err != nil {
		return []Check{{What: "vault", Err: err}}
	}
	owner := e.ownerCheck(t, cur)
	if owner.Err != nil {
		return []Check{owner}
	}
	var found Check
	var key secret.Value
	switch {
	case cur.Secret != nil:
		key = cur.Secret.APIKey
		found = Check{What: "vault", Detail: fmt.Sprintf("%s serves key %s (version %d)", t.Vault, cur.Secret.KeyID, cur.Version)}
	case t.Bootstrap == nil:
		return []Check{owner, {What: "vault", Err: fmt.Errorf("%s holds no secret and no bootstrap key is configured (bootstrap_key_file or bootstrap_key_env)", t.Vault)}}
	default:
		if key, err = t.Bootstrap(); err != nil {
			return []Check{owner, {What: "bootstrap", Err: err}}
		}
		found = Check{What: "vault", Detail: fmt.Sprintf("%s holds no secret yet; the bootstrap key will be published", t.Vault)}
	}
	keys, err := e.Codat(t.Name, key).List(ctx)
	if err != nil {
		if cur.Secret == nil && errors.Is(err, ErrKeyRejected) {
			err = bootstrapRejected(t, err)
		}
		return []Check{owner, found, {What: "codat", Err: err}}
	}
	ids := make([]string, 0, len(keys))
	for _, k := range keys {
		ids = append(ids, k.ID)
	}
	return []Check{owner, found, {What: "codat", Detail: fmt.Sprintf("key accepted; %d of %d keys used", len(keys), t.MaxKeys), Keys: ids}}
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
