package rotation

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"testing"

	"github.com/codat-rotator/codat-rotator/codat"
	"github.com/codat-rotator/codat-rotator/vault"
)

// TestRetryable pins which failures a rotation retries (and halts on)
// and which it gives up on at once: every sentinel and typed error of the
// adapters, bare, wrapped, and joined with another.
func TestRetryable(t *testing.T) {
	api := func(status int) error { return &codat.APIError{Op: "create key", StatusCode: status} }
	verr := func(kind error) error {
		return &vault.Error{Op: "write", Path: "secret/data/codat/t", Kind: kind, Err: errors.New("cause")}
	}
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"plain error", errors.New("boom"), true},
		{"deadline exceeded", context.DeadlineExceeded, true},
		{"context canceled", context.Canceled, false},
		{"context canceled wrapped", fmt.Errorf("list keys: %w", context.Canceled), false},

		// rotation's own
		{"ErrNoRoom", fmt.Errorf("%w: 10 of 10", ErrNoRoom), false},
		{"ErrServedKeyRejected", ErrServedKeyRejected, false},
		{"ErrNoBootstrap", ErrNoBootstrap, false},
		{"ErrBootstrapRejected", ErrBootstrapRejected, false},
		{"ErrHalted", ErrHalted, false},
		{"ErrBusy", ErrBusy, false},
		{"errRevoke", fmt.Errorf("%w %q: no such key", errRevoke, "k1"), false},
		{"ErrRolledBack of an outage", fmt.Errorf("%w: %w", ErrRolledBack, codat.ErrServer), true},
		{"ErrRolledBack of a refusal", fmt.Errorf("%w: %w", ErrRolledBack, codat.ErrUnauthorized), false},

		// codat sentinels
		{"codat.ErrUnauthorized", codat.ErrUnauthorized, false},
		{"codat.ErrBadRequest", codat.ErrBadRequest, false},
		{"codat.ErrPlanLimit", codat.ErrPlanLimit, false},
		{"codat.ErrNotFound", codat.ErrNotFound, true},
		{"codat.ErrCapReached", codat.ErrCapReached, true},
		{"codat.ErrRateLimited", codat.ErrRateLimited, true},
		{"codat.ErrServer", codat.ErrServer, true},
		{"codat.ErrBadResponse", fmt.Errorf("%w: no id", codat.ErrBadResponse), true},
		{"codat.ErrOutcomeUnknown", codat.ErrOutcomeUnknown, true},

		// codat typed errors, by status
		{"codat 400", api(400), false},
		{"codat 401", api(401), false},
		{"codat 402", api(402), false},
		{"codat 403", api(403), false},
		{"codat 404", api(404), true},
		{"codat 408", api(408), true},
		{"codat 409", api(409), true},
		{"codat 418", api(418), true},
		{"codat 429", api(429), true},
		{"codat 500", api(500), true},
		{"codat 503", fmt.Errorf("list keys: %w", api(503)), true},
		{"outcome unknown after a 502", &codat.OutcomeUnknownError{Name: "k", Err: api(502)}, true},
		{"outcome unknown after a timeout", &codat.OutcomeUnknownError{Name: "k", Err: &url.Error{Op: "Post", URL: "u", Err: context.DeadlineExceeded}}, true},
		{"outcome unknown after a 401", &codat.OutcomeUnknownError{Name: "k", Err: api(401)}, false},
		{"outcome unknown after cancel", &codat.OutcomeUnknownError{Name: "k", Err: context.Canceled}, false},

		// vault sentinels
		{"vault.ErrMountMissing", vault.ErrMountMissing, false},
		{"vault.ErrNotKVv2", vault.ErrNotKVv2, false},
		{"vault.ErrPermissionDenied", vault.ErrPermissionDenied, false},
		{"vault.ErrTokenInvalid", vault.ErrTokenInvalid, true},
		{"vault.ErrSealed", vault.ErrSealed, true},
		{"vault.ErrUnreachable", vault.ErrUnreachable, true},
		{"vault.ErrCASConflict", vault.ErrCASConflict, true},
		{"vault.ErrMalformed", fmt.Errorf("%w: key_id is a number", vault.ErrMalformed), false},
		{"vault.ErrLoginRefused", vault.ErrLoginRefused, false},
		{"vault.ErrServer", vault.ErrServer, true},
		{"vault.ErrMetadata", vault.ErrMetadata, true},

		// vault typed errors, by kind
		{"vault.Error mount missing", verr(vault.ErrMountMissing), false},
		{"vault.Error not kv2", verr(vault.ErrNotKVv2), false},
		{"vault.Error permission denied", verr(vault.ErrPermissionDenied), false},
		{"vault.Error token invalid", verr(vault.ErrTokenInvalid), true},
		{"vault.Error sealed", verr(vault.ErrSealed), true},
		{"vault.Error unreachable", verr(vault.ErrUnreachable), true},
		{"vault.Error malformed", verr(vault.ErrMalformed), false},
		{"vault.Error login refused", verr(vault.ErrLoginRefused), false},
		{"vault.Error server", verr(vault.ErrServer), true},
		{"vault.Error over a cancel", &vault.Error{Op: "read", Kind: vault.ErrUnreachable, Err: context.Canceled}, false},
		{"vault.CASConflictError", &vault.CASConflictError{Path: "p", Expected: 3, Current: 4}, true},
		{"metadata not set, permission denied", fmt.Errorf("%w (%w)", vault.ErrMetadata, verr(vault.ErrPermissionDenied)), false},
		{"metadata not set, unreachable", fmt.Errorf("%w (%w)", vault.ErrMetadata, verr(vault.ErrUnreachable)), true},

		// two causes: any refusal wins, in either place
		{"token invalid, then login refused", fmt.Errorf("%w; logging in again failed: %w", verr(vault.ErrTokenInvalid), verr(vault.ErrLoginRefused)), false},
		{"login refused, then token invalid", fmt.Errorf("%w; %w", verr(vault.ErrLoginRefused), verr(vault.ErrTokenInvalid)), false},
		{"outcome unknown, then lookup 401", fmt.Errorf("%w; and the lookup by name failed: %w", &codat.OutcomeUnknownError{Name: "k", Err: api(500)}, api(401)), false},
		{"outcome unknown, then lookup 503", fmt.Errorf("%w; and the lookup by name failed: %w", &codat.OutcomeUnknownError{Name: "k", Err: api(500)}, api(503)), true},
		{"joined, one refusal", errors.Join(api(500), verr(vault.ErrUnreachable), fmt.Errorf("delete: %w", api(403))), false},
		{"joined, all outages", errors.Join(api(500), verr(vault.ErrSealed), vault.ErrCASConflict), true},
		{"joined with cancel", errors.Join(api(500), context.Canceled), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Retryable(tt.err); got != tt.want {
				t.Errorf("Retryable(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}
