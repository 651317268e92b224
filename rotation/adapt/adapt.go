// Package adapt fits the Codat and Vault adapters to the engine's
// interfaces: it converts codat/ and vault/ types to rotation's and back,
// and marks the adapters' errors with the kinds the engine acts on
// (rotation.ErrKeyRejected, ...). A marked error keeps its message, its
// Retryable answer and its match with the adapter's own sentinels.
//
// It is the one package that imports rotation, codat and vault together;
// cmd and the tests wire the engine through it.
package adapt

import (
	"context"
	"errors"
	"slices"

	"github.com/codat-rotator/codat-rotator/codat"
	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/vault"
)

// CodatClient is what Codat needs of a client: *codat.Client, or a test's
// wrapper around one.
type CodatClient interface {
	List(ctx context.Context) ([]codat.Key, error)
	Create(ctx context.Context, name string) (codat.Key, error)
	Delete(ctx context.Context, id string) error
}

// VaultClient is what Vault needs of a client: *vault.Client, or a
// test's stand-in.
type VaultClient interface {
	CheckMount(ctx context.Context, loc vault.Location) error
	Read(ctx context.Context, loc vault.Location) (vault.Current, error)
	Write(ctx context.Context, loc vault.Location, s vault.Secret, cas int, metadata map[string]string) (int, error)
	History(ctx context.Context, loc vault.Location) ([]vault.Version, error)
	PatchMetadata(ctx context.Context, loc vault.Location, metadata map[string]string) error
}

// Codat returns c as the engine's Codat.
func Codat(c CodatClient) rotation.Codat { return codatAdapter{c} }

// Vault returns c as the engine's Vault.
func Vault(c VaultClient) rotation.Vault { return vaultAdapter{c} }

type codatAdapter struct{ c CodatClient }

func (a codatAdapter) List(ctx context.Context) ([]rotation.Key, error) {
	keys, err := a.c.List(ctx)
	if err != nil {
		return nil, CodatError(err)
	}
	out := make([]rotation.Key, len(keys))
	for i, k := range keys {
		out[i] = Key(k)
	}
	return out, nil
}

func (a codatAdapter) Create(ctx context.Context, name string) (rotation.Key, error) {
	k, err := a.c.Create(ctx, name)
	if err != nil {
		return rotation.Key{}, CodatError(err)
	}
	return Key(k), nil
}

func (a codatAdapter) Delete(ctx context.Context, id string) error {
	return CodatError(a.c.Delete(ctx, id))
}

type vaultAdapter struct{ c VaultClient }

func (a vaultAdapter) CheckMount(ctx context.Context, loc rotation.Location) error {
	return VaultError(a.c.CheckMount(ctx, VaultLocation(loc)))
}

func (a vaultAdapter) Read(ctx context.Context, loc rotation.Location) (rotation.Current, error) {
	cur, err := a.c.Read(ctx, VaultLocation(loc))
	if err != nil {
		return rotation.Current{}, VaultError(err)
	}
	return Current(cur), nil
}

func (a vaultAdapter) Write(ctx context.Context, loc rotation.Location, s rotation.Published, cas int, metadata map[string]string) (int, error) {
	v, err := a.c.Write(ctx, VaultLocation(loc), vault.Secret(s), cas, metadata)
	return v, VaultError(err)
}

func (a vaultAdapter) History(ctx context.Context, loc rotation.Location) ([]rotation.Current, error) {
	vs, err := a.c.History(ctx, VaultLocation(loc))
	if err != nil {
		return nil, VaultError(err)
	}
	out := make([]rotation.Current, 0, len(vs))
	for _, v := range vs {
		p := rotation.Published(v.Secret)
		out = append(out, rotation.Current{Version: v.Version, Secret: &p, Written: v.Written})
	}
	return out, nil
}

func (a vaultAdapter) SetMetadata(ctx context.Context, loc rotation.Location, metadata map[string]string) error {
	return VaultError(a.c.PatchMetadata(ctx, VaultLocation(loc), metadata))
}

// Key converts a Codat key. CreatedRaw, kept by codat/ for diagnostics,
// has no place in the engine.
func Key(k codat.Key) rotation.Key {
	return rotation.Key{ID: k.ID, Name: k.Name, APIKey: k.APIKey, Created: k.Created}
}

// Location converts a Vault location.
func Location(l vault.Location) rotation.Location { return rotation.Location(l) }

// VaultLocation converts the engine's location back for a vault.Client.
func VaultLocation(l rotation.Location) vault.Location { return vault.Location(l) }

// Current converts what Vault holds for a target.
func Current(c vault.Current) rotation.Current {
	out := rotation.Current{Version: c.Version, CustomMetadata: c.CustomMetadata, Written: c.Written}
	if c.Secret != nil {
		p := rotation.Published(*c.Secret)
		out.Secret = &p
	}
	return out
}

// kind pairs an adapter's sentinel with the engine's.
type kind struct{ adapter, engine error }

var (
	codatKinds = []kind{
		{codat.ErrUnauthorized, rotation.ErrKeyRejected},
		{codat.ErrNotFound, rotation.ErrKeyNotFound},
		{codat.ErrOutcomeUnknown, rotation.ErrOutcomeUnknown},
	}
	vaultKinds = []kind{
		{vault.ErrCASConflict, rotation.ErrCASConflict},
		{vault.ErrMetadata, rotation.ErrMetadataNotSet},
	}
)

// CodatError marks err, from codat/, with the engine's kinds of it; an
// error of no kind the engine acts on comes back as it is.
func CodatError(err error) error { return mark(err, codatKinds) }

// VaultError marks err, from vault/, with the engine's kinds of it; an
// error of no kind the engine acts on comes back as it is.
func VaultError(err error) error { return mark(err, vaultKinds) }

func mark(err error, kinds []kind) error {
	if err == nil {
		return nil
	}
	var matched []error
	for _, k := range kinds {
		if errors.Is(err, k.adapter) {
			matched = append(matched, k.engine)
		}
	}
	if matched == nil {
		return err
	}
	return &kindError{err: err, kinds: matched}
}

// kindError is an adapter's error with the engine's kinds of it: it
// prints as the error, unwraps to it (so errors.As, errors.Is and
// rotation.Retryable see everything they saw before) and also matches
// the kinds.
type kindError struct {
	err   error
	kinds []error
}

func (e *kindError) Error() string { return e.err.Error() }
func (e *kindError) Unwrap() error { return e.err }

func (e *kindError) Is(target error) bool { return slices.Contains(e.kinds, target) }
