package rotation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/codat-rotator/codat-rotator/store"
)

// retireDue deletes the due keys, checking the invariants against fresh
// Vault and Codat state right before each delete. It first reconciles
// the state with what it reads, as a rotation's plan does, so a key an
// operator published again is active, not due. A due key it must keep
// because the served key cannot be told, or because it is the last key,
// is an error: the caller retries later instead of at once.
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
	v, err := e.look(ctx, t, lookOpts{early: true,
		noSecret: fmt.Sprintf("%s holds no secret; nothing is deleted while no key is served", t.Vault)})
	if errors.Is(err, ErrNotOwner) {
		e.recordBlocked(t, err)
	}
	if err != nil {
		return nil, fmt.Errorf("retire: %w", err)
	}
	served := v.Served
	if served.Known {
		apply, err := e.settle(ctx, t, &v, st, "", false)
		if err != nil {
			return nil, fmt.Errorf("retire: %w", err)
		}
		err = e.Store.Update(t.Name, func(st *store.Target) error {
			// Orphans are left to the next rotation, which deletes them
			// under its journal.
			_ = apply(st)
			due, _ = Due(*st, now)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	keys := v.Keys
	del, gone, held := Retirement(due, keys, served)
	var errs []error
	if !served.Known && len(held) > 0 {
		// Which key is served cannot be told: the keys that may be it
		// stay until the secret says, and the error says how.
		errs = append(errs, servedUnknown(t, false, len(keys), served))
	}
	for _, h := range held {
		log.Warn("not retiring a due key", "key_id", h.Key.ID, "reason", h.Reason)
		if !served.Is(h.Key.ID) {
			errs = append(errs, fmt.Errorf("%w: not retiring key %s: %s", ErrRetireHeld, h.Key.ID, h.Reason))
		}
	}
	var deleted []string
	for _, k := range del {
		log.Info("deleting retired key", "key_id", k.ID, "delete_after", k.DeleteAfter)
		if keys, err = e.deleteKey(ctx, t, v.Client, DeleteRetire, k.ID, keys, served); err != nil {
			var owned *ownedElsewhere
			if errors.As(err, &owned) {
				// Both targets record it; the other serves it now. A wait:
				// look again a grace on (by then that target has retired
				// it, and keeps it its own grace, or still serves it).
				log.Info("retired key kept while another target serves it", "key_id", k.ID, "target", owned.target)
				if err := e.postpone(t, k.ID, e.now().Add(t.Grace)); err != nil {
					errs = append(errs, err)
				}
				continue
			}
			var kept *keptElsewhere
			if errors.As(err, &kept) {
				// Another target's consumers may still hold it: it goes
				// when that target's grace ends (the timer re-arms).
				log.Info("retired key kept for another target", "key_id", k.ID, "target", kept.target, "until", kept.until)
				if err := e.postpone(t, k.ID, kept.until); err != nil {
					errs = append(errs, err)
				}
				continue
			}
			errs = append(errs, err)
			continue
		}
		deleted = append(deleted, k.ID)
	}
	if len(gone) > 0 {
		now := e.now()
		err := e.Store.Update(t.Name, func(st *store.Target) error {
			for _, k := range gone {
				if rec := st.Key(k.ID); rec != nil {
					markDeleted(rec, now)
				}
			}
			st.CodatKeys = len(keys)
			return nil
		})
		if err != nil {
			return deleted, err
		}
	}
	return deleted, errors.Join(errs...)
}

// postpone moves a retiring key's delete-after out to until, never in.
func (e *Engine) postpone(t Target, id string, until time.Time) error {
	return e.Store.Update(t.Name, func(st *store.Target) error {
		if rec := st.Key(id); rec != nil && rec.State == store.KeyRetiring && until.After(rec.DeleteAfter) {
			rec.DeleteAfter = until
		}
		return nil
	})
}
