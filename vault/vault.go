// Package vault publishes Codat keys to HashiCorp Vault KV v2 and reads
// them back, with check-and-set and errors that name what is wrong.
//
// The Vault API library underneath applies the VAULT_* environment as
// the Vault CLI does (VAULT_CACERT, VAULT_HTTP_PROXY, ...); the fields of
// Config take precedence wherever they are set.
package vault

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/codat-rotator/codat-rotator/internal/isotime"
	"github.com/codat-rotator/codat-rotator/secret"
)

// Config says how to reach and authenticate to Vault. The command fills
// it from the config file and the VAULT_* environment.
type Config struct {
	// Address is Vault's URL, such as https://vault.example:8200.
	Address string
	// Namespace is the Vault Enterprise namespace, empty for none.
	Namespace string
	// TLS settings; verification is never off unless Insecure is set.
	CACert, CAPath, ClientCert, ClientKey, TLSServerName string
	Insecure                                             bool
	// Auth is how to get a token; nil means TokenAuth{Token, TokenFile}.
	Auth Auth
	// Token authenticates when TokenFile is empty (shorthand for TokenAuth).
	Token secret.Value
	// TokenFile is read for the token (a Vault Agent sink, say).
	TokenFile string
	// OnLogin, when set, is called after every successful login.
	OnLogin func(method string)
	// OnWarning, when set, receives warnings about the secret files read
	// to log in (a token file other users can read, say).
	OnWarning func(msg string)
	// Timeout bounds each request (default 30s).
	Timeout time.Duration
	// Observe, when set, is called after every Vault request.
	Observe func(op string, err error, d time.Duration)
}

// Client talks to one Vault. It logs in by itself, and again when Vault
// says its token is no longer valid.
type Client struct {
	api     *api.Client
	cfg     Config
	auth    Auth
	onLogin func(string)

	// logins holds one token at a time: the login in flight. A caller
	// whose context ends while it waits gives up, so a login that hangs
	// (Vault accepting connections and never answering) holds up no one
	// past their own deadline, a readiness probe included.
	logins chan struct{}
	mu     sync.Mutex // guards gen and lease; never held over a request
	gen    int        // counts logins
	lease  *api.Secret

	// latest is, per location, the latest version Read found (lastRead).
	latest sync.Map // Location -> Version
}

// maxIdleConns is how many idle connections to Vault the client keeps:
// at least the default max_concurrent_rotations, whose reads and writes
// go side by side.
const maxIdleConns = 64

// New returns a client for cfg. It does not contact Vault.
func New(cfg Config) (*Client, error) {
	if cfg.Address == "" {
		return nil, errors.New("vault address: not set (vault.address or VAULT_ADDR)")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	conf := api.DefaultConfig()
	if conf.Error != nil {
		return nil, fmt.Errorf("vault config: %w", conf.Error)
	}
	conf.Address = cfg.Address
	// The library would send everything to $VAULT_AGENT_ADDR, when set,
	// whatever Address says: the caller chose the address (and checked
	// it), so that is where the token goes.
	conf.AgentAddress = ""
	// The library follows a 307 itself, token and all, to wherever it
	// points (another scheme, host or port). The token goes to Address
	// only: a redirect is an error.
	conf.DisableRedirects = true
	conf.Timeout = cfg.Timeout
	conf.MaxRetries = 0 // retries are the rotator's decision, from fresh state
	if t, ok := conf.HttpClient.Transport.(*http.Transport); ok {
		// The library keeps GOMAXPROCS+1 idle connections (3 on two
		// cores): a fleet's reads side by side would dial (and at a
		// real Vault, handshake TLS) for most of their requests.
		t.MaxIdleConnsPerHost = maxIdleConns
	}
	if err := conf.ConfigureTLS(&api.TLSConfig{
		CACert:        cfg.CACert,
		CAPath:        cfg.CAPath,
		ClientCert:    cfg.ClientCert,
		ClientKey:     cfg.ClientKey,
		TLSServerName: cfg.TLSServerName,
		Insecure:      cfg.Insecure,
	}); err != nil {
		return nil, fmt.Errorf("vault tls: %w", err)
	}
	c, err := api.NewClient(conf)
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	c.ClearNamespace()
	if cfg.Namespace != "" {
		c.SetNamespace(cfg.Namespace)
	}
	c.ClearToken()
	cl := &Client{api: c, cfg: cfg, auth: cfg.Auth, onLogin: cfg.OnLogin, logins: make(chan struct{}, 1)}
	if cl.auth == nil {
		cl.auth = TokenAuth{Token: cfg.Token, File: cfg.TokenFile}
	}
	if ta, ok := cl.auth.(TokenAuth); ok {
		// A static token needs no network: take it now, so a missing one
		// fails here rather than at the first call.
		token, _, err := ta.login(context.Background(), c, cfg.OnWarning)
		if err != nil {
			return nil, err
		}
		c.SetToken(token.Reveal())
	}
	return cl, nil
}

// Address returns Vault's address.
func (c *Client) Address() string { return c.api.Address() }

// Location is one secret: a KV v2 mount and the path under it.
type Location struct {
	Mount string
	Path  string
}

func (l Location) String() string { return l.Mount + "/" + l.Path }

func (l Location) dataPath() string     { return l.Mount + "/data/" + l.Path }
func (l Location) metadataPath() string { return l.Mount + "/metadata/" + l.Path }

// Secret is the document published for a target
// (docs/design.md#vault-layout).
type Secret struct {
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
func (s Secret) Header() secret.Value { return secret.AuthorizationHeader(s.APIKey) }

// Current is what Vault holds for a target.
type Current struct {
	// Secret is nil when there is no secret, or its latest version is
	// deleted.
	Secret *Secret
	// Version is the latest version number, 0 when the path was never
	// written: the check-and-set value for the next write.
	Version int
	// CustomMetadata is the secret's custom metadata.
	CustomMetadata map[string]string
	// Written is when Vault wrote the latest version, zero when unknown.
	Written time.Time
}

// Field names in the secret.
const (
	FieldAPIKey            = "api_key"
	FieldHeader            = "authorization_header"
	FieldKeyID             = "key_id"
	FieldKeyName           = "key_name"
	FieldCreatedAt         = "created_at"
	FieldRotatedAt         = "rotated_at"
	FieldPreviousKeyID     = "previous_key_id"
	FieldPreviousExpiresAt = "previous_expires_at"
	FieldNextRotationAt    = "next_rotation_at"

	// MetadataNextRotationAt is the custom metadata that holds the
	// daemon's planned next rotation once a restarted daemon planned it
	// differently from the next_rotation_at last published: it patches
	// the metadata and writes no new version of the secret. Every
	// publish after that keeps it equal to next_rotation_at.
	MetadataNextRotationAt = "next-rotation-at"
)

// CheckMount makes sure loc's mount is a KV v2 engine the token can see.
// KV v1 would accept the write at "<mount>/data/<path>" as a plain secret
// with no check-and-set, so it is refused up front.
func (c *Client) CheckMount(ctx context.Context, loc Location) error {
	return c.call(ctx, func() error { return c.checkMount(ctx, loc) })
}

func (c *Client) checkMount(ctx context.Context, loc Location) error {
	start := time.Now()
	sec, err := c.api.Logical().ReadWithContext(ctx, "sys/internal/ui/mounts/"+loc.String())
	c.observe("mount", err, start)
	if err != nil {
		var re *api.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusForbidden && strings.Contains(strings.Join(re.Errors, " "), "preflight") {
			// Either no mount or no access at all: a raw read tells which
			// (the API client turns a 404 into "no secret").
			return c.probeMount(ctx, loc)
		}
		return classify("check mount", loc.Mount, "read", err)
	}
	if sec == nil || sec.Data == nil {
		return &Error{Op: "check mount", Path: loc.Mount, Kind: ErrMountMissing, Detail: "vault describes no mount"}
	}
	typ, _ := sec.Data["type"].(string)
	version := ""
	if opts, ok := sec.Data["options"].(map[string]any); ok {
		version, _ = opts["version"].(string)
	}
	if typ != "kv" || version != "2" {
		if version == "" {
			version = "1"
		}
		if typ != "kv" {
			return fmt.Errorf("%w: %s is a %q engine, want kv version 2: point the target's vault.mount at a kv-v2 mount", ErrNotKVv2, loc.Mount, typ)
		}
		return fmt.Errorf("%w: %s is kv version %s: upgrade it in place with `vault kv enable-versioning %s/` (its secrets are kept), or point the target's vault.mount at a kv-v2 mount", ErrNotKVv2, loc.Mount, version, loc.Mount)
	}
	return nil
}

// probeMount tells a missing mount from a token that may not see it.
func (c *Client) probeMount(ctx context.Context, loc Location) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout) // raw reads ignore the client's timeout
	defer cancel()
	start := time.Now()
	resp, err := c.api.Logical().ReadRawWithContext(ctx, loc.dataPath())
	c.observe("read", err, start)
	if resp != nil {
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound {
			var body struct {
				Errors []string `json:"errors"`
			}
			_ = resp.DecodeJSON(&body)
			if msg := strings.Join(body.Errors, "; "); strings.Contains(msg, "no handler for route") {
				return &Error{Op: "check mount", Path: loc.Mount, Kind: ErrMountMissing, Status: http.StatusNotFound, Detail: msg}
			}
		}
	}
	if err != nil {
		return classify("read", loc.dataPath(), "read", err)
	}
	return &Error{Op: "check mount", Path: loc.dataPath(), Kind: ErrPermissionDenied, Capability: "read", Detail: "no capability under the mount"}
}

// Read returns what Vault holds at loc.
func (c *Client) Read(ctx context.Context, loc Location) (Current, error) {
	var cur Current
	err := c.call(ctx, func() error {
		var err error
		cur, err = c.read(ctx, loc)
		return err
	})
	return cur, err
}

func (c *Client) read(ctx context.Context, loc Location) (Current, error) {
	start := time.Now()
	kv, err := c.api.KVv2(loc.Mount).Get(ctx, loc.Path)
	c.observe("read", err, start)
	if errors.Is(err, api.ErrSecretNotFound) {
		return c.readDeleted(ctx, loc)
	}
	if err != nil {
		return Current{}, classify("read", loc.dataPath(), "read", err)
	}
	cur := Current{CustomMetadata: stringMap(kv.CustomMetadata)}
	if kv.VersionMetadata != nil {
		cur.Version, cur.Written = kv.VersionMetadata.Version, kv.VersionMetadata.CreatedTime
	}
	if kv.Data == nil {
		return cur, nil // latest version deleted
	}
	s, err := decodeSecret(kv.Data)
	if err != nil {
		return Current{}, fmt.Errorf("vault read %s: %w", loc.dataPath(), err)
	}
	cur.Secret = &s
	if !cur.Written.IsZero() {
		c.latest.Store(loc, Version{Version: cur.Version, Secret: s, Written: cur.Written})
	}
	return cur, nil
}

// lastRead returns the version of loc that Read last found, if it is
// the version v written at written. A version's data never changes once
// Vault wrote it (only its deletion does, which the metadata tells), and
// the write time tells it from a version of the same number after a
// `vault kv metadata delete`: so History need not read again the version
// that the Read before it just read.
func (c *Client) lastRead(loc Location, v int, written time.Time) (Version, bool) {
	x, ok := c.latest.Load(loc)
	if !ok {
		return Version{}, false
	}
	got := x.(Version)
	return got, got.Version == v && got.Written.Equal(written)
}

// readDeleted handles a read that found no live data: the path is new,
// or its latest version was deleted or destroyed, in which case the next
// write's check-and-set needs the current version number.
func (c *Client) readDeleted(ctx context.Context, loc Location) (Current, error) {
	start := time.Now()
	md, err := c.api.KVv2(loc.Mount).GetMetadata(ctx, loc.Path)
	c.observe("read metadata", err, start)
	switch {
	case errors.Is(err, api.ErrSecretNotFound):
		return Current{}, nil
	case err != nil:
		var e *Error
		if errors.As(classify("read metadata", loc.metadataPath(), "read", err), &e) && e.Kind == ErrPermissionDenied {
			// Without read on metadata, assume a new path; a wrong guess
			// fails the write's check-and-set, never overwrites.
			return Current{}, nil
		}
		return Current{}, classify("read metadata", loc.metadataPath(), "read", err)
	}
	return Current{Version: md.CurrentVersion, CustomMetadata: stringMap(md.CustomMetadata)}, nil
}

// Write publishes s at loc if the secret is still at version cas (0: the
// path must hold no version yet), then sets the custom metadata when it
// differs. It returns the new version.
func (c *Client) Write(ctx context.Context, loc Location, s Secret, cas int, metadata map[string]string) (int, error) {
	var version int
	err := c.call(ctx, func() error {
		var err error
		version, err = c.write(ctx, loc, s, cas, metadata)
		return err
	})
	return version, err
}

func (c *Client) write(ctx context.Context, loc Location, s Secret, cas int, metadata map[string]string) (int, error) {
	start := time.Now()
	kv, err := c.api.KVv2(loc.Mount).Put(ctx, loc.Path, encodeSecret(s), api.WithCheckAndSet(cas))
	c.observe("write", err, start)
	if errors.Is(err, api.ErrSecretNotFound) {
		// Only a KV v1 engine answers a data write with no version: the
		// document may now sit there unversioned. CheckMount first.
		return 0, fmt.Errorf("%w: %s answered the write without a version (a kv v1 engine?); the secret may have been written there without check-and-set", ErrNotKVv2, loc.Mount)
	}
	if err != nil {
		var re *api.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusBadRequest && strings.Contains(strings.Join(re.Errors, " "), "check-and-set") {
			conflict := &CASConflictError{Path: loc.String(), Expected: cas}
			if cur, rerr := c.read(ctx, loc); rerr == nil {
				conflict.Current = cur.Version
			}
			return 0, conflict
		}
		return 0, classify("write", loc.dataPath(), "create, update", err)
	}
	version := 0
	if kv.VersionMetadata != nil {
		version = kv.VersionMetadata.Version
	}
	if next := formatTime(s.NextRotationAt); next != "" && kv.CustomMetadata[MetadataNextRotationAt] != nil {
		// A restart recorded its plan in the metadata (SetNextRotation):
		// keep it the plan this version publishes.
		metadata = maps.Clone(metadata)
		if metadata == nil {
			metadata = map[string]string{}
		}
		metadata[MetadataNextRotationAt] = next
	}
	if len(metadata) > 0 && !sameStrings(stringMap(kv.CustomMetadata), metadata) {
		if err := c.patchMetadata(ctx, loc, metadata); err != nil {
			return version, err
		}
	}
	return version, nil
}

// History returns every version of the secret at loc that can still
// be read and decoded, oldest first, with its version number. Versions
// deleted, destroyed or pruned by max_versions are left out, as are
// versions that are not a secret of this layout (written by hand).
func (c *Client) History(ctx context.Context, loc Location) ([]Version, error) {
	var out []Version
	err := c.call(ctx, func() error {
		out = nil
		kv := c.api.KVv2(loc.Mount)
		start := time.Now()
		list, err := c.listVersions(ctx, loc)
		c.observe("read metadata", err, start)
		if errors.Is(err, api.ErrSecretNotFound) {
			return nil
		}
		if err != nil {
			return classify("read metadata", loc.metadataPath(), "read", err)
		}
		for _, v := range list {
			if v.Deleted {
				continue
			}
			if got, ok := c.lastRead(loc, v.Version, v.Created); ok {
				out = append(out, got)
				continue
			}
			start := time.Now()
			sec, err := kv.GetVersion(ctx, loc.Path, v.Version)
			c.observe("read", err, start)
			if errors.Is(err, api.ErrSecretNotFound) {
				continue
			}
			if err != nil {
				return classify("read", loc.dataPath(), "read", err)
			}
			if sec.Data == nil {
				continue
			}
			s, err := decodeSecret(sec.Data)
			if err != nil {
				continue
			}
			out = append(out, Version{Version: v.Version, Secret: s, Written: v.Created})
		}
		return nil
	})
	return out, err
}

// Version is one version of a secret, and when Vault wrote it.
type Version struct {
	Version int
	Secret  Secret
	Written time.Time
}

// PatchMetadata merges custom metadata into the secret's metadata.
func (c *Client) PatchMetadata(ctx context.Context, loc Location, metadata map[string]string) error {
	return c.call(ctx, func() error { return c.patchMetadata(ctx, loc, metadata) })
}

func (c *Client) patchMetadata(ctx context.Context, loc Location, metadata map[string]string) error {
	cm := make(map[string]any, len(metadata))
	for k, v := range metadata {
		cm[k] = v
	}
	start := time.Now()
	err := c.api.KVv2(loc.Mount).PatchMetadata(ctx, loc.Path, api.KVMetadataPatchInput{CustomMetadata: cm})
	c.observe("patch metadata", err, start)
	if err != nil {
		return fmt.Errorf("%w (%w)", ErrMetadata, classify("patch metadata", loc.metadataPath(), "patch", err))
	}
	return nil
}

// SetNextRotation records at as the secret's planned next rotation in
// its custom metadata (MetadataNextRotationAt), leaving the secret's
// versions alone: a restarted daemon's plan, which may differ from the
// next_rotation_at the last publish wrote.
func (c *Client) SetNextRotation(ctx context.Context, loc Location, at time.Time) error {
	return c.PatchMetadata(ctx, loc, map[string]string{MetadataNextRotationAt: formatTime(at)})
}

// ErrMetadata marks a failure to set custom metadata after the secret
// itself was written.
var ErrMetadata = errors.New("secret written, custom metadata not set")

// Ping checks that Vault answers and is unsealed, and that the token is
// valid. A self lookup needs Vault's default policy; a token without it
// gets "permission denied", which still proves the token valid.
func (c *Client) Ping(ctx context.Context) error {
	return c.call(ctx, func() error {
		start := time.Now()
		_, err := c.api.Auth().Token().LookupSelfWithContext(ctx)
		c.observe("lookup self", err, start)
		err = classify("token lookup", "auth/token/lookup-self", "read", err)
		if errors.Is(err, ErrPermissionDenied) {
			return nil
		}
		return err
	})
}

func (c *Client) observe(op string, err error, start time.Time) {
	if c.cfg.Observe != nil {
		c.cfg.Observe(op, err, time.Since(start))
	}
}

func encodeSecret(s Secret) map[string]any {
	return map[string]any{
		FieldAPIKey:            s.APIKey.Reveal(),
		FieldHeader:            s.Header().Reveal(),
		FieldKeyID:             s.KeyID,
		FieldKeyName:           s.KeyName,
		FieldCreatedAt:         formatTime(s.CreatedAt),
		FieldRotatedAt:         formatTime(s.RotatedAt),
		FieldPreviousKeyID:     s.PreviousKeyID,
		FieldPreviousExpiresAt: formatTime(s.PreviousExpiresAt),
		FieldNextRotationAt:    formatTime(s.NextRotationAt),
	}
}

func decodeSecret(data map[string]any) (Secret, error) {
	str := func(k string) string { v, _ := data[k].(string); return v }
	var s Secret
	s.APIKey = secret.Value(str(FieldAPIKey))
	s.KeyID = str(FieldKeyID)
	if s.APIKey.Empty() {
		return Secret{}, fmt.Errorf("%w: no %s field", ErrMalformed, FieldAPIKey)
	}
	// key_id may be absent in a secret an operator wrote by hand; the
	// rotator then finds the id by the key itself.
	if h := str(FieldHeader); h != "" && h != s.Header().Reveal() {
		return Secret{}, fmt.Errorf("%w: %s does not match %s", ErrMalformed, FieldHeader, FieldAPIKey)
	}
	s.KeyName = str(FieldKeyName)
	s.PreviousKeyID = str(FieldPreviousKeyID)
	for _, f := range []struct {
		name string
		dst  *time.Time
	}{
		{FieldCreatedAt, &s.CreatedAt}, {FieldRotatedAt, &s.RotatedAt},
		{FieldPreviousExpiresAt, &s.PreviousExpiresAt}, {FieldNextRotationAt, &s.NextRotationAt},
	} {
		if v := str(f.name); v != "" {
			t, err := isotime.Parse(v)
			if err != nil {
				return Secret{}, fmt.Errorf("%w: %s: %v", ErrMalformed, f.name, err)
			}
			*f.dst = t
		}
	}
	return s, nil
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func stringMap(m map[string]any) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		if s, ok := v.(string); ok {
			out[k] = s
		}
	}
	return out
}

func sameStrings(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}
