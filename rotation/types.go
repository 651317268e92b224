package rotation

import (
	"errors"
	"time"

	"github.com/codat-rotator/codat-rotator/secret"
)

// The engine's own view of Codat and Vault. Its interfaces speak these
// types, so that rotation/ depends on neither adapter; rotation/adapt
// translates the adapters' types and errors into them.

// Key is one of a Codat client's API keys.
type Key struct {
	// ID is Codat's id for the key.
	ID string
	// Name is empty for an unnamed key.
	Name string
	// APIKey is the raw key: always set for a key just created, empty
	// when a listing leaves it out.
	APIKey secret.Value
	// Created is when Codat made the key, zero when unknown.
	Created time.Time
}

// Location is one secret in Vault: a KV v2 mount and the path under it.
type Location struct {
	Mount string
	Path  string
}

func (l Location) String() string { return l.Mount + "/" + l.Path }

// Published is the document published for a target
// (docs/design.md#vault-layout).
type Published struct {
	APIKey            secret.Value
	KeyID             string
	KeyName           string
	CreatedAt         time.Time
	RotatedAt         time.Time
	PreviousKeyID     string
	PreviousExpiresAt time.Time
	NextRotationAt    time.Time
}

// Header returns the ready-made Authorization header of the key.
func (p Published) Header() secret.Value { return secret.AuthorizationHeader(p.APIKey) }

// Current is what Vault holds for a target.
type Current struct {
	// Secret is nil when there is no secret, or its latest version is
	// deleted.
	Secret *Published
	// Version is the latest version number, 0 when the path was never
	// written: the check-and-set value for the next write.
	Version int
	// CustomMetadata is the secret's custom metadata.
	CustomMetadata map[string]string
	// Written is when Vault wrote this version, zero when unknown: the
	// moment consumers could first read it.
	Written time.Time
}

// The kinds of Codat and Vault failure the engine acts on. An adapter's
// error matches its kind with errors.Is (rotation/adapt marks them) and
// keeps its own message and Retryable answer; these say nothing of
// whether a retry may help.
var (
	// ErrKeyRejected: Codat does not accept the key (401 or 403).
	ErrKeyRejected = errors.New("codat key not accepted")
	// ErrKeyNotFound: Codat has no key with that id (404).
	ErrKeyNotFound = errors.New("codat key not found")
	// ErrOutcomeUnknown: a create may or may not have made the key; look
	// it up by name rather than create again.
	ErrOutcomeUnknown = errors.New("outcome unknown")
	// ErrCASConflict: the secret changed in Vault since it was read.
	ErrCASConflict = errors.New("vault check-and-set conflict")
	// ErrMetadataNotSet: the secret was written but its custom metadata
	// was not set.
	ErrMetadataNotSet = errors.New("secret written, custom metadata not set")
)
