package vault

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"
	"github.com/hashicorp/vault/api/auth/kubernetes"

	"github.com/codat-rotator/codat-rotator/internal/clock"
	"github.com/codat-rotator/codat-rotator/internal/secretfile"
	"github.com/codat-rotator/codat-rotator/secret"
)

// Auth is how the client gets a Vault token.
type Auth interface {
	// login returns a fresh token; for a login method, with its lease.
	// warn receives what secretfile says of the files it reads.
	login(ctx context.Context, c *api.Client, warn func(string)) (token secret.Value, lease *api.Secret, err error)
	// name is the method's name, for errors and logs.
	name() string
}

// TokenAuth uses a token as it is: Token, or the contents of File (a
// Vault Agent sink, say), which is read again when Vault says the token
// is no longer valid.
type TokenAuth struct {
	Token secret.Value
	File  string
}

func (a TokenAuth) name() string { return "token" }

func (a TokenAuth) login(_ context.Context, _ *api.Client, warn func(string)) (secret.Value, *api.Secret, error) {
	if a.File != "" {
		b, err := readSecret(secretfile.File{Field: "vault.auth.token_file", Path: a.File, Holds: "the Vault token"}, warn)
		if err != nil {
			return "", nil, fmt.Errorf("vault token file: %w", err)
		}
		a.Token = secret.Value(strings.TrimSpace(string(b)))
		if a.Token.Empty() {
			return "", nil, fmt.Errorf("vault token file %s: empty", a.File)
		}
	}
	if a.Token.Empty() {
		return "", nil, errors.New("vault token: not set (vault.auth.token_file or VAULT_TOKEN)")
	}
	return a.Token, nil, nil
}

// AppRoleAuth logs in with a role id and a secret id, each read from a
// file at every login.
type AppRoleAuth struct {
	Mount        string
	RoleIDFile   string
	SecretIDFile string
}

func (a AppRoleAuth) name() string { return "approle" }

func (a AppRoleAuth) login(ctx context.Context, c *api.Client, warn func(string)) (secret.Value, *api.Secret, error) {
	path := "auth/" + orDefault(a.Mount, "approle") + "/login"
	roleID, err := readSecret(secretfile.File{Field: "vault.auth.approle.role_id_file", Path: a.RoleIDFile, Holds: "the AppRole role id"}, warn)
	if err != nil {
		return "", nil, fmt.Errorf("vault login %s: approle role_id_file: %w", path, err)
	}
	secretID, err := readSecret(secretfile.File{Field: "vault.auth.approle.secret_id_file", Path: a.SecretIDFile, Holds: "the AppRole secret id"}, warn)
	if err != nil {
		return "", nil, fmt.Errorf("vault login %s: approle secret_id_file: %w", path, err)
	}
	if strings.TrimSpace(string(secretID)) == "" {
		return "", nil, fmt.Errorf("vault login %s: approle secret_id_file %s: empty", path, a.SecretIDFile)
	}
	m, err := approle.NewAppRoleAuth(strings.TrimSpace(string(roleID)), &approle.SecretID{FromString: strings.TrimSpace(string(secretID))},
		approle.WithMountPath(orDefault(a.Mount, "approle")))
	if err != nil {
		return "", nil, fmt.Errorf("approle: %w", err)
	}
	return loginWith(ctx, c, m, path)
}

// DefaultKubernetesTokenFile is where Kubernetes mounts the pod's
// service-account token.
const DefaultKubernetesTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// readSecret reads a secret file after secretfile's check, passing its
// warnings to warn (nil: dropped).
func readSecret(f secretfile.File, warn func(string)) ([]byte, error) {
	b, warnings, err := f.Read()
	if warn != nil {
		for _, w := range warnings {
			warn(w)
		}
	}
	return b, err
}

// KubernetesAuth logs in with the pod's service-account token, read from
// TokenFile at every login (projected tokens rotate).
type KubernetesAuth struct {
	Mount     string
	Role      string
	TokenFile string
}

func (a KubernetesAuth) name() string { return "kubernetes" }

func (a KubernetesAuth) login(ctx context.Context, c *api.Client, warn func(string)) (secret.Value, *api.Secret, error) {
	if a.Role == "" {
		return "", nil, errors.New("kubernetes auth: vault.auth.kubernetes.role is not set")
	}
	path := orDefault(a.TokenFile, DefaultKubernetesTokenFile)
	jwt, err := readSecret(secretfile.File{Field: "vault.auth.kubernetes.token_file", Path: path, Holds: "the service-account token"}, warn)
	if err != nil {
		return "", nil, fmt.Errorf("kubernetes auth: service-account token_file: %w", err)
	}
	if strings.TrimSpace(string(jwt)) == "" {
		return "", nil, fmt.Errorf("kubernetes auth: service-account token_file %s: empty", path)
	}
	m, err := kubernetes.NewKubernetesAuth(a.Role,
		kubernetes.WithMountPath(orDefault(a.Mount, "kubernetes")),
		kubernetes.WithServiceAccountToken(strings.TrimSpace(string(jwt))))
	if err != nil {
		return "", nil, fmt.Errorf("kubernetes auth: %w", err)
	}
	sec, lease, err := loginWith(ctx, c, m, "auth/"+orDefault(a.Mount, "kubernetes")+"/login")
	var ve *Error
	if errors.As(err, &ve) && ve.Kind == ErrLoginRefused {
		// Vault's reason may not say what is wrong with the token (an
		// expired one is "permission denied"): say what it is.
		ve.Detail += " (" + describeToken(strings.TrimSpace(string(jwt)), path, time.Now()) + ")"
	}
	return sec, lease, err
}

// describeToken says whose a service-account token is, for which
// audience and until when, from its claims, so that a refused login
// tells a token of another service account, one minted for another
// audience and an expired one apart. The signature, the part that makes
// a token usable, is never read.
func describeToken(jwt, file string, now time.Time) string {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return "the token in " + file + " is not a JWT"
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	var claims struct {
		Sub string          `json:"sub"`
		Aud json.RawMessage `json:"aud"`
		Exp int64           `json:"exp"`
	}
	if err != nil || json.Unmarshal(raw, &claims) != nil {
		return "the token in " + file + " has no readable claims"
	}
	var aud []string
	if json.Unmarshal(claims.Aud, &aud) != nil {
		var one string
		if json.Unmarshal(claims.Aud, &one) == nil && one != "" {
			aud = []string{one}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "the token in %s is of %s, for audience %s", file, orDefault(claims.Sub, "no subject"), orDefault(strings.Join(aud, ","), "none"))
	if claims.Exp != 0 {
		exp := time.Unix(claims.Exp, 0).UTC()
		if exp.After(now) {
			fmt.Fprintf(&b, ", valid until %s", exp.Format(time.RFC3339))
		} else {
			fmt.Fprintf(&b, ", and expired at %s, %s ago: is the kubelet still refreshing it?", exp.Format(time.RFC3339), now.Sub(exp).Round(time.Second))
		}
	}
	return b.String()
}

func loginWith(ctx context.Context, c *api.Client, m api.AuthMethod, path string) (secret.Value, *api.Secret, error) {
	// Log in on a copy: the shared client must not send a stale token,
	// and Login would set the new one on it behind our lock.
	lc, err := c.CloneWithHeaders() // the namespace header too
	if err != nil {
		return "", nil, err
	}
	lc.ClearToken()
	sec, err := m.Login(ctx, lc)
	if err != nil {
		var re *api.ResponseError
		if errors.As(err, &re) {
			// Vault refused the login: say why, in its words. No token
			// policy is involved, and retrying will not change the answer.
			detail := strings.Join(strings.Fields(strings.Join(re.Errors, "; ")), " ")
			return "", nil, &Error{Op: "login", Path: path, Status: re.StatusCode, Kind: ErrLoginRefused, Detail: detail, Err: err}
		}
		if errors.Is(err, context.Canceled) {
			return "", nil, fmt.Errorf("vault login %s: %w", path, err)
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			return "", nil, classify("login", path, "update", err)
		}
		return "", nil, fmt.Errorf("vault login %s: %w", path, err) // a local problem: a token or id file
	}
	if sec == nil || sec.Auth == nil || sec.Auth.ClientToken == "" {
		return "", nil, fmt.Errorf("vault login %s: no token in the answer", path)
	}
	return secret.Value(sec.Auth.ClientToken), sec, nil
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// Login gets a token now: for a login method, a fresh one. Calls log in
// by themselves when needed; Login lets a caller fail early.
func (c *Client) Login(ctx context.Context) error {
	_, err := c.relogin(ctx, -1)
	return err
}

// ensureToken logs in if no token is held yet and returns the login
// generation the caller works with.
func (c *Client) ensureToken(ctx context.Context) (int, error) {
	c.mu.Lock()
	gen, have := c.gen, c.api.Token() != ""
	c.mu.Unlock()
	if have {
		return gen, nil
	}
	return c.relogin(ctx, gen)
}

// relogin replaces the token unless another call already did since
// generation seen (-1: always). One login runs at a time; waiting for it
// ends with ctx.
func (c *Client) relogin(ctx context.Context, seen int) (int, error) {
	select {
	case c.logins <- struct{}{}:
	case <-ctx.Done():
		c.mu.Lock()
		gen := c.gen
		c.mu.Unlock()
		return gen, fmt.Errorf("vault login (%s): waiting for the login in flight: %w", c.auth.name(), ctx.Err())
	}
	defer func() { <-c.logins }()
	c.mu.Lock()
	gen := c.gen
	c.mu.Unlock()
	if seen >= 0 && gen != seen && c.api.Token() != "" {
		return gen, nil
	}
	token, lease, err := c.auth.login(ctx, c.api, c.cfg.OnWarning)
	if err != nil {
		return gen, err
	}
	c.mu.Lock()
	c.api.SetToken(token.Reveal())
	c.lease = lease
	c.gen++
	gen = c.gen
	c.mu.Unlock()
	if c.onLogin != nil {
		c.onLogin(c.auth.name())
	}
	return gen, nil
}

// call runs op with a token; when Vault says the token is invalid
// (expired, revoked), it logs in again and runs op once more, so a
// rotation in flight survives a token's expiry.
func (c *Client) call(ctx context.Context, op func() error) error {
	gen, err := c.ensureToken(ctx)
	if err != nil {
		return err
	}
	err = op()
	if !errors.Is(err, ErrTokenInvalid) {
		return err
	}
	if ta, ok := c.auth.(TokenAuth); ok && ta.File == "" {
		// A fixed token (VAULT_TOKEN): logging in again gives the same
		// token, and no later attempt can do better.
		return &FixedTokenError{err}
	}
	if _, lerr := c.relogin(ctx, gen); lerr != nil {
		return fmt.Errorf("%w; logging in again failed: %w", err, lerr)
	}
	return op()
}

// FixedTokenError is Vault refusing a token the daemon was given as it
// is (VAULT_TOKEN), not one it logs in for or reads from a file: only a
// person can give it another, so it is not retried. It matches
// ErrTokenInvalid.
type FixedTokenError struct{ Err error }

func (e *FixedTokenError) Error() string {
	return e.Err.Error() + "; VAULT_TOKEN is a fixed token: logging in again cannot fix it, so nothing is retried: set a valid one and start again, or use vault.auth.token_file (a Vault Agent sink), approle or kubernetes"
}

func (e *FixedTokenError) Unwrap() error { return e.Err }

// Retryable is false: a later attempt sends the same token.
func (e *FixedTokenError) Retryable() bool { return false }

// Waits between tries of a token lookup that fails (Vault still
// starting, a network blip): the first, doubling up to the last.
const (
	lookupRetryFirst = time.Second
	lookupRetryMax   = 30 * time.Second
)

// KeepAlive renews the token while it can and logs in again when it
// cannot (renewal refused, maximum TTL reached), until ctx ends. It
// returns at once for a token that does not expire. A token it cannot
// look up (Vault unreachable, say) is looked up again with backoff until
// it can be, so a renewable token is not left to expire.
func (c *Client) KeepAlive(ctx context.Context, log *slog.Logger) {
	lookups := backoff{first: lookupRetryFirst, max: lookupRetryMax}
	// A watch that ends without renewing anything (a token already within
	// its last stretch) must not be restarted at once, again and again.
	watches := backoff{first: lookupRetryFirst, max: lookupRetryMax}
	for ctx.Err() == nil {
		if _, err := c.ensureToken(ctx); err != nil {
			log.Error("vault login failed; retrying in 30s", "method", c.auth.name(), "error", err)
			if !sleepCtx(ctx, 30*time.Second) {
				return
			}
			continue
		}
		sec, err := c.renewable(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			wait := lookups.failed()
			if lookups.fails == 1 {
				// Once per failure streak; its end is logged below.
				log.Warn("cannot look up the vault token; trying again until it can be renewed", "error", err, "retry_in", wait)
			}
			if !sleepCtx(ctx, wait) {
				return
			}
			continue
		}
		if n := lookups.reset(); n > 0 {
			log.Info("vault token looked up again; renewing it", "failed_lookups", n)
		}
		if sec == nil {
			return // a token that never expires: nothing to do
		}
		if !sec.Auth.Renewable {
			if _, static := c.auth.(TokenAuth); static {
				return // a static token: re-read only when Vault refuses it
			}
			// A login token that cannot be renewed: log in again before
			// it runs out.
			if !sleepCtx(ctx, time.Duration(sec.Auth.LeaseDuration)*time.Second*8/10) {
				return
			}
			for {
				c.mu.Lock()
				gen := c.gen
				c.mu.Unlock()
				_, err := c.relogin(ctx, gen)
				if err == nil {
					break
				}
				log.Error("vault login failed; retrying in 30s", "method", c.auth.name(), "error", err)
				if !sleepCtx(ctx, 30*time.Second) {
					return
				}
			}
			continue
		}
		w, err := c.api.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: sec})
		if err != nil {
			log.Error("vault token renewal", "error", err)
			return
		}
		go w.Start()
		renewed := false
	watch:
		for {
			select {
			case <-ctx.Done():
				w.Stop()
				return
			case <-w.RenewCh():
				renewed = true
				log.Debug("vault token renewed")
			case err := <-w.DoneCh():
				w.Stop()
				log.Info("vault token can no longer be renewed; logging in again", "method", c.auth.name(), "error", err)
				c.mu.Lock()
				gen := c.gen
				c.mu.Unlock()
				if _, lerr := c.relogin(ctx, gen); lerr != nil {
					log.Error("vault login failed; retrying in 30s", "method", c.auth.name(), "error", lerr)
					if !sleepCtx(ctx, 30*time.Second) {
						return
					}
				}
				break watch
			}
		}
		if renewed {
			watches.reset()
		} else if !sleepCtx(ctx, watches.failed()) {
			return
		}
	}
}

// backoff is the wait before the next try of something that keeps
// failing: first, then twice the last, up to max.
type backoff struct {
	first, max time.Duration
	fails      int // in the current streak
	wait       time.Duration
}

// failed counts a failure and returns the wait before the next try.
func (b *backoff) failed() time.Duration {
	b.fails++
	b.wait = min(max(2*b.wait, b.first), b.max)
	return b.wait
}

// reset ends a streak and returns how many failures it had.
func (b *backoff) reset() int {
	n := b.fails
	b.fails, b.wait = 0, 0
	return n
}

// renewable returns the token's lease for the lifetime watcher, or nil
// for a token with no TTL.
func (c *Client) renewable(ctx context.Context) (*api.Secret, error) {
	c.mu.Lock()
	lease := c.lease
	c.mu.Unlock()
	if lease != nil {
		if lease.Auth.LeaseDuration == 0 {
			return nil, nil
		}
		return lease, nil
	}
	sec, err := c.api.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		return nil, classify("token lookup", "auth/token/lookup-self", "read", err)
	}
	ttl, err := sec.TokenTTL()
	if err != nil || ttl == 0 {
		return nil, err
	}
	renewable, _ := sec.TokenIsRenewable()
	token, _ := sec.TokenID()
	return &api.Secret{Auth: &api.SecretAuth{ClientToken: token, Renewable: renewable, LeaseDuration: int(ttl / time.Second)}}, nil
}

// sleepCtx reports whether the whole wait passed (false: ctx ended).
func sleepCtx(ctx context.Context, d time.Duration) bool { return clock.Sleep(ctx, d) == nil }
