package codatauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"
	"github.com/hashicorp/vault/api/auth/kubernetes"

	"github.com/codat-rotator/codat-rotator/secret"
)

// VaultConfig says which secret to read and how to log in.
type VaultConfig struct {
	// Client reaches Vault. api.NewClient(api.DefaultConfig()) applies
	// VAULT_ADDR, VAULT_CACERT, VAULT_NAMESPACE and the other VAULT_*
	// variables as the Vault CLI does. The source works on a clone and
	// never changes it.
	Client *api.Client
	// Mount is the KV version 2 mount, such as "secret": the target's
	// vault.mount in codat-rotator's config.
	Mount string
	// Path is the secret under the mount, such as "codat/production": the
	// target's vault.path.
	Path string
	// Auth is how to get a token: TokenAuth, AppRoleAuth or
	// KubernetesAuth. Nil uses the Client's own token (VAULT_TOKEN).
	Auth VaultAuth
}

// VaultAuth is how a VaultSource gets a Vault token: TokenAuth,
// AppRoleAuth or KubernetesAuth, the methods codat-rotator itself
// supports (docs/design.md#vault-auth).
type VaultAuth interface {
	// login returns a token and how long it lives (0: no expiry known).
	login(ctx context.Context, c *api.Client) (token secret.Value, ttl time.Duration, err error)
	// fresh reports whether logging in again can bring a different token.
	fresh() bool
}

// TokenAuth uses a token as it is: Token, or the contents of File (a
// Vault Agent sink, say), read again whenever Vault refuses the token.
type TokenAuth struct {
	Token secret.Value
	File  string
}

func (a TokenAuth) fresh() bool { return a.File != "" }

func (a TokenAuth) login(context.Context, *api.Client) (secret.Value, time.Duration, error) {
	if a.File == "" {
		if a.Token.Empty() {
			return "", 0, errors.New("vault token: not set (TokenAuth.Token, TokenAuth.File or VAULT_TOKEN)")
		}
		return a.Token, 0, nil
	}
	b, err := os.ReadFile(a.File)
	if err != nil {
		return "", 0, fmt.Errorf("vault token file: %w", err)
	}
	token := secret.Value(strings.TrimSpace(string(b)))
	if token.Empty() {
		return "", 0, fmt.Errorf("vault token file %s: empty", a.File)
	}
	return token, 0, nil
}

// AppRoleAuth logs in with a role id and a secret id, each read from its
// file at every login. Mount defaults to "approle".
type AppRoleAuth struct {
	Mount        string
	RoleIDFile   string
	SecretIDFile string
}

func (a AppRoleAuth) fresh() bool { return true }

func (a AppRoleAuth) login(ctx context.Context, c *api.Client) (secret.Value, time.Duration, error) {
	mount := orDefault(a.Mount, "approle")
	roleID, err := readTrimmed("approle role id file", a.RoleIDFile)
	if err != nil {
		return "", 0, err
	}
	secretID, err := readTrimmed("approle secret id file", a.SecretIDFile)
	if err != nil {
		return "", 0, err
	}
	m, err := approle.NewAppRoleAuth(roleID, &approle.SecretID{FromString: secretID}, approle.WithMountPath(mount))
	if err != nil {
		return "", 0, fmt.Errorf("approle: %w", err)
	}
	return loginWith(ctx, c, m, "auth/"+mount+"/login")
}

// DefaultKubernetesTokenFile is where Kubernetes mounts the pod's
// service-account token.
const DefaultKubernetesTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// KubernetesAuth logs in with the pod's service-account token, read from
// TokenFile (default DefaultKubernetesTokenFile) at every login, since
// projected tokens rotate. Mount defaults to "kubernetes".
type KubernetesAuth struct {
	Mount     string
	Role      string
	TokenFile string
}

func (a KubernetesAuth) fresh() bool { return true }

func (a KubernetesAuth) login(ctx context.Context, c *api.Client) (secret.Value, time.Duration, error) {
	if a.Role == "" {
		return "", 0, errors.New("kubernetes auth: KubernetesAuth.Role is not set")
	}
	mount := orDefault(a.Mount, "kubernetes")
	jwt, err := readTrimmed("kubernetes service-account token file", orDefault(a.TokenFile, DefaultKubernetesTokenFile))
	if err != nil {
		return "", 0, err
	}
	m, err := kubernetes.NewKubernetesAuth(a.Role, kubernetes.WithMountPath(mount), kubernetes.WithServiceAccountToken(jwt))
	if err != nil {
		return "", 0, fmt.Errorf("kubernetes auth: %w", err)
	}
	return loginWith(ctx, c, m, "auth/"+mount+"/login")
}

func loginWith(ctx context.Context, c *api.Client, m api.AuthMethod, path string) (secret.Value, time.Duration, error) {
	c.ClearToken() // a login must not carry the token it replaces
	sec, err := m.Login(ctx, c)
	if err != nil {
		return "", 0, vaultError("vault login "+path, err)
	}
	if sec == nil || sec.Auth == nil || sec.Auth.ClientToken == "" {
		return "", 0, fmt.Errorf("vault login %s: %w: no token in the answer", path, ErrVault)
	}
	return secret.Value(sec.Auth.ClientToken), time.Duration(sec.Auth.LeaseDuration) * time.Second, nil
}

func readTrimmed(what, path string) (string, error) {
	if path == "" {
		return "", fmt.Errorf("%s: not set", what)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("%s %s: empty", what, path)
	}
	return v, nil
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// VaultSource reads the secret codat-rotator publishes for a target from
// Vault KV version 2. Its token needs only "read" on
// <mount>/data/<path>.
//
// It logs in when it has no token, again when a login token has lived
// 80% of its TTL, and once more when Vault refuses the token (re-reading
// a token file). It does not renew tokens: a login is as cheap, and a
// static token is the caller's to keep valid.
type VaultSource struct {
	client *api.Client
	mount  string
	path   string
	auth   VaultAuth

	mu       sync.Mutex // the token and its deadline
	hasToken bool
	renewBy  time.Time // log in again after this; zero: never
}

// NewVaultSource checks cfg and returns a source. It does not contact
// Vault.
func NewVaultSource(cfg VaultConfig) (*VaultSource, error) {
	switch {
	case cfg.Client == nil:
		return nil, errors.New("codatauth: VaultConfig.Client is nil: pass api.NewClient(api.DefaultConfig())")
	case cfg.Mount == "" || cfg.Path == "":
		return nil, fmt.Errorf("codatauth: VaultConfig.Mount %q and Path %q: both are needed, as the target's vault.mount and vault.path", cfg.Mount, cfg.Path)
	}
	c, err := cfg.Client.CloneWithHeaders() // the namespace header too
	if err != nil {
		return nil, fmt.Errorf("codatauth: clone the vault client: %w", err)
	}
	auth := cfg.Auth
	if auth == nil {
		auth = TokenAuth{Token: secret.Value(cfg.Client.Token())}
	}
	return &VaultSource{client: c, mount: strings.Trim(cfg.Mount, "/"), path: strings.Trim(cfg.Path, "/"), auth: auth}, nil
}

// String implements Source.
func (v *VaultSource) String() string { return "vault secret " + v.dataPath() }

func (v *VaultSource) dataPath() string { return v.mount + "/data/" + v.path }

// Load implements Source.
func (v *VaultSource) Load(ctx context.Context) (Credential, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.hasToken || !v.renewBy.IsZero() && time.Now().After(v.renewBy) {
		if err := v.login(ctx); err != nil {
			return Credential{}, fmt.Errorf("%s: %w", v, err)
		}
	}
	c, err := v.read(ctx)
	var re *api.ResponseError
	if err == nil || !errors.As(err, &re) || re.StatusCode != http.StatusForbidden || !v.auth.fresh() {
		return c, err
	}
	// The token expired or was revoked, or the file now holds another.
	if lerr := v.login(ctx); lerr != nil {
		return Credential{}, fmt.Errorf("%w; logging in again failed: %w", err, lerr)
	}
	return v.read(ctx)
}

// login gets a token; the caller holds mu.
func (v *VaultSource) login(ctx context.Context) error {
	token, ttl, err := v.auth.login(ctx, v.client)
	if err != nil {
		v.hasToken = false
		return err
	}
	v.client.SetToken(token.Reveal())
	v.hasToken = true
	v.renewBy = time.Time{}
	if ttl > 0 {
		v.renewBy = time.Now().Add(ttl * 8 / 10)
	}
	return nil
}

func (v *VaultSource) read(ctx context.Context) (Credential, error) {
	kv, err := v.client.KVv2(v.mount).Get(ctx, v.path)
	if errors.Is(err, api.ErrSecretNotFound) || err == nil && kv.Data == nil {
		return Credential{}, fmt.Errorf("%s: %w: no secret there, or its latest version is deleted; check the mount and path (the target's vault.mount and vault.path) and that codat-rotator has published it", v, ErrNotFound)
	}
	if err != nil {
		return Credential{}, vaultError(v.String(), err)
	}
	c, err := fromFields(v.String(), kv.Data)
	if err != nil {
		return c, err
	}
	// A restarted daemon records its new plan in the custom metadata,
	// without a new version; next_rotation_at keeps the plan of the
	// publish until the next one.
	if s, ok := kv.CustomMetadata[metadataNextRotationAt].(string); ok && s != "" {
		if at, err := time.Parse(time.RFC3339, s); err == nil {
			c.NextRotationAt = at
		}
	}
	return c, nil
}

// vaultError words a failed Vault call with Vault's status and reason,
// and what the token needs.
func vaultError(what string, err error) error {
	var re *api.ResponseError
	if !errors.As(err, &re) {
		return fmt.Errorf("%s: %w: %w", what, ErrVault, err)
	}
	reason := strings.Join(strings.Fields(strings.Join(re.Errors, "; ")), " ")
	if re.StatusCode == http.StatusForbidden && strings.HasPrefix(what, "vault secret ") {
		return &responseError{msg: fmt.Sprintf("%s: %s: 403 (%s): the token is invalid or expired, or its policies do not grant \"read\" on %s",
			what, ErrVault, reason, strings.TrimPrefix(what, "vault secret ")), re: re}
	}
	return &responseError{msg: fmt.Sprintf("%s: %s: %d %s (%s)", what, ErrVault, re.StatusCode, http.StatusText(re.StatusCode), reason), re: re}
}

// responseError is a Vault error answer: it matches ErrVault and unwraps
// to the *api.ResponseError, so that Load can tell a refused token.
type responseError struct {
	msg string
	re  *api.ResponseError
}

func (e *responseError) Error() string        { return e.msg }
func (e *responseError) Unwrap() error        { return e.re }
func (e *responseError) Is(target error) bool { return target == ErrVault }
