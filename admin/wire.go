package admin

import (
	"fmt"
	"time"

	"github.com/codat-rotator/codat-rotator/rotation"
	"github.com/codat-rotator/codat-rotator/store"
)

// The documents of the admin API, as the socket carries them and
// `--json` prints them. Each converts from the engine's and the state
// file's types, so that a field renamed there cannot change the wire.

// RotateRequest is POST /v1/rotate: rotate one target, or every target
// when Target is empty.
type RotateRequest struct {
	Target    string `json:"target,omitempty"`
	Emergency bool   `json:"emergency,omitempty"`
	Revoke    string `json:"revoke,omitempty"`
	// DryRun plans and changes nothing.
	DryRun bool `json:"dry_run,omitempty"`
	// Progress, when set, hears of each retry while a rotation runs. On
	// the socket the client asks for it, and the daemon answers with a
	// stream of lines (streamType): progress, then the report.
	Progress func(Progress) `json:"-"`
}

// Progress is news of a rotation in flight: an attempt failed and
// another follows.
type Progress struct {
	Target string `json:"target"`
	// Next is the attempt that follows, of Attempts, in WaitSeconds.
	Next        int     `json:"next_attempt"`
	Attempts    int     `json:"attempts"`
	WaitSeconds float64 `json:"wait_seconds"`
	// Error is why the attempt before Next failed.
	Error string `json:"error"`
}

// String is the line a person reads while waiting.
func (p Progress) String() string {
	wait := time.Duration(p.WaitSeconds * float64(time.Second)).Round(time.Second)
	return fmt.Sprintf("%s: attempt %d of %d, retrying in %s: %s", p.Target, p.Next, p.Attempts, wait, p.Error)
}

func progressOf(r rotation.Retry) Progress {
	return Progress{Target: r.Target, Next: r.Next, Attempts: r.Attempts, WaitSeconds: r.Wait.Seconds(), Error: r.Err.Error()}
}

// streamType is the media type of a rotation answered as a stream: one
// JSON streamLine per line.
const streamType = "application/x-ndjson"

// streamLine is one line of a streamed rotation: progress, then either
// the report or the error that ended the request.
type streamLine struct {
	Progress *Progress     `json:"progress,omitempty"`
	Report   *RotateReport `json:"report,omitempty"`
	Error    *errorReport  `json:"error,omitempty"`
}

// RotateReport is the answer to a rotate: one entry per target.
type RotateReport struct {
	Results []RotateEntry `json:"results"`
}

// RotateEntry is one target's rotation, or its plan in a dry run.
type RotateEntry struct {
	Target    string          `json:"target"`
	Vault     string          `json:"vault"`
	Succeeded bool            `json:"succeeded"`
	Error     string          `json:"error,omitempty"`
	Result    *RotationResult `json:"result,omitempty"`
	Plan      *RotationPlan   `json:"plan,omitempty"`
	// ConfigError: the failure is in the configuration (no bootstrap key
	// while Vault holds none), for the operator to fix; the command
	// exits 2.
	ConfigError bool `json:"config_error,omitempty"`
}

// RotationResult is what a rotation did.
type RotationResult struct {
	RotationID string `json:"rotation_id,omitempty"`
	// NewKey is the key now published, nil when none was.
	NewKey *Key `json:"new_key,omitempty"`
	// Retiring are the keys superseded, with when each goes.
	Retiring []Key `json:"retiring"`
	// Deleted are the ids of the keys deleted.
	Deleted []string `json:"deleted"`
	// Recovered: the rotation finished one a crash left behind.
	Recovered bool `json:"recovered,omitempty"`
	// Bootstrapped: the bootstrap key was published first.
	Bootstrapped bool `json:"bootstrapped,omitempty"`
}

// RotationPlan is what a rotation would do (a dry run).
type RotationPlan struct {
	// Journal is a crash's unfinished rotation, resumed or rolled back
	// first.
	Journal *Journal `json:"rotation_in_flight,omitempty"`
	// Bootstrap: Vault holds no secret; the bootstrap key would be
	// published and adopted first.
	Bootstrap   bool   `json:"bootstrap,omitempty"`
	ServedKeyID string `json:"served_key_id"`
	CodatKeys   int    `json:"codat_keys"`
	Foreign     int    `json:"foreign_keys"`
	// Limit is how many keys this rotation may hold.
	Limit      int      `json:"limit"`
	NewKeyName string   `json:"new_key_name"`
	Orphans    []string `json:"orphans"`
	MakeRoom   []Key    `json:"make_room"`
	Retire     []Key    `json:"retire"`
	Revoke     string   `json:"revoke,omitempty"`
	// RetireNow are the keys the retire pass after the rotation would
	// delete at once.
	RetireNow []string `json:"retire_now,omitempty"`
	// Blocked says why the rotation could not proceed.
	Blocked string `json:"blocked,omitempty"`
	// ServedDoubt says why the served key is not certain.
	ServedDoubt string `json:"served_doubt,omitempty"`
}

// Key is a key the state file knows, never its raw value.
type Key struct {
	ID          string     `json:"id"`
	Name        string     `json:"name,omitempty"`
	Origin      string     `json:"origin,omitempty"`
	State       string     `json:"state,omitempty"`
	Created     *time.Time `json:"created,omitempty"`
	Published   *time.Time `json:"published,omitempty"`
	DeleteAfter *time.Time `json:"delete_after,omitempty"`
}

// Journal is a rotation in flight.
type Journal struct {
	RotationID string    `json:"rotation_id"`
	Step       string    `json:"step"`
	Started    time.Time `json:"started"`
}

// StatusReport is GET /v1/status and `status --json`.
type StatusReport struct {
	// Daemon: answered by a running daemon, not read from the file.
	Daemon  bool           `json:"daemon"`
	Targets []TargetStatus `json:"targets"`
	// Rotations is the bound on concurrent rotations and its use.
	Rotations Concurrency `json:"rotations"`
}

// Concurrency is max_concurrent_rotations and how many rotations hold
// a slot or wait for one.
type Concurrency struct {
	Running int `json:"running"`
	Waiting int `json:"waiting"`
	Limit   int `json:"max_concurrent"`
}

// TargetStatus is one target in a StatusReport.
type TargetStatus struct {
	Name         string      `json:"name"`
	Vault        string      `json:"vault"`
	CurrentKey   *KeyStatus  `json:"current_key"`
	Retiring     []KeyStatus `json:"retiring"`
	NextRotation *time.Time  `json:"next_rotation,omitempty"`
	LastResult   string      `json:"last_result,omitempty"`
	LastError    string      `json:"last_error,omitempty"`
	LastSuccess  *time.Time  `json:"last_success,omitempty"`
	LastAttempt  *time.Time  `json:"last_attempt,omitempty"`
	KeysUsed     int         `json:"keys_used"`
	MaxKeys      int         `json:"max_keys"`
	ReserveSlots int         `json:"reserve_slots"`
	Halted       bool        `json:"halted"`
	HaltReason   string      `json:"halt_reason,omitempty"`
	Journal      *Journal    `json:"rotation_in_flight,omitempty"`
	// Blocked says which other state file owns the target's secret: the
	// target rotates nothing until a takeover.
	Blocked      string     `json:"blocked,omitempty"`
	BlockedSince *time.Time `json:"blocked_since,omitempty"`
	// SharesClientWith names the targets on the same Codat client, as
	// the keys recorded for each show.
	SharesClientWith []string `json:"shares_client_with,omitempty"`
	// CapNote says that max_keys and reserve_slots above are another
	// target's, stricter than this one's own (targets on one client
	// share the strictest cap).
	CapNote string `json:"cap_note,omitempty"`
	// ServedDoubt says why the key Vault serves is not certain: every
	// key that may be it is kept.
	ServedDoubt string `json:"served_doubt,omitempty"`
	// Unclaimed says why the owner could not be recorded in the secret's
	// metadata: the protection against a second daemon is off.
	Unclaimed string `json:"owner_unrecorded,omitempty"`
	// WaitingSince is when the target, due, began to wait for a slot of
	// max_concurrent_rotations; nil when it is not waiting.
	WaitingSince *time.Time `json:"waiting_for_slot_since,omitempty"`
	// Retry is the rotation waiting between two attempts, nil when none
	// is: the last attempt failed, the next is due at its time.
	Retry *RetryStatus `json:"retry,omitempty"`
}

// RetryStatus is a rotation waiting to retry, in a TargetStatus.
type RetryStatus struct {
	// Attempt is the attempt that comes next, of Attempts.
	Attempt  int       `json:"attempt"`
	Attempts int       `json:"attempts"`
	At       time.Time `json:"at"`
	// Error is why the attempt before it failed.
	Error string `json:"error"`
}

// KeyStatus is the current or a retiring key in a TargetStatus.
type KeyStatus struct {
	ID          string     `json:"id"`
	Name        string     `json:"name,omitempty"`
	Origin      string     `json:"origin"`
	Created     *time.Time `json:"created,omitempty"`
	Published   *time.Time `json:"published,omitempty"`
	AgeSeconds  int64      `json:"age_seconds,omitempty"`
	DeleteAfter *time.Time `json:"delete_after,omitempty"`
}

// KeysReport is GET /v1/keys and `keys --json`: what Codat holds,
// marked, never raw values.
type KeysReport struct {
	Targets []TargetKeys `json:"targets"`
}

// TargetKeys is one target's keys at Codat.
type TargetKeys struct {
	Name  string     `json:"name"`
	Keys  []KeyEntry `json:"keys"`
	Error string     `json:"error,omitempty"`
	// SharesClientWith names the targets on the same Codat client: their
	// keys are among these, marked foreign.
	SharesClientWith []string `json:"shares_client_with,omitempty"`
	MaxKeys          int      `json:"max_keys,omitempty"`
	ReserveSlots     int      `json:"reserve_slots,omitempty"`
	// ServedDoubt says why the key Vault serves is not certain.
	ServedDoubt string `json:"served_doubt,omitempty"`
}

// KeyEntry is one key at Codat.
type KeyEntry struct {
	ID      string     `json:"id"`
	Name    string     `json:"name,omitempty"`
	Created *time.Time `json:"created,omitempty"`
	// Marking is managed, adopted, foreign or orphan (named as the
	// target names keys, but not in its state: the next rotation
	// deletes it).
	Marking string `json:"marking"`
	State   string `json:"state,omitempty"`
	Served  bool   `json:"served"`
}

// ResumeRequest is POST /v1/resume.
type ResumeRequest struct {
	Target string `json:"target"`
}

// ResumeReport is its answer.
type ResumeReport struct {
	Resumed string `json:"resumed"`
	// WasHalted says whether the target was halted; nil from a daemon
	// older than the field.
	WasHalted *bool `json:"was_halted,omitempty"`
	// Retired are the keys a resume without a daemon deleted at once:
	// the halt held them past their grace. Through the daemon its loop
	// retires them, just after the answer.
	Retired []string `json:"retired,omitempty"`
	// RetireError is why those keys could not all be retired.
	RetireError string `json:"retire_error,omitempty"`
}

// TakeoverRequest is POST /v1/takeover.
type TakeoverRequest struct {
	Target string `json:"target"`
}

// TakeoverReport is its answer: whom the target was taken from, and
// the keys the state took on.
type TakeoverReport struct {
	Target        string      `json:"target"`
	PreviousOwner string      `json:"previous_owner,omitempty"`
	Owner         string      `json:"owner"`
	Versions      int         `json:"versions_read"`
	Rebuilt       []KeyStatus `json:"rebuilt"`
	Foreign       []string    `json:"foreign"`
}

// ReloadReport is the answer to POST /v1/reload: the config the daemon
// now runs with.
type ReloadReport struct {
	// Targets are the targets scheduled after the reload, sorted.
	Targets []string `json:"targets"`
	// NeedRestart names changed settings that keep their running values
	// until a restart (state_path, listen, vault, log).
	NeedRestart []string `json:"need_restart,omitempty"`
}

// Ping is GET /v1/ping: a daemon answers.
type Ping struct {
	PID     int    `json:"pid"`
	Version string `json:"version"`
}

// errorReport is the body of every answer that is not 200.
type errorReport struct {
	Error string `json:"error"`
	// Kind names an error the client matches: kindNoSuchTarget,
	// kindConfig.
	Kind string `json:"kind,omitempty"`
}

// The kinds of errorReport: of ErrNoSuchTarget, of ErrConfigRefused.
const (
	kindNoSuchTarget = "no_such_target"
	kindConfig       = "config"
)

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func keyOf(k store.Key) Key {
	return Key{ID: k.ID, Name: k.Name, Origin: string(k.Origin), State: string(k.State),
		Created: timePtr(k.Created), Published: timePtr(k.Published), DeleteAfter: timePtr(k.DeleteAfter)}
}

func keysOf(ks []store.Key) []Key {
	out := make([]Key, 0, len(ks))
	for _, k := range ks {
		out = append(out, keyOf(k))
	}
	return out
}

func journalOf(j *store.Journal) *Journal {
	if j == nil {
		return nil
	}
	return &Journal{RotationID: j.RotationID, Step: string(j.Step), Started: j.Started}
}

func resultOf(r rotation.Result) *RotationResult {
	out := &RotationResult{RotationID: r.RotationID, Retiring: keysOf(r.Retiring),
		Deleted: append([]string{}, r.Deleted...), Recovered: r.Recovered, Bootstrapped: r.Bootstrapped}
	if r.NewKey.ID != "" {
		k := keyOf(r.NewKey)
		out.NewKey = &k
	}
	return out
}

func planOf(p rotation.Plan) *RotationPlan {
	return &RotationPlan{Journal: journalOf(p.Journal), Bootstrap: p.Bootstrap, ServedKeyID: p.ServedKeyID,
		CodatKeys: p.CodatKeys, Foreign: p.Foreign, Limit: p.Limit, NewKeyName: p.NewKeyName,
		Orphans: append([]string{}, p.Orphans...), MakeRoom: keysOf(p.MakeRoom), Retire: keysOf(p.Retire),
		Revoke: p.Revoke, RetireNow: p.RetireNow, Blocked: p.Blocked, ServedDoubt: p.ServedDoubt}
}

func keyStatusOf(k store.Key) KeyStatus {
	return KeyStatus{ID: k.ID, Name: k.Name, Origin: string(k.Origin), Created: timePtr(k.Created),
		Published: timePtr(k.Published), DeleteAfter: timePtr(k.DeleteAfter)}
}

// targetStatusOf is a target's status at now; next is its next
// scheduled rotation (zero when unknown).
func targetStatusOf(t rotation.Target, st store.Target, next, now time.Time) TargetStatus {
	s := rotation.TargetStatus(st, now)
	ts := TargetStatus{
		Name: t.Name, Vault: t.Vault.String(), Retiring: make([]KeyStatus, 0, len(s.Retiring)),
		NextRotation: timePtr(next), LastResult: st.LastResult, LastError: st.LastError,
		LastSuccess: timePtr(st.LastSuccess), LastAttempt: timePtr(st.LastAttempt),
		KeysUsed: st.CodatKeys, MaxKeys: t.MaxKeys, ReserveSlots: t.ReserveSlots,
		Halted: st.Halted, HaltReason: st.HaltReason, Journal: journalOf(st.Journal),
		Blocked: st.Blocked, BlockedSince: timePtr(st.BlockedAt),
		ServedDoubt: st.ServedDoubt, Unclaimed: st.Unclaimed,
	}
	if s.Current != nil {
		k := keyStatusOf(*s.Current)
		k.AgeSeconds = int64(s.Age / time.Second)
		ts.CurrentKey = &k
	}
	for _, k := range s.Retiring {
		ts.Retiring = append(ts.Retiring, keyStatusOf(k))
	}
	return ts
}

func takeoverOf(tk rotation.Takeover, owner rotation.Owner) TakeoverReport {
	rep := TakeoverReport{Target: tk.Target, Owner: rotation.Claim{ID: owner.ID, Host: owner.Host}.String(), Versions: tk.Versions,
		Rebuilt: make([]KeyStatus, 0, len(tk.Rebuilt)), Foreign: append([]string{}, tk.Foreign...)}
	if tk.Previous.ID != "" {
		rep.PreviousOwner = tk.Previous.String()
	}
	for _, k := range tk.Rebuilt {
		rep.Rebuilt = append(rep.Rebuilt, keyStatusOf(k))
	}
	return rep
}

func keyEntriesOf(cs []rotation.ClassifiedKey) []KeyEntry {
	out := make([]KeyEntry, 0, len(cs))
	for _, c := range cs {
		out = append(out, KeyEntry{ID: c.Key.ID, Name: c.Key.Name, Created: timePtr(c.Key.Created),
			Marking: string(c.Class), State: string(c.State), Served: c.Served})
	}
	return out
}
