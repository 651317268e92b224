// Package codatauth keeps a Go program's Codat Authorization header
// current across the rotations codat-rotator makes. It depends on the
// daemon only through the secret it publishes (docs/design.md#vault-layout):
// the authorization_header field, and key_id, rotated_at and
// next_rotation_at when present.
//
// A Transport sets the header on every request to Codat. It reads it from
// a Source, Vault KV v2 (NewVaultSource, with token, token file, AppRole
// or Kubernetes auth) or a file that Vault Agent or a Kubernetes Secret
// keeps current (NewFileSource), and keeps it fresh in the background:
//
//   - every Config.Interval, which must be well under the target's grace;
//   - just after the secret's next_rotation_at, then backing off until the
//     new key shows;
//   - when Codat answers 401: it reads the source once and, if the header
//     changed, sends the request again once (only a request whose body can
//     be replayed). So after an emergency rotation, which deletes the old
//     key at once, the next request costs one extra round trip and
//     succeeds.
//
// The request path takes no lock and reads no source: one atomic load of
// the header in use. A failed read keeps the header in use and is
// reported through Config.OnRefresh and Stats. The header is a
// secret.Value: it prints as [REDACTED], and no error or event of this
// package holds it.
//
//	tr, err := codatauth.New(ctx, codatauth.Config{
//		Source:   src,
//		Interval: time.Minute,
//	})
//	if err != nil { ... }
//	defer tr.Close()
//	client := tr.Client()
//	resp, err := client.Get(codatauth.DefaultBaseURL + "/companies")
package codatauth
