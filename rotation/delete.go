package rotation

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/codat-rotator/codat-rotator/store"
)

// The one delete path (docs/design.md#delete-path). Make room, retire,
// orphan sweep, rollback and revoke all delete through deleteKey: it
// asks the policy (MayDelete) against the state as stored, the listing
// and the served key of the caller's look, then deletes at Codat (a 404
// counts as done) and records the key deleted, with what the listing
// holds now.

// deleteKey deletes id at Codat with c and records it deleted. keys is
// the caller's listing, returned without id.
func (e *Engine) deleteKey(ctx context.Context, t Target, c Codat, kind DeleteKind, id string, keys []Key, served Served) ([]Key, error) {
	st, err := e.Store.Load(t.Name)
	if err != nil {
		return keys, err
	}
	if err := MayDelete(kind, id, st, keys, served); err != nil {
		return keys, err
	}
	if kind != DeleteRevoke && kind != DeleteRollback {
		// Nor a key another target's secret serves (a secret copied from
		// this target's path): its consumers would lose it (I3).
		c, err := e.allClaims(t, []string{id})
		if err != nil {
			return keys, err
		}
		if other, ok := c.Serve[id]; ok && c.Own[id] == other {
			return keys, &ownedElsewhere{id: id, target: other}
		}
		if other, ok := c.Serve[id]; ok {
			return keys, fmt.Errorf("refusing to delete %s: the secret of target %s serves it (it holds a key of this target's; give %s a key of its own)", id, other, other)
		}
		if k := c.Keep[id]; k.Until.After(e.now()) {
			return keys, &keptElsewhere{id: id, target: k.Target, until: k.Until}
		}
		// A copy of a secret that its target has not looked at since:
		// the targets sharing the client say what they serve now.
		if other, err := e.servedElsewhere(ctx, t, st, id); err != nil {
			return keys, err
		} else if other != "" {
			return keys, fmt.Errorf("refusing to delete %s: the secret of target %s serves it (a copy of this target's; give %s a key of its own)", id, other, other)
		}
	}
	if err := c.Delete(ctx, id); err != nil && !errors.Is(err, ErrKeyNotFound) {
		return keys, fmt.Errorf("delete key %s: %w", id, err)
	}
	kept := make([]Key, 0, len(keys))
	for _, k := range keys {
		if k.ID != id {
			kept = append(kept, k)
		}
	}
	now := e.now()
	err = e.Store.Update(t.Name, func(st *store.Target) error {
		if rec := st.Key(id); rec != nil {
			markDeleted(rec, now)
		} else if kind == DeleteRevoke {
			markDeletedID(st, id, now) // a foreign key the state never saw
		}
		st.CodatKeys = len(kept)
		if st.Journal != nil && st.Journal.Step == store.StepMakeRoom {
			st.Journal = nil
		}
		if kind == DeleteRevoke && st.Journal != nil && st.Journal.Step == store.StepRetire {
			st.Journal = nil
		}
		return nil
	})
	return kept, err
}

// keptElsewhere is deleteKey's refusal of a key another target's secret
// served until lately: that target's consumers may still hold it, so it
// keeps a grace of its own. A wait, not a fault: the retire pass
// postpones the key to until.
type keptElsewhere struct {
	id, target string
	until      time.Time
}

func (k *keptElsewhere) Error() string {
	return fmt.Sprintf("refusing to delete %s: target %s, whose secret served it too, keeps it until %s", k.id, k.target, k.until.UTC().Format(time.RFC3339))
}

// ownedElsewhere is deleteKey's refusal of a key another target records
// as its own and serves: its secret held a copy of this target's while
// this one only kept the key in its grace, and took it on (both record
// it; docs/design.md#shared-keys). A wait, not a fault: the retire pass
// looks again a grace on.
type ownedElsewhere struct{ id, target string }

func (o *ownedElsewhere) Error() string {
	return fmt.Sprintf("refusing to delete %s: target %s records it as its own and serves it", o.id, o.target)
}

// servedElsewhere returns the other target on t's Codat client whose
// secret serves key id now (by its value's fingerprint, else by
// key_id), or "": a secret copied into another target's path is seen
// before that target looks at it. The targets known to share the
// client are read, one Vault read each; a renamed target is known by
// its old name's state (noteRenamed); the targets whose client is not
// known yet are read at most once per unplacedFor (unplaced.go).
func (e *Engine) servedElsewhere(ctx context.Context, t Target, st store.Target, id string) (string, error) {
	var print string
	if rec := st.Key(id); rec != nil {
		print = rec.Fingerprint
	}
	e.mu.Lock()
	group := e.slots.group(t.Name)
	defs := make([]Target, 0, len(group))
	for _, name := range group {
		if d, ok := e.defs[name]; ok && name != t.Name && d.Vault != t.Vault {
			defs = append(defs, d)
		}
	}
	unknown := e.unplacedTargets(t, group)
	e.mu.Unlock()
	for _, d := range defs {
		cur, err := e.Vault.Read(ctx, d.Vault)
		if err != nil {
			return "", fmt.Errorf("read %s, which may serve key %s: %w", d.Vault, id, err)
		}
		if cur.Secret == nil {
			continue
		}
		if p := e.fingerprint(cur.Secret.APIKey); (print != "" && p == print) || (print == "" && cur.Secret.KeyID == id) {
			return d.Name, nil
		}
	}
	return e.unplacedServing(ctx, unknown, id, print)
}
