package rotation

import (
	"fmt"
	"time"

	"github.com/codat-rotator/codat-rotator/internal/sentinel"
)

// Ownership of a target (docs/design.md#ownership). Every state file has
// an identity; every publish records it in the secret's custom metadata
// with the host and the time the claim began. A daemon, or an in-process
// command, whose state file is not the recorded owner changes nothing
// for that target, at Codat or in Vault: two copies with separate state
// files would otherwise create and delete keys behind each other's
// backs. Ownership moves only by an explicit takeover.

// Custom metadata keys of the owner.
const (
	MetadataOwner      = "owner"
	MetadataOwnerHost  = "owner-host"
	MetadataOwnerSince = "owner-since"
	// MetadataIncarnation is the process that last claimed the secret:
	// copies of one state file share its identity, not its processes.
	MetadataIncarnation = "owner-incarnation"
	// MetadataKeyTag is the tag of the target's key names, so that a
	// takeover or a renamed target recognises its keys.
	MetadataKeyTag = "key-tag"
)

// Owner is who runs the engine: the state file's identity and the host.
// An engine with an empty ID neither checks nor records ownership.
type Owner struct {
	ID   string
	Host string
	// Incarnation is this process's own (store.DB.Incarnation); Known
	// reports whether the state file remembers an incarnation as one of
	// its processes (store.DB.KnownIncarnation). Either unset: no check
	// of copies.
	Incarnation string
	Known       func(incarnation string) bool
}

// ErrNotOwner: another state file owns the target; run takeover after
// stopping the daemon that owns it.
var ErrNotOwner = sentinel.Permanent("the target belongs to another codat-rotator")

// Claim is the owner recorded in a secret's custom metadata.
type Claim struct {
	ID, Host    string
	Since       time.Time
	Incarnation string
}

// ClaimOf reads the owner recorded in custom metadata; a zero Claim when
// none is (a secret written by a release before ownership, or by hand).
func ClaimOf(md map[string]string) Claim {
	c := Claim{ID: md[MetadataOwner], Host: md[MetadataOwnerHost], Incarnation: md[MetadataIncarnation]}
	c.Since, _ = time.Parse(time.RFC3339, md[MetadataOwnerSince])
	return c
}

func (c Claim) String() string {
	s := "state file " + c.ID
	if c.Host != "" {
		s += " on host " + c.Host
	}
	if !c.Since.IsZero() {
		s += " since " + c.Since.UTC().Format(time.RFC3339)
	}
	return s
}

// checkOwner refuses a target whose secret another state file owns, or
// that a process of a copy of this state file claimed: one whose
// incarnation this file never had, so a copy of the file (a backup
// restored while the original runs, a cloned volume) runs beside it. An
// unclaimed secret is free: the next publish claims it.
func (e *Engine) checkOwner(t Target, cur Current) error {
	c := ClaimOf(cur.CustomMetadata)
	switch {
	case e.Owner.ID == "" || c.ID == "":
		return nil
	case c.ID != e.Owner.ID:
		return fmt.Errorf("%w: %s is owned by %s, not by this state file (%s); nothing was changed. If that daemon is stopped for good (a move, a lost state file), run `codat-rotator takeover --target %s` here",
			ErrNotOwner, t.Vault, c, e.Owner.ID, t.Name)
	case c.Incarnation == "" || e.Owner.Known == nil || c.Incarnation == e.Owner.Incarnation || e.Owner.Known(c.Incarnation):
		return nil
	}
	return fmt.Errorf("%w: %s was last claimed by a process of a copy of this state file (incarnation %s of %s), which this file never was: a copy of the state file runs elsewhere (a backup restored beside the original, a cloned volume), or this file was restored from a backup; nothing was changed. Stop every other copy, then run `codat-rotator takeover --target %s` here",
		ErrNotOwner, t.Vault, c.Incarnation, c, t.Name)
}

// metadata is the custom metadata a publish sets: the target, and this
// engine as owner (since the claim began, or now when it begins). It
// returns nil when cur already holds exactly that, so a publish writes
// nothing more than its check-and-set.
func (e *Engine) metadata(t Target, cur map[string]string, tag string, now time.Time) map[string]string {
	want := map[string]string{MetadataManagedBy: ManagedByValue, MetadataTarget: t.Name}
	if tag != "" {
		want[MetadataKeyTag] = tag
	}
	if e.Owner.Incarnation != "" {
		want[MetadataIncarnation] = e.Owner.Incarnation
	}
	if e.Owner.ID != "" {
		since := now.UTC().Format(time.RFC3339)
		if c := ClaimOf(cur); c.ID == e.Owner.ID && cur[MetadataOwnerSince] != "" {
			since = cur[MetadataOwnerSince]
		}
		want[MetadataOwner], want[MetadataOwnerHost], want[MetadataOwnerSince] = e.Owner.ID, e.Owner.Host, since
	}
	for k, v := range want {
		if cur[k] != v {
			return want
		}
	}
	return nil
}
