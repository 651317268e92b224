package codatauth

import "errors"

// Errors of a source, matched with errors.Is. Each error's text names the
// source (the Vault path or the file), what is wrong and what to do; it
// never holds the key or the header.
var (
	// ErrNotFound: the source holds no credential: no secret at the Vault
	// path (never written, or its latest version deleted or destroyed),
	// or no file at the path (the file error also matches
	// fs.ErrNotExist).
	ErrNotFound = errors.New("codat credential not found")
	// ErrNoHeader: the secret, or the JSON file, has no
	// authorization_header field.
	ErrNoHeader = errors.New("no authorization_header")
	// ErrMalformed: the source holds something that is not a Codat
	// Authorization header: a header that is not "Basic <base64>", one
	// that does not match the secret's api_key, a file that is neither a
	// header nor a JSON object, an unreadable time.
	ErrMalformed = errors.New("malformed codat credential")
	// ErrVault: Vault refused or failed the read or the login; the text
	// carries Vault's status and reason.
	ErrVault = errors.New("vault error")
)
