package admin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
)

// The client's side of the admin socket's trust, as ssh checks its
// files before it believes them: before a command sends anything (a
// rotate --emergency, say) or believes an answer, the socket must be one
// that only the daemon's user or root could have put there, and the
// process answering on it must be that user's or root's. Otherwise a
// user who can write to the socket's directory could answer root's
// commands with made-up successes.

// ErrUntrusted: the admin socket, or its directory, could have been put
// there by another user; the command says what is wrong and neither
// asks it nor falls back to working in-process.
var ErrUntrusted = errors.New("admin socket not trusted")

type untrustedError struct{ msg string }

func (e *untrustedError) Error() string        { return e.msg }
func (e *untrustedError) Is(target error) bool { return target == ErrUntrusted }

func untrusted(format string, args ...any) error {
	return &untrustedError{fmt.Sprintf(format, args...)}
}

// checkSocket returns the uid that owns the socket at path when it can
// be trusted by a process of uid self: it is a socket (symlinks judged
// by their target), owned by self, root, or the owner of its directory
// (the daemon's user owns /run/codat-rotator); and its directory and
// every directory above are owned by root, self or that owner and
// writable by no one else (a sticky bit, as on /tmp, lets others write
// but not replace what is not theirs; the socket's own directory may be
// open when the socket is self's or root's).
func checkSocket(path string, self uint32) (uint32, error) {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return 0, fmt.Errorf("admin socket: %w", err)
	}
	real, err = filepath.Abs(real)
	if err != nil {
		return 0, fmt.Errorf("admin socket: %w", err)
	}
	fi, err := os.Lstat(real)
	if err != nil {
		return 0, fmt.Errorf("admin socket: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return 0, untrusted("admin socket %s: %s is not a socket (%s)", path, real, fi.Mode().Type())
	}
	owner := ownerOf(fi)
	dir := filepath.Dir(real)
	dfi, err := os.Stat(dir)
	if err != nil {
		return 0, fmt.Errorf("admin socket: %w", err)
	}
	if owner != self && owner != 0 && owner != ownerOf(dfi) {
		return 0, untrusted("admin socket %s is owned by uid %d, which is neither yours (uid %d), root's, nor that of its directory %s (uid %d): another user may have put it there; remove it and restart the daemon",
			path, owner, self, dir, ownerOf(dfi))
	}
	for d := dir; ; d = filepath.Dir(d) {
		dfi, err := os.Stat(d)
		if err != nil {
			return 0, fmt.Errorf("admin socket: %w", err)
		}
		o, mode := ownerOf(dfi), dfi.Mode()
		if o != 0 && o != self && o != owner {
			return 0, untrusted("admin socket %s: the directory %s belongs to uid %d, neither root, you (uid %d) nor the socket's owner (uid %d): that user could replace the socket; keep it in a directory of the daemon's user or root, such as /run/codat-rotator",
				path, d, o, self, owner)
		}
		// The socket's own directory may be open to others when the
		// socket is the caller's or root's: a Kubernetes emptyDir is
		// 0777, whatever the pod asks. Another user can then only put a
		// socket of its own there, which the owner check above refuses,
		// and a swap after that check is caught by the peer check
		// (dialTrusted).
		open := d == dir && (owner == self || owner == 0)
		if mode.Perm()&0o022 != 0 && mode&fs.ModeSticky == 0 && !open {
			return 0, untrusted("admin socket %s: the directory %s is writable by other users (mode %04o): any of them could replace the socket with a fake daemon; chmod go-w %s (systemd's RuntimeDirectory makes it 0750)",
				path, d, mode.Perm(), d)
		}
		if d == filepath.Dir(d) {
			return owner, nil
		}
	}
}

func ownerOf(fi fs.FileInfo) uint32 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Uid
	}
	return ^uint32(0) // unknown: trusted by no one
}

// dialTrusted connects to the socket at path and checks, with the
// kernel's word (SO_PEERCRED), that the process answering runs as the
// socket's owner or root.
func dialTrusted(ctx context.Context, path string, owner uint32, cred func(net.Conn) (Peer, error)) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	p, err := cred(c)
	if err != nil {
		c.Close()
		return nil, untrusted("admin socket %s: cannot tell who answers: %v", path, err)
	}
	if p.UID != owner && p.UID != 0 {
		c.Close()
		return nil, untrusted("admin socket %s: answered by a process of uid %d (pid %d), not by the socket's owner (uid %d) or root: refusing to trust it", path, p.UID, p.PID, owner)
	}
	return c, nil
}
