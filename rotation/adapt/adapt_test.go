package adapt_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/codat-rotator/codat-rotator/codat"
	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/rotation/adapt"
	"github.com/codat-rotator/codat-rotator/vault"
)

// A marked error matches the engine's kind and everything it matched
// before, and reads and retries as before.
func TestErrorsKeepTheirMeaning(t *testing.T) {
	apiErr := func(status int) error {
		return &codat.APIError{Op: codat.OpDelete, StatusCode: status, CorrelationID: "c-1"}
	}
	vaultErr := func(kind error) error {
		return &vault.Error{Op: "patch metadata", Path: "secret/metadata/codat/t", Kind: kind, Err: errors.New("cause")}
	}
	tests := []struct {
		name    string
		err     error
		mark    func(error) error
		kind    error // nil: no kind of the engine's
		adapter error
	}{
		{"401", apiErr(http.StatusUnauthorized), adapt.CodatError, rotation.ErrKeyRejected, codat.ErrUnauthorized},
		{"403, wrapped", fmt.Errorf("delete key k1: %w", apiErr(http.StatusForbidden)), adapt.CodatError, rotation.ErrKeyRejected, codat.ErrUnauthorized},
		{"404", apiErr(http.StatusNotFound), adapt.CodatError, rotation.ErrKeyNotFound, codat.ErrNotFound},
		{"outcome unknown", &codat.OutcomeUnknownError{Name: "cr-x", Err: apiErr(http.StatusBadGateway)}, adapt.CodatError, rotation.ErrOutcomeUnknown, codat.ErrOutcomeUnknown},
		{"429", apiErr(http.StatusTooManyRequests), adapt.CodatError, nil, codat.ErrRateLimited},
		{"402", apiErr(http.StatusPaymentRequired), adapt.CodatError, nil, codat.ErrPlanLimit},
		{"cas conflict", &vault.CASConflictError{Path: "secret/data/codat/t", Expected: 3, Current: 4}, adapt.VaultError, rotation.ErrCASConflict, vault.ErrCASConflict},
		{"metadata, denied", fmt.Errorf("%w (%w)", vault.ErrMetadata, vaultErr(vault.ErrPermissionDenied)), adapt.VaultError, rotation.ErrMetadataNotSet, vault.ErrPermissionDenied},
		{"metadata, unreachable", fmt.Errorf("%w (%w)", vault.ErrMetadata, vaultErr(vault.ErrUnreachable)), adapt.VaultError, rotation.ErrMetadataNotSet, vault.ErrUnreachable},
		{"sealed", vaultErr(vault.ErrSealed), adapt.VaultError, nil, vault.ErrSealed},
		{"canceled", fmt.Errorf("vault read x: %w", context.Canceled), adapt.VaultError, nil, context.Canceled},
	}
	kinds := []error{rotation.ErrKeyRejected, rotation.ErrKeyNotFound, rotation.ErrOutcomeUnknown, rotation.ErrCASConflict, rotation.ErrMetadataNotSet}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.mark(tc.err)
			if tc.kind == nil && got != tc.err {
				t.Errorf("an error of no kind came back as %#v, want it unchanged", got)
			}
			for _, k := range kinds {
				if got, want := errors.Is(got, k), k == tc.kind; got != want {
					t.Errorf("errors.Is(%v) = %v, want %v", k, got, want)
				}
			}
			if !errors.Is(got, tc.adapter) {
				t.Errorf("no longer matches %v", tc.adapter)
			}
			if got, want := got.Error(), tc.err.Error(); got != want {
				t.Errorf("message %q, want %q", got, want)
			}
			if got, want := rotation.Retryable(got), rotation.Retryable(tc.err); got != want {
				t.Errorf("Retryable = %v, want %v as before", got, want)
			}
			var ce *codat.APIError
			if errors.As(tc.err, &ce) && !errors.As(got, &ce) {
				t.Error("errors.As no longer finds the *codat.APIError")
			}
		})
	}
	if adapt.CodatError(nil) != nil || adapt.VaultError(nil) != nil {
		t.Error("nil is marked")
	}
}

// The adapters hand the engine their values whole.
func TestConversions(t *testing.T) {
	created := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	k := adapt.Key(codat.Key{ID: "k1", Name: "cr-1", APIKey: "raw", Created: created, CreatedRaw: "2025-01-02T03:04:05Z"})
	if want := (rotation.Key{ID: "k1", Name: "cr-1", APIKey: "raw", Created: created}); k != want {
		t.Errorf("Key = %+v, want %+v", k, want)
	}
	loc := vault.Location{Mount: "secret", Path: "codat/t"}
	if got := adapt.VaultLocation(adapt.Location(loc)); got != loc {
		t.Errorf("location round trip = %v, want %v", got, loc)
	}
	if got, want := adapt.Location(loc).String(), loc.String(); got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
	s := vault.Secret{APIKey: "raw", KeyID: "k1", KeyName: "cr-1", CreatedAt: created, RotatedAt: created,
		PreviousKeyID: "k0", PreviousExpiresAt: created, NextRotationAt: created}
	cur := adapt.Current(vault.Current{Secret: &s, Version: 4, CustomMetadata: map[string]string{"managed_by": "codat-rotator"}})
	if cur.Secret == nil || vault.Secret(*cur.Secret) != s || cur.Version != 4 || cur.CustomMetadata["managed_by"] != "codat-rotator" {
		t.Errorf("Current = %+v", cur)
	}
	if cur.Secret.Header() != s.Header() {
		t.Error("the published header differs from vault's")
	}
	if got := adapt.Current(vault.Current{Version: 2}); got.Secret != nil || got.Version != 2 {
		t.Errorf("Current without a secret = %+v", got)
	}
}
