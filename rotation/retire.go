package rotation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/codat-rotator/codat-rotator/codat"
	"github.com/codat-rotator/codat-rotator/store"
)

// Due returns the managed keys whose delete-after has passed, soonest
// first, and the earliest delete-after still to come (zero if none): the
// persisted timer a daemon arms.
func Due(st store.Target, now time.Time) (due []store.Key, next time.Time) {
	for _, k := range st.Keys {
		if !k.Origin.Managed() || k.State != store.KeyRetiring {
			continue
		}
		if !k.DeleteAfter.After(now) {
			due = append(due, k)
		} else if next.IsZero() || k.DeleteAfter.Before(next) {
			next = k.DeleteAfter
		}
	}
	sort.Slice(due, func(i, j int) bool { return due[i].DeleteAfter.Before(due[j].DeleteAfter) })
	return due, next
}

// retireDue deletes the due keys, checking the invariants against fresh
// Vault and Codat state right before each delete.
func (e *Engine) retireDue(ctx context.Context, t Target, log *slog.Logger) ([]string, error) {
	log = log.With("step", string(store.StepRetire))
	st, err := e.Store.Load(t.Name)
	if err != nil {
		return nil, err
	}
	if st.Journal != nil {
		return nil, fmt.Errorf("retire: rotation %s is unfinished (step %s); rotate first", st.Journal.RotationID, st.Journal.Step)
	}
	now := e.now()
	due, _ := Due(st, now)
	if len(due) == 0 {
		return nil, nil
	}
	cur, err := e.Vault.Read(ctx, t.Vault)
	if err != nil {
		return nil, fmt.Errorf("retire: %w", err)
	}
	if cur.Secret == nil {
		return nil, fmt.Errorf("retire: %s holds no secret; nothing is deleted while no key is served", t.Vault)
	}
	client := e.Codat(t.Name, cur.Secret.APIKey)
	keys, err := client.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("retire: %w", err)
	}
	live := map[string]bool{}
	for _, k := range keys {
		live[k.ID] = true
	}
	var deleted []string
	var errs []error
	for _, k := range due {
		switch {
		case k.ID == cur.Secret.KeyID:
			// I3: Vault serves it (someone published it again).
			log.Warn("not retiring the key vault serves", "key_id", k.ID)
			continue
		case !live[k.ID]:
			// Gone already: nothing to delete.
		case len(live) <= 1:
			// I2: never the last key.
			log.Warn("not retiring the last key", "key_id", k.ID)
			continue
		default:
			log.Info("deleting retired key", "key_id", k.ID, "delete_after", k.DeleteAfter)
			if err := client.Delete(ctx, k.ID); err != nil && !errors.Is(err, codat.ErrNotFound) {
				errs = append(errs, fmt.Errorf("delete key %s: %w", k.ID, err))
				continue
			}
			delete(live, k.ID)
			deleted = append(deleted, k.ID)
		}
		id := k.ID
		if err := e.Store.Update(t.Name, func(st *store.Target) error {
			if rec := st.Key(id); rec != nil {
				rec.State, rec.Deleted = store.KeyDeleted, e.now()
			}
			st.CodatKeys = len(live)
			return nil
		}); err != nil {
			return deleted, err
		}
	}
	return deleted, errors.Join(errs...)
}
