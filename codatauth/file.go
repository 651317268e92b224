package codatauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/codat-rotator/codat-rotator/secret"
)

// maxFileSize bounds what a FileSource reads: a header is under 100
// bytes, the whole secret as JSON under 1 KiB.
const maxFileSize = 64 << 10

// FileSource reads the credential from a file that something else keeps
// current: a Vault Agent template, a Kubernetes Secret mounted as a
// volume (synced by the External Secrets Operator, say). The file holds
// either
//
//   - the header alone: "Basic <base64 of the key>", with or without a
//     trailing newline (the Vault Agent template of docs/configuration.md; a Secret key
//     such as authorization); or
//   - a JSON object with the secret's fields, at least
//     authorization_header; key_id, rotated_at and next_rotation_at are
//     used when present (a Vault Agent template rendering
//     {{ .Data.data | toJSON }}).
//
// Load opens the file by its path every time, so it follows a file
// replaced by rename (Vault Agent, kubelet's ..data symlink swap) as well
// as one rewritten in place. A read that catches an in-place writer
// mid-write and finds the file empty, or a JSON document cut short, is an
// error, and the Transport keeps the header it has; a header cut at a
// base64 boundary cannot be told from a whole one and is replaced at the
// next read, or by the Transport's 401 retry.
type FileSource struct {
	path string
}

// NewFileSource returns a source reading path.
func NewFileSource(path string) *FileSource { return &FileSource{path: path} }

// String implements Source.
func (f *FileSource) String() string { return "file " + f.path }

// Load implements Source.
func (f *FileSource) Load(ctx context.Context) (Credential, error) {
	if err := ctx.Err(); err != nil {
		return Credential{}, err
	}
	b, err := f.read()
	if err != nil {
		return Credential{}, err
	}
	text := bytes.TrimSpace(b)
	switch {
	case len(text) == 0:
		return Credential{}, fmt.Errorf("%s: %w: the file is empty (being rewritten in place?)", f, ErrMalformed)
	case text[0] == '{':
		var data map[string]any
		if err := json.Unmarshal(text, &data); err != nil {
			// The decoder's message may quote the file: say only where.
			var se *json.SyntaxError
			if errors.As(err, &se) {
				return Credential{}, fmt.Errorf("%s: %w: not valid JSON (syntax error at byte %d)", f, ErrMalformed, se.Offset)
			}
			return Credential{}, fmt.Errorf("%s: %w: not a JSON object", f, ErrMalformed)
		}
		return fromFields(f.String(), data)
	default:
		c := Credential{Header: secret.Value(text)}
		if err := checkHeader(c.Header); err != nil {
			return Credential{}, fmt.Errorf("%s: %w; the file must hold the authorization_header (not the raw api_key), or a JSON object with it", f, err)
		}
		return c, nil
	}
}

func (f *FileSource) read() ([]byte, error) {
	fh, err := os.Open(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w (%w): check the path, and that Vault Agent or the Secret volume has written it", f, ErrNotFound, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f, err)
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f, err)
	}
	if len(b) > maxFileSize {
		return nil, fmt.Errorf("%s: %w: larger than %d bytes; a header or the secret as JSON is far smaller", f, ErrMalformed, maxFileSize)
	}
	return b, nil
}
