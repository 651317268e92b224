package vault_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/codat-rotator/codat-rotator/secret"
	"github.com/codat-rotator/codat-rotator/vault"
	"github.com/codat-rotator/codat-rotator/vault/vaulttest"
)

// logins records the OnLogin calls of a client.
type logins struct {
	mu      sync.Mutex
	methods []string
}

func (l *logins) record(method string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.methods = append(l.methods, method)
}

func (l *logins) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.methods)
}

func (l *logins) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.methods, ",")
}

// requests records what Observe saw: "op:ok" or "op:<vault's error>".
type requests struct {
	mu  sync.Mutex
	ops []string
}

func (r *requests) observe(op string, err error, _ time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.ops = append(r.ops, op+":"+strings.Join(strings.Fields(err.Error()), " "))
		return
	}
	r.ops = append(r.ops, op+":ok")
}

// invalidTokens counts the requests Vault refused for an invalid token.
func (r *requests) invalidTokens() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, op := range r.ops {
		if strings.Contains(op, "invalid token") {
			n++
		}
	}
	return n
}

func randomName(prefix string) string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// enableAuth enables an auth method at a random path for one test.
func enableAuth(tb testing.TB, root *api.Client, typ string) string {
	tb.Helper()
	path := randomName(typ + "-")
	if err := root.Sys().EnableAuthWithOptions(path, &api.EnableAuthOptions{Type: typ}); err != nil {
		tb.Fatalf("enable %s auth: %v", typ, err)
	}
	// Disabling the method also revokes every token it issued.
	tb.Cleanup(func() { _ = root.Sys().DisableAuth(path) })
	return path
}

// kvPolicy writes a policy for what the rotator does under mount, and
// returns its name.
func kvPolicy(tb testing.TB, root *api.Client, mount string) string {
	tb.Helper()
	name := randomName("codat-rotator-")
	hcl := fmt.Sprintf(`
path "%[1]s/data/codat/*" { capabilities = ["create", "read", "update"] }
path "%[1]s/metadata/codat/*" { capabilities = ["read", "patch"] }
`, mount)
	if err := root.Sys().PutPolicy(name, hcl); err != nil {
		tb.Fatalf("put policy: %v", err)
	}
	tb.Cleanup(func() { _ = root.Sys().DeletePolicy(name) })
	return name
}

// writeFile writes content to a new file in dir.
func writeFile(tb testing.TB, dir, name, content string) string {
	tb.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// appRole creates a role at the approle mount and returns an AppRoleAuth
// whose role id and secret id files hold its credentials, as an operator
// would provision them (the secret id ending in a newline).
func appRole(tb testing.TB, root *api.Client, mount string, role map[string]any) vault.AppRoleAuth {
	tb.Helper()
	const name = "codat-rotator"
	if _, err := root.Logical().Write("auth/"+mount+"/role/"+name, role); err != nil {
		tb.Fatalf("create approle role: %v", err)
	}
	rid, err := root.Logical().Read("auth/" + mount + "/role/" + name + "/role-id")
	if err != nil {
		tb.Fatalf("read role id: %v", err)
	}
	sid, err := root.Logical().Write("auth/"+mount+"/role/"+name+"/secret-id", nil)
	if err != nil {
		tb.Fatalf("generate secret id: %v", err)
	}
	dir := tb.TempDir()
	return vault.AppRoleAuth{
		Mount:        mount,
		RoleIDFile:   writeFile(tb, dir, "role-id", rid.Data["role_id"].(string)+"\n"),
		SecretIDFile: writeFile(tb, dir, "secret-id", sid.Data["secret_id"].(string)+"\n"),
	}
}

// loginToken is a live token issued by an auth mount, as root sees it.
type loginToken struct {
	Accessor    string
	TTL         time.Duration
	Renewable   bool
	LastRenewal time.Time // zero until renewed
	Policies    []string
	ServiceAcct string // kubernetes: the service account name in its metadata
}

// liveTokens lists the unexpired tokens that logins at mount issued.
func liveTokens(tb testing.TB, root *api.Client, mount string) []loginToken {
	tb.Helper()
	list, err := root.Logical().List("auth/token/accessors")
	if err != nil {
		tb.Fatalf("list token accessors: %v", err)
	}
	var out []loginToken
	keys, _ := list.Data["keys"].([]any)
	for _, k := range keys {
		acc, _ := k.(string)
		sec, err := root.Auth().Token().LookupAccessor(acc)
		if err != nil || sec == nil {
			continue // revoked or expired meanwhile
		}
		if p, _ := sec.Data["path"].(string); p != "auth/"+mount+"/login" {
			continue
		}
		ttl, _ := sec.TokenTTL()
		tok := loginToken{Accessor: acc, TTL: ttl}
		tok.Renewable, _ = sec.TokenIsRenewable()
		tok.Policies, _ = sec.TokenPolicies()
		slices.Sort(tok.Policies)
		if lr, ok := sec.Data["last_renewal"].(string); ok {
			tok.LastRenewal, _ = time.Parse(time.RFC3339Nano, lr)
		}
		if meta, ok := sec.Data["meta"].(map[string]any); ok {
			tok.ServiceAcct, _ = meta["service_account_name"].(string)
		}
		out = append(out, tok)
	}
	return out
}

// waitFor polls cond every 50ms until it holds, or fails the test.
func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("after %v: %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestAppRoleLogin(t *testing.T) {
	srv := vaulttest.Shared(t)
	root := srv.Client(t)
	loc := newLocation(t, srv)
	mount := enableAuth(t, root, "approle")
	policy := kvPolicy(t, root, loc.Mount)
	auth := appRole(t, root, mount, map[string]any{"token_policies": []string{policy}, "token_ttl": "5m"})
	ctx := context.Background()

	var seen logins
	c, err := vault.New(vault.Config{Address: srv.Addr, Auth: auth, OnLogin: seen.record, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if got := seen.count(); got != 0 {
		t.Fatalf("New logged in %d times, want 0: it must not contact Vault", got)
	}
	if err := c.Login(ctx); err != nil {
		t.Fatalf("Login: %v", err)
	}
	if got, want := seen.String(), "approle"; got != want {
		t.Errorf("OnLogin calls = %q, want %q", got, want)
	}

	t.Run("token", func(t *testing.T) {
		toks := liveTokens(t, root, mount)
		if len(toks) != 1 {
			t.Fatalf("live tokens from auth/%s/login: %+v, want 1", mount, toks)
		}
		if got, want := strings.Join(toks[0].Policies, ","), policy+",default"; got != want {
			t.Errorf("token policies = %q, want %q", got, want)
		}
		if toks[0].TTL <= 4*time.Minute || toks[0].TTL > 5*time.Minute || !toks[0].Renewable {
			t.Errorf("token TTL = %v, renewable %v; want the role's renewable 5m", toks[0].TTL, toks[0].Renewable)
		}
	})

	t.Run("write and read", func(t *testing.T) {
		if got, want := mustWrite(t, c, loc, fullSecret(), 0), 1; got != want {
			t.Errorf("version = %d, want %d", got, want)
		}
		cur := mustRead(t, c, loc)
		if cur.Secret == nil || cur.Secret.APIKey.Reveal() != testKey || cur.Secret.KeyID != "key-2" {
			t.Errorf("read back %+v, want key-2", cur.Secret)
		}
		if got, want := cur.CustomMetadata["target"], "production"; got != want {
			t.Errorf("custom metadata target = %q, want %q", got, want)
		}
		if got, want := seen.count(), 1; got != want {
			t.Errorf("logins = %d, want %d: a valid token is reused", got, want)
		}
	})

	t.Run("outside the policy", func(t *testing.T) {
		// Proves the client works with the role's token, not some other.
		other := newLocation(t, srv)
		_, err := c.Read(ctx, other)
		assertErrorIs(t, err, vault.ErrPermissionDenied)
		assertContains(t, err.Error(), other.Mount+"/data/"+other.Path, `"read"`)
		if got, want := seen.count(), 1; got != want {
			t.Errorf("logins = %d, want %d: permission denied is no reason to log in again", got, want)
		}
	})

	t.Run("wrong secret id", func(t *testing.T) {
		bad := auth
		bad.SecretIDFile = writeFile(t, t.TempDir(), "secret-id", "00000000-0000-0000-0000-000000000000\n")
		c, err := vault.New(vault.Config{Address: srv.Addr, Auth: bad})
		if err != nil {
			t.Fatal(err)
		}
		err = c.Login(ctx)
		if err == nil {
			t.Fatal("Login with a wrong secret id succeeded")
		}
		t.Logf("error: %v", err)
		assertContains(t, err.Error(), "auth/"+mount+"/login", "invalid role or secret ID")
		assertNoSecrets(t, fmt.Sprintf("%v %+v", err, err), "00000000-0000-0000-0000-000000000000")
		if errors.Is(err, vault.ErrTokenInvalid) {
			t.Errorf("%v matches ErrTokenInvalid: no token was involved", err)
		}
		// A call fails with the same error and does not loop.
		_, err = c.Read(ctx, loc)
		assertContains(t, fmt.Sprint(err), "invalid role or secret ID")
	})

	t.Run("missing role id file", func(t *testing.T) {
		bad := auth
		bad.RoleIDFile = filepath.Join(t.TempDir(), "nope")
		c, err := vault.New(vault.Config{Address: srv.Addr, Auth: bad})
		if err != nil {
			t.Fatal(err)
		}
		err = c.Login(ctx)
		if !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Login = %v, want a missing file error", err)
		}
		assertContains(t, err.Error(), "role_id_file", bad.RoleIDFile)
	})

	t.Run("missing secret id file", func(t *testing.T) {
		bad := auth
		bad.SecretIDFile = filepath.Join(t.TempDir(), "nope")
		c, err := vault.New(vault.Config{Address: srv.Addr, Auth: bad})
		if err != nil {
			t.Fatal(err)
		}
		err = c.Login(ctx)
		if err == nil {
			t.Fatal("Login with no secret id file succeeded")
		}
		t.Logf("error: %v", err)
		assertContains(t, err.Error(), "auth/"+mount+"/login", bad.SecretIDFile)
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%v does not match fs.ErrNotExist", err)
		}
	})
}

// TestAppRoleReloginOnExpiry: a token that expires between two calls is
// replaced by a new login, and the call that met the expired token is
// run again, so a rotation in flight finishes its Vault step.
func TestAppRoleReloginOnExpiry(t *testing.T) {
	t.Parallel() // waits for real TTLs: overlap them
	srv := vaulttest.Shared(t)
	root := srv.Client(t)
	loc := newLocation(t, srv)
	mount := enableAuth(t, root, "approle")
	auth := appRole(t, root, mount, map[string]any{
		"token_policies": []string{kvPolicy(t, root, loc.Mount)},
		"token_ttl":      "2s",
		"token_max_ttl":  "2s",
	})
	var seen logins
	var reqs requests
	c, err := vault.New(vault.Config{Address: srv.Addr, Auth: auth, OnLogin: seen.record, Observe: reqs.observe, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	mustWrite(t, c, loc, fullSecret(), 0)
	first := liveTokens(t, root, mount)
	if len(first) != 1 {
		t.Fatalf("live tokens after the first call: %+v, want 1", first)
	}
	// expireAndCall waits until Vault has expired every token of the
	// mount, then runs call, which must succeed with a new login.
	expireAndCall := func(t *testing.T, call func() error) {
		t.Helper()
		waitFor(t, 10*time.Second, "the 2s token is still alive", func() bool { return len(liveTokens(t, root, mount)) == 0 })
		before, invalid := seen.count(), reqs.invalidTokens()
		if err := call(); err != nil {
			t.Fatalf("call after the token expired: %v", err)
		}
		if got, want := seen.count(), before+1; got != want {
			t.Errorf("logins = %d, want %d (%s)", got, want, seen.String())
		}
		if got, want := reqs.invalidTokens(), invalid+1; got != want {
			t.Errorf("requests refused for an invalid token = %d, want %d: %q", got, want, reqs.ops)
		}
		toks := liveTokens(t, root, mount)
		if len(toks) != 1 || toks[0].Accessor == first[0].Accessor {
			t.Errorf("live tokens = %+v, want one new token", toks)
		}
	}

	t.Run("read", func(t *testing.T) {
		expireAndCall(t, func() error {
			cur, err := c.Read(ctx, loc)
			if err == nil && (cur.Version != 1 || cur.Secret == nil) {
				err = fmt.Errorf("read %+v, want version 1", cur)
			}
			return err
		})
	})
	t.Run("write", func(t *testing.T) {
		second := fullSecret()
		second.KeyID = "key-3"
		expireAndCall(t, func() error {
			v, err := c.Write(ctx, loc, second, 1, testMetadata)
			if err == nil && v != 2 {
				err = fmt.Errorf("version %d, want 2", v)
			}
			return err
		})
	})
	if got, want := seen.String(), "approle,approle,approle"; got != want {
		t.Errorf("OnLogin calls = %q, want %q", got, want)
	}
}

// TestTokenFileReread: a token file is read again when Vault refuses the
// token it held (a Vault Agent sink that got a new token).
func TestTokenFileReread(t *testing.T) {
	srv := vaulttest.Shared(t)
	root := srv.Client(t)
	loc := newLocation(t, srv)
	hcl := fmt.Sprintf(`path "%[1]s/data/*" { capabilities = ["create", "read", "update"] }
path "%[1]s/metadata/*" { capabilities = ["read", "patch"] }`, loc.Mount)
	tokenA, tokenB := srv.Token(t, hcl), srv.Token(t, hcl)
	file := writeFile(t, t.TempDir(), "token", tokenA+"\n")
	var seen logins
	var reqs requests
	c, err := vault.New(vault.Config{Address: srv.Addr, Auth: vault.TokenAuth{File: file}, OnLogin: seen.record, Observe: reqs.observe})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	mustWrite(t, c, loc, fullSecret(), 0)

	if err := root.Auth().Token().RevokeOrphan(tokenA); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Dir(file), "token", tokenB+"\n")
	cur, err := c.Read(ctx, loc)
	if err != nil {
		t.Fatalf("Read after the file got a new token: %v", err)
	}
	if cur.Version != 1 || cur.Secret == nil {
		t.Errorf("Read = %+v, want version 1", cur)
	}
	if got, want := seen.String(), "token"; got != want {
		t.Errorf("OnLogin calls = %q, want %q", got, want)
	}
	if got, want := reqs.invalidTokens(), 1; got != want {
		t.Errorf("requests refused for an invalid token = %d, want %d: %q", got, want, reqs.ops)
	}

	t.Run("file emptied", func(t *testing.T) {
		if err := root.Auth().Token().RevokeOrphan(tokenB); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Dir(file), "token", "")
		_, err := c.Read(ctx, loc)
		assertErrorIs(t, err, vault.ErrTokenInvalid, tokenA, tokenB)
		assertContains(t, err.Error(), "logging in again failed", "vault token file "+file+": empty")
	})

	t.Run("file still holds the revoked token", func(t *testing.T) {
		writeFile(t, filepath.Dir(file), "token", tokenB+"\n")
		_, err := c.Read(ctx, loc)
		assertErrorIs(t, err, vault.ErrTokenInvalid, tokenA, tokenB)
		assertContains(t, err.Error(), "the token is invalid or expired", loc.Mount+"/data/"+loc.Path)
	})
}

func TestKubernetesAuth(t *testing.T) {
	srv := vaulttest.Shared(t)
	root := srv.Client(t)
	loc := newLocation(t, srv)
	policy := kvPolicy(t, root, loc.Mount)
	mount := enableAuth(t, root, "kubernetes")
	tr := vaulttest.NewTokenReviewer(t)
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tr.Certificate().Raw})
	if _, err := root.Logical().Write("auth/"+mount+"/config", map[string]any{
		"kubernetes_host":      tr.URL,
		"kubernetes_ca_cert":   string(caPEM),
		"disable_local_ca_jwt": true,
	}); err != nil {
		t.Fatalf("configure kubernetes auth: %v", err)
	}
	if _, err := root.Logical().Write("auth/"+mount+"/role/codat-rotator", map[string]any{
		"bound_service_account_names":      "codat-rotator",
		"bound_service_account_namespaces": "codat-rotator",
		"token_policies":                   []string{policy},
		"token_ttl":                        "5m",
	}); err != nil {
		t.Fatalf("create kubernetes role: %v", err)
	}
	const uid = "4d2ad3f5-8a3c-4e0b-9a55-0c1d2e3f4a5b"
	jwt := vaulttest.ServiceAccountJWT(t, "codat-rotator", "codat-rotator", uid)
	tr.Know(jwt, uid)
	dir := t.TempDir()
	// Kubelet writes projected tokens with no trailing newline.
	tokenFile := writeFile(t, dir, "token", jwt)
	ctx := context.Background()

	var seen logins
	c, err := vault.New(vault.Config{
		Address: srv.Addr,
		Auth:    vault.KubernetesAuth{Mount: mount, Role: "codat-rotator", TokenFile: tokenFile},
		OnLogin: seen.record,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Login(ctx); err != nil {
		t.Fatalf("Login: %v", err)
	}
	if got, want := seen.String(), "kubernetes"; got != want {
		t.Errorf("OnLogin calls = %q, want %q", got, want)
	}
	reviews, bearers := tr.Count()
	if reviews != 1 || bearers[0] != "Bearer "+jwt {
		t.Errorf("token reviews = %d with bearers %q, want 1 with the pod's own JWT (no token_reviewer_jwt set)", reviews, bearers)
	}
	toks := liveTokens(t, root, mount)
	if len(toks) != 1 || toks[0].ServiceAcct != "codat-rotator" || strings.Join(toks[0].Policies, ",") != policy+",default" {
		t.Errorf("live tokens = %+v, want one for service account codat-rotator with policy %s", toks, policy)
	}

	t.Run("write and read", func(t *testing.T) {
		mustWrite(t, c, loc, fullSecret(), 0)
		cur := mustRead(t, c, loc)
		if cur.Secret == nil || cur.Secret.APIKey.Reveal() != testKey {
			t.Errorf("read back %+v, want the written secret", cur.Secret)
		}
		if got, want := seen.count(), 1; got != want {
			t.Errorf("logins = %d, want %d", got, want)
		}
	})

	// Each failed login names the login path and, where the code keeps it,
	// Vault's reason; it never shows the JWT.
	for _, tc := range []struct {
		name  string
		role  string
		jwt   string // token file content; "" for the good JWT
		mount string
		want  []string
		is    error
	}{
		{name: "wrong role", role: "nope", want: []string{"auth/" + mount + "/login", `400 Bad Request: invalid role name "nope"`}, is: vault.ErrLoginRefused},
		// Vault answers a login at a path with no auth method 403.
		{name: "no such mount", role: "codat-rotator", mount: "kubernetes-nope", want: []string{"auth/kubernetes-nope/login"}, is: vault.ErrLoginRefused},
		{name: "service account not bound", role: "codat-rotator",
			jwt:  vaulttest.ServiceAccountJWT(t, "someone-else", "codat-rotator", uid),
			want: []string{"auth/" + mount + "/login", "service account name not authorized"}, is: vault.ErrLoginRefused},
		{name: "namespace not bound", role: "codat-rotator",
			jwt:  vaulttest.ServiceAccountJWT(t, "codat-rotator", "default", uid),
			want: []string{"auth/" + mount + "/login", "namespace not authorized"}, is: vault.ErrLoginRefused},
		{name: "token review refuses", role: "codat-rotator",
			jwt:  vaulttest.ServiceAccountJWT(t, "codat-rotator", "codat-rotator", uid), // well-formed, unknown to the API server
			want: []string{"auth/" + mount + "/login"}, is: vault.ErrLoginRefused},
		{name: "not a JWT", role: "codat-rotator", jwt: "not-a-jwt", want: []string{"auth/" + mount + "/login"}, is: vault.ErrLoginRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := tokenFile
			if tc.jwt != "" {
				file = writeFile(t, t.TempDir(), "token", tc.jwt)
			}
			m := mount
			if tc.mount != "" {
				m = tc.mount
			}
			var seen logins
			c, err := vault.New(vault.Config{Address: srv.Addr, Auth: vault.KubernetesAuth{Mount: m, Role: tc.role, TokenFile: file}, OnLogin: seen.record})
			if err != nil {
				t.Fatal(err)
			}
			reviews, _ := tr.Count()
			err = c.Login(ctx)
			assertErrorIs(t, err, tc.is, jwt, tc.jwt)
			assertContains(t, err.Error(), tc.want...)
			if errors.Is(err, vault.ErrTokenInvalid) {
				t.Errorf("%v matches ErrTokenInvalid: a failed login is no token to replace", err)
			}
			if seen.count() != 0 {
				t.Errorf("OnLogin called after a failed login: %s", seen.String())
			}
			// Only a JWT that passes the role's bindings reaches the API server.
			after, _ := tr.Count()
			if got, want := after-reviews, map[bool]int{true: 1}[tc.name == "token review refuses"]; got != want {
				t.Errorf("token reviews = %d, want %d", got, want)
			}
		})
	}

	t.Run("no role", func(t *testing.T) {
		c, err := vault.New(vault.Config{Address: srv.Addr, Auth: vault.KubernetesAuth{Mount: mount, TokenFile: tokenFile}})
		if err != nil {
			t.Fatal(err)
		}
		err = c.Login(ctx)
		if err == nil || !strings.Contains(err.Error(), "vault.auth.kubernetes.role is not set") {
			t.Errorf("Login = %v, want the missing role named", err)
		}
	})

	t.Run("token file read at every login", func(t *testing.T) {
		// A projected token rotates on disk; the next login sends the new one.
		rotated := vaulttest.ServiceAccountJWT(t, "codat-rotator", "codat-rotator", uid)
		tr.Know(rotated, uid)
		file := writeFile(t, t.TempDir(), "token", jwt)
		c, err := vault.New(vault.Config{Address: srv.Addr, Auth: vault.KubernetesAuth{Mount: mount, Role: "codat-rotator", TokenFile: file}})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Login(ctx); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Dir(file), "token", rotated)
		if err := c.Login(ctx); err != nil {
			t.Fatalf("Login with the rotated token: %v", err)
		}
		_, bearers := tr.Count()
		if got := bearers[len(bearers)-1]; got != "Bearer "+rotated {
			t.Errorf("the second login sent an old JWT to the token review")
		}
	})
}

// logBuffer collects a logger's output across goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// keepAlive runs c.KeepAlive until the test ends and returns its log and
// a stop function that wants it to return promptly.
func keepAlive(t *testing.T, c *vault.Client) (*logBuffer, func()) {
	t.Helper()
	var logs logBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.KeepAlive(ctx, log)
	}()
	stop := func() {
		t.Helper()
		cancel()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			t.Errorf("KeepAlive did not return within 2s of its context's end")
			<-done
		}
	}
	t.Cleanup(func() { cancel(); <-done })
	return &logs, stop
}

func TestKeepAlive(t *testing.T) {
	t.Parallel() // waits for real TTLs: overlap them
	srv := vaulttest.Shared(t)
	root := srv.Client(t)
	ctx := context.Background()

	t.Run("renews then logs in again at max TTL", func(t *testing.T) {
		t.Parallel()
		loc := newLocation(t, srv)
		mount := enableAuth(t, root, "approle")
		auth := appRole(t, root, mount, map[string]any{
			"token_policies": []string{kvPolicy(t, root, loc.Mount)},
			"token_ttl":      "2s",
			"token_max_ttl":  "6s",
		})
		var seen logins
		var reqs requests
		c, err := vault.New(vault.Config{Address: srv.Addr, Auth: auth, OnLogin: seen.record, Observe: reqs.observe})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		logs, stop := keepAlive(t, c)

		var first loginToken
		waitFor(t, 3*time.Second, "no login token was renewed", func() bool {
			toks := liveTokens(t, root, mount)
			if len(toks) == 1 && !toks[0].LastRenewal.IsZero() {
				first = toks[0]
				return true
			}
			return false
		})
		if got, want := seen.count(), 1; got != want {
			t.Errorf("logins before max TTL = %d, want %d", got, want)
		}
		// The token lives past its 2s TTL only because it is renewed.
		time.Sleep(time.Until(start.Add(3 * time.Second)))
		if toks := liveTokens(t, root, mount); len(toks) == 0 || toks[0].Accessor != first.Accessor {
			t.Errorf("after 3s the first token is gone (%+v): not renewed past its 2s TTL", toks)
		}
		// At max TTL (6s) it cannot be renewed: KeepAlive logs in again,
		// before any call meets an expired token.
		waitFor(t, 8*time.Second, "no second login", func() bool { return seen.count() >= 2 })
		waitFor(t, 3*time.Second, "the new token is not live", func() bool {
			toks := liveTokens(t, root, mount)
			for _, tok := range toks {
				if tok.Accessor != first.Accessor {
					return true
				}
			}
			return false
		})
		if got := time.Since(start); got > 7*time.Second {
			t.Errorf("second login after %v, want before the first token's 6s max TTL", got)
		}
		if _, err := c.Read(ctx, loc); err != nil {
			t.Errorf("Read with the re-acquired token: %v", err)
		}
		if got, want := seen.count(), 2; got != want {
			t.Errorf("logins = %d, want %d: the Read needed no login of its own", got, want)
		}
		if n := reqs.invalidTokens(); n != 0 {
			t.Errorf("%d requests met an invalid token: %q", n, reqs.ops)
		}
		stop()
		assertContains(t, logs.String(), "vault token renewed", "vault token can no longer be renewed; logging in again")
		// Its lifetime watcher stopped too: the live token is renewed no
		// more (and so expires).
		before := liveTokens(t, root, mount)
		time.Sleep(2 * time.Second) // longer than a renewal period of the 2s token
		for _, tok := range liveTokens(t, root, mount) {
			for _, b := range before {
				if tok.Accessor == b.Accessor && !tok.LastRenewal.Equal(b.LastRenewal) {
					t.Errorf("token %s renewed at %v, after KeepAlive returned", tok.Accessor, tok.LastRenewal)
				}
			}
		}
	})

	t.Run("non-renewable token replaced before it expires", func(t *testing.T) {
		t.Parallel()
		loc := newLocation(t, srv)
		mount := enableAuth(t, root, "approle")
		auth := appRole(t, root, mount, map[string]any{
			"token_policies": []string{kvPolicy(t, root, loc.Mount)},
			"token_type":     "batch", // batch tokens cannot be renewed
			"token_ttl":      "2s",
		})
		var seen logins
		var reqs requests
		c, err := vault.New(vault.Config{Address: srv.Addr, Auth: auth, OnLogin: seen.record, Observe: reqs.observe})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, stop := keepAlive(t, c)
		waitFor(t, 5*time.Second, "fewer than 3 logins", func() bool { return seen.count() >= 3 })
		// Logins at 0, ~1.6s and ~3.2s: each at 80% of the 2s TTL.
		if got := time.Since(start); got < 2500*time.Millisecond {
			t.Errorf("3 logins within %v, want them 80%% of the 2s TTL apart", got)
		}
		if _, err := c.Read(ctx, loc); err != nil {
			t.Errorf("Read: %v", err)
		}
		if n := reqs.invalidTokens(); n != 0 {
			t.Errorf("%d requests met an invalid token: %q", n, reqs.ops)
		}
		stop()
	})

	t.Run("token without TTL", func(t *testing.T) {
		t.Parallel()
		// The root token never expires: nothing to do.
		c := rootClient(t, srv)
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		done := make(chan struct{})
		go func() {
			defer close(done)
			c.KeepAlive(ctx, slog.New(slog.DiscardHandler))
		}()
		select {
		case <-done:
		case <-ctx.Done():
			t.Error("KeepAlive with a token that never expires did not return")
		}
	})

	t.Run("renewable static token", func(t *testing.T) {
		t.Parallel()
		// A token given as is, with the policy's renew-self: renewed.
		hcl := `path "auth/token/lookup-self" { capabilities = ["read"] }
path "auth/token/renew-self" { capabilities = ["update"] }`
		token := srv.Token(t, hcl)
		var seen logins
		c, err := vault.New(vault.Config{Address: srv.Addr, Token: secret.Value(token), OnLogin: seen.record})
		if err != nil {
			t.Fatal(err)
		}
		since := time.Now().Add(-time.Second)
		_, stop := keepAlive(t, c)
		waitFor(t, 5*time.Second, "the token was not renewed", func() bool {
			sec, err := root.Auth().Token().Lookup(token)
			if err != nil {
				t.Fatalf("lookup: %v", err)
			}
			lr, _ := sec.Data["last_renewal"].(string)
			at, _ := time.Parse(time.RFC3339Nano, lr)
			return at.After(since)
		})
		stop()
		if seen.count() != 0 {
			t.Errorf("OnLogin called for a static token that was only renewed: %s", seen.String())
		}
	})
}
