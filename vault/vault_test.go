package vault_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/codat-rotator/codat-rotator/secret"
	"github.com/codat-rotator/codat-rotator/vault"
	"github.com/codat-rotator/codat-rotator/vault/vaulttest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	vaulttest.StopShared()
	os.Exit(code)
}

// testKey is 13 bytes long, so its base64 needs "==" padding.
const testKey = "codat-key-XYZ"

func header(key string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(key))
}

// fullSecret sets every field, with times in a non-UTC zone so that the
// test sees them stored as UTC.
func fullSecret() vault.Secret {
	cet := time.FixedZone("CET", 3600)
	return vault.Secret{
		APIKey:            secret.Value(testKey),
		KeyID:             "key-2",
		KeyName:           "codat-rotator 2025-03-01",
		CreatedAt:         time.Date(2025, 3, 1, 12, 0, 0, 0, cet),
		RotatedAt:         time.Date(2025, 3, 1, 12, 0, 5, 0, cet),
		PreviousKeyID:     "key-1",
		PreviousExpiresAt: time.Date(2025, 3, 2, 12, 0, 0, 0, cet),
		NextRotationAt:    time.Date(2025, 3, 31, 12, 0, 0, 0, cet),
	}
}

var testMetadata = map[string]string{"managed-by": "codat-rotator", "target": "production"}

func newClient(tb testing.TB, addr, token string) *vault.Client {
	tb.Helper()
	c, err := vault.New(vault.Config{Address: addr, Token: secret.Value(token), Timeout: 10 * time.Second})
	if err != nil {
		tb.Fatalf("vault.New: %v", err)
	}
	return c
}

// rootClient returns an adapter client with the shared server's root token.
func rootClient(tb testing.TB, srv *vaulttest.Server) *vault.Client {
	tb.Helper()
	return newClient(tb, srv.Addr, srv.RootToken)
}

// newLocation mounts a fresh KV v2 engine and returns a path in it.
func newLocation(tb testing.TB, srv *vaulttest.Server) vault.Location {
	tb.Helper()
	return vault.Location{Mount: srv.NewKV(tb), Path: "codat/production"}
}

// putRaw writes data as a secret with the root token, as an operator would
// by hand with `vault kv put`.
func putRaw(tb testing.TB, srv *vaulttest.Server, loc vault.Location, data map[string]any) int {
	tb.Helper()
	s, err := srv.Client(tb).KVv2(loc.Mount).Put(context.Background(), loc.Path, data)
	if err != nil {
		tb.Fatalf("put %s: %v", loc, err)
	}
	return s.VersionMetadata.Version
}

func mustWrite(tb testing.TB, c *vault.Client, loc vault.Location, s vault.Secret, cas int) int {
	tb.Helper()
	v, err := c.Write(context.Background(), loc, s, cas, testMetadata)
	if err != nil {
		tb.Fatalf("Write(cas=%d): %v", cas, err)
	}
	return v
}

func mustRead(tb testing.TB, c *vault.Client, loc vault.Location) vault.Current {
	tb.Helper()
	cur, err := c.Read(context.Background(), loc)
	if err != nil {
		tb.Fatalf("Read: %v", err)
	}
	return cur
}

// assertErrorIs fails unless err matches target, and checks that no secret
// appears in its text, whatever the verb.
func assertErrorIs(tb testing.TB, err, target error, secrets ...string) {
	tb.Helper()
	if !errors.Is(err, target) {
		tb.Fatalf("error = %v (%T), want one matching %q", err, err, target)
	}
	tb.Logf("error: %v", err)
	assertNoSecrets(tb, fmt.Sprintf("%v %+v %#v", err, err, err), secrets...)
}

func assertNoSecrets(tb testing.TB, text string, secrets ...string) {
	tb.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			tb.Errorf("%q shows the secret %q", text, s)
		}
	}
}

func assertContains(tb testing.TB, got string, wants ...string) {
	tb.Helper()
	for _, want := range wants {
		if !strings.Contains(got, want) {
			tb.Errorf("%q does not contain %q", got, want)
		}
	}
}

func assertTime(tb testing.TB, name string, got, want time.Time) {
	tb.Helper()
	if !got.Equal(want) || got.Location() != time.UTC {
		tb.Errorf("%s = %v, want %v in UTC", name, got, want.UTC())
	}
}

func TestWriteRead(t *testing.T) {
	srv := vaulttest.Shared(t)
	c := rootClient(t, srv)
	loc := newLocation(t, srv)
	want := fullSecret()

	if got, want := mustWrite(t, c, loc, want, 0), 1; got != want {
		t.Fatalf("version = %d, want %d", got, want)
	}

	t.Run("read back", func(t *testing.T) {
		cur := mustRead(t, c, loc)
		if got, want := cur.Version, 1; got != want {
			t.Errorf("Version = %d, want %d", got, want)
		}
		if cur.Secret == nil {
			t.Fatal("Secret = nil, want the written secret")
		}
		got := *cur.Secret
		if got.APIKey.Reveal() != testKey {
			t.Errorf("APIKey = %q, want %q", got.APIKey.Reveal(), testKey)
		}
		if got, want := got.Header().Reveal(), header(testKey); got != want {
			t.Errorf("Header() = %q, want %q", got, want)
		}
		for _, f := range []struct{ name, got, want string }{
			{"KeyID", got.KeyID, want.KeyID},
			{"KeyName", got.KeyName, want.KeyName},
			{"PreviousKeyID", got.PreviousKeyID, want.PreviousKeyID},
			{"managed-by", cur.CustomMetadata["managed-by"], "codat-rotator"},
			{"target", cur.CustomMetadata["target"], "production"},
		} {
			if f.got != f.want {
				t.Errorf("%s = %q, want %q", f.name, f.got, f.want)
			}
		}
		assertTime(t, "CreatedAt", got.CreatedAt, want.CreatedAt)
		assertTime(t, "RotatedAt", got.RotatedAt, want.RotatedAt)
		assertTime(t, "PreviousExpiresAt", got.PreviousExpiresAt, want.PreviousExpiresAt)
		assertTime(t, "NextRotationAt", got.NextRotationAt, want.NextRotationAt)
	})

	t.Run("raw fields in vault", func(t *testing.T) {
		// What `vault kv get -field=... <mount>/<path>` shows a consumer.
		kv, err := srv.Client(t).KVv2(loc.Mount).Get(context.Background(), loc.Path)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range []struct{ field, want string }{
			{vault.FieldAPIKey, testKey},
			{vault.FieldHeader, "Basic Y29kYXQta2V5LVhZWg=="},
			{vault.FieldKeyID, "key-2"},
			{vault.FieldKeyName, "codat-rotator 2025-03-01"},
			{vault.FieldCreatedAt, "2025-03-01T11:00:00Z"},
			{vault.FieldRotatedAt, "2025-03-01T11:00:05Z"},
			{vault.FieldPreviousKeyID, "key-1"},
			{vault.FieldPreviousExpiresAt, "2025-03-02T11:00:00Z"},
			{vault.FieldNextRotationAt, "2025-03-31T11:00:00Z"},
		} {
			if got, ok := kv.Data[f.field].(string); !ok || got != f.want {
				t.Errorf("%s = %#v, want %q", f.field, kv.Data[f.field], f.want)
			}
		}
		if got, want := len(kv.Data), 9; got != want {
			t.Errorf("secret has %d fields, want %d: %v", got, want, kv.Data)
		}
		if got, want := kv.Data[vault.FieldHeader], header(testKey); got != want {
			t.Errorf("authorization_header = %v, want %q", got, want)
		}
	})

	t.Run("custom metadata in vault", func(t *testing.T) {
		md, err := srv.Client(t).KVv2(loc.Mount).GetMetadata(context.Background(), loc.Path)
		if err != nil {
			t.Fatal(err)
		}
		for k, want := range testMetadata {
			if got := md.CustomMetadata[k]; got != want {
				t.Errorf("custom_metadata[%q] = %v, want %q", k, got, want)
			}
		}
	})
}

func TestWriteZeroFields(t *testing.T) {
	srv := vaulttest.Shared(t)
	c := rootClient(t, srv)
	loc := newLocation(t, srv)
	// The first rotation has no previous key.
	s := fullSecret()
	s.PreviousKeyID, s.PreviousExpiresAt = "", time.Time{}
	mustWrite(t, c, loc, s, 0)

	kv, err := srv.Client(t).KVv2(loc.Mount).Get(context.Background(), loc.Path)
	if err != nil {
		t.Fatal(err)
	}
	if got := kv.Data[vault.FieldPreviousExpiresAt]; got != "" {
		t.Errorf("raw %s = %#v, want empty", vault.FieldPreviousExpiresAt, got)
	}
	cur := mustRead(t, c, loc)
	if cur.Secret == nil {
		t.Fatal("Secret = nil")
	}
	if got := cur.Secret.PreviousExpiresAt; !got.IsZero() {
		t.Errorf("PreviousExpiresAt = %v, want zero", got)
	}
	if got := cur.Secret.PreviousKeyID; got != "" {
		t.Errorf("PreviousKeyID = %q, want empty", got)
	}
}

func TestWriteVersions(t *testing.T) {
	srv := vaulttest.Shared(t)
	c := rootClient(t, srv)
	loc := newLocation(t, srv)
	ctx := context.Background()

	first, second := fullSecret(), fullSecret()
	second.KeyID = "key-3"
	if got, want := mustWrite(t, c, loc, first, 0), 1; got != want {
		t.Fatalf("first write: version = %d, want %d", got, want)
	}
	if got, want := mustWrite(t, c, loc, second, 1), 2; got != want {
		t.Fatalf("second write: version = %d, want %d", got, want)
	}

	for _, cas := range []int{0, 1, 3} {
		t.Run(fmt.Sprintf("cas %d", cas), func(t *testing.T) {
			stale := fullSecret()
			stale.KeyID = "key-stale"
			_, err := c.Write(ctx, loc, stale, cas, testMetadata)
			assertErrorIs(t, err, vault.ErrCASConflict, testKey, header(testKey))
			var conflict *vault.CASConflictError
			if !errors.As(err, &conflict) {
				t.Fatalf("error %T is not a *vault.CASConflictError", err)
			}
			if got, want := conflict.Current, 2; got != want {
				t.Errorf("Current = %d, want %d", got, want)
			}
			if got, want := conflict.Expected, cas; got != want {
				t.Errorf("Expected = %d, want %d", got, want)
			}
			assertContains(t, err.Error(), fmt.Sprintf("someone else wrote %s/%s at version 2", loc.Mount, loc.Path))
		})
	}

	t.Run("stale writes changed nothing", func(t *testing.T) {
		cur := mustRead(t, c, loc)
		if got, want := cur.Version, 2; got != want {
			t.Errorf("Version = %d, want %d", got, want)
		}
		if cur.Secret == nil || cur.Secret.KeyID != "key-3" {
			t.Errorf("Secret = %+v, want key-3", cur.Secret)
		}
	})
}

// TestHistory: every live version, oldest first; the version a Read
// just found is not read again, and a version of the same number
// written after `vault kv metadata delete` is never taken for it.
func TestHistory(t *testing.T) {
	srv := vaulttest.Shared(t)
	loc := newLocation(t, srv)
	ctx := context.Background()
	var ops []string
	c, err := vault.New(vault.Config{
		Address: srv.Addr,
		Token:   secret.Value(srv.RootToken),
		Observe: func(op string, err error, d time.Duration) { ops = append(ops, op) },
	})
	if err != nil {
		t.Fatal(err)
	}
	other := rootClient(t, srv) // another writer: an operator, another daemon
	withID := func(id string) vault.Secret {
		s := fullSecret()
		s.KeyID = id
		return s
	}
	ids := func(h []vault.Version) string {
		var out []string
		for _, v := range h {
			out = append(out, fmt.Sprintf("%d:%s", v.Version, v.Secret.KeyID))
		}
		return strings.Join(out, " ")
	}
	mustWrite(t, other, loc, withID("key-1"), 0)
	mustWrite(t, other, loc, withID("key-2"), 1)

	h, err := c.History(ctx, loc)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ids(h), "1:key-1 2:key-2"; got != want {
		t.Errorf("History = %s, want %s", got, want)
	}
	if got, want := strings.Join(ops, ","), "read metadata,read,read"; got != want {
		t.Errorf("without a Read before it: %s, want %s", got, want)
	}

	ops = nil
	mustRead(t, c, loc)
	if h, err = c.History(ctx, loc); err != nil {
		t.Fatal(err)
	}
	if got, want := ids(h), "1:key-1 2:key-2"; got != want {
		t.Errorf("History = %s, want %s", got, want)
	}
	if got, want := strings.Join(ops, ","), "read,read metadata,read"; got != want {
		t.Errorf("after a Read: %s, want %s (version 2 not read again)", got, want)
	}

	// Versions restart at 1: the new version 2 is not the one read.
	if err := srv.Client(t).KVv2(loc.Mount).DeleteMetadata(ctx, loc.Path); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, other, loc, withID("key-a"), 0)
	mustWrite(t, other, loc, withID("key-b"), 1)
	if h, err = c.History(ctx, loc); err != nil {
		t.Fatal(err)
	}
	if got, want := ids(h), "1:key-a 2:key-b"; got != want {
		t.Errorf("after metadata delete: History = %s, want %s", got, want)
	}

	// Deleted and destroyed versions are left out.
	kv := srv.Client(t).KVv2(loc.Mount)
	mustWrite(t, other, loc, withID("key-c"), 2)
	if err := kv.DeleteVersions(ctx, loc.Path, []int{1}); err != nil {
		t.Fatal(err)
	}
	if err := kv.Destroy(ctx, loc.Path, []int{3}); err != nil {
		t.Fatal(err)
	}
	if h, err = c.History(ctx, loc); err != nil {
		t.Fatal(err)
	}
	if got, want := ids(h), "2:key-b"; got != want {
		t.Errorf("after deleting version 1 and destroying 3: History = %s, want %s", got, want)
	}
}

func TestReadNeverWritten(t *testing.T) {
	srv := vaulttest.Shared(t)
	loc := newLocation(t, srv)
	cur := mustRead(t, rootClient(t, srv), loc)
	if cur.Secret != nil || cur.Version != 0 {
		t.Errorf("Read = {Secret: %+v, Version: %d}, want {nil, 0}", cur.Secret, cur.Version)
	}
}

func TestReadDeleted(t *testing.T) {
	srv := vaulttest.Shared(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name        string
		remove      func(kv *api.KVv2, path string) error
		wantVersion int
		wantTarget  string // custom metadata still there
	}{
		{"soft delete", func(kv *api.KVv2, path string) error { return kv.Delete(ctx, path) }, 2, "production"},
		{"destroy", func(kv *api.KVv2, path string) error { return kv.Destroy(ctx, path, []int{2}) }, 2, "production"},
		{"delete metadata", func(kv *api.KVv2, path string) error { return kv.DeleteMetadata(ctx, path) }, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := rootClient(t, srv)
			loc := newLocation(t, srv)
			mustWrite(t, c, loc, fullSecret(), 0)
			mustWrite(t, c, loc, fullSecret(), 1)
			if err := tc.remove(srv.Client(t).KVv2(loc.Mount), loc.Path); err != nil {
				t.Fatal(err)
			}

			cur := mustRead(t, c, loc)
			if cur.Secret != nil || cur.Version != tc.wantVersion {
				t.Fatalf("Read = {Secret: %+v, Version: %d}, want {nil, %d}", cur.Secret, cur.Version, tc.wantVersion)
			}
			if got := cur.CustomMetadata["target"]; got != tc.wantTarget {
				t.Errorf("CustomMetadata[target] = %q, want %q", got, tc.wantTarget)
			}
			// The version read is the check-and-set of the next write.
			if got, want := mustWrite(t, c, loc, fullSecret(), cur.Version), tc.wantVersion+1; got != want {
				t.Errorf("write after delete: version = %d, want %d", got, want)
			}
			if cur := mustRead(t, c, loc); cur.Secret == nil {
				t.Error("Secret = nil after rewrite")
			}
		})
	}
}

func TestReadMetadataOnly(t *testing.T) {
	// An operator may create the metadata first (`vault kv metadata put
	// -cas-required -custom-metadata=...`) and leave the first version to
	// the rotator.
	srv := vaulttest.Shared(t)
	c := rootClient(t, srv)
	loc := newLocation(t, srv)
	err := srv.Client(t).KVv2(loc.Mount).PutMetadata(context.Background(), loc.Path, api.KVMetadataPutInput{
		CASRequired:    true,
		CustomMetadata: map[string]any{"owner": "payments"},
	})
	if err != nil {
		t.Fatal(err)
	}

	cur := mustRead(t, c, loc)
	if cur.Secret != nil || cur.Version != 0 {
		t.Fatalf("Read = {Secret: %+v, Version: %d}, want {nil, 0}", cur.Secret, cur.Version)
	}
	if got, want := cur.CustomMetadata["owner"], "payments"; got != want {
		t.Errorf("CustomMetadata[owner] = %q, want %q", got, want)
	}
	if got, want := mustWrite(t, c, loc, fullSecret(), cur.Version), 1; got != want {
		t.Errorf("version = %d, want %d", got, want)
	}
	md, err := srv.Client(t).KVv2(loc.Mount).GetMetadata(context.Background(), loc.Path)
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"owner": "payments", "managed-by": "codat-rotator", "target": "production"} {
		if got := md.CustomMetadata[k]; got != want {
			t.Errorf("custom_metadata[%q] = %v, want %q: the patch merges", k, got, want)
		}
	}
}

func TestReadHandWritten(t *testing.T) {
	srv := vaulttest.Shared(t)
	other := "other-key-ABCD"

	t.Run("only api_key", func(t *testing.T) {
		loc := newLocation(t, srv)
		putRaw(t, srv, loc, map[string]any{vault.FieldAPIKey: testKey})
		cur := mustRead(t, rootClient(t, srv), loc)
		if cur.Secret == nil {
			t.Fatal("Secret = nil")
		}
		if got, want := cur.Secret.APIKey.Reveal(), testKey; got != want {
			t.Errorf("APIKey = %q, want %q", got, want)
		}
		if got := cur.Secret.KeyID; got != "" {
			t.Errorf("KeyID = %q, want empty", got)
		}
		if got, want := cur.Version, 1; got != want {
			t.Errorf("Version = %d, want %d", got, want)
		}
	})

	for _, tc := range []struct {
		name string
		data map[string]any
		want string
	}{
		{"no api_key", map[string]any{vault.FieldKeyID: "key-1", vault.FieldHeader: header(testKey)}, "no api_key field"},
		{"api_key not a string", map[string]any{vault.FieldAPIKey: 12345}, "no api_key field"},
		{"header of another key", map[string]any{vault.FieldAPIKey: testKey, vault.FieldHeader: header(other)}, "authorization_header does not match api_key"},
		{"header without Basic", map[string]any{vault.FieldAPIKey: testKey, vault.FieldHeader: base64.StdEncoding.EncodeToString([]byte(testKey))}, "authorization_header does not match api_key"},
		{"bad time", map[string]any{vault.FieldAPIKey: testKey, vault.FieldCreatedAt: "yesterday"}, "created_at"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			loc := newLocation(t, srv)
			putRaw(t, srv, loc, tc.data)
			cur, err := rootClient(t, srv).Read(context.Background(), loc)
			assertErrorIs(t, err, vault.ErrMalformed,
				testKey, header(testKey), base64.StdEncoding.EncodeToString([]byte(testKey)),
				other, header(other), base64.StdEncoding.EncodeToString([]byte(other)))
			assertContains(t, err.Error(), loc.Mount+"/data/"+loc.Path, tc.want)
			if cur.Secret != nil {
				t.Errorf("Secret = %+v, want nil with an error", cur.Secret)
			}
		})
	}
}

func TestCheckMount(t *testing.T) {
	srv := vaulttest.Shared(t)
	ctx := context.Background()
	kv2 := srv.NewKV(t)

	t.Run("kv v2", func(t *testing.T) {
		if err := rootClient(t, srv).CheckMount(ctx, vault.Location{Mount: kv2, Path: "codat/production"}); err != nil {
			t.Errorf("CheckMount = %v, want nil", err)
		}
	})

	t.Run("kv v2 with a least-privilege token", func(t *testing.T) {
		token := srv.Token(t, fmt.Sprintf(`path %q { capabilities = ["read", "create", "update"] }`, kv2+"/data/codat/*"))
		c := newClient(t, srv.Addr, token)
		if err := c.CheckMount(ctx, vault.Location{Mount: kv2, Path: "codat/production"}); err != nil {
			t.Errorf("CheckMount = %v, want nil", err)
		}
	})

	t.Run("kv v1", func(t *testing.T) {
		kv1 := srv.NewKVv1(t)
		err := rootClient(t, srv).CheckMount(ctx, vault.Location{Mount: kv1, Path: "codat/production"})
		assertErrorIs(t, err, vault.ErrNotKVv2)
		assertContains(t, err.Error(), kv1+" is kv version 1")
	})

	t.Run("another engine", func(t *testing.T) {
		err := rootClient(t, srv).CheckMount(ctx, vault.Location{Mount: "cubbyhole", Path: "codat"})
		assertErrorIs(t, err, vault.ErrNotKVv2)
		assertContains(t, err.Error(), `cubbyhole is a "cubbyhole" engine`)
	})

	t.Run("missing mount", func(t *testing.T) {
		err := rootClient(t, srv).CheckMount(ctx, vault.Location{Mount: "no-such-mount", Path: "codat/production"})
		assertErrorIs(t, err, vault.ErrMountMissing)
		assertContains(t, err.Error(), "no-such-mount")
	})

	t.Run("token without access", func(t *testing.T) {
		token := srv.Token(t, `path "elsewhere/*" { capabilities = ["read"] }`)
		err := newClient(t, srv.Addr, token).CheckMount(ctx, vault.Location{Mount: kv2, Path: "codat/production"})
		assertErrorIs(t, err, vault.ErrPermissionDenied, token)
		assertContains(t, err.Error(), kv2+"/data/codat/production")
	})
}

func TestWriteKVv1(t *testing.T) {
	// CheckMount is what refuses KV v1; Write itself must at least not
	// report success, since KV v1 ignores check-and-set.
	srv := vaulttest.Shared(t)
	loc := vault.Location{Mount: srv.NewKVv1(t), Path: "codat/production"}
	v, err := rootClient(t, srv).Write(context.Background(), loc, fullSecret(), 0, testMetadata)
	if err == nil {
		t.Fatalf("Write to kv v1 = %d, nil; want an error", v)
	}
	assertNoSecrets(t, fmt.Sprintf("%v %+v", err, err), testKey, header(testKey))
}

func TestWritePermissions(t *testing.T) {
	srv := vaulttest.Shared(t)
	ctx := context.Background()

	t.Run("read only", func(t *testing.T) {
		loc := newLocation(t, srv)
		token := srv.Token(t, fmt.Sprintf(`path "%s/data/*" { capabilities = ["read"] }`, loc.Mount))
		_, err := newClient(t, srv.Addr, token).Write(ctx, loc, fullSecret(), 0, testMetadata)
		assertErrorIs(t, err, vault.ErrPermissionDenied, testKey, header(testKey), token)
		assertContains(t, err.Error(), loc.Mount+"/data/"+loc.Path, `"create, update"`)

		_, err = srv.Client(t).KVv2(loc.Mount).GetMetadata(ctx, loc.Path)
		if !errors.Is(err, api.ErrSecretNotFound) {
			t.Errorf("root GetMetadata after a denied write: %v, want %v", err, api.ErrSecretNotFound)
		}
	})

	t.Run("no metadata capability", func(t *testing.T) {
		loc := newLocation(t, srv)
		token := srv.Token(t, fmt.Sprintf(`path "%s/data/*" { capabilities = ["read", "create", "update"] }`, loc.Mount))
		version, err := newClient(t, srv.Addr, token).Write(ctx, loc, fullSecret(), 0, testMetadata)
		assertErrorIs(t, err, vault.ErrMetadata, testKey, header(testKey), token)
		assertErrorIs(t, err, vault.ErrPermissionDenied)
		assertContains(t, err.Error(), loc.Mount+"/metadata/"+loc.Path, `"patch"`)
		if got, want := version, 1; got != want {
			t.Errorf("version = %d, want %d: the secret itself was written", got, want)
		}

		kv, err := srv.Client(t).KVv2(loc.Mount).Get(ctx, loc.Path)
		if err != nil {
			t.Fatalf("root read: %v", err)
		}
		if got, want := kv.Data[vault.FieldAPIKey], testKey; got != want {
			t.Errorf("api_key = %v, want %q", got, want)
		}
		if got := kv.CustomMetadata["managed-by"]; got != nil {
			t.Errorf("custom_metadata managed-by = %v, want none", got)
		}
	})
}

func TestInvalidToken(t *testing.T) {
	srv := vaulttest.Shared(t)
	loc := newLocation(t, srv)
	root := srv.Client(t)
	created, err := root.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"default"}, TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	token := created.Auth.ClientToken
	if err := root.Auth().Token().RevokeOrphan(token); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, srv.Addr, token)
	ctx := context.Background()

	t.Run("read", func(t *testing.T) {
		_, err := c.Read(ctx, loc)
		assertErrorIs(t, err, vault.ErrTokenInvalid, token)
		if errors.Is(err, vault.ErrPermissionDenied) {
			t.Errorf("%v matches ErrPermissionDenied too", err)
		}
	})
	t.Run("ping", func(t *testing.T) {
		assertErrorIs(t, c.Ping(ctx), vault.ErrTokenInvalid, token)
	})
	t.Run("write", func(t *testing.T) {
		_, err := c.Write(ctx, loc, fullSecret(), 0, testMetadata)
		assertErrorIs(t, err, vault.ErrTokenInvalid, token, testKey, header(testKey))
	})
}

func TestPing(t *testing.T) {
	srv := vaulttest.Shared(t)
	ctx := context.Background()

	t.Run("root", func(t *testing.T) {
		if err := rootClient(t, srv).Ping(ctx); err != nil {
			t.Errorf("Ping = %v, want nil", err)
		}
	})
	t.Run("token with lookup-self", func(t *testing.T) {
		token := srv.Token(t, `path "auth/token/lookup-self" { capabilities = ["read"] }`)
		if err := newClient(t, srv.Addr, token).Ping(ctx); err != nil {
			t.Errorf("Ping = %v, want nil", err)
		}
	})
	t.Run("token without the default policy", func(t *testing.T) {
		// lookup-self is granted by Vault's default policy; a token without
		// it may not look itself up, but the "permission denied" proves
		// it valid, so Ping succeeds.
		token := srv.Token(t, `path "elsewhere/*" { capabilities = ["read"] }`)
		if err := newClient(t, srv.Addr, token).Ping(ctx); err != nil {
			t.Errorf("Ping with a valid token lacking the default policy: %v", err)
		}
	})
}

func TestSealed(t *testing.T) {
	srv, err := vaulttest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	root := srv.Client(t)
	loc := vault.Location{Mount: "secret", Path: "codat/production"}
	c := newClient(t, srv.Addr, srv.RootToken)
	ctx := context.Background()
	mustWrite(t, c, loc, fullSecret(), 0)
	if err := root.Sys().Seal(); err != nil {
		t.Fatal(err)
	}
	if h, err := root.Sys().Health(); err != nil || !h.Sealed {
		t.Fatalf("health after seal = %+v, %v; want sealed", h, err)
	}

	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"read", func() error { _, err := c.Read(ctx, loc); return err }},
		{"write", func() error { _, err := c.Write(ctx, loc, fullSecret(), 1, testMetadata); return err }},
		{"ping", func() error { return c.Ping(ctx) }},
		{"check mount", func() error { return c.CheckMount(ctx, loc) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			assertErrorIs(t, err, vault.ErrSealed, srv.RootToken, testKey, header(testKey))
			assertContains(t, err.Error(), "vault is sealed")
		})
	}
}

func closedAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		tb.Fatal(err)
	}
	return "http://" + addr
}

func TestUnreachable(t *testing.T) {
	addr := closedAddr(t)
	c := newClient(t, addr, "s.some-token")
	loc := vault.Location{Mount: "secret", Path: "codat/production"}
	ctx := context.Background()

	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"read", func() error { _, err := c.Read(ctx, loc); return err }},
		{"write", func() error { _, err := c.Write(ctx, loc, fullSecret(), 0, testMetadata); return err }},
		{"ping", func() error { return c.Ping(ctx) }},
		{"check mount", func() error { return c.CheckMount(ctx, loc) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			assertErrorIs(t, err, vault.ErrUnreachable, "s.some-token", testKey, header(testKey))
			assertContains(t, err.Error(), "vault unreachable", strings.TrimPrefix(addr, "http://"))
		})
	}
}

func TestTimeout(t *testing.T) {
	// A listener that accepts and never answers: a hung Vault.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		wg.Wait()
		for _, c := range conns {
			_ = c.Close()
		}
	})

	c, err := vault.New(vault.Config{Address: "http://" + l.Addr().String(), Token: "s.some-token", Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = c.Read(context.Background(), vault.Location{Mount: "secret", Path: "codat/production"})
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("Read took %v with a 200ms timeout", elapsed)
	}
	assertErrorIs(t, err, vault.ErrUnreachable, "s.some-token")
}

func TestContextCanceled(t *testing.T) {
	srv := vaulttest.Shared(t)
	c := rootClient(t, srv)
	loc := newLocation(t, srv)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()

	t.Run("read", func(t *testing.T) {
		_, err := c.Read(ctx, loc)
		assertErrorIs(t, err, context.Canceled, srv.RootToken)
	})
	t.Run("write", func(t *testing.T) {
		_, err := c.Write(ctx, loc, fullSecret(), 0, testMetadata)
		assertErrorIs(t, err, context.Canceled, srv.RootToken, testKey, header(testKey))
		cur := mustRead(t, c, loc)
		if cur.Version != 0 {
			t.Errorf("Version = %d after a canceled write, want 0", cur.Version)
		}
	})
}

func TestNew(t *testing.T) {
	srv := vaulttest.Shared(t)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("\n  "+srv.RootToken+" \n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	blankFile := filepath.Join(dir, "blank")
	if err := os.WriteFile(blankFile, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		cfg  vault.Config
		want string
		is   error
	}{
		{"no address", vault.Config{Token: "s.token"}, "vault address: not set", nil},
		{"no token", vault.Config{Address: srv.Addr}, "vault token: not set", nil},
		{"blank token file", vault.Config{Address: srv.Addr, TokenFile: blankFile}, "empty", nil},
		{"missing token file", vault.Config{Address: srv.Addr, TokenFile: filepath.Join(dir, "nope")}, "vault token file", fs.ErrNotExist},
		{"missing CA file", vault.Config{Address: srv.Addr, Token: "s.token", CACert: filepath.Join(dir, "nope.pem")}, "vault tls", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := vault.New(tc.cfg)
			if err == nil {
				t.Fatalf("New = %v, nil; want an error", c)
			}
			assertContains(t, err.Error(), tc.want)
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v does not match %v", err, tc.is)
			}
		})
	}

	t.Run("token file with whitespace", func(t *testing.T) {
		// The file wins over a token set directly.
		c, err := vault.New(vault.Config{Address: srv.Addr, Token: "s.wrong", TokenFile: tokenFile})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := c.Address(), srv.Addr; got != want {
			t.Errorf("Address = %q, want %q", got, want)
		}
		if err := c.Ping(context.Background()); err != nil {
			t.Errorf("Ping with the file's token: %v", err)
		}
	})
}

func TestObserve(t *testing.T) {
	srv := vaulttest.Shared(t)
	loc := newLocation(t, srv)
	var ops []string
	c, err := vault.New(vault.Config{
		Address: srv.Addr,
		Token:   secret.Value(srv.RootToken),
		Observe: func(op string, err error, d time.Duration) {
			ops = append(ops, fmt.Sprintf("%s:%v", op, err == nil))
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	mustRead(t, c, loc) // never written: a data read, then a metadata read
	mustWrite(t, c, loc, fullSecret(), 0)
	got := strings.Join(ops, " ")
	want := "read:false read metadata:false write:true patch metadata:true"
	if got != want {
		t.Errorf("observed %q, want %q", got, want)
	}
}

func TestRedaction(t *testing.T) {
	const token = "hvs.super-secret-token"
	cfg := vault.Config{Address: "http://127.0.0.1:8200", Token: token}
	s := fullSecret()
	cur := vault.Current{Secret: &s, Version: 3}
	got := fmt.Sprintf("%v %+v %#v %v %+v %s", cfg, s, s, &cfg, cur, s.Header())
	assertNoSecrets(t, got, token, testKey, header(testKey), base64.StdEncoding.EncodeToString([]byte(testKey)))
	assertContains(t, got, secret.Redacted, "key-2")
}
