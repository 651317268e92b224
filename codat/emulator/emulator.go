// Package emulator is a local stand-in for Codat's API-key endpoints,
// faithful to the facts in docs/design.md#codat-api: GET/POST /apiKeys and
// DELETE /apiKeys/{id} with Codat's statuses, bodies, 10-key cap, Basic
// authentication and rate-limit headers, and GET/POST /companies for the
// applications that use the keys. It injects faults on demand and
// records what it saw, under /_emulator/, so that tests can check a
// client's behaviour from the outside.
//
// Use it in-process with httptest.NewServer(emulator.New(...)) or as the
// `codat-rotator emulator` command.
package emulator

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// CodatMaxKeys is Codat's cap on keys per client. Holding more at any
// moment is a violation, whatever MaxKeys the emulator enforces.
const CodatMaxKeys = 10

// Options configure an emulator. The zero value is a faithful Codat.
type Options struct {
	// InitialKey is the raw value of the one key the client starts with
	// (the "first key" Codat provisions). Empty means a random one.
	InitialKey string
	// MaxKeys is the cap answered with 409 (default CodatMaxKeys). Set it
	// higher only to let a test observe a client that would overshoot.
	MaxKeys int
	// ListOmitsRawKeys leaves apiKey out of list results, for clients
	// that must cope with a listing that does not repeat raw keys.
	ListOmitsRawKeys bool
	// AllowDeleteLast lets the last key be deleted, as Codat's spec (but
	// not its docs) says. Even then the deletion is a violation.
	AllowDeleteLast bool
	// DailyQuota is the request quota reported in X-Rate-Limit-* headers
	// (default 1000, Codat's quota with no connected company).
	DailyQuota int
	// EnforceQuota answers 429 once the day's quota is spent.
	EnforceQuota bool
	// Faults are the faults in force at start.
	Faults Faults
	// Seed makes random faults repeatable; zero draws a seed.
	Seed uint64
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger receives one line per request (default: discard).
	Logger *slog.Logger
}

// Server is the emulator. It implements http.Handler.
type Server struct {
	opts Options
	log  *slog.Logger
	done chan struct{}
	stop sync.Once

	inflight atomic.Int64
	rate     rateCounter

	mu         sync.Mutex
	rng        *mrand.Rand
	faults     Faults
	keys       []*key // every key ever made, in order
	companies  []company
	events     []Event
	violations []Violation
	quotaDay   time.Time
	quotaUsed  int
}

type key struct {
	id      string
	name    string
	raw     string
	origin  string
	created time.Time
	deleted time.Time
}

// Key origins in the inspection report.
const (
	OriginInitial = "initial" // the key the client started with
	OriginAPI     = "api"     // made with POST /apiKeys
	OriginPortal  = "portal"  // made through /_emulator/keys, as a person in the Portal would
)

// KeyRecord is a key as the inspection report shows it: never its raw value.
type KeyRecord struct {
	ID      string     `json:"id"`
	Name    string     `json:"name,omitempty"`
	Origin  string     `json:"origin"`
	Created time.Time  `json:"created"`
	Deleted *time.Time `json:"deleted,omitempty"`
}

// Event is one request the emulator answered (or did not).
type Event struct {
	Seq    int       `json:"seq"`
	Time   time.Time `json:"time"`
	Method string    `json:"method"`
	Path   string    `json:"path"`
	Op     string    `json:"op,omitempty"`
	// KeyID is the key that authenticated the request, empty when none did.
	KeyID string `json:"key_id,omitempty"`
	// Status is the status answered; 0 when the response was lost or the
	// request hung until the client gave up.
	Status int `json:"status"`
	// Fault names the injected fault, if any.
	Fault string `json:"fault,omitempty"`
}

// Violation kinds: things a correct client never makes happen.
const (
	ViolationDeleteLastKey  = "delete_last_key"
	ViolationDeletedKeyUsed = "deleted_key_used"
	ViolationOverCap        = "over_cap"
)

// Violation is a broken invariant, observed from Codat's side.
type Violation struct {
	Time   time.Time `json:"time"`
	Kind   string    `json:"kind"`
	KeyID  string    `json:"key_id,omitempty"`
	Detail string    `json:"detail"`
}

// New returns an emulator holding one key.
func New(opts Options) (*Server, error) {
	if opts.MaxKeys == 0 {
		opts.MaxKeys = CodatMaxKeys
	}
	if opts.MaxKeys < 1 {
		return nil, fmt.Errorf("emulator: max keys %d: must be at least 1", opts.MaxKeys)
	}
	if opts.DailyQuota <= 0 {
		opts.DailyQuota = 1000
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if err := opts.Faults.Validate(); err != nil {
		return nil, fmt.Errorf("emulator: %w", err)
	}
	if opts.InitialKey == "" {
		opts.InitialKey = newRawKey()
	} else if err := checkRawKey(opts.InitialKey); err != nil {
		return nil, fmt.Errorf("emulator: initial key: %w", err)
	}
	seed := opts.Seed
	if seed == 0 {
		seed = mrand.Uint64()
	}
	s := &Server{
		opts:   opts,
		log:    opts.Logger,
		done:   make(chan struct{}),
		rng:    mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		faults: opts.Faults,
	}
	s.keys = append(s.keys, &key{id: newID(), raw: opts.InitialKey, origin: OriginInitial, created: s.now()})
	return s, nil
}

// Close releases requests held open by hang and latency faults, which
// then get no answer (the connection drops), and makes the Server drop
// every later request too; close the listener as well.
func (s *Server) Close() { s.stop.Do(func() { close(s.done) }) }

// InitialKey returns the raw value of the key the client started with.
func (s *Server) InitialKey() string { return s.opts.InitialKey }

// SetFaults replaces the faults in force.
func (s *Server) SetFaults(f Faults) error {
	if err := f.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = f
	return nil
}

// Faults returns the faults in force, with counters as consumed so far.
func (s *Server) Faults() Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults
}

// Keys returns every key ever made, deleted ones included, oldest first.
func (s *Server) Keys() []KeyRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]KeyRecord, 0, len(s.keys))
	for _, k := range s.keys {
		r := KeyRecord{ID: k.id, Name: k.name, Origin: k.origin, Created: k.created}
		if !k.deleted.IsZero() {
			d := k.deleted
			r.Deleted = &d
		}
		out = append(out, r)
	}
	return out
}

// Rate returns the Codat requests that arrived, counted per minute.
func (s *Server) Rate() RateReport { return s.rate.report() }

// InFlight returns the number of Codat requests received and not yet
// answered: a test can wait on it to know a request has arrived.
func (s *Server) InFlight() int { return int(s.inflight.Load()) }

// ActiveKeys returns the number of keys not deleted.
func (s *Server) ActiveKeys() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.active())
}

// Events returns the requests seen, oldest first, from sequence number
// since on (0 for all).
func (s *Server) Events(since int) []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Event
	for _, e := range s.events {
		if e.Seq >= since {
			out = append(out, e)
		}
	}
	return out
}

// Violations returns every invariant breach observed.
func (s *Server) Violations() []Violation {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Violation(nil), s.violations...)
}

// AddPortalKey makes a key as a person would in Codat's Portal: it counts
// toward the cap but was not made through the API. It returns the key's
// id and raw value.
func (s *Server) AddPortalKey(name string) (id, raw string, err error) {
	k, err := s.addPortalKey(name)
	if err != nil {
		return "", "", err
	}
	return k.id, k.raw, nil
}

// Errors of the portal operations.
var (
	errPortalName = errors.New("name is longer than 50 characters")
	errPortalCap  = errors.New("the key cap is reached")
)

func (s *Server) addPortalKey(name string) (*key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len([]rune(name)) > maxNameLen {
		return nil, fmt.Errorf("add portal key: %w", errPortalName)
	}
	if len(s.active()) >= s.opts.MaxKeys {
		return nil, fmt.Errorf("add portal key: %w (%d keys)", errPortalCap, len(s.active()))
	}
	k := s.addKey(name, OriginPortal)
	copied := *k
	return &copied, nil
}

// DeletePortalKey deletes a key as a person would in the Portal. Like the
// API, it refuses the last key.
func (s *Server) DeletePortalKey(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.find(id)
	if k == nil || !k.deleted.IsZero() {
		return fmt.Errorf("delete portal key %q: no such key", id)
	}
	if len(s.active()) == 1 {
		return fmt.Errorf("delete portal key %q: it is the last key", id)
	}
	k.deleted = s.now()
	return nil
}

// addKey records a new key; the caller holds mu.
func (s *Server) addKey(name, origin string) *key {
	k := &key{id: newID(), name: name, raw: newRawKey(), origin: origin, created: s.now()}
	s.keys = append(s.keys, k)
	if n := len(s.active()); n > CodatMaxKeys {
		s.violate(ViolationOverCap, k.id, fmt.Sprintf("%d keys held at once, Codat's cap is %d", n, CodatMaxKeys))
	}
	return k
}

// active returns the keys not deleted; the caller holds mu.
func (s *Server) active() []*key {
	var out []*key
	for _, k := range s.keys {
		if k.deleted.IsZero() {
			out = append(out, k)
		}
	}
	return out
}

// find returns the key with the id, deleted or not; the caller holds mu.
func (s *Server) find(id string) *key {
	for _, k := range s.keys {
		if k.id == id {
			return k
		}
	}
	return nil
}

// violate records a breach; the caller holds mu.
func (s *Server) violate(kind, keyID, detail string) {
	s.violations = append(s.violations, Violation{Time: s.now(), Kind: kind, KeyID: keyID, Detail: detail})
	s.log.Warn("violation", "kind", kind, "key_id", keyID, "detail", detail)
}

func (s *Server) now() time.Time { return s.opts.Now().UTC() }

// newID returns a random version-4 UUID, the shape of Codat's key ids.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

const rawKeyAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// newRawKey returns 40 random alphanumeric characters, the shape of the
// raw keys in Codat's examples.
func newRawKey() string {
	var b [40]byte
	_, _ = rand.Read(b[:])
	for i := range b {
		b[i] = rawKeyAlphabet[int(b[i])%len(rawKeyAlphabet)]
	}
	return string(b[:])
}

func checkRawKey(raw string) error {
	if len(raw) < 8 || len(raw) > 256 {
		return fmt.Errorf("want 8 to 256 characters, got %d", len(raw))
	}
	for _, c := range raw {
		if c <= ' ' || c > '~' {
			return fmt.Errorf("want printable ASCII without spaces")
		}
	}
	return nil
}

// newCorrelationID returns 32 hex digits, like Codat's correlationId.
func newCorrelationID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
