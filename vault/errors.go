package vault

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/hashicorp/vault/api"

	"github.com/codat-rotator/codat-rotator/internal/sentinel"
)

// Errors that name what is wrong with Vault; match them with errors.Is.
// Each says with its Retryable method whether a later attempt may
// succeed: permanent ones need a person (a mount, a policy, a role, a
// secret fixed by hand).
var (
	// ErrMountMissing: no secrets engine is mounted at the mount path.
	ErrMountMissing = sentinel.Permanent("vault mount missing")
	// ErrNotKVv2: the mount is not a KV version 2 engine (KV v1 has no
	// check-and-set and no versions, so publishing there is refused).
	ErrNotKVv2 = sentinel.Permanent("vault mount is not kv version 2")
	// ErrPermissionDenied: the token's policies lack a capability.
	ErrPermissionDenied = sentinel.Permanent("vault permission denied")
	// ErrTokenInvalid: the token is expired, revoked or unknown; a new
	// login may help.
	ErrTokenInvalid = sentinel.Retryable("vault token invalid")
	// ErrSealed: Vault is sealed.
	ErrSealed = sentinel.Retryable("vault is sealed")
	// ErrUnreachable: no answer from Vault (connection refused, DNS,
	// TLS, timeout).
	ErrUnreachable = sentinel.Retryable("vault unreachable")
	// ErrUntrustedCert: Vault answered with a TLS certificate this host
	// does not accept (an unknown CA, another name): the TLS settings
	// must change, so a later attempt cannot do better.
	ErrUntrustedCert = sentinel.Permanent("vault certificate not trusted")
	// ErrCASConflict: the secret changed since it was read.
	ErrCASConflict = sentinel.Retryable("vault check-and-set conflict")
	// ErrMalformed: the secret exists but is not a codat-rotator secret
	// (a field is missing or unreadable).
	ErrMalformed = sentinel.Permanent("vault secret malformed")
	// ErrLoginRefused: Vault refused an AppRole or Kubernetes login (bad
	// secret id, unbound service account, no such role): its reason is in
	// the error; retrying will not change it.
	ErrLoginRefused = sentinel.Permanent("vault login refused")
	// ErrServer: any other error status from Vault.
	ErrServer = sentinel.Retryable("vault error")
)

// Error is a failed Vault call with what it was for.
type Error struct {
	// Op is what was attempted: "read", "write", "read back", ...
	Op string
	// Path is the Vault API path, such as "secret/data/codat/production".
	Path string
	// Capability is the policy capability the call needs.
	Capability string
	// Status is the HTTP status, 0 when none came back.
	Status int
	// Kind is one of the sentinel errors above.
	Kind error
	// Detail is Vault's message, or the transport error.
	Detail string
	// Err is the underlying error.
	Err error
}

// Unwrap exposes the underlying error (context.Canceled, say).
func (e *Error) Unwrap() error { return e.Err }

func (e *Error) Error() string {
	switch e.Kind {
	case ErrPermissionDenied:
		return fmt.Sprintf("vault %s %s: permission denied: the token's policies must grant %q on %q", e.Op, e.Path, e.Capability, e.Path)
	case ErrTokenInvalid:
		return fmt.Sprintf("vault %s %s: the token is invalid or expired (%s): give the daemon a valid token (`vault token lookup` shows what Vault thinks of one)", e.Op, e.Path, e.Detail)
	case ErrSealed:
		return fmt.Sprintf("vault %s %s: vault is sealed", e.Op, e.Path)
	case ErrLoginRefused:
		return fmt.Sprintf("vault login %s: refused: %d %s: %s", e.Path, e.Status, http.StatusText(e.Status), e.Detail)
	case ErrMountMissing:
		if e.Op == "check mount" {
			return fmt.Sprintf("vault %s %s: no secrets engine is mounted there (%s): fix the target's vault.mount, or mount one with `vault secrets enable -path=%s kv-v2`", e.Op, e.Path, e.Detail, e.Path)
		}
		return fmt.Sprintf("vault %s %s: no secrets engine is mounted there (%s)", e.Op, e.Path, e.Detail)
	case ErrUntrustedCert:
		// Vault answered, with a certificate this host does not
		// accept: the address is right, the TLS settings are not.
		return fmt.Sprintf("vault %s %s: vault unreachable: %s: %s", e.Op, e.Path, e.Detail, tlsHint(e.Err))
	case ErrUnreachable:
		return fmt.Sprintf("vault %s %s: vault unreachable: %s (is Vault up, and vault.address or VAULT_ADDR right?)", e.Op, e.Path, e.Detail)
	}
	if e.Status != 0 {
		return fmt.Sprintf("vault %s %s: %d %s: %s", e.Op, e.Path, e.Status, http.StatusText(e.Status), e.Detail)
	}
	return fmt.Sprintf("vault %s %s: %s", e.Op, e.Path, e.Detail)
}

// tlsHint says what to set when err is a Vault certificate this host
// cannot verify, and is empty for any other error.
func tlsHint(err error) string {
	var hn x509.HostnameError
	if errors.As(err, &hn) {
		return "Vault's TLS certificate does not name the host of the address; use the name it was issued for, or set vault.tls.server_name or VAULT_TLS_SERVER_NAME"
	}
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	var tv *tls.CertificateVerificationError
	if errors.As(err, &ua) || errors.As(err, &ci) || errors.As(err, &tv) {
		return "Vault's TLS certificate is not signed by a CA this host trusts; name Vault's CA with vault.tls.ca_cert or VAULT_CACERT (a PEM file), never VAULT_SKIP_VERIFY"
	}
	return ""
}

// Is matches the sentinel of the error's kind.
func (e *Error) Is(target error) bool { return target == e.Kind }

// Retryable is the answer of the error's kind.
func (e *Error) Retryable() bool {
	return sentinel.IsRetryable(e.Kind)
}

// CASConflictError says that someone else wrote the secret.
type CASConflictError struct {
	Path string
	// Expected is the version the write was based on.
	Expected int
	// Current is the version found after the conflict, 0 if unknown.
	Current int
}

func (e *CASConflictError) Error() string {
	if e.Current > 0 {
		return fmt.Sprintf("vault write %s: someone else wrote %s at version %d (this write expected version %d)", e.Path, e.Path, e.Current, e.Expected)
	}
	return fmt.Sprintf("vault write %s: someone else wrote %s since version %d was read", e.Path, e.Path, e.Expected)
}

// Is matches ErrCASConflict.
func (e *CASConflictError) Is(target error) bool { return target == ErrCASConflict }

// Retryable is true: a new attempt reads the secret again.
func (e *CASConflictError) Retryable() bool { return true }

// classify turns an error of the Vault API client into an *Error.
func classify(op, path, capability string, err error) error {
	if err == nil {
		return nil
	}
	e := &Error{Op: op, Path: path, Capability: capability, Kind: ErrServer, Err: err}
	if errors.Is(err, context.Canceled) {
		// The caller gave up: not Vault's fault. (A deadline is reported
		// as unreachable: the client's own timeout is one.)
		return fmt.Errorf("vault %s %s: %w", op, path, err)
	}
	var re *api.ResponseError
	if errors.As(err, &re) {
		e.Status = re.StatusCode
		msg := strings.Join(re.Errors, "; ")
		msg = strings.Join(strings.Fields(msg), " ") // Vault's multi-error text spans lines
		e.Detail = msg
		switch {
		case re.StatusCode == http.StatusForbidden && strings.Contains(msg, "invalid token"):
			e.Kind = ErrTokenInvalid
		case re.StatusCode == http.StatusForbidden:
			e.Kind = ErrPermissionDenied
		case re.StatusCode == http.StatusServiceUnavailable && strings.Contains(msg, "sealed"):
			e.Kind = ErrSealed
		case re.StatusCode == http.StatusNotFound && strings.Contains(msg, "no handler for route"):
			e.Kind = ErrMountMissing
		}
		return e
	}
	// Transport failures come wrapped in *url.Error. (net.Error would
	// also match a local file's syscall.Errno: not "unreachable".)
	var ue *url.Error
	if errors.As(err, &ue) || errors.Is(err, context.DeadlineExceeded) {
		e.Kind = ErrUnreachable
		if tlsHint(err) != "" {
			e.Kind = ErrUntrustedCert
		}
		e.Detail = err.Error()
		return e
	}
	e.Detail = err.Error()
	return e
}
