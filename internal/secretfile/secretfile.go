// Package secretfile reads files that hold a secret (a Codat key, a Vault
// token, an AppRole id) only after checking, as ssh checks a private key,
// that no other user can change them, and warns when other users can read
// them.
//
// The rule, on the file the path finally names (symlinks followed), as
// opened: Read checks the open file, so what is checked is what is read:
//
//   - group- or world-writable: refused;
//   - owned by a uid other than the process's own and root (0): refused;
//   - group- or world-readable: a warning, except for a root-owned file
//     that Kubernetes projects (see Projected).
//
// Kubernetes projects service-account tokens root-owned with mode 0644,
// through ..data symlinks, into a tmpfs that only the pod mounts: a
// warning there would fire at every start for every Kubernetes user and
// could not be acted on, so it is left out.
package secretfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// ErrUnsafe matches every refusal: another user can change the file.
var ErrUnsafe = errors.New("unsafe secret file")

// ProjectedRoots are where Kubernetes mounts service-account tokens and
// secrets by default.
var ProjectedRoots = []string{"/var/run/secrets/kubernetes.io/", "/run/secrets/kubernetes.io/"}

// File is one secret file, named as the operator knows it.
type File struct {
	// Field is the config field that names the file, such as
	// bootstrap_key_file.
	Field string
	// Path is the file's path as configured.
	Path string
	// Holds says what the file holds, such as "the Codat key".
	Holds string
}

// unsafeError is a refusal, worded for the operator; it matches ErrUnsafe.
type unsafeError struct{ msg string }

func (e *unsafeError) Error() string        { return e.msg }
func (e *unsafeError) Is(target error) bool { return target == ErrUnsafe }

func unsafe(format string, args ...any) error {
	return &unsafeError{fmt.Sprintf(format, args...)}
}

// Check applies the rule to the file without reading it. err matches
// ErrUnsafe for a file another user can change, and names the field, the
// file, its mode and the fix; otherwise it is Stat's error, which names
// the path.
func (f File) Check() (warnings []string, err error) {
	fi, err := os.Stat(f.Path) // follows symlinks: the rule is about the file read
	if err != nil {
		return nil, err
	}
	return f.judge(fi)
}

// judge applies the rule to fi, the file's own information.
func (f File) judge(fi fs.FileInfo) (warnings []string, err error) {
	perm := fi.Mode().Perm()
	if perm&0o022 != 0 {
		return nil, unsafe("%s %s: mode %04o lets other users replace %s; chmod 600 it",
			f.Field, f.Path, perm, f.Holds)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		uid := int(st.Uid)
		if uid != 0 && uid != os.Getuid() {
			return nil, unsafe("%s %s: mode %04o, owned by uid %d, who can replace %s; only this process's uid (%d) or root may own it: chown it",
				f.Field, f.Path, perm, uid, f.Holds, os.Getuid())
		}
		if perm&0o044 != 0 && !(uid == 0 && Projected(f.Path)) {
			warnings = append(warnings, fmt.Sprintf("%s %s: mode %04o lets other users read %s; chmod 600 it",
				f.Field, f.Path, perm, f.Holds))
		}
	}
	return warnings, nil
}

// Read opens the file once (symlinks followed), applies the rule to
// what it opened (fstat, not the path: a file swapped in between a check
// of the path and its opening would be read unchecked), then reads it.
func (f File) Read() (data []byte, warnings []string, err error) {
	file, err := os.Open(f.Path)
	if err != nil {
		return nil, nil, err
	}
	defer file.Close()
	fi, err := file.Stat()
	if err != nil {
		return nil, nil, err
	}
	warnings, err = f.judge(fi)
	if err != nil {
		return nil, nil, err
	}
	data, err = io.ReadAll(file)
	if err != nil {
		return nil, warnings, err
	}
	return data, warnings, nil
}

// Projected reports whether path is a file Kubernetes projects: under one
// of ProjectedRoots, or reached through the ..data symlink of a projected
// volume (kubelet's atomic writer: name -> ..data/name, ..data ->
// ..<timestamp>). Only the paths are looked at; the caller also requires
// a root owner.
func Projected(path string) bool {
	abs, err := filepath.Abs(path)
	if err != nil {
		return false
	}
	for _, root := range ProjectedRoots {
		if strings.HasPrefix(abs, root) {
			return true
		}
	}
	target, err := os.Readlink(abs)
	if err != nil {
		return false // not a symlink
	}
	first, _, _ := strings.Cut(filepath.ToSlash(target), "/")
	if first != "..data" {
		return false
	}
	fi, err := os.Lstat(filepath.Join(filepath.Dir(abs), "..data"))
	return err == nil && fi.Mode()&fs.ModeSymlink != 0
}
