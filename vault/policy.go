package vault

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// The capabilities a rotation needs on a target's paths: the secret is
// read, written with check-and-set (create for the first version,
// update for the next) and read back; its metadata is read (the
// versions, a deleted latest version) and patched (the owner, the tag),
// without which nothing stops a second daemon. configs/vault-policy.hcl
// grants exactly these.
var (
	dataCapabilities     = []string{"create", "read", "update"}
	metadataCapabilities = []string{"read", "patch"}
)

// PolicyError says which capabilities the token lacks on a target's
// paths, as sys/capabilities-self answers.
type PolicyError struct {
	// Missing maps an API path to the capabilities it lacks there.
	Missing map[string][]string
}

func (e *PolicyError) Error() string {
	var parts []string
	paths := make([]string, 0, len(e.Missing))
	for p := range e.Missing {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	var metadata bool
	for _, p := range paths {
		caps := e.Missing[p]
		parts = append(parts, fmt.Sprintf("%q on %s", strings.Join(caps, `", "`), p))
		metadata = metadata || (strings.Contains(p, "/metadata/") && slices.Contains(caps, "patch"))
	}
	msg := "the token's policies lack " + strings.Join(parts, " and ")
	if metadata {
		msg += ": without patch on the metadata path the owner is never recorded, so nothing stops a second codat-rotator from rotating this target too"
	}
	return msg + "; grant what configs/vault-policy.hcl grants: create, read, update on <mount>/data/<path>, and read, patch on <mount>/metadata/<path>"
}

// Is matches ErrPermissionDenied.
func (e *PolicyError) Is(target error) bool { return target == ErrPermissionDenied }

// Retryable is false: a policy changes by a person's hand.
func (e *PolicyError) Retryable() bool { return false }

// CheckPolicy asks Vault which capabilities the token has on loc's data
// and metadata paths (sys/capabilities-self, which Vault's default
// policy allows) and returns a *PolicyError naming those a rotation
// needs and lacks. It changes nothing, so `check` can tell a policy
// without patch, which a rotation would only show as an owner never
// recorded.
func (c *Client) CheckPolicy(ctx context.Context, loc Location) error {
	need := map[string][]string{loc.dataPath(): dataCapabilities, loc.metadataPath(): metadataCapabilities}
	paths := []string{loc.dataPath(), loc.metadataPath()}
	var have map[string]any
	err := c.call(ctx, func() error {
		// Both paths in one request: Vault answers each by its name.
		start := time.Now()
		sec, err := c.api.Logical().WriteWithContext(ctx, "sys/capabilities-self", map[string]any{"paths": paths})
		c.observe("capabilities", err, start)
		if err == nil && (sec == nil || sec.Data == nil) {
			err = errors.New("sys/capabilities-self: an empty answer")
		}
		if err != nil {
			return classify("capabilities of the token", "sys/capabilities-self", "update", err)
		}
		have = sec.Data
		return nil
	})
	if err != nil {
		return err
	}
	missing := map[string][]string{}
	for _, p := range paths {
		caps := stringsOf(have[p])
		if slices.Contains(caps, "root") {
			continue
		}
		for _, n := range need[p] {
			if !slices.Contains(caps, n) || slices.Contains(caps, "deny") {
				missing[p] = append(missing[p], n)
			}
		}
	}
	if len(missing) > 0 {
		return &PolicyError{Missing: missing}
	}
	return nil
}

// stringsOf is a JSON list of strings, as decoded into an any.
func stringsOf(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, x := range list {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}
