package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// Origin says how a key came to be known.
type Origin string

const (
	// OriginCreated: the daemon made the key.
	OriginCreated Origin = "created"
	// OriginAdopted: the key was the bootstrap key, or the key Vault
	// served when the daemon found it; the daemon manages it from then on.
	OriginAdopted Origin = "adopted"
	// OriginForeign: someone else made the key (in Codat's Portal). It
	// counts toward the cap and is never touched without an explicit
	// revoke.
	OriginForeign Origin = "foreign"
)

// Managed reports whether the daemon may retire keys of this origin.
func (o Origin) Managed() bool { return o == OriginCreated || o == OriginAdopted }

// KeyState is where a key is in its life.
type KeyState string

const (
	// KeyPending: created at Codat, not yet published to Vault.
	KeyPending KeyState = "pending"
	// KeyActive: the key Vault serves.
	KeyActive KeyState = "active"
	// KeyRetiring: superseded; deleted once DeleteAfter passes.
	KeyRetiring KeyState = "retiring"
	// KeyDeleted: gone from Codat.
	KeyDeleted KeyState = "deleted"
	// KeyForeign: a foreign key seen at Codat.
	KeyForeign KeyState = "foreign"
)

// Key is what the state file knows of one Codat key. It never holds the
// raw key or its header.
type Key struct {
	ID          string    `json:"id"`
	Name        string    `json:"name,omitempty"`
	Origin      Origin    `json:"origin"`
	State       KeyState  `json:"state"`
	Created     time.Time `json:"created,omitzero"`
	Published   time.Time `json:"published,omitzero"`
	DeleteAfter time.Time `json:"delete_after,omitzero"`
	Deleted     time.Time `json:"deleted,omitzero"`
	// RotationID is the rotation that made or adopted the key.
	RotationID string `json:"rotation_id,omitempty"`
	// Fingerprint is a salted one-way hash of the raw key, known for
	// every key the daemon made, published or saw listed with its value:
	// how the served key is told by value when Codat's listing leaves
	// raw keys out (docs/design.md#served-by-value). Never the key.
	Fingerprint string `json:"fingerprint,omitempty"`
}

// Step is a step of the rotation (docs/design.md#step-table).
type Step string

const (
	StepPlan     Step = "plan"
	StepMakeRoom Step = "make-room"
	StepCreate   Step = "create"
	StepVerify   Step = "verify"
	StepPublish  Step = "publish"
	StepActivate Step = "activate"
	StepRetire   Step = "retire"
)

// Journal is the rotation in flight. It is written before each side
// effect (with the intent) and after it (with the result), so a restart
// resumes or rolls back from the exact step.
type Journal struct {
	RotationID string    `json:"rotation_id"`
	Step       Step      `json:"step"`
	Started    time.Time `json:"started"`
	Updated    time.Time `json:"updated"`
	Emergency  bool      `json:"emergency,omitempty"`
	Revoke     string    `json:"revoke,omitempty"`
	// Name is the name the new key is (to be) created with: after a lost
	// create response, the handle for finding it.
	Name string `json:"name,omitempty"`
	// NewKeyID is set once the new key is known to exist.
	NewKeyID string `json:"new_key_id,omitempty"`
	// PrevKeyID is the key Vault served when the rotation began.
	PrevKeyID string `json:"prev_key_id,omitempty"`
	// VaultVersion is the secret's version read at plan: the
	// check-and-set version of the publish.
	VaultVersion int `json:"vault_version"`
	// RoomKeyID is the key make-room set out to delete.
	RoomKeyID string `json:"room_key_id,omitempty"`
}

// Target is the state of one target.
type Target struct {
	Keys    []Key    `json:"keys"`
	Journal *Journal `json:"journal,omitempty"`

	// Vault is the secret's location ("mount/path") the target last
	// looked at: a target renamed in the config keeps its location, so
	// the state under its old name is not another target's
	// (docs/design.md#shared-keys).
	Vault string `json:"vault,omitempty"`

	// Tag marks the names of the keys this target makes: random, made
	// once per target in this state file and kept in the secret's
	// custom metadata, so no other target or daemon has the same shape
	// (docs/design.md#key-names). Empty until the first rotation.
	Tag string `json:"tag,omitempty"`

	Halted     bool      `json:"halted,omitempty"`
	HaltReason string    `json:"halt_reason,omitempty"`
	HaltedAt   time.Time `json:"halted_at,omitzero"`

	// Blocked says which other state file owns the target's secret, when
	// a look at Vault found one: the target rotates nothing until that
	// changes (a takeover). Empty when not blocked.
	Blocked   string    `json:"blocked,omitempty"`
	BlockedAt time.Time `json:"blocked_at,omitzero"`

	// CodatKeys is how many keys Codat held when last looked at (foreign
	// ones included), for status and the free-slots metric.
	CodatKeys int `json:"codat_keys,omitempty"`
	// VaultVersion is the version of the secret the daemon last read or
	// wrote. A newer one at the next look means someone else wrote to
	// Vault in between and may have served any key meanwhile.
	VaultVersion int `json:"vault_version,omitempty"`
	// VaultWritten is when Vault wrote that version: versions restart at
	// 1 after `vault kv metadata delete`, so a number alone cannot tell
	// that the secret moved on.
	VaultWritten time.Time `json:"vault_written,omitzero"`
	// SharedKey is a key this target's secret serves that another target
	// of this state file records as its own (a secret copied from the
	// other's path, a key given to both): the target refuses to take it
	// on, and the other target must not delete it while this one serves
	// it (docs/design.md#shared-keys). Empty when there is none.
	SharedKey string `json:"shared_key,omitempty"`
	// ServedDoubt says why the key Vault serves cannot be told for sure
	// (key_id and api_key disagree, or api_key matches no key the daemon
	// knows), as the last look found it; every key that may be the
	// served one is kept. Empty when it is certain.
	ServedDoubt string `json:"served_doubt,omitempty"`
	// Unclaimed says why this state file could not record itself as the
	// secret's owner at the last publish (the Vault policy lacks patch on
	// the metadata path, say): the protection against a second daemon is
	// off until it can. Empty when the claim is recorded.
	Unclaimed string `json:"unclaimed,omitempty"`

	LastAttempt         time.Time `json:"last_attempt,omitzero"`
	LastSuccess         time.Time `json:"last_success,omitzero"`
	LastResult          string    `json:"last_result,omitempty"`
	LastError           string    `json:"last_error,omitempty"`
	ConsecutiveFailures int       `json:"consecutive_failures,omitempty"`
}

// Fresh reports whether the target has recorded nothing of a look yet:
// no key, no tag, no journal, no version of its secret.
func (t Target) Fresh() bool {
	return len(t.Keys) == 0 && t.Tag == "" && t.Journal == nil && t.VaultVersion == 0 && t.SharedKey == ""
}

// Key returns the key with the id, or nil.
func (t *Target) Key(id string) *Key {
	for i := range t.Keys {
		if t.Keys[i].ID == id {
			return &t.Keys[i]
		}
	}
	return nil
}

// Rotation is one finished rotation, for the history.
type Rotation struct {
	ID        string    `json:"id"`
	Started   time.Time `json:"started"`
	Finished  time.Time `json:"finished"`
	Result    string    `json:"result"`
	Emergency bool      `json:"emergency,omitempty"`
	NewKeyID  string    `json:"new_key_id,omitempty"`
	Retired   []string  `json:"retired,omitempty"`
	Error     string    `json:"error,omitempty"`
}

// DecodeTarget decodes a target record, refusing unknown fields: a field
// this version does not know means the file was written by a newer one.
func DecodeTarget(b []byte) (Target, error) {
	var t Target
	if err := decodeStrict(b, &t); err != nil {
		return Target{}, fmt.Errorf("decode target record: %w", err)
	}
	for i, k := range t.Keys {
		if k.ID == "" {
			return Target{}, fmt.Errorf("decode target record: keys[%d] has no id", i)
		}
	}
	return t, nil
}

// DecodeRotation decodes a history record.
func DecodeRotation(b []byte) (Rotation, error) {
	var r Rotation
	if err := decodeStrict(b, &r); err != nil {
		return Rotation{}, fmt.Errorf("decode rotation record: %w", err)
	}
	return r, nil
}

func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("trailing data after the record")
	}
	return nil
}
