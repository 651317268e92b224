package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/vault"
)

// republishPlans makes each secret this state file owns say the next
// rotation the restarted daemon plans. A secret's next_rotation_at is
// the plan of the daemon that last published it; a restart draws a new
// jitter, and a changed schedule moves the plan, so until the next
// rotation the secret would name a time nothing happens at. The new plan
// goes into the secret's custom metadata (vault.MetadataNextRotationAt),
// which `vault kv get` shows and codatauth reads: no new version, so
// consumers re-read nothing and the versions keep their history.
//
// It runs once, in the background after the scheduler starts: one Vault
// read a target, and a patch only for a plan that changed. A secret
// another state file owns, or none yet, is left alone.
func (c *runCommand) republishPlans(ctx context.Context) {
	log := c.log.With("component", "next_rotation_at")
	for _, t := range c.app.allTargets() {
		if ctx.Err() != nil {
			return
		}
		if err := c.republishPlan(ctx, t); err != nil {
			log.Warn("could not republish the planned next rotation", "target", t.Name, "error", err)
		}
	}
}

// republishPlan patches t's secret when it names another next rotation
// than the one planned. A rotation that starts meanwhile moves the plan
// and publishes it; the plan is read again after the patch, and patched
// again if it moved, so the last word is the plan's.
func (c *runCommand) republishPlan(ctx context.Context, t rotation.Target) error {
	loc := vault.Location{Mount: t.Vault.Mount, Path: t.Vault.Path}
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	cur, err := c.app.vault.Read(rctx, loc)
	if err != nil || cur.Secret == nil {
		return err
	}
	if id := c.app.engine.Owner.ID; id == "" || rotation.ClaimOf(cur.CustomMetadata).ID != id {
		return nil // not this state file's to speak for
	}
	published := cur.CustomMetadata[vault.MetadataNextRotationAt]
	if published == "" {
		published = rfc3339(cur.Secret.NextRotationAt)
	}
	for range 3 {
		planned := c.sched.Next(t.Name)
		if planned.IsZero() || rfc3339(planned) == published {
			return nil
		}
		if err := c.app.vault.SetNextRotation(rctx, loc, planned); err != nil {
			return err
		}
		c.log.Info("republished the planned next rotation", slog.String("target", t.Name),
			slog.String("was", published), slog.String("next_rotation_at", rfc3339(planned)))
		published = rfc3339(planned)
	}
	return nil
}

// rfc3339 is a time as the secret writes it: UTC to the second, empty
// when unknown.
func rfc3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}
