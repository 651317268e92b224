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

	LastAttempt         time.Time `json:"last_attempt,omitzero"`
	LastSuccess         time.Time `json:"last_success,omitzero"`
	LastResult          string    `json:"last_result,omitempty"`
	LastError           string    `json:"last_error,omitempty"`
	ConsecutiveFailures int       `json:"consecutive_failures,omitempty"`
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
